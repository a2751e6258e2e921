//! `kill -9` of the real `jit-server` at random points while grants are made,
//! revoked and expire: Identity Center assignments in moto must always be
//! explained by the database, nothing may outlive its window, and at the end
//! the upstream state equals the database's live grants and the audit chain
//! verifies.
//!
//! The broker runs in development mode with `[aws]` pointing at moto, so
//! `aws_identity_center` grants are real account assignments. One database
//! serves every incarnation. The RNG is seeded: the seed is printed, and
//! `JIT_CHAOS_SEED` replays a run; `JIT_CHAOS_ITERATIONS` (default 50) sets
//! how many kills; `JIT_CHAOS_ENGINE=postgres` runs on PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jit_server::store::query;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::broker_aws::{ACCOUNT, Moto, assert_no_secrets, policy_dir, random_hex};
use crate::support::server::{Engine, FreshDb, free_port, fresh_db, server_bin};

/// How long anything may outlive its window, counted from the later of the
/// window's end and the moment the broker that ended it became ready (no
/// broker works while none runs): the job lease of a killed broker (its
/// claimed jobs wait for it), a tick, a reconciliation pass, the work itself.
const SLACK_MS: i64 = 20_000;

/// When each incarnation of the broker was started and became ready.
#[derive(Debug, Default)]
struct Lives(Vec<(i64, i64)>);

impl Lives {
    fn push(&mut self, server: &Spawned) {
        self.0.push((server.started_ms, server.ready_ms));
    }

    /// How late something done at `at` is for `due`: measured from the later
    /// of `due` and the readiness of the broker that ran at `at`.
    fn late(&self, due: i64, at: i64) -> i64 {
        let ready = self
            .0
            .iter()
            .rev()
            .find(|(started, _)| *started <= at)
            .map_or(i64::MIN, |(_, ready)| *ready);
        at - due.max(ready)
    }
}

/// A `jit-server serve --dev` child whose stderr (JSON logs) goes to a file.
pub(crate) struct Spawned {
    child: Child,
    /// Base URL.
    pub url: String,
    /// Unix ms just before it was started.
    pub started_ms: i64,
    /// Unix ms it was first seen ready.
    pub ready_ms: i64,
}

impl Spawned {
    /// Starts `serve --dev` with `env` in `dir`, logs appended to `log`;
    /// waits until it is ready (listening and migrated).
    pub(crate) async fn start(dir: &Path, env: &[(String, String)], log: &Path) -> Self {
        Self::start_with(&["serve", "--dev"], free_port(), dir, env, log).await
    }

    /// Starts the binary with `args` on `port`.
    pub(crate) async fn start_with(
        args: &[&str],
        port: u16,
        dir: &Path,
        env: &[(String, String)],
        log: &Path,
    ) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let started_ms = now_ms();
        let mut cmd = Command::new(server_bin());
        cmd.args(args)
            .current_dir(dir)
            .env("JIT_SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("JIT_SERVER__LOG_FORMAT", "json")
            .env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.join("no-aws-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::from(file));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let start = Instant::now();
        loop {
            // Listening comes before migrations: ready means both.
            if let Ok(res) = http.get(format!("{url}/readyz")).send().await
                && res.status() == 200
            {
                return Self {
                    child,
                    url,
                    started_ms,
                    ready_ms: now_ms(),
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "jit-server exited with {status}: {}",
                    tail(&std::fs::read_to_string(log).unwrap_or_default())
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "jit-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9`.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap()
}

/// A development-mode bearer token for a demo user.
pub(crate) async fn dev_token(http: &reqwest::Client, url: &str, user: &str) -> String {
    let v: Value = http
        .post(format!("{url}/api/v1/dev/token"))
        .json(&json!({ "user": user }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

/// `jit-server audit verify` against `db_url` must pass.
pub(crate) fn audit_verify(db_url: &str) {
    let out = Command::new(server_bin())
        .args(["audit", "verify"])
        .env("JIT_DATABASE__URL", db_url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit chain ok"));
}

/// One row of `requests`, as the checks need it.
#[derive(Debug, Clone)]
pub(crate) struct ReqRow {
    pub id: String,
    pub entitlement: String,
    pub email: String,
    pub state: String,
    pub activated_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub deprovisioned_at: Option<i64>,
}

/// Every request.
pub(crate) async fn requests(store: &jit_server::store::Store) -> Vec<ReqRow> {
    query(
        "SELECT id, entitlement, requester_email, state, activated_at, expires_at, ended_at, \
         deprovisioned_at FROM requests ORDER BY created_at",
    )
    .fetch_all(store)
    .await
    .unwrap()
    .iter()
    .map(|r| ReqRow {
        id: r.try_get("id").unwrap(),
        entitlement: r.try_get("entitlement").unwrap(),
        email: r.try_get("requester_email").unwrap(),
        state: r.try_get("state").unwrap(),
        activated_at: r.try_get("activated_at").unwrap(),
        expires_at: r.try_get("expires_at").unwrap(),
        ended_at: r.try_get("ended_at").unwrap(),
        deprovisioned_at: r.try_get("deprovisioned_at").unwrap(),
    })
    .collect()
}

/// The Identity Center side of a test: entitlements (id → permission set)
/// and users (email → Identity Store user id).
pub(crate) struct Upstream {
    pub moto: Moto,
    pub entitlements: BTreeMap<String, String>,
    pub users: BTreeMap<String, String>,
}

impl Upstream {
    /// `n` new `aws_identity_center` entitlements `<prefix>-<i>` needing
    /// `approvals` approvals, for the demo users `users`.
    pub(crate) async fn new(prefix: &str, n: usize, users: &[&str]) -> Self {
        let moto = Moto::connect().await;
        let entitlements = (1..=n)
            .map(|i| (format!("{prefix}-{i}"), moto.permission_set()))
            .collect();
        let mut ids = BTreeMap::new();
        for user in users {
            let email = format!("{user}@example.com");
            let id = moto.user(&email).await;
            ids.insert(email, id);
        }
        Self {
            moto,
            entitlements,
            users: ids,
        }
    }

    /// The catalog entries.
    pub(crate) fn catalog(&self, approvals: u32) -> String {
        let mut out = String::new();
        for (id, ps) in &self.entitlements {
            write!(
                out,
                "\n[[entitlement]]\nid = \"{id}\"\ntitle = \"{id}\"\nkind = \"aws_identity_center\"\n\
                 account_id = \"{ACCOUNT}\"\npermission_set_arn = \"{ps}\"\nmax_duration = \"1h\"\n\
                 approvals_required = {approvals}\nmax_extensions = 3\n"
            )
            .unwrap();
        }
        out
    }

    /// `[aws]` for the binary, as environment variables.
    pub(crate) fn env(&self, broker_key: &str, broker_secret: &str) -> Vec<(String, String)> {
        [
            ("JIT_AWS__REGION", "us-east-1"),
            ("JIT_AWS__ENDPOINT_URL", self.moto.url.as_str()),
            (
                "JIT_AWS__IDENTITY_CENTER_INSTANCE_ARN",
                self.moto.instance_arn.as_str(),
            ),
            ("JIT_AWS__IDENTITY_STORE_ID", self.moto.store_id.as_str()),
            ("AWS_ACCESS_KEY_ID", broker_key),
            ("AWS_SECRET_ACCESS_KEY", broker_secret),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    /// What exists upstream: (entitlement, email) → number of assignments.
    pub(crate) async fn assignments(&self) -> BTreeMap<(String, String), usize> {
        let by_id: BTreeMap<&String, &String> = self.users.iter().map(|(e, id)| (id, e)).collect();
        let mut out = BTreeMap::new();
        for (ent, ps) in &self.entitlements {
            for principal in self.moto.assigned(ps).await {
                let email = by_id
                    .get(&principal)
                    .map_or_else(|| format!("principal {principal}"), |e| (*e).clone());
                *out.entry((ent.clone(), email)).or_insert(0) += 1;
            }
        }
        out
    }
}

/// What the database says must exist upstream: targets of active grants of `up`'s entitlements.
pub(crate) fn live_targets(up: &Upstream, rows: &[ReqRow]) -> BTreeSet<(String, String)> {
    rows.iter()
        .filter(|r| r.state == "active" && up.entitlements.contains_key(&r.entitlement))
        .map(|r| (r.entitlement.clone(), r.email.clone()))
        .collect()
}

/// Checks that hold at any moment after a reconciliation pass, while the
/// broker works on: every assignment is explained by a live grant (or one
/// whose removal is due within the slack), every grant that has been active
/// for a while has its assignment, and nothing outlives its window.
async fn check_running(
    up: &Upstream,
    store: &jit_server::store::Store,
    lives: &Lives,
    context: &str,
) {
    // Database, upstream, database, upstream: what was active in the first
    // snapshot and still is in the second had its access all along.
    let active_before: BTreeSet<String> = requests(store)
        .await
        .into_iter()
        .filter(|r| r.state == "active")
        .map(|r| r.id)
        .collect();
    let before = up.assignments().await;
    let rows = requests(store).await;
    let after = up.assignments().await;
    let now = now_ms();
    for (target, _) in before.iter().filter(|(t, _)| after.contains_key(*t)) {
        let explained = rows.iter().any(|r| {
            (&r.entitlement, &r.email) == (&target.0, &target.1)
                && (matches!(r.state.as_str(), "approved" | "active")
                    || (matches!(r.state.as_str(), "expired" | "revoked")
                        && r.deprovisioned_at.is_none()
                        && r.ended_at.is_some_and(|e| lives.late(e, now) < SLACK_MS)))
        });
        assert!(
            explained,
            "{context}: assignment {target:?} has no live grant (now {now}): {:#?}",
            rows.iter()
                .filter(|r| (&r.entitlement, &r.email) == (&target.0, &target.1))
                .collect::<Vec<_>>()
        );
    }
    for r in &rows {
        let target = (r.entitlement.clone(), r.email.clone());
        if r.state == "active"
            && up.entitlements.contains_key(&r.entitlement)
            && active_before.contains(&r.id)
            && r.expires_at.is_some_and(|e| e > now + 500)
        {
            assert!(
                before.contains_key(&target) && after.contains_key(&target),
                "{context}: active grant {} has no assignment upstream",
                r.id
            );
        }
        if r.state == "active" {
            let late = lives.late(r.expires_at.unwrap(), now);
            assert!(
                late < SLACK_MS,
                "{context}: grant {} outlives its window by {late} ms",
                r.id
            );
        }
        if matches!(r.state.as_str(), "expired" | "revoked")
            && r.deprovisioned_at.is_none()
            && up.entitlements.contains_key(&r.entitlement)
        {
            let late = lives.late(r.ended_at.unwrap(), now);
            assert!(
                late < SLACK_MS,
                "{context}: access of {} not removed {late} ms after it ended (or the broker became ready)",
                r.id
            );
        }
    }
}

/// Waits until a reconciliation pass queued after `since_ms` has finished.
pub(crate) async fn wait_for_reconcile(store: &jit_server::store::Store, since_ms: i64) {
    let start = Instant::now();
    loop {
        let n: i64 = query(
            "SELECT COUNT(*) AS n FROM jobs WHERE kind = 'reconcile' AND created_at >= $1 \
             AND done_at IS NOT NULL",
        )
        .bind(since_ms)
        .fetch_one(store)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
        if n > 0 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no reconciliation pass finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Chaos {
    up: Upstream,
    dir: tempfile::TempDir,
    policies: tempfile::TempDir,
    db: FreshDb,
    env: Vec<(String, String)>,
    log: PathBuf,
    broker_secret: String,
    http: reqwest::Client,
}

impl Drop for Chaos {
    fn drop(&mut self) {
        if std::env::var_os("JIT_CHAOS_KEEP").is_some() {
            let log = self.dir.path().join("jit-server.log");
            let keep = std::env::temp_dir().join("jit-chaos-kept.log");
            let _ = std::fs::copy(log, &keep);
            println!("chaos: log kept at {}", keep.display());
        }
    }
}

impl Chaos {
    async fn start(&self) -> Spawned {
        Spawned::start(self.dir.path(), &self.env, &self.log).await
    }
}

async fn setup(engine: Engine) -> (Chaos, jit_server::store::Store) {
    let up = Upstream::new("chaos", 4, &["alice", "oscar"]).await;
    let role = up.moto.role().await;
    let billing = up.moto.permission_set();
    let catalog = up.catalog(0);
    let role_arn = role.0.clone();
    let policies = policy_dir(|text| {
        text.replace(
            "arn:aws:sso:::permissionSet/ssoins-1111111111111111/ps-1111111111111111",
            &billing,
        )
        .replace(
            "account_id = \"111111111111\"",
            &format!("account_id = \"{ACCOUNT}\""),
        ) + &catalog
            + &format!(
                "\n[[entitlement]]\nid = \"chaos-role\"\ntitle = \"chaos role\"\nkind = \"aws_role\"\n\
                 role_arn = \"{role_arn}\"\nmax_duration = \"1h\"\napprovals_required = 0\n"
            )
    });
    let db = fresh_db(engine).await;
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("JIT_CHAOS_KEEP").is_some() {
        println!("chaos: logs in {}", dir.path().display());
    }
    let broker_key = format!("AKIA{}", random_hex(16).to_uppercase());
    let broker_secret = random_hex(40);
    let mut env = up.env(&broker_key, &broker_secret);
    env.extend(
        [
            ("JIT_DATABASE__URL", db.url.as_str()),
            ("JIT_POLICY__DIR", policies.path().to_str().unwrap()),
            ("JIT_SCHEDULER__TICK", "1s"),
            ("JIT_SCHEDULER__RECONCILE_EVERY", "1s"),
            ("JIT_LOG", "debug,sqlx=info,hyper=info,h2=info,rustls=info"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let log = dir.path().join("jit-server.log");
    // The first start creates the schema the checks read.
    let first = Spawned::start(dir.path(), &env, &log).await;
    drop(first);
    let store = jit_server::store::Store::connect(&db.url, 2).await.unwrap();
    (
        Chaos {
            up,
            dir,
            policies,
            db,
            env,
            log,
            broker_secret,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        },
        store,
    )
}

/// What the driver did, for the log check.
#[derive(Default)]
struct Record {
    secrets: Vec<String>,
    requests: usize,
    revokes: usize,
    extensions: usize,
    mints: usize,
}

/// Random work: new short grants, revocations, credential mints.
#[expect(clippy::too_many_lines, reason = "one list of random actions")]
async fn act(c: &Chaos, server: &Spawned, rows: &[ReqRow], rng: &mut StdRng, record: &mut Record) {
    let users = ["alice", "oscar"];
    let mut tokens = Vec::new();
    for u in users {
        let t = dev_token(&c.http, &server.url, u).await;
        record.secrets.push(t.clone());
        tokens.push(t);
    }
    let ents: Vec<&String> = c.up.entitlements.keys().collect();
    for _ in 0..rng.random_range(1..=3) {
        let who = rng.random_range(0..users.len());
        let ent = ents[rng.random_range(0..ents.len())];
        let secs = rng.random_range(3..=5);
        let res = c
            .http
            .post(format!("{}/api/v1/requests", server.url))
            .bearer_auth(&tokens[who])
            .json(&json!({ "entitlement": ent, "duration": secs, "justification": "chaos" }))
            .send()
            .await;
        if let Ok(res) = res {
            // One open request per user and entitlement: 409 while one runs.
            let status = res.status().as_u16();
            assert!(
                matches!(status, 201 | 409),
                "{status}: {}",
                res.text().await.unwrap_or_default()
            );
            record.requests += usize::from(status == 201);
        }
    }
    let live: Vec<&ReqRow> = rows
        .iter()
        .filter(|r| {
            matches!(r.state.as_str(), "approved" | "active") && r.entitlement != "chaos-role"
        })
        .collect();
    if !live.is_empty() && rng.random_bool(0.5) {
        let r = live[rng.random_range(0..live.len())];
        let who = users.iter().position(|u| r.email.starts_with(u)).unwrap();
        let res = c
            .http
            .post(format!("{}/api/v1/requests/{}/revoke", server.url, r.id))
            .bearer_auth(&tokens[who])
            .json(&json!({ "comment": "chaos" }))
            .send()
            .await
            .unwrap();
        // It may have ended since the snapshot.
        assert!(
            matches!(res.status().as_u16(), 200 | 409),
            "{}",
            res.status()
        );
        record.revokes += 1;
    }
    let active: Vec<&ReqRow> = rows
        .iter()
        .filter(|r| r.state == "active" && r.entitlement != "chaos-role")
        .collect();
    if !active.is_empty() && rng.random_bool(0.3) {
        // An extension: a second grant on the same assignment.
        let r = active[rng.random_range(0..active.len())];
        let who = users.iter().position(|u| r.email.starts_with(u)).unwrap();
        let res = c
            .http
            .post(format!("{}/api/v1/requests/{}/extend", server.url, r.id))
            .bearer_auth(&tokens[who])
            .json(&json!({ "by": rng.random_range(2..=4) }))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        assert!(
            matches!(status, 201 | 409),
            "{status}: {}",
            res.text().await.unwrap_or_default()
        );
        record.extensions += usize::from(status == 201);
    }
    if rng.random_bool(0.2) {
        // An STS grant and its credentials: real secrets for the log check.
        let open = rows.iter().find(|r| {
            r.entitlement == "chaos-role" && matches!(r.state.as_str(), "approved" | "active")
        });
        let id = if let Some(r) = open {
            r.id.clone()
        } else {
            let res: Value = c
                .http
                .post(format!("{}/api/v1/requests", server.url))
                .bearer_auth(&tokens[0])
                .json(&json!({ "entitlement": "chaos-role", "duration": "10m", "justification": "chaos" }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            res["id"].as_str().unwrap().to_owned()
        };
        for _ in 0..50 {
            let res = c
                .http
                .post(format!("{}/api/v1/requests/{id}/credentials", server.url))
                .bearer_auth(&tokens[0])
                .send()
                .await
                .unwrap();
            if res.status() == 200 {
                let creds: Value = res.json().await.unwrap();
                record
                    .secrets
                    .push(creds["SecretAccessKey"].as_str().unwrap().to_owned());
                record
                    .secrets
                    .push(creds["SessionToken"].as_str().unwrap().to_owned());
                record.mints += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until no grant is live and no removal is pending, then for a
/// reconciliation pass after that.
async fn settle(store: &jit_server::store::Store) {
    let start = Instant::now();
    loop {
        let rows = requests(store).await;
        let busy = rows.iter().any(|r| {
            r.entitlement != "chaos-role"
                && (matches!(r.state.as_str(), "pending" | "approved" | "active")
                    || (matches!(r.state.as_str(), "expired" | "revoked")
                        && r.deprovisioned_at.is_none()))
        });
        if !busy {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_millis(u64::try_from(SLACK_MS).unwrap() + 10_000),
            "grants did not end: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for_reconcile(store, now_ms()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn kill_9_at_random_points_leaves_nothing_behind() {
    let engine = match std::env::var("JIT_CHAOS_ENGINE").as_deref() {
        Ok("postgres") => Engine::Postgres,
        _ => Engine::Sqlite,
    };
    let iterations: usize = std::env::var("JIT_CHAOS_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("JIT_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!(
        "chaos: seed {seed}, {iterations} iterations, {engine:?} (replay with JIT_CHAOS_SEED={seed})"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let (c, store) = setup(engine).await;
    let mut record = Record {
        secrets: vec![c.broker_secret.clone()],
        ..Record::default()
    };
    let mut lives = Lives::default();
    let started = Instant::now();
    for i in 0..iterations {
        let mut server = c.start().await;
        lives.push(&server);
        wait_for_reconcile(&store, server.started_ms).await;
        let context = format!("iteration {i} (seed {seed})");
        check_running(&c.up, &store, &lives, &context).await;
        let rows = requests(&store).await;
        act(&c, &server, &rows, &mut rng, &mut record).await;
        // Kill somewhere in what follows: activations, expiries, removals.
        let wait = rng.random_range(0..800);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill();
        if rng.random_bool(0.2) {
            // Sometimes stay down long enough for windows to end meanwhile.
            tokio::time::sleep(Duration::from_millis(rng.random_range(500..2500))).await;
        }
    }
    println!(
        "chaos: {iterations} kills in {:?}: {} requests, {} extensions, {} revocations, {} credential mints",
        started.elapsed(),
        record.requests,
        record.extensions,
        record.revokes,
        record.mints
    );

    // The last incarnation: a few grants that stay live, then the strict check.
    let server = c.start().await;
    lives.push(&server);
    wait_for_reconcile(&store, server.started_ms).await;
    check_running(&c.up, &store, &lives, "after the last restart").await;
    settle(&store).await;
    let alice = dev_token(&c.http, &server.url, "alice").await;
    let mut live = Vec::new();
    for ent in c.up.entitlements.keys().take(2) {
        let res: Value = c
            .http
            .post(format!("{}/api/v1/requests", server.url))
            .bearer_auth(&alice)
            .json(&json!({ "entitlement": ent, "duration": "10m", "justification": "final" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        live.push(res["id"].as_str().unwrap().to_owned());
    }
    let start = Instant::now();
    while requests(&store)
        .await
        .iter()
        .any(|r| live.contains(&r.id) && r.state != "active")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "final grants not active"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_reconcile(&store, now_ms()).await;
    let rows = requests(&store).await;
    let upstream = c.up.assignments().await;
    let expected: BTreeMap<(String, String), usize> = live_targets(&c.up, &rows)
        .into_iter()
        .map(|t| (t, 1))
        .collect();
    assert_eq!(upstream, expected, "upstream equals the live grants");
    for id in &live {
        c.http
            .post(format!("{}/api/v1/requests/{id}/revoke", server.url))
            .bearer_auth(&alice)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
    }
    settle(&store).await;
    assert_eq!(c.up.assignments().await, BTreeMap::new(), "nothing left");
    drop(server);

    // Nothing outlived its window by more than the slack.
    let rows = requests(&store).await;
    for r in rows.iter().filter(|r| r.activated_at.is_some()) {
        let Some(end) = r.ended_at else {
            assert_eq!(
                r.entitlement, "chaos-role",
                "only STS grants are still live"
            );
            continue;
        };
        let late = lives.late(r.expires_at.unwrap(), end);
        assert!(
            late <= SLACK_MS,
            "grant {} ended {late} ms after its window (or the broker became ready)",
            r.id,
        );
        if r.entitlement != "chaos-role" {
            let late = lives.late(end, r.deprovisioned_at.unwrap());
            assert!(
                late <= SLACK_MS,
                "access of {} removed {late} ms after it ended (or the broker became ready)",
                r.id,
            );
        }
    }
    audit_verify(&c.db.url);
    let logs = std::fs::read_to_string(&c.log).unwrap();
    assert!(
        logs.contains("\"jit-server listening\""),
        "JSON logs captured"
    );
    assert_no_secrets(&logs, &record.secrets, "the broker's logs");
    let db = crate::broker_aws::database_text(&store).await;
    assert_no_secrets(&db, &record.secrets, "the database");
    let _ = &c.policies;
}
