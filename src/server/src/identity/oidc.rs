//! Browser sign-in: the `OpenID Connect` authorization code flow with PKCE (S256).
//!
//! `/login` calls [`OidcClient::begin`], keeps the returned [`LoginState`] in the pre-login
//! server-side session and redirects to the URL; `/auth/callback` takes the state back out
//! (single use) and calls [`OidcClient::complete`] with `code` and `state` from the query.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openidconnect::core::{
    CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreErrorResponseType, CoreIdToken,
    CoreIdTokenVerifier, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use url::Url;

use super::claims::shown;
use super::{AuthError, AuthErrorKind, SetupError, Shared, strict};
use crate::config::{OidcConfig, Secret};
use crate::domain::User;

/// A [`LoginState`] older than this is refused.
pub const LOGIN_STATE_TTL: time::Duration = time::Duration::minutes(10);
/// Clock skew tolerated between the broker and the provider.
const SKEW: i64 = 60;
/// Longest authorization code accepted from the callback.
const MAX_CODE_LEN: usize = 4096;

type WebClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
>;

/// Algorithms accepted on ID tokens (never `none`, never HMAC).
const ID_TOKEN_ALGS: [CoreJwsSigningAlgorithm; 8] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
];

/// What `/login` keeps in the pre-login session until the callback; use it once.
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginState {
    csrf_state: String,
    nonce: String,
    pkce_verifier: String,
    return_to: String,
    /// Unix seconds of [`OidcClient::begin`].
    issued_at: i64,
    /// Step-up: the sign-in must be at most this many seconds old.
    #[serde(default)]
    max_age: Option<u64>,
    /// Step-up: the provider was told `prompt=login`; the authentication must come after `begin`.
    #[serde(default)]
    fresh: bool,
    /// Step-up: this Entra authentication context was asked for and must come back in `acrs`.
    #[serde(default)]
    auth_context: Option<String>,
}

/// What a sign-in must show beyond who the user is (step-up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Require {
    /// `prompt=login`: authenticate now, whatever session the provider has (MFA step-up with
    /// providers that send `amr`).
    pub fresh_login: bool,
    /// `max_age`: an authentication at most this old (checked against `auth_time`).
    pub max_age: Option<Duration>,
    /// An Entra authentication context (`c1`…): asked for with the `claims` parameter
    /// `{"id_token":{"acrs":{"essential":true,"value":"c1"}}}`, and required in the ID token's
    /// `acrs`.
    pub auth_context: Option<String>,
}

impl LoginState {
    /// The local path to go back to after sign-in (already checked: always starts with one `/`).
    pub fn return_to(&self) -> &str {
        &self.return_to
    }

    /// Unix seconds when the sign-in began.
    pub fn issued_at(&self) -> i64 {
        self.issued_at
    }

    /// This sign-in forced a fresh authentication (step-up).
    pub fn is_step_up(&self) -> bool {
        self.max_age.is_some() || self.fresh || self.auth_context.is_some()
    }
}

impl fmt::Debug for LoginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginState")
            .field("return_to", &self.return_to)
            .field("issued_at", &self.issued_at)
            .field("max_age", &self.max_age)
            .field("fresh", &self.fresh)
            .field("auth_context", &self.auth_context)
            .finish_non_exhaustive()
    }
}

/// A completed sign-in.
#[derive(Debug)]
pub struct SignIn {
    /// Who signed in.
    pub user: User,
    /// Where to go now (a local path).
    pub return_to: String,
    /// The raw ID token, only for `id_token_hint` at logout; never log it.
    pub id_token: Secret,
    /// Unix seconds when the ID token expires.
    pub expires_at: i64,
}

/// The browser sign-in client.
pub struct OidcClient {
    shared: Arc<Shared>,
    client: WebClient,
    /// `oidc.client_secret`, set on each code exchange (an `aws-sm:` one may change).
    client_secret: Secret,
    client_id: String,
    scopes: Vec<Scope>,
    /// `oidc.max_token_lifetime`, seconds.
    max_lifetime: i64,
    /// Nonces of sign-ins already completed (hashed), so a [`LoginState`] works once per process.
    used: Mutex<HashMap<[u8; 32], OffsetDateTime>>,
}

impl OidcClient {
    pub(crate) fn new(
        shared: Arc<Shared>,
        config: &OidcConfig,
        redirect_uri: &str,
    ) -> Result<Self, SetupError> {
        let redirect = RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| {
            SetupError::invalid("server.public_url", format!("bad redirect URI: {e}"))
        })?;
        let discovery = &shared.discovery;
        let token_url = discovery
            .token_endpoint()
            .ok_or_else(|| SetupError::Discovery("discovery has no `token_endpoint`".to_owned()))?;
        let client = CoreClient::new(
            ClientId::new(config.client_id.clone()),
            discovery.metadata().issuer().clone(),
            openidconnect::core::CoreJsonWebKeySet::default(),
        )
        .set_client_secret(ClientSecret::new(config.client_secret.expose().to_owned()))
        .set_auth_uri(AuthUrl::from_url(discovery.authorization_endpoint()))
        .set_token_uri(TokenUrl::from_url(token_url))
        .set_redirect_uri(redirect);
        let scopes = config
            .scopes
            .iter()
            .filter(|s| s.as_str() != "openid" && !s.trim().is_empty())
            .map(|s| Scope::new(s.clone()))
            .collect();
        Ok(Self {
            shared,
            client,
            client_secret: config.client_secret.clone(),
            client_id: config.client_id.clone(),
            scopes,
            max_lifetime: super::bearer::max_lifetime(config),
            used: Mutex::new(HashMap::new()),
        })
    }

    /// Starts a sign-in: the provider URL to redirect to, and the state to keep until the
    /// callback. `return_to` must be a local path (anything else becomes `/`). With
    /// `force_login = Some(max_age)` (MFA step-up) the provider is told `prompt=login` and
    /// `max_age`, and [`OidcClient::complete`] insists on a fresh `auth_time`.
    pub fn begin(&self, return_to: &str, force_login: Option<Duration>) -> (Url, LoginState) {
        self.begin_with(
            return_to,
            &Require {
                fresh_login: force_login.is_some(),
                max_age: force_login,
                auth_context: None,
            },
        )
    }

    /// Starts a sign-in that must show what `require` asks (see [`Require`]);
    /// [`OidcClient::complete`] refuses one that does not.
    pub fn begin_with(&self, return_to: &str, require: &Require) -> (Url, LoginState) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = self
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(self.scopes.iter().cloned())
            .set_pkce_challenge(challenge);
        if require.fresh_login {
            request = request.add_prompt(CoreAuthPrompt::Login);
        }
        if let Some(max_age) = require.max_age {
            request = request.set_max_age(max_age);
        }
        let claims = require.auth_context.as_ref().map(|context| {
            serde_json::json!({ "id_token": { "acrs": { "essential": true, "value": context } } })
                .to_string()
        });
        if let Some(claims) = &claims {
            request = request.add_extra_param("claims", claims);
        }
        let (url, csrf, nonce) = request.url();
        let state = LoginState {
            csrf_state: csrf.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            return_to: crate::domain::local_path(return_to),
            issued_at: self.shared.clock.now().unix_timestamp(),
            max_age: require.max_age.map(|d| d.as_secs()),
            fresh: require.fresh_login,
            auth_context: require.auth_context.clone(),
        };
        (url, state)
    }

    /// Finishes a sign-in from the callback's `code` and `state`: checks the state, exchanges the
    /// code with the PKCE verifier, verifies the ID token (signature, `iss`, `aud`, `exp`,
    /// `nonce`), maps its claims and resolves group overage.
    pub async fn complete(
        &self,
        state: &LoginState,
        code: &str,
        returned_state: &str,
    ) -> Result<SignIn, AuthError> {
        if !constant_time_eq(state.csrf_state.as_bytes(), returned_state.as_bytes()) {
            return Err(AuthError::sign_in("`state` does not match the login state"));
        }
        let now = self.shared.clock.now();
        let age = now.unix_timestamp() - state.issued_at;
        if age > LOGIN_STATE_TTL.whole_seconds() || age < -SKEW {
            return Err(AuthError::sign_in(format!(
                "login state is {age} s old (limit {} s)",
                LOGIN_STATE_TTL.whole_seconds()
            )));
        }
        if code.is_empty() || code.len() > MAX_CODE_LEN {
            return Err(AuthError::sign_in(
                "authorization code is empty or too long",
            ));
        }
        self.consume(state, now)?;

        let exchange = || async {
            self.client
                .clone()
                .set_client_secret(ClientSecret::new(self.client_secret.expose().to_owned()))
                .exchange_code(AuthorizationCode::new(code.to_owned()))
                .set_pkce_verifier(PkceCodeVerifier::new(state.pkce_verifier.clone()))
                .request_async(&self.shared.http)
                .await
        };
        let response = match exchange().await {
            // A client secret from Secrets Manager may have been rotated: re-read it once
            // (the provider checks the client before it spends the code).
            Err(RequestTokenError::ServerResponse(r))
                if *r.error() == CoreErrorResponseType::InvalidClient
                    && self.client_secret.refresh().await.unwrap_or(false) =>
            {
                tracing::info!("token endpoint refused the client secret; re-read, asking again");
                exchange().await
            }
            other => other,
        };
        let response = response.map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => AuthError::sign_in(format!(
                "token endpoint refused the code: {}",
                shown(r.error().as_ref())
            )),
            RequestTokenError::Request(e) => AuthError::unavailable(format!("token endpoint: {e}")),
            // the path only: serde's message may quote values, and the values are tokens
            RequestTokenError::Parse(e, _) => {
                AuthError::sign_in(format!("token response does not parse at `{}`", e.path()))
            }
            RequestTokenError::Other(e) => {
                AuthError::sign_in(format!("token endpoint: {}", shown(&e)))
            }
        })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| AuthError::sign_in("token response has no ID token"))?;
        let raw = id_token.to_string();
        let claims = self.verify_id_token(id_token, &raw, state).await?;
        check_step_up(state, &claims, now.unix_timestamp())
            .map_err(|e| e.into_kind(AuthErrorKind::SignInFailed))?;
        let user = self
            .shared
            .user(&claims)
            .await
            .map_err(|e| e.into_kind(AuthErrorKind::SignInFailed))?;
        Ok(SignIn {
            user,
            return_to: state.return_to.clone(),
            id_token: Secret::new(raw),
            expires_at: claims
                .get("exp")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or_default(),
        })
    }

    /// RP-initiated logout: where to send the browser after the local session is gone, when the
    /// provider offers it. `post_logout_redirect` must be registered with the provider.
    pub fn end_session_url(
        &self,
        id_token_hint: Option<&str>,
        post_logout_redirect: Option<&str>,
    ) -> Option<Url> {
        let mut url = self.shared.discovery.end_session_endpoint()?.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("client_id", &self.client_id);
            if let Some(hint) = id_token_hint {
                query.append_pair("id_token_hint", hint);
            }
            if let Some(redirect) = post_logout_redirect {
                query.append_pair("post_logout_redirect_uri", redirect);
            }
        }
        Some(url)
    }

    /// Marks the login state used; a second completion with it is refused.
    fn consume(&self, state: &LoginState, now: OffsetDateTime) -> Result<(), AuthError> {
        let digest: [u8; 32] = Sha256::digest(state.nonce.as_bytes()).into();
        let mut used = match self.used.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        used.retain(|_, at| now - *at <= LOGIN_STATE_TTL + time::Duration::seconds(SKEW));
        if used.insert(digest, now).is_some() {
            return Err(AuthError::sign_in("login state was already used (replay)"));
        }
        Ok(())
    }

    async fn verify_id_token(
        &self,
        id_token: &CoreIdToken,
        raw: &str,
        state: &LoginState,
    ) -> Result<serde_json::Map<String, serde_json::Value>, AuthError> {
        // Make sure the signing key is known: an unknown `kid` refreshes the keys (rate-limited).
        let header = jsonwebtoken::decode_header(raw)
            .map_err(|e| AuthError::sign_in(format!("ID token header: {e}")))?;
        if let Some(kid) = header.kid.as_deref()
            && self.shared.keys.find(kid).await.is_err()
        {
            return Err(AuthError::sign_in(format!(
                "ID token signed with unknown key {}",
                shown(kid)
            )));
        }
        let issuer = self.shared.discovery.metadata().issuer().clone();
        let verifier = CoreIdTokenVerifier::new_public_client(
            ClientId::new(self.client_id.clone()),
            issuer,
            self.shared.keys.oidc_keys(),
        )
        .set_allowed_algs(ID_TOKEN_ALGS);
        id_token
            .claims(&verifier, &Nonce::new(state.nonce.clone()))
            .map_err(|e| AuthError::sign_in(format!("ID token refused: {e}")))?;
        // Verified above; now read the header and every claim strictly (no member named twice,
        // exact types) for the type check, the lifetime and the configurable mapping.
        let strict_id_token = || -> Result<_, AuthError> {
            let mut parts = raw.split('.');
            let (Some(header), Some(payload)) = (parts.next(), parts.next()) else {
                return Err(AuthError::invalid("ID token is not a compact JWS"));
            };
            let header = strict::decode_part(header, "header")?;
            match strict::string(&header, "typ")? {
                None => {}
                Some(typ) if typ.eq_ignore_ascii_case("JWT") => {}
                Some(typ) => {
                    return Err(AuthError::invalid(format!(
                        "ID token type {} is not `JWT`",
                        shown(typ)
                    )));
                }
            }
            let payload = strict::decode_part(payload, "payload")?;
            strict::check_lifetime(
                &payload,
                self.shared.clock.now().unix_timestamp(),
                self.max_lifetime,
            )?;
            Ok(payload)
        };
        strict_id_token().map_err(|e| e.into_kind(AuthErrorKind::SignInFailed))
    }
}

/// Step-up: after `prompt=login` the provider must have authenticated the user after `begin`;
/// with `max_age`, within it; with an authentication context, the ID token's `acrs` lists it.
fn check_step_up(
    state: &LoginState,
    claims: &serde_json::Map<String, serde_json::Value>,
    now: i64,
) -> Result<(), AuthError> {
    if state.fresh || state.max_age.is_some() {
        let auth_time = strict::numeric_date(claims, "auth_time")?
            .ok_or_else(|| AuthError::sign_in("step-up sign-in has no `auth_time`"))?;
        if state.fresh && auth_time < state.issued_at - SKEW {
            return Err(AuthError::sign_in(
                "step-up: the provider did not authenticate the user again (`auth_time` predates the sign-in)",
            ));
        }
        if let Some(max_age) = state.max_age {
            let max_age = i64::try_from(max_age).unwrap_or(i64::MAX);
            if now.saturating_sub(auth_time) > max_age.saturating_add(SKEW) {
                return Err(AuthError::sign_in(
                    "step-up: `auth_time` is older than `max_age`",
                ));
            }
        }
    }
    if let Some(context) = &state.auth_context {
        let granted = strict::strings(claims, "acrs")?.unwrap_or_default();
        if !granted.contains(&context.as_str()) {
            return Err(AuthError::sign_in(format!(
                "step-up: the provider did not grant authentication context `{context}` (`acrs` {})",
                shown(&granted.join(" "))
            )));
        }
    }
    Ok(())
}

/// Equal inputs, compared without an early exit (hashes first, so lengths leak nothing either).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn login_state_debug_hides_secrets() {
        let s = LoginState {
            csrf_state: "csrf-secret".to_owned(),
            nonce: "nonce-secret".to_owned(),
            pkce_verifier: "verifier-secret".to_owned(),
            return_to: "/".to_owned(),
            issued_at: 1,
            max_age: None,
            fresh: false,
            auth_context: None,
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("secret"), "{shown}");
        let json = serde_json::to_string(&s).unwrap();
        let back: LoginState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.pkce_verifier, "verifier-secret");
    }
}
