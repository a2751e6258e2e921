//! The form that files a request.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use jit_api::{CreateRequest, DurationInput};
use serde::Deserialize;

use super::{Chrome, UiError, code_spans, refusal_status};
use crate::http::Web;
use crate::http::auth::SignedIn;
use crate::http::step_up::Draft;
use crate::service::ServiceError;

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/requests/new", get(new_request))
        .route("/requests", post(create_request))
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
    /// Scheduled access: the start as typed (`YYYY-MM-DDTHH:MM`, UTC), empty to start once
    /// approved.
    start_at: String,
}

#[derive(Deserialize, Default)]
struct NewQuery {
    #[serde(default)]
    entitlement: Option<String>,
    /// Back from a step-up sign-in: show the form as it was sent.
    #[serde(default)]
    resume: Option<String>,
}

async fn new_request_page(
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
        .map(|(e, break_glass)| EntOption {
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
            break_glass,
            selected: selected == Some(e.id.as_str()),
        })
        .collect();
    NewRequestPage {
        chrome: Chrome::at(web, s, "new").await,
        break_glass: options.iter().any(|o| o.break_glass),
        options,
        error_parts: code_spans(&error),
        error,
        error_link: String::new(),
        duration: f.map_or_else(|| "1h".to_owned(), |f| f.duration.clone()),
        justification: f.map(|f| f.justification.clone()).unwrap_or_default(),
        ticket: f.and_then(|f| f.ticket.clone()).unwrap_or_default(),
        start_at: f.map(|f| f.start_at.clone()).unwrap_or_default(),
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
            start_at: draft.start_at.clone(),
        };
        return new_request_page(
            &web,
            &s,
            Some(&draft.entitlement),
            String::new(),
            Some(&form),
        )
        .await;
    }
    new_request_page(&web, &s, q.entitlement.as_deref(), String::new(), None).await
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
    start_at: String,
}

/// Reads the form's optional start: `YYYY-MM-DDTHH:MM` (what a `datetime-local` field sends,
/// taken as UTC, as the page says), with seconds or as RFC 3339 too.
fn form_start(text: &str) -> Result<Option<time::OffsetDateTime>, ServiceError> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(at) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(Some(at));
    }
    let minutes = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let seconds = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(text, &minutes)
        .or_else(|_| time::PrimitiveDateTime::parse(text, &seconds))
        .map(|at| Some(at.assume_utc()))
        .map_err(|_| {
            ServiceError::Invalid(format!(
                "start `{text}` is not a date and time like `2026-12-24T09:00` (UTC)"
            ))
        })
}

async fn create_request(
    State(web): State<Web>,
    s: SignedIn,
    headers: HeaderMap,
    Form(f): Form<RequestForm>,
) -> Result<Response, UiError> {
    web.auth.check_form(&headers, &s.session, &f.csrf)?;
    let filed = match form_start(&f.start_at) {
        Ok(start_at) => {
            let input = CreateRequest {
                entitlement: f.entitlement.clone(),
                bundle: None,
                duration: DurationInput::Text(f.duration.clone()),
                justification: f.justification.clone(),
                ticket: f.ticket.clone().filter(|t| !t.trim().is_empty()),
                break_glass: f.break_glass.is_some(),
                start_at,
            };
            web.app.create_request(&s.user, &input).await
        }
        Err(e) => Err(e),
    };
    match filed {
        Ok(v) => Ok(Redirect::to(&format!("/requests/{}", v.row.id)).into_response()),
        Err(ServiceError::StepUpRequired(step_up)) => {
            let draft = Draft {
                entitlement: f.entitlement,
                duration: f.duration,
                justification: f.justification,
                ticket: f.ticket.unwrap_or_default(),
                break_glass: f.break_glass.is_some(),
                comment: String::new(),
                start_at: f.start_at,
            };
            Ok(
                super::super::step_up::sign_in_again(&web, &step_up, "/requests/new", draft)
                    .await?,
            )
        }
        Err(
            e @ (ServiceError::Invalid(_)
            | ServiceError::Forbidden(_)
            | ServiceError::Conflict(_)
            | ServiceError::NotFound(_)),
        ) => {
            let status = refusal_status(&e);
            let mut page =
                new_request_page(&web, &s, Some(&f.entitlement), e.to_string(), Some(&f)).await;
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
