//! The server-rendered web UI (askama). Works without JavaScript; every
//! state-changing form carries the session's CSRF token.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jit_api::{Decision, RequestState};

mod admin;
mod approvals;
mod audit;
mod new_request;
mod pager;
mod request;
mod timeline;

use super::auth::SignedIn;
use super::{ApiError, Web};
use crate::domain::User;
use crate::service::ServiceError;
use crate::service::requests::RequestView;

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/", get(home))
        .merge(new_request::routes())
        .merge(request::routes())
        .merge(approvals::routes())
        .merge(audit::routes())
        .merge(admin::routes())
}

/// Facts every page needs.
#[expect(clippy::struct_excessive_bools, reason = "template view model")]
pub struct Chrome {
    /// Development-mode banner.
    pub dev: bool,
    /// Signed-in user.
    pub me: Option<User>,
    /// CSRF token for forms.
    pub csrf_token: String,
    /// Show the approvals link: the policies might let this user approve something.
    pub approver: bool,
    /// Requests waiting for this user's decision (the badge beside *Approvals*).
    pub waiting: u64,
    /// Show the audit link.
    pub auditor: bool,
    /// Show the admin link.
    pub admin: bool,
    /// The navigation entry of this page (`aria-current`): `home`, `new`, `approvals`, `audit`, `admin`.
    pub section: &'static str,
}

impl Chrome {
    /// For a signed-in user's page: the menu holds only what they may do.
    pub(super) async fn new(web: &Web, s: &SignedIn) -> Self {
        let approver = web.app.may_approve_any(&s.user);
        let waiting = if approver {
            // The badge is a hint: a failing count leaves it out rather than failing the page.
            match web.app.waiting_count(&s.user).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot count the requests waiting for a decision");
                    0
                }
            }
        } else {
            0
        };
        Self {
            dev: web.app.dev,
            me: Some(s.user.clone()),
            csrf_token: s.session.csrf_token.clone(),
            approver,
            waiting,
            auditor: web.app.authorize_audit(&s.user).is_ok(),
            admin: web.app.authorize_admin(&s.user).is_ok(),
            section: "",
        }
    }

    /// The same, for a page of navigation entry `section`.
    pub(super) async fn at(web: &Web, s: &SignedIn, section: &'static str) -> Self {
        Self {
            section,
            ..Self::new(web, s).await
        }
    }

    /// For pages shown to nobody in particular (errors before sign-in).
    pub(super) fn anonymous(dev: bool) -> Self {
        Self {
            dev,
            me: None,
            csrf_token: String::new(),
            approver: false,
            waiting: 0,
            auditor: false,
            admin: false,
            section: "",
        }
    }
}

/// A time as pages show it: `2026-11-29 09:52:15 UTC`.
pub(super) fn when(ms: i64) -> String {
    let fmt =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    crate::clock::from_ms(ms).format(&fmt).unwrap_or_default()
}

/// A time as the page's script reads it, to show the reader's local time beside UTC.
pub(super) fn iso(ms: i64) -> String {
    crate::service::requests::fmt_ms(ms)
}

/// Time left in minutes, as people say it: `1 h 5 min`, `59 min`, `less than a minute`.
pub(super) fn minutes_left(secs: i64) -> String {
    if secs < 60 {
        return "less than a minute".to_owned();
    }
    let (h, m) = (secs / 3600, secs % 3600 / 60);
    match (h, m) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// How long ago, in words: `just now`, `5 min ago`, `2 h ago`, `3 days ago`.
pub(super) fn ago(secs: i64) -> String {
    match secs {
        ..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ if secs < 2 * 86_400 => "1 day ago".to_owned(),
        _ => format!("{} days ago", secs / 86_400),
    }
}

/// A request as pages show it.
pub struct Card {
    id: String,
    entitlement: String,
    title: String,
    kind: String,
    target: String,
    state: String,
    requester: String,
    duration: String,
    justification: String,
    ticket: String,
    created: String,
    /// How long ago it was filed (`5 min ago`).
    age: String,
    expires: String,
    /// A scheduled request's start (`when`), empty otherwise.
    starts: String,
    /// `expires` for the script (RFC 3339), empty without an end.
    expires_iso: String,
    left_secs: i64,
    /// Time left in minutes (`59 min`), empty unless active.
    left: String,
    /// While pending: when nobody deciding makes it time out, and how soon (`in 55 min`).
    times_out: String,
    times_out_in: String,
    approvals: String,
    /// Who approved, `, `-separated.
    approvers: String,
    /// Who the entitlement sends requests to for approval (its `notify.email` route), besides
    /// those who already decided; the approvals page leaves out the reader too.
    others: Vec<String>,
    simulated: bool,
    break_glass: bool,
    failure: String,
    extension: bool,
    reviewed: String,
}

fn card(web: &Web, v: &RequestView) -> Card {
    let r = &v.row;
    let now = web.app.now_ms();
    let left = web.app.seconds_left(r);
    let approvers: Vec<&str> = v
        .approvals
        .iter()
        .filter(|a| a.decision == Decision::Approve)
        .map(|a| a.approver_email.as_str())
        .collect();
    let ent = web.app.policy.catalog.get(&r.entitlement);
    let pending = r.state == RequestState::Pending;
    // Scheduled: it will end `duration` after its start.
    let ends = r.expires_at.or_else(|| {
        (r.state == RequestState::Scheduled)
            .then(|| r.start_at.map(|s| s.plus_secs(r.duration_secs)))
            .flatten()
    });
    Card {
        id: r.id.to_string(),
        entitlement: r.entitlement.clone(),
        title: ent.map_or_else(|| r.entitlement.clone(), |e| e.title.clone()),
        kind: r.kind.clone(),
        target: v.target.clone(),
        state: r.state.to_string(),
        requester: r.requester_email.clone(),
        duration: jit_api::format_duration(u64::try_from(r.duration_secs).unwrap_or(0)),
        justification: r.justification.clone(),
        ticket: r.ticket.clone().unwrap_or_default(),
        created: when(r.created_at.millis()),
        age: ago((now - r.created_at.millis()) / 1000),
        expires: ends.map(|t| when(t.millis())).unwrap_or_default(),
        expires_iso: ends.map(|t| iso(t.millis())).unwrap_or_default(),
        starts: r.start_at.map(|t| when(t.millis())).unwrap_or_default(),
        left_secs: left,
        left: if r.state == RequestState::Active {
            minutes_left(left)
        } else {
            String::new()
        },
        times_out: r
            .pending_until
            .filter(|_| pending)
            .map(|t| when(t.millis()))
            .unwrap_or_default(),
        times_out_in: r
            .pending_until
            .filter(|_| pending)
            .map(|u| format!("in {}", minutes_left((u.millis() - now) / 1000)))
            .unwrap_or_default(),
        approvals: jit_api::approvals_words(
            u32::try_from(r.approvals_required).unwrap_or(0),
            r.break_glass,
            approvers.len(),
        ),
        approvers: approvers.join(", "),
        others: ent
            .map(|e| {
                e.notify
                    .email
                    .iter()
                    .filter(|m| !v.approvals.iter().any(|a| &a.approver_email == *m))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
        simulated: r.simulated,
        break_glass: r.break_glass,
        failure: r.failure_reason.clone().unwrap_or_default(),
        extension: r.extends_id.is_some(),
        reviewed: r.reviewed_by.clone().unwrap_or_default(),
    }
}

/// An error page that leaks nothing internal.
#[derive(Template, WebTemplate)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    title: String,
    message: String,
}

/// A page-level error.
pub struct UiError(StatusCode, String, Option<Box<Chrome>>);

impl UiError {
    /// An error page with `status` and `message`.
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into(), None)
    }
}

impl UiError {
    /// A 403 page with the signed-in user's menu, saying why.
    pub(super) async fn forbidden(web: &Web, s: &SignedIn, message: impl Into<String>) -> Self {
        Self(
            StatusCode::FORBIDDEN,
            message.into(),
            Some(Box::new(Chrome::new(web, s).await)),
        )
    }
}

impl From<ServiceError> for UiError {
    fn from(e: ServiceError) -> Self {
        let e = ApiError::from(e);
        Self(e.status, e.message, None)
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        Self(e.status, e.message, None)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let title = self.0.canonical_reason().unwrap_or("Error").to_owned();
        let page = ErrorPage {
            chrome: self.2.map_or_else(|| Chrome::anonymous(false), |c| *c),
            title,
            message: self.1,
        };
        (self.0, page).into_response()
    }
}

pub(super) async fn not_found(State(web): State<Web>) -> Response {
    UiError(
        StatusCode::NOT_FOUND,
        "there is no page here".to_owned(),
        Some(Box::new(Chrome::anonymous(web.app.dev))),
    )
    .into_response()
}

#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
struct HomePage {
    chrome: Chrome,
    active: Vec<Card>,
    recent: Vec<Card>,
    recent_pager: pager::Pager,
    pending_approvals: u64,
}

async fn home(
    State(web): State<Web>,
    s: SignedIn,
    RawQuery(query): RawQuery,
) -> Result<HomePage, UiError> {
    let q = pager::PageQuery::raw("/", query.as_deref());
    let active = web.app.all_mine(&s.user, &[RequestState::Active]).await?;
    let others: Vec<RequestState> = RequestState::ALL
        .into_iter()
        .filter(|s| *s != RequestState::Active)
        .collect();
    let recent = web
        .app
        .list_visible(&s.user, others, true, q.at("recent")?, RECENT)
        .await?;
    let chrome = Chrome::at(&web, &s, "home").await;
    Ok(HomePage {
        pending_approvals: chrome.waiting,
        chrome,
        active: active.iter().map(|v| card(&web, v)).collect(),
        recent_pager: q.pager("recent", &recent),
        recent: recent.items.iter().map(|v| card(&web, v)).collect(),
    })
}

/// Past and pending requests the home page shows at a time.
const RECENT: i64 = 50;

/// A message split at its backticks: the odd pieces are code (`` `aws-sandbox` ``).
fn code_spans(message: &str) -> Vec<(bool, String)> {
    if message.matches('`').count() % 2 == 1 {
        return vec![(false, message.to_owned())];
    }
    message
        .split('`')
        .enumerate()
        .filter(|(_, text)| !text.is_empty())
        .map(|(i, text)| (i % 2 == 1, text.to_owned()))
        .collect()
}

/// The status of a page shown again with the reason an action was refused.
fn refusal_status(e: &ServiceError) -> StatusCode {
    match e {
        ServiceError::Forbidden(_) => StatusCode::FORBIDDEN,
        ServiceError::Conflict(_) => StatusCode::CONFLICT,
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

fn nonempty(s: Option<&String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}
