//! Identity against the real OpenID provider (`tests/peers/idp/idp.mjs`, at `JIT_TEST_IDP_URL`):
//! browser sign-in driven by a scripted cookie-jar browser, the device authorization grant, group
//! overage through a Graph-shaped responder, and a corpus of forged and misused tokens. Forged
//! tokens are signed with keys made at test time (`openssl genpkey`) and served by a stub issuer
//! whose JWKS the test controls and counts.

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
        mfa_max_age: "1h".to_owned(),
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

// ---------------------------------------------------------------------------------------------
// A scripted browser: no redirects followed, a plain cookie jar, the fixture's login form.

struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

struct Page {
    status: u16,
    location: Option<Url>,
    body: String,
}

struct Walk {
    /// The URL the walk stopped at (the redirect URI, or a final page).
    end: Url,
    /// A login form was shown (the provider asked for credentials).
    login_form: bool,
    body: String,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    async fn request(&mut self, url: &Url, form: Option<&[(&str, &str)]>) -> Page {
        let mut request = match form {
            Some(form) => self.http.post(url.clone()).form(form),
            None => self.http.get(url.clone()),
        };
        if !self.cookies.is_empty() {
            let cookie = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        for value in response.headers().get_all("set-cookie") {
            let value = value.to_str().unwrap();
            let pair = value.split(';').next().unwrap();
            let (name, v) = pair.split_once('=').unwrap();
            let expired = value
                .to_ascii_lowercase()
                .contains("expires=thu, 01 jan 1970");
            if v.is_empty() || expired {
                self.cookies.remove(name.trim());
            } else {
                self.cookies.insert(name.trim().to_owned(), v.to_owned());
            }
        }
        let location = response
            .headers()
            .get("location")
            .map(|l| url.join(l.to_str().unwrap()).unwrap());
        Page {
            status: response.status().as_u16(),
            location,
            body: response.text().await.unwrap(),
        }
    }

    /// Follows redirects and answers the provider's login and consent forms as `login`, until
    /// `done(url)` or a page without a form.
    async fn walk(&mut self, start: &Url, login: &str, done: impl Fn(&Url) -> bool) -> Walk {
        let mut next = start.clone();
        let mut login_form = false;
        for _ in 0..16 {
            if done(&next) {
                return Walk {
                    end: next,
                    login_form,
                    body: String::new(),
                };
            }
            let page = self.request(&next, None).await;
            if let Some(location) = page.location {
                next = location;
                continue;
            }
            assert_eq!(page.status, 200, "unexpected page at {next}: {}", page.body);
            let form: Vec<(&str, &str)> = if page.body.contains("name=\"login\"") {
                login_form = true;
                vec![("prompt", "login"), ("login", login), ("password", "x")]
            } else if next.path().starts_with("/interaction/") {
                vec![("prompt", "consent")]
            } else {
                return Walk {
                    end: next,
                    login_form,
                    body: page.body,
                };
            };
            let answer = self.request(&next, Some(&form)).await;
            next = answer
                .location
                .unwrap_or_else(|| panic!("form POST at {next} did not redirect: {}", answer.body));
        }
        panic!("sign-in did not finish")
    }

    /// Signs in through `auth_url`; the callback URL the provider redirected to.
    async fn sign_in(&mut self, auth_url: &Url, redirect: &str, login: &str) -> Walk {
        let walk = self
            .walk(auth_url, login, |u| u.as_str().starts_with(redirect))
            .await;
        assert!(
            walk.end.as_str().starts_with(redirect),
            "ended at {}",
            walk.end
        );
        walk
    }
}

/// `code` and `state` of a callback URL.
fn callback(url: &Url) -> (String, String) {
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(
        q.get("iss").map(String::as_str),
        Some(idp().as_str()),
        "{url}"
    );
    (q["code"].clone(), q["state"].clone())
}

/// The same login state with one field changed (fields are private; the state is JSON anyway).
fn tweak(state: &LoginState, field: &str, value: Value) -> LoginState {
    let mut json = serde_json::to_value(state).unwrap();
    json[field] = value;
    serde_json::from_value(json).unwrap()
}

fn field_of(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no `{name}` in {body}"))
        + marker.len();
    body[start..].split('"').next().unwrap().to_owned()
}

/// The device authorization grant as `jit login` runs it, with the approval scripted at the
/// provider; the token response.
async fn device_tokens(login: &str, scope: &str, resource: Option<&str>) -> Value {
    let issuer = idp();
    let http = reqwest::Client::new();
    let mut form = vec![("client_id", "jit-cli"), ("scope", scope)];
    if let Some(resource) = resource {
        form.push(("resource", resource));
    }
    let device: Value = http
        .post(format!("{issuer}/device/auth"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device_code = device["device_code"].as_str().unwrap().to_owned();
    assert_eq!(
        poll_device(&http, &issuer, &device_code).await["error"],
        "authorization_pending"
    );

    let mut browser = Browser::new();
    let page = browser
        .request(
            &Url::parse(device["verification_uri_complete"].as_str().unwrap()).unwrap(),
            None,
        )
        .await;
    let xsrf = field_of(&page.body, "xsrf");
    let confirm = browser
        .request(
            &Url::parse(&format!("{issuer}/device")).unwrap(),
            Some(&[
                ("xsrf", xsrf.as_str()),
                ("user_code", device["user_code"].as_str().unwrap()),
                ("confirm", "yes"),
            ]),
        )
        .await;
    let walk = browser
        .walk(&confirm.location.unwrap(), login, |_| false)
        .await;
    assert!(walk.body.contains("Sign-in Success"), "{}", walk.body);

    for _ in 0..20 {
        let tokens = poll_device(&http, &issuer, &device_code).await;
        if tokens.get("access_token").is_some() {
            return tokens;
        }
        assert_eq!(tokens["error"], "authorization_pending", "{tokens}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("device flow did not finish")
}

async fn poll_device(http: &reqwest::Client, issuer: &str, device_code: &str) -> Value {
    http.post(format!("{issuer}/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", "jit-cli"),
            ("device_code", device_code),
        ])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()
}

fn access_token(tokens: &Value) -> String {
    tokens["access_token"].as_str().unwrap().to_owned()
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

// ---------------------------------------------------------------------------------------------
// Browser sign-in against the real provider.

#[tokio::test]
async fn two_users_sign_in_through_the_browser_flow() {
    init();
    let (identity, redirect) = fixture_identity(Arc::new(SystemClock), None).await;
    let mut keys = BTreeSet::new();
    for (login, name, groups, roles, mfa) in [
        (
            "alice",
            "Alice Admin",
            vec!["grp-jit-requesters", "grp-prod-admins"],
            vec!["jit.admin"],
            true,
        ),
        (
            "bob",
            "Bob Approver",
            vec!["grp-jit-approvers"],
            vec![],
            false,
        ),
    ] {
        let (url, state) = identity.oidc.begin("/requests/42", None);
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["client_id"], "jit-web");
        assert_eq!(q["redirect_uri"], redirect);
        assert!(
            q["scope"].split(' ').any(|s| s == "openid"),
            "{}",
            q["scope"]
        );
        assert!(!q.contains_key("prompt"));
        assert!(q["state"].len() >= 16 && q["nonce"].len() >= 16);

        let walk = Browser::new().sign_in(&url, &redirect, login).await;
        assert!(walk.login_form);
        let (code, returned_state) = callback(&walk.end);
        let sign_in = identity
            .oidc
            .complete(&state, &code, &returned_state)
            .await
            .unwrap_or_else(|e| panic!("{login}: {}", e.reason()));
        let user = &sign_in.user;
        assert_eq!(user.key, format!("{TENANT}/{}", oid_for(login)));
        assert_eq!(user.oid.as_deref(), Some(oid_for(login).as_str()));
        assert_eq!(user.name, name);
        assert_eq!(user.email, format!("{login}@example.com"));
        assert_eq!(user.groups, groups);
        assert_eq!(user.roles, roles);
        assert_eq!(user.mfa, mfa, "{login}");
        let now = SystemClock.now().unix_timestamp();
        let auth_time = user.auth_time.expect("auth_time");
        assert!(
            (now - auth_time).abs() < 120,
            "auth_time {auth_time} now {now}"
        );
        assert_eq!(sign_in.return_to, "/requests/42");
        assert!(sign_in.expires_at > now);
        assert_eq!(payload_of(sign_in.id_token.expose())["aud"], "jit-web");
        keys.insert(user.key.clone());
    }
    assert_eq!(keys.len(), 2);
}

#[tokio::test]
async fn callback_attacks_are_refused() {
    init();
    let (identity, redirect) = fixture_identity(Arc::new(SystemClock), None).await;
    let refused = |result: Result<_, AuthError>, expect: &str| {
        let e = result
            .err()
            .unwrap_or_else(|| panic!("accepted, expected {expect}"));
        assert_eq!(e.kind(), AuthErrorKind::SignInFailed, "{}", e.reason());
        assert_eq!(e.status(), 401);
        assert!(
            e.reason().contains(expect),
            "reason {:?}, expected {expect:?}",
            e.reason()
        );
        assert_eq!(e.to_string(), "sign-in failed, please sign in again");
    };

    // state mismatch, then the right state still works: the state check is what refused it
    let mut browser = Browser::new();
    let (url, state) = identity.oidc.begin("/", None);
    let walk = browser.sign_in(&url, &redirect, "mallory").await;
    let (code, returned) = callback(&walk.end);
    refused(
        identity.oidc.complete(&state, &code, "forged-state").await,
        "state",
    );
    refused(identity.oidc.complete(&state, &code, "").await, "state");
    let first = identity
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap();
    assert_eq!(first.user.key, format!("{TENANT}/{}", oid_for("mallory")));

    // replayed code and login state: refused here, and by the provider at another broker
    refused(
        identity.oidc.complete(&state, &code, &returned).await,
        "already used",
    );
    let (other_broker, _) = fixture_identity(Arc::new(SystemClock), None).await;
    refused(
        other_broker.oidc.complete(&state, &code, &returned).await,
        "refused the code",
    );

    // nonce replay: the same authorization request again (SSO answers at once with a new code)
    let again = browser.sign_in(&url, &redirect, "mallory").await;
    assert!(!again.login_form);
    let (code2, returned2) = callback(&again.end);
    assert_ne!(code2, code);
    refused(
        identity.oidc.complete(&state, &code2, &returned2).await,
        "already used",
    );

    // nonce mismatch
    let (url, state) = identity.oidc.begin("/", None);
    let walk = Browser::new().sign_in(&url, &redirect, "bob").await;
    let (code, returned) = callback(&walk.end);
    let forged = tweak(&state, "nonce", json!("another-nonce-0123456789abcdef"));
    refused(
        identity.oidc.complete(&forged, &code, &returned).await,
        "nonce",
    );

    // wrong and missing PKCE verifier
    for verifier in [
        json!("a-verifier-that-is-long-enough-but-not-the-one-0123456789"),
        json!(""),
    ] {
        let (url, state) = identity.oidc.begin("/", None);
        let walk = Browser::new().sign_in(&url, &redirect, "bob").await;
        let (code, returned) = callback(&walk.end);
        let forged = tweak(&state, "pkce_verifier", verifier);
        refused(
            identity.oidc.complete(&forged, &code, &returned).await,
            "refused the code",
        );
    }

    // a login state older than its lifetime
    let (url, state) = identity.oidc.begin("/", None);
    let walk = Browser::new().sign_in(&url, &redirect, "bob").await;
    let (code, returned) = callback(&walk.end);
    let stale = tweak(&state, "issued_at", json!(state.issued_at() - 11 * 60));
    refused(
        identity.oidc.complete(&stale, &code, &returned).await,
        "old",
    );

    // login CSRF: bob's callback delivered into alice's pending sign-in
    let (_, alice_state) = identity.oidc.begin("/", None);
    let (url, _) = identity.oidc.begin("/", None);
    let walk = Browser::new().sign_in(&url, &redirect, "bob").await;
    let (code, returned) = callback(&walk.end);
    refused(
        identity.oidc.complete(&alice_state, &code, &returned).await,
        "state",
    );

    // an empty code
    let (_, state) = identity.oidc.begin("/", None);
    let returned = serde_json::to_value(&state).unwrap()["csrf_state"]
        .as_str()
        .unwrap()
        .to_owned();
    refused(identity.oidc.complete(&state, "", &returned).await, "code");

    // the provider answered with an error instead of a code
    let e = AuthError::from_callback("access_denied", Some("the user cancelled"));
    assert_eq!(e.kind(), AuthErrorKind::SignInFailed);
    assert!(e.reason().contains("access_denied"));

    // open redirects after sign-in
    let (_, state) = identity.oidc.begin("https://evil.example/", None);
    assert_eq!(state.return_to(), "/");
}

#[tokio::test]
async fn step_up_forces_a_fresh_sign_in_with_mfa() {
    init();
    let clock = ManualClock::new();
    let (identity, redirect) = fixture_identity(Arc::new(clock.clone()), None).await;
    let mut browser = Browser::new();

    let (url, state) = identity.oidc.begin("/", None);
    let walk = browser.sign_in(&url, &redirect, "bob").await;
    let (code, returned) = callback(&walk.end);
    let plain = identity
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap();
    assert!(!plain.user.mfa);

    // step-up: prompt=login + max_age; the provider asks for credentials again despite the session
    let (url, state) = identity
        .oidc
        .begin("/requests/7", Some(Duration::from_secs(300)));
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["prompt"], "login");
    assert_eq!(q["max_age"], "300");
    assert!(state.is_step_up());
    let walk = browser.sign_in(&url, &redirect, "bob+mfa").await;
    assert!(
        walk.login_form,
        "prompt=login must show the login form again"
    );
    let (code, returned) = callback(&walk.end);
    let stepped = identity
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason()));
    assert_eq!(stepped.user.key, plain.user.key);
    assert!(stepped.user.mfa);
    assert!(stepped.user.auth_time.unwrap() >= state.issued_at() - 60);

    // without step-up the session is reused silently (so the form above came from prompt=login)
    let (url, _) = identity.oidc.begin("/", None);
    assert!(!browser.sign_in(&url, &redirect, "bob").await.login_form);

    // a provider that ignores prompt=login: the old auth_time is refused
    clock.advance(time::Duration::minutes(5));
    let (url, state) = identity.oidc.begin("/", None);
    let state = tweak(&state, "max_age", json!(300));
    let walk = browser.sign_in(&url, &redirect, "bob").await;
    assert!(!walk.login_form);
    let (code, returned) = callback(&walk.end);
    let e = identity
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), AuthErrorKind::SignInFailed);
    assert!(e.reason().contains("step-up"), "{}", e.reason());
}

#[tokio::test]
async fn logout_url_and_cli_config_come_from_discovery() {
    init();
    let issuer = idp();
    let (identity, redirect) = fixture_identity(Arc::new(SystemClock), None).await;

    let cli = identity.cli_config().unwrap();
    assert_eq!(cli.issuer, issuer);
    assert_eq!(cli.client_id, "jit-cli");
    assert!(cli.scopes.iter().any(|s| s == "access"));
    assert_eq!(
        cli.device_authorization_endpoint.as_deref(),
        Some(format!("{issuer}/device/auth").as_str())
    );
    assert_eq!(
        cli.token_endpoint.as_deref(),
        Some(format!("{issuer}/token").as_str())
    );
    assert!(!cli.dev);
    let mut no_cli = config(&issuer);
    no_cli.cli_client_id = None;
    assert!(jit_server::identity::cli_config(&no_cli, identity.discovery()).is_none());
    assert_eq!(identity.tenant(), Some(TENANT));

    // RP-initiated logout at the provider, back to the broker
    let mut browser = Browser::new();
    let (url, state) = identity.oidc.begin("/", None);
    let walk = browser.sign_in(&url, &redirect, "bob").await;
    let (code, returned) = callback(&walk.end);
    let sign_in = identity
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap();
    let back = redirect.replace("/auth/callback", "/");
    let logout = identity
        .oidc
        .end_session_url(Some(sign_in.id_token.expose()), Some(&back))
        .unwrap();
    assert!(
        logout
            .as_str()
            .starts_with(&format!("{issuer}/session/end?")),
        "{logout}"
    );
    let page = browser.request(&logout, None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let xsrf = field_of(&page.body, "xsrf");
    let confirm = Url::parse(&format!("{issuer}/session/end/confirm")).unwrap();
    let done = browser
        .request(
            &confirm,
            Some(&[("xsrf", xsrf.as_str()), ("logout", "yes")]),
        )
        .await;
    let location = done.location.expect("logout redirects");
    assert!(location.as_str().starts_with(&back), "{location}");
    // signed out: the next sign-in asks for credentials again
    let (url, _) = identity.oidc.begin("/", None);
    assert!(browser.sign_in(&url, &redirect, "bob").await.login_form);
}

#[tokio::test]
async fn discovery_failures_name_the_issuer_key() {
    init();
    let issuer = idp();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // the provider names itself without the trailing slash
    let e = Identity::discover(
        &config(&format!("{issuer}/")),
        &redirect_uri(),
        clock.clone(),
        None,
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("oidc.issuer") && e.contains("issuer"), "{e}");
    // nobody listens
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = Identity::discover(
        &config(&format!("http://127.0.0.1:{port}")),
        &redirect_uri(),
        clock.clone(),
        None,
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("oidc.issuer"), "{e}");
    // the tenant of an Entra issuer must match `tenant_id`
    let mut entra = config(&format!(
        "https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"
    ));
    entra.tenant_id = Some(TENANT.to_owned());
    let e = Identity::discover(&entra, &redirect_uri(), clock, None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("oidc.tenant_id"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Bearer tokens from the device flow.

#[tokio::test]
async fn device_flow_access_token_is_accepted() {
    init();
    let (identity, _) = fixture_identity(Arc::new(SystemClock), None).await;
    let cli = identity.cli_config().unwrap();
    let tokens = device_tokens("carol", &cli.scopes.join(" "), None).await;
    let token = access_token(&tokens);
    assert_eq!(payload_of(&token)["scope"], "access");
    let user = identity
        .bearer
        .validate(&token)
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason()));
    assert_eq!(user.key, format!("{TENANT}/{}", oid_for("carol")));
    assert_eq!(user.name, "Carol Auditor");
    assert_eq!(user.email, "carol@example.com");
    assert_eq!(user.groups, ["grp-jit-auditors"]);
    assert_eq!(user.roles, ["jit.auditor"]);
    // validating again is served from the key cache
    assert_eq!(identity.bearer.validate(&token).await.unwrap(), user);
}

// ---------------------------------------------------------------------------------------------
// Group overage: a responder with the Microsoft Graph `transitiveMemberOf` shape.

#[derive(Default)]
struct GraphState {
    base: Mutex<String>,
    requests: AtomicUsize,
    groups: HashMap<String, Vec<String>>,
}

async fn graph_member_of(
    State(state): State<Arc<GraphState>>,
    axum::extract::Path(oid): axum::extract::Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> axum::response::Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer graph-test-token")
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": "InvalidAuthenticationToken", "message": "no token"}})),
        )
            .into_response();
    }
    assert_eq!(
        query.get("$select").map(String::as_str),
        Some("id,displayName")
    );
    let Some(groups) = state.groups.get(&oid) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "Request_ResourceNotFound", "message": "no such user"}})),
        )
            .into_response();
    };
    // two pages: the first with an @odata.nextLink carrying a $skiptoken
    let second = query.get("$skiptoken").is_some();
    let (page, next) = if second {
        (&groups[2..], None)
    } else {
        let base = state.base.lock().unwrap().clone();
        let next = format!(
            "{base}/v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group?$select=id,displayName&$skiptoken=p2"
        );
        (&groups[..2], Some(next))
    };
    let mut body = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#groups(id,displayName)",
        "value": page.iter().map(|id| json!({
            "@odata.type": "#microsoft.graph.group", "id": id, "displayName": format!("name of {id}")
        })).collect::<Vec<_>>(),
    });
    if let Some(next) = next {
        body["@odata.nextLink"] = json!(next);
    }
    Json(body).into_response()
}

/// What the Graph helper does, reduced: `transitiveMemberOf/microsoft.graph.group`, following
/// `@odata.nextLink`.
struct GraphGroups {
    base: String,
    http: reqwest::Client,
}

#[async_trait::async_trait]
impl GroupResolver for GraphGroups {
    async fn user_groups(&self, oid: &str) -> Result<Vec<String>, GroupLookupError> {
        let mut url = format!(
            "{}/users/{oid}/transitiveMemberOf/microsoft.graph.group?$select=id,displayName&$top=999",
            self.base
        );
        let mut groups = Vec::new();
        loop {
            let response = self
                .http
                .get(&url)
                .bearer_auth("graph-test-token")
                .header("ConsistencyLevel", "eventual")
                .send()
                .await
                .map_err(|e| GroupLookupError(e.to_string()))?;
            if !response.status().is_success() {
                return Err(GroupLookupError(format!(
                    "graph answered {}",
                    response.status()
                )));
            }
            let page: Value = response
                .json()
                .await
                .map_err(|e| GroupLookupError(e.to_string()))?;
            for item in page["value"].as_array().into_iter().flatten() {
                if item["@odata.type"] == "#microsoft.graph.group" {
                    groups.push(item["id"].as_str().unwrap_or_default().to_owned());
                }
            }
            match page["@odata.nextLink"].as_str() {
                Some(next) => url = next.to_owned(),
                None => return Ok(groups),
            }
        }
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn group_overage_is_resolved_through_graph() {
    init();
    let olga_groups: Vec<String> = ["grp-big-1", "grp-big-2", "grp-prod-admins"]
        .map(str::to_owned)
        .to_vec();
    let graph = Arc::new(GraphState {
        groups: HashMap::from([(oid_for("olga"), olga_groups.clone())]),
        ..GraphState::default()
    });
    let base = serve(
        Router::new()
            .route(
                "/v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group",
                get(graph_member_of),
            )
            .with_state(Arc::clone(&graph)),
    )
    .await;
    *graph.base.lock().unwrap() = base.clone();
    let resolver: Arc<dyn GroupResolver> = Arc::new(GraphGroups {
        base: format!("{base}/v1.0"),
        http: reqwest::Client::new(),
    });
    let (identity, redirect) = fixture_identity(Arc::new(SystemClock), Some(resolver)).await;

    let (url, state) = identity.oidc.begin("/", None);
    let walk = Browser::new().sign_in(&url, &redirect, "olga").await;
    let (code, returned) = callback(&walk.end);
    let sign_in = identity
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason()));
    assert!(
        payload_of(sign_in.id_token.expose())
            .get("groups")
            .is_none()
    );
    assert_eq!(sign_in.user.groups, olga_groups);
    assert_eq!(graph.requests.load(Ordering::SeqCst), 2, "two pages");

    // the CLI's bearer token has the overage marker too; the cached groups answer
    let tokens = device_tokens("olga", "openid profile access", None).await;
    let token = access_token(&tokens);
    assert!(payload_of(&token)["_claim_names"]["groups"].is_string());
    let user = identity.bearer.validate(&token).await.unwrap();
    assert_eq!(user.groups, olga_groups);
    assert_eq!(
        graph.requests.load(Ordering::SeqCst),
        2,
        "served from the cache"
    );

    // users without overage never reach Graph
    let tokens = device_tokens("bob", "openid access", None).await;
    assert_eq!(
        identity
            .bearer
            .validate(&access_token(&tokens))
            .await
            .unwrap()
            .groups,
        ["grp-jit-approvers"]
    );
    assert_eq!(graph.requests.load(Ordering::SeqCst), 2);

    // without a resolver an overage user cannot sign in (fail closed, 503)
    let (no_graph, redirect) = fixture_identity(Arc::new(SystemClock), None).await;
    let (url, state) = no_graph.oidc.begin("/", None);
    let walk = Browser::new().sign_in(&url, &redirect, "olga").await;
    let (code, returned) = callback(&walk.end);
    let e = no_graph
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), AuthErrorKind::Unavailable);
    assert_eq!(e.status(), 503);
    let e = no_graph.bearer.validate(&token).await.unwrap_err();
    assert_eq!(e.kind(), AuthErrorKind::Unavailable);
}

// ---------------------------------------------------------------------------------------------
// Keys made at test time, and a stub issuer whose JWKS the test controls and counts.

struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn with_kid(&self, kid: &str) -> Self {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = json!(kid);
        Self {
            kid: kid.to_owned(),
            alg: self.alg,
            encoding: self.encoding.clone(),
            jwk,
        }
    }
}

struct Keys {
    stub: TestKey,
    rotated: TestKey,
    attacker: TestKey,
    ec: TestKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("jit-identity-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = Keys {
            stub: openssl_key(&dir, "stub-1", Algorithm::RS256),
            rotated: openssl_key(&dir, "stub-2", Algorithm::RS256),
            attacker: openssl_key(&dir, "attacker", Algorithm::RS256),
            ec: openssl_key(&dir, "stub-ec", Algorithm::ES256),
        };
        std::fs::remove_dir_all(&dir).ok();
        keys
    })
}

fn openssl_key(dir: &std::path::Path, kid: &str, alg: Algorithm) -> TestKey {
    let path: PathBuf = dir.join(format!("{kid}.pem"));
    let algorithm_args: &[&str] = match alg {
        Algorithm::ES256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        _ => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    };
    let output = std::process::Command::new("openssl")
        .arg("genpkey")
        .args(algorithm_args)
        .arg("-out")
        .arg(&path)
        .output()
        .expect("openssl must be installed to make test keys");
    assert!(
        output.status.success(),
        "openssl genpkey: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pem = std::fs::read(&path).unwrap();
    let encoding = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    let mut jwk =
        serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, alg).unwrap())
            .unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    TestKey {
        kid: kid.to_owned(),
        alg,
        encoding,
        jwk,
    }
}

#[derive(Default)]
struct StubState {
    base: Mutex<String>,
    jwks: Mutex<Value>,
    jwks_hits: AtomicUsize,
    evil_hits: AtomicUsize,
}

struct Stub {
    url: String,
    state: Arc<StubState>,
}

impl Stub {
    async fn start(jwks: Vec<&TestKey>) -> Self {
        let state = Arc::new(StubState::default());
        state.set_keys(&jwks);
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(s): State<Arc<StubState>>| async move {
                    let base = s.base.lock().unwrap().clone();
                    Json(json!({
                        "issuer": base,
                        "authorization_endpoint": format!("{base}/auth"),
                        "token_endpoint": format!("{base}/token"),
                        "jwks_uri": format!("{base}/jwks"),
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                    }))
                }),
            )
            .route(
                "/jwks",
                get(|State(s): State<Arc<StubState>>| async move {
                    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
                    Json(s.jwks.lock().unwrap().clone())
                }),
            )
            .route(
                "/evil/{*rest}",
                get(|State(s): State<Arc<StubState>>| async move {
                    s.evil_hits.fetch_add(1, Ordering::SeqCst);
                    Json(json!({ "keys": [keys().attacker.jwk.clone()] }))
                }),
            )
            .with_state(Arc::clone(&state));
        let url = serve(router).await;
        *state.base.lock().unwrap() = url.clone();
        Self { url, state }
    }

    fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    fn evil_hits(&self) -> usize {
        self.state.evil_hits.load(Ordering::SeqCst)
    }
}

impl StubState {
    fn set_keys(&self, keys: &[&TestKey]) {
        *self.jwks.lock().unwrap() =
            json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    }
}

async fn stub_identity(stub: &Stub, clock: &ManualClock) -> Identity {
    Identity::discover(
        &config(&stub.url),
        &redirect_uri(),
        Arc::new(clock.clone()),
        None,
    )
    .await
    .expect("discovery against the stub issuer")
}

/// Claims of a valid access token from the stub issuer; `patch` sets (or with `null` removes) claims.
fn stub_claims(stub: &Stub, clock: &ManualClock, patch: &Value) -> Value {
    let now = clock.now().unix_timestamp();
    let mut claims = json!({
        "iss": stub.url, "aud": API, "exp": now + 600, "iat": now - 5, "nbf": now - 5,
        "oid": "00000000-0000-0000-0000-00000000a11c", "tid": TENANT, "scp": "access",
        "name": "Forged Alice", "preferred_username": "alice@example.com",
        "groups": ["grp-prod-admins"], "ver": "2.0",
    });
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn sign(key: &TestKey, claims: &Value, header: impl FnOnce(&mut Header)) -> String {
    let mut h = Header::new(key.alg);
    h.typ = Some("at+jwt".to_owned());
    h.kid = Some(key.kid.clone());
    header(&mut h);
    jsonwebtoken::encode(&h, claims, &key.encoding).unwrap()
}

fn hmac_token(alg: Algorithm, kid: &str, claims: &Value, secret: &[u8]) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
}

/// A token assembled by hand (for headers jsonwebtoken would not write).
fn raw(header: &Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64json(header), b64json(claims))
}

// DER, just enough for an RSA public key as PKCS#1 and SPKI (the HMAC-confusion secrets).
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap());
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | u8::try_from(bytes.len()).unwrap());
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if v.first().is_some_and(|b| b & 0x80 != 0) {
        v.insert(0, 0);
    }
    der(0x02, &v)
}

fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
    .into_bytes()
}

/// The secrets a confused verifier might use as HMAC key: the RSA public key in every common form.
fn public_key_forms(jwk: &Value) -> Vec<(&'static str, Vec<u8>)> {
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
    let pkcs1 = der(0x30, &[der_uint(&n), der_uint(&e)].concat());
    let algorithm = der(
        0x30,
        &[
            der(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            vec![0x05, 0x00],
        ]
        .concat(),
    );
    let spki = der(
        0x30,
        &[algorithm, der(0x03, &[&[0u8][..], &pkcs1].concat())].concat(),
    );
    vec![
        ("spki-pem", pem("PUBLIC KEY", &spki)),
        ("pkcs1-pem", pem("RSA PUBLIC KEY", &pkcs1)),
        ("spki-der", spki),
        ("modulus", n),
        ("jwk-json", jwk.to_string().into_bytes()),
    ]
}

struct Case {
    class: &'static str,
    name: String,
    token: String,
    /// A fragment of the internal reason: refused, and for this reason.
    expect: &'static str,
}

fn case(class: &'static str, name: impl Into<String>, token: String, expect: &'static str) -> Case {
    Case {
        class,
        name: name.into(),
        token,
        expect,
    }
}

async fn check_refused(identity: &Identity, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases {
        match identity.bearer.validate(&c.token).await {
            Ok(user) => failures.push(format!("{}/{}: accepted as {}", c.class, c.name, user.key)),
            Err(e) => {
                if e.kind() != AuthErrorKind::InvalidToken || e.status() != 401 {
                    failures.push(format!(
                        "{}/{}: {:?} {}",
                        c.class,
                        c.name,
                        e.kind(),
                        e.reason()
                    ));
                }
                if !e.reason().contains(c.expect) {
                    failures.push(format!(
                        "{}/{}: refused for {:?}, expected {:?}",
                        c.class,
                        c.name,
                        e.reason(),
                        c.expect
                    ));
                }
                let signature = c.token.rsplit('.').next().unwrap_or_default();
                if (signature.len() > 16 && e.reason().contains(signature))
                    || e.to_string() != "the access token is invalid or expired"
                {
                    failures.push(format!(
                        "{}/{}: message leaks: {}",
                        c.class,
                        c.name,
                        e.reason()
                    ));
                }
            }
        }
    }
    failures
}

#[tokio::test]
async fn forged_and_misused_tokens_are_refused() {
    init();
    let k = keys();
    let clock = ManualClock::new();
    let stub = Stub::start(vec![&k.stub, &k.ec]).await;
    let stub_id = stub_identity(&stub, &clock).await;
    let (real, redirect) = fixture_identity(Arc::new(SystemClock), None).await;
    let issuer = idp();
    let evil = format!("{}/evil", stub.url);

    // genuine tokens from the real provider: one good, the rest misused
    let (good, other_resource, no_scope, other_tenant) = tokio::join!(
        device_tokens("carol", "openid profile access", None),
        device_tokens("carol", "openid profile access", Some("api://other-app")),
        device_tokens("carol", "openid profile", None),
        device_tokens("eve", "openid profile access", None),
    );
    let genuine = access_token(&good);
    real.bearer
        .validate(&genuine)
        .await
        .unwrap_or_else(|e| panic!("the genuine token must pass: {}", e.reason()));
    let (url, state) = real.oidc.begin("/", None);
    let walk = Browser::new().sign_in(&url, &redirect, "mallory").await;
    let (code, returned) = callback(&walk.end);
    let web_id_token = real
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap()
        .id_token
        .expose()
        .to_owned();
    let [g_header, g_payload, g_sig]: [&str; 3] =
        genuine.split('.').collect::<Vec<_>>().try_into().unwrap();
    let g_claims = payload_of(&genuine);
    let idp_jwk = reqwest::get(format!("{issuer}/jwks"))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["keys"][0]
        .clone();

    let mut real_cases = Vec::new();
    // 1. alg none
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": alg, "typ": "at+jwt", "kid": IDP_KID});
        real_cases.push(case(
            "alg-none",
            format!("{alg}+sig"),
            raw(&h, &g_claims, g_sig),
            "not allowed",
        ));
        real_cases.push(case(
            "alg-none",
            format!("{alg}-unsigned"),
            format!("{}.{}.", b64json(&h), g_payload),
            "empty part",
        ));
    }
    // 2. HMAC signed with the provider's public key as the secret
    for (form, secret) in public_key_forms(&idp_jwk) {
        real_cases.push(case(
            "hmac-confusion",
            format!("HS256/{form}"),
            hmac_token(Algorithm::HS256, IDP_KID, &g_claims, &secret),
            "not allowed",
        ));
    }
    let spki = &public_key_forms(&idp_jwk)[0].1;
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        real_cases.push(case(
            "hmac-confusion",
            format!("{alg:?}/spki-pem"),
            hmac_token(alg, IDP_KID, &g_claims, spki),
            "not allowed",
        ));
    }
    // 3. unknown, missing, empty kid
    real_cases.push(case(
        "unknown-kid",
        "no-such-key",
        sign(&k.attacker.with_kid("no-such-key"), &g_claims, |_| {}),
        "unknown signing key",
    ));
    real_cases.push(case(
        "unknown-kid",
        "missing",
        sign(&k.attacker, &g_claims, |h| h.kid = None),
        "no `kid`",
    ));
    real_cases.push(case(
        "unknown-kid",
        "empty",
        sign(&k.attacker, &g_claims, |h| h.kid = Some(String::new())),
        "no `kid`",
    ));
    // 4. kid injection
    for kid in [
        "../../../../../../dev/null",
        "/etc/passwd",
        "' OR '1'='1",
        "test-rs256-1' --",
        "test-rs256-1\u{0}",
        "test-rs256-1 ",
        &"k".repeat(300),
    ] {
        real_cases.push(case(
            "kid-injection",
            format!("{kid:.20?}"),
            sign(&k.attacker.with_kid(kid), &g_claims, |_| {}),
            "unknown signing key",
        ));
    }
    real_cases.push(case(
        "kid-injection",
        "kid-number",
        raw(&json!({"alg": "RS256", "kid": 1}), &g_claims, g_sig),
        "no `kid`",
    ));
    // 5. headers that carry or point at keys (the attacker's key is served at `evil`)
    let attacker_same_kid = k.attacker.with_kid(IDP_KID);
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(k.attacker.jwk.clone()).unwrap();
    real_cases.push(case(
        "key-headers",
        "jku",
        sign(&attacker_same_kid, &g_claims, |h| {
            h.jku = Some(format!("{evil}/jwks"))
        }),
        "`jku`",
    ));
    real_cases.push(case(
        "key-headers",
        "x5u",
        sign(&attacker_same_kid, &g_claims, |h| {
            h.x5u = Some(format!("{evil}/cert.pem"))
        }),
        "`x5u`",
    ));
    real_cases.push(case(
        "key-headers",
        "jwk",
        sign(&attacker_same_kid, &g_claims, |h| h.jwk = Some(jwk.clone())),
        "`jwk`",
    ));
    real_cases.push(case(
        "key-headers",
        "x5c",
        sign(&attacker_same_kid, &g_claims, |h| {
            h.x5c = Some(vec!["MIIBIjANBgkq".to_owned()])
        }),
        "`x5c`",
    ));
    // 6. stripped or altered signature
    let mut flipped = g_sig.to_owned().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let mut altered = g_claims.clone();
    altered["oid"] = json!(oid_for("alice"));
    altered["groups"] = json!(["grp-prod-admins"]);
    let other_sig = access_token(&other_resource)
        .rsplit('.')
        .next()
        .unwrap()
        .to_owned();
    for (name, token, expect) in [
        ("stripped", format!("{g_header}.{g_payload}."), "empty part"),
        ("stripped-dot", format!("{g_header}.{g_payload}"), "2 parts"),
        (
            "flipped",
            format!(
                "{g_header}.{g_payload}.{}",
                String::from_utf8(flipped).unwrap()
            ),
            "signature",
        ),
        (
            "truncated",
            format!("{g_header}.{g_payload}.{}", &g_sig[..g_sig.len() / 2]),
            "signature",
        ),
        (
            "other-token-sig",
            format!("{g_header}.{g_payload}.{other_sig}"),
            "signature",
        ),
        (
            "payload-altered",
            format!("{g_header}.{}.{g_sig}", b64json(&altered)),
            "signature",
        ),
    ] {
        real_cases.push(case("bad-signature", name, token, expect));
    }
    // 7. another key under the provider's kid
    real_cases.push(case(
        "same-kid-other-key",
        "rs256",
        sign(&attacker_same_kid, &g_claims, |_| {}),
        "signature",
    ));
    real_cases.push(case(
        "same-kid-other-key",
        "es256",
        sign(&k.ec.with_kid(IDP_KID), &g_claims, |_| {}),
        "is not the one of key",
    ));
    // 8. genuine tokens used where they do not belong
    real_cases.push(case(
        "id-token-as-access-token",
        "web-id-token",
        web_id_token,
        "web client",
    ));
    real_cases.push(case(
        "id-token-as-access-token",
        "cli-id-token",
        good["id_token"].as_str().unwrap().to_owned(),
        "audience",
    ));
    real_cases.push(case(
        "other-resource",
        "api://other-app",
        access_token(&other_resource),
        "audience",
    ));
    real_cases.push(case(
        "missing-scope",
        "no-access-scope",
        access_token(&no_scope),
        "scope `access`",
    ));
    real_cases.push(case(
        "other-tenant",
        "eve",
        access_token(&other_tenant),
        "tenant",
    ));
    // 9. malformed
    for (name, token, expect) in [
        ("empty", String::new(), "1 parts"),
        ("one-part", "abc".to_owned(), "1 parts"),
        ("two-parts", format!("{g_header}.{g_payload}"), "2 parts"),
        ("four-parts", format!("{genuine}.{g_sig}"), "4 parts"),
        ("jwe-five-parts", format!("{g_header}.a.b.c.d"), "5 parts"),
        (
            "bad-base64",
            format!("{g_header}.{g_payload}!.{g_sig}"),
            "base64url",
        ),
        (
            "padded-base64",
            format!("{g_header}=.{g_payload}.{g_sig}"),
            "base64url",
        ),
        ("bearer-prefix", format!("Bearer {genuine}"), "base64url"),
        (
            "newline",
            format!("{g_header}.{g_payload}\n.{g_sig}"),
            "base64url",
        ),
        (
            "header-garbage",
            format!("{}.{g_payload}.{g_sig}", b64("{alg:")),
            "JSON object",
        ),
        (
            "header-array",
            format!("{}.{g_payload}.{g_sig}", b64("[\"RS256\"]")),
            "JSON object",
        ),
        (
            "header-not-base64-json",
            format!("{}.{g_payload}.{g_sig}", b64([0xff, 0xfe])),
            "JSON object",
        ),
        (
            "payload-garbage",
            format!("{g_header}.{}.{g_sig}", b64("not json")),
            "signature or payload",
        ),
        (
            "huge",
            format!("{g_header}.{}.{g_sig}", "A".repeat(1 << 20)),
            "longer than",
        ),
    ] {
        real_cases.push(case("malformed", name, token, expect));
    }

    // claim-level forgeries, signed by the stub issuer's own (trusted) key
    let valid = sign(&k.stub, &stub_claims(&stub, &clock, &json!({})), |_| {});
    let accepted = stub_id
        .bearer
        .validate(&valid)
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason()));
    assert_eq!(
        accepted.key,
        format!("{TENANT}/00000000-0000-0000-0000-00000000a11c")
    );
    let now = clock.now().unix_timestamp();
    // positive controls next to the limits
    for patch in [
        json!({"exp": now - 30}),
        json!({"nbf": now + 30}),
        json!({"aud": ["api://other-app", API]}),
        json!({"scp": null, "scope": "openid access"}),
        json!({"scp": "User.Read access"}),
        json!({"nbf": null, "iat": null}),
    ] {
        let token = sign(&k.stub, &stub_claims(&stub, &clock, &patch), |_| {});
        stub_id
            .bearer
            .validate(&token)
            .await
            .unwrap_or_else(|e| panic!("{patch} must pass: {}", e.reason()));
    }
    let es = sign(&k.ec, &stub_claims(&stub, &clock, &json!({})), |_| {});
    stub_id.bearer.validate(&es).await.unwrap();

    let forged = |patch: Value| sign(&k.stub, &stub_claims(&stub, &clock, &patch), |_| {});
    let mut stub_cases = Vec::new();
    for (class, name, patch, expect) in [
        (
            "expired",
            "an-hour-ago",
            json!({"exp": now - 3600}),
            "expired",
        ),
        (
            "expired",
            "past-leeway",
            json!({"exp": now - 61}),
            "expired",
        ),
        ("expired", "no-exp", json!({"exp": null}), "no `exp`"),
        (
            "expired",
            "exp-string",
            json!({"exp": (now + 600).to_string()}),
            "not a number",
        ),
        (
            "not-yet-valid",
            "nbf-hour",
            json!({"nbf": now + 3600}),
            "not valid yet",
        ),
        (
            "not-yet-valid",
            "nbf-past-leeway",
            json!({"nbf": now + 120}),
            "not valid yet",
        ),
        (
            "issued-in-future",
            "iat-hour",
            json!({"iat": now + 3600}),
            "future",
        ),
        (
            "wrong-issuer",
            "entra",
            json!({"iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0")}),
            "issuer",
        ),
        (
            "wrong-issuer",
            "trailing-slash",
            json!({"iss": format!("{}/", stub.url)}),
            "issuer",
        ),
        (
            "wrong-issuer",
            "upper-case",
            json!({"iss": stub.url.to_uppercase()}),
            "issuer",
        ),
        ("wrong-issuer", "real-idp", json!({"iss": issuer}), "issuer"),
        ("wrong-issuer", "missing", json!({"iss": null}), "no `iss`"),
        (
            "wrong-audience",
            "other-api",
            json!({"aud": "api://other-app"}),
            "audience",
        ),
        (
            "wrong-audience",
            "other-list",
            json!({"aud": ["api://other-app", "api://x"]}),
            "audience",
        ),
        (
            "wrong-audience",
            "missing",
            json!({"aud": null}),
            "no usable `aud`",
        ),
        (
            "wrong-audience",
            "empty",
            json!({"aud": ""}),
            "no usable `aud`",
        ),
        (
            "wrong-audience",
            "number",
            json!({"aud": 42}),
            "no usable `aud`",
        ),
        (
            "wrong-audience",
            "prefix",
            json!({"aud": "api://jit-broker-evil"}),
            "audience",
        ),
        (
            "id-token-as-access-token",
            "aud-web-client",
            json!({"aud": "jit-web"}),
            "web client",
        ),
        (
            "id-token-as-access-token",
            "aud-both",
            json!({"aud": [API, "jit-web"]}),
            "web client",
        ),
        (
            "id-token-as-access-token",
            "nonce",
            json!({"nonce": "n-0123"}),
            "`nonce`",
        ),
        (
            "id-token-as-access-token",
            "at_hash",
            json!({"at_hash": "x"}),
            "`at_hash`",
        ),
        (
            "other-tenant",
            "other-tid",
            json!({"tid": OTHER_TENANT}),
            "tenant",
        ),
        ("other-tenant", "no-tid", json!({"tid": null}), "no `tid`"),
        (
            "missing-scope",
            "other-scope",
            json!({"scp": "User.Read"}),
            "scope `access`",
        ),
        (
            "missing-scope",
            "superstring",
            json!({"scp": "accessible"}),
            "scope `access`",
        ),
        (
            "missing-scope",
            "none",
            json!({"scp": null}),
            "scope `access`",
        ),
        (
            "missing-scope",
            "empty",
            json!({"scp": ""}),
            "scope `access`",
        ),
        (
            "app-only",
            "idtyp-app",
            json!({"idtyp": "app", "scp": null, "roles": ["x"]}),
            "app-only",
        ),
        (
            "app-only",
            "idtyp-app-with-scp",
            json!({"idtyp": "app"}),
            "app-only",
        ),
        ("no-subject", "no-oid", json!({"oid": null}), "no `oid`"),
    ] {
        stub_cases.push(case(class, name, forged(patch), expect));
    }
    let base = stub_claims(&stub, &clock, &json!({}));
    stub_cases.push(case(
        "same-kid-other-key",
        "stub-kid",
        sign(&k.attacker.with_kid(&k.stub.kid), &base, |_| {}),
        "signature",
    ));
    stub_cases.push(case(
        "alg-key-mismatch",
        "PS256-on-RS256-key",
        sign(&k.stub, &base, |h| h.alg = Algorithm::PS256),
        "is not the one of key",
    ));
    stub_cases.push(case(
        "alg-key-mismatch",
        "RS512-on-RS256-key",
        sign(&k.stub, &base, |h| h.alg = Algorithm::RS512),
        "is not the one of key",
    ));
    stub_cases.push(case(
        "alg-key-mismatch",
        "RS256-on-EC-key",
        sign(&k.attacker.with_kid(&k.ec.kid), &base, |_| {}),
        "is not the one of key",
    ));
    stub_cases.push(case(
        "alg-key-mismatch",
        "ES256-on-RSA-key",
        sign(&k.ec.with_kid(&k.stub.kid), &base, |_| {}),
        "is not the one of key",
    ));
    stub_cases.push(case(
        "headers",
        "crit",
        raw(
            &json!({"alg": "RS256", "kid": k.stub.kid, "crit": ["exp"]}),
            &base,
            "c2ln",
        ),
        "`crit`",
    ));
    stub_cases.push(case(
        "headers",
        "typ-jwe",
        sign(&k.stub, &base, |h| h.typ = Some("JWE".to_owned())),
        "token type",
    ));
    stub_cases.push(case(
        "headers",
        "typ-logout",
        sign(&k.stub, &base, |h| h.typ = Some("logout+jwt".to_owned())),
        "token type",
    ));

    let mut failures = check_refused(&real, &real_cases).await;
    failures.extend(check_refused(&stub_id, &stub_cases).await);
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        stub.evil_hits(),
        0,
        "a key URL from a token header was fetched"
    );

    let classes: BTreeSet<&str> = real_cases
        .iter()
        .chain(&stub_cases)
        .map(|c| c.class)
        .collect();
    let total = real_cases.len() + stub_cases.len();
    assert!(
        classes.len() >= 20,
        "{} classes: {classes:?}",
        classes.len()
    );
    assert!(total >= 60, "{total} cases");
    eprintln!(
        "{total} forged or misused tokens refused, {} classes",
        classes.len()
    );
}

#[tokio::test]
async fn unknown_kids_refetch_keys_at_most_once_per_window() {
    init();
    let k = keys();
    let clock = ManualClock::new();
    let stub = Stub::start(vec![&k.stub]).await;
    let identity = stub_identity(&stub, &clock).await;
    assert_eq!(stub.jwks_hits(), 1, "one fetch at start");
    let claims = stub_claims(&stub, &clock, &json!({}));
    let valid = sign(&k.stub, &claims, |_| {});
    for _ in 0..5 {
        identity.bearer.validate(&valid).await.unwrap();
    }
    assert_eq!(stub.jwks_hits(), 1, "known keys come from the cache");

    // a burst of unknown kids, also concurrent: one refetch
    let unknown: Vec<String> = (0..20)
        .map(|i| {
            sign(
                &k.attacker.with_kid(&format!("unknown-{i}")),
                &claims,
                |_| {},
            )
        })
        .collect();
    let results =
        futures_util::future::join_all(unknown.iter().map(|t| identity.bearer.validate(t))).await;
    assert!(results.iter().all(Result::is_err));
    for token in &unknown {
        assert!(identity.bearer.validate(token).await.is_err());
    }
    assert_eq!(stub.jwks_hits(), 2, "at most one refetch per window");

    // the window passes: one more refetch, then quiet again
    clock.advance(time::Duration::seconds(31));
    assert!(identity.bearer.validate(&unknown[0]).await.is_err());
    assert!(identity.bearer.validate(&unknown[1]).await.is_err());
    assert_eq!(stub.jwks_hits(), 3);

    // rotation: the provider publishes a new key and drops the old one
    stub.state.set_keys(&[&k.rotated]);
    let claims = stub_claims(&stub, &clock, &json!({}));
    let new_token = sign(&k.rotated, &claims, |_| {});
    let old_token = sign(&k.stub, &claims, |_| {});
    // still inside the window: the new kid is not fetched yet, the cached old key still works
    assert!(identity.bearer.validate(&new_token).await.is_err());
    identity.bearer.validate(&old_token).await.unwrap();
    assert_eq!(stub.jwks_hits(), 3);
    clock.advance(time::Duration::seconds(31));
    identity
        .bearer
        .validate(&new_token)
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason()));
    assert_eq!(stub.jwks_hits(), 4);
    let e = identity.bearer.validate(&old_token).await.unwrap_err();
    assert!(e.reason().contains("unknown signing key"), "{}", e.reason());
    for _ in 0..5 {
        identity.bearer.validate(&new_token).await.unwrap();
    }
    assert_eq!(stub.jwks_hits(), 4);

    // keys older than their maximum age are refetched on use; a failed refetch keeps them
    clock.advance(time::Duration::minutes(61));
    let claims = stub_claims(&stub, &clock, &json!({}));
    identity
        .bearer
        .validate(&sign(&k.rotated, &claims, |_| {}))
        .await
        .unwrap();
    assert_eq!(stub.jwks_hits(), 5);
    *stub.state.jwks.lock().unwrap() = json!("broken");
    clock.advance(time::Duration::minutes(61));
    let claims = stub_claims(&stub, &clock, &json!({}));
    identity
        .bearer
        .validate(&sign(&k.rotated, &claims, |_| {}))
        .await
        .unwrap();
    assert_eq!(stub.jwks_hits(), 6);
}
