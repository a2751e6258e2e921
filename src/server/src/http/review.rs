//! The access review page for auditors (`/reports/access`): the report of
//! `jit-server report access` for a period, filtered by entitlement and requester, with
//! its CSV and JSONL downloads.

use std::fmt::Write as _;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::Web;
use super::auth::SignedIn;
use super::ui::{Chrome, UiError};
use crate::store::report::{self, Row};

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/reports/access", get(page))
        .route("/reports/access/export", get(export))
}

/// The filters, as the form sends them.
#[derive(Deserialize, Default)]
struct Filters {
    /// First day (`2026-11-01`); default 30 days ago.
    from: Option<String>,
    /// Last day, included; default today.
    to: Option<String>,
    entitlement: Option<String>,
    requester: Option<String>,
    /// `csv` or `jsonl` (downloads).
    format: Option<String>,
}

const DAY_MS: i64 = 86_400_000;

/// The rows for the filters, and the period as days (shown back in the form).
async fn rows(web: &Web, s: &SignedIn, f: &Filters) -> Result<(Vec<Row>, String, String), UiError> {
    let auditor = web.app.authorize_audit(&s.user).map_err(|_| {
        UiError::new(
            StatusCode::FORBIDDEN,
            "only auditors read the access review",
        )
    })?;
    let today = web.app.now_ms() / DAY_MS * DAY_MS;
    let day = |text: Option<&String>, default: i64| -> Result<i64, UiError> {
        match text.map(|t| t.trim()).filter(|t| !t.is_empty()) {
            Some(t) => report::parse_time(t).map_err(|e| UiError::new(StatusCode::BAD_REQUEST, e)),
            None => Ok(default),
        }
    };
    let from = day(f.from.as_ref(), today - 30 * DAY_MS)?;
    let to = day(f.to.as_ref(), today)? + DAY_MS;
    if to <= from {
        return Err(UiError::new(
            StatusCode::BAD_REQUEST,
            "the period ends before it starts",
        ));
    }
    let wanted = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (ent, who) = (wanted(&f.entitlement), wanted(&f.requester));
    let rows = web
        .app
        .access_review(&auditor, from, to)
        .await?
        .into_iter()
        .filter(|r| {
            r.section == "reconcile_finding"
                || (ent.as_ref().is_none_or(|e| *e == r.entitlement)
                    && who.as_ref().is_none_or(|w| *w == r.requester))
        })
        .collect();
    let show = |ms: i64| crate::clock::from_ms(ms).date().to_string();
    Ok((rows, show(from), show(to - DAY_MS)))
}

#[derive(Template, WebTemplate)]
#[template(path = "review.html")]
struct ReviewPage {
    chrome: Chrome,
    grants: Vec<Row>,
    unreviewed: Vec<Row>,
    findings: Vec<Row>,
    from: String,
    to: String,
    entitlement: String,
    requester: String,
    /// The filters as a query string, for the downloads.
    query: String,
}

async fn page(
    State(web): State<Web>,
    s: SignedIn,
    Query(f): Query<Filters>,
) -> Result<ReviewPage, UiError> {
    let (rows, from, to) = rows(&web, &s, &f).await?;
    let entitlement = f.entitlement.unwrap_or_default();
    let requester = f.requester.unwrap_or_default();
    let mut query = format!("from={from}&to={to}");
    for (k, v) in [("entitlement", &entitlement), ("requester", &requester)] {
        if !v.is_empty() {
            let _ = write!(query, "&{k}={}", super::auth::urlencode(v));
        }
    }
    let of = |section: &str| {
        rows.iter()
            .filter(|r| r.section == section)
            .cloned()
            .collect()
    };
    Ok(ReviewPage {
        chrome: Chrome::at(&web, &s, "audit").await,
        grants: of("grant"),
        unreviewed: of("unreviewed_break_glass"),
        findings: of("reconcile_finding"),
        from,
        to,
        entitlement,
        requester,
        query,
    })
}

async fn export(
    State(web): State<Web>,
    s: SignedIn,
    Query(f): Query<Filters>,
) -> Result<Response, UiError> {
    let (rows, _, _) = rows(&web, &s, &f).await?;
    let (format, ctype) = match f.format.as_deref() {
        Some("csv") => (report::Format::Csv, "text/csv; charset=utf-8"),
        Some("jsonl") => (report::Format::Jsonl, "application/x-ndjson"),
        _ => {
            return Err(UiError::new(
                StatusCode::BAD_REQUEST,
                "format must be `csv` or `jsonl`",
            ));
        }
    };
    let mut body = Vec::new();
    report::write(&rows, format, &mut body)
        .map_err(|e| UiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let ext = if format == report::Format::Csv {
        "csv"
    } else {
        "jsonl"
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"jit-access-review.{ext}\""),
            ),
        ],
        body,
    )
        .into_response())
}
