//! Identity: browser sign-in against the `OpenID Connect` provider (Entra ID), API bearer tokens, and the
//! settings `jit login` needs.
//!
//! Built once at start with [`Identity::discover`]. The HTTP layer then calls
//! [`oidc::OidcClient::begin`] (`/login`) and [`oidc::OidcClient::complete`] (`/auth/callback`),
//! [`oidc::OidcClient::end_session_url`] (`/logout`), [`bearer::BearerValidator::validate`]
//! (`Authorization: Bearer` on `/api/v1`) and [`Identity::cli_config`] (`GET /api/v1/cli-config`).
//! Every refusal is an [`AuthError`]: a fixed public message for the response, an internal
//! reason for the log (never a token).

pub mod bearer;
mod claims;
mod client;
mod discovery;
mod keys;
pub mod oidc;
mod strict;

use std::sync::Arc;

use thiserror::Error;

pub use claims::{GroupLookupError, GroupResolver};
pub use discovery::Discovery;
pub use keys::{ALLOWED_ALGORITHMS, MAX_KEY_AGE, MIN_REFRESH_INTERVAL};

use crate::clock::Clock;
use crate::config::{ClaimMapping, OidcConfig};

/// What kind of refusal an [`AuthError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthErrorKind {
    /// A bearer token was refused (HTTP 401).
    InvalidToken,
    /// The browser sign-in callback was refused (HTTP 401; send the user to `/login` again).
    SignInFailed,
    /// The identity provider or the group lookup could not be reached (HTTP 503).
    Unavailable,
}

/// A refused sign-in or token. `Display` is the public message; [`AuthError::reason`] is for logs.
#[derive(Debug, Error)]
#[error("{}", self.public_message())]
pub struct AuthError {
    kind: AuthErrorKind,
    reason: String,
}

impl AuthError {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Self {
            kind: AuthErrorKind::InvalidToken,
            reason: reason.into(),
        }
    }

    pub(crate) fn sign_in(reason: impl Into<String>) -> Self {
        Self {
            kind: AuthErrorKind::SignInFailed,
            reason: reason.into(),
        }
    }

    pub(crate) fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            kind: AuthErrorKind::Unavailable,
            reason: reason.into(),
        }
    }

    /// The provider redirected back with `error=…` instead of a code (e.g. the user cancelled).
    pub fn from_callback(error: &str, description: Option<&str>) -> Self {
        Self::sign_in(format!(
            "identity provider answered {}{}",
            claims::shown(error),
            description
                .map(|d| format!(": {}", claims::shown(d)))
                .unwrap_or_default()
        ))
    }

    /// Same reason, another kind (claim mapping errors become sign-in failures in the browser flow).
    fn into_kind(self, kind: AuthErrorKind) -> Self {
        match self.kind {
            AuthErrorKind::Unavailable => self,
            _ => Self { kind, ..self },
        }
    }

    /// The kind of refusal.
    pub fn kind(&self) -> AuthErrorKind {
        self.kind
    }

    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self.kind {
            AuthErrorKind::InvalidToken | AuthErrorKind::SignInFailed => 401,
            AuthErrorKind::Unavailable => 503,
        }
    }

    /// A message safe to show to anyone.
    pub fn public_message(&self) -> &'static str {
        match self.kind {
            AuthErrorKind::InvalidToken => "the access token is invalid or expired",
            AuthErrorKind::SignInFailed => "sign-in failed, please sign in again",
            AuthErrorKind::Unavailable => {
                "the identity provider is unavailable, please try again later"
            }
        }
    }

    /// Why, for the log: claim names, attacker-supplied values escaped and cut short, never a token.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// The identity layer could not be set up (at start; the server refuses to run).
#[derive(Debug, Error)]
pub enum SetupError {
    /// A configuration value is not usable.
    #[error("config: `{key}`: {problem}")]
    Invalid {
        /// Dotted key, e.g. `oidc.issuer`.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// Discovery or the first key fetch failed.
    #[error("config: `oidc.issuer`: {0}")]
    Discovery(String),
}

impl SetupError {
    pub(crate) fn invalid(key: &'static str, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            problem: problem.into(),
        }
    }
}

/// What the sign-in and the bearer path share.
pub(crate) struct Shared {
    discovery: Discovery,
    keys: keys::KeyStore,
    http: client::IdpHttp,
    mapping: ClaimMapping,
    tenant: Option<String>,
    clock: Arc<dyn Clock>,
    groups: Option<claims::GroupCache>,
}

impl Shared {
    /// Claims → user, then group overage through the resolver.
    async fn user(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<crate::domain::User, AuthError> {
        let mapped = claims::map_user(claims, &self.mapping, self.tenant.as_deref())?;
        claims::resolve_overage(mapped, self.groups.as_ref()).await
    }
}

/// The identity layer, built once at start.
pub struct Identity {
    /// Browser sign-in.
    pub oidc: oidc::OidcClient,
    /// API bearer tokens.
    pub bearer: bearer::BearerValidator,
    shared: Arc<Shared>,
    config: OidcConfig,
}

impl Identity {
    /// Reads discovery and the signing keys from `config.issuer`.
    ///
    /// `redirect_uri` is the broker's callback (`{server.public_url}/auth/callback`), registered
    /// with the provider. `groups` resolves group overage (the Microsoft Graph helper); without
    /// it, a user whose token has an overage marker cannot sign in.
    pub async fn discover(
        config: &OidcConfig,
        redirect_uri: &str,
        clock: Arc<dyn Clock>,
        groups: Option<Arc<dyn GroupResolver>>,
    ) -> Result<Self, SetupError> {
        if config.client_id.trim().is_empty() {
            return Err(SetupError::invalid("oidc.client_id", "must not be empty"));
        }
        if config.api_audience.trim().is_empty() {
            return Err(SetupError::invalid(
                "oidc.api_audience",
                "must not be empty",
            ));
        }
        if config.claims.user_id.trim().is_empty() {
            return Err(SetupError::invalid(
                "oidc.claims.user_id",
                "must not be empty",
            ));
        }
        let tenant = discovery::pinned_tenant(config)?;
        check_tenant_pinning(config, tenant.as_deref())?;
        let http = client::IdpHttp::new().map_err(|e| SetupError::Discovery(e.to_string()))?;
        let discovery = Discovery::fetch(config, &http).await?;
        let keys = keys::KeyStore::fetch(http.clone(), discovery.jwks_uri(), Arc::clone(&clock))
            .await
            .map_err(|e| SetupError::Discovery(format!("signing keys: {e}")))?;
        let shared = Arc::new(Shared {
            discovery,
            keys,
            http,
            mapping: config.claims.clone(),
            tenant,
            groups: groups.map(|g| claims::GroupCache::new(g, Arc::clone(&clock))),
            clock,
        });
        Ok(Self {
            oidc: oidc::OidcClient::new(Arc::clone(&shared), config, redirect_uri)?,
            bearer: bearer::BearerValidator::new(Arc::clone(&shared), config)?,
            shared,
            config: config.clone(),
        })
    }

    /// What discovery found.
    pub fn discovery(&self) -> &Discovery {
        &self.shared.discovery
    }

    /// Usable signing keys of the provider, refetched when stale (see [`keys::KeyStore::usable_keys`]).
    pub async fn signing_keys(&self) -> usize {
        self.shared.keys.usable_keys().await
    }

    /// The pinned tenant, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.shared.tenant.as_deref()
    }

    /// `GET /api/v1/cli-config`; `None` when `oidc.cli_client_id` is not set.
    pub fn cli_config(&self) -> Option<jit_api::CliConfig> {
        cli_config(&self.config, &self.shared.discovery)
    }
}

/// A production broker pins a tenant unless told in so many words not to: without a pin, any
/// tenant's users (of a multi-tenant provider) would sign in.
fn check_tenant_pinning(config: &OidcConfig, tenant: Option<&str>) -> Result<(), SetupError> {
    match (tenant, config.allow_any_tenant) {
        (Some(_), false) if config.claims.tenant.is_empty() => Err(SetupError::invalid(
            "oidc.claims.tenant",
            "must name the tenant claim (`tid`) when a tenant is pinned",
        )),
        (Some(_), false) => Ok(()),
        (Some(tenant), true) => Err(SetupError::invalid(
            "oidc.allow_any_tenant",
            format!(
                "is true, but tenant `{tenant}` is pinned (by `oidc.tenant_id` or the Entra issuer): remove one of them"
            ),
        )),
        (None, false) => Err(SetupError::invalid(
            "oidc.tenant_id",
            "no tenant is pinned: set it to your directory's tenant id (Entra: Overview → Tenant ID), or, for a provider without tenants, set `oidc.allow_any_tenant = true`",
        )),
        (None, true) => {
            tracing::warn!(
                "`oidc.allow_any_tenant` is true: tokens of any tenant are accepted (their `{}` is not checked)",
                config.claims.tenant
            );
            Ok(())
        }
    }
}

/// Scopes `jit login` asks for when `oidc.cli_scopes` is empty.
const DEFAULT_CLI_SCOPES: [&str; 3] = ["openid", "profile", "offline_access"];

/// What `jit login` needs: issuer, the public client, its scopes, the device and token endpoints.
/// `None` when `oidc.cli_client_id` is not set (CLI sign-in is not offered).
pub fn cli_config(config: &OidcConfig, discovery: &Discovery) -> Option<jit_api::CliConfig> {
    let client_id = config
        .cli_client_id
        .as_deref()
        .map(str::trim)
        .filter(|id| !id.is_empty())?;
    let scopes = if config.cli_scopes.is_empty() {
        DEFAULT_CLI_SCOPES.map(str::to_owned).to_vec()
    } else {
        config.cli_scopes.clone()
    };
    Some(jit_api::CliConfig {
        issuer: discovery.issuer().to_owned(),
        client_id: client_id.to_owned(),
        scopes,
        device_authorization_endpoint: discovery
            .device_authorization_endpoint()
            .map(ToString::to_string),
        token_endpoint: discovery.token_endpoint().map(|u| u.to_string()),
        dev: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_messages_never_carry_the_reason() {
        let e = AuthError::invalid("signature of eyJhbGciOi does not verify");
        assert_eq!(e.to_string(), "the access token is invalid or expired");
        assert_eq!(e.status(), 401);
        assert!(e.reason().contains("signature"));
        assert_eq!(AuthError::unavailable("x").status(), 503);
        let e = AuthError::from_callback("access_denied", Some("user said \"no\""));
        assert_eq!(e.kind(), AuthErrorKind::SignInFailed);
        assert!(e.reason().contains("access_denied"), "{}", e.reason());
    }
}
