//! The JSON API under `/api/v1` (SPEC §6).

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jit_api::{
    CreateRequest, Decision, DecisionBody, EmptyBody, ErrorBody, ExtendBody, RequestState,
};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use super::auth::{AuthMode, Bearer, Reader};
use super::openapi::Common;
use super::{ApiError, Web};
use crate::service::lists::PageAt;
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

/// An optional JSON body: empty or `null` means `T::default()`.
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
        serde_json::from_slice::<Option<T>>(&bytes)
            .map(|body| Self(body.unwrap_or_default()))
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

/// The OpenAPI document of this module's routes (see [`super::openapi`] for the parts that
/// do not come from a handler: security scheme, shared error responses, development mode).
#[derive(OpenApi)]
#[openapi(
    paths(
        super::openapi::document,
        me,
        cli_config,
        entitlements,
        create,
        list,
        show,
        approve,
        deny,
        cancel,
        revoke,
        extend,
        review,
        credentials,
        console_url,
        audit_list,
        audit_verify,
        revoke_sessions,
    ),
    modifiers(&Common)
)]
pub(super) struct ApiDoc;

pub(super) fn routes() -> Router<Web> {
    Router::new()
        .route("/openapi.json", get(super::openapi::document))
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

/// The caller as the broker sees them.
#[utoipa::path(
    get,
    operation_id = "get_me",
    path = "/api/v1/me",
    tag = "identity",
    security(("bearer" = [])),
    responses((status = 200, description = "the caller", body = jit_api::Me)),
)]
async fn me(State(web): State<Web>, Bearer(user): Bearer) -> Json<jit_api::Me> {
    Json(jit_api::Me {
        id: user.key.clone(),
        name: user.name.clone(),
        email: user.email.clone(),
        admin: web.app.authorize_admin(&user).is_ok(),
        auditor: web.app.authorize_audit(&user).is_ok(),
        groups: user.groups,
        roles: user.roles,
    })
}

/// What `jit login` needs to sign in: the issuer, client id and endpoints. No token needed.
#[utoipa::path(
    get,
    operation_id = "get_cli_config",
    path = "/api/v1/cli-config",
    tag = "identity",
    responses(
        (status = 200, description = "the CLI's sign-in settings", body = jit_api::CliConfig),
        (status = 404, description = "this broker has no CLI client configured", body = ErrorBody),
    ),
)]
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

/// The entitlements the caller may request.
#[utoipa::path(
    get,
    operation_id = "list_entitlements",
    path = "/api/v1/entitlements",
    tag = "requests",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "requestable entitlements", body = Vec<jit_api::Entitlement>),
    ),
)]
async fn entitlements(
    State(web): State<Web>,
    Bearer(user): Bearer,
) -> Json<Vec<jit_api::Entitlement>> {
    Json(
        web.app
            .requestable(&user)
            .into_iter()
            .map(|(e, break_glass)| jit_api::Entitlement {
                id: e.id.clone(),
                title: e.title.clone(),
                kind: e.kind.as_str().to_owned(),
                max_duration: jit_api::format_duration(e.max_duration),
                approvals_required: e.approvals_required,
                require_mfa: e.require_mfa,
                auth_context: e.auth_context.clone(),
                require_ticket: e.require_ticket,
                break_glass,
                target: web.app.providers.describe(e),
                members: if e.kind == crate::policy::Kind::Bundle {
                    e.members().iter().map(|m| m.id.clone()).collect()
                } else {
                    Vec::new()
                },
            })
            .collect(),
    )
}

/// Files an access request. Auto-approved or break-glass requests come back `approved`.
#[utoipa::path(
    post,
    operation_id = "create_request",
    path = "/api/v1/requests",
    tag = "requests",
    security(("bearer" = [])),
    request_body(
        content = CreateRequest,
        example = json!({
            "entitlement": "aws-sandbox",
            "duration": "1h",
            "justification": "rotate the deploy key",
            "ticket": "INC-1234"
        })
    ),
    responses(
        (status = 201, description = "the new request", body = jit_api::Request),
        (status = 400, description = "malformed body, or a rule of the entitlement is broken \
            (duration too long, justification or ticket missing, no break-glass)", body = ErrorBody),
        (status = 403, description = "the policies do not allow the caller to request it", body = ErrorBody),
        (status = 404, description = "unknown entitlement", body = ErrorBody),
        (status = 409, description = "the caller already has an open request for it", body = ErrorBody),
    ),
)]
async fn create(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Body(body): Body<CreateRequest>,
) -> Result<Response, ApiError> {
    let view = web.app.create_request(&user, &body).await?;
    Ok((StatusCode::CREATED, Json(view.to_api())).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only these states, comma-separated (`pending,active`).
    #[serde(default)]
    #[param(value_type = Option<Vec<RequestState>>, style = Form, explode = false)]
    state: Option<String>,
    /// Only the caller's own requests.
    #[serde(default)]
    mine: Option<bool>,
    /// Only requests after this one: the `after` of the previous page's `next` link.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    after: Option<String>,
    /// At most this many (clamped to 1..=500; default 100).
    #[serde(default)]
    limit: Option<i64>,
}

/// The requests the caller may see (own ones, those the caller may decide, all for auditors and
/// admins), newest first, a page at a time: when there are more, the response has a
/// `Link: <…?after=CURSOR&limit=N…>; rel="next"` header (RFC 8288) whose URL, the same query with
/// `after` set, gives the next page; the last page has none. Each page holds `limit` requests
/// unless the list ends there.
#[utoipa::path(
    get,
    operation_id = "list_requests",
    path = "/api/v1/requests",
    tag = "requests",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "a page of matching requests; when more follow, a `Link: <URL>; rel=\"next\"` header names the next page", body = Vec<jit_api::Request>),
        (status = 400, description = "malformed query or cursor", body = ErrorBody),
    ),
)]
async fn list(
    State(web): State<Web>,
    Bearer(user): Bearer,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
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
    let after = q
        .after
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    let page = web
        .app
        .list_visible(
            &user,
            states,
            q.mine.unwrap_or(false),
            after.map_or(PageAt::Newest, PageAt::After),
            limit,
        )
        .await?;
    let body: Vec<jit_api::Request> = page
        .items
        .iter()
        .map(super::super::service::requests::RequestView::to_api)
        .collect();
    let mut response = Json(body).into_response();
    if let Some(next) = page.next {
        let mut query = vec![("after", next.to_string()), ("limit", limit.to_string())];
        if let Some(s) = q.state.filter(|s| !s.is_empty()) {
            query.push(("state", s));
        }
        if let Some(m) = q.mine {
            query.push(("mine", m.to_string()));
        }
        next_link(&mut response, "/api/v1/requests", &query);
    }
    Ok(response)
}

/// Adds `Link: <path?query>; rel="next"` to `response`.
fn next_link(response: &mut Response, path: &str, query: &[(&str, String)]) {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish();
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("<{path}?{query}>; rel=\"next\"")) {
        response.headers_mut().insert(axum::http::header::LINK, v);
    }
}

/// One request, if the caller may see it.
#[utoipa::path(
    get,
    operation_id = "get_request",
    path = "/api/v1/requests/{id}",
    tag = "requests",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "request id"), super::wait::WaitQuery),
    description = "Also answers the web pages' own script: without `Authorization`, a same-origin \
        `GET` (`Sec-Fetch-Site: same-origin`) is authenticated by the page's session cookie. No \
        state-changing endpoint accepts the cookie.",
    responses(
        (status = 200, description = "the request; with `wait`, once it is in a state named or \
            has ended, or as it stands when `timeout` runs out (a long poll instead of polling)",
            body = jit_api::Request),
        (status = 400, description = "malformed path or query", body = ErrorBody),
        (status = 404, description = "no such request, or the caller may not see it", body = ErrorBody),
    ),
)]
async fn show(
    State(web): State<Web>,
    Reader(user): Reader,
    Id(id): Id,
    q: Result<Query<super::wait::WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<jit_api::Request>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let view = match q.parse()? {
        None => web.app.get_visible(&user, id).await?,
        Some(w) => {
            web.app
                .wait_visible(&user, id, &w.states, w.timeout)
                .await?
        }
    };
    Ok(Json(view.to_api()))
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

/// Approves a pending request (N distinct approvals make it active).
#[utoipa::path(
    post,
    operation_id = "approve_request",
    path = "/api/v1/requests/{id}/approve",
    tag = "requests",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "request id")),
    request_body(content = Option<DecisionBody>, description = "optional comment; an empty body is allowed"),
    responses(
        (status = 200, description = "the request after the change", body = jit_api::Request),
        (status = 400, description = "malformed body, or the comment breaks a rule (too long, control, bidirectional or invisible characters)", body = ErrorBody),
        (status = 403, description = "the caller may not decide on this request (not an approver, own request, already decided)", body = ErrorBody),
        (status = 404, description = "no such request, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "the request is no longer pending", body = ErrorBody),
    ),
)]
async fn approve(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Id(id): Id,
    OptBody(body): OptBody<DecisionBody>,
) -> Result<Json<jit_api::Request>, ApiError> {
    decide(&web, &user, id, Decision::Approve, body).await
}

/// Denies a pending request; one denial ends it.
#[utoipa::path(
    post,
    operation_id = "deny_request",
    path = "/api/v1/requests/{id}/deny",
    tag = "requests",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "request id")),
    request_body(content = Option<DecisionBody>, description = "optional comment; an empty body is allowed"),
    responses(
        (status = 200, description = "the request after the change", body = jit_api::Request),
        (status = 400, description = "malformed body, or the comment breaks a rule (too long, control, bidirectional or invisible characters)", body = ErrorBody),
        (status = 403, description = "the caller may not decide on this request (not an approver, own request, already decided)", body = ErrorBody),
        (status = 404, description = "no such request, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "the request is no longer pending", body = ErrorBody),
    ),
)]
async fn deny(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Id(id): Id,
    OptBody(body): OptBody<DecisionBody>,
) -> Result<Json<jit_api::Request>, ApiError> {
    decide(&web, &user, id, Decision::Deny, body).await
}

/// Withdraws the caller's own pending request.
#[utoipa::path(
    post,
    operation_id = "cancel_request",
    path = "/api/v1/requests/{id}/cancel",
    tag = "requests",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "request id")),
    request_body(content = Option<EmptyBody>, description = "none, or an empty object: a cancellation takes no field"),
    responses(
        (status = 200, description = "the request after the change", body = jit_api::Request),
        (status = 400, description = "malformed path, or a field in the body", body = ErrorBody),
        (status = 403, description = "only the requester may cancel", body = ErrorBody),
        (status = 404, description = "no such request, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "the request is no longer pending", body = ErrorBody),
    ),
)]
async fn cancel(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Id(id): Id,
    OptBody(EmptyBody {}): OptBody<EmptyBody>,
) -> Result<Json<jit_api::Request>, ApiError> {
    Ok(Json(web.app.cancel(&user, id).await?.to_api()))
}

/// Ends an active grant early, with every grant and pending extension of its extension chain
/// (its requester or an admin).
#[utoipa::path(
    post,
    operation_id = "revoke_request",
    path = "/api/v1/requests/{id}/revoke",
    tag = "requests",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "request id")),
    request_body(content = Option<DecisionBody>, description = "optional reason in `comment`; an empty body is allowed"),
    responses(
        (status = 200, description = "the request after the change", body = jit_api::Request),
        (status = 400, description = "malformed body, or the reason breaks a rule", body = ErrorBody),
        (status = 403, description = "only the requester or an admin may revoke", body = ErrorBody),
        (status = 404, description = "no such request, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "the request is not active", body = ErrorBody),
    ),
)]
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

/// Asks for more time on an active grant: files an extension request linked to it.
#[utoipa::path(
    post,
    operation_id = "extend_request",
    path = "/api/v1/requests/{id}/extend",
    tag = "requests",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "request id")),
    request_body(content = ExtendBody, example = json!({ "by": "30m" })),
    responses(
        (status = 201, description = "the extension request", body = jit_api::Request),
        (status = 400, description = "malformed body, invalid duration, or a rule of the entitlement is broken", body = ErrorBody),
        (status = 403, description = "only the requester may extend, or the policies do not allow it", body = ErrorBody),
        (status = 404, description = "no such request, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "the request is not active, or no extension is left", body = ErrorBody),
    ),
)]
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

/// Records the after-the-fact review of a break-glass grant.
#[utoipa::path(
    post,
    operation_id = "review_request",
    path = "/api/v1/requests/{id}/review",
    tag = "requests",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "request id")),
    request_body(content = Option<DecisionBody>, description = "optional comment; an empty body is allowed"),
    responses(
        (status = 200, description = "the request after the change", body = jit_api::Request),
        (status = 400, description = "malformed body, or the request was no break-glass grant", body = ErrorBody),
        (status = 403, description = "the caller may not review it (not an approver, own request)", body = ErrorBody),
        (status = 404, description = "no such request, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "already reviewed", body = ErrorBody),
    ),
)]
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

/// Mints temporary AWS credentials for the caller's active `aws_role` grant.
#[utoipa::path(
    post,
    operation_id = "mint_credentials",
    path = "/api/v1/requests/{id}/credentials",
    tag = "requests",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "request id")),
    request_body(content = Option<EmptyBody>, description = "none, or an empty object: no field is taken"),
    responses(
        (status = 200, description = "temporary AWS credentials", body = jit_api::Credentials),
        (status = 400, description = "malformed path, a field in the body, or the entitlement is no AWS role", body = ErrorBody),
        (status = 403, description = "only the grant's owner may", body = ErrorBody),
        (status = 404, description = "no such request, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "the request is not active", body = ErrorBody),
        (status = 502, description = "AWS refused or could not be reached", body = ErrorBody),
        (status = 503, description = "code `audit_unavailable`: the audit log cannot be written, so no credentials are minted (AWS is not asked)", body = ErrorBody),
    ),
)]
async fn credentials(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Id(id): Id,
    OptBody(EmptyBody {}): OptBody<EmptyBody>,
) -> Result<Json<jit_api::Credentials>, ApiError> {
    Ok(Json(web.app.mint_credentials(&user, id).await?))
}

/// A federated AWS console sign-in URL for the caller's active `aws_role` grant.
#[utoipa::path(
    post,
    operation_id = "get_console_url",
    path = "/api/v1/requests/{id}/console-url",
    tag = "requests",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "request id")),
    request_body(content = Option<EmptyBody>, description = "none, or an empty object: no field is taken"),
    responses(
        (status = 200, description = "the console sign-in URL", body = jit_api::ConsoleUrl),
        (status = 400, description = "malformed path, a field in the body, or the entitlement is no AWS role", body = ErrorBody),
        (status = 403, description = "only the grant's owner may", body = ErrorBody),
        (status = 404, description = "no such request, or the caller may not see it", body = ErrorBody),
        (status = 409, description = "the request is not active", body = ErrorBody),
        (status = 502, description = "AWS refused or could not be reached", body = ErrorBody),
        (status = 503, description = "code `audit_unavailable`: the audit log cannot be written, so no session is minted (AWS is not asked)", body = ErrorBody),
    ),
)]
async fn console_url(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Id(id): Id,
    OptBody(EmptyBody {}): OptBody<EmptyBody>,
) -> Result<Json<jit_api::ConsoleUrl>, ApiError> {
    let url = web.app.console_url(&user, id).await?;
    // The simulated provider's console is a page of the broker's own: a path.
    let url = if url.starts_with('/') {
        format!("{}{url}", web.auth.public_url)
    } else {
        url
    };
    Ok(Json(jit_api::ConsoleUrl { url }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Only events by this actor (email, or `system`).
    #[serde(default)]
    actor: Option<String>,
    /// Only events about this entitlement.
    #[serde(default)]
    entitlement: Option<String>,
    /// Only this action, e.g. `request.approved`.
    #[serde(default)]
    action: Option<String>,
    /// Only events about this request (required unless the caller is an auditor).
    #[serde(default)]
    request_id: Option<Uuid>,
    /// Only events at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    since: Option<time::OffsetDateTime>,
    /// Only events before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    until: Option<time::OffsetDateTime>,
    /// Only events after this one in the list's order (smaller `seq`): the `next` of the previous
    /// page.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    after: Option<String>,
    /// The same as `after`, as a number (the `next_before` of the previous page; kept for clients
    /// written before `after`).
    #[serde(default)]
    before: Option<i64>,
    /// At most this many (clamped to 1..=1000; default 100).
    #[serde(default)]
    limit: Option<i64>,
}

/// Audit events, newest first, a page at a time. Auditors read everything; others only the
/// timeline of a request they may see (`request_id` required). When there are more, the page's
/// `next` (and `next_before`, the same as a number) is where the next one starts: pass it as
/// `after` with the same filters; the response also has a `Link: <…>; rel="next"` header with
/// that URL. The last page has neither. On PostgreSQL the newest events may be committed but not
/// chained yet (the broker chains them moments after their transaction): they are listed after
/// the chain's head, in the order they will be chained, with `pending: true`, a provisional `seq`
/// and empty hashes, read in the same snapshot as the chain, so the list holds every event
/// committed before the call without waiting for the chain. A page never ends on a pending
/// event.
#[utoipa::path(
    get,
    operation_id = "list_audit_events",
    path = "/api/v1/audit",
    tag = "audit",
    security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "a page of events; when more follow, `next` and a `Link: <URL>; rel=\"next\"` header name the next page", body = jit_api::AuditPage),
        (status = 400, description = "malformed query or cursor", body = ErrorBody),
        (status = 403, description = "not an auditor, and no `request_id` given", body = ErrorBody),
        (status = 404, description = "no such request, or the caller may not see it", body = ErrorBody),
        (status = 500, description = "internal error; or, with code `audit_damaged`, a row of the audit log cannot be read (the table was changed outside the broker): the message names it", body = ErrorBody),
    ),
)]
async fn audit_list(
    State(web): State<Web>,
    Bearer(user): Bearer,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let after = match q.after.as_deref() {
        None => q.before,
        Some(a) => Some(a.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!(
                "`{a}` is not a cursor of the audit log (pass the `next` of the previous page)"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let filter = audit::Filter {
        actor: q.actor,
        entitlement: q.entitlement,
        action: q.action,
        request_id: q.request_id,
        since: q.since.map(crate::clock::to_ms),
        until: q.until.map(crate::clock::to_ms),
        before_seq: after,
        // One more tells whether a next page exists.
        limit: limit + 1,
    };
    // Auditors read everything; others the timeline of a request they may see, nothing else.
    let mut events = match (web.app.authorize_audit(&user), q.request_id) {
        (Ok(auditor), _) => web.app.audit_events(&auditor, &filter).await?,
        (Err(_), Some(id)) => web.app.request_events(&user, id, &filter).await?,
        (Err(refused), None) => return Err(refused.into()),
    };
    let next_before = if i64::try_from(events.len()).unwrap_or(i64::MAX) > limit {
        events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        events.last().map(|e| e.seq)
    } else {
        None
    };
    let mut response = Json(jit_api::AuditPage {
        events: events.iter().map(audit::Event::to_api).collect(),
        next_before,
        next: next_before.map(|n| n.to_string()),
    })
    .into_response();
    if let Some(n) = next_before {
        let mut query = vec![("after", n.to_string()), ("limit", limit.to_string())];
        let texts = [
            ("actor", filter.actor),
            ("entitlement", filter.entitlement),
            ("action", filter.action),
            ("request_id", filter.request_id.map(|r| r.to_string())),
            ("since", q.since.and_then(rfc3339)),
            ("until", q.until.and_then(rfc3339)),
        ];
        query.extend(texts.into_iter().filter_map(|(k, v)| Some((k, v?))));
        next_link(&mut response, "/api/v1/audit", &query);
    }
    Ok(response)
}

fn rfc3339(t: time::OffsetDateTime) -> Option<String> {
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Query of `GET /api/v1/audit/verify`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct VerifyQuery {
    /// `true`: recompute every row of the chain. Default: only the rows from the newest one
    /// this broker verified before (the first call after the broker starts checks everything).
    #[serde(default)]
    full: bool,
}

/// Verifies the audit hash chain (auditors only), after chaining every event committed before
/// the call. By default in steps: the broker remembers, in its memory only, the newest row that
/// passed and its hash; a later call recomputes that row (linked to the stored hash of the row
/// before it) and every row after it, and neither reads nor counts the rows before it. When
/// that row's hash changed, or the check finds a problem, the whole chain is recomputed. So a
/// call in steps sees every row appended since and an edit of the remembered row; it does not
/// see a row before it edited, deleted or inserted while the remembered row stays as it is, nor
/// rows outside the chain (its report has no `rows`). `full=true` recomputes and counts every
/// row and sees those too: schedule it. `recomputed_from` in the report says where this check
/// started.
#[utoipa::path(
    get,
    operation_id = "verify_audit_chain",
    path = "/api/v1/audit/verify",
    tag = "audit",
    security(("bearer" = [])),
    params(VerifyQuery),
    responses(
        (status = 200, description = "the verification report (`ok` false names the first bad row); with signed checkpoints, `checkpoints` names the newest that covers the chain and how many events are not yet covered", body = jit_api::VerifyReport),
        (status = 400, description = "malformed query", body = ErrorBody),
        (status = 403, description = "not an auditor", body = ErrorBody),
    ),
)]
async fn audit_verify(
    State(web): State<Web>,
    Bearer(user): Bearer,
    q: Result<Query<VerifyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<jit_api::VerifyReport>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let auditor = web
        .app
        .authorize_audit(&user)
        .map_err(|_| ApiError::forbidden("only auditors verify the audit log"))?;
    Ok(Json(web.app.verify_audit(&auditor, q.full).await?))
}

/// Body of `POST /api/v1/admin/revoke-sessions`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RevokeSessionsBody {
    /// An `aws_role` entitlement id.
    entitlement: String,
}

/// Revokes every STS session of an `aws_role` entitlement's role issued before now (admins only).
#[utoipa::path(
    post,
    operation_id = "revoke_all_sessions",
    path = "/api/v1/admin/revoke-sessions",
    tag = "admin",
    security(("bearer" = [])),
    request_body = RevokeSessionsBody,
    responses(
        (status = 200, description = "the role and the cut-off time", body = jit_api::RevokedSessions),
        (status = 400, description = "malformed body, the entitlement is no AWS role, or no `[aws]` section", body = ErrorBody),
        (status = 403, description = "not an admin", body = ErrorBody),
        (status = 404, description = "unknown entitlement", body = ErrorBody),
        (status = 502, description = "AWS refused or could not be reached", body = ErrorBody),
    ),
)]
async fn revoke_sessions(
    State(web): State<Web>,
    Bearer(user): Bearer,
    Body(body): Body<RevokeSessionsBody>,
) -> Result<Json<jit_api::RevokedSessions>, ApiError> {
    let admin = web
        .app
        .authorize_admin(&user)
        .map_err(|_| ApiError::forbidden("only admins revoke all sessions"))?;
    let (role_arn, issued_before) = web
        .app
        .revoke_all_sessions(&user, &admin, &body.entitlement)
        .await?;
    Ok(Json(jit_api::RevokedSessions {
        role_arn,
        issued_before,
    }))
}
