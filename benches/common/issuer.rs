//! A stand-in OpenID provider on loopback, so the broker checks API calls as
//! in production: RS256 access tokens verified by `identity::bearer` against
//! the provider's JWKS (fetched once at start, then cached). The signing key
//! is made at run time with `openssl genpkey`; nothing is stored.

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use jit_server::clock::SystemClock;
use jit_server::config::{ClaimMapping, OidcConfig, Secret};
use jit_server::identity::Identity;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The API's audience in the broker's `[oidc]` section.
const API: &str = "api://jit-bench";
/// The tenant the broker pins.
const TENANT: &str = "11111111-2222-3333-4444-555555555555";
/// The key's id in the JWKS and in token headers.
const KID: &str = "bench-1";

/// A running stand-in provider and its signing key.
pub struct Issuer {
    /// Its issuer URL (`http://127.0.0.1:PORT`).
    pub url: String,
    key: EncodingKey,
}

impl Issuer {
    /// Makes a 2048-bit RSA key and serves discovery and the JWKS.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("key.pem");
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&path)
            .output()
            .expect("openssl must be installed to make the benchmark's signing key");
        assert!(
            out.status.success(),
            "openssl genpkey: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = EncodingKey::from_rsa_pem(&std::fs::read(&path).expect("read the key"))
            .expect("an RSA key");
        let mut jwk = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).expect("its JWK"),
        )
        .expect("JWK as JSON");
        jwk["kid"] = json!(KID);
        jwk["use"] = json!("sig");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let discovery = json!({
            "issuer": url,
            "authorization_endpoint": format!("{url}/auth"),
            "token_endpoint": format!("{url}/token"),
            "jwks_uri": format!("{url}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        let jwks = json!({ "keys": [jwk] });
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route("/jwks", get(move || async move { Json(jwks) }));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { url, key }
    }

    /// The broker's `[oidc]` section for this provider.
    pub fn config(&self) -> OidcConfig {
        OidcConfig {
            issuer: self.url.clone(),
            client_id: "jit-bench-web".to_owned(),
            client_secret: Secret::new("not-used-by-the-benchmark"),
            scopes: ["openid", "profile", "email"].map(str::to_owned).to_vec(),
            api_audience: API.to_owned(),
            cli_client_id: None,
            cli_scopes: Vec::new(),
            required_scope: Some("access".to_owned()),
            tenant_id: Some(TENANT.to_owned()),
            claims: ClaimMapping::default(),
            mfa_max_age: jit_server::config::ConfigDuration::from_secs(3600),
            allow_any_tenant: false,
            max_token_lifetime: jit_server::config::ConfigDuration::from_secs(86_400),
        }
    }

    /// The broker's identity layer, discovered from this provider as at start-up.
    pub async fn identity(&self, public_url: &str) -> Identity {
        Identity::discover(
            &self.config(),
            &format!("{public_url}/auth/callback"),
            Arc::new(SystemClock),
            None,
        )
        .await
        .expect("discovery against the benchmark's provider")
    }

    /// An access token for user `n`, a member of `groups`, valid for an hour.
    pub fn token(&self, n: u64, groups: &[&str]) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims: Value = json!({
            "iss": self.url, "aud": API, "exp": now + 3600, "iat": now - 5, "nbf": now - 5,
            "oid": format!("00000000-0000-0000-0000-{n:012}"), "tid": TENANT, "scp": "access",
            "name": format!("Bench User {n}"), "preferred_username": format!("bench-{n}@example.com"),
            "groups": groups, "ver": "2.0",
        });
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(KID.to_owned());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign a token")
    }
}
