//! The web UI's HTTP contract, with reqwest as the browser: an in-process broker in `OpenID
//! Connect` mode against the real test provider (`JIT_TEST_IDP_URL`), signing in through the
//! provider's own login form. Session cookie attributes and rotation, logout, CSRF and Origin
//! checks, security headers, step-up for `require_mfa` entitlements, and the audit events of
//! sign-in, sign-out and refused sign-in. (The same pages in a real browser: `tests/e2e`.)

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use jit_server::clock::{Clock, SystemClock};
use jit_server::config::{AwsConfig, ClaimMapping, Config, OidcConfig, Secret};
use jit_server::http::{self, AuthMode};
use jit_server::identity::Identity;
use jit_server::providers::Providers;
use jit_server::providers::aws::{AwsProviders, Tuning};
use jit_server::server::{Broker, build};
use jit_server::service::App;
use jit_server::store::audit;
use url::Url;

use crate::support::server::{Engine, FreshDb, fresh_db};
use crate::support::{init, peer_env};

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const HTTPS_PUBLIC_URL: &str = "https://jit.example.test";

/// The catalog of these tests: AWS roles only; `aws-prod-break` needs MFA and approvers may ask for
/// it; `aws-prod-context` needs authentication context `c1` to request and `c2` to approve.
const ENTITLEMENTS: &str = r#"
[[entitlement]]
id = "aws-prod-admin"
title = "AWS production — administrator"
kind = "aws_role"
role_arn = "arn:aws:iam::123456789012:role/JitAdmin"
max_duration = "4h"
approvals_required = 1
require_mfa = true

[[entitlement]]
id = "aws-prod-break"
title = "AWS production — incident access"
kind = "aws_role"
role_arn = "arn:aws:iam::123456789012:role/JitIncident"
max_duration = "1h"
approvals_required = 1
require_mfa = true

[[entitlement]]
id = "aws-sandbox"
title = "AWS sandbox"
kind = "aws_role"
role_arn = "arn:aws:iam::123456789012:role/JitSandbox"
max_duration = "2h"
approvals_required = 1

[[entitlement]]
id = "aws-prod-context"
title = "AWS production — behind an authentication context"
kind = "aws_role"
role_arn = "arn:aws:iam::123456789012:role/JitContext"
max_duration = "2h"
approvals_required = 1
auth_context = "c1"
approve_auth_context = "c2"

[[entitlement]]
id = "aws-prod-approve-context"
title = "AWS production — approvers need an authentication context"
kind = "aws_role"
role_arn = "arn:aws:iam::123456789012:role/JitApproveContext"
max_duration = "2h"
approvals_required = 1
approve_auth_context = "c2"
"#;

const EXTRA_CEDAR: &str = r#"
@id("web-test-approvers-ask-for-incident-access")
permit (
  principal in Group::"grp-jit-approvers",
  action == Action::"request",
  resource == Entitlement::"aws-prod-break"
);
"#;

/// An in-process broker in `OpenID Connect` mode.
struct OidcBroker {
    /// Where the test talks to it (always plain http on loopback).
    url: String,
    /// `server.public_url` (http as `url`, or https).
    public_url: String,
    app: App,
    _db: FreshDb,
    _policies: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

fn policy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies"));
    for entry in std::fs::read_dir(&repo).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|e| e == "cedar" || e == "cedarschema")
        {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(dir.path().join("entitlements.toml"), ENTITLEMENTS).unwrap();
    std::fs::write(dir.path().join("web-test.cedar"), EXTRA_CEDAR).unwrap();
    dir
}

fn oidc_config() -> OidcConfig {
    OidcConfig {
        issuer: peer_env("JIT_TEST_IDP_URL")
            .trim_end_matches('/')
            .to_owned(),
        client_id: "jit-web".to_owned(),
        client_secret: Secret::new("jit-web-secret"),
        scopes: ["openid", "profile", "email", "groups"]
            .map(str::to_owned)
            .to_vec(),
        api_audience: "api://jit-broker".to_owned(),
        cli_client_id: Some("jit-cli".to_owned()),
        cli_scopes: ["openid", "offline_access", "access"]
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

/// Starts a production-mode broker; with `https`, `server.public_url` is https (the test still
/// talks plain http to it, and the provider sends the browser back to the loopback callback).
async fn start(https: bool) -> OidcBroker {
    init();
    let db = fresh_db(Engine::Sqlite).await;
    let policies = policy_dir();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let public_url = if https {
        HTTPS_PUBLIC_URL.to_owned()
    } else {
        url.clone()
    };
    let mut config = Config::default();
    config.database.url = db.url.clone();
    config.server.public_url = public_url.clone();
    config.server.session_key = Some(Secret::new(base64_key()));
    config.policy.dir = policies.path().to_owned();
    config.oidc = Some(oidc_config());
    let aws = AwsConfig {
        region: "us-east-1".to_owned(),
        endpoint_url: Some(peer_env("JIT_TEST_MOTO_URL")),
        identity_center_instance_arn: None,
        identity_store_id: None,
        federation_url: "https://signin.aws.amazon.com/federation".to_owned(),
        console_url: "https://console.aws.amazon.com/".to_owned(),
    };
    config.aws = Some(aws.clone());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let credentials = Credentials::new("testing", "testing", None, None, "web-test");
    let providers =
        AwsProviders::with_credentials(&aws, &public_url, credentials, Tuning::default())
            .await
            .install(Providers::simulated());
    let identity = Identity::discover(
        config.oidc.as_ref().unwrap(),
        &format!("{url}/auth/callback"),
        clock.clone(),
        None,
    )
    .await
    .expect("discovery against the test IdP");
    let Broker { app, web } = build(
        config,
        false,
        AuthMode::Oidc(Arc::new(identity)),
        providers,
        clock,
    )
    .await
    .unwrap();
    let router = http::router(web);
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    OidcBroker {
        url,
        public_url,
        app,
        _db: db,
        _policies: policies,
        _server: server,
    }
}

fn base64_key() -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = (0..64).map(|_| rand::random::<u8>()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl OidcBroker {
    /// The origin browsers send with this broker's forms.
    fn origin(&self) -> String {
        Url::parse(&self.public_url)
            .unwrap()
            .origin()
            .ascii_serialization()
    }

    /// Audit events with `action`, oldest first (and the chain must verify).
    async fn events(&self, action: &str) -> Vec<audit::Event> {
        let report = audit::verify(&self.app.store, None).await.unwrap();
        assert!(report.ok, "audit chain broken: {report:?}");
        let mut events = audit::list(
            &self.app.store,
            &audit::Filter {
                action: Some(action.to_owned()),
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        events.reverse();
        events
    }
}

/// One `Set-Cookie`: name, value and attributes (lowercase names).
#[derive(Debug, Clone)]
struct SetCookie {
    name: String,
    value: String,
    attrs: HashMap<String, String>,
    raw: String,
}

impl SetCookie {
    fn parse(raw: &str) -> Self {
        let mut parts = raw.split(';').map(str::trim);
        let (name, value) = parts.next().unwrap().split_once('=').unwrap();
        let attrs = parts
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_ascii_lowercase(), v.to_owned())
            })
            .collect();
        Self {
            name: name.to_owned(),
            value: value.to_owned(),
            attrs,
            raw: raw.to_owned(),
        }
    }

    fn has(&self, attr: &str) -> bool {
        self.attrs.contains_key(attr)
    }
}

/// A response as the scripted browser saw it.
struct Page {
    url: Url,
    status: u16,
    location: Option<Url>,
    headers: reqwest::header::HeaderMap,
    set_cookies: Vec<SetCookie>,
    body: String,
}

impl Page {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The value of the first `<input name="NAME" value="…">`.
    fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no `{name}` field at {}: {}", self.url, self.body))
            + marker.len();
        self.body[start..].split('"').next().unwrap().to_owned()
    }
}

/// reqwest as a browser: no automatic redirects, a cookie jar per host that honours what the
/// server sets and clears (sending `Secure` cookies over http too, since the https broker is
/// reached over plain http in these tests).
struct Browser {
    http: reqwest::Client,
    jar: HashMap<String, HashMap<String, String>>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            jar: HashMap::new(),
        }
    }

    fn host(url: &Url) -> String {
        format!(
            "{}:{}",
            url.host_str().unwrap(),
            url.port_or_known_default().unwrap()
        )
    }

    /// The cookie `name` the browser holds for `url`'s host.
    fn cookie(&self, url: &str, name: &str) -> Option<String> {
        self.jar
            .get(&Self::host(&Url::parse(url).unwrap()))?
            .get(name)
            .cloned()
    }

    fn set_cookie(&mut self, url: &str, name: &str, value: &str) {
        self.jar
            .entry(Self::host(&Url::parse(url).unwrap()))
            .or_default()
            .insert(name.to_owned(), value.to_owned());
    }

    async fn send(
        &mut self,
        url: &str,
        form: Option<&[(&str, &str)]>,
        headers: &[(&str, &str)],
    ) -> Page {
        let url = Url::parse(url).unwrap();
        let mut request = match form {
            Some(form) => self.http.post(url.clone()).form(form),
            None => self.http.get(url.clone()),
        };
        if let Some(jar) = self.jar.get(&Self::host(&url)).filter(|j| !j.is_empty()) {
            let cookie = jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            request = request.header("cookie", cookie);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        let set_cookies: Vec<SetCookie> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| SetCookie::parse(v.to_str().unwrap()))
            .collect();
        let jar = self.jar.entry(Self::host(&url)).or_default();
        for c in &set_cookies {
            let expired = c.attrs.get("max-age").is_some_and(|a| a == "0")
                || c.raw
                    .to_ascii_lowercase()
                    .contains("expires=thu, 01 jan 1970");
            if expired || c.value.is_empty() {
                jar.remove(&c.name);
            } else {
                jar.insert(c.name.clone(), c.value.clone());
            }
        }
        let location = response
            .headers()
            .get("location")
            .map(|l| url.join(l.to_str().unwrap()).unwrap());
        Page {
            url,
            status: response.status().as_u16(),
            location,
            headers: response.headers().clone(),
            set_cookies,
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, url: &str) -> Page {
        self.send(url, None, &[]).await
    }

    /// A form post as a browser on `origin` sends it.
    async fn post(&mut self, url: &str, origin: &str, form: &[(&str, &str)]) -> Page {
        self.send(url, Some(form), &[("origin", origin)]).await
    }

    /// Follows redirects from `start`, answering the provider's login (as `login`) and consent
    /// forms, until a page that is not a redirect; every page on the way, in order.
    async fn walk(&mut self, start: &str, login: &str) -> Vec<Page> {
        let mut pages = Vec::new();
        let mut next = start.to_owned();
        for _ in 0..20 {
            let page = self.get(&next).await;
            let on_idp = page.url.path().starts_with("/interaction/");
            let location = page.location.clone();
            let form: Option<Vec<(&str, &str)>> = if location.is_some() {
                None
            } else if on_idp && page.body.contains("name=\"login\"") {
                Some(vec![
                    ("prompt", "login"),
                    ("login", login),
                    ("password", "x"),
                ])
            } else if on_idp {
                Some(vec![("prompt", "consent")])
            } else {
                None
            };
            let url = page.url.to_string();
            pages.push(page);
            if let Some(form) = form {
                let answer = self.send(&url, Some(&form), &[]).await;
                next = answer
                    .location
                    .clone()
                    .unwrap_or_else(|| panic!("form at {url} did not redirect: {}", answer.body))
                    .to_string();
                pages.push(answer);
            } else if let Some(location) = location {
                next = location.to_string();
            } else {
                return pages;
            }
        }
        panic!("sign-in did not finish from {start}");
    }

    /// Signs in as `login` starting at `path` on `broker`; the pages on the way.
    async fn sign_in(&mut self, broker: &OidcBroker, login: &str, path: &str) -> Vec<Page> {
        let pages = self.walk(&format!("{}{path}", broker.url), login).await;
        let last = pages.last().unwrap();
        assert_eq!(
            last.status, 200,
            "sign-in ended at {}: {}",
            last.url, last.body
        );
        assert!(
            last.url.as_str().starts_with(&broker.url),
            "ended at {}",
            last.url
        );
        pages
    }
}

/// The broker's `Set-Cookie`s (session cookie) among `pages`, in order.
fn session_cookies(pages: &[Page], broker: &OidcBroker) -> Vec<SetCookie> {
    pages
        .iter()
        .filter(|p| p.url.as_str().starts_with(&broker.url))
        .flat_map(|p| p.set_cookies.clone())
        .filter(|c| c.name.ends_with("jit_session"))
        .collect()
}

fn assert_security_headers(page: &Page, hsts: bool) {
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'"),
        "{}: CSP `{csp}`",
        page.url
    );
    assert!(
        csp.contains("frame-ancestors 'none'"),
        "{}: CSP `{csp}`",
        page.url
    );
    assert!(!csp.contains("unsafe-inline"), "{}: CSP `{csp}`", page.url);
    assert_eq!(
        page.header("x-content-type-options"),
        Some("nosniff"),
        "{}",
        page.url
    );
    let referrer = page.header("referrer-policy").unwrap_or_default();
    assert!(
        [
            "same-origin",
            "no-referrer",
            "strict-origin",
            "strict-origin-when-cross-origin"
        ]
        .contains(&referrer),
        "{}: Referrer-Policy `{referrer}`",
        page.url
    );
    let sts = page.header("strict-transport-security");
    if hsts {
        assert!(
            sts.is_some_and(|v| v.contains("max-age=")),
            "{}: no HSTS",
            page.url
        );
    } else {
        assert_eq!(sts, None, "{}: HSTS over plain http", page.url);
    }
}

#[tokio::test]
async fn sign_in_rotates_the_session_id_and_sets_a_strict_cookie() {
    let broker = start(false).await;
    let mut browser = Browser::new();

    let login = browser
        .get(&format!("{}/login?next=/approvals", broker.url))
        .await;
    assert_eq!(login.status, 303, "{}", login.body);
    let authorize = login.location.clone().unwrap();
    assert!(
        authorize
            .as_str()
            .starts_with(&peer_env("JIT_TEST_IDP_URL")),
        "{authorize}"
    );
    assert_security_headers(&login, false);
    let pre = login
        .set_cookies
        .iter()
        .find(|c| c.name == "jit_session")
        .expect("a pre-login cookie")
        .clone();
    for attr in ["httponly", "path", "samesite"] {
        assert!(
            pre.has(attr),
            "pre-login cookie without {attr}: {}",
            pre.raw
        );
    }
    assert!(
        !pre.has("secure"),
        "Secure over a plain http public URL: {}",
        pre.raw
    );

    let pages = browser.walk(authorize.as_str(), "alice").await;
    let last = pages.last().unwrap();
    assert_eq!(
        last.url.path(),
        "/approvals",
        "the sign-in returns to where it started"
    );
    assert_eq!(last.status, 200, "{}", last.body);
    assert_security_headers(last, false);
    let signed_in = session_cookies(&pages, &broker);
    assert_eq!(signed_in.len(), 1, "{signed_in:?}");
    let cookie = &signed_in[0];
    assert_eq!(cookie.name, "jit_session");
    assert!(cookie.has("httponly"), "{}", cookie.raw);
    assert_eq!(
        cookie.attrs.get("samesite").map(String::as_str),
        Some("Lax"),
        "{}",
        cookie.raw
    );
    assert_eq!(
        cookie.attrs.get("path").map(String::as_str),
        Some("/"),
        "{}",
        cookie.raw
    );
    assert!(!cookie.has("domain"), "{}", cookie.raw);
    assert!(!cookie.has("secure"), "{}", cookie.raw);
    assert_ne!(
        cookie.value, pre.value,
        "the session id was not rotated at sign-in"
    );

    // The new id works, the pre-login one is gone.
    let home = browser.get(&format!("{}/", broker.url)).await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("My access"), "{}", home.body);
    let mut stale = Browser::new();
    stale.set_cookie(&broker.url, "jit_session", &pre.value);
    let refused = stale.get(&format!("{}/", broker.url)).await;
    assert_eq!(refused.status, 303);
    assert_eq!(refused.location.unwrap().path(), "/login");

    let events = broker.events("auth.signed_in").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].actor, "alice@example.com");
    assert!(events[0].data.contains("\"oidc\""), "{}", events[0].data);
}

#[tokio::test]
async fn https_public_url_makes_the_cookie_secure_and_host_prefixed_and_sends_hsts() {
    let broker = start(true).await;
    let mut browser = Browser::new();
    let login = browser.get(&format!("{}/login", broker.url)).await;
    assert_eq!(login.status, 303);
    assert_security_headers(&login, true);
    let pre = &login.set_cookies[0];
    assert_eq!(pre.name, "__Host-jit_session", "{}", pre.raw);
    assert!(pre.has("secure") && pre.has("httponly"), "{}", pre.raw);
    assert_eq!(
        pre.attrs.get("path").map(String::as_str),
        Some("/"),
        "{}",
        pre.raw
    );
    assert!(
        !pre.has("domain"),
        "__Host- cookies carry no Domain: {}",
        pre.raw
    );

    let pages = browser
        .walk(login.location.unwrap().as_str(), "carol")
        .await;
    let last = pages.last().unwrap();
    assert_eq!(last.status, 200, "{}", last.body);
    assert_security_headers(last, true);
    let cookie = session_cookies(&pages, &broker)
        .pop()
        .expect("a signed-in cookie");
    assert_eq!(cookie.name, "__Host-jit_session");
    assert!(
        cookie.has("secure") && cookie.has("httponly"),
        "{}",
        cookie.raw
    );
    assert_eq!(
        cookie.attrs.get("samesite").map(String::as_str),
        Some("Lax")
    );
    assert_eq!(cookie.attrs.get("path").map(String::as_str), Some("/"));
    assert_ne!(cookie.value, pre.value);

    // Forms must come from the https origin now, not from where the test happens to connect.
    let csrf = last.field("csrf");
    let wrong = browser
        .post(
            &format!("{}/logout", broker.url),
            &broker.url,
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    let right = browser
        .post(
            &format!("{}/logout", broker.url),
            &broker.origin(),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(right.status, 200, "{}", right.body);
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server_and_is_audited() {
    let broker = start(false).await;
    let mut browser = Browser::new();
    let pages = browser.sign_in(&broker, "bob", "/").await;
    let csrf = pages.last().unwrap().field("csrf");
    let session = browser.cookie(&broker.url, "jit_session").unwrap();

    // A forged logout (no token, or another origin) does nothing.
    let logout = format!("{}/logout", broker.url);
    assert_eq!(
        browser.post(&logout, &broker.origin(), &[]).await.status,
        403
    );
    assert_eq!(
        browser
            .post(&logout, "https://evil.example", &[("csrf", &csrf)])
            .await
            .status,
        403
    );
    assert_eq!(browser.get(&format!("{}/", broker.url)).await.status, 200);
    assert!(broker.events("auth.signed_out").await.is_empty());

    // A page of the broker's own that goes on to the provider by GET (a redirect of the form
    // post to another origin would break `form-action 'self'` in browsers).
    let out = browser
        .post(&logout, &broker.origin(), &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(out.header("cache-control"), Some("no-store"));
    assert!(
        out.header("content-security-policy")
            .is_some_and(|csp| csp.contains("form-action 'self'")),
        "{:?}",
        out.header("content-security-policy")
    );
    let cleared = out
        .set_cookies
        .iter()
        .find(|c| c.name == "jit_session")
        .expect("the cookie is cleared");
    assert!(
        cleared.value.is_empty() && cleared.attrs.get("max-age").map(String::as_str) == Some("0"),
        "{}",
        cleared.raw
    );

    // Whoever kept the old cookie is sent to sign in again: the session is gone on the server.
    let mut kept = Browser::new();
    kept.set_cookie(&broker.url, "jit_session", &session);
    let page = kept.get(&format!("{}/approvals", broker.url)).await;
    assert_eq!(page.status, 303);
    let to = page.location.unwrap();
    assert_eq!(to.path(), "/login");
    assert_eq!(to.query(), Some("next=%2Fapprovals"));

    let events = broker.events("auth.signed_out").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor, "bob@example.com");

    // The provider ends its own session (RP-initiated logout, after its confirmation form),
    // then sends the browser to the signed-out page.
    let back = end_session_at_the_provider(&mut browser, &out, &broker).await;
    // The signed-out page says so and offers a new sign-in; it does not start one by itself.
    let page = browser.get(back.as_str()).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("You are signed out"), "{}", page.body);
    assert!(page.body.contains(r#"href="/login""#), "{}", page.body);
    assert!(
        page.set_cookies.is_empty(),
        "{:?}",
        page.set_cookies.iter().map(|c| &c.raw).collect::<Vec<_>>()
    );
    // The provider's session is gone: signing in again asks for the login.
    let again = browser.walk(&format!("{}/", broker.url), "bob").await;
    assert!(
        again.iter().any(|p| p.body.contains("name=\"login\"")),
        "signed back in without a login form"
    );
    // A logout with no session left ends on the signed-out page too.
    let stale = Browser::new()
        .post(&logout, &broker.origin(), &[("csrf", &csrf)])
        .await;
    assert_eq!(stale.location.as_ref().map(Url::path), Some("/signed-out"));
}

/// Follows the page `POST /logout` answered with to the provider's end-session endpoint,
/// confirms there, and returns where the provider sends the browser back to.
async fn end_session_at_the_provider(
    browser: &mut Browser,
    out: &Page,
    broker: &OidcBroker,
) -> Url {
    let end_session = handoff_target(out);
    assert!(
        end_session.as_str().starts_with(&format!(
            "{}/session/end?",
            peer_env("JIT_TEST_IDP_URL").trim_end_matches('/')
        )),
        "{end_session}"
    );
    let query: HashMap<_, _> = end_session.query_pairs().into_owned().collect();
    assert!(query.contains_key("id_token_hint"), "{end_session}");
    assert_eq!(
        query.get("post_logout_redirect_uri"),
        Some(&format!("{}/signed-out", broker.url)),
        "{end_session}"
    );
    let confirm = browser.get(end_session.as_str()).await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    let action = confirm.body.split("action=\"").nth(1).unwrap();
    let action = end_session.join(action.split('"').next().unwrap()).unwrap();
    let xsrf = confirm.field("xsrf");
    let done = browser
        .send(
            action.as_str(),
            Some(&[("xsrf", xsrf.as_str()), ("logout", "yes")]),
            &[],
        )
        .await;
    let back = done.location.unwrap_or_else(|| panic!("{}", done.body));
    assert_eq!(
        back.as_str().split('?').next(),
        Some(format!("{}/signed-out", broker.url).as_str())
    );
    back
}

/// Form fields or request headers.
type Fields<'a> = Vec<(&'a str, &'a str)>;

/// The new-request form for `aws-sandbox`, with `csrf` when given.
fn sandbox_form(csrf: Option<&str>) -> Fields<'_> {
    let mut f = vec![
        ("entitlement", "aws-sandbox"),
        ("duration", "1h"),
        ("justification", "forged?"),
    ];
    if let Some(c) = csrf {
        f.push(("csrf", c));
    }
    f
}

#[tokio::test]
async fn readiness_asks_for_the_providers_signing_keys() {
    let broker = start(false).await;
    let res = reqwest::get(format!("{}/readyz", broker.url))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ready: serde_json::Value = res.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    let idp = &ready["identity_provider"];
    assert_eq!(
        idp["issuer"].as_str().map(|i| i.trim_end_matches('/')),
        Some(peer_env("JIT_TEST_IDP_URL").trim_end_matches('/')),
        "{ready}"
    );
    assert!(
        idp["signing_keys"].as_u64().is_some_and(|n| n >= 1),
        "{ready}"
    );
}

#[tokio::test]
async fn forged_cross_site_posts_are_refused_and_change_nothing() {
    let broker = start(false).await;
    let mut browser = Browser::new();
    let pages = browser.sign_in(&broker, "alice", "/requests/new").await;
    let csrf = pages.last().unwrap().field("csrf");
    let create = format!("{}/requests", broker.url);
    let with_token = sandbox_form(Some(&csrf));
    let attempts: [(Fields, Fields); 6] = [
        (sandbox_form(None), vec![("origin", broker.url.as_str())]),
        (
            sandbox_form(Some("not-the-token")),
            vec![("origin", broker.url.as_str())],
        ),
        (with_token.clone(), vec![("origin", "https://evil.example")]),
        (with_token.clone(), vec![("origin", "null")]),
        (
            with_token.clone(),
            vec![("referer", "https://evil.example/prize")],
        ),
        (with_token.clone(), vec![]),
    ];
    for (fields, headers) in &attempts {
        let page = browser.send(&create, Some(fields), headers).await;
        assert_eq!(page.status, 403, "{headers:?}: {}", page.body);
        assert!(
            !page.body.contains("sqlx") && !page.body.contains("panicked"),
            "{}",
            page.body
        );
    }
    assert!(
        broker.events("request.created").await.is_empty(),
        "a forged post filed a request"
    );

    // The same form from the broker's own origin goes through (the checks refuse only forgeries).
    let page = browser.post(&create, &broker.origin(), &with_token).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(page.location.unwrap().path().starts_with("/requests/"));
    assert_eq!(broker.events("request.created").await.len(), 1);
}

#[tokio::test]
async fn refused_sign_ins_are_audited() {
    let broker = start(false).await;
    let mut browser = Browser::new();
    // A callback nobody started (no pre-login session): refused.
    let page = browser
        .get(&format!(
            "{}/auth/callback?code=stolen&state=guessed",
            broker.url
        ))
        .await;
    assert_eq!(page.status, 401, "{}", page.body);
    // One the provider refused (the user cancelled): refused, and the pre-login state is spent.
    let login = browser.get(&format!("{}/login", broker.url)).await;
    let state = login
        .location
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let cancelled = browser
        .get(&format!(
            "{}/auth/callback?error=access_denied&state={state}",
            broker.url
        ))
        .await;
    assert_eq!(cancelled.status, 401, "{}", cancelled.body);
    assert!(
        !cancelled.body.contains(&state),
        "the error page echoes the state"
    );
    let home = browser.get(&format!("{}/", broker.url)).await;
    assert_eq!(home.status, 303, "a refused sign-in signed someone in");

    let events = broker.events("auth.refused").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e.actor == "anonymous"));
    assert!(
        events[0].data.contains("no pre-login session"),
        "{}",
        events[0].data
    );
    assert!(broker.events("auth.signed_in").await.is_empty());
}

#[tokio::test]
async fn a_request_for_an_mfa_entitlement_without_mfa_steps_up_at_the_provider() {
    let broker = start(false).await;
    let mut browser = Browser::new();
    let pages = browser.sign_in(&broker, "bob", "/requests/new").await;
    let csrf = pages.last().unwrap().field("csrf");
    let fields = [
        ("csrf", csrf.as_str()),
        ("entitlement", "aws-prod-break"),
        ("duration", "30m"),
        ("justification", "incident INC-1"),
    ];
    let create = format!("{}/requests", broker.url);
    let page = browser.post(&create, &broker.origin(), &fields).await;
    assert!(broker.events("request.created").await.is_empty());

    // To the provider, told to authenticate again, recently.
    let (authorize, q) = at_the_provider(&page);
    assert_eq!(
        q.get("prompt").map(String::as_str),
        Some("login"),
        "{authorize}"
    );
    assert_eq!(
        q.get("max_age").map(String::as_str),
        Some("3600"),
        "{authorize}"
    );
    assert!(!q.contains_key("claims"), "{authorize}");

    // Bob signs in again with MFA (the provider shows its login form despite his session there),
    // comes back to the form, and now the request goes through.
    let pages = browser.walk(authorize.as_str(), "bob+mfa").await;
    assert!(
        pages.iter().any(|p| p.body.contains("name=\"login\"")),
        "the provider did not ask for the login again"
    );
    let last = pages.last().unwrap();
    assert_eq!(last.url.path(), "/requests/new");
    assert_eq!(last.field("duration"), "30m");
    let csrf = last.field("csrf");
    let fields = [
        ("csrf", csrf.as_str()),
        ("entitlement", "aws-prod-break"),
        ("duration", "30m"),
        ("justification", "incident INC-1"),
    ];
    let page = browser.post(&create, &broker.origin(), &fields).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(page.location.unwrap().path().starts_with("/requests/"));
    let signed_in = broker.events("auth.signed_in").await;
    assert_eq!(signed_in.len(), 2);
    assert!(
        signed_in[1].data.contains("\"mfa\":true"),
        "{}",
        signed_in[1].data
    );
    assert_eq!(broker.events("request.created").await.len(), 1);
}

/// Development mode filters `next` as production does: a tab or line break (which browsers drop
/// from URLs), another host, a backslash or a bidirectional control never leaves the site, and
/// never breaks the redirect either.
#[tokio::test]
async fn development_sign_in_returns_only_to_local_paths() {
    let broker = crate::support::server::start(Engine::Sqlite).await;
    for (next, expect) in [
        ("/approvals?x=1", "/approvals?x=1"),
        ("/\t/evil.example/phish", "/"),
        ("/\n/evil.example", "/"),
        ("/a\r\nSet-Cookie: x=y", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/\u{202E}lmth.xedni", "/"),
        ("https://evil.example/", "/"),
    ] {
        let mut browser = Browser::new();
        let encoded: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let login = browser
            .get(&format!("{}/login?next={encoded}", broker.url))
            .await;
        assert_eq!(login.status, 200, "{next:?}: {}", login.body);
        assert_eq!(login.field("next"), html_escaped(expect), "{next:?}");
        let csrf = login.field("csrf");
        // A hand-made post with the raw `next`: the filter runs again on the way out.
        let page = browser
            .post(
                &format!("{}/login/dev", broker.url),
                &broker.url,
                &[("csrf", &csrf), ("user", "alice"), ("next", next)],
            )
            .await;
        assert_eq!(page.status, 303, "{next:?}: {}", page.body);
        assert_eq!(
            page.header("location"),
            Some(expect),
            "{next:?} must lead to {expect:?}"
        );
    }
}

/// Where a page of the broker that hands over to another site (`http::handoff`: a form post's
/// answer) sends the browser: its refresh, which its link must equal.
fn handoff_target(page: &Page) -> Url {
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let attribute = |before: &str| {
        page.body
            .split(before)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no {before}: {}", page.body))
            .to_owned()
    };
    let refresh = attribute(r#"<meta http-equiv="refresh" content="0; url="#);
    assert_eq!(
        refresh,
        attribute("<p><a href=\""),
        "the link goes elsewhere"
    );
    Url::parse(&refresh.replace("&#38;", "&").replace("&amp;", "&")).unwrap()
}

/// A form post answered with the way to the provider's authorization endpoint (by a handoff
/// page, as `form-action 'self'` wants): the URL and its query.
fn at_the_provider(page: &Page) -> (Url, HashMap<String, String>) {
    let authorize = handoff_target(page);
    assert!(
        authorize
            .as_str()
            .starts_with(&format!("{}/auth?", peer_env("JIT_TEST_IDP_URL"))),
        "{authorize}"
    );
    let query = authorize.query_pairs().into_owned().collect();
    (authorize, query)
}

/// Text as askama escapes it in a page.
fn html_escaped(text: &str) -> String {
    text.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// An `auth_context` entitlement sends the requester through the provider again with the claims
/// request for the context, and back to the form with what she typed; the approver of an
/// `approve_auth_context` entitlement is sent the same way, his comment kept. The audit events
/// record the context satisfied and the sign-in time.
#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one story from the refusal to the audit event, told in order"
)]
async fn authentication_contexts_step_up_at_the_provider_and_keep_the_form() {
    let broker = start(false).await;
    let mut alice = Browser::new();
    let pages = alice.sign_in(&broker, "alice", "/requests/new").await;
    let csrf = pages.last().unwrap().field("csrf");
    let justification = "incident INC-9: ünïcødé & <angle> \"quotes\"";
    let fields = [
        ("csrf", csrf.as_str()),
        ("entitlement", "aws-prod-context"),
        ("duration", "45m"),
        ("justification", justification),
        ("ticket", "INC-9"),
    ];
    let create = format!("{}/requests", broker.url);
    let page = alice.post(&create, &broker.origin(), &fields).await;
    assert!(broker.events("request.created").await.is_empty());
    // To the provider, asking for the context in the ID token.
    let (authorize, q) = at_the_provider(&page);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&q["claims"]).unwrap(),
        serde_json::json!({"id_token": {"acrs": {"essential": true, "value": "c1"}}})
    );
    assert_eq!(q["max_age"], "3600");
    assert!(!q.contains_key("prompt"), "{authorize}");
    // Alice signs in with MFA anyway: the provider grants `c1` without asking again.
    let pages = alice.walk(authorize.as_str(), "alice").await;
    let back = pages.last().unwrap();
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.url.path(), "/requests/new");
    assert_eq!(back.url.query(), Some("resume=1"));
    assert_eq!(back.field("duration"), "45m");
    assert_eq!(back.field("ticket"), "INC-9");
    assert!(
        back.body
            .contains(&format!(">{}</textarea>", html_escaped(justification))),
        "the justification is not kept: {}",
        back.body
    );
    assert!(
        back.body
            .contains(r#"value="aws-prod-context" required checked"#),
        "the entitlement is not chosen: {}",
        back.body
    );
    let csrf = back.field("csrf");
    let fields = [
        ("csrf", csrf.as_str()),
        ("entitlement", "aws-prod-context"),
        ("duration", "45m"),
        ("justification", justification),
        ("ticket", "INC-9"),
    ];
    let page = alice.post(&create, &broker.origin(), &fields).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let request_path = page.location.unwrap().path().to_owned();
    let created = broker.events("request.created").await;
    assert_eq!(created.len(), 1);
    let data: serde_json::Value = serde_json::from_str(&created[0].data).unwrap();
    assert_eq!(data["auth_context"], "c1", "{data}");
    assert!(
        data["auth_time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{data}"
    );
    assert_eq!(data["justification"], justification);
    let signed_in = broker.events("auth.signed_in").await;
    assert!(
        signed_in.last().unwrap().data.contains(r#""acrs":["c1"]"#),
        "{}",
        signed_in.last().unwrap().data
    );

    // Bob approves with a comment: without `c2` (and without MFA) he is sent to sign in again,
    // the provider asks for his login, and the comment is still there when he is back.
    let mut bob = Browser::new();
    let pages = bob.sign_in(&broker, "bob", &request_path).await;
    let csrf = pages.last().unwrap().field("csrf");
    let approve = format!("{}{request_path}/approve", broker.url);
    let comment = "ok for INC-9 — d’accord";
    let page = bob
        .post(
            &approve,
            &broker.origin(),
            &[("csrf", &csrf), ("comment", comment)],
        )
        .await;
    let (authorize, q) = at_the_provider(&page);
    assert!(q["claims"].contains(r#""value":"c2""#), "{authorize}");
    assert!(broker.events("request.approval").await.is_empty());
    let pages = bob.walk(authorize.as_str(), "bob+mfa").await;
    assert!(
        pages.iter().any(|p| p.body.contains("name=\"login\"")),
        "the provider did not ask bob for his login again"
    );
    let back = pages.last().unwrap();
    assert_eq!(back.url.path(), request_path);
    assert!(
        back.body
            .contains(&format!(">{}</textarea>", html_escaped(comment))),
        "the comment is not kept: {}",
        back.body
    );
    let csrf = back.field("csrf");
    let page = bob
        .post(
            &approve,
            &broker.origin(),
            &[("csrf", &csrf), ("comment", comment)],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let approval = broker.events("request.approval").await;
    assert_eq!(approval.len(), 1);
    let data: serde_json::Value = serde_json::from_str(&approval[0].data).unwrap();
    assert_eq!(data["auth_context"], "c2", "{data}");
    assert_eq!(data["comment"], comment);
    assert!(data["auth_time"].is_string(), "{data}");
}

/// Over the API the same rules answer with RFC 9470's challenge: 401, `WWW-Authenticate: Bearer
/// error="insufficient_user_authentication", acr_values="c1", max_age=3600` and the error body
/// `step_up_required`; a token from a sign-in that asked for the context passes. Denying takes
/// no step-up; approving does.
#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one story from the refusal to the audit event, told in order"
)]
async fn the_api_challenges_for_the_authentication_context_as_rfc_9470_says() {
    use crate::identity::browser::{access_token, device_tokens_with};
    use base64::Engine as _;
    let broker = start(false).await;
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}/api/v1{path}", broker.url);
    let claims = |context: &str| {
        serde_json::json!({
            "access_token": {"acrs": {"essential": true, "value": context}},
            "id_token": {"acrs": {"essential": true, "value": context}},
        })
        .to_string()
    };
    let scope = "openid profile email groups access";
    let plain = access_token(&device_tokens_with("alice", scope, &[]).await);
    let body = serde_json::json!({
        "entitlement": "aws-prod-context", "duration": "30m", "justification": "INC-9"
    });
    let refused = http
        .post(api("/requests"))
        .bearer_auth(&plain)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let challenge = refused
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    for part in [
        "Bearer ",
        r#"error="insufficient_user_authentication""#,
        r#"acr_values="c1""#,
        "max_age=3600",
    ] {
        assert!(challenge.contains(part), "{part} not in {challenge}");
    }
    let entra_claims = challenge
        .split(r#"claims=""#)
        .nth(1)
        .and_then(|c| c.split('"').next())
        .unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entra_claims)
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&decoded).unwrap(),
        serde_json::json!({"access_token": {"acrs": {"essential": true, "value": "c1"}}})
    );
    let error: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "step_up_required", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("authentication context `c1`"),
        "{error}"
    );
    assert!(broker.events("request.created").await.is_empty());

    // Signed in again asking for `c1`: filed, and the audit event says with what.
    let stepped =
        access_token(&device_tokens_with("alice", scope, &[("claims", &claims("c1"))]).await);
    let created = http
        .post(api("/requests"))
        .bearer_auth(&stepped)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let request: serde_json::Value = created.json().await.unwrap();
    let id = request["id"].as_str().unwrap().to_owned();
    let data: serde_json::Value =
        serde_json::from_str(&broker.events("request.created").await[0].data).unwrap();
    assert_eq!(data["auth_context"], "c1", "{data}");

    // Approving needs `c2` of the approver; a context he has not got is no help.
    let bob_c1 =
        access_token(&device_tokens_with("bob+mfa", scope, &[("claims", &claims("c1"))]).await);
    let approve = api(&format!("/requests/{id}/approve"));
    let refused = http
        .post(&approve)
        .bearer_auth(&bob_c1)
        .json(&serde_json::json!({"comment": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains(r#"acr_values="c2""#), "{challenge}");
    assert_eq!(
        refused.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "step_up_required"
    );
    let bob_c2 =
        access_token(&device_tokens_with("bob+mfa", scope, &[("claims", &claims("c2"))]).await);
    let approved = http
        .post(&approve)
        .bearer_auth(&bob_c2)
        .json(&serde_json::json!({"comment": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    let data: serde_json::Value =
        serde_json::from_str(&broker.events("request.approval").await[0].data).unwrap();
    assert_eq!(data["auth_context"], "c2", "{data}");
    // Without the second factor the provider leaves `c2` out: still refused. Denying grants
    // nothing: no step-up.
    let bob_plain =
        access_token(&device_tokens_with("bob", scope, &[("claims", &claims("c2"))]).await);
    let other = http
        .post(api("/requests"))
        .bearer_auth(&plain)
        .json(&serde_json::json!({
            "entitlement": "aws-prod-approve-context", "duration": "30m", "justification": "INC-10"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 201, "requesting needs no context here");
    let other: serde_json::Value = other.json().await.unwrap();
    let other_id = other["id"].as_str().unwrap();
    let refused = http
        .post(api(&format!("/requests/{other_id}/approve")))
        .bearer_auth(&bob_plain)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let denied = http
        .post(api(&format!("/requests/{other_id}/deny")))
        .bearer_auth(&bob_plain)
        .json(&serde_json::json!({"comment": "no"}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 200);
}

#[tokio::test]
async fn the_request_form_schedules_access_and_the_page_shows_its_start() {
    let broker = start(false).await;
    let mut browser = Browser::new();
    let pages = browser.sign_in(&broker, "alice", "/requests/new").await;
    let form = pages.last().unwrap();
    assert!(
        form.body
            .contains(r#"name="start_at" type="datetime-local""#),
        "{}",
        form.body
    );
    let csrf = form.field("csrf");
    let create = format!("{}/requests", broker.url);
    let fields = |start| {
        let mut f = sandbox_form(Some(&csrf));
        f.push(("start_at", start));
        f
    };
    // Not a date: the form comes back with the reason, and nothing is filed.
    let page = browser
        .post(&create, &broker.origin(), &fields("tomorrow"))
        .await;
    assert_eq!(page.status, 422, "{}", page.body);
    assert!(
        page.body.contains("is not a date and time like"),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"value="tomorrow""#), "{}", page.body);
    assert!(broker.events("request.created").await.is_empty());
    // Two hours ahead (UTC, as the field says): filed with that start (it waits for approval).
    let start = (time::OffsetDateTime::now_utc() + time::Duration::hours(2))
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]"
        ))
        .unwrap();
    let page = browser
        .post(&create, &broker.origin(), &fields(&start))
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let shown = browser.get(page.location.unwrap().as_str()).await;
    assert!(
        shown.body.contains(&format!(
            r#"id="starts">{}:00 UTC"#,
            start.replace('T', " ")
        )),
        "{}",
        shown.body
    );
    assert!(shown.body.contains(r#"id="starts""#), "{}", shown.body);
    assert!(shown.body.contains(r#"id="cancel""#), "{}", shown.body);
    assert_eq!(broker.events("request.created").await.len(), 1);
}
