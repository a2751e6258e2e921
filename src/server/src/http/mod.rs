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
use jit_api::ErrorBody;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::service::{App, ServiceError};

mod api;
mod assets;
pub mod auth;
mod handoff;
mod health;
pub mod openapi;
mod ui;

pub use auth::AuthMode;

/// Decodes `server.session_key` (base64, at least 64 bytes).
pub fn session_key_bytes(text: &str) -> Result<Vec<u8>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "must be base64 (e.g. `openssl rand -base64 64`)".to_owned())?;
    if bytes.len() < 64 {
        return Err(format!("must hold at least 64 bytes, has {}", bytes.len()));
    }
    Ok(bytes)
}

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
pub struct ApiError(pub StatusCode, pub &'static str, pub String);

impl ApiError {
    /// 400.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, "invalid_request", msg.into())
    }
    /// 401.
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self(StatusCode::UNAUTHORIZED, "unauthorized", msg.into())
    }
    /// 403.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self(StatusCode::FORBIDDEN, "forbidden", msg.into())
    }
    /// 404.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, "not_found", msg.into())
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) => Self::bad_request(m),
            ServiceError::Forbidden(m) => Self::forbidden(m),
            ServiceError::NotFound(m) => Self::not_found(m),
            ServiceError::Conflict(m) => Self(StatusCode::CONFLICT, "conflict", m),
            ServiceError::StepUpRequired(m) => {
                Self(StatusCode::UNAUTHORIZED, "step_up_required", m)
            }
            ServiceError::Upstream(m) => {
                tracing::warn!(error = %m, "upstream failure");
                Self(StatusCode::BAD_GATEWAY, "upstream_error", m)
            }
            ServiceError::AuditUnavailable(m) => {
                Self(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable", m)
            }
            ServiceError::AuditDamaged(m) => {
                tracing::error!(error = %m, "audit log damaged");
                Self(StatusCode::INTERNAL_SERVER_ERROR, "audit_damaged", m)
            }
            ServiceError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                Self(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the broker logged the cause".to_owned(),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.0, axum::Json(ErrorBody::new(self.1, self.2))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"jit\""),
            );
        }
        res
    }
}
