//! Field-by-field checks of PIM schedule request bodies.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `8-4-4-4-12` hex.
pub(crate) fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// ISO 8601 duration (`P[nD][T[nH][nM][n[.n]S]]`) in seconds.
pub(crate) fn iso_seconds(d: &str) -> Option<f64> {
    let rest = d.strip_prefix('P')?;
    let (date, time_part) = match rest.split_once('T') {
        Some((a, b)) => {
            if b.is_empty() {
                return None;
            }
            (a, Some(b))
        }
        None => (rest, None),
    };
    let mut total = 0.0;
    let mut any = false;
    let mut take = |text: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        let mut last = 0;
        for c in text.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let position = units.iter().position(|(u, _)| *u == c)?;
            if number.is_empty() || position < last {
                return None;
            }
            last = position + 1;
            total += number.parse::<f64>().ok()? * units[position].1;
            number.clear();
            any = true;
        }
        number.is_empty().then_some(())
    };
    take(date, &[('D', 86_400.0)])?;
    if let Some(t) = time_part {
        take(t, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    }
    any.then_some(total)
}

fn str_field<'a>(o: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, String> {
    match o.get(k) {
        None => Ok(None),
        Some(Value::String(v)) => Ok(Some(v)),
        Some(other) => Err(format!("`{k}` must be a string, not {other}")),
    }
}

pub(crate) fn parse_time(v: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(v, &Rfc3339).ok()
}

/// A checked schedule request: the fields the fake acts on.
pub(super) struct Checked {
    pub(super) action: String,
    pub(super) principal: String,
    pub(super) object: String,
    pub(super) scope: String,
    pub(super) start: Option<OffsetDateTime>,
    pub(super) duration: Option<i64>,
    pub(super) end: Option<OffsetDateTime>,
    pub(super) ticket: bool,
}

#[expect(
    clippy::many_single_char_names,
    reason = "short names for JSON objects under check"
)]
pub(super) fn check_request(kind: &str, body: &Value) -> Result<Checked, String> {
    let o = body
        .as_object()
        .ok_or("the request body must be a JSON object")?;
    let (type_name, allowed, actions): (&str, &[&str], &[&str]) = if kind == "role" {
        (
            "microsoft.graph.unifiedRoleAssignmentScheduleRequest",
            &[
                "action",
                "principalId",
                "roleDefinitionId",
                "directoryScopeId",
                "appScopeId",
                "justification",
                "scheduleInfo",
                "ticketInfo",
                "isValidationOnly",
                "customData",
            ],
            &[
                "adminAssign",
                "adminUpdate",
                "adminRemove",
                "selfActivate",
                "selfDeactivate",
                "adminExtend",
                "adminRenew",
                "selfExtend",
                "selfRenew",
            ],
        )
    } else {
        (
            "microsoft.graph.privilegedAccessGroupAssignmentScheduleRequest",
            &[
                "accessId",
                "principalId",
                "groupId",
                "action",
                "scheduleInfo",
                "justification",
                "ticketInfo",
                "isValidationOnly",
                "customData",
            ],
            &[
                "adminAssign",
                "adminUpdate",
                "adminRemove",
                "selfActivate",
                "selfDeactivate",
                "adminExtend",
                "adminRenew",
            ],
        )
    };
    if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "The property '{k}' does not exist on type '{type_name}'. Make sure to only use property names that are defined by the type."
        ));
    }
    let action = str_field(o, "action")?.ok_or("`action` is required")?;
    if !actions.contains(&action) {
        return Err(format!("`action` `{action}` is not one of {actions:?}"));
    }
    let principal = str_field(o, "principalId")?.ok_or("`principalId` is required")?;
    if !is_guid(principal) {
        return Err(format!("`principalId` `{principal}` is not a GUID"));
    }
    let (object, scope) = if kind == "role" {
        let role = str_field(o, "roleDefinitionId")?.ok_or("`roleDefinitionId` is required")?;
        if !is_guid(role) {
            return Err(format!("`roleDefinitionId` `{role}` is not a GUID"));
        }
        let scope = str_field(o, "directoryScopeId")?;
        let app = str_field(o, "appScopeId")?;
        let scope = match (scope, app) {
            (Some(s), None) => s,
            (None, Some(_)) => return Err("the fake supports `directoryScopeId` only".into()),
            _ => {
                return Err(
                    "exactly one of `directoryScopeId` and `appScopeId` is required".into(),
                );
            }
        };
        let valid = scope == "/"
            || scope
                .strip_prefix("/administrativeUnits/")
                .is_some_and(is_guid)
            || scope.strip_prefix('/').is_some_and(is_guid);
        if !valid {
            return Err(format!(
                "`directoryScopeId` `{scope}` is not `/`, `/{{id}}` or `/administrativeUnits/{{id}}`"
            ));
        }
        (role, scope)
    } else {
        let group = str_field(o, "groupId")?.ok_or("`groupId` is required")?;
        if !is_guid(group) {
            return Err(format!("`groupId` `{group}` is not a GUID"));
        }
        let access = str_field(o, "accessId")?.ok_or("`accessId` is required")?;
        if access != "member" && access != "owner" {
            return Err(format!("`accessId` `{access}` is not `member` or `owner`"));
        }
        (group, access)
    };
    if str_field(o, "justification")?.is_some_and(|j| j.trim().is_empty()) {
        return Err("`justification` is blank".into());
    }
    str_field(o, "customData")?;
    if o.get("isValidationOnly").is_some_and(|v| !v.is_boolean()) {
        return Err("`isValidationOnly` must be a boolean".into());
    }
    let mut ticket = false;
    if let Some(t) = o.get("ticketInfo") {
        let t = t.as_object().ok_or("`ticketInfo` must be an object")?;
        if let Some(k) = t
            .keys()
            .find(|k| *k != "ticketNumber" && *k != "ticketSystem")
        {
            return Err(format!(
                "The property '{k}' does not exist on type 'microsoft.graph.ticketInfo'."
            ));
        }
        let number = str_field(t, "ticketNumber")?;
        str_field(t, "ticketSystem")?;
        ticket = number.is_some_and(|n| !n.is_empty());
    }
    let (mut start, mut duration, mut end) = (None, None, None);
    match o.get("scheduleInfo") {
        None if action == "adminRemove" || action == "selfDeactivate" => {}
        None => return Err(format!("`scheduleInfo` is required for `{action}`")),
        Some(schedule) => {
            let schedule = schedule
                .as_object()
                .ok_or("`scheduleInfo` must be an object")?;
            if let Some(k) = schedule
                .keys()
                .find(|k| !["startDateTime", "expiration", "recurrence"].contains(&k.as_str()))
            {
                return Err(format!(
                    "The property '{k}' does not exist on type 'microsoft.graph.requestSchedule'."
                ));
            }
            if schedule.get("recurrence").is_some_and(|r| !r.is_null()) {
                return Err("recurring schedules are not supported".into());
            }
            let s = str_field(schedule, "startDateTime")?
                .ok_or("`scheduleInfo.startDateTime` is required")?;
            start = Some(parse_time(s).ok_or_else(|| {
                format!("`scheduleInfo.startDateTime` `{s}` is not an ISO 8601 date-time")
            })?);
            let e = schedule
                .get("expiration")
                .and_then(Value::as_object)
                .ok_or("`scheduleInfo.expiration` must be an object")?;
            if let Some(k) = e
                .keys()
                .find(|k| !["type", "duration", "endDateTime"].contains(&k.as_str()))
            {
                return Err(format!(
                    "The property '{k}' does not exist on type 'microsoft.graph.expirationPattern'."
                ));
            }
            let kind = str_field(e, "type")?.ok_or("`expiration.type` is required")?;
            let d = e.get("duration").filter(|v| !v.is_null());
            let t = e.get("endDateTime").filter(|v| !v.is_null());
            match kind {
                "afterDuration" => {
                    if t.is_some() {
                        return Err("`afterDuration` takes `duration`, not `endDateTime`".into());
                    }
                    let d = d
                        .and_then(Value::as_str)
                        .ok_or("`afterDuration` needs a `duration` string")?;
                    let secs = iso_seconds(d)
                        .ok_or_else(|| format!("`duration` `{d}` is not an ISO 8601 duration"))?;
                    if secs <= 0.0 {
                        return Err(format!("`duration` `{d}` is not positive"));
                    }
                    #[expect(
                        clippy::cast_possible_truncation,
                        reason = "whole seconds of a test duration"
                    )]
                    let secs = secs.ceil() as i64;
                    duration = Some(secs);
                }
                "afterDateTime" => {
                    if d.is_some() {
                        return Err("`afterDateTime` takes `endDateTime`, not `duration`".into());
                    }
                    let t = t
                        .and_then(Value::as_str)
                        .ok_or("`afterDateTime` needs an `endDateTime` string")?;
                    end = Some(parse_time(t).ok_or_else(|| {
                        format!("`endDateTime` `{t}` is not an ISO 8601 date-time")
                    })?);
                }
                "noExpiration" | "notSpecified" => {
                    if d.is_some() || t.is_some() {
                        return Err(format!(
                            "`{kind}` takes neither `duration` nor `endDateTime`"
                        ));
                    }
                }
                other => {
                    return Err(format!(
                        "`expiration.type` `{other}` is not notSpecified, noExpiration, afterDateTime or afterDuration"
                    ));
                }
            }
        }
    }
    Ok(Checked {
        action: action.to_owned(),
        principal: principal.to_owned(),
        object: object.to_owned(),
        scope: scope.to_owned(),
        start,
        duration,
        end,
        ticket,
    })
}
