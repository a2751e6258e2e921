//! `OpenID Connect` discovery (`/.well-known/openid-configuration`) and tenant pinning.

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{AdditionalProviderMetadata, IssuerUrl, ProviderMetadata};
use serde::{Deserialize, Serialize};
use url::Url;

use super::SetupError;
use super::client::IdpHttp;
use crate::config::OidcConfig;

/// Discovery fields the core metadata type does not carry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtraMetadata {
    /// RP-initiated logout (`OpenID Connect` RP-Initiated Logout 1.0).
    #[serde(default)]
    pub end_session_endpoint: Option<Url>,
    /// RFC 8628 device authorization endpoint (`jit login`).
    #[serde(default)]
    pub device_authorization_endpoint: Option<Url>,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

/// The provider metadata with [`ExtraMetadata`].
pub type JitProviderMetadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// What discovery told us about the identity provider.
#[derive(Debug, Clone)]
pub struct Discovery {
    metadata: JitProviderMetadata,
}

impl Discovery {
    /// Reads `{issuer}/.well-known/openid-configuration` and checks that it names the same issuer.
    pub(crate) async fn fetch(config: &OidcConfig, http: &IdpHttp) -> Result<Self, SetupError> {
        let issuer = IssuerUrl::new(config.issuer.clone())
            .map_err(|e| SetupError::invalid("oidc.issuer", format!("not a URL: {e}")))?;
        let url = issuer
            .join(".well-known/openid-configuration")
            .map_err(|e| SetupError::invalid("oidc.issuer", format!("not a URL: {e}")))?;
        let document = http
            .get_json(&url)
            .await
            .map_err(|e| SetupError::Discovery(e.to_string()))?;
        Self::from_document(config, document)
    }

    /// Parses a discovery document (also used by tests with hand-made documents).
    pub(crate) fn from_document(
        config: &OidcConfig,
        document: serde_json::Value,
    ) -> Result<Self, SetupError> {
        let metadata: JitProviderMetadata = serde_json::from_value(document).map_err(|e| {
            SetupError::Discovery(format!("discovery document does not parse: {e}"))
        })?;
        if metadata.issuer().as_str() != config.issuer {
            return Err(SetupError::Discovery(format!(
                "discovery names issuer `{}`, configured is `{}`",
                metadata.issuer().as_str(),
                config.issuer
            )));
        }
        let discovery = Self { metadata };
        for (name, url) in [
            (
                "authorization_endpoint",
                Some(discovery.authorization_endpoint()),
            ),
            ("token_endpoint", discovery.token_endpoint()),
            ("jwks_uri", Some(discovery.jwks_uri())),
        ] {
            let Some(url) = url else {
                return Err(SetupError::Discovery(format!("discovery has no `{name}`")));
            };
            check_endpoint(name, &url, &config.issuer)?;
        }
        Ok(discovery)
    }

    /// The issuer, exactly as the provider writes it in `iss`.
    pub fn issuer(&self) -> &str {
        self.metadata.issuer().as_str()
    }

    /// Where browsers are sent to sign in.
    pub fn authorization_endpoint(&self) -> Url {
        self.metadata.authorization_endpoint().url().clone()
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> Option<Url> {
        self.metadata.token_endpoint().map(|u| u.url().clone())
    }

    /// The signing keys.
    pub fn jwks_uri(&self) -> Url {
        self.metadata.jwks_uri().url().clone()
    }

    /// RP-initiated logout, when the provider offers it.
    pub fn end_session_endpoint(&self) -> Option<&Url> {
        self.metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()
    }

    /// RFC 8628 device authorization, when the provider offers it.
    pub fn device_authorization_endpoint(&self) -> Option<&Url> {
        self.metadata
            .additional_metadata()
            .device_authorization_endpoint
            .as_ref()
    }

    pub(crate) fn metadata(&self) -> &JitProviderMetadata {
        &self.metadata
    }
}

/// Endpoints must be https, except on loopback when the issuer itself is plain http there.
fn check_endpoint(name: &str, url: &Url, issuer: &str) -> Result<(), SetupError> {
    let issuer_is_http = issuer.starts_with("http://");
    match url.scheme() {
        "https" => Ok(()),
        "http" if issuer_is_http && is_loopback(url) => Ok(()),
        _ => Err(SetupError::Discovery(format!(
            "discovery `{name}` `{url}` must be https"
        ))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Entra sign-in hosts (public and national clouds).
const ENTRA_HOSTS: [&str; 4] = [
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
];

/// The tenant whose tokens are accepted: `oidc.tenant_id`, or the `{tid}` of an Entra v2.0
/// issuer `https://login.microsoftonline.com/{tid}/v2.0`; `None` for other providers.
pub(crate) fn pinned_tenant(config: &OidcConfig) -> Result<Option<String>, SetupError> {
    let from_issuer = entra_tenant(&config.issuer)?;
    match (&config.tenant_id, from_issuer) {
        (Some(configured), _) if configured.trim().is_empty() => Err(SetupError::invalid(
            "oidc.tenant_id",
            "must not be empty when set",
        )),
        (Some(configured), Some(derived)) if !configured.eq_ignore_ascii_case(&derived) => {
            Err(SetupError::invalid(
                "oidc.tenant_id",
                format!("`{configured}` is not the tenant of the issuer (`{derived}`)"),
            ))
        }
        (Some(configured), _) => Ok(Some(configured.clone())),
        (None, derived) => Ok(derived),
    }
}

/// `Some(tid)` for an Entra v2.0 issuer, `None` for other issuers; multi-tenant Entra issuers
/// (`common`, `organizations`, `consumers`) are refused: tokens of any tenant would pass.
fn entra_tenant(issuer: &str) -> Result<Option<String>, SetupError> {
    let Ok(url) = Url::parse(issuer) else {
        return Ok(None);
    };
    let Some(host) = url.host_str() else {
        return Ok(None);
    };
    if !ENTRA_HOSTS.contains(&host) {
        return Ok(None);
    }
    let segments: Vec<&str> = url.path().trim_matches('/').split('/').collect();
    match segments.as_slice() {
        [tenant, "v2.0"] => {
            if ["common", "organizations", "consumers"]
                .contains(&tenant.to_ascii_lowercase().as_str())
            {
                Err(SetupError::invalid(
                    "oidc.issuer",
                    format!(
                        "multi-tenant issuer `{tenant}` is not supported: use https://{host}/<tenant-id>/v2.0"
                    ),
                ))
            } else {
                Ok(Some((*tenant).to_owned()))
            }
        }
        _ => Err(SetupError::invalid(
            "oidc.issuer",
            format!("an Entra issuer must look like https://{host}/<tenant-id>/v2.0"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClaimMapping, Secret};

    pub(crate) fn config(issuer: &str) -> OidcConfig {
        OidcConfig {
            issuer: issuer.to_owned(),
            client_id: "jit-web".to_owned(),
            client_secret: Secret::new("s"),
            scopes: vec!["openid".to_owned()],
            api_audience: "api://jit-broker".to_owned(),
            cli_client_id: None,
            cli_scopes: vec![],
            required_scope: None,
            tenant_id: None,
            claims: ClaimMapping::default(),
            mfa_max_age: crate::config::ConfigDuration::from_secs(3600),
            allow_any_tenant: false,
            max_token_lifetime: crate::config::ConfigDuration::from_secs(86_400),
        }
    }

    const TID: &str = "11111111-2222-3333-4444-555555555555";

    #[test]
    fn tenant_comes_from_an_entra_issuer() {
        let c = config(&format!("https://login.microsoftonline.com/{TID}/v2.0"));
        assert_eq!(pinned_tenant(&c).unwrap().as_deref(), Some(TID));
        let c = config("http://127.0.0.1:4000");
        assert_eq!(pinned_tenant(&c).unwrap(), None);
        let mut c = config("http://127.0.0.1:4000");
        c.tenant_id = Some(TID.to_owned());
        assert_eq!(pinned_tenant(&c).unwrap().as_deref(), Some(TID));
    }

    #[test]
    fn multi_tenant_and_mismatched_tenants_are_refused() {
        for issuer in [
            "https://login.microsoftonline.com/common/v2.0",
            "https://login.microsoftonline.com/organizations/v2.0",
            "https://login.microsoftonline.com/Consumers/v2.0",
            "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555",
        ] {
            let e = pinned_tenant(&config(issuer)).unwrap_err().to_string();
            assert!(e.contains("oidc.issuer"), "{e}");
        }
        let mut c = config(&format!("https://login.microsoftonline.com/{TID}/v2.0"));
        c.tenant_id = Some("99999999-8888-7777-6666-555555555555".to_owned());
        let e = pinned_tenant(&c).unwrap_err().to_string();
        assert!(e.contains("oidc.tenant_id"), "{e}");
    }

    fn document(issuer: &str, endpoint_base: &str) -> serde_json::Value {
        serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{endpoint_base}/auth"),
            "token_endpoint": format!("{endpoint_base}/token"),
            "jwks_uri": format!("{endpoint_base}/jwks"),
            "end_session_endpoint": format!("{endpoint_base}/session/end"),
            "device_authorization_endpoint": format!("{endpoint_base}/device/auth"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
    }

    #[test]
    fn discovery_reads_extra_endpoints_and_checks_the_issuer() {
        let c = config("http://127.0.0.1:4000");
        let d = Discovery::from_document(
            &c,
            document("http://127.0.0.1:4000", "http://127.0.0.1:4000"),
        )
        .unwrap();
        assert_eq!(
            d.device_authorization_endpoint().unwrap().as_str(),
            "http://127.0.0.1:4000/device/auth"
        );
        assert_eq!(
            d.end_session_endpoint().unwrap().as_str(),
            "http://127.0.0.1:4000/session/end"
        );
        let e = Discovery::from_document(
            &c,
            document("http://127.0.0.1:4001", "http://127.0.0.1:4000"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("issuer"), "{e}");
    }

    #[test]
    fn plain_http_endpoints_only_on_loopback() {
        let c = config("https://idp.example");
        let e = Discovery::from_document(&c, document("https://idp.example", "http://idp.example"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("https"), "{e}");
        let c = config("http://127.0.0.1:4000");
        assert!(
            Discovery::from_document(&c, document("http://127.0.0.1:4000", "http://evil.example"))
                .is_err()
        );
    }
}
