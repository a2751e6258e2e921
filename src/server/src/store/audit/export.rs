//! Audit exports (`jit-server audit export`): JSON Lines, CSV and OCSF, streamed in sequence
//! order straight from the table (docs/audit.md).
//!
//! - JSON Lines: one [`jit_api::AuditEvent`] per line, with every hashed field, so an export
//!   can be re-verified off-host.
//! - CSV (RFC 4180): a header, then one row per event; cells that a spreadsheet would run as a
//!   formula (starting with `=`, `+`, `-`, `@`, tab or CR) get a leading `'`.
//! - OCSF 1.5: one event object per line; grants and revocations as *User Access Management*
//!   (3005), sign-ins as *Authentication* (3002), other events about an entitlement as 3005
//!   *Other*, the rest as *Base Event* (0). The original fields travel in `unmapped`.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;

use crate::clock::from_ms;
use crate::store::audit::{self, Event};
use crate::store::checkpoints;
use crate::store::{Store, StoreError};

/// The OCSF schema version the `ocsf` format follows.
pub const OCSF_VERSION: &str = "1.5.0";

/// The CSV columns, in order.
pub const CSV_HEADER: &str = "seq,at,actor,action,request_id,entitlement,data,prev_hash,hash";

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON audit event per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
    /// One OCSF event per line.
    Ocsf,
}

/// An export format name that is not one of `jsonl`, `csv`, `ocsf`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown export format `{0}`: use jsonl, csv or ocsf")]
pub struct UnknownFormat(pub String);

impl FromStr for ExportFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "jsonl" => Ok(Self::Jsonl),
            "csv" => Ok(Self::Csv),
            "ocsf" => Ok(Self::Ocsf),
            _ => Err(UnknownFormat(s.to_owned())),
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Jsonl => "jsonl",
            Self::Csv => "csv",
            Self::Ocsf => "ocsf",
        })
    }
}

/// Writes every event with `seq >= from` to `out` in `format`, then (JSON Lines and OCSF) the
/// signed checkpoints that cover a `seq` from `from` on, as records of their own; returns how
/// many events.
pub async fn export(
    store: &Store,
    format: ExportFormat,
    from: i64,
    out: &mut impl Write,
) -> Result<u64, StoreError> {
    let io = |e: std::io::Error| StoreError::Corrupt(format!("export: {e}"));
    if format == ExportFormat::Csv {
        out.write_all(CSV_HEADER.as_bytes()).map_err(io)?;
        out.write_all(b"\r\n").map_err(io)?;
    }
    let mut line = Vec::with_capacity(1024);
    let n = audit::for_each(store, from, |ev| {
        line.clear();
        event_line(format, &ev, &mut line)?;
        out.write_all(&line)
    })
    .await?;
    if format != ExportFormat::Csv {
        checkpoints::for_each_covering(store, from, |body| {
            let body: Value = serde_json::from_str(&body)
                .map_err(|e| StoreError::Corrupt(format!("audit_checkpoints: {e}")))?;
            line.clear();
            let record = match format {
                ExportFormat::Ocsf => ocsf_checkpoint(&body),
                _ => json!({ "record": "checkpoint", "checkpoint": body }),
            };
            serde_json::to_writer(&mut line, &record)
                .map_err(|e| StoreError::Corrupt(format!("export: {e}")))?;
            line.push(b'\n');
            out.write_all(&line)
                .map_err(|e| StoreError::Corrupt(format!("export: {e}")))
        })
        .await?;
    }
    out.flush().map_err(io)?;
    Ok(n)
}

/// Events read per page by [`stream`].
const PAGE: i64 = 1_000;

/// The events that match `filter` (its `before_seq` and `limit` aside), oldest first, in
/// `format` (CSV with its header), as one chunk of bytes per page of [`PAGE`] events. A page is
/// read only once the chunk before it has been taken, so a response body holds one page
/// whatever the log's size. An error ends the stream with it.
pub fn stream(
    store: Store,
    format: ExportFormat,
    filter: audit::Filter,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, StoreError>> + Send + 'static {
    // The `seq` the next page starts after; `None` once the last page is out.
    futures_util::stream::try_unfold(Some(0), move |after| {
        let (store, filter) = (store.clone(), filter.clone());
        async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let mut chunk = Vec::new();
            if after == 0 {
                audit::caught_up(&store).await?;
                if format == ExportFormat::Csv {
                    chunk.extend_from_slice(CSV_HEADER.as_bytes());
                    chunk.extend_from_slice(b"\r\n");
                }
            }
            let page = audit::page_after(&store, &filter, after, PAGE).await?;
            for ev in &page {
                event_line(format, ev, &mut chunk)
                    .map_err(|e| StoreError::Corrupt(format!("export: {e}")))?;
            }
            let next = match page.last() {
                Some(last) if i64::try_from(page.len()) == Ok(PAGE) => Some(last.seq),
                _ => None,
            };
            Ok((!chunk.is_empty()).then_some((chunk, next)))
        }
    })
}

/// Appends `ev` to `out` as one line of `format` (CSV: a row).
fn event_line(format: ExportFormat, ev: &Event, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match format {
        ExportFormat::Jsonl => serde_json::to_writer(&mut *out, &ev.to_api())?,
        ExportFormat::Csv => csv_row(ev, out),
        ExportFormat::Ocsf => serde_json::to_writer(&mut *out, &ocsf(ev))?,
    }
    out.extend_from_slice(if format == ExportFormat::Csv {
        b"\r\n"
    } else {
        b"\n"
    });
    Ok(())
}

/// A signed checkpoint in OCSF form: a Base Event (0, activity Other) with `event_code`
/// `audit.checkpoint`; the checkpoint, signature included, travels in `unmapped`.
pub fn ocsf_checkpoint(cp: &Value) -> Value {
    let number = cp["number"].as_u64().unwrap_or(0);
    let at_ms = cp["at"]
        .as_str()
        .and_then(|t| time::OffsetDateTime::parse(t, &Rfc3339).ok())
        .map_or(0, crate::clock::to_ms);
    json!({
        "class_uid": 0,
        "class_name": "Base Event",
        "category_uid": 0,
        "category_name": "Uncategorized",
        "activity_id": 99,
        "activity_name": "Other",
        "type_uid": 99,
        "type_name": "Base Event: Other",
        "time": at_ms,
        "severity_id": 1,
        "severity": "Informational",
        "status_id": 1,
        "status": "Success",
        "message": format!(
            "signed checkpoint {number} covers the audit chain up to seq {}",
            cp["seq"]
        ),
        "metadata": {
            "version": OCSF_VERSION,
            "product": product(),
            "uid": format!("checkpoint-{number}"),
            "event_code": "audit.checkpoint",
            "log_name": "audit_checkpoints",
        },
        "actor": { "app_name": "jit" },
        "unmapped": { "checkpoint": cp },
    })
}

fn rfc3339(ms: i64) -> String {
    from_ms(ms).format(&Rfc3339).unwrap_or_default()
}

fn csv_row(ev: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(ev.seq.to_string().as_bytes());
    for v in [
        Some(rfc3339(ev.at).as_str()),
        Some(ev.actor.as_str()),
        Some(ev.action.as_str()),
        ev.request_id.as_deref(),
        ev.entitlement.as_deref(),
        Some(ev.data.as_str()),
        Some(ev.prev_hash.as_str()),
        Some(ev.hash.as_str()),
    ] {
        out.push(b',');
        csv_cell(v.unwrap_or(""), out);
    }
}

/// One CSV cell: quoted when it holds a separator, quote or line break (quotes doubled), and
/// prefixed with `'` when a spreadsheet would read it as a formula.
pub(crate) fn csv_cell(v: &str, out: &mut Vec<u8>) {
    let formula = v.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || v.contains([',', '"', '\n', '\r']);
    if quote {
        out.push(b'"');
    }
    if formula {
        out.push(b'\'');
    }
    for b in v.bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    if quote {
        out.push(b'"');
    }
}

/// OCSF class and activity of an event.
struct Classified {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
    activity_id: u32,
    activity_name: &'static str,
}

const IAM: (u32, &str) = (3, "Identity & Access Management");

fn classify(ev: &Event) -> Classified {
    let verb = ev.action.rsplit('.').next().unwrap_or_default();
    let (class_uid, class_name, activity_id, activity_name) = match verb {
        "signed_in" | "sign_in" | "login" | "logged_in" => (3002, "Authentication", 1, "Logon"),
        "signed_out" | "sign_out" | "logout" | "logged_out" => {
            (3002, "Authentication", 2, "Logoff")
        }
        _ if ev.entitlement.is_none() => (0, "Base Event", 99, "Other"),
        "activated" | "granted" | "assigned" => {
            (3005, "User Access Management", 1, "Assign Privileges")
        }
        "revoked" | "expired" | "deprovisioned" | "removed" => {
            (3005, "User Access Management", 2, "Revoke Privileges")
        }
        _ => (3005, "User Access Management", 99, "Other"),
    };
    let (category_uid, category_name) = if class_uid == 0 {
        (0, "Uncategorized")
    } else {
        IAM
    };
    Classified {
        class_uid,
        class_name,
        category_uid,
        category_name,
        activity_id,
        activity_name,
    }
}

/// OCSF `metadata.product`.
fn product() -> Value {
    json!({ "name": "jit", "vendor_name": "jit", "version": env!("CARGO_PKG_VERSION") })
}

/// An OCSF `user` object for an actor or subject name.
fn ocsf_user(name: &str) -> Value {
    let mut user = Map::new();
    user.insert("name".into(), name.into());
    if name.contains('@') {
        user.insert("email_addr".into(), name.into());
    }
    Value::Object(user)
}

/// The event in OCSF form.
pub fn ocsf(ev: &Event) -> Value {
    let c = classify(ev);
    let data: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
    let failed = ev.action.ends_with("failed");
    let actor = if ev.actor == "system" {
        json!({ "app_name": "jit" })
    } else {
        json!({ "user": ocsf_user(&ev.actor) })
    };
    let mut o = json!({
        "class_uid": c.class_uid,
        "class_name": c.class_name,
        "category_uid": c.category_uid,
        "category_name": c.category_name,
        "activity_id": c.activity_id,
        "activity_name": c.activity_name,
        "type_uid": u64::from(c.class_uid) * 100 + u64::from(c.activity_id),
        "type_name": format!("{}: {}", c.class_name, c.activity_name),
        "time": ev.at,
        "severity_id": 1,
        "severity": "Informational",
        "status_id": if failed { 2 } else { 1 },
        "status": if failed { "Failure" } else { "Success" },
        "message": match &ev.entitlement {
            Some(e) => format!("{} {} `{e}`", ev.actor, ev.action),
            None => format!("{} {}", ev.actor, ev.action),
        },
        "metadata": {
            "version": OCSF_VERSION,
            "product": product(),
            "uid": ev.seq.to_string(),
            "sequence": ev.seq,
            "event_code": ev.action,
            "log_name": "audit_events",
        },
        "actor": actor,
        // every hashed field, as stored: the chain can be re-verified from an OCSF export
        "unmapped": {
            "seq": ev.seq,
            "at": ev.at,
            "actor": ev.actor,
            "action": ev.action,
            "request_id": ev.request_id,
            "entitlement": ev.entitlement,
            "data": data,
            "prev_hash": ev.prev_hash,
            "hash": ev.hash,
        },
    });
    if let Some(rid) = &ev.request_id {
        o["metadata"]["correlation_uid"] = rid.as_str().into();
    }
    match c.class_uid {
        3002 => o["user"] = ocsf_user(&ev.actor),
        3005 => {
            // whose access changed: the requester when the event names one, else the actor
            let subject = data
                .get("requester")
                .and_then(Value::as_str)
                .unwrap_or(&ev.actor);
            o["user"] = ocsf_user(subject);
            if let Some(e) = &ev.entitlement {
                o["privileges"] = json!([e]);
                o["resources"] = json!([{ "uid": e, "name": e, "type": "jit entitlement" }]);
            }
        }
        _ => {}
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(v: &str) -> String {
        let mut out = Vec::new();
        csv_cell(v, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_cells_are_quoted_only_when_needed() {
        assert_eq!(cell("alice@example.com"), "alice@example.com");
        assert_eq!(cell(""), "");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn csv_cells_never_start_a_formula() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+1"), "\"'+1\"");
        assert_eq!(cell("-2+3"), "\"'-2+3\"");
        assert_eq!(cell("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(cell("\tx"), "\"'\tx\"");
        assert_eq!(cell("a=b"), "a=b");
    }

    #[test]
    fn formats_parse_by_name() {
        assert_eq!("jsonl".parse(), Ok(ExportFormat::Jsonl));
        assert_eq!("CSV".parse(), Ok(ExportFormat::Csv));
        assert_eq!("ocsf".parse(), Ok(ExportFormat::Ocsf));
        let err = "xml".parse::<ExportFormat>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown export format `xml`: use jsonl, csv or ocsf"
        );
        for f in [ExportFormat::Jsonl, ExportFormat::Csv, ExportFormat::Ocsf] {
            assert_eq!(f.to_string().parse(), Ok(f));
        }
    }

    fn event(action: &str, actor: &str, entitlement: Option<&str>, data: &str) -> Event {
        Event {
            seq: 7,
            at: 1_790_000_000_123,
            actor: actor.into(),
            action: action.into(),
            request_id: Some("0190a5c4-1b2c-7d3e-8f40-123456789abc".into()),
            entitlement: entitlement.map(str::to_owned),
            data: data.into(),
            prev_hash: "a".repeat(64),
            hash: "b".repeat(64),
            pending: false,
        }
    }

    #[test]
    fn ocsf_classes_follow_the_action() {
        let grant = ocsf(&event(
            "grant.activated",
            "system",
            Some("aws-prod-admin"),
            r#"{"requester":"alice@example.com"}"#,
        ));
        assert_eq!(grant["class_uid"], 3005);
        assert_eq!(grant["category_uid"], 3);
        assert_eq!(grant["activity_id"], 1);
        assert_eq!(grant["type_uid"], 300_501);
        assert_eq!(grant["user"]["email_addr"], "alice@example.com");
        assert_eq!(grant["actor"]["app_name"], "jit");
        assert_eq!(grant["privileges"], json!(["aws-prod-admin"]));
        assert_eq!(
            grant["metadata"]["correlation_uid"],
            "0190a5c4-1b2c-7d3e-8f40-123456789abc"
        );

        let revoke = ocsf(&event(
            "grant.expired",
            "system",
            Some("aws-prod-admin"),
            "{}",
        ));
        assert_eq!(
            (revoke["class_uid"].clone(), revoke["activity_id"].clone()),
            (json!(3005), json!(2))
        );
        assert_eq!(revoke["type_uid"], 300_502);

        let approve = ocsf(&event(
            "request.approved",
            "bob@example.com",
            Some("x"),
            "{}",
        ));
        assert_eq!(approve["type_uid"], 300_599);
        assert_eq!(approve["actor"]["user"]["name"], "bob@example.com");
        assert_eq!(approve["user"]["name"], "bob@example.com");

        let login = ocsf(&event("auth.signed_in", "carol@example.com", None, "{}"));
        assert_eq!(login["type_uid"], 300_201);
        assert_eq!(login["user"]["name"], "carol@example.com");

        let failed = ocsf(&event("grant.failed", "system", Some("x"), "{}"));
        assert_eq!(failed["status_id"], 2);

        let policy = ocsf(&event("policy.loaded", "system", None, "{}"));
        assert_eq!(
            (policy["class_uid"].clone(), policy["category_uid"].clone()),
            (json!(0), json!(0))
        );
        assert_eq!(policy["type_uid"], 99);
    }
}
