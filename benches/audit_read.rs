//! Reading the audit log while it is written to: `GET /api/v1/audit` and
//! `GET /api/v1/audit/verify` (in steps, and `full=true`) over HTTP on loopback, on a
//! 200,000-row chain, on SQLite and PostgreSQL.
//!
//! An in-process broker (as `benches/load.rs` builds it: production token check, the
//! repository's policies) serves an auditor (a member of `grp-jit-auditors`), while a writer
//! appends 100 events per second (`store::audit::append_alone`, each its own transaction, as a
//! sign-in is), so on PostgreSQL there are events committed and not chained yet most of the
//! time. Measured, one call after another:
//!
//! - `GET /api/v1/audit?limit=100`, the first page (pending events included: issue 25 item 4);
//! - the same page read in the store as the broker read it before (`audit::caught_up`, a wait
//!   for a sealer round, then the chain), and as it reads it now (`audit::list`), side by side;
//! - `GET /api/v1/audit/verify` (in steps from the broker's last check; the first call reads
//!   everything) and `GET /api/v1/audit/verify?full=true`.
//!
//! Targets: `GET /api/v1/audit` p50 ≤ 2 ms on PostgreSQL; a check in steps costs what was
//! appended since the last one, not the chain's length.
//!
//! `cargo bench -p jit-server --bench audit_read`; `JIT_BENCH_PG_URL` adds PostgreSQL,
//! `JIT_BENCH_READ_ROWS` (default 200,000), `JIT_BENCH_READ_CALLS` (default 300) and
//! `JIT_BENCH_READ_WRITES` (appends per second, default 100; 0 for none) change the run.

#![expect(clippy::expect_used, reason = "a benchmark aborts on set-up failure")]

mod common;

use std::time::{Duration, Instant};

use common::chain::build_chain;

use common::{Engine, engines, env_or, fresh_db, machine, quantiles_ms, serve_simulated, start_up};
use jit_server::store::audit::{self, Filter, NewEvent};
use serde_json::{Value, json};

/// `p50 / p99 / max` in milliseconds.
fn stats(v: Vec<Duration>) -> String {
    let [p50, p99, max] = quantiles_ms(v, [0.50, 0.99, 1.0]);
    format!("{p50:.2} / {p99:.2} / {max:.2}")
}

/// `n` timed calls of `call`, one after another.
async fn timed<F, Fut, T>(n: usize, mut call: F) -> (Vec<Duration>, Vec<T>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut took = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        out.push(call().await);
        took.push(t.elapsed());
    }
    (took, out)
}

async fn get(http: &reqwest::Client, url: &str, token: &str) -> Value {
    let res = http.get(url).bearer_auth(token).send().await.expect("GET");
    assert!(res.status().is_success(), "{url}: {}", res.status());
    res.json().await.expect("JSON body")
}

/// The writer: `per_second` events, each committed on its own.
fn spawn_writer(store: jit_server::store::Store, per_second: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let gap = Duration::from_secs(1) / u32::try_from(per_second).unwrap_or(1);
        let mut tick = tokio::time::interval(gap);
        loop {
            tick.tick().await;
            audit::append_alone(
                &store,
                time::OffsetDateTime::now_utc(),
                NewEvent {
                    actor: "system",
                    action: "bench.written",
                    request_id: None,
                    entitlement: None,
                    data: json!({}),
                },
            )
            .await
            .expect("append");
        }
    })
}

/// One line of the report: what, `p50 / p99 / max` (or one time) in ms, a note.
type Line = (&'static str, String, String);

async fn run(engine: Engine, rows: usize, calls: usize, writes: u64) {
    let db = fresh_db(engine, 4).await;
    let started = Instant::now();
    build_chain(&db.store, rows).await;
    println!(
        "{}: built {rows} rows in {:.1} s",
        engine.name(),
        started.elapsed().as_secs_f64()
    );
    let (app, server, base, issuer) = serve_simulated(&db.url).await;
    let token = issuer.token(1, &["grp-jit-auditors"]);
    let http = reqwest::Client::new();
    let appender = (writes > 0).then(|| spawn_writer(app.store.clone(), writes));

    // The first check reads the whole chain and leaves the broker's mark.
    let t = Instant::now();
    let first = get(&http, &format!("{base}/audit/verify"), &token).await;
    assert_eq!(first["ok"], true, "{first}");
    let mut lines = vec![(
        "`GET /api/v1/audit/verify`, first call (whole chain)",
        format!("{:.1}", t.elapsed().as_secs_f64() * 1000.0),
        format!("{rows} rows"),
    )];
    lines.extend(lists(&app, &http, &base, &token, calls).await);
    lines.extend(verifies(&http, &base, &token, calls.min(100)).await);

    if let Some(w) = appender {
        w.abort();
    }
    server.abort();
    audit::caught_up(&app.store)
        .await
        .expect("chain the pending events");
    let report = audit::verify(&app.store, None).await.expect("verify");
    assert!(report.ok, "{report:?}");
    app.store.close().await;
    db.remove().await;
    for (what, took, note) in lines {
        println!("| {} | {what} | {took} | {note} |", engine.name());
    }
}

/// The first page of the log, over HTTP, and in the store as it was read before and now.
async fn lists(
    app: &jit_server::service::App,
    http: &reqwest::Client,
    base: &str,
    token: &str,
    calls: usize,
) -> Vec<Line> {
    let list_url = format!("{base}/audit?limit=100");
    let _ = timed(20, || get(http, &list_url, token)).await;
    let (api, pages) = timed(calls, || get(http, &list_url, token)).await;
    let with_pending = pages
        .iter()
        .filter(|p| {
            p["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["pending"] == true))
        })
        .count();
    let page = Filter {
        limit: 101,
        ..Filter::default()
    };
    let (before, _) = timed(calls, || async {
        audit::caught_up(&app.store).await.expect("caught up");
        audit::list(&app.store, &page).await.expect("list")
    })
    .await;
    let (now, _) = timed(calls, || async {
        audit::list(&app.store, &page).await.expect("list")
    })
    .await;
    vec![
        (
            "`GET /api/v1/audit?limit=100`",
            stats(api),
            format!("{with_pending} of {calls} pages held pending events"),
        ),
        (
            "store: wait for a sealer round, then the page (before)",
            stats(before),
            String::new(),
        ),
        (
            "store: chain and pending in one statement (now)",
            stats(now),
            String::new(),
        ),
    ]
}

/// `GET /api/v1/audit/verify` in steps, `calls` times 50 ms apart, and with `full=true`.
async fn verifies(http: &reqwest::Client, base: &str, token: &str, calls: usize) -> Vec<Line> {
    let verify_url = format!("{base}/audit/verify");
    let (_, reports) = timed(calls, || async {
        // what a caller checking every 50 ms finds appended since its last call
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        let report = get(http, &verify_url, token).await;
        (t.elapsed(), report)
    })
    .await;
    assert!(
        reports
            .iter()
            .all(|(_, r)| r["ok"] == true && r["recomputed_from"].as_i64() > Some(1)),
        "a check in steps recomputed the whole chain"
    );
    let steps = reports.iter().map(|(t, _)| *t).collect();
    let full_url = format!("{base}/audit/verify?full=true");
    let (full, fulls) = timed(5, || get(http, &full_url, token)).await;
    assert!(
        fulls
            .iter()
            .all(|r| r["ok"] == true && r["recomputed_from"] == 1)
    );
    let checked = fulls
        .last()
        .and_then(|r| r["checked"].as_u64())
        .unwrap_or(0);
    vec![
        (
            "`GET /api/v1/audit/verify`, in steps, every 50 ms",
            stats(steps),
            String::new(),
        ),
        (
            "`GET /api/v1/audit/verify?full=true`",
            stats(full),
            format!("{checked} rows"),
        ),
    ]
}

fn main() {
    if !start_up() {
        return;
    }
    println!("machine: {}", machine());
    let rows: usize = env_or("JIT_BENCH_READ_ROWS", 200_000);
    let calls: usize = env_or("JIT_BENCH_READ_CALLS", 300);
    let writes: u64 = env_or("JIT_BENCH_READ_WRITES", 100);
    println!("{rows} rows, {calls} calls each, {writes} appends/s alongside; ms p50 / p99 / max");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for engine in engines() {
        rt.block_on(run(engine, rows, calls, writes));
    }
    println!("machine after: {}", machine());
}
