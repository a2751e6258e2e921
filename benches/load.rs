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
//! which on a shared 2-core machine moves the p99 by far more than 1 %. `split` attributes the
//! cost within one run instead: the bench itself has the broker sign a checkpoint round every
//! `JIT_BENCH_LOAD_CHECKPOINT_EVERY` (default `2s` here; `60s` is the default
//! `audit.checkpoint_every`) from the start of the counted arrivals, after one untimed round,
//! so each timed round walks only the rows since the previous one, and between rounds a step
//! every second (`Checkpointer::step`) walks the rows since the last one, as in `serve`. It
//! records each round's and step's wall-clock window on the arrivals' clock. An arrival is
//! *touched* when its lifetime (due → credentials minted) overlaps a round, a step, or the
//! [`touch_margin`] after one; the
//! untouched arrivals of the same run are the sample without checkpoints, so the machine's
//! drift falls on both alike, and the p99 of all arrivals against the p99 of the untouched is
//! what the rounds added to it (see [`Attribution`] for exactly what is printed). The same
//! split with the windows moved to where no round or step ran (placebos) shows how large such a
//! difference comes out by chance.

#![expect(clippy::expect_used, reason = "a benchmark aborts on set-up failure")]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::issuer::Issuer;
use common::{
    CpuTimes, Engine, engines, env_or, fresh_db, machine, nearest_rank, quantiles_ms, serve_broker,
    start_up,
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

/// How long after a checkpoint round ends an arrival still counts as touched by it
/// (`JIT_BENCH_LOAD_TOUCH_MARGIN_MS`, default 50): the round can leave a queue behind it (pool
/// connections, the sealer's and the scheduler's work, requests accepted meanwhile) that drains
/// only after it, so an arrival that starts just after the round may still wait for it.
fn touch_margin() -> Duration {
    Duration::from_millis(env_or("JIT_BENCH_LOAD_TOUCH_MARGIN_MS", 50))
}

/// Whether and how the broker signs checkpoints during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkpoints {
    Off,
    /// As `serve` does: a round every `JIT_BENCH_LOAD_CHECKPOINT_EVERY`.
    On,
    /// Rounds run and timed by the bench, their cost attributed within the run (module docs).
    Split,
}

/// `split`: the wall-clock time of one checkpoint round or step, from the start of the counted
/// arrivals (the origin of [`Sample::due`]).
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Duration,
    end: Duration,
    /// False for the untimed first round, kept only if it ended after the counted arrivals
    /// began.
    timed: bool,
    /// A step between rounds (`Checkpointer::step`), not a round.
    step: bool,
}

impl Window {
    /// Whether the arrival `s` lived (`[due, due + total]`) during this window or the `margin`
    /// after it: touched by it.
    fn touches(&self, s: &Sample, margin: Duration) -> bool {
        s.due <= self.end + margin && self.start <= s.due + s.total
    }
}

/// `split`: what the checkpoint rounds cost the end-to-end p99, attributed within one run.
///
/// This replaces the earlier comparison of the arrivals due in even seconds (a round starts)
/// with those in odd ones: a round and the queue it leaves last a few tens of milliseconds, so
/// most arrivals of "a second with a round" never met it and diluted what the round did, while
/// the two halves were still different seconds of a noisy host. Here the arrivals the rounds
/// could have reached are picked one by one, and the comparison is between nested samples of
/// the same run (all arrivals, and all but the touched), so the host's drift is shared.
///
/// All quantiles are nearest-rank, as [`quantiles_ms`]: the p99 of `n` values is the value at
/// rank `r(n) = ⌈0.99 n⌉`.
struct Attribution {
    /// The interval between the timed rounds.
    every: Duration,
    /// Timed rounds, run between the start of the counted arrivals and their end.
    rounds: usize,
    /// Steps between the rounds (`Checkpointer::step`, every `STEP_EVERY`), and how long one
    /// took, p50 and max, ms: their windows touch arrivals as the rounds' do.
    steps: usize,
    step_took: (f64, f64),
    /// How long a timed round took, p50 and max over the rounds, ms.
    took: (f64, f64),
    /// Arrivals whose lifetime `[due, due + total]` overlaps a round's window extended by the
    /// touch margin after its end (the untimed round's too, if it reached the counted
    /// arrivals): `k`.
    touched: usize,
    /// Arrivals that completed: `N`.
    arrivals: usize,
    /// End to end of the touched arrivals, p50 and p99, ms.
    touched_ms: (f64, f64),
    /// End-to-end p99 of all `N` arrivals, ms: the run with its checkpoints.
    p99_all: f64,
    /// End-to-end p99 of the `N − k` untouched arrivals, ms: the same run as if no round had
    /// been signed (the estimate assumes a touched arrival would, without the round, have
    /// fared as the untouched do, which holds since what makes it touched is only the time it
    /// was due). `p99_all − p99_untouched` is the rounds' cost.
    p99_untouched: f64,
    /// The largest p99 of all `N` arrivals that the untouched ones allow, ms: had every touched
    /// arrival taken forever, they would fill the top `k` ranks, and rank `r(N)` would be the
    /// untouched arrival at rank `r(N)` among the untouched. `None` when `r(N) > N − k`, i.e.
    /// the touched alone could make up the slowest 1 % and no bound exists. It does not depend
    /// on how slow the touched arrivals were, only on how many there were, so it says how
    /// much the rounds could move the p99 at this spacing whatever they cost.
    p99_worst: Option<f64>,
    /// The same split of the same run where no round or step ran, to show what the difference
    /// is when they cost nothing: the timed windows (rounds and steps) moved later by
    /// `j / (PLACEBOS + 1)` of the step period, `j` = 1 … [`PLACEBOS`] (those that still fall
    /// among the arrivals; rounds come a whole number of periods apart, so no moved window
    /// lands on a real one). For each,
    /// the arrivals it touches and the end-to-end p99 of the others, ms; `p99_all` minus that
    /// is a difference that chance alone gives.
    placebo: Vec<(usize, f64)>,
}

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
    attribution: Option<Attribution>,
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
        sign_checkpoints(&mut config, sink.path(), checkpoints);
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
    let _ = arrivals(&client, &base, warming, rate, wait, Instant::now()).await;
    // The counted arrivals' clock: `Sample::due` and the rounds' windows count from `t0`.
    let t0 = Instant::now() + Duration::from_millis(500);
    let rounds = (checkpoints == Checkpoints::Split).then(|| split_rounds(&app, t0));
    tokio::time::sleep_until(t0.into()).await;
    let cpu_before = CpuTimes::now();
    let (samples, failures, elapsed) = arrivals(&client, &base, counted, rate, wait, t0).await;
    let windows = match rounds {
        Some(rounds) => rounds.stop().await,
        None => Vec::new(),
    };
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
        print_slowest(&samples, &windows, k.parse().unwrap_or(10));
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
        attribution: app
            .checkpoints
            .as_ref()
            .filter(|_| checkpoints == Checkpoints::Split)
            .map(|c| attribute(&samples, &windows, c.every())),
    }
}

/// `split`: one untimed round (the first counts the table), then a round every
/// [`Checkpointer::every`](jit_server::checkpoint::writer::Checkpointer::every) from `t0` on
/// (the first one interval after `t0`, so every timed round walks an interval's rows), until
/// [`Rounds::stop`].
fn split_rounds(app: &jit_server::service::App, t0: Instant) -> Rounds {
    let app = app.clone();
    let c = app.checkpoints.clone().expect("a checkpoint writer");
    let (stop_tx, mut stop) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut windows = Vec::new();
        let started = Instant::now();
        c.round(&app.store, app.now_ms())
            .await
            .expect("the untimed round");
        let ended = Instant::now();
        if ended > t0 {
            windows.push(Window {
                start: started.saturating_duration_since(t0),
                end: ended.saturating_duration_since(t0),
                timed: false,
                step: false,
            });
        }
        let every = c.every();
        let mut ticks = tokio::time::interval_at((t0 + every).into(), every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Steps between the rounds, as `serve` runs them (`Checkpointer::run`), half a step
        // period off the rounds.
        let period = jit_server::checkpoint::writer::STEP_EVERY;
        let mut steps = tokio::time::interval_at((t0 + period / 2).into(), period);
        steps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let is_step = tokio::select! {
                _ = ticks.tick() => false,
                _ = steps.tick() => true,
                _ = stop.changed() => break,
            };
            let started = Instant::now();
            if is_step {
                c.step(&app.store).await.expect("a step");
            } else {
                c.round(&app.store, app.now_ms()).await.expect("a round");
            }
            windows.push(Window {
                start: started.saturating_duration_since(t0),
                end: Instant::now().saturating_duration_since(t0),
                timed: true,
                step: is_step,
            });
        }
        windows
    });
    Rounds {
        stop: stop_tx,
        task,
    }
}

/// `split`: the task running the checkpoint rounds.
struct Rounds {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<Window>>,
}

impl Rounds {
    /// Stops the rounds after the one in progress, if any (so its window is whole): their
    /// windows.
    async fn stop(self) -> Vec<Window> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(windows) => windows,
            // A round that failed ended the task with a panic: say so rather than report a run
            // in which rounds stopped.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("the checkpoint rounds: {e}"),
        }
    }
}

/// `split`: how many placebo splits [`Attribution::placebo`] makes.
const PLACEBOS: u32 = 5;

/// `split`: the arrivals touched by a round, and the p99s of [`Attribution`].
fn attribute(samples: &[Sample], windows: &[Window], every: Duration) -> Attribution {
    let margin = touch_margin();
    let reached = |windows: &[Window], s: &Sample| windows.iter().any(|w| w.touches(s, margin));
    let (touched, untouched): (Vec<&Sample>, Vec<&Sample>) =
        samples.iter().partition(|s| reached(windows, s));
    let totals = |v: &[&Sample]| v.iter().map(|s| s.total).collect::<Vec<_>>();
    // The placebos: the timed windows moved by a sixth of the step period, two sixths, … five
    // sixths, where neither a round nor a step ran (steps come every period, rounds every
    // interval, a whole number of periods), as long as arrivals were still due then.
    let last_due = samples.iter().map(|s| s.due).max().unwrap_or_default();
    let period = jit_server::checkpoint::writer::STEP_EVERY;
    let placebo = (1..=PLACEBOS)
        .map(|j| {
            let by = period * j / (PLACEBOS + 1);
            let moved: Vec<Window> = windows
                .iter()
                .filter(|w| w.timed)
                .map(|w| Window {
                    start: w.start + by,
                    end: w.end + by,
                    ..*w
                })
                .filter(|w| w.start <= last_due)
                .collect();
            let kept: Vec<&Sample> = samples.iter().filter(|s| !reached(&moved, s)).collect();
            let [p99] = quantiles_ms(totals(&kept), [0.99]);
            (samples.len() - kept.len(), p99)
        })
        .collect();
    let took = |step: bool| {
        let took: Vec<Duration> = windows
            .iter()
            .filter(|w| w.timed && w.step == step)
            .map(|w| w.end.saturating_sub(w.start))
            .collect();
        let n = took.len();
        let [p50, max] = quantiles_ms(took, [0.50, 1.0]);
        (n, (p50, max))
    };
    let ((rounds, (took_p50, took_max)), (steps, step_took)) = (took(false), took(true));
    let [touched_p50, touched_p99] = quantiles_ms(totals(&touched), [0.50, 0.99]);
    let [p99_all] = quantiles_ms(samples.iter().map(|s| s.total).collect(), [0.99]);
    let mut untouched = totals(&untouched);
    let [p99_untouched] = quantiles_ms(untouched.clone(), [0.99]);
    untouched.sort_unstable();
    let rank = nearest_rank(samples.len(), 0.99);
    let p99_worst = untouched.get(rank - 1).map(|d| d.as_secs_f64() * 1000.0);
    Attribution {
        every,
        rounds,
        took: (took_p50, took_max),
        steps,
        step_took,
        touched: touched.len(),
        arrivals: samples.len(),
        touched_ms: (touched_p50, touched_p99),
        p99_all,
        p99_untouched,
        p99_worst,
        placebo,
    }
}

fn print_attribution(a: &Attribution) {
    let share = |k: usize| {
        #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let pct = 100.0 * k as f64 / a.arrivals.max(1) as f64;
        pct
    };
    let change = |p: f64| {
        format!(
            "{:+.2} ms ({:+.2} %)",
            p - a.p99_untouched,
            100.0 * (p - a.p99_untouched) / a.p99_untouched
        )
    };
    println!(
        "  split: {} rounds every {:?}, a round {:.1} ms p50, {:.1} ms max; {} steps, a step {:.1} \
         ms p50, {:.1} ms max; touched (within a round or step or {:?} after) {} of {} arrivals \
         ({:.2} %), their end to end {:.1} / {:.1}",
        a.rounds,
        a.every,
        a.took.0,
        a.took.1,
        a.steps,
        a.step_took.0,
        a.step_took.1,
        touch_margin(),
        a.touched,
        a.arrivals,
        share(a.touched),
        a.touched_ms.0,
        a.touched_ms.1,
    );
    println!(
        "  split: end-to-end p99 all {:.2} ms, untouched {:.2} ms, difference {}; worst case \
         (touched infinitely slow) {}",
        a.p99_all,
        a.p99_untouched,
        change(a.p99_all),
        a.p99_worst.map_or_else(
            || "unbounded (touched > 1 % of the arrivals)".to_owned(),
            |w| format!("{w:.2} ms, {}", change(w))
        ),
    );
    let placebo: Vec<String> = a
        .placebo
        .iter()
        .map(|&(k, p99)| {
            format!(
                "{:+.2} ms ({:+.2} %, {k} touched)",
                a.p99_all - p99,
                100.0 * (a.p99_all - p99) / p99
            )
        })
        .collect();
    println!(
        "  split: placebo differences (the windows moved by 1/{n} … {}/{n} of the step period, \
         where no round or step ran): {}",
        PLACEBOS,
        placebo.join(", "),
        n = PLACEBOS + 1,
    );
}

/// Has the broker sign a checkpoint into a file sink under `dir` every
/// `JIT_BENCH_LOAD_CHECKPOINT_EVERY` (default `1s`; `2s` for `split`, whose rounds the bench
/// runs at that interval), with a key made for the run.
fn sign_checkpoints(config: &mut Config, dir: &std::path::Path, checkpoints: Checkpoints) {
    let (_, pem) = jit_server::checkpoint::keys::generate().expect("a signing key");
    let key = dir.join("checkpoint.key");
    std::fs::write(&key, pem).expect("write the signing key");
    config.audit.signing_key = Some(format!("file:{}", key.display()));
    config.audit.checkpoint_sinks = vec![format!("file://{}", dir.join("cp").display())];
    config.audit.checkpoint_every = std::env::var("JIT_BENCH_LOAD_CHECKPOINT_EVERY")
        .unwrap_or_else(|_| {
            if checkpoints == Checkpoints::Split {
                "2s"
            } else {
                "1s"
            }
            .to_owned()
        })
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
fn print_slowest(samples: &[Sample], windows: &[Window], k: usize) {
    // End to end, with the checkpoint round or step (`split`) whose window (and margin) the
    // arrival overlapped, to see where the slowest fall.
    let margin = touch_margin();
    let mut slowest: Vec<&Sample> = samples.iter().collect();
    slowest.sort_unstable_by_key(|s| std::cmp::Reverse(s.total));
    slowest.truncate(k);
    slowest.sort_unstable_by_key(|s| s.due);
    for s in slowest {
        let by = windows
            .iter()
            .find(|w| w.touches(s, margin))
            .map_or_else(String::new, |w| {
                format!(
                    ", touched by the {} at {:?} (took {:?})",
                    if w.step { "step" } else { "round" },
                    w.start,
                    w.end.saturating_sub(w.start)
                )
            });
        println!(
            "  slow: end to end {:?} for the arrival due at {:?}{by}",
            s.total, s.due
        );
    }
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

/// Arrivals with `tokens` at `rate` per second from `start` on, open loop; the samples, the
/// failures and the time from `start` until the last one ended.
async fn arrivals(
    client: &reqwest::Client,
    base: &str,
    tokens: &[String],
    rate: u64,
    wait: Wait,
    start: Instant,
) -> (Vec<Sample>, Vec<Failure>, Duration) {
    let gap = Duration::from_secs(1) / u32::try_from(rate).unwrap_or(1);
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
            if let Some(a) = &o.attribution {
                print_attribution(a);
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
