//! HTTP: the JSON API, the server-rendered web UI, sign-in, health and metrics.
//!
//! Handlers are thin: extract → authorize → call one service function →
//! shape the response. One error type per surface maps service errors to
//! status codes; 5xx bodies say nothing internal.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jit_api::{ErrorBody, ErrorCode};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::service::step_up::StepUp;
use crate::service::{App, ServiceError};

mod api;
mod assets;
pub mod auth;
mod handoff;
mod health;
pub mod openapi;
mod review;
pub mod step_up;
mod ui;
mod wait;

pub use auth::AuthMode;

/// State shared by every handler.
#[derive(Clone)]
pub struct Web {
    /// Use-cases.
    pub app: App,
    /// Sign-in and token checking.
    pub auth: Arc<auth::Auth>,
}

/// Builds the whole router.
pub fn router(web: Web) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let secure = web.auth.secure;
    Router::new()
        .merge(health::routes())
        .nest("/api/v1", api::routes())
        .merge(ui::routes())
        .merge(review::routes())
        .merge(auth::routes())
        .merge(handoff::routes())
        .merge(assets::routes())
        .fallback(ui::not_found)
        .with_state(web)
        .layer(middleware::from_fn(move |req, next| security_headers(req, next, secure)))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("http", request.id = %id, method = %req.method(), path = %req.uri().path())
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_mins(1),
        ))
}

async fn security_headers(req: Request, next: Next, secure: bool) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: HeaderName, v: &'static str| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send `Origin: null` on
    // same-origin form posts, which the CSRF origin check must refuse.
    set(h, header::REFERRER_POLICY, "same-origin");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(
        h,
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        h,
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=()",
    );
    if secure {
        set(
            h,
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        );
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// A JSON API error: `{"error": {"code", "message"}}` with the right status.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `error.code`.
    pub code: ErrorCode,
    /// `error.message`.
    pub message: String,
    /// For `step_up_required`: what a new sign-in must show (sent as the RFC 9470 challenge).
    pub step_up: Option<Box<StepUp>>,
}

/// The HTTP status that goes with `code`.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized | ErrorCode::StepUpRequired => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::UpstreamError => StatusCode::BAD_GATEWAY,
        ErrorCode::AuditUnavailable | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::AuditDamaged | ErrorCode::Internal | ErrorCode::Unknown => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl ApiError {
    /// An error with `code` (and its status) and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: status_of(code),
            code,
            message: message.into(),
            step_up: None,
        }
    }
    /// 400.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, msg)
    }
    /// 401.
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, msg)
    }
    /// 403.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, msg)
    }
    /// 404.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, msg)
    }
    /// 500 `internal`: the cause is logged here, the body says only that.
    pub fn internal(cause: &dyn std::fmt::Debug, what: &str) -> Self {
        tracing::error!(error = ?cause, "{what}");
        Self::new(
            ErrorCode::Internal,
            "internal error; the broker logged the cause",
        )
    }
    /// 401 `step_up_required`, with the challenge that says what a new sign-in must show.
    pub fn step_up(step_up: StepUp) -> Self {
        Self {
            message: step_up.message.clone(),
            step_up: Some(Box::new(step_up)),
            ..Self::new(ErrorCode::StepUpRequired, "")
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) => Self::bad_request(m),
            ServiceError::Forbidden(m) => Self::forbidden(m.to_string()),
            ServiceError::NotFound(m) => Self::not_found(m.to_string()),
            ServiceError::Conflict(m) => Self::new(ErrorCode::Conflict, m.to_string()),
            ServiceError::StepUpRequired(step_up) => Self::step_up(step_up),
            e @ ServiceError::Upstream { .. } => {
                // What the cloud said stays in the log: it may name accounts, roles, policies.
                if let ServiceError::Upstream { call, cause } = &e {
                    tracing::warn!(error = %cause, upstream.call = %call, "upstream failure");
                }
                Self::new(ErrorCode::UpstreamError, e.to_string())
            }
            e @ ServiceError::AuditUnavailable(_) => {
                Self::new(ErrorCode::AuditUnavailable, e.to_string())
            }
            ServiceError::AuditDamaged(m) => {
                tracing::error!(error = %m, "audit log damaged");
                Self::new(ErrorCode::AuditDamaged, m)
            }
            ServiceError::Internal(e) => Self::internal(&e, "internal error"),
        }
    }
}

/// The `WWW-Authenticate` challenge of a step-up (RFC 9470 §3): `insufficient_user_authentication`
/// with the authentication context in `acr_values` and the longest sign-in age in `max_age`;
/// plus, for clients written for Entra (MSAL), the same context as Entra's own claims challenge
/// asks for it, `claims` = base64 of `{"access_token":{"acrs":{"essential":true,"value":"c1"}}}`.
pub fn step_up_challenge(step_up: &StepUp) -> String {
    let max_age = step_up.max_age;
    match &step_up.auth_context {
        // Context ids are `c1`..`c99` (policy::catalog): nothing to quote.
        Some(context) => {
            let claims = serde_json::json!({
                "access_token": { "acrs": { "essential": true, "value": context } }
            });
            let claims = base64::engine::general_purpose::STANDARD.encode(claims.to_string());
            format!(
                "Bearer realm=\"jit\", error=\"insufficient_user_authentication\", \
                 error_description=\"a sign-in with authentication context {context} is required\", \
                 acr_values=\"{context}\", max_age={max_age}, claims=\"{claims}\""
            )
        }
        None => format!(
            "Bearer realm=\"jit\", error=\"insufficient_user_authentication\", \
             error_description=\"a recent sign-in with multi-factor authentication is required\", \
             max_age={max_age}"
        ),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let challenge = self.step_up.as_deref().map(step_up_challenge);
        let mut res = (
            self.status,
            axum::Json(ErrorBody::new(self.code, self.message)),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            let value = challenge
                .and_then(|c| HeaderValue::from_str(&c).ok())
                .unwrap_or_else(|| HeaderValue::from_static("Bearer realm=\"jit\""));
            res.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_up_challenges_follow_rfc_9470() {
        let context = StepUp {
            message: "`x` requires authentication context `c7`: sign in again".to_owned(),
            auth_context: Some("c7".to_owned()),
            mfa: false,
            max_age: 900,
        };
        let challenge = step_up_challenge(&context);
        assert!(
            challenge.starts_with(
                r#"Bearer realm="jit", error="insufficient_user_authentication", error_description=""#
            ),
            "{challenge}"
        );
        assert!(
            challenge.contains(r#", acr_values="c7", max_age=900, claims=""#),
            "{challenge}"
        );
        assert!(HeaderValue::from_str(&challenge).is_ok());
        let mfa = step_up_challenge(&StepUp {
            auth_context: None,
            mfa: true,
            ..context.clone()
        });
        assert!(
            !mfa.contains("acr_values") && !mfa.contains("claims="),
            "{mfa}"
        );
        assert!(mfa.ends_with("max_age=900"), "{mfa}");
        let response = ApiError::step_up(context).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            HeaderValue::from_str(&challenge).unwrap()
        );
    }
}
