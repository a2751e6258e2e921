//! The JSON API under `/api/v1` (SPEC §6).

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jit_api::{CreateRequest, Decision, DecisionBody, ExtendBody, RequestState};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::{AuthMode, Bearer};
use super::{ApiError, Web};
use crate::store::audit;

/// JSON body extractor whose rejections use the API error shape.
pub struct Body<T>(pub T);

impl<T, S> FromRequest<S> for Body<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(e) => Err(ApiError::bad_request(format!(
                "invalid JSON body: {}",
                e.body_text()
            ))),
        }
    }
}

/// An optional JSON body: empty means `T::default()`.
pub struct OptBody<T>(pub T);

impl<T, S> FromRequest<S> for OptBody<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::bad_request("could not read the request body"))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Path id extractor whose rejections use the API error shape.
pub struct Id(pub Uuid);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_request("missing request id"))?;
        Uuid::parse_str(&raw)
            .map(Id)
            .map_err(|_| ApiError::not_found(format!("no request `{}`", raw.escape_default())))
    }
}

use axum::Json;

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/me", get(me))
        .route("/cli-config", get(cli_config))
        .route("/entitlements", get(entitlements))
        .route("/requests", post(create).get(list))
        .route("/requests/{id}", get(show))
        .route("/requests/{id}/approve", post(approve))
        .route("/requests/{id}/deny", post(deny))
        .route("/requests/{id}/cancel", post(cancel))
        .route("/requests/{id}/revoke", post(revoke))
        .route("/requests/{id}/extend", post(extend))
        .route("/requests/{id}/review", post(review))
        .route("/requests/{id}/credentials", post(credentials))
        .route("/requests/{id}/console-url", post(console_url))
        .route("/audit", get(audit_list))
        .route("/audit/verify", get(audit_verify))
        .route("/admin/revoke-sessions", post(revoke_sessions))
        .fallback(|| async { ApiError::not_found("no such API endpoint") })
}

async fn me(State(web): State<Web>, Bearer(user): Bearer) -> Json<jit_api::Me> {
    Json(jit_api::Me {
        id: user.key.clone(),
        name: user.name.clone(),
        email: user.email.clone(),
        admin: web.app.is_admin(&user),
        auditor: web.app.is_auditor(&user),
        groups: user.groups,
        roles: user.roles,
    })
}

async fn cli_config(State(web): State<Web>) -> Result<Json<jit_api::CliConfig>, ApiError> {
    Ok(Json(match &web.auth.mode {
        AuthMode::Dev => jit_api::CliConfig {
            issuer: web.auth.public_url.clone(),
            client_id: "jit-dev".to_owned(),
            scopes: vec![],
            device_authorization_endpoint: None,
            token_endpoint: Some(format!("{}/api/v1/dev/token", web.auth.public_url)),
            dev: true,
        },
        AuthMode::Oidc(identity) => identity.cli_config().ok_or_else(|| {
            ApiError::not_found("this broker has no CLI client configured (`oidc.cli_client_id`)")
        })?,
    }))
}

async fn entitlements(
    State(web): State<Web>,
    Bearer(user): Bearer,
) -> Json<Vec<jit_api::Entitlement>> {
    Json(
        web.app
            .requestable(&user)
            .into_iter()
            .map(|e| jit_api::Entitlement {
                id: e.id.clone(),
                title: e.title.clone(),
                kind: e.kind.as_str().to_owned(),
                max_duration: jit_api::format_duration(e.max_duration),
                approvals_required: e.approvals_required,
                require_mfa: e.require_mfa,
                require_ticket: e.require_ticket,
                break_glass: web.app.may_break_glass(&user, e),
            })
            .collect(),
    )
}

async fn create(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Body(body): Body<CreateRequest>,
) -> Result<Response, ApiError> {
    let view = web.app.create_request(&user, &body).await?;
    Ok((StatusCode::CREATED, Json(view.to_api())).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    mine: Option<bool>,
    #[serde(default)]
    limit: Option<i64>,
}

async fn list(
    State(web): State<Web>,
    Bearer(user): Bearer,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<jit_api::Request>>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let states = match q.state.as_deref() {
        None | Some("") => vec![],
        Some(s) => s
            .split(',')
            .map(|p| {
                p.trim()
                    .parse::<RequestState>()
                    .map_err(ApiError::bad_request)
            })
            .collect::<Result<_, _>>()?,
    };
    let views = web
        .app
        .list_visible(
            &user,
            states,
            q.mine.unwrap_or(false),
            q.limit.unwrap_or(100).clamp(1, 500),
        )
        .await?;
    Ok(Json(
        views
            .iter()
            .map(super::super::service::requests::RequestView::to_api)
            .collect(),
    ))
}

async fn show(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Id(id): Id,
) -> Result<Json<jit_api::Request>, ApiError> {
    Ok(Json(web.app.get_visible(&user, id).await?.to_api()))
}

async fn decide(
    web: &Web,
    user: &crate::domain::User,
    id: Uuid,
    d: Decision,
    body: DecisionBody,
) -> Result<Json<jit_api::Request>, ApiError> {
    let comment = body.comment;
    Ok(Json(
        web.app
            .decide(user, id, d, comment.as_deref())
            .await?
            .to_api(),
    ))
}

async fn approve(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Id(id): Id,
    OptBody(body): OptBody<DecisionBody>,
) -> Result<Json<jit_api::Request>, ApiError> {
    decide(&web, &user, id, Decision::Approve, body).await
}

async fn deny(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Id(id): Id,
    OptBody(body): OptBody<DecisionBody>,
) -> Result<Json<jit_api::Request>, ApiError> {
    decide(&web, &user, id, Decision::Deny, body).await
}

async fn cancel(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Id(id): Id,
) -> Result<Json<jit_api::Request>, ApiError> {
    Ok(Json(web.app.cancel(&user, id).await?.to_api()))
}

async fn revoke(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Id(id): Id,
    OptBody(body): OptBody<DecisionBody>,
) -> Result<Json<jit_api::Request>, ApiError> {
    let reason = body.comment;
    Ok(Json(
        web.app.revoke(&user, id, reason.as_deref()).await?.to_api(),
    ))
}

async fn extend(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Id(id): Id,
    Body(body): Body<ExtendBody>,
) -> Result<Response, ApiError> {
    let by = body
        .by
        .seconds()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let view = web
        .app
        .extend(&user, id, by, body.justification.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(view.to_api())).into_response())
}

async fn review(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Id(id): Id,
    OptBody(body): OptBody<DecisionBody>,
) -> Result<Json<jit_api::Request>, ApiError> {
    let comment = body.comment;
    Ok(Json(
        web.app
            .review(&user, id, comment.as_deref())
            .await?
            .to_api(),
    ))
}

async fn credentials(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Id(id): Id,
) -> Result<Json<jit_api::Credentials>, ApiError> {
    Ok(Json(web.app.mint_credentials(&user, id).await?))
}

async fn console_url(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Id(id): Id,
) -> Result<Json<jit_api::ConsoleUrl>, ApiError> {
    Ok(Json(jit_api::ConsoleUrl {
        url: web.app.console_url(&user, id).await?,
    }))
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    entitlement: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    request_id: Option<Uuid>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    since: Option<time::OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    until: Option<time::OffsetDateTime>,
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
}

async fn audit_list(
    State(web): State<Web>,
    Bearer(user): Bearer,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<jit_api::AuditPage>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let auditor = web.app.is_auditor(&user);
    if !auditor {
        // Others see the timeline of requests they may see, nothing else.
        let Some(id) = q.request_id else {
            return Err(ApiError::forbidden("only auditors read the audit log"));
        };
        web.app.get_visible(&user, id).await?;
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let events = audit::list(
        &web.app.store,
        &audit::Filter {
            actor: q.actor,
            entitlement: q.entitlement,
            action: q.action,
            request_id: q.request_id,
            since: q.since.map(crate::clock::to_ms),
            until: q.until.map(crate::clock::to_ms),
            before_seq: q.before,
            limit,
        },
    )
    .await
    .map_err(crate::service::ServiceError::from)?;
    let next_before = (i64::try_from(events.len()).unwrap_or(0) == limit)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    Ok(Json(jit_api::AuditPage {
        events: events.iter().map(audit::Event::to_api).collect(),
        next_before,
    }))
}

async fn audit_verify(
    State(web): State<Web>,
    Bearer(user): Bearer,
) -> Result<Json<jit_api::VerifyReport>, ApiError> {
    if !web.app.is_auditor(&user) {
        return Err(ApiError::forbidden("only auditors verify the audit log"));
    }
    let report = audit::verify(&web.app.store, None)
        .await
        .map_err(crate::service::ServiceError::from)?;
    Ok(Json(report))
}

#[derive(Deserialize)]
struct RevokeSessionsBody {
    entitlement: String,
}

async fn revoke_sessions(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Body(body): Body<RevokeSessionsBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (role_arn, before) = web
        .app
        .revoke_all_sessions(&user, &body.entitlement)
        .await?;
    Ok(Json(
        serde_json::json!({ "role_arn": role_arn, "issued_before": before }),
    ))
}
