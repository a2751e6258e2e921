//! Identity against the real `OpenID Connect` provider (`tests/peers/idp/idp.mjs`, at `JIT_TEST_IDP_URL`):
//! browser sign-in driven by a scripted cookie-jar browser, the device authorization grant, group
//! overage through a Graph-shaped responder, and a corpus of forged and misused tokens. Forged
//! tokens are signed with keys made at test time (`openssl genpkey`) and served by a stub issuer
//! whose JWKS the test controls and counts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly, like the tests"
)]

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jit_server::clock::{Clock, ManualClock, SystemClock};
use jit_server::config::{ClaimMapping, OidcConfig, Secret};
use jit_server::identity::oidc::LoginState;
use jit_server::identity::{AuthError, AuthErrorKind, GroupLookupError, GroupResolver, Identity};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use crate::support::peer_env;

pub(crate) mod browser;
mod forged;
mod overage;
mod signin;
mod stub;

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const OTHER_TENANT: &str = "99999999-8888-7777-6666-555555555555";
const API: &str = "api://jit-broker";
const IDP_KID: &str = "test-rs256-1";

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The fixture's issuer (no trailing slash, as its discovery writes it).
fn idp() -> String {
    peer_env("JIT_TEST_IDP_URL")
        .trim_end_matches('/')
        .to_owned()
}

/// The fixture's `oid` for a login: a GUID made from SHA-256 of the login.
fn oid_for(login: &str) -> String {
    let h = hex::encode(Sha256::digest(login.as_bytes()));
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn config(issuer: &str) -> OidcConfig {
    OidcConfig {
        issuer: issuer.to_owned(),
        client_id: "jit-web".to_owned(),
        client_secret: Secret::new("jit-web-secret"),
        scopes: ["openid", "profile", "email", "groups"]
            .map(str::to_owned)
            .to_vec(),
        api_audience: API.to_owned(),
        cli_client_id: Some("jit-cli".to_owned()),
        cli_scopes: [
            "openid",
            "profile",
            "email",
            "groups",
            "offline_access",
            "access",
        ]
        .map(str::to_owned)
        .to_vec(),
        required_scope: Some("access".to_owned()),
        tenant_id: Some(TENANT.to_owned()),
        claims: ClaimMapping::default(),
        mfa_max_age: "1h".parse().unwrap(),
        allow_any_tenant: false,
        max_token_lifetime: "24h".parse().unwrap(),
    }
}

/// A broker callback on a port nobody listens on: the browser stops at the redirect anyway.
fn redirect_uri() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/auth/callback")
}

async fn fixture_identity(
    clock: Arc<dyn Clock>,
    groups: Option<Arc<dyn GroupResolver>>,
) -> (Identity, String) {
    let redirect = redirect_uri();
    let identity = Identity::discover(&config(&idp()), &redirect, clock, groups)
        .await
        .expect("discovery against the test IdP");
    (identity, redirect)
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64json(v: &Value) -> String {
    b64(v.to_string())
}

fn payload_of(token: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}
