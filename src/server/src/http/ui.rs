//! The server-rendered web UI (askama). Works without JavaScript; every
//! state-changing form carries the session's CSRF token.

use std::fmt::Write as _;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use jit_api::{CreateRequest, Decision, DurationInput, RequestState};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::SignedIn;
use super::step_up::Draft;
use super::{ApiError, Web};
use crate::domain::User;
use crate::service::ServiceError;
use crate::service::requests::RequestView;
use crate::store::audit;
use crate::store::export::{self, ExportFormat};

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/", get(home))
        .route("/requests/new", get(new_request))
        .route("/requests", post(create_request))
        .route("/requests/{id}", get(show_request))
        .route("/requests/{id}/{action}", post(request_action))
        .route("/approvals", get(approvals))
        .route("/audit", get(audit_page))
        .route("/audit/export", get(audit_export))
        .route("/admin", get(admin))
        .route("/admin/revoke-sessions", post(admin_revoke_sessions))
}

/// Facts every page needs.
pub struct Chrome {
    /// Development-mode banner.
    pub dev: bool,
    /// Signed-in user.
    pub me: Option<User>,
    /// CSRF token for forms.
    pub csrf_token: String,
    /// Show the audit link.
    pub auditor: bool,
    /// Show the admin link.
    pub admin: bool,
    /// The navigation entry of this page (`aria-current`): `home`, `new`, `approvals`, `audit`, `admin`.
    pub section: &'static str,
}

impl Chrome {
    /// For a signed-in user's page.
    pub(super) fn new(web: &Web, s: &SignedIn) -> Self {
        Self {
            dev: web.app.dev,
            me: Some(s.user.clone()),
            csrf_token: s.session.csrf_token.clone(),
            auditor: web.app.is_auditor(&s.user),
            admin: web.app.is_admin(&s.user),
            section: "",
        }
    }

    /// The same, for a page of navigation entry `section`.
    pub(super) fn at(web: &Web, s: &SignedIn, section: &'static str) -> Self {
        Self {
            section,
            ..Self::new(web, s)
        }
    }

    /// For pages shown to nobody in particular (errors before sign-in).
    pub(super) fn anonymous(dev: bool) -> Self {
        Self {
            dev,
            me: None,
            csrf_token: String::new(),
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
    expires: String,
    left_secs: i64,
    left: String,
    approvals: String,
    simulated: bool,
    break_glass: bool,
    failure: String,
    extension: bool,
    reviewed: String,
}

fn card(web: &Web, v: &RequestView) -> Card {
    let r = &v.row;
    let left = web.app.seconds_left(r);
    let approved = v
        .approvals
        .iter()
        .filter(|a| a.decision == Decision::Approve)
        .count();
    Card {
        id: r.id.to_string(),
        entitlement: r.entitlement.clone(),
        title: web
            .app
            .policy
            .catalog
            .get(&r.entitlement)
            .map_or_else(|| r.entitlement.clone(), |e| e.title.clone()),
        kind: r.kind.clone(),
        target: v.target.clone(),
        state: r.state.to_string(),
        requester: r.requester_email.clone(),
        duration: jit_api::format_duration(u64::try_from(r.duration_secs).unwrap_or(0)),
        justification: r.justification.clone(),
        ticket: r.ticket.clone().unwrap_or_default(),
        created: when(r.created_at),
        expires: r.expires_at.map(when).unwrap_or_default(),
        left_secs: left,
        left: if r.state == RequestState::Active {
            jit_api::format_duration(u64::try_from(left).unwrap_or(0))
        } else {
            String::new()
        },
        approvals: if r.approvals_required == 0 {
            "auto-approved".to_owned()
        } else {
            format!("{approved} of {}", r.approvals_required)
        },
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
    pending_approvals: usize,
}

async fn home(State(web): State<Web>, s: SignedIn) -> Result<HomePage, UiError> {
    let mine = web
        .app
        .list_visible(&s.user, vec![], true, None, 50)
        .await?;
    let (active, recent): (Vec<_>, Vec<_>) = mine
        .items
        .iter()
        .map(|v| card(&web, v))
        .partition(|c| c.state == "active");
    let pending_approvals = web.app.pending_for(&s.user).await?.len();
    Ok(HomePage {
        chrome: Chrome::at(&web, &s, "home"),
        active,
        recent,
        pending_approvals,
    })
}

#[expect(clippy::struct_excessive_bools, reason = "template view model")]
struct EntOption {
    id: String,
    title: String,
    kind: String,
    target: String,
    max: String,
    approvals: u32,
    mfa: bool,
    /// Needs an authentication context: a step-up sign-in.
    step_up: bool,
    ticket: bool,
    /// The ticket pattern (`INC-9*`), empty without one.
    ticket_pattern: String,
    /// A ticket that matches it (`INC-1234`).
    ticket_like: String,
    break_glass: bool,
    selected: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "new_request.html")]
struct NewRequestPage {
    chrome: Chrome,
    options: Vec<EntOption>,
    /// Some option allows break-glass for this user: show the checkbox.
    break_glass: bool,
    /// The checkbox was ticked in the form shown again.
    break_glass_checked: bool,
    error: String,
    /// `error` in pieces: (is it a `code` span, its text), so user input shows as code and
    /// not between literal backticks.
    error_parts: Vec<(bool, String)>,
    /// The request the refusal is about (an open one for the same entitlement), to link.
    error_link: String,
    duration: String,
    justification: String,
    ticket: String,
}

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

#[derive(Deserialize, Default)]
struct NewQuery {
    #[serde(default)]
    entitlement: Option<String>,
    /// Back from a step-up sign-in: show the form as it was sent.
    #[serde(default)]
    resume: Option<String>,
}

fn new_request_page(
    web: &Web,
    s: &SignedIn,
    selected: Option<&str>,
    error: String,
    f: Option<&RequestForm>,
) -> NewRequestPage {
    let options: Vec<EntOption> = web
        .app
        .requestable(&s.user)
        .into_iter()
        .map(|e| EntOption {
            id: e.id.clone(),
            title: e.title.clone(),
            kind: e.kind.as_str().to_owned(),
            target: web.app.providers.describe(e),
            max: jit_api::format_duration(e.max_duration),
            approvals: e.approvals_required,
            mfa: e.require_mfa,
            step_up: e.auth_context.is_some(),
            ticket: e.require_ticket,
            ticket_pattern: e.ticket_pattern.clone().unwrap_or_default(),
            ticket_like: e
                .ticket_pattern
                .as_deref()
                .map(crate::domain::ticket_example)
                .unwrap_or_default(),
            break_glass: web.app.may_break_glass(&s.user, e),
            selected: selected == Some(e.id.as_str()),
        })
        .collect();
    NewRequestPage {
        chrome: Chrome::at(web, s, "new"),
        break_glass: options.iter().any(|o| o.break_glass),
        options,
        error_parts: code_spans(&error),
        error,
        error_link: String::new(),
        duration: f.map_or_else(|| "1h".to_owned(), |f| f.duration.clone()),
        justification: f.map(|f| f.justification.clone()).unwrap_or_default(),
        ticket: f.and_then(|f| f.ticket.clone()).unwrap_or_default(),
        break_glass_checked: f.is_some_and(|f| f.break_glass.is_some()),
    }
}

async fn new_request(
    State(web): State<Web>,
    s: SignedIn,
    Query(q): Query<NewQuery>,
) -> NewRequestPage {
    if let Some(draft) = s.draft.as_ref().filter(|_| q.resume.is_some()) {
        let form = RequestForm {
            csrf: String::new(),
            entitlement: draft.entitlement.clone(),
            duration: draft.duration.clone(),
            justification: draft.justification.clone(),
            ticket: Some(draft.ticket.clone()),
            break_glass: draft.break_glass.then(|| "1".to_owned()),
        };
        return new_request_page(
            &web,
            &s,
            Some(&draft.entitlement),
            String::new(),
            Some(&form),
        );
    }
    new_request_page(&web, &s, q.entitlement.as_deref(), String::new(), None)
}

/// Every field defaults, so that a forged post missing some is refused by the
/// CSRF check (403) before anything else looks at it.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RequestForm {
    csrf: String,
    entitlement: String,
    duration: String,
    justification: String,
    ticket: Option<String>,
    break_glass: Option<String>,
}

async fn create_request(
    State(web): State<Web>,
    s: SignedIn,
    headers: HeaderMap,
    Form(f): Form<RequestForm>,
) -> Result<Response, UiError> {
    web.auth.check_form(&headers, &s.session, &f.csrf)?;
    let input = CreateRequest {
        entitlement: f.entitlement.clone(),
        duration: DurationInput::Text(f.duration.clone()),
        justification: f.justification.clone(),
        ticket: f.ticket.clone().filter(|t| !t.trim().is_empty()),
        break_glass: f.break_glass.is_some(),
    };
    match web.app.create_request(&s.user, &input).await {
        Ok(v) => Ok(Redirect::to(&format!("/requests/{}", v.row.id)).into_response()),
        Err(ServiceError::StepUpRequired(step_up)) => {
            let draft = Draft {
                entitlement: f.entitlement,
                duration: f.duration,
                justification: f.justification,
                ticket: f.ticket.unwrap_or_default(),
                break_glass: f.break_glass.is_some(),
                comment: String::new(),
            };
            Ok(super::step_up::sign_in_again(&web, &step_up, "/requests/new", draft).await?)
        }
        Err(
            e @ (ServiceError::Invalid(_)
            | ServiceError::Forbidden(_)
            | ServiceError::Conflict(_)
            | ServiceError::NotFound(_)),
        ) => {
            let status = refusal_status(&e);
            let mut page =
                new_request_page(&web, &s, Some(&f.entitlement), e.to_string(), Some(&f));
            if matches!(e, ServiceError::Conflict(_))
                && let Ok(Some(open)) = web.app.open_request(&s.user, &f.entitlement).await
            {
                page.error_link = format!("/requests/{}", open.id);
            }
            Ok((status, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
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

struct TimelineItem {
    at: String,
    actor: String,
    action: String,
    detail: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "request.html")]
#[expect(clippy::struct_excessive_bools, reason = "template view model")]
struct RequestPage {
    chrome: Chrome,
    r: Card,
    approvals: Vec<(String, String, String, String)>,
    timeline: Vec<TimelineItem>,
    /// Why the timeline cannot be shown: the audit log is damaged (empty when it can).
    damaged: String,
    can_decide: bool,
    can_review: bool,
    owner: bool,
    can_revoke: bool,
    creds: Option<jit_api::Credentials>,
    region: String,
    notice: String,
    /// The decision comment and extension a step-up interrupted (empty otherwise).
    comment: String,
    extend_by: String,
}

async fn request_page(
    web: &Web,
    s: &SignedIn,
    id: Uuid,
    creds: Option<jit_api::Credentials>,
    notice: String,
) -> Result<RequestPage, UiError> {
    let v = web.app.get_visible(&s.user, id).await?;
    // A damaged audit log does not hide the request: the page says what is wrong instead.
    let (events, damaged) = match audit::for_request(&web.app.store, id).await {
        Ok(events) => (events, String::new()),
        Err(e @ crate::store::StoreError::AuditDamaged(_)) => {
            tracing::error!(error = %e, request.id = %id, "audit log damaged");
            (Vec::new(), e.to_string())
        }
        Err(e) => return Err(ServiceError::from(e).into()),
    };
    let owner = v.row.requester_key == s.user.key;
    let decided = v.approvals.iter().any(|a| a.approver_key == s.user.key);
    let may_decide = web.app.may_decide(&s.user, &v.row);
    Ok(RequestPage {
        chrome: Chrome::new(web, s),
        approvals: v
            .approvals
            .iter()
            .map(|a| {
                (
                    a.approver_email.clone(),
                    match a.decision {
                        Decision::Approve => "approved".to_owned(),
                        Decision::Deny => "denied".to_owned(),
                    },
                    a.comment.clone().unwrap_or_default(),
                    when(a.at),
                )
            })
            .collect(),
        damaged,
        timeline: events
            .iter()
            .map(|e| TimelineItem {
                at: when(e.at),
                actor: e.actor.clone(),
                action: e.action.clone(),
                detail: timeline_detail(&e.data),
            })
            .collect(),
        can_decide: may_decide && !decided && v.row.state == RequestState::Pending,
        can_review: may_decide && v.row.break_glass && v.row.reviewed_at.is_none(),
        owner,
        can_revoke: (owner || web.app.is_admin(&s.user))
            && matches!(v.row.state, RequestState::Active | RequestState::Approved),
        r: card(web, &v),
        creds,
        region: web
            .app
            .config
            .aws
            .as_ref()
            .map_or_else(|| "us-east-1".to_owned(), |a| a.region.clone()),
        notice,
        comment: String::new(),
        extend_by: "30m".to_owned(),
    })
}

fn timeline_detail(data: &str) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(data) else {
        return String::new();
    };
    map.iter()
        .filter(|(k, v)| {
            !v.is_null() && !matches!(k.as_str(), "policy_hash" | "details" | "justification")
        })
        .map(|(k, v)| format!("{}: {}", k.replace('_', " "), detail_value(v)))
        .collect::<Vec<_>>()
        .join(" · ")
}

fn detail_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(detail_value)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

async fn show_request(
    State(web): State<Web>,
    s: SignedIn,
    Path(id): Path<String>,
    Query(q): Query<NewQuery>,
) -> Result<RequestPage, UiError> {
    let id = Uuid::parse_str(&id)
        .map_err(|_| UiError(StatusCode::NOT_FOUND, "no such request".to_owned(), None))?;
    let mut page = request_page(&web, &s, id, None, String::new()).await?;
    // Back from a step-up sign-in: the comment (and extension) as they were sent.
    if let Some(draft) = s.draft.as_ref().filter(|_| q.resume.is_some()) {
        page.comment.clone_from(&draft.comment);
        if !draft.duration.is_empty() {
            page.extend_by.clone_from(&draft.duration);
        }
    }
    Ok(page)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ActionForm {
    csrf: String,
    comment: Option<String>,
    by: Option<String>,
}

async fn request_action(
    State(web): State<Web>,
    s: SignedIn,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<ActionForm>,
) -> Result<Response, UiError> {
    web.auth.check_form(&headers, &s.session, &f.csrf)?;
    let id = Uuid::parse_str(&id)
        .map_err(|_| UiError(StatusCode::NOT_FOUND, "no such request".to_owned(), None))?;
    let comment = f.comment.as_deref().filter(|c| !c.trim().is_empty());
    let back = Redirect::to(&format!("/requests/{id}")).into_response();
    let result = match action.as_str() {
        "approve" => web
            .app
            .decide(&s.user, id, Decision::Approve, comment)
            .await
            .map(|_| back),
        "deny" => web
            .app
            .decide(&s.user, id, Decision::Deny, comment)
            .await
            .map(|_| back),
        "cancel" => web.app.cancel(&s.user, id).await.map(|_| back),
        "revoke" => web.app.revoke(&s.user, id, comment).await.map(|_| back),
        "review" => web.app.review(&s.user, id, comment).await.map(|_| back),
        "extend" => {
            let by = jit_api::parse_duration(f.by.as_deref().unwrap_or(""))
                .map_err(|e| ServiceError::Invalid(e.to_string()))?;
            web.app
                .extend(&s.user, id, by, comment)
                .await
                .map(|v| Redirect::to(&format!("/requests/{}", v.row.id)).into_response())
        }
        "credentials" => {
            let creds = web.app.mint_credentials(&s.user, id).await?;
            let page = request_page(&web, &s, id, Some(creds), String::new()).await?;
            Ok(([(header::CACHE_CONTROL, "no-store")], page).into_response())
        }
        "console" => {
            let url = web.app.console_url(&s.user, id).await?;
            Ok(super::handoff::leaving(
                Chrome::new(&web, &s),
                "Opening the AWS console",
                "You are being signed in to the AWS console as the role of this grant. The sign-in link works once, within 15 minutes.",
                "Continue to the AWS console",
                &url,
            ))
        }
        _ => {
            return Err(UiError(
                StatusCode::NOT_FOUND,
                "no such action".to_owned(),
                None,
            ));
        }
    };
    match result {
        Ok(r) => Ok(r),
        Err(ServiceError::StepUpRequired(step_up)) => {
            let draft = Draft {
                comment: f.comment.clone().unwrap_or_default(),
                duration: f.by.clone().unwrap_or_default(),
                ..Draft::default()
            };
            Ok(
                super::step_up::sign_in_again(&web, &step_up, &format!("/requests/{id}"), draft)
                    .await?,
            )
        }
        Err(
            e @ (ServiceError::Invalid(_) | ServiceError::Forbidden(_) | ServiceError::Conflict(_)),
        ) => {
            let status = refusal_status(&e);
            let page = request_page(&web, &s, id, None, e.to_string()).await?;
            Ok((status, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "approvals.html")]
struct ApprovalsPage {
    chrome: Chrome,
    pending: Vec<Card>,
    reviews: Vec<Card>,
    decided: Vec<Card>,
}

async fn approvals(State(web): State<Web>, s: SignedIn) -> Result<ApprovalsPage, UiError> {
    let pending = web.app.pending_for(&s.user).await?;
    let reviews = web.app.reviews_for(&s.user).await?;
    let decided = web.app.decided_by(&s.user).await?;
    Ok(ApprovalsPage {
        chrome: Chrome::at(&web, &s, "approvals"),
        pending: pending.iter().map(|v| card(&web, v)).collect(),
        reviews: reviews.iter().map(|v| card(&web, v)).collect(),
        decided: decided.iter().map(|v| card(&web, v)).collect(),
    })
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
}

#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    rows: Vec<AuditRow>,
    actor: String,
    entitlement: String,
    action: String,
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

fn parse_day(s: Option<&str>) -> Result<Option<i64>, UiError> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(s, &fmt).map_err(|_| {
        UiError(
            StatusCode::BAD_REQUEST,
            format!("`{s}` is not a date like 2026-11-29"),
            None,
        )
    })?;
    Ok(Some(crate::clock::to_ms(date.midnight().assume_utc())))
}

fn nonempty(s: Option<&String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// The audit page's filters (actor, entitlement, action, days from and to), shared by its export.
fn audit_filter(q: &AuditQuery) -> Result<audit::Filter, UiError> {
    Ok(audit::Filter {
        actor: nonempty(q.actor.as_ref()),
        entitlement: nonempty(q.entitlement.as_ref()),
        action: nonempty(q.action.as_ref()),
        since: parse_day(q.since.as_deref())?,
        until: parse_day(q.until.as_deref())?.map(|u| u + 86_400_000),
        ..audit::Filter::default()
    })
}

async fn audit_page(
    State(web): State<Web>,
    s: SignedIn,
    Query(q): Query<AuditQuery>,
) -> Result<AuditPage, UiError> {
    let auditor = web.app.authorize_audit(&s.user).map_err(|e| {
        UiError(
            StatusCode::FORBIDDEN,
            e.to_string(),
            Some(Box::new(Chrome::new(&web, &s))),
        )
    })?;
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
        ("since", &q.since),
        ("until", &q.until),
    ] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            let _ = write!(query, "&{k}={}", super::auth::urlencode(v));
        }
    }
    Ok(AuditPage {
        chrome: Chrome::at(&web, &s, "audit"),
        next: if events.len() == 50 {
            events.last().map(|e| e.seq.to_string()).unwrap_or_default()
        } else {
            String::new()
        },
        rows: events
            .iter()
            .map(|e| AuditRow {
                seq: e.seq,
                at: when(e.at),
                actor: e.actor.clone(),
                action: e.action.clone(),
                entitlement: e.entitlement.clone().unwrap_or_default(),
                request_id: e.request_id.clone().unwrap_or_default(),
                hash: e.hash.chars().take(12).collect(),
            })
            .collect(),
        actor: q.actor.unwrap_or_default(),
        entitlement: q.entitlement.unwrap_or_default(),
        action: q.action.unwrap_or_default(),
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
    if !web.app.is_auditor(&s.user) {
        return Err(UiError(
            StatusCode::FORBIDDEN,
            "only auditors export the audit log".to_owned(),
            None,
        ));
    }
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
    let body = export::stream(web.app.store.clone(), format, filter);
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

#[derive(Template, WebTemplate)]
#[template(path = "admin.html")]
struct AdminPage {
    chrome: Chrome,
    active: Vec<Card>,
    roles: Vec<(String, String)>,
    notice: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RevokeSessionsForm {
    csrf: String,
    entitlement: String,
}

async fn admin_revoke_sessions(
    State(web): State<Web>,
    s: SignedIn,
    headers: HeaderMap,
    Form(f): Form<RevokeSessionsForm>,
) -> Result<Response, UiError> {
    web.auth.check_form(&headers, &s.session, &f.csrf)?;
    let admin = web.app.authorize_admin(&s.user).map_err(|_| {
        UiError(
            StatusCode::FORBIDDEN,
            "only admins revoke all sessions".to_owned(),
            Some(Box::new(Chrome::new(&web, &s))),
        )
    })?;
    let notice = match web
        .app
        .revoke_all_sessions(&s.user, &admin, &f.entitlement)
        .await
    {
        Ok((arn, before)) => format!("every session of {arn} issued before {before} is now denied"),
        Err(
            e @ (ServiceError::Invalid(_) | ServiceError::Upstream(_) | ServiceError::NotFound(_)),
        ) => e.to_string(),
        Err(e) => return Err(e.into()),
    };
    Ok(admin_page(&web, &s, notice).await?.into_response())
}

async fn admin(State(web): State<Web>, s: SignedIn) -> Result<AdminPage, UiError> {
    admin_page(&web, &s, String::new()).await
}

async fn admin_page(web: &Web, s: &SignedIn, notice: String) -> Result<AdminPage, UiError> {
    web.app.authorize_admin(&s.user).map_err(|e| {
        UiError(
            StatusCode::FORBIDDEN,
            e.to_string(),
            Some(Box::new(Chrome::new(web, s))),
        )
    })?;
    let active = web
        .app
        .list_visible(
            &s.user,
            vec![RequestState::Active, RequestState::Approved],
            false,
            None,
            500,
        )
        .await?;
    Ok(AdminPage {
        chrome: Chrome::at(web, s, "admin"),
        active: active.items.iter().map(|v| card(web, v)).collect(),
        roles: web
            .app
            .policy
            .catalog
            .iter()
            .filter(|e| e.kind == crate::policy::Kind::AwsRole)
            .map(|e| (e.id.clone(), e.title.clone()))
            .collect(),
        notice,
    })
}
