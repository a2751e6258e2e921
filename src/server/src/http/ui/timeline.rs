//! A request's audit events in people's words: "bob@example.com approved: “ok for INC-4711”",
//! "Access granted until 07:22 UTC". The raw event (its action code and data) stays one click
//! away, behind a disclosure.

use serde_json::Value;

use super::when;

use crate::store::audit::Event;

/// One entry of a request's timeline.
pub(super) struct TimelineItem {
    /// When, as pages show it (`2026-11-29 09:52:15 UTC`).
    pub at: String,
    /// When, in RFC 3339 (the script shows the reader's local time beside it).
    pub at_iso: String,
    /// What happened, in a sentence.
    pub sentence: String,
    /// The event's action code (`grant.activated`).
    pub action: String,
    /// The event's data in words (`reference: simulated-… · overlapping: false`).
    pub detail: String,
}

impl TimelineItem {
    pub(super) fn of(e: &Event) -> Self {
        let data = serde_json::from_str::<Value>(&e.data).unwrap_or(Value::Null);
        Self {
            at: when(e.at),
            at_iso: super::iso(e.at),
            sentence: sentence(e, &data),
            action: e.action.clone(),
            detail: detail(&data),
        }
    }
}

/// `"text"` of a string field, or nothing.
fn text<'a>(data: &'a Value, key: &str) -> Option<&'a str> {
    data.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// `: “comment”` when the event carries one.
fn quoted(data: &Value, key: &str) -> String {
    text(data, key).map_or_else(String::new, |c| format!(": “{c}”"))
}

/// An RFC 3339 time of the event's data as pages show it: `07:22 UTC` on the day of the event,
/// the date too otherwise.
fn until(data: &Value, event_ms: i64) -> Option<String> {
    let at = text(data, "expires_at")?;
    let t = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
    let same_day = crate::clock::from_ms(event_ms).date() == t.date();
    let fmt = if same_day {
        time::macros::format_description!("[hour]:[minute] UTC")
    } else {
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC")
    };
    t.format(&fmt).ok()
}

/// What `e` means, in a sentence.
fn sentence(e: &Event, data: &Value) -> String {
    let who = e.actor.as_str();
    let n = |key: &str| data.get(key).and_then(Value::as_i64);
    match e.action.as_str() {
        "request.created" => {
            let mut s = format!("{who} requested access");
            if let Some(secs) = n("duration_seconds") {
                s = format!(
                    "{who} requested {} of access",
                    jit_api::format_duration(u64::try_from(secs).unwrap_or(0))
                );
            }
            if let Some(ticket) = text(data, "ticket") {
                s = format!("{s} for ticket {ticket}");
            }
            if data.get("break_glass").and_then(Value::as_bool) == Some(true) {
                s.push_str(", breaking glass");
            }
            s
        }
        "request.extension_requested" => match n("by_seconds") {
            Some(by) => format!(
                "{who} asked for {} more",
                jit_api::format_duration(u64::try_from(by).unwrap_or(0))
            ),
            None => format!("{who} asked for more time"),
        },
        "request.auto_approved" => "Auto-approved: this entitlement needs no approval".to_owned(),
        "request.break_glass" => {
            "Break-glass: granted without approval, to be reviewed afterwards".to_owned()
        }
        "request.approval" => {
            let progress = match (n("approvals"), n("approvals_required")) {
                (Some(got), Some(need)) if need > 1 => format!(" ({got} of {need})"),
                _ => String::new(),
            };
            format!("{who} approved{progress}{}", quoted(data, "comment"))
        }
        "request.approved" => {
            let approvers: Vec<&str> = data
                .get("approvers")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if approvers.is_empty() {
                "Approved".to_owned()
            } else {
                format!("Approved by {}", approvers.join(", "))
            }
        }
        "request.denied" => format!("{who} denied{}", quoted(data, "comment")),
        "request.cancelled" => format!("{who} cancelled the request"),
        "request.timed_out" => "Nobody decided in time: the request timed out".to_owned(),
        "grant.activated" => {
            let simulated = if data.get("simulated").and_then(Value::as_bool) == Some(true) {
                " (simulated)"
            } else {
                ""
            };
            match until(data, e.at) {
                Some(t) => format!("Access granted until {t}{simulated}"),
                None => format!("Access granted{simulated}"),
            }
        }
        "grant.expiring_soon" => match until(data, e.at) {
            Some(t) => format!("Access ends soon, at {t}"),
            None => "Access ends soon".to_owned(),
        },
        "grant.expired" => "Access expired".to_owned(),
        "grant.revoked" => format!("{who} revoked the access{}", quoted(data, "reason")),
        "grant.failed" => format!("Granting failed{}", quoted(data, "reason")),
        "grant.removed" => "Access removed at the provider".to_owned(),
        "grant.removal_retry" => "Removing the access failed; it is tried again".to_owned(),
        "grant.removal_skipped" => {
            "Access kept at the provider: another grant still needs it".to_owned()
        }
        "grant.orphaned" => "The grant ended before the provider finished".to_owned(),
        "credentials.minted" => format!("{who} got credentials"),
        "credentials.withdrawn" => format!("Credentials withdrawn{}", quoted(data, "reason")),
        "console.signin" => format!("{who} opened the console"),
        "break_glass.reviewed" => {
            format!(
                "{who} reviewed the break-glass use{}",
                quoted(data, "comment")
            )
        }
        other => format!("{other} by {who}"),
    }
}

/// The event's data in words, in its order, for the disclosure: every field but the policy hash.
fn detail(data: &Value) -> String {
    let Value::Object(map) = data else {
        return String::new();
    };
    map.iter()
        .filter(|(k, v)| !v.is_null() && k.as_str() != "policy_hash")
        .map(|(k, v)| format!("{}: {}", k.replace('_', " "), detail_value(v)))
        .collect::<Vec<_>>()
        .join(" · ")
}

fn detail_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(detail_value)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(actor: &str, action: &str, data: &str) -> Event {
        Event {
            seq: 1,
            // 2026-11-29 06:22:00 UTC
            at: 1_795_933_320_000,
            actor: actor.to_owned(),
            action: action.to_owned(),
            request_id: None,
            entitlement: None,
            data: data.to_owned(),
            prev_hash: String::new(),
            hash: String::new(),
            pending: false,
        }
    }

    #[test]
    fn events_read_as_sentences() {
        let cases = [
            (
                event(
                    "bob@example.com",
                    "request.approval",
                    r#"{"comment":"ok for INC-4711","approvals":1,"approvals_required":1}"#,
                ),
                "bob@example.com approved: “ok for INC-4711”",
            ),
            (
                event(
                    "bob@example.com",
                    "request.approval",
                    r#"{"comment":null,"approvals":1,"approvals_required":2}"#,
                ),
                "bob@example.com approved (1 of 2)",
            ),
            (
                event(
                    "system",
                    "grant.activated",
                    r#"{"expires_at":"2026-11-29T07:22:00Z","simulated":false}"#,
                ),
                "Access granted until 07:22 UTC",
            ),
            (
                event(
                    "system",
                    "grant.activated",
                    r#"{"expires_at":"2026-11-30T01:00:00Z","simulated":true}"#,
                ),
                "Access granted until 2026-11-30 01:00 UTC (simulated)",
            ),
            (
                event(
                    "alice@example.com",
                    "request.created",
                    r#"{"duration_seconds":3600,"ticket":"INC-1","break_glass":false}"#,
                ),
                "alice@example.com requested 1h of access for ticket INC-1",
            ),
            (
                event("system", "request.auto_approved", "{}"),
                "Auto-approved: this entitlement needs no approval",
            ),
            (
                event("carol@example.com", "some.new_thing", "{}"),
                "some.new_thing by carol@example.com",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(TimelineItem::of(&e).sentence, want);
        }
    }

    #[test]
    fn the_raw_data_keeps_every_field_but_the_policy_hash() {
        let e = event(
            "system",
            "grant.activated",
            r#"{"reference":"simulated-1","overlapping":false,"policy_hash":"abc","details":["x"]}"#,
        );
        assert_eq!(
            TimelineItem::of(&e).detail,
            "reference: simulated-1 · overlapping: false · details: x"
        );
    }
}
