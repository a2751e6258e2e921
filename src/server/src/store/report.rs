//! The access review report (`jit-server report access`): who held which entitlement in a
//! period, when and for how long, why, approved by whom, break-glass and its review, and what
//! was done with it — read from the audit log alone, so every grant row is one
//! `grant.activated` event (its `seq`), and the log's hash chain vouches for the report.
//! Then the break-glass uses nobody reviewed, and the reconciliation findings of the period.

use std::collections::HashMap;
use std::io::Write;

use serde::Serialize;
use serde_json::Value;

use super::audit::export::csv_cell;
use super::audit::{self, Event};
use super::{Store, StoreError};

/// The columns, in order (CSV header and JSON keys).
pub const COLUMNS: [&str; 21] = [
    "section",
    "seq",
    "at",
    "request_id",
    "entitlement",
    "requester",
    "justification",
    "ticket",
    "approved_by",
    "break_glass",
    "break_glass_reviewed_by",
    "activated_at",
    "expires_at",
    "ended_at",
    "end",
    "ended_by",
    "held_seconds",
    "credentials_minted",
    "console_signins",
    "simulated",
    "detail",
];

/// One row. `section`: `grant` (one per `grant.activated` event whose grant was held in the
/// period), `unreviewed_break_glass` (a break-glass grant of those without a
/// `break_glass.reviewed` event) or `reconcile_finding` (a `reconcile.drift` event of the
/// period). `seq` and `at` are the event's.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    /// What the row is.
    pub section: &'static str,
    /// The audit event the row stands for.
    pub seq: i64,
    /// When that event happened (RFC 3339, UTC).
    pub at: String,
    /// The request.
    pub request_id: String,
    /// The entitlement.
    pub entitlement: String,
    /// Who asked (and held it).
    pub requester: String,
    /// Why.
    pub justification: String,
    /// The ticket given.
    pub ticket: String,
    /// The approvers, `; `-separated; `auto-approved` or `break-glass` when nobody decided.
    pub approved_by: String,
    /// Granted by break-glass.
    pub break_glass: bool,
    /// Who reviewed the break-glass use.
    pub break_glass_reviewed_by: String,
    /// When the grant began.
    pub activated_at: String,
    /// When it was to end.
    pub expires_at: String,
    /// When it ended; empty while still held at the end of the period.
    pub ended_at: String,
    /// How it ended: the audit action (`grant.expired`, `grant.revoked`, …).
    pub end: String,
    /// Who ended it (`system` for an expiry).
    pub ended_by: String,
    /// Seconds held: to its end or its expiry, whichever came first, or to the end of the
    /// period while still held.
    pub held_seconds: i64,
    /// `credentials.minted` events of the grant.
    pub credentials_minted: u32,
    /// `console.signin` events of the grant.
    pub console_signins: u32,
    /// Recorded but simulated (development mode).
    pub simulated: bool,
    /// Findings: the drift as recorded (kind, removed, unexplained, missing).
    pub detail: String,
}

/// `csv` (RFC 4180) or `jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated, CRLF, a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "csv" => Ok(Self::Csv),
            "jsonl" => Ok(Self::Jsonl),
            other => Err(format!("unknown format `{other}`: use csv or jsonl")),
        }
    }
}

/// What is known of a request from its events.
#[derive(Default)]
struct Asked {
    requester: String,
    justification: String,
    ticket: String,
    approvers: Vec<String>,
    auto: bool,
    break_glass: bool,
    reviewed_by: Option<String>,
}

/// The report's rows for the period `[from_ms, to_ms)`, in order: grants by activation, then
/// unreviewed break-glass uses, then findings. It covers every event committed before the
/// call: on PostgreSQL it first waits for the chain to take in the pending ones.
pub async fn access(store: &Store, from_ms: i64, to_ms: i64) -> Result<Vec<Row>, StoreError> {
    audit::caught_up(store).await?;
    let mut asked: HashMap<String, Asked> = HashMap::new();
    let mut grants: Vec<Row> = Vec::new();
    let mut open: HashMap<String, usize> = HashMap::new();
    let mut findings = Vec::new();
    audit::for_each(store, 1, |ev| {
        take(
            &ev,
            &mut asked,
            &mut grants,
            &mut open,
            &mut findings,
            (from_ms, to_ms),
        );
        Ok(())
    })
    .await?;
    let mut rows: Vec<Row> = grants
        .into_iter()
        .filter(|g| held_in(g, from_ms, to_ms))
        .map(|mut g| {
            if let Some(a) = asked.get(&g.request_id) {
                fill(&mut g, a);
            }
            // To its end, but never past its expiry (a late expiry job does not lengthen it),
            // nor past the period while still held.
            let ended = if g.ended_at.is_empty() {
                to_ms
            } else {
                parse_ms(&g.ended_at).unwrap_or(to_ms)
            };
            let end = parse_ms(&g.expires_at).map_or(ended, |e| e.min(ended));
            let held_ms = (end - parse_ms(&g.activated_at).unwrap_or(end)).max(0);
            g.held_seconds = (held_ms + 500) / 1000;
            g
        })
        .collect();
    let unreviewed: Vec<Row> = rows
        .iter()
        .filter(|g| g.break_glass && g.break_glass_reviewed_by.is_empty())
        .map(|g| Row {
            section: "unreviewed_break_glass",
            ..g.clone()
        })
        .collect();
    rows.extend(unreviewed);
    rows.extend(findings);
    Ok(rows)
}

/// Copies what the request's events said into its grant row.
fn fill(g: &mut Row, a: &Asked) {
    g.requester.clone_from(&a.requester);
    g.justification.clone_from(&a.justification);
    g.ticket.clone_from(&a.ticket);
    g.break_glass = a.break_glass;
    g.approved_by = if !a.approvers.is_empty() {
        a.approvers.join("; ")
    } else if a.break_glass {
        "break-glass".to_owned()
    } else if a.auto {
        "auto-approved".to_owned()
    } else {
        String::new()
    };
    g.break_glass_reviewed_by = a.reviewed_by.clone().unwrap_or_default();
}

/// Held at some time in `[from_ms, to_ms)`.
fn held_in(g: &Row, from_ms: i64, to_ms: i64) -> bool {
    let began = parse_ms(&g.activated_at).unwrap_or(i64::MAX);
    let ended = if g.ended_at.is_empty() {
        i64::MAX
    } else {
        parse_ms(&g.ended_at).unwrap_or(i64::MAX)
    };
    began < to_ms && ended >= from_ms
}

fn rfc3339(ms: i64) -> String {
    crate::clock::fmt_ms(ms)
}

fn parse_ms(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(crate::clock::to_ms)
}

/// Folds one event into what is known.
fn take(
    ev: &Event,
    asked: &mut HashMap<String, Asked>,
    grants: &mut Vec<Row>,
    open: &mut HashMap<String, usize>,
    findings: &mut Vec<Row>,
    (from_ms, to_ms): (i64, i64),
) {
    let data: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
    let text = |k: &str| data[k].as_str().unwrap_or_default().to_owned();
    if ev.action == "reconcile.drift" {
        if ev.at >= from_ms && ev.at < to_ms {
            findings.push(Row {
                section: "reconcile_finding",
                seq: ev.seq,
                at: rfc3339(ev.at),
                detail: ev.data.clone(),
                ..Row::default()
            });
        }
        return;
    }
    let Some(rid) = ev.request_id.clone() else {
        return;
    };
    match ev.action.as_str() {
        "request.created" | "request.extension_requested" => {
            let inherited = data["extends"]
                .as_str()
                .and_then(|p| asked.get(p))
                .map(|p| p.ticket.clone())
                .unwrap_or_default();
            let ticket = text("ticket");
            asked.insert(
                rid,
                Asked {
                    requester: ev.actor.clone(),
                    justification: text("justification"),
                    ticket: if ticket.is_empty() { inherited } else { ticket },
                    break_glass: data["break_glass"].as_bool().unwrap_or(false),
                    ..Asked::default()
                },
            );
        }
        "request.approval" => asked
            .entry(rid)
            .or_default()
            .approvers
            .push(ev.actor.clone()),
        "request.auto_approved" => asked.entry(rid).or_default().auto = true,
        "request.break_glass" => asked.entry(rid).or_default().break_glass = true,
        "break_glass.reviewed" => {
            asked.entry(rid).or_default().reviewed_by = Some(ev.actor.clone());
        }
        "grant.activated" => {
            open.insert(rid.clone(), grants.len());
            grants.push(Row {
                section: "grant",
                seq: ev.seq,
                at: rfc3339(ev.at),
                request_id: rid,
                entitlement: ev.entitlement.clone().unwrap_or_default(),
                activated_at: rfc3339(ev.at),
                expires_at: text("expires_at"),
                simulated: data["simulated"].as_bool().unwrap_or(false),
                ..Row::default()
            });
        }
        "grant.expired" | "grant.revoked" | "grant.failed" | "grant.orphaned" => {
            if let Some(i) = open.remove(&rid) {
                let g = &mut grants[i];
                g.ended_at = rfc3339(ev.at);
                g.end.clone_from(&ev.action);
                g.ended_by.clone_from(&ev.actor);
            }
        }
        "credentials.minted" => {
            if let Some(&i) = open.get(&rid) {
                grants[i].credentials_minted += 1;
            }
        }
        "console.signin" => {
            if let Some(&i) = open.get(&rid) {
                grants[i].console_signins += 1;
            }
        }
        _ => {}
    }
}

/// Writes `rows` as `format`; the number written.
pub fn write(rows: &[Row], format: Format, out: &mut impl Write) -> std::io::Result<usize> {
    match format {
        Format::Jsonl => {
            for row in rows {
                serde_json::to_writer(&mut *out, row)?;
                out.write_all(b"\n")?;
            }
        }
        Format::Csv => {
            out.write_all(COLUMNS.join(",").as_bytes())?;
            out.write_all(b"\r\n")?;
            let mut line = Vec::with_capacity(512);
            for row in rows {
                line.clear();
                let Value::Object(map) = serde_json::to_value(row).unwrap_or(Value::Null) else {
                    continue;
                };
                for (i, column) in COLUMNS.iter().enumerate() {
                    if i > 0 {
                        line.push(b',');
                    }
                    let cell = match &map[*column] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    csv_cell(&cell, &mut line);
                }
                line.extend_from_slice(b"\r\n");
                out.write_all(&line)?;
            }
        }
    }
    out.flush()?;
    Ok(rows.len())
}

/// Reads a time given on the command line: RFC 3339, or a day (`2026-12-01`, midnight UTC).
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Some(ms) = parse_ms(text) {
        return Ok(ms);
    }
    let day = time::Date::parse(
        text,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| {
        format!(
            "`{text}` is not a time: give a day (2026-12-01) or RFC 3339 (2026-12-01T08:00:00Z)"
        )
    })?;
    Ok(crate::clock::to_ms(day.midnight().assume_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_ms;

    #[test]
    fn times_are_days_or_rfc_3339() {
        assert_eq!(
            parse_time("2026-12-01").unwrap(),
            parse_time("2026-12-01T00:00:00Z").unwrap()
        );
        assert!(parse_time("yesterday").unwrap_err().contains("`yesterday`"));
        assert_eq!(from_ms(parse_time("2026-12-01").unwrap()).day(), 1);
    }

    #[test]
    fn csv_cells_are_quoted_as_rfc_4180_says() {
        let row = Row {
            section: "grant",
            seq: 7,
            justification: "fix \"prod\", now\nplease".to_owned(),
            ticket: "=HYPERLINK()".to_owned(),
            ..Row::default()
        };
        let mut out = Vec::new();
        write(&[row], Format::Csv, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (header, rest) = text.split_once("\r\n").unwrap();
        assert_eq!(header, COLUMNS.join(","));
        assert!(
            rest.starts_with("grant,7,,,,,\"fix \"\"prod\"\", now\nplease\",\"'=HYPERLINK()\","),
            "{rest}"
        );
        assert!(rest.ends_with("\r\n"));
    }
}
