//! The admin page: live grants, and revoking every session of an AWS role.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use jit_api::RequestState;
use serde::Deserialize;

use super::{Card, Chrome, UiError, card};
use crate::http::Web;
use crate::http::auth::SignedIn;
use crate::service::ServiceError;

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/admin", get(admin))
        .route("/admin/revoke-sessions", post(admin_revoke_sessions))
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
