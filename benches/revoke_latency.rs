//! Revoke and expiry latency: from the API call (revoke) or the due time
//! (expiry) to the upstream removal written, on SQLite and PostgreSQL, with
//! the real AWS providers against moto (docs/performance.md,
//! docs/revocation.md). Target: p99 ≤ 2 s.
//!
//! An in-process broker with its real scheduler task (tick 1 s, the longest
//! it sleeps) grants
//! `aws-sandbox` (an `aws_role` entitlement on a role made in moto) to fresh
//! requesters (API tokens from a stand-in OpenID provider, as the load bench
//! does), mints one STS session each, then:
//!
//! 1. **revoke**: `POST /api/v1/requests/{id}/revoke` at a fixed rate, open
//!    loop; the latency runs from just before the call to the moment the
//!    broker recorded `grant.removed`, which it writes right after IAM
//!    accepted the deny of the grantee's sessions (`PutRolePolicy`);
//! 2. **expiry**: grants of a few seconds, activated at a fixed rate; the
//!    latency runs from each grant's `expires_at` to its `grant.removed`.
//!
//! Every removal on the one role takes its turn on the role's inline policy
//! (a read and a write each), so this measures the serialised path too.
//!
//! `cargo bench -p jit-server --bench revoke_latency`, with `JIT_BENCH_MOTO_URL`
//! (a moto server, e.g. the one `scripts/test --peers` starts) and optionally
//! `JIT_BENCH_PG_URL`; `JIT_BENCH_REVOKES` (default 200) and
//! `JIT_BENCH_REVOKE_RATE` (per second, default 10) change the run;
//! `JIT_BENCH_REVOKE_DETAIL=1` lists each request's start and, after it, when
//! it was ended (`grant.expired`, expiries only) and removed.
//!
//! The expire job is due at `expires_at`; the scheduler sleeps until the next
//! job falls due (until 2026-12-04 it looked every tick, 1 s, which was most
//! of the expiry latency).

#![expect(clippy::expect_used, reason = "a benchmark aborts on set-up failure")]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use common::issuer::Issuer;
use common::{Engine, engines, env_or, fresh_db, machine, quantiles_ms, serve_broker, start_up};
use jit_server::config::{AwsConfig, Config};
use jit_server::http::AuthMode;
use jit_server::providers::Providers;
use jit_server::providers::aws::{AwsProviders, Tuning};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The target, per docs/revocation.md.
const TARGET_P99: Duration = Duration::from_secs(2);

/// A role in moto for `aws-sandbox`: its ARN.
async fn make_role(moto: &str, credentials: Credentials) -> String {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto)
        .credentials_provider(credentials)
        .load()
        .await;
    let name = format!(
        "jit-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    aws_sdk_iam::Client::new(&conf)
        .create_role()
        .role_name(&name)
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
        .send()
        .await
        .expect("create the role in moto");
    format!("arn:aws:iam::123456789012:role/{name}")
}

/// The repository's policies, `aws-sandbox` on `role`.
fn policies(role: &str) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let dir = tempfile::tempdir().expect("temporary directory");
    for entry in std::fs::read_dir(&src).expect("policies") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let catalog = std::fs::read_to_string(src.join("entitlements.toml")).expect("catalog");
    std::fs::write(
        dir.path().join("entitlements.toml"),
        catalog.replace("arn:aws:iam::222222222222:role/JitSandbox", role),
    )
    .expect("write catalog");
    dir
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn post(&self, token: &str, path: &str, body: Value) -> Value {
        let res = self
            .http
            .post(format!("{}/api/v1{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("call the broker");
        let status = res.status();
        let body: Value = res.json().await.unwrap_or_default();
        assert!(status.is_success(), "POST {path}: {status} {body}");
        body
    }

    async fn get(&self, token: &str, path: &str) -> Value {
        self.http
            .get(format!("{}/api/v1{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("call the broker")
            .json()
            .await
            .expect("json")
    }

    /// Requests `aws-sandbox` for `duration`, waits until it is active, mints
    /// a session; the request.
    async fn active(&self, token: &str, duration: &str) -> Value {
        let r = self
            .post(
                token,
                "/requests",
                json!({ "entitlement": "aws-sandbox", "duration": duration, "justification": "bench" }),
            )
            .await;
        let id = r["id"].as_str().expect("id").to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.get(token, &format!("/requests/{id}")).await;
            if r["state"] == "active" {
                self.post(token, &format!("/requests/{id}/credentials"), json!({}))
                    .await;
                return r;
            }
            assert!(Instant::now() < deadline, "{id} not active: {r}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Unix ms now.
fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// When `action` was recorded, per request id, once all of `ids` have it.
async fn recorded_at(
    store: &jit_server::store::Store,
    action: &str,
    ids: &[String],
) -> HashMap<String, i64> {
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        let events = jit_server::store::audit::list(
            store,
            &jit_server::store::audit::Filter {
                action: Some(action.to_owned()),
                limit: 10_000,
                ..Default::default()
            },
        )
        .await
        .expect("read the audit log");
        let at: HashMap<String, i64> = events
            .into_iter()
            .filter_map(|e| e.request_id.map(|r| (r, e.at)))
            .collect();
        if ids.iter().all(|id| at.contains_key(id)) || Instant::now() > deadline {
            return at;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Outcome {
    revoke: Vec<Duration>,
    expiry: Vec<Duration>,
    missing: usize,
}

/// A running broker with the real AWS providers against moto.
struct Bench {
    app: jit_server::service::App,
    api: Arc<Api>,
    issuer: Issuer,
    stop: watch::Sender<bool>,
    scheduler: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
    db: common::FreshDb,
    _policies: tempfile::TempDir,
}

async fn start(engine: Engine, moto: &str) -> Bench {
    let credentials = Credentials::new("AKIABENCHBROKER00001", "bench-secret", None, None, "bench");
    let role = make_role(moto, credentials.clone()).await;
    let dir = policies(&role);
    let db = fresh_db(engine, 4).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let mut config = Config::default();
    config.database.url.clone_from(&db.url);
    config.database.max_connections = 20;
    config.server.public_url = format!("http://{addr}");
    config.policy.dir = dir.path().to_owned();
    config.audit.spool = Some(dir.path().join("audit-spool"));
    let aws_cfg = AwsConfig {
        region: "us-east-1".to_owned(),
        endpoint_url: Some(moto.to_owned()),
        identity_center_instance_arn: None,
        identity_store_id: None,
        federation_url: "https://signin.aws.amazon.com/federation".to_owned(),
        console_url: "https://console.aws.amazon.com/".to_owned(),
    };
    let aws = AwsProviders::with_credentials(
        &aws_cfg,
        &config.server.public_url,
        credentials,
        Tuning::default(),
    )
    .await;
    let issuer = Issuer::start().await;
    config.oidc = Some(issuer.config());
    let auth = AuthMode::Oidc(Arc::new(issuer.identity(&config.server.public_url).await));
    let (app, server) =
        serve_broker(config, auth, aws.install(Providers::simulated()), listener).await;
    let (stop, stopped) = watch::channel(false);
    let scheduler = tokio::spawn(jit_server::scheduler::run(
        app.clone(),
        Duration::from_secs(1),
        stopped,
    ));
    let api = Arc::new(Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        base: format!("http://{addr}"),
    });
    Bench {
        app,
        api,
        issuer,
        stop,
        scheduler,
        server,
        db,
        _policies: dir,
    }
}

/// Latencies from each start time to the request's `grant.removed`; how
/// many were not recorded.
async fn latencies(b: &Bench, starts: &[(String, i64)]) -> (Vec<Duration>, usize) {
    let ids: Vec<String> = starts.iter().map(|(id, _)| id.clone()).collect();
    let done = recorded_at(&b.app.store, "grant.removed", &ids).await;
    if std::env::var("JIT_BENCH_REVOKE_DETAIL").is_ok() {
        let ended = recorded_at(&b.app.store, "grant.expired", &[]).await;
        for (id, at) in starts {
            println!(
                "{id} start {at} ended +{:?} removed +{:?}",
                ended.get(id).map(|e| e - at),
                done.get(id).map(|e| e - at)
            );
        }
    }
    let mut missing = 0;
    let samples = starts
        .iter()
        .filter_map(|(id, at)| {
            let end = done.get(id).copied();
            missing += usize::from(end.is_none());
            end.map(|e| Duration::from_millis(u64::try_from(e - at).unwrap_or(0)))
        })
        .collect();
    (samples, missing)
}

/// Active grants with a session each, then revoked at `rate`: the start of
/// each revoke call.
async fn revokes(b: &Bench, count: u64, gap: Duration) -> Vec<(String, i64)> {
    let tokens: Vec<String> = (0..count)
        .map(|n| b.issuer.token(n, &["grp-jit-requesters"]))
        .collect();
    let mut grants = Vec::new();
    for chunk in tokens.chunks(20) {
        let made = futures_util::future::join_all(
            chunk.iter().map(|t| async { b.api.active(t, "1h").await }),
        )
        .await;
        grants.extend(chunk.iter().cloned().zip(made));
    }
    let start = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for (i, (token, r)) in grants.iter().enumerate() {
        tokio::time::sleep_until((start + gap * u32::try_from(i).unwrap_or(0)).into()).await;
        let (api, token, id) = (
            b.api.clone(),
            token.clone(),
            r["id"].as_str().expect("id").to_owned(),
        );
        calls.spawn(async move {
            let at = now_ms();
            api.post(&token, &format!("/requests/{id}/revoke"), json!({}))
                .await;
            (id, at)
        });
    }
    calls.join_all().await
}

/// Short grants, activated at `rate`: each one's due time.
async fn expiries(b: &Bench, count: u64, gap: Duration) -> Vec<(String, i64)> {
    let start = Instant::now();
    let mut made = tokio::task::JoinSet::new();
    for (i, n) in (count..2 * count).enumerate() {
        tokio::time::sleep_until((start + gap * u32::try_from(i).unwrap_or(0)).into()).await;
        let (api, token) = (b.api.clone(), b.issuer.token(n, &["grp-jit-requesters"]));
        made.spawn(async move { api.active(&token, "5s").await });
    }
    made.join_all()
        .await
        .into_iter()
        .map(|r| {
            let id = r["id"].as_str().expect("id").to_owned();
            let due = time::OffsetDateTime::parse(
                r["expires_at"].as_str().expect("expires_at"),
                &time::format_description::well_known::Rfc3339,
            )
            .expect("time");
            (
                id,
                i64::try_from(due.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
            )
        })
        .collect()
}

async fn run(engine: Engine, moto: &str, count: u64, rate: u64) -> Outcome {
    let b = start(engine, moto).await;
    let gap = Duration::from_secs(1) / u32::try_from(rate.max(1)).unwrap_or(1);
    let revoked = revokes(&b, count, gap).await;
    let (revoke, missing_revokes) = latencies(&b, &revoked).await;
    let expiring = expiries(&b, count, gap).await;
    let (expiry, missing_expiries) = latencies(&b, &expiring).await;
    let _ = b.stop.send(true);
    let _ = b.scheduler.await;
    b.server.abort();
    jit_server::store::audit::caught_up(&b.app.store)
        .await
        .expect("chain");
    let report = jit_server::store::audit::verify(&b.app.store, None)
        .await
        .expect("verify");
    assert!(report.ok, "audit chain broken: {report:?}");
    b.app.store.close().await;
    b.db.remove().await;
    Outcome {
        revoke,
        expiry,
        missing: missing_revokes + missing_expiries,
    }
}

fn main() {
    if !start_up() {
        return;
    }
    let Ok(moto) = std::env::var("JIT_BENCH_MOTO_URL") else {
        println!(
            "skipping: JIT_BENCH_MOTO_URL is not set (a moto server, e.g. http://127.0.0.1:5000)"
        );
        return;
    };
    let count: u64 = env_or("JIT_BENCH_REVOKES", 200);
    let rate: u64 = env_or("JIT_BENCH_REVOKE_RATE", 10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("{}", machine());
    println!(
        "revoke and expiry latency, {count} of each at {rate}/s on one role, moto at {moto}; target p99 <= {} ms",
        TARGET_P99.as_millis()
    );
    for engine in engines() {
        let out = runtime.block_on(run(engine, &moto, count, rate));
        for (what, samples) in [("revoke", &out.revoke), ("expiry", &out.expiry)] {
            let [p50, p95, p99, max] = quantiles_ms(samples.clone(), [0.50, 0.95, 0.99, 1.0]);
            let verdict = if p99 <= TARGET_P99.as_secs_f64() * 1000.0 {
                "meets"
            } else {
                "misses"
            };
            println!(
                "{:<8} {what:<6} n={:<4} p50 {p50:>7.1} ms  p95 {p95:>7.1} ms  p99 {p99:>7.1} ms  max {max:>7.1} ms  ({verdict} the target)",
                engine.name(),
                samples.len(),
            );
        }
        if out.missing > 0 {
            println!(
                "{:<8} {} removals were not recorded within 2 minutes",
                engine.name(),
                out.missing
            );
        }
    }
}
