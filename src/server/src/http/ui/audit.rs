//! The audit page and its export.

use std::fmt::Write as _;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::timeline::TimelineItem;
use super::{Chrome, UiError, nonempty, when};
use crate::http::Web;
use crate::http::auth::SignedIn;
use crate::service::ServiceError;
use crate::store::audit;
use crate::store::audit::export::ExportFormat;

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/audit", get(audit_page))
        .route("/audit/export", get(audit_export))
}

#[derive(Deserialize, Default)]
struct AuditQuery {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    entitlement: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    request: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    before: Option<i64>,
}

struct AuditRow {
    seq: i64,
    at: String,
    actor: String,
    action: String,
    entitlement: String,
    request_id: String,
    hash: String,
    /// The first 12 characters of `hash`.
    hash_short: String,
    /// Committed, not chained yet (PostgreSQL): no hash to show.
    pending: bool,
    /// What happened, in a sentence.
    sentence: String,
    /// The event's data in words.
    detail: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    rows: Vec<AuditRow>,
    actor: String,
    entitlement: String,
    action: String,
    request: String,
    since: String,
    until: String,
    next: String,
    /// Why these events cannot be listed: the audit log is damaged (empty when they can).
    damaged: String,
    /// The newest signed checkpoint covering the chain (empty without a signing key).
    checkpoint: String,
    verified: bool,
    verify_text: String,
    query: String,
}

/// "signed checkpoint 41 covers events 1 to 1300 (…); 6 events not yet covered".
fn checkpoint_text(report: Option<&jit_api::CheckpointReport>) -> String {
    let Some(report) = report else {
        return String::new();
    };
    let uncovered = match report.not_covered {
        0 => String::new(),
        1 => "; 1 event not yet covered".to_owned(),
        n => format!("; {n} events not yet covered"),
    };
    match &report.newest {
        Some(cp) => format!(
            "signed checkpoint {} covers events 1 to {} (signed {} by {}, key {}){uncovered}",
            cp.number,
            cp.seq,
            when(crate::clock::to_ms(cp.at)),
            cp.broker_id,
            cp.key_id
        ),
        None => format!("no signed checkpoint yet{uncovered}"),
    }
}

fn parse_time(s: Option<&str>, end: bool) -> Result<Option<i64>, UiError> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let day = time::macros::format_description!("[year]-[month]-[day]");
    let minute = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    let minute_t = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    if let Ok(date) = time::Date::parse(s, &day) {
        // A day as an end includes the whole day.
        let ms = crate::clock::to_ms(date.midnight().assume_utc());
        return Ok(Some(if end { ms + 86_400_000 } else { ms }));
    }
    time::PrimitiveDateTime::parse(s, &minute)
        .or_else(|_| time::PrimitiveDateTime::parse(s, &minute_t))
        .map(|t| Some(crate::clock::to_ms(t.assume_utc())))
        .map_err(|_| {
            UiError::new(
                StatusCode::BAD_REQUEST,
                format!("`{s}` is not a date like 2026-11-29 or a UTC time like 2026-11-29 14:30"),
            )
        })
}

/// The audit page's filters (actor, entitlement, action, days from and to), shared by its export.
fn audit_filter(q: &AuditQuery) -> Result<audit::Filter, UiError> {
    Ok(audit::Filter {
        actor: nonempty(q.actor.as_ref()),
        entitlement: nonempty(q.entitlement.as_ref()),
        action: nonempty(q.action.as_ref()),
        request_id: nonempty(q.request.as_ref())
            .map(|r| {
                uuid::Uuid::parse_str(&r).map_err(|_| {
                    UiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("`{r}` is not a request id"),
                    )
                })
            })
            .transpose()?,
        since: parse_time(q.since.as_deref(), false)?,
        until: parse_time(q.until.as_deref(), true)?,
        ..audit::Filter::default()
    })
}

async fn audit_page(
    State(web): State<Web>,
    s: SignedIn,
    Query(q): Query<AuditQuery>,
) -> Result<AuditPage, UiError> {
    let auditor = match web.app.authorize_audit(&s.user) {
        Ok(auditor) => auditor,
        Err(e) => return Err(UiError::forbidden(&web, &s, e.to_string()).await),
    };
    let filter = audit::Filter {
        before_seq: q.before,
        limit: 50,
        ..audit_filter(&q)?
    };
    let (events, damaged) = match web.app.audit_events(&auditor, &filter).await {
        Ok(events) => (events, String::new()),
        Err(e @ ServiceError::AuditDamaged(_)) => {
            tracing::error!(error = %e, "audit log damaged");
            (Vec::new(), e.to_string())
        }
        Err(e) => return Err(e.into()),
    };
    let report = web.app.audit_state().await?;
    let mut query = String::new();
    for (k, v) in [
        ("actor", &q.actor),
        ("entitlement", &q.entitlement),
        ("action", &q.action),
        ("request", &q.request),
        ("since", &q.since),
        ("until", &q.until),
    ] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            let _ = write!(query, "&{k}={}", super::super::auth::urlencode(v));
        }
    }
    Ok(AuditPage {
        chrome: Chrome::at(&web, &s, "audit").await,
        next: if events.len() == 50 {
            events.last().map(|e| e.seq.to_string()).unwrap_or_default()
        } else {
            String::new()
        },
        rows: events
            .iter()
            .map(|e| {
                let t = TimelineItem::of(e);
                AuditRow {
                    seq: e.seq,
                    at: when(e.at),
                    actor: e.actor.clone(),
                    action: e.action.clone(),
                    entitlement: e.entitlement.clone().unwrap_or_default(),
                    request_id: e.request_id.clone().unwrap_or_default(),
                    hash: e.hash.clone(),
                    hash_short: e.hash.chars().take(12).collect(),
                    pending: e.pending,
                    sentence: t.sentence,
                    detail: t.detail,
                }
            })
            .collect(),
        actor: q.actor.unwrap_or_default(),
        entitlement: q.entitlement.unwrap_or_default(),
        action: q.action.unwrap_or_default(),
        request: q.request.unwrap_or_default(),
        since: q.since.unwrap_or_default(),
        until: q.until.unwrap_or_default(),
        damaged,
        checkpoint: checkpoint_text(report.checkpoints.as_ref()),
        verified: report.ok,
        verify_text: if report.ok {
            format!("chain verified: {} events", report.checked)
        } else {
            format!(
                "chain broken{}: {}",
                report
                    .first_bad_seq
                    .map(|seq| format!(" at sequence {seq}"))
                    .unwrap_or_default(),
                report.problem.unwrap_or_default()
            )
        },
        query,
    })
}

#[derive(Deserialize)]
struct ExportQuery {
    format: String,
}

/// The events the audit page shows with its filters, oldest first, as a download: streamed a
/// page of events at a time, so the broker holds one page whatever the log's size (an error
/// part way ends the download unfinished rather than short and complete-looking).
async fn audit_export(
    State(web): State<Web>,
    s: SignedIn,
    Query(q): Query<ExportQuery>,
    Query(filters): Query<AuditQuery>,
) -> Result<Response, UiError> {
    let Ok(auditor) = web.app.authorize_audit(&s.user) else {
        return Err(UiError::new(
            StatusCode::FORBIDDEN,
            "only auditors export the audit log",
        ));
    };
    let (format, ctype) = match q.format.as_str() {
        "csv" => (ExportFormat::Csv, "text/csv; charset=utf-8"),
        "jsonl" => (ExportFormat::Jsonl, "application/x-ndjson"),
        _ => {
            return Err(UiError(
                StatusCode::BAD_REQUEST,
                "format must be `csv` or `jsonl`".to_owned(),
                None,
            ));
        }
    };
    let filter = audit_filter(&filters)?;
    let body = web.app.audit_export(&auditor, format, filter);
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"jit-audit.{format}\""),
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}
