//! Sign-in, server-side sessions, CSRF, and the extractors that turn a
//! request into a [`User`]: [`SignedIn`] for pages (session cookie) and
//! [`Bearer`] for the JSON API (access token).

use std::sync::Arc;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;

use super::{ApiError, Web};
use crate::domain::User;
use crate::identity::Identity;
use crate::identity::oidc::LoginState;
use crate::store::sessions::{self, SessionRow};

/// How people sign in.
pub enum AuthMode {
    /// `serve --dev`: pick a demo user; API tokens from `/api/v1/dev/token`.
    Dev,
    /// OpenID Connect against the configured IdP: browser sign-in and API bearer tokens.
    Oidc(Arc<Identity>),
}

/// Sign-in machinery and cookie settings.
pub struct Auth {
    /// Mode.
    pub mode: AuthMode,
    /// HMAC key for session ids.
    key: Vec<u8>,
    /// Cookies are `Secure` and `__Host-` (public URL is https).
    pub secure: bool,
    /// Public origin (`scheme://host[:port]`) for Origin checks.
    pub origin: String,
    /// Public base URL.
    pub public_url: String,
    /// Idle timeout, ms.
    pub idle_ms: i64,
    /// Absolute lifetime, ms.
    pub absolute_ms: i64,
}

/// Demo users of development mode: (name, display name, groups).
pub const DEMO_USERS: &[(&str, &str, &[&str])] = &[
    (
        "alice",
        "Alice Engineer",
        &["grp-jit-requesters", "grp-prod-admins"],
    ),
    ("bob", "Bob Approver", &["grp-jit-approvers"]),
    (
        "carol",
        "Carol Admin",
        &["grp-jit-admins", "grp-jit-auditors"],
    ),
    ("dave", "Dave Approver", &["grp-jit-approvers"]),
    (
        "oscar",
        "Oscar On-call",
        &["grp-jit-requesters", "grp-oncall"],
    ),
    ("mallory", "Mallory Nobody", &[]),
];

/// The demo user called `name`.
pub fn demo_user(name: &str) -> Option<User> {
    DEMO_USERS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(n, display, groups)| User {
            key: format!("dev/{n}"),
            oid: None,
            name: (*display).to_owned(),
            email: format!("{n}@example.com"),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            roles: vec![],
            mfa: true,
            auth_time: None,
            acrs: vec![],
        })
}

const SESSION_COOKIE: &str = "jit_session";
const SECURE_SESSION_COOKIE: &str = "__Host-jit_session";

impl Auth {
    /// Builds the auth settings.
    pub fn new(
        mode: AuthMode,
        key: Vec<u8>,
        public_url: &str,
        idle_secs: u64,
        absolute_secs: u64,
    ) -> Self {
        let url = url::Url::parse(public_url).ok();
        let secure = url.as_ref().is_some_and(|u| u.scheme() == "https");
        let origin = url.map_or_else(String::new, |u| u.origin().ascii_serialization());
        Self {
            mode,
            key,
            secure,
            origin,
            public_url: public_url.trim_end_matches('/').to_owned(),
            idle_ms: i64::try_from(idle_secs).unwrap_or(3600) * 1000,
            absolute_ms: i64::try_from(absolute_secs).unwrap_or(43_200) * 1000,
        }
    }

    fn cookie_name(&self) -> &'static str {
        if self.secure {
            SECURE_SESSION_COOKIE
        } else {
            SESSION_COOKIE
        }
    }

    fn hash_id(&self, id: &str) -> String {
        #[expect(clippy::expect_used, reason = "HMAC accepts keys of any length")]
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("hmac key");
        mac.update(id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn cookie(&self, value: &str, max_age_secs: i64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let text = format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}",
            self.cookie_name()
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Creates a session and returns the `Set-Cookie` value.
    pub async fn start_session(
        &self,
        web: &Web,
        user: Option<&User>,
        data: &str,
    ) -> Result<(HeaderValue, SessionRow), ApiError> {
        let id = random_token();
        let now = web.app.now_ms();
        let lifetime = if user.is_some() {
            self.absolute_ms
        } else {
            600_000
        };
        let row = SessionRow {
            id_hash: self.hash_id(&id),
            user_key: user.map(|u| u.key.clone()),
            data: data.to_owned(),
            csrf_token: random_token(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + lifetime,
        };
        sessions::insert(&web.app.store, &row)
            .await
            .map_err(internal)?;
        Ok((self.cookie(&id, lifetime / 1000), row))
    }

    /// The live session named by the request's cookie.
    pub async fn session(&self, web: &Web, headers: &HeaderMap) -> Option<SessionRow> {
        let id = cookie_value(headers, self.cookie_name())?;
        let hash = self.hash_id(&id);
        let row = sessions::get(&web.app.store, &hash).await.ok()??;
        let now = web.app.now_ms();
        if row.expires_at <= now
            || (row.user_key.is_some() && row.last_seen_at + self.idle_ms <= now)
        {
            let _ = sessions::delete(&web.app.store, &hash).await;
            return None;
        }
        if row.user_key.is_some() && now - row.last_seen_at > 60_000 {
            let _ = sessions::touch(&web.app.store, &hash, now).await;
        }
        Some(row)
    }

    /// The `Set-Cookie` that clears the session cookie.
    pub fn clear_cookie(&self) -> HeaderValue {
        self.cookie("", 0)
    }

    /// Checks a state-changing form post: same origin and the session's CSRF token.
    pub fn check_form(
        &self,
        headers: &HeaderMap,
        session: &SessionRow,
        token: &str,
    ) -> Result<(), ApiError> {
        let origin_ok = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            Some(origin) => origin == self.origin,
            None => headers
                .get(header::REFERER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|r| r == self.origin || r.starts_with(&format!("{}/", self.origin))),
        };
        if !origin_ok {
            return Err(ApiError::forbidden("cross-site form post refused"));
        }
        if !constant_time_eq(token.as_bytes(), session.csrf_token.as_bytes()) {
            return Err(ApiError::forbidden(
                "the form expired or was not sent by jit: reload the page and try again",
            ));
        }
        Ok(())
    }
}

fn internal(e: impl std::fmt::Debug) -> ApiError {
    ApiError::internal(&e, "session store failure")
}

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares secrets without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Server-side session data of a signed-in user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionData {
    /// The user.
    pub user: User,
    /// ID token for RP-initiated logout (never logged).
    #[serde(default)]
    pub id_token: Option<String>,
    /// What the user had typed when a step-up sent them to sign in again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<super::step_up::Draft>,
}

/// What the pre-login session holds until the callback: the sign-in state and, for a step-up,
/// the form that was being sent.
#[derive(Serialize, Deserialize)]
struct PreLogin {
    #[serde(flatten)]
    state: LoginState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    draft: Option<super::step_up::Draft>,
}

/// Starts a sign-in at the provider that must show `require`: a pre-login session holding the
/// state (and `draft`); its cookie and the provider URL to send the browser to. `None` in
/// development mode, which has no provider.
pub(super) async fn start_sign_in(
    web: &Web,
    next: &str,
    require: &crate::identity::oidc::Require,
    draft: Option<super::step_up::Draft>,
) -> Result<Option<(HeaderValue, url::Url)>, ApiError> {
    let AuthMode::Oidc(identity) = &web.auth.mode else {
        return Ok(None);
    };
    let (url, state) = identity.oidc.begin_with(next, require);
    let data = serde_json::to_string(&PreLogin { state, draft }).map_err(internal)?;
    let (cookie, _) = web.auth.start_session(web, None, &data).await?;
    Ok(Some((cookie, url)))
}

/// A signed-in browser user (pages). Redirects to `/login` otherwise.
pub struct SignedIn {
    /// The user.
    pub user: User,
    /// Their session (CSRF token).
    pub session: SessionRow,
    /// What they had typed when a step-up sent them to sign in again.
    pub draft: Option<super::step_up::Draft>,
}

/// Why a page could not resolve a user.
pub struct LoginRedirect(String);

impl IntoResponse for LoginRedirect {
    fn into_response(self) -> Response {
        Redirect::to(&format!("/login?next={}", urlencode(&self.0))).into_response()
    }
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl FromRequestParts<Web> for SignedIn {
    type Rejection = LoginRedirect;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, Self::Rejection> {
        let next = parts
            .uri
            .path_and_query()
            .map_or("/".to_owned(), ToString::to_string);
        let session = web
            .auth
            .session(web, &parts.headers)
            .await
            .ok_or_else(|| LoginRedirect(next.clone()))?;
        if session.user_key.is_none() {
            return Err(LoginRedirect(next));
        }
        let data: SessionData =
            serde_json::from_str(&session.data).map_err(|_| LoginRedirect(next))?;
        Ok(Self {
            user: data.user,
            session,
            draft: data.draft,
        })
    }
}

/// An API caller authenticated by `Authorization: Bearer`.
pub struct Bearer(pub User);

/// The caller of an API read that the web pages' own script makes too: a bearer token as for
/// every API call, or else the session cookie of a signed-in page, but only on a same-origin
/// `GET` (`Sec-Fetch-Site: same-origin`, which browsers set and pages of other sites cannot).
/// Only reads take it: no state-changing endpoint accepts the cookie, so the CSRF rules of the
/// forms stay the only way a page changes anything.
pub struct Reader(pub User);

impl FromRequestParts<Web> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, Self::Rejection> {
        let same_origin_read = parts.method == axum::http::Method::GET
            && parts
                .headers
                .get("sec-fetch-site")
                .is_some_and(|v| v.as_bytes() == b"same-origin");
        if !parts.headers.contains_key(header::AUTHORIZATION)
            && same_origin_read
            && let Ok(s) = SignedIn::from_request_parts(parts, web).await
        {
            return Ok(Self(s.user));
        }
        Bearer::from_request_parts(parts, web)
            .await
            .map(|Bearer(user)| Self(user))
    }
}

impl FromRequestParts<Web> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("missing bearer token: run `jit login`"))?;
        match &web.auth.mode {
            AuthMode::Dev => dev_token_user(web, token).await.map(Bearer).map_err(|why| {
                tracing::info!(reason = %why, "bearer token refused");
                ApiError::unauthorized("invalid or expired token: run `jit login`")
            }),
            AuthMode::Oidc(identity) => {
                identity
                    .bearer
                    .validate(token)
                    .await
                    .map(Bearer)
                    .map_err(|e| {
                        tracing::info!(reason = %e.reason(), "bearer token refused");
                        if e.status() == 503 {
                            ApiError::new(jit_api::ErrorCode::Unavailable, e.public_message())
                        } else {
                            ApiError::unauthorized(format!(
                                "{}: run `jit login`",
                                e.public_message()
                            ))
                        }
                    })
            }
        }
    }
}

async fn dev_token_user(web: &Web, token: &str) -> Result<User, String> {
    let hash = web.auth.hash_id(token);
    let row = sessions::get(&web.app.store, &hash)
        .await
        .map_err(|e| e.to_string())?
        // The scheduler's sweep deletes sessions past their end, so an expired token is
        // usually gone by the time it comes back.
        .ok_or_else(|| "unknown or expired dev token".to_owned())?;
    if row.expires_at <= web.app.now_ms() {
        return Err("expired dev token".to_owned());
    }
    let data: SessionData = serde_json::from_str(&row.data).map_err(|e| e.to_string())?;
    Ok(data.user)
}

/// Routes: `/login`, `/login/dev`, `/auth/callback`, `/logout`, `/signed-out`,
/// `/api/v1/dev/token`.
pub fn routes() -> Router<Web> {
    Router::new()
        .route("/login", get(login_page))
        .route("/signed-out", get(signed_out_page))
        .route("/login/dev", post(dev_login))
        .route("/auth/callback", get(callback))
        .route("/logout", post(logout))
        .route("/api/v1/dev/token", post(dev_token))
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Only local paths are accepted as return targets, in development mode as in production
/// ([`crate::domain::local_path`]).
fn safe_next(next: Option<&str>) -> String {
    crate::domain::local_path(next.unwrap_or("/"))
}

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
struct DevLoginPage {
    users: Vec<(String, String, String)>,
    csrf: String,
    next: String,
    dev: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "signed_out.html")]
struct SignedOutPage {
    chrome: super::ui::Chrome,
}

/// Where `/logout` ends (after the provider's own logout, when it has one).
/// A page of its own: sending the browser to `/login` would start a new
/// sign-in at once, and a provider that kept its session would sign the
/// user straight back in.
async fn signed_out_page(State(web): State<Web>) -> SignedOutPage {
    SignedOutPage {
        chrome: super::ui::Chrome::anonymous(matches!(web.auth.mode, AuthMode::Dev)),
    }
}

async fn login_page(
    State(web): State<Web>,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let next = safe_next(q.next.as_deref());
    match &web.auth.mode {
        AuthMode::Dev => {
            let (cookie, row) = web.auth.start_session(&web, None, "{}").await?;
            let page = DevLoginPage {
                users: DEMO_USERS
                    .iter()
                    .map(|(n, d, g)| ((*n).to_owned(), (*d).to_owned(), g.join(", ")))
                    .collect(),
                csrf: row.csrf_token,
                next,
                dev: true,
            };
            Ok(([(header::SET_COOKIE, cookie)], page).into_response())
        }
        AuthMode::Oidc(_) => {
            let require = crate::identity::oidc::Require::default();
            // A GET: a redirect to the provider is what browsers follow here (a step-up starts
            // from the form that needs it: `step_up::sign_in_again`).
            Ok(match start_sign_in(&web, &next, &require, None).await? {
                Some((cookie, url)) => {
                    ([(header::SET_COOKIE, cookie)], Redirect::to(url.as_str())).into_response()
                }
                None => Redirect::to("/login").into_response(),
            })
        }
    }
}

/// Fields default so that a forged post is refused by the CSRF check (403).
#[derive(Deserialize, Default)]
#[serde(default)]
struct DevLoginForm {
    user: String,
    csrf: String,
    next: Option<String>,
}

async fn dev_login(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(f): Form<DevLoginForm>,
) -> Result<Response, ApiError> {
    if !matches!(web.auth.mode, AuthMode::Dev) {
        return Err(ApiError::not_found("not found"));
    }
    let pre = web
        .auth
        .session(&web, &headers)
        .await
        .ok_or_else(|| ApiError::forbidden("the sign-in form expired: reload the page"))?;
    web.auth.check_form(&headers, &pre, &f.csrf)?;
    let user = demo_user(&f.user)
        .ok_or_else(|| ApiError::bad_request(format!("no demo user `{}`", f.user)))?;
    // Rotate: the pre-login session ends, a new id carries the user.
    let _ = sessions::delete(&web.app.store, &pre.id_hash).await;
    let data = serde_json::to_string(&SessionData {
        user: user.clone(),
        id_token: None,
        draft: None,
    })
    .map_err(internal)?;
    let (cookie, _) = web.auth.start_session(&web, Some(&user), &data).await?;
    web.app
        .audit_auth(
            &user.email,
            "auth.signed_in",
            json!({ "method": "dev" }),
            Some(&user),
        )
        .await?;
    Ok((
        [(header::SET_COOKIE, cookie)],
        Redirect::to(&safe_next(f.next.as_deref())),
    )
        .into_response())
}

#[derive(Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

async fn callback(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, ApiError> {
    let AuthMode::Oidc(identity) = &web.auth.mode else {
        return Err(ApiError::not_found("not found"));
    };
    let app = web.app.clone();
    let refuse = |why: String| {
        let app = app.clone();
        async move {
            tracing::info!(reason = %why, "sign-in refused");
            let _ = app
                .audit_auth("anonymous", "auth.refused", json!({ "reason": why }), None)
                .await;
            ApiError::unauthorized("sign-in failed: start again from the sign-in page")
        }
    };
    let Some(pre) = web
        .auth
        .session(&web, &headers)
        .await
        .filter(|s| s.user_key.is_none())
    else {
        return Err(refuse("no pre-login session".to_owned()).await);
    };
    // The pre-login state is single use, whatever happens next.
    if !sessions::delete(&web.app.store, &pre.id_hash)
        .await
        .unwrap_or(false)
    {
        return Err(refuse("pre-login session already used".to_owned()).await);
    }
    if let Some(e) = q.error {
        let err = crate::identity::AuthError::from_callback(&e, q.error_description.as_deref());
        return Err(refuse(err.reason().to_owned()).await);
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return Err(refuse("callback without code or state".to_owned()).await);
    };
    let Ok(PreLogin {
        state: login_state,
        draft,
    }) = serde_json::from_str::<PreLogin>(&pre.data)
    else {
        return Err(refuse("pre-login session holds no sign-in state".to_owned()).await);
    };
    let signin = match identity.oidc.complete(&login_state, &code, &state).await {
        Ok(v) => v,
        Err(e) => return Err(refuse(e.reason().to_owned()).await),
    };
    let user = signin.user;
    let next = Some(signin.return_to);
    let data = serde_json::to_string(&SessionData {
        user: user.clone(),
        id_token: Some(signin.id_token.expose().to_owned()),
        draft,
    })
    .map_err(internal)?;
    let (cookie, _) = web.auth.start_session(&web, Some(&user), &data).await?;
    let mut event = json!({ "method": "oidc", "mfa": user.mfa });
    if !user.acrs.is_empty() {
        event["acrs"] = json!(user.acrs);
    }
    web.app
        .audit_auth(&user.email, "auth.signed_in", event, Some(&user))
        .await?;
    Ok((
        [(header::SET_COOKIE, cookie)],
        Redirect::to(&safe_next(next.as_deref())),
    )
        .into_response())
}

/// `csrf` defaults so that a forged post without it is refused with 403.
#[derive(Deserialize, Default)]
#[serde(default)]
struct LogoutForm {
    csrf: String,
}

async fn logout(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Result<Response, ApiError> {
    let Some(session) = web.auth.session(&web, &headers).await else {
        return Ok(Redirect::to("/signed-out").into_response());
    };
    web.auth.check_form(&headers, &session, &f.csrf)?;
    let _ = sessions::delete(&web.app.store, &session.id_hash).await;
    let data: Option<SessionData> = serde_json::from_str(&session.data).ok();
    if let Some(d) = &data {
        web.app
            .audit_auth(&d.user.email, "auth.signed_out", json!({}), None)
            .await?;
    }
    let end_session = match (&web.auth.mode, &data) {
        (AuthMode::Oidc(identity), Some(d)) => identity.oidc.end_session_url(
            d.id_token.as_deref(),
            Some(&format!("{}/signed-out", web.auth.public_url)),
        ),
        _ => None,
    };
    let clear = [(header::SET_COOKIE, web.auth.clear_cookie())];
    // To the provider by GET from a page of ours: a redirect of this form post to another
    // origin is blocked by `form-action 'self'` (see `handoff`).
    Ok(match end_session {
        Some(url) => (
            clear,
            super::handoff::leaving(
                super::ui::Chrome::anonymous(web.app.dev),
                "Signing you out",
                "Your jit session has ended. Your identity provider now ends its own session, then sends you back here.",
                "Continue to sign out at your identity provider",
                url.as_str(),
            ),
        )
            .into_response(),
        None => (clear, Redirect::to("/signed-out")).into_response(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevTokenBody {
    user: String,
}

async fn dev_token(
    State(web): State<Web>,
    super::api::Body(body): super::api::Body<DevTokenBody>,
) -> Result<Response, ApiError> {
    if !matches!(web.auth.mode, AuthMode::Dev) {
        return Err(ApiError::not_found("not found"));
    }
    let user = demo_user(&body.user).ok_or_else(|| {
        ApiError::bad_request(format!(
            "no demo user `{}`; pick one of {}",
            body.user,
            DEMO_USERS
                .iter()
                .map(|u| u.0)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let token = random_token();
    let now = web.app.now_ms();
    let lifetime_ms = web.auth.absolute_ms;
    let data = serde_json::to_string(&SessionData {
        user: user.clone(),
        id_token: None,
        draft: None,
    })
    .map_err(internal)?;
    sessions::insert(
        &web.app.store,
        &SessionRow {
            id_hash: web.auth.hash_id(&token),
            user_key: Some(user.key.clone()),
            data,
            csrf_token: random_token(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + lifetime_ms,
        },
    )
    .await
    .map_err(internal)?;
    web.app
        .audit_auth(
            &user.email,
            "auth.signed_in",
            json!({ "method": "dev-token" }),
            Some(&user),
        )
        .await?;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": lifetime_ms / 1000,
    }))
    .into_response())
}
