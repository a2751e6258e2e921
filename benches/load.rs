//! Broker overhead under load: request → auto-approve → activation → credential mint,
//! over HTTP on loopback, at fixed arrival rates, on SQLite and PostgreSQL.
//!
//! An in-process broker (as `tests/it/support/server.rs` builds it) runs with the
//! simulated providers as a zero-latency upstream, the repository's policies, the
//! real scheduler task, and API tokens checked as in production: RS256 access
//! tokens from a stand-in OpenID provider on loopback (`common::issuer`), each a
//! fresh synthetic requester (a member of `grp-jit-requesters`), so every arrival
//! is a new person and the one-open-request rule never bites. Each arrival:
//!
//! 1. `POST /api/v1/requests` for `aws-sandbox` (auto-approved by policy; the
//!    activation is a durable job the scheduler picks up),
//! 2. until the grant is `active`, either (`poll`, what clients did before the long poll)
//!    `GET /api/v1/requests/{id}` after 20 ms (`JIT_BENCH_POLL_MS`), then at doubling
//!    intervals up to 1 s, or (`long`) the long poll
//!    `GET /api/v1/requests/{id}?wait=active&timeout=10s`, which answers when the grant is
//!    made, as `jit request --wait` does,
//! 3. `POST /api/v1/requests/{id}/credentials`.
//!
//! Arrivals are open-loop (a fixed schedule, not waiting for earlier ones), and
//! the end-to-end time counts from the scheduled arrival, so a broker that falls
//! behind shows it. Targets at 200 arrivals/s: p99 ≤ 10 ms per API call; with the long
//! poll, end to end p50 ≤ 5 ms and p99 ≤ 15 ms.
//!
//! `cargo bench -p jit-server --bench load`; `JIT_BENCH_PG_URL` adds PostgreSQL,
//! `JIT_BENCH_LOAD_SECS` (default 20), `JIT_BENCH_LOAD_RATES` (default `50,200`) and
//! `JIT_BENCH_LOAD_WAIT` (default `poll,long`: both, side by side) change the run.
//!
//! Signed audit checkpoints: `JIT_BENCH_LOAD_CHECKPOINTS` (default `off`; `off,on` runs each
//! case without and with them, one after the other) has the broker sign a checkpoint into a
//! file sink every `JIT_BENCH_LOAD_CHECKPOINT_EVERY` (default `1s`, sixty times as often as
//! the default `audit.checkpoint_every`, so its cost shows), as `serve` does. Target: they add
//! ≤ 1 % to the p99 at 200 arrivals/s.
//!
//! Two runs, one with and one without, differ also by whatever else the machine did meanwhile,
//! which on a shared 2-core machine moves the p99 by far more than 1 %. `split` compares within
//! one run instead: the bench itself has the broker sign a checkpoint at the start of every
//! other second of the counted arrivals (after one untimed round, so each timed round walks
//! only the rows since the previous one, as in `serve`), and reports the end-to-end times of
//! the arrivals due in the second a round starts beside those due in the second before the
//! next; the machine's drift falls on both halves alike.

#![expect(clippy::expect_used, reason = "a benchmark aborts on set-up failure")]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::issuer::Issuer;
use common::{
    CpuTimes, Engine, engines, env_or, fresh_db, machine, quantiles_ms, serve_broker, start_up,
};
use jit_server::config::Config;
use jit_server::http::AuthMode;
use jit_server::providers::Providers;
use serde_json::{Value, json};
use tokio::sync::watch;

/// Longest wait for one grant to become active before the arrival counts as failed.
const ACTIVATION_TIMEOUT: Duration = Duration::from_secs(10);
/// First poll interval while waiting for activation (`JIT_BENCH_POLL_MS`, default 20);
/// it doubles after each poll up to [`POLL_AT_MOST`]. Every waiting arrival polls, so a
/// fixed short interval would turn any slow-down into a flood of reads that the broker
/// must serve before it can catch up.
fn poll_interval() -> Duration {
    Duration::from_millis(env_or("JIT_BENCH_POLL_MS", 20))
}
/// The longest poll interval: what `jit request --wait` used before the long poll.
const POLL_AT_MOST: Duration = Duration::from_secs(1);

/// How an arrival waits for its grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Reads the request at doubling intervals.
    Poll,
    /// The long poll (`?wait=active&timeout=10s`).
    Long,
}

impl Wait {
    fn name(self) -> &'static str {
        match self {
            Self::Poll => "poll",
            Self::Long => "long",
        }
    }
}

/// One access token per arrival, signed before the clock starts: token `n`
/// is a fresh requester (`oid` …`n`) in `grp-jit-requesters`, since a
/// requester may hold one open request per entitlement.
fn sign_tokens(issuer: &Issuer, count: u64) -> Vec<String> {
    (0..count)
        .map(|n| issuer.token(n, &["grp-jit-requesters"]))
        .collect()
}

/// Timings of one arrival.
struct Sample {
    /// When the arrival was due, from the start of the run.
    due: Duration,
    create: Duration,
    activation: Duration,
    mint: Duration,
    total: Duration,
}

/// What went wrong with one arrival.
type Failure = String;

async fn flow(
    http: reqwest::Client,
    base: String,
    token: String,
    start: Instant,
    scheduled: Instant,
    wait: Wait,
) -> Result<Sample, Failure> {
    let mut poll = poll_interval();
    let t0 = Instant::now();
    let res = http
        .post(format!("{base}/api/v1/requests"))
        .bearer_auth(&token)
        .json(&json!({
            "entitlement": "aws-sandbox",
            "duration": "1h",
            "justification": "load benchmark",
        }))
        .send()
        .await
        .map_err(|e| format!("create: {e}"))?;
    let status = res.status();
    let body: Value = res.json().await.map_err(|e| format!("create body: {e}"))?;
    let t1 = Instant::now();
    if status != reqwest::StatusCode::CREATED {
        return Err(format!("create: {status} {body}"));
    }
    let id = body["id"]
        .as_str()
        .ok_or_else(|| format!("create: no id in {body}"))?
        .to_owned();
    let mut state = body["state"].as_str().unwrap_or_default().to_owned();
    while state != "active" {
        if !matches!(state.as_str(), "approved" | "pending") {
            return Err(format!("request ended `{state}`"));
        }
        if t1.elapsed() > ACTIVATION_TIMEOUT {
            return Err("not active after 10 s".to_owned());
        }
        let query = match wait {
            Wait::Poll => {
                tokio::time::sleep(poll).await;
                poll = (poll * 2).min(POLL_AT_MOST);
                ""
            }
            Wait::Long => "?wait=active&timeout=10s",
        };
        let res = http
            .get(format!("{base}/api/v1/requests/{id}{query}"))
            .bearer_auth(&token)
            .send()
            .await
            .map_err(|e| format!("show: {e}"))?;
        let body: Value = res.json().await.map_err(|e| format!("show body: {e}"))?;
        body["state"]
            .as_str()
            .unwrap_or_default()
            .clone_into(&mut state);
    }
    let t2 = Instant::now();
    let res = http
        .post(format!("{base}/api/v1/requests/{id}/credentials"))
        .bearer_auth(&token)
        .send()
        .await
        .map_err(|e| format!("credentials: {e}"))?;
    let status = res.status();
    let body: Value = res
        .json()
        .await
        .map_err(|e| format!("credentials body: {e}"))?;
    let t3 = Instant::now();
    if status != reqwest::StatusCode::OK || body["AccessKeyId"].as_str().is_none() {
        return Err(format!("credentials: {status}"));
    }
    Ok(Sample {
        due: scheduled - start,
        create: t1 - t0,
        activation: t2 - t1,
        mint: t3 - t2,
        total: t3 - scheduled,
    })
}

/// `(p50, p99, max)` in milliseconds.
fn percentiles(v: Vec<Duration>) -> (f64, f64, f64) {
    let [p50, p99, max] = quantiles_ms(v, [0.50, 0.99, 1.0]);
    (p50, p99, max)
}

/// Whether and how the broker signs checkpoints during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkpoints {
    Off,
    /// As `serve` does: a round every `JIT_BENCH_LOAD_CHECKPOINT_EVERY`.
    On,
    /// A round at the start of every other second, timed by the bench (module docs).
    Split,
}

/// End to end of the arrivals due in the second a checkpoint round starts, and in the
/// second after it: `(p50, p99, count)` each.
type Halves = ((f64, f64, usize), (f64, f64, usize));

/// Results of one run.
struct Outcome {
    offered: u64,
    ok: usize,
    failed: usize,
    first_failure: Option<String>,
    throughput: f64,
    create: (f64, f64, f64),
    activation: (f64, f64, f64),
    mint: (f64, f64, f64),
    total: (f64, f64, f64),
    audit_rows: u64,
    /// Checkpoints signed during the run (none when they were off).
    checkpoints_written: Option<i64>,
    /// The machine's CPUs during the counted arrivals: busy and stolen, percent.
    cpu: Option<(f64, f64)>,
    /// `split` only.
    halves: Option<Halves>,
}

async fn run(
    engine: Engine,
    rate: u64,
    secs: u64,
    wait: Wait,
    checkpoints: Checkpoints,
) -> Outcome {
    // The broker's pool (`database.max_connections`; `JIT_BENCH_POOL`, default 20).
    let pool: u32 = env_or("JIT_BENCH_POOL", 20);
    let db = fresh_db(engine, 4).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let mut config = Config::default();
    config.database.url.clone_from(&db.url);
    config.database.max_connections = pool;
    config.server.public_url = format!("http://{addr}");
    config.policy.dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies"));
    let issuer = Issuer::start().await;
    config.oidc = Some(issuer.config());
    let sink = tempfile::tempdir().expect("a directory for the checkpoint sink");
    if checkpoints != Checkpoints::Off {
        sign_checkpoints(&mut config, sink.path());
    }
    let auth = AuthMode::Oidc(Arc::new(issuer.identity(&config.server.public_url).await));
    // Development mode for the simulated providers only: API calls go through
    // the production token check above.
    let (app, server) = serve_broker(config, auth, Providers::simulated(), listener).await;
    let (stop_scheduler, stopped) = watch::channel(false);
    let jobs = tokio::spawn(jit_server::scheduler::run(
        app.clone(),
        Duration::from_secs(1),
        stopped.clone(),
    ));
    // As `serve` runs it: a round every interval, a last one at shutdown.
    let checkpointer = app
        .checkpoints
        .clone()
        .filter(|_| checkpoints == Checkpoints::On)
        .map(|c| tokio::spawn(c.run(app.clone(), stopped)));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .build()
        .expect("http client");
    let base = format!("http://{addr}");

    let offered = rate * secs;
    let warm_up = rate * env_or("JIT_BENCH_LOAD_WARMUP_SECS", 3);
    let tokens = sign_tokens(&issuer, warm_up + offered);
    let (counted, warming) = tokens.split_at(usize::try_from(offered).unwrap_or(usize::MAX));
    // Warm up (connections opened, statements prepared, pages cached), as a
    // broker that has been running is; these arrivals are not counted.
    let _ = arrivals(&client, &base, warming, rate, wait).await;
    // `split`: rounds at the start of every other second of the counted arrivals.
    let t0 = tokio::time::Instant::now() + Duration::from_millis(500);
    let rounds = (checkpoints == Checkpoints::Split).then(|| split_rounds(&app, t0));
    tokio::time::sleep_until(t0).await;
    let cpu_before = CpuTimes::now();
    let (samples, failures, elapsed) = arrivals(&client, &base, counted, rate, wait).await;
    if let Some(rounds) = rounds {
        rounds.abort();
        // A round that failed ended the task with a panic: say so rather than report a run
        // in which rounds stopped.
        if let Err(e) = rounds.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let cpu = CpuTimes::now()
        .zip(cpu_before)
        .map(|(after, before)| after.since(before));

    let _ = stop_scheduler.send(true);
    let _ = jobs.await;
    if let Some(checkpointer) = checkpointer {
        let _ = checkpointer.await;
    }
    server.abort();
    jit_server::store::audit::caught_up(&app.store)
        .await
        .expect("chain the pending audit events");
    let report = jit_server::store::audit::verify(&app.store, None)
        .await
        .expect("verify");
    assert!(report.ok, "audit chain broken under load: {report:?}");
    let checkpoints_written = if checkpoints == Checkpoints::Off {
        None
    } else {
        Some(signed(&app.store).await)
    };
    app.store.close().await;
    db.remove().await;

    if let Ok(k) = std::env::var("JIT_BENCH_LOAD_SLOWEST") {
        print_slowest(&samples, k.parse().unwrap_or(10));
    }
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let throughput = samples.len() as f64 / elapsed.as_secs_f64();
    Outcome {
        offered,
        ok: samples.len(),
        failed: failures.len(),
        first_failure: failures.into_iter().next(),
        throughput,
        create: percentiles(samples.iter().map(|s| s.create).collect()),
        activation: percentiles(samples.iter().map(|s| s.activation).collect()),
        mint: percentiles(samples.iter().map(|s| s.mint).collect()),
        total: percentiles(samples.iter().map(|s| s.total).collect()),
        audit_rows: report.checked,
        checkpoints_written,
        cpu,
        halves: (checkpoints == Checkpoints::Split).then(|| halves(&samples)),
    }
}

/// `split`: one untimed round (the first counts the table), then a round at `t0` and every
/// 2 s after, until aborted.
fn split_rounds(
    app: &jit_server::service::App,
    t0: tokio::time::Instant,
) -> tokio::task::JoinHandle<()> {
    let app = app.clone();
    let c = app.checkpoints.clone().expect("a checkpoint writer");
    tokio::spawn(async move {
        c.round(&app.store, app.now_ms())
            .await
            .expect("the untimed round");
        let mut every = tokio::time::interval_at(t0, Duration::from_secs(2));
        loop {
            every.tick().await;
            c.round(&app.store, app.now_ms()).await.expect("a round");
        }
    })
}

fn print_halves(((a50, a99, an), (b50, b99, bn)): Halves) {
    println!(
        "  split: end to end of arrivals due in the second a round starts {a50:.1} / {a99:.1} \
         ({an}), in the second before the next {b50:.1} / {b99:.1} ({bn}); p99 difference \
         {:+.2} ms ({:+.1} %)",
        a99 - b99,
        100.0 * (a99 - b99) / b99
    );
}

/// `split`: the arrivals due in an even second (a round starts with it) and in an odd one.
fn halves(samples: &[Sample]) -> Halves {
    let half = |even: bool| {
        let totals: Vec<Duration> = samples
            .iter()
            .filter(|s| (s.due.as_secs() % 2 == 0) == even)
            .map(|s| s.total)
            .collect();
        let n = totals.len();
        let [p50, p99] = quantiles_ms(totals, [0.50, 0.99]);
        (p50, p99, n)
    };
    (half(true), half(false))
}

/// Has the broker sign a checkpoint into a file sink under `dir` every
/// `JIT_BENCH_LOAD_CHECKPOINT_EVERY` (default `1s`), with a key made for the run.
fn sign_checkpoints(config: &mut Config, dir: &std::path::Path) {
    let (_, pem) = jit_server::checkpoint::keys::generate().expect("a signing key");
    let key = dir.join("checkpoint.key");
    std::fs::write(&key, pem).expect("write the signing key");
    config.audit.signing_key = Some(format!("file:{}", key.display()));
    config.audit.checkpoint_sinks = vec![format!("file://{}", dir.join("cp").display())];
    config.audit.checkpoint_every = std::env::var("JIT_BENCH_LOAD_CHECKPOINT_EVERY")
        .unwrap_or_else(|_| "1s".to_owned())
        .parse()
        .expect("JIT_BENCH_LOAD_CHECKPOINT_EVERY is a duration like `1s`");
    config.audit.broker_id = Some("bench".to_owned());
}

/// Checkpoints the broker signed.
async fn signed(store: &jit_server::store::Store) -> i64 {
    jit_server::store::query("SELECT COUNT(*) AS n FROM audit_checkpoints")
        .fetch_one(store)
        .await
        .expect("count the checkpoints")
        .try_get::<i64>("n")
        .expect("a count")
}

/// The `k` slowest calls of each kind, in the order they were due (stalls that hit many
/// arrivals at once show as runs of neighbours).
fn print_slowest(samples: &[Sample], k: usize) {
    let mut calls: Vec<(Duration, Duration, &str)> = samples
        .iter()
        .flat_map(|s| {
            [
                (s.create, s.due, "create"),
                (s.activation, s.due, "activation"),
                (s.mint, s.due, "mint"),
            ]
        })
        .collect();
    calls.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
    for what in ["create", "activation", "mint"] {
        let mut slowest: Vec<_> = calls.iter().filter(|c| c.2 == what).take(k).collect();
        slowest.sort_unstable_by_key(|c| c.1);
        for (took, due, what) in slowest {
            println!("  slow: {what} {took:?} for the arrival due at {due:?}");
        }
    }
}

/// Arrivals with `tokens` at `rate` per second, open loop; the samples, the
/// failures and the time until the last one ended.
async fn arrivals(
    client: &reqwest::Client,
    base: &str,
    tokens: &[String],
    rate: u64,
    wait: Wait,
) -> (Vec<Sample>, Vec<Failure>, Duration) {
    let gap = Duration::from_secs(1) / u32::try_from(rate).unwrap_or(1);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, token) in tokens.iter().enumerate() {
        let scheduled = start + gap * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(scheduled.into()).await;
        tasks.spawn(flow(
            client.clone(),
            base.to_owned(),
            token.clone(),
            start,
            scheduled,
            wait,
        ));
    }
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    let drain_deadline = Instant::now() + Duration::from_mins(1);
    while let Some(r) = tokio::time::timeout_at(drain_deadline.into(), tasks.join_next())
        .await
        .ok()
        .flatten()
    {
        match r {
            Ok(Ok(s)) => samples.push(s),
            Ok(Err(f)) => failures.push(f),
            Err(e) => failures.push(format!("task: {e}")),
        }
    }
    let elapsed = start.elapsed();
    failures.extend((0..tasks.len()).map(|_| "still running after 60 s".to_owned()));
    tasks.abort_all();
    (samples, failures, elapsed)
}

fn main() {
    if !start_up() {
        return;
    }
    let secs: u64 = env_or("JIT_BENCH_LOAD_SECS", 20);
    let rates: Vec<u64> = std::env::var("JIT_BENCH_LOAD_RATES")
        .unwrap_or_else(|_| "50,200".to_owned())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .filter(|r| *r > 0)
        .collect();
    let waits: Vec<Wait> = std::env::var("JIT_BENCH_LOAD_WAIT")
        .unwrap_or_else(|_| "poll,long".to_owned())
        .split(',')
        .filter_map(|w| match w.trim() {
            "poll" => Some(Wait::Poll),
            "long" => Some(Wait::Long),
            _ => None,
        })
        .collect();
    let checkpoints: Vec<Checkpoints> = std::env::var("JIT_BENCH_LOAD_CHECKPOINTS")
        .unwrap_or_else(|_| "off".to_owned())
        .split(',')
        .filter_map(|c| match c.trim() {
            "off" => Some(Checkpoints::Off),
            "on" => Some(Checkpoints::On),
            "split" => Some(Checkpoints::Split),
            _ => None,
        })
        .collect();
    println!("machine: {}", machine());
    println!("load: {secs} s per run, arrivals/s {rates:?}; latencies in ms (p50 / p99 / max)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // None: no run at 200 arrivals/s or more, so nothing to say about the target.
    let mut missed: Option<bool> = None;
    // The same for the end-to-end target of the long poll.
    let mut missed_end_to_end: Option<bool> = None;
    println!(
        "| engine | wait | checkpoints | offered/s | done/s | ok | failed | POST /requests | wait for active | POST …/credentials | end to end | audit rows | CPU busy / steal |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for engine in engines() {
        let mut cases = Vec::new();
        for &rate in &rates {
            for &wait in &waits {
                cases.extend(checkpoints.iter().map(|&signed| (rate, wait, signed)));
            }
        }
        for (rate, wait, signed) in cases {
            let o = rt.block_on(run(engine, rate, secs, wait, signed));
            let f = |(a, b, c): (f64, f64, f64)| format!("{a:.1} / {b:.1} / {c:.1}");
            println!(
                "| {} | {} | {} | {rate} | {:.1} | {} / {} | {} | {} | {} | {} | {} | {} | {} |",
                engine.name(),
                wait.name(),
                o.checkpoints_written
                    .map_or("off".to_owned(), |n| format!("{n} signed")),
                o.throughput,
                o.ok,
                o.offered,
                o.failed,
                f(o.create),
                f(o.activation),
                f(o.mint),
                f(o.total),
                o.audit_rows,
                o.cpu.map_or("n/a".to_owned(), |(busy, steal)| format!(
                    "{busy:.0} % / {steal:.1} %"
                )),
            );
            if let Some(why) = &o.first_failure {
                println!("  first failure: {why}");
            }
            if let Some(halves) = o.halves {
                print_halves(halves);
            }
            if rate >= 200 {
                let miss = o.create.1 > 10.0 || o.mint.1 > 10.0 || o.failed > 0;
                missed = Some(missed.unwrap_or(false) || miss);
                if wait == Wait::Long {
                    let miss = o.total.0 > 5.0 || o.total.1 > 15.0 || o.failed > 0;
                    missed_end_to_end = Some(missed_end_to_end.unwrap_or(false) || miss);
                }
            }
        }
    }
    print_targets(missed, missed_end_to_end);
}

/// Whether the runs at 200 arrivals/s met the targets (`None`: none ran).
fn print_targets(missed: Option<bool>, missed_end_to_end: Option<bool>) {
    println!(
        "target (p99 ≤ 10 ms per API call at 200 arrivals/s, no failures): {}",
        match missed {
            Some(true) => "MISSED",
            Some(false) => "met",
            None => "not measured (no rate of 200 or more in JIT_BENCH_LOAD_RATES)",
        }
    );
    println!(
        "target (long poll: end to end p50 ≤ 5 ms, p99 ≤ 15 ms at 200 arrivals/s): {}",
        match missed_end_to_end {
            Some(true) => "MISSED",
            Some(false) => "met",
            None => "not measured (no long-poll run at 200 arrivals/s or more)",
        }
    );
}
