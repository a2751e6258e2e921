//! A request's page: its facts, decisions, actions and timeline.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use jit_api::{Decision, RequestState};
use serde::Deserialize;
use uuid::Uuid;

use super::timeline::TimelineItem;
use super::{Card, Chrome, UiError, card, refusal_status, when};
use crate::http::Web;
use crate::http::auth::SignedIn;
use crate::http::step_up::Draft;
use crate::service::ServiceError;
use crate::store::audit;

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/requests/{id}", get(show_request))
        .route("/requests/{id}/{action}", post(request_action))
}

#[derive(Deserialize, Default)]
struct ShowQuery {
    /// Back from a step-up sign-in: show the comment as it was sent.
    #[serde(default)]
    resume: Option<String>,
    /// The action just done here, to confirm it (`approve`).
    #[serde(default)]
    done: Option<String>,
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
    /// The requester, until it is granted; an admin too, while it is scheduled.
    can_cancel: bool,
    /// It issues AWS credentials and console sign-ins (an AWS role, or a bundle with one).
    mints: bool,
    creds: Option<jit_api::Credentials>,
    region: String,
    notice: String,
    /// When the credentials shown end, as pages show times.
    creds_until: String,
    /// When the page was made (`2026-11-29 09:52:15 UTC`), for the no-script refresh line.
    as_of: String,
    /// What the reader's last action did (`You approved this request.`), empty otherwise.
    done: String,
    /// The states the page's script waits for (every state but this one, comma-separated),
    /// empty once the request changes no more.
    wait: String,
    /// The decision comment and extension a step-up interrupted (empty otherwise).
    comment: String,
    extend_by: String,
}

/// The confirmation after an action that leaves the reader on the same page.
fn done_text(action: &str) -> &'static str {
    match action {
        "approve" => "You approved this request.",
        "deny" => "You denied this request.",
        "cancel" => "You cancelled this request.",
        "revoke" => "The access is revoked.",
        "review" => "You marked this break-glass use as reviewed.",
        _ => "",
    }
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
        chrome: Chrome::new(web, s).await,
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
        timeline: events.iter().map(TimelineItem::of).collect(),
        can_decide: may_decide && !decided && v.row.state == RequestState::Pending,
        can_review: may_decide && v.row.break_glass && v.row.reviewed_at.is_none(),
        owner,
        mints: web.app.issues_sessions(&v.row.entitlement),
        can_cancel: match v.row.state {
            RequestState::Pending | RequestState::Approved | RequestState::Scheduled => {
                web.app.may_cancel(&s.user, &v.row)
            }
            _ => false,
        },
        can_revoke: web.app.may_revoke(&s.user, &v.row)
            && matches!(v.row.state, RequestState::Active | RequestState::Approved),
        r: card(web, &v),
        creds_until: creds
            .as_ref()
            .and_then(|c| {
                time::OffsetDateTime::parse(
                    &c.expiration,
                    &time::format_description::well_known::Rfc3339,
                )
                .ok()
            })
            .map(|t| when(crate::clock::to_ms(t)))
            .unwrap_or_default(),
        as_of: when(web.app.now_ms()),
        creds,
        region: web
            .app
            .config
            .aws
            .as_ref()
            .map_or_else(|| "us-east-1".to_owned(), |a| a.region.clone()),
        notice,
        done: String::new(),
        wait: if v.row.state.is_terminal() {
            String::new()
        } else {
            RequestState::ALL
                .iter()
                .filter(|s| **s != v.row.state)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        },
        comment: String::new(),
        extend_by: "30m".to_owned(),
    })
}

async fn show_request(
    State(web): State<Web>,
    s: SignedIn,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<RequestPage, UiError> {
    let id = Uuid::parse_str(&id)
        .map_err(|_| UiError(StatusCode::NOT_FOUND, "no such request".to_owned(), None))?;
    let mut page = request_page(&web, &s, id, None, String::new()).await?;
    done_text(q.done.as_deref().unwrap_or_default()).clone_into(&mut page.done);
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
    let back = Redirect::to(&format!("/requests/{id}?done={action}")).into_response();
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
            Ok(super::super::handoff::leaving(
                Chrome::new(&web, &s).await,
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
            Ok(super::super::step_up::sign_in_again(
                &web,
                &step_up,
                &format!("/requests/{id}"),
                draft,
            )
            .await?)
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
