//! Field-by-field checks of `roleAssignmentScheduleRequests` bodies, after the
//! 2020-10-01 spec (`RoleAssignmentScheduleRequest.json`): the body is
//! `{"properties": {…}}`, `principalId`, `roleDefinitionId` and `requestType`
//! are required, `scheduleInfo.expiration.type` is one of three values and
//! `duration` an ISO 8601 duration.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::scope::Scope;
use crate::graph_fake::checks::{is_guid, iso_seconds, parse_time};

/// Writable properties of the 2020-10-01 spec.
const WRITABLE: &[&str] = &[
    "roleDefinitionId",
    "principalId",
    "requestType",
    "targetRoleAssignmentScheduleId",
    "targetRoleAssignmentScheduleInstanceId",
    "scheduleInfo",
    "linkedRoleEligibilityScheduleId",
    "justification",
    "ticketInfo",
    "condition",
    "conditionVersion",
];
/// Read-only properties: ARM ignores them in a request body (Terraform sends `scope`).
const READ_ONLY: &[&str] = &[
    "scope",
    "principalType",
    "status",
    "approvalId",
    "createdOn",
    "requestorId",
    "expandedProperties",
];
/// The spec's `requestType` enum.
pub(super) const REQUEST_TYPES: &[&str] = &[
    "AdminAssign",
    "AdminRemove",
    "AdminUpdate",
    "AdminExtend",
    "AdminRenew",
    "SelfActivate",
    "SelfDeactivate",
    "SelfExtend",
    "SelfRenew",
];

/// A checked request: the fields the fake acts on.
#[derive(Debug, Clone)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one flag per field of the request"
)]
pub(super) struct Checked {
    pub(super) request_type: String,
    pub(super) principal: String,
    /// Role definition GUID, lowercase.
    pub(super) role: String,
    pub(super) start: Option<OffsetDateTime>,
    /// `AfterDuration`, seconds.
    pub(super) duration: Option<i64>,
    /// `AfterDateTime`.
    pub(super) end: Option<OffsetDateTime>,
    /// `scheduleInfo.expiration` was sent.
    pub(super) expiration: bool,
    /// `NoExpiration`.
    pub(super) permanent: bool,
    pub(super) justification: bool,
    pub(super) ticket: bool,
    pub(super) target_schedule: Option<String>,
    pub(super) condition: Option<String>,
}

fn str_field<'a>(o: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, String> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) => Ok(Some(v)),
        Some(other) => Err(format!("`{k}` must be a string, not {other}")),
    }
}

/// Checks a request body at `scope`; `Err` is the reason, as ARM's `message`.
pub(super) fn check_request(scope: &Scope, body: &Value) -> Result<Checked, String> {
    let top = body
        .as_object()
        .ok_or("the request body must be a JSON object")?;
    if let Some(k) = top.keys().find(|k| *k != "properties") {
        return Err(format!(
            "Could not find member '{k}' on object of type 'RoleAssignmentScheduleRequest'"
        ));
    }
    let o = top
        .get("properties")
        .and_then(Value::as_object)
        .ok_or("`properties` is required and must be an object")?;
    if let Some(k) = o
        .keys()
        .find(|k| !WRITABLE.contains(&k.as_str()) && !READ_ONLY.contains(&k.as_str()))
    {
        return Err(format!(
            "Could not find member '{k}' on object of type 'RoleAssignmentScheduleRequestProperties'"
        ));
    }
    let request_type = str_field(o, "requestType")?.ok_or("`requestType` is required")?;
    if !REQUEST_TYPES.contains(&request_type) {
        return Err(format!(
            "`requestType` `{request_type}` is not one of {REQUEST_TYPES:?}"
        ));
    }
    let principal = str_field(o, "principalId")?.ok_or("`principalId` is required")?;
    if !is_guid(principal) {
        return Err(format!("`principalId` `{principal}` is not a GUID"));
    }
    let role = str_field(o, "roleDefinitionId")?.ok_or("`roleDefinitionId` is required")?;
    let role = scope.role_definition(role)?;
    let justification = str_field(o, "justification")?;
    if justification.is_some_and(|j| j.trim().is_empty()) {
        return Err("`justification` is blank".into());
    }
    let mut ticket = false;
    if let Some(t) = o.get("ticketInfo").filter(|t| !t.is_null()) {
        let t = t.as_object().ok_or("`ticketInfo` must be an object")?;
        if let Some(k) = t
            .keys()
            .find(|k| *k != "ticketNumber" && *k != "ticketSystem")
        {
            return Err(format!(
                "Could not find member '{k}' on object of type 'TicketInfo'"
            ));
        }
        ticket = str_field(t, "ticketNumber")?.is_some_and(|n| !n.trim().is_empty());
        str_field(t, "ticketSystem")?;
    }
    let condition = str_field(o, "condition")?;
    let version = str_field(o, "conditionVersion")?;
    match (condition, version) {
        (None, None) => {}
        // The spec: "Currently accepted value is '2.0'".
        (Some(c), Some("2.0")) if !c.trim().is_empty() => {}
        (Some(_), Some(v)) => return Err(format!("`conditionVersion` `{v}` is not `2.0`")),
        _ => return Err("`condition` and `conditionVersion` go together".into()),
    }
    let target_schedule = str_field(o, "targetRoleAssignmentScheduleId")?.map(str::to_owned);
    str_field(o, "targetRoleAssignmentScheduleInstanceId")?;
    if str_field(o, "linkedRoleEligibilityScheduleId")?.is_some() && request_type != "SelfActivate"
    {
        return Err("`linkedRoleEligibilityScheduleId` is for `SelfActivate` only".into());
    }
    let mut checked = Checked {
        request_type: request_type.to_owned(),
        principal: principal.to_ascii_lowercase(),
        role,
        start: None,
        duration: None,
        end: None,
        expiration: false,
        permanent: false,
        justification: justification.is_some(),
        ticket,
        target_schedule,
        condition: condition.map(str::to_owned),
    };
    if let Some(schedule) = o.get("scheduleInfo").filter(|v| !v.is_null()) {
        check_schedule(schedule, &mut checked)?;
    }
    Ok(checked)
}

fn check_schedule(schedule: &Value, c: &mut Checked) -> Result<(), String> {
    let schedule = schedule
        .as_object()
        .ok_or("`scheduleInfo` must be an object")?;
    if let Some(k) = schedule
        .keys()
        .find(|k| *k != "startDateTime" && *k != "expiration")
    {
        return Err(format!(
            "Could not find member '{k}' on object of type 'ScheduleInfo'"
        ));
    }
    if let Some(s) = str_field(schedule, "startDateTime")? {
        c.start = Some(parse_time(s).ok_or_else(|| {
            format!("`scheduleInfo.startDateTime` `{s}` is not an RFC 3339 date-time")
        })?);
    }
    let Some(e) = schedule.get("expiration").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let e = e
        .as_object()
        .ok_or("`scheduleInfo.expiration` must be an object")?;
    if let Some(k) = e
        .keys()
        .find(|k| !["type", "duration", "endDateTime"].contains(&k.as_str()))
    {
        return Err(format!(
            "Could not find member '{k}' on object of type 'Expiration'"
        ));
    }
    c.expiration = true;
    let kind = str_field(e, "type")?.ok_or("`expiration.type` is required")?;
    let duration = str_field(e, "duration")?;
    let end = str_field(e, "endDateTime")?;
    match kind {
        "AfterDuration" => {
            if end.is_some() {
                return Err("`AfterDuration` takes `duration`, not `endDateTime`".into());
            }
            let d = duration.ok_or("`AfterDuration` needs a `duration`")?;
            let seconds = iso_seconds(d)
                .ok_or_else(|| format!("`duration` `{d}` is not an ISO 8601 duration"))?;
            if seconds <= 0.0 {
                return Err(format!("`duration` `{d}` is not positive"));
            }
            #[expect(
                clippy::cast_possible_truncation,
                reason = "whole seconds of a test duration"
            )]
            let seconds = seconds.ceil() as i64;
            c.duration = Some(seconds);
        }
        "AfterDateTime" => {
            if duration.is_some() {
                return Err("`AfterDateTime` takes `endDateTime`, not `duration`".into());
            }
            let t = end.ok_or("`AfterDateTime` needs an `endDateTime`")?;
            c.end = Some(
                parse_time(t)
                    .ok_or_else(|| format!("`endDateTime` `{t}` is not an RFC 3339 date-time"))?,
            );
        }
        "NoExpiration" => {
            if duration.is_some() || end.is_some() {
                return Err("`NoExpiration` takes neither `duration` nor `endDateTime`".into());
            }
            c.permanent = true;
        }
        other => {
            return Err(format!(
                "`expiration.type` `{other}` is not AfterDuration, AfterDateTime or NoExpiration"
            ));
        }
    }
    Ok(())
}
