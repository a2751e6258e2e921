//! The admin page: live grants, and revoking every session of an AWS role.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use jit_api::RequestState;
use serde::Deserialize;

use super::pager::{PageQuery, Pager};
use super::{Card, Chrome, UiError, card};
use crate::http::Web;
use crate::http::auth::SignedIn;
use crate::service::ServiceError;

/// Live grants a page holds.
const PAGE: i64 = 100;

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
    pager: Pager,
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
    let Ok(admin) = web.app.authorize_admin(&s.user) else {
        return Err(UiError::forbidden(&web, &s, "only admins revoke all sessions").await);
    };
    let notice = match web
        .app
        .revoke_all_sessions(&s.user, &admin, &f.entitlement)
        .await
    {
        Ok((arn, before)) => format!("every session of {arn} issued before {before} is now denied"),
        Err(
            e @ (ServiceError::Invalid(_)
            | ServiceError::Upstream { .. }
            | ServiceError::NotFound(_)),
        ) => e.to_string(),
        Err(e) => return Err(e.into()),
    };
    let q = PageQuery::new("/admin", Vec::new());
    Ok(admin_page(&web, &s, &q, notice).await?.into_response())
}

async fn admin(
    State(web): State<Web>,
    s: SignedIn,
    RawQuery(query): RawQuery,
) -> Result<AdminPage, UiError> {
    admin_page(
        &web,
        &s,
        &PageQuery::raw("/admin", query.as_deref()),
        String::new(),
    )
    .await
}

async fn admin_page(
    web: &Web,
    s: &SignedIn,
    q: &PageQuery,
    notice: String,
) -> Result<AdminPage, UiError> {
    if let Err(e) = web.app.authorize_admin(&s.user) {
        return Err(UiError::forbidden(web, s, e.to_string()).await);
    }
    let active = web
        .app
        .list_visible(
            &s.user,
            vec![RequestState::Active, RequestState::Approved],
            false,
            q.at("grants")?,
            PAGE,
        )
        .await?;
    Ok(AdminPage {
        chrome: Chrome::at(web, s, "admin").await,
        pager: q.pager("grants", &active),
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
