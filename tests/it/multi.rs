//! Two real `jit-server` processes on one PostgreSQL database under
//! concurrent load: 100 requests from two requesters, each filed through one
//! broker and decided through the other (two approvers racing for the same
//! approval), Identity Center assignments made for real in moto. No
//! duplicate grants, every request ends in one consistent state, every job
//! runs once, the audit chain verifies, and no secret reaches the logs.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use jit_server::store::query;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::broker_aws::{ACCOUNT, assert_no_secrets, database_text, policy_dir, random_hex};
use crate::chaos::{
    ReqRow, Spawned, Upstream, audit_verify, dev_token, now_ms, requests, wait_for_reconcile,
};
use crate::support::server::{Engine, fresh_db};
use jit_server::store::Store;

/// Entitlements; each requester works on each in its own lane.
const ENTITLEMENTS: usize = 10;
/// Requests per (requester, entitlement) lane: 2 × 10 × 5 = 100.
const PER_LANE: usize = 5;

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let res = self
            .http
            .post(format!("{}/api/v1{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn state(&self, id: &str) -> String {
        let res: Value = self
            .http
            .get(format!("{}/api/v1/requests/{id}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        res["state"].as_str().unwrap().to_owned()
    }

    /// Waits until the request is in one of `want`; returns that state.
    async fn wait_state(&self, id: &str, want: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let state = self.state(id).await;
            if want.contains(&state.as_str()) {
                return state;
            }
            assert!(
                start.elapsed() < Duration::from_mins(1),
                "request {id} is {state}, never {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// What a lane expects of each of its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Deny,
    Cancel,
    Revoke,
    Expire,
}

/// One requester on one entitlement: requests one after another, each filed
/// through one broker and decided through the other.
async fn lane(
    requester: [Api; 2],
    approvers: [Api; 2],
    entitlement: String,
    lane_no: usize,
) -> Vec<(String, Plan)> {
    let mut done = Vec::new();
    for i in 0..PER_LANE {
        let (here, there) = ((lane_no + i) % 2, (lane_no + i + 1) % 2);
        let plan = match (lane_no + i) % 5 {
            0 => Plan::Deny,
            1 => Plan::Cancel,
            2 | 3 => Plan::Revoke,
            _ => Plan::Expire,
        };
        let duration = if plan == Plan::Expire { "2s" } else { "1h" };
        let (status, body) = requester[here]
            .post(
                "/requests",
                json!({ "entitlement": entitlement, "duration": duration, "justification": "load" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        match plan {
            Plan::Deny => {
                let (status, body) = approvers[there]
                    .post(&format!("/requests/{id}/deny"), json!({ "comment": "no" }))
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
            }
            Plan::Cancel => {
                let (status, body) = requester[there]
                    .post(&format!("/requests/{id}/cancel"), json!({}))
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
            }
            Plan::Revoke | Plan::Expire => {
                // Both approvers at once, through different brokers: one wins.
                let path = format!("/requests/{id}/approve");
                let (a, b) = tokio::join!(
                    approvers[there].post(&path, json!({ "comment": "ok" })),
                    approvers[here].post(&path, json!({ "comment": "ok too" })),
                );
                let mut statuses = [a.0, b.0];
                statuses.sort();
                assert!(
                    statuses[0] == StatusCode::OK
                        && matches!(
                            statuses[1],
                            StatusCode::OK | StatusCode::CONFLICT | StatusCode::FORBIDDEN
                        ),
                    "{a:?} {b:?}"
                );
                // A short grant may be over before anyone looks.
                requester[there]
                    .wait_state(&id, &["active", "expired"])
                    .await;
                if plan == Plan::Revoke {
                    let (status, body) = requester[here]
                        .post(&format!("/requests/{id}/revoke"), json!({}))
                        .await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                } else {
                    requester[here].wait_state(&id, &["expired"]).await;
                }
            }
        }
        done.push((id, plan));
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn two_brokers_share_one_database_under_load() {
    let up = Upstream::new("multi", ENTITLEMENTS, &["alice", "oscar"]).await;
    let billing = up.moto.permission_set();
    let catalog = up.catalog(1);
    let policies = policy_dir(|text| {
        text.replace(
            "arn:aws:sso:::permissionSet/ssoins-1111111111111111/ps-1111111111111111",
            &billing,
        )
        .replace(
            "account_id = \"111111111111\"",
            &format!("account_id = \"{ACCOUNT}\""),
        ) + &catalog
    });
    let db = fresh_db(Engine::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let broker_secret = random_hex(40);
    let mut env = up.env(
        &format!("AKIA{}", random_hex(16).to_uppercase()),
        &broker_secret,
    );
    env.extend(
        [
            ("JIT_DATABASE__URL", db.url.as_str()),
            ("JIT_POLICY__DIR", policies.path().to_str().unwrap()),
            ("JIT_SCHEDULER__TICK", "1s"),
            ("JIT_SCHEDULER__RECONCILE_EVERY", "10s"),
            ("JIT_LOG", "debug,sqlx=info,hyper=info,h2=info,rustls=info"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let logs = [dir.path().join("a.log"), dir.path().join("b.log")];
    // One starts first (migrations), then the other.
    let a = Spawned::start(dir.path(), &env, &logs[0]).await;
    let b = Spawned::start(dir.path(), &env, &logs[1]).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut secrets = vec![broker_secret];
    let mut api = HashMap::new();
    for user in ["alice", "oscar", "bob", "dave"] {
        let mut pair = Vec::new();
        for server in [&a, &b] {
            let token = dev_token(&http, &server.url, user).await;
            secrets.push(token.clone());
            pair.push(Api {
                http: http.clone(),
                url: server.url.clone(),
                token,
            });
        }
        api.insert(user, [pair[0].clone(), pair[1].clone()]);
    }
    let store = jit_server::store::Store::connect(&db.url, 2).await.unwrap();

    // Watch upstream while the load runs: never two assignments of one target.
    let watch = {
        let up_ents = up.entitlements.clone();
        let moto = crate::broker_aws::Moto::connect().await;
        tokio::spawn(async move {
            let mut worst = 0;
            loop {
                for ps in up_ents.values() {
                    let listed = moto.assigned(ps).await;
                    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
                    for p in &listed {
                        *counts.entry(p).or_insert(0) += 1;
                    }
                    worst = worst.max(counts.values().copied().max().unwrap_or(0));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                if worst > 1 {
                    return worst;
                }
            }
        })
    };

    let started = Instant::now();
    let mut lanes = tokio::task::JoinSet::new();
    for (n, (requester, entitlement)) in ["alice", "oscar"]
        .iter()
        .flat_map(|u| up.entitlements.keys().map(move |e| (*u, e.clone())))
        .enumerate()
    {
        lanes.spawn(lane(
            api[requester].clone(),
            [api["bob"][0].clone(), api["dave"][1].clone()],
            entitlement,
            n,
        ));
    }
    let mut plans = HashMap::new();
    while let Some(done) = lanes.join_next().await {
        plans.extend(done.unwrap());
    }
    assert_eq!(plans.len(), 100);
    println!(
        "multi: 100 requests through two brokers in {:?}",
        started.elapsed()
    );

    // Everything ends and is removed; one more reconciliation pass finds nothing.
    let start = Instant::now();
    loop {
        let rows = requests(&store).await;
        if rows.iter().all(|r| {
            matches!(r.state.as_str(), "denied" | "cancelled")
                || (matches!(r.state.as_str(), "expired" | "revoked")
                    && r.deprovisioned_at.is_some())
        }) {
            break;
        }
        assert!(start.elapsed() < Duration::from_mins(1), "not settled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for_reconcile(&store, now_ms()).await;
    if watch.is_finished() {
        let copies = watch.await.unwrap();
        panic!("a target was assigned {copies} times at once");
    }
    watch.abort();
    assert_eq!(
        up.assignments().await,
        BTreeMap::new(),
        "nothing left upstream"
    );
    drop(a);
    drop(b);

    let rows = requests(&store).await;
    check_reconciliation(&store, &rows).await;
    check_trails(&store, &rows, &plans).await;
    check_jobs(&store).await;

    audit_verify(&db.url);
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(text.contains("scheduler started"), "JSON logs captured");
        assert_no_secrets(&text, &secrets, "a broker's logs");
    }
    assert_no_secrets(&database_text(&store).await, &secrets, "the database");
}

/// Reconciliation never took the access of a live grant, and found none
/// without its access. (It may remove the assignment of a grant that has
/// just ended before that grant's own removal job gets to it.)
async fn check_reconciliation(store: &Store, rows: &[ReqRow]) {
    jit_server::store::audit::caught_up(store).await.unwrap();
    let audit: Vec<(i64, Option<String>, String, String)> =
        query("SELECT seq, request_id, action, data FROM audit_events ORDER BY seq")
            .fetch_all(store)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.try_get("seq").unwrap(),
                    r.try_get("request_id").unwrap(),
                    r.try_get("action").unwrap(),
                    r.try_get("data").unwrap(),
                )
            })
            .collect();
    let mut passes = 0;
    for (seq, _, action, data) in &audit {
        if action != "reconcile.drift" {
            continue;
        }
        passes += 1;
        let drift: Value = serde_json::from_str(data).unwrap();
        assert_eq!(
            drift["missing"],
            json!([]),
            "a live grant without access: {drift}"
        );
        assert_eq!(drift["unexplained"], json!([]), "{drift}");
        for removed in drift["removed"].as_array().unwrap() {
            let removed = removed.as_str().unwrap();
            for r in rows.iter().filter(|r| {
                removed.starts_with(&format!("entitlement `{}`", r.entitlement))
                    && removed.contains(&format!("`{}`", r.email))
            }) {
                let mut live = false;
                for (_, id, action, _) in audit.iter().take_while(|(s, ..)| s < seq) {
                    if id.as_deref() == Some(r.id.as_str()) {
                        match action.as_str() {
                            "grant.activated" => live = true,
                            "grant.revoked" | "grant.expired" => live = false,
                            _ => {}
                        }
                    }
                }
                assert!(
                    !live,
                    "reconciliation (seq {seq}) removed the access of live grant {}: {removed}",
                    r.id
                );
            }
        }
    }
    println!("multi: {passes} reconciliation passes found something to do");
}

/// Every request ended the way its lane drove it, with one event per step.
async fn check_trails(store: &Store, rows: &[ReqRow], plans: &HashMap<String, Plan>) {
    assert_eq!(rows.len(), 100);
    jit_server::store::audit::caught_up(store).await.unwrap();
    let events: Vec<(String, String)> = query(
        "SELECT request_id, action FROM audit_events WHERE request_id IS NOT NULL ORDER BY seq",
    )
    .fetch_all(store)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.try_get("request_id").unwrap(),
            r.try_get("action").unwrap(),
        )
    })
    .collect();
    for r in rows {
        let plan = plans[&r.id];
        let actions: Vec<&str> = events
            .iter()
            .filter(|(id, _)| *id == r.id)
            .map(|(_, a)| a.as_str())
            .collect();
        let expected: &[&str] = match plan {
            Plan::Deny => &["request.created", "request.denied"],
            Plan::Cancel => &["request.created", "request.cancelled"],
            Plan::Revoke => &[
                "request.created",
                "request.approval",
                "request.approved",
                "grant.activated",
                "grant.revoked",
            ],
            Plan::Expire => &[
                "request.created",
                "request.approval",
                "request.approved",
                "grant.activated",
                "grant.expired",
            ],
        };
        let (head, tail) = actions.split_at(expected.len().min(actions.len()));
        assert_eq!(head, expected, "request {} ({plan:?})", r.id);
        if matches!(plan, Plan::Revoke | Plan::Expire) {
            // Removed, or left to the lane's next grant that already holds it.
            assert!(
                tail == ["grant.removed"] || tail == ["grant.removal_skipped"],
                "request {} ({plan:?}): {actions:?}",
                r.id
            );
        } else {
            assert!(tail.is_empty(), "request {}: {actions:?}", r.id);
        }
        let state = match plan {
            Plan::Deny => "denied",
            Plan::Cancel => "cancelled",
            Plan::Revoke => "revoked",
            Plan::Expire => "expired",
        };
        assert_eq!(r.state, state, "request {}", r.id);
    }
}

/// Each job ran once: claimed once, done.
async fn check_jobs(store: &Store) {
    let now = now_ms();
    let jobs = query("SELECT kind, attempts, due_at, done_at, last_error FROM jobs")
        .fetch_all(store)
        .await
        .unwrap();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for j in &jobs {
        let kind: String = j.try_get("kind").unwrap();
        let attempts: i64 = j.try_get("attempts").unwrap();
        let done: Option<i64> = j.try_get("done_at").unwrap();
        let error: Option<String> = j.try_get("last_error").unwrap();
        let due: i64 = j.try_get("due_at").unwrap();
        if due > now && done.is_none() {
            // Not due yet (timeouts and expiries of requests that ended early): never claimed.
            assert_eq!(attempts, 0, "{kind}");
            continue;
        }
        assert!(done.is_some(), "{kind} job not done: {error:?}");
        // A pass that found the gate busy for too long runs again later.
        assert!(
            attempts == 1 || kind == "reconcile",
            "{kind} job ran {attempts} times (last error: {error:?})"
        );
        *kinds.entry(kind).or_insert(0) += 1;
    }
    println!("multi: jobs run once each: {kinds:?}");
    assert_eq!(kinds["activate"], 60);
    assert_eq!(kinds["deprovision"], 60);
}

// ------------------------------------------------------------ production mode

/// A page as a browser that follows no redirects sees it.
struct Page {
    status: u16,
    location: Option<url::Url>,
    body: String,
}

/// A cookie-jar browser for the identity provider's forms and the brokers'
/// pages (one jar: every server is on 127.0.0.1, cookies ignore ports).
struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    async fn send(&mut self, url: &url::Url, form: Option<&[(&str, &str)]>) -> Page {
        let mut request = match form {
            Some(form) => self
                .http
                .post(url.clone())
                .form(form)
                .header("origin", url.origin().ascii_serialization()),
            None => self.http.get(url.clone()),
        };
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            request = request.header("cookie", jar.join("; "));
        }
        let response = request.send().await.unwrap();
        for value in response.headers().get_all("set-cookie") {
            let value = value.to_str().unwrap();
            let (name, v) = value.split(';').next().unwrap().split_once('=').unwrap();
            if v.is_empty() || value.to_ascii_lowercase().contains("max-age=0") {
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

    /// Follows redirects, answering the provider's login and consent forms as
    /// `login`, until `done(url)` (not fetched) or a page without a form.
    async fn walk(
        &mut self,
        start: url::Url,
        login: &str,
        done: impl Fn(&url::Url) -> bool,
    ) -> url::Url {
        let mut next = start;
        for _ in 0..16 {
            if done(&next) {
                return next;
            }
            let page = self.send(&next, None).await;
            if let Some(location) = page.location {
                next = location;
                continue;
            }
            assert_eq!(page.status, 200, "unexpected page at {next}: {}", page.body);
            let form: Vec<(&str, &str)> = if page.body.contains("name=\"login\"") {
                vec![("prompt", "login"), ("login", login), ("password", "x")]
            } else if next.path().starts_with("/interaction/") {
                vec![("prompt", "consent")]
            } else {
                return next;
            };
            let answer = self.send(&next, Some(&form)).await;
            next = answer
                .location
                .unwrap_or_else(|| panic!("form at {next} did not redirect: {}", answer.body));
        }
        panic!("sign-in did not finish")
    }
}

/// `<input name="NAME" value="…">` in a page.
fn field(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no `{name}` in {body}"))
        + marker.len();
    body[start..].split('"').next().unwrap().to_owned()
}

/// The device authorization grant as `jit login` runs it, approved in a
/// scripted browser: the token response.
async fn device_tokens(issuer: &str, login: &str) -> Value {
    let http = reqwest::Client::new();
    let scope = "openid profile email groups offline_access access";
    let device: Value = http
        .post(format!("{issuer}/device/auth"))
        .form(&[("client_id", "jit-cli"), ("scope", scope)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut browser = Browser::new();
    let verify = url::Url::parse(device["verification_uri_complete"].as_str().unwrap()).unwrap();
    let page = browser.send(&verify, None).await;
    let confirm = browser
        .send(
            &url::Url::parse(&format!("{issuer}/device")).unwrap(),
            Some(&[
                ("xsrf", field(&page.body, "xsrf").as_str()),
                ("user_code", device["user_code"].as_str().unwrap()),
                ("confirm", "yes"),
            ]),
        )
        .await;
    let end = browser
        .walk(confirm.location.unwrap(), login, |u| {
            u.path().ends_with("/success")
        })
        .await;
    let _ = end;
    for _ in 0..40 {
        let tokens: Value = http
            .post(format!("{issuer}/token"))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", "jit-cli"),
                ("device_code", device["device_code"].as_str().unwrap()),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if tokens.get("access_token").is_some() {
            return tokens;
        }
        assert_eq!(tokens["error"], "authorization_pending", "{tokens}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("device flow did not finish")
}

/// Whether `text` holds anything shaped like a JWT (`eyJ….eyJ…`).
fn contains_jwt(text: &str) -> bool {
    let b64 = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut rest = text;
    while let Some(at) = rest.find("eyJ") {
        let tail = &rest[at..];
        let head: String = tail.chars().take_while(|c| b64(*c)).collect();
        if head.len() >= 10 && tail[head.len()..].starts_with(".eyJ") {
            return true;
        }
        rest = &tail[3..];
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn production_brokers_keep_tokens_and_keys_out_of_logs() {
    use base64::Engine as _;
    assert!(contains_jwt(
        "x eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln y"
    ));
    let issuer = crate::support::peer_env("JIT_TEST_IDP_URL")
        .trim_end_matches('/')
        .to_owned();
    let moto = crate::broker_aws::Moto::connect().await;
    let role = moto.role().await;
    let billing = moto.permission_set();
    let fake = crate::graph_fake::GraphFake::start().await;
    // The example catalog's Azure roles: ARM tokens from the same login.
    let arm = crate::arm_fake::ArmFake::start(fake.login()).await;
    let graph = fake.config();
    let graph_secret = graph.client_secret.as_ref().unwrap().expose().to_owned();
    let policies = policy_dir(|text| {
        text.replace("arn:aws:iam::222222222222:role/JitSandbox", &role.0)
            .replace("arn:aws:iam::111111111111:role/JitAdmin", &role.0)
            .replace(
                "arn:aws:sso:::permissionSet/ssoins-1111111111111111/ps-1111111111111111",
                &billing,
            )
            .replace(
                "account_id = \"111111111111\"",
                &format!("account_id = \"{ACCOUNT}\""),
            )
    });
    let db = fresh_db(Engine::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let mut key = [0u8; 64];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    let session_key = base64::engine::general_purpose::STANDARD.encode(key);
    let broker_secret = random_hex(40);
    std::fs::write(
        dir.path().join("jit.toml"),
        format!(
            r#"[oidc]
issuer = "{issuer}"
client_id = "jit-web"
client_secret = "env:JIT_TEST_WEB_SECRET"
scopes = ["openid", "profile", "email", "groups", "offline_access"]
api_audience = "api://jit-broker"
cli_client_id = "jit-cli"
cli_scopes = ["openid", "profile", "email", "groups", "offline_access", "access"]
required_scope = "access"
tenant_id = "11111111-2222-3333-4444-555555555555"

[entra]
tenant_id = "{}"
client_id = "{}"
client_secret = "env:JIT_TEST_GRAPH_SECRET"
graph_url = "{}"
login_url = "{}"

[azure]
arm_url = "{}"
"#,
            graph.tenant_id, graph.client_id, graph.graph_url, graph.login_url, arm.base
        ),
    )
    .unwrap();
    let mut env = Upstream {
        moto,
        entitlements: BTreeMap::new(),
        users: BTreeMap::new(),
    }
    .env(
        &format!("AKIA{}", random_hex(16).to_uppercase()),
        &broker_secret,
    );
    env.extend(
        [
            ("JIT_DATABASE__URL", db.url.as_str()),
            ("JIT_POLICY__DIR", policies.path().to_str().unwrap()),
            ("JIT_SERVER__SESSION_KEY", session_key.as_str()),
            ("JIT_TEST_WEB_SECRET", "jit-web-secret"),
            ("JIT_TEST_GRAPH_SECRET", graph_secret.as_str()),
            ("JIT_SCHEDULER__RECONCILE_EVERY", "1s"),
            ("JIT_LOG", "debug,sqlx=info,hyper=info,h2=info,rustls=info"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let config = dir.path().join("jit.toml");
    let args = ["--config", config.to_str().unwrap(), "serve"];
    let mut brokers = Vec::new();
    let logs = [dir.path().join("a.log"), dir.path().join("b.log")];
    for log in &logs {
        let port = crate::support::server::free_port();
        let mut env = env.clone();
        env.push((
            "JIT_SERVER__PUBLIC_URL".to_owned(),
            format!("http://127.0.0.1:{port}"),
        ));
        brokers.push(Spawned::start_with(&args, port, dir.path(), &env, log).await);
    }
    let (a, b) = (&brokers[0].url, &brokers[1].url);
    let store = Store::connect(&db.url, 2).await.unwrap();

    // Browser sign-in through A (code flow, PKCE, the client secret), then
    // the same session on B.
    let mut browser = Browser::new();
    let login = browser
        .send(&url::Url::parse(&format!("{a}/login")).unwrap(), None)
        .await;
    let callback = browser
        .walk(login.location.unwrap(), "alice", |u| {
            u.as_str().starts_with(&format!("{a}/auth/callback"))
        })
        .await;
    let signed_in = browser.send(&callback, None).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let home = browser
        .send(&url::Url::parse(&format!("{b}/")).unwrap(), None)
        .await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains("Alice Admin"), "{}", home.body);
    let session: Value = serde_json::from_str(
        &query("SELECT data FROM sessions WHERE user_key IS NOT NULL")
            .fetch_one(&store)
            .await
            .unwrap()
            .try_get::<String>("data")
            .unwrap(),
    )
    .unwrap();
    let web_id_token = session["id_token"].as_str().unwrap().to_owned();

    // The CLI's tokens, on B's API; credentials minted through A.
    let cli = device_tokens(&issuer, "alice").await;
    let api = |url: &str| Api {
        http: reqwest::Client::new(),
        url: url.to_owned(),
        token: cli["access_token"].as_str().unwrap().to_owned(),
    };
    let me: Value = reqwest::Client::new()
        .get(format!("{b}/api/v1/me"))
        .bearer_auth(cli["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "alice@example.com", "{me}");
    let (status, body) = api(b)
        .post(
            "/requests",
            json!({ "entitlement": "aws-sandbox", "duration": "1h", "justification": "prod mode" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    api(a).wait_state(&id, &["active"]).await;
    let (status, creds) = api(a)
        .post(&format!("/requests/{id}/credentials"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{creds}");

    // Sign out on B: the ID token goes to the provider as a hint, in a redirect.
    let csrf = field(&home.body, "csrf");
    let out = browser
        .send(
            &url::Url::parse(&format!("{b}/logout")).unwrap(),
            Some(&[("csrf", csrf.as_str())]),
        )
        .await;
    // Answered with a page of ours that goes on to the provider by GET (http::handoff).
    assert_eq!(out.status, 200, "{}", out.body);
    let refresh = out
        .body
        .split(r#"<meta http-equiv="refresh" content="0; url="#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no refresh: {}", out.body))
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    let to = url::Url::parse(&refresh).unwrap();
    let query: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert!(query.contains_key("id_token_hint"), "{to}");
    // and the provider sends the browser back to the signed-out page, not to a new sign-in
    assert_eq!(
        query.get("post_logout_redirect_uri").map(String::as_str),
        Some(format!("{b}/signed-out").as_str()),
        "{to}"
    );

    // Reconciliation has talked to Graph with the client secret.
    wait_for_reconcile(&store, now_ms()).await;
    let graph_tokens: Vec<String> = fake
        .requests()
        .iter()
        .filter_map(|r| r.headers.get("authorization"))
        .map(|h| h.trim_start_matches("Bearer ").to_owned())
        .collect();
    assert!(!graph_tokens.is_empty(), "the brokers called Graph");
    // And ARM, with a token of its own from the same login.
    let arm_tokens: Vec<String> = arm
        .requests()
        .iter()
        .filter_map(|r| r.headers.get("authorization"))
        .map(|h| h.trim_start_matches("Bearer ").to_owned())
        .collect();
    assert!(!arm_tokens.is_empty(), "the brokers called ARM");
    arm.assert_no_violations();
    drop(brokers);

    let mut secrets = vec![
        session_key,
        graph_secret,
        broker_secret,
        web_id_token,
        creds["SecretAccessKey"].as_str().unwrap().to_owned(),
        creds["SessionToken"].as_str().unwrap().to_owned(),
    ];
    for t in ["access_token", "id_token", "refresh_token"] {
        secrets.push(cli[t].as_str().unwrap().to_owned());
    }
    secrets.extend(browser.cookies.values().filter(|v| v.len() >= 16).cloned());
    secrets.extend(graph_tokens);
    secrets.extend(arm_tokens);
    secrets.sort();
    secrets.dedup();
    let all: String = logs
        .iter()
        .map(|l| std::fs::read_to_string(l).unwrap())
        .collect();
    for seen in [
        "/auth/callback",
        "/api/v1/me",
        "/logout",
        "minted sts session",
    ] {
        assert!(all.contains(seen), "the logs did not capture `{seen}`");
    }
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert_no_secrets(&text, &secrets, "a broker's logs");
        assert!(
            !text.contains("jit-web-secret"),
            "the OIDC client secret is logged"
        );
        assert!(!contains_jwt(&text), "a JWT appears in a broker's logs");
    }
    let db_text = database_text(&store).await;
    assert_no_secrets(&db_text, &secrets, "the database");
    assert!(!db_text.contains("jit-web-secret"));
    assert!(!contains_jwt(&db_text), "a JWT appears in the database");
    audit_verify(&db.url);
}
