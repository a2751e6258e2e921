//! Lists on a large database: `GET /api/v1/requests` for every role, with and without filters,
//! and `GET /api/v1/audit`, a page at a time at a fixed arrival rate, over HTTP on loopback;
//! `GET /api/v1/entitlements` closed-loop. On SQLite and PostgreSQL.
//!
//! The database holds `JIT_BENCH_LISTS_REQUESTS` requests (default 100,000; of 1,000 requesters
//! over the catalog's eight entitlements, the newest 5,000 pending, the rest ended) and a valid
//! audit chain of `JIT_BENCH_LISTS_AUDIT` rows (default 1,000,000), written in bulk through the
//! store. An in-process broker (as `benches/load.rs` builds it: production token check, the
//! repository's policies, the simulated providers) serves them. Each case is
//! `JIT_BENCH_LISTS_SECS` seconds (default 10) of calls at `JIT_BENCH_LISTS_RATE` a second
//! (default 200), open-loop (a fixed schedule, not waiting for earlier calls), each timed from
//! its scheduled start, so a broker that falls behind shows it. A case that pages (`pages`)
//! cycles through the first 20 pages' URLs, found beforehand by following `Link`
//! (requests) or `next` (audit). Each case first makes 20 calls one at a time (its cost alone,
//! and the warm-up); a case whose call alone costs more than two cores can give it at the rate
//! (2 s / rate) is not run open-loop, and the table says so.
//!
//! Targets: p99 ≤ 20 ms per page, 200 calls/s sustained; `GET /api/v1/entitlements` ≥ 10,000
//! calls/s closed-loop (`JIT_BENCH_LISTS_CLIENTS` concurrent callers, default 16, for the same
//! seconds) on the 2-core machine.
//!
//! `cargo bench -p jit-server --bench lists`; `JIT_BENCH_PG_URL` adds PostgreSQL.

#![expect(clippy::expect_used, reason = "a benchmark aborts on set-up failure")]
#![expect(
    clippy::cast_precision_loss,
    reason = "call counts far below 2^52 become rates"
)]

mod common;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::chain::build_chain;
use common::issuer::Issuer;
use common::{
    CpuTimes, Engine, engines, env_or, fresh_db, machine, quantiles_ms, serve_simulated, start_up,
};
use jit_server::store::Store;
use serde_json::Value;

/// The issuer's tenant (`common::issuer`): a user's key is `TENANT/oid`.
const TENANT: &str = "11111111-2222-3333-4444-555555555555";
/// Requesters the requests are spread over (token numbers 1..=REQUESTERS).
const REQUESTERS: usize = 1_000;
/// Open (pending) requests: the newest ones, one per requester and entitlement.
const PENDING: usize = 5_000;
/// Bound values per request row of [`seed_requests`].
const COLUMNS: usize = 14;
/// Requests per insert statement.
const PER_STATEMENT: usize = 500;
/// The catalog's entitlements (not bundles) and their kinds.
const ENTITLEMENTS: [(&str, &str); 8] = [
    ("aws-prod-admin", "aws_role"),
    ("aws-prod-readonly", "aws_role"),
    ("aws-sandbox", "aws_role"),
    ("aws-billing-sso", "aws_identity_center"),
    ("entra-user-admin", "entra_role"),
    ("entra-sec-ops-group", "entra_group"),
    ("azure-prod-contributor", "azure_role"),
    ("azure-platform-reader", "azure_role"),
];

fn user_key(n: usize) -> String {
    format!("{TENANT}/00000000-0000-0000-0000-{n:012}")
}

/// Writes `REQUESTERS` users and `total` requests: the newest `PENDING` pending (requester
/// `i % REQUESTERS`, a different entitlement for each thousand, so the one-open rule holds),
/// the others expired.
async fn seed_requests(store: &Store, total: usize) {
    let mut tx = store.begin().await.expect("begin");
    for chunk in (1..=REQUESTERS).collect::<Vec<_>>().chunks(PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO users (key, email, name, oid, groups_json, updated_at) VALUES ",
        );
        for r in 0..chunk.len() {
            let b = r * 4;
            if r > 0 {
                sql.push_str(", ");
            }
            let _ = write!(
                sql,
                "(${}, ${}, ${}, ${}, '[]', 0)",
                b + 1,
                b + 2,
                b + 3,
                b + 4
            );
        }
        let mut q = jit_server::store::query_built(sql);
        for n in chunk {
            q = q
                .bind(user_key(*n))
                .bind(format!("bench-{n}@example.com"))
                .bind(format!("Bench User {n}"))
                .bind(format!("00000000-0000-0000-0000-{n:012}"));
        }
        q.execute(&mut tx).await.expect("insert users");
    }
    let start = 1_790_000_000_000_i64;
    let mut i = 0usize;
    while i < total {
        let n = PER_STATEMENT.min(total - i);
        let mut sql = String::from(
            "INSERT INTO requests (id, entitlement, kind, requester_key, requester_email, state,
                duration_secs, justification, approvals_required, break_glass, root_id,
                target_key, simulated, created_at, pending_until, decided_at, activated_at,
                expires_at, ended_at) VALUES ",
        );
        for r in 0..n {
            let b = r * COLUMNS;
            if r > 0 {
                sql.push_str(", ");
            }
            let s: Vec<String> = (1..=COLUMNS).map(|c| format!("${}", b + c)).collect();
            // id, entitlement, kind, requester, email, state, 3600, justification, 1, 0,
            // root_id = id, target_key, 1, then the five times
            let _ = write!(
                sql,
                "({}, {}, {}, {}, {}, {}, 3600, {}, 1, 0, {}, {}, 1, {}, {}, {}, {}, {}, {})",
                s[0],
                s[1],
                s[2],
                s[3],
                s[4],
                s[5],
                s[6],
                s[0],
                s[7],
                s[8],
                s[9],
                s[10],
                s[11],
                s[12],
                s[13]
            );
        }
        let mut q = jit_server::store::query_built(sql);
        for k in i..i + n {
            let pending = k >= total.saturating_sub(PENDING);
            let requester = 1 + k % REQUESTERS;
            let ent = if pending {
                ENTITLEMENTS[(k / REQUESTERS) % ENTITLEMENTS.len()]
            } else {
                ENTITLEMENTS[k % ENTITLEMENTS.len()]
            };
            let created = start + i64::try_from(k).expect("fits") * 1_000;
            let key = user_key(requester);
            let id = uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | k as u128);
            q = q
                .bind(id.to_string())
                .bind(ent.0)
                .bind(ent.1)
                .bind(key.clone())
                .bind(format!("bench-{requester}@example.com"))
                .bind(if pending { "pending" } else { "expired" })
                .bind(format!("bench request {k}"))
                .bind(format!("{}:{key}", ent.0))
                .bind(created)
                .bind(created + 86_400_000)
                .bind((!pending).then_some(created + 60_000))
                .bind((!pending).then_some(created + 61_000))
                .bind((!pending).then_some(created + 3_661_000))
                .bind((!pending).then_some(created + 3_661_000));
        }
        q.execute(&mut tx).await.expect("insert requests");
        i += n;
    }
    tx.commit().await.expect("commit");
}

/// CPU busy and steal since `before`, as `busy % / steal %`.
fn busy_since(before: Option<CpuTimes>) -> String {
    match (before, CpuTimes::now()) {
        (Some(before), Some(after)) => {
            let (busy, steal) = after.since(before);
            format!("{busy:.0} % / {steal:.1} %")
        }
        _ => "?".to_owned(),
    }
}

/// One case: its call alone, then (when two cores can serve it at `rate`) `secs` seconds
/// open-loop; the table row's measured cells.
async fn case(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
    rate: u64,
    secs: u64,
) -> String {
    // One call at a time first (also the warm-up): what a page costs alone.
    let mut alone = Vec::new();
    for k in 0..20 {
        let t = Instant::now();
        let _ = get(http, &urls[k % urls.len()], token).await;
        alone.push(t.elapsed());
    }
    let [alone_p50] = quantiles_ms(alone, [0.50]);
    // Two cores serve `rate` calls a second only if a call costs under 2 / rate s; a case
    // that cannot is not run open-loop (its backlog would grow for the whole run and load
    // the shared machine), and says so.
    let budget_ms = 2_000.0 / rate as f64;
    if alone_p50 > budget_ms {
        return format!(
            "{alone_p50:.1} | not run: a call alone takes over {budget_ms:.0} ms | | | "
        );
    }
    let cpu = CpuTimes::now();
    let (stats, done, items) = open_loop(http, urls, token, rate, secs).await;
    format!(
        "{alone_p50:.1} | {stats} | {done:.1} | {items:.0} | {}",
        busy_since(cpu)
    )
}

/// Every list case at `rate` calls a second, one table row each.
async fn pages(
    engine: Engine,
    http: &reqwest::Client,
    base: &str,
    issuer: &Issuer,
    rate: u64,
    secs: u64,
) {
    let requester = issuer.token(1, &["grp-jit-requesters"]);
    let approver = issuer.token(100_001, &["grp-jit-approvers"]);
    let sandbox_approver = issuer.token(100_002, &["grp-prod-admins"]);
    let admin = issuer.token(100_003, &["grp-jit-admins"]);
    let auditor = issuer.token(100_004, &["grp-jit-auditors"]);
    let r = |q: &str| format!("{base}/requests?limit=100{q}");
    let a = |q: &str| format!("{base}/audit?limit=100{q}");
    let cases: Vec<(&str, &str, String, &str, usize)> = vec![
        ("requester", "mine", r("&mine=true"), &requester, 1),
        ("requester", "none", r(""), &requester, 1),
        (
            "requester",
            "state=pending",
            r("&state=pending"),
            &requester,
            1,
        ),
        ("approver", "none", r(""), &approver, 1),
        (
            "approver",
            "state=pending",
            r("&state=pending"),
            &approver,
            1,
        ),
        (
            "approver",
            "state=pending, 20 pages",
            r("&state=pending"),
            &approver,
            20,
        ),
        (
            "approver (sandbox only)",
            "state=pending",
            r("&state=pending"),
            &sandbox_approver,
            1,
        ),
        ("admin", "none", r(""), &admin, 1),
        ("admin", "none, 20 pages", r(""), &admin, 20),
        (
            "admin",
            "state=pending,active",
            r("&state=pending,active"),
            &admin,
            1,
        ),
        ("auditor", "none", r(""), &auditor, 1),
        (
            "auditor",
            "state=expired, 20 pages",
            r("&state=expired"),
            &auditor,
            20,
        ),
        ("auditor: audit", "none", a(""), &auditor, 1),
        ("auditor: audit", "none, 20 pages", a(""), &auditor, 20),
        (
            "auditor: audit",
            "action=grant.activated",
            a("&action=grant.activated"),
            &auditor,
            1,
        ),
        (
            "auditor: audit",
            "entitlement=aws-sandbox, 20 pages",
            a("&entitlement=aws-sandbox"),
            &auditor,
            20,
        ),
    ];
    println!(
        "| engine | caller | filter | one call alone, p50 ms | at {rate}/s: p50 / p99 / max ms | done/s | items/page | CPU busy / steal |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (who, filter, first, token, pages) in cases {
        let urls = page_urls(http, base, &first, token, pages).await;
        let shown = if urls.len() < pages {
            format!("{filter} (only {} pages)", urls.len())
        } else {
            filter.to_owned()
        };
        let row = case(http, &urls, token, rate, secs).await;
        println!("| {} | {who} | {shown} | {row} |", engine.name());
    }
}

async fn get(http: &reqwest::Client, url: &str, token: &str) -> (Value, Option<String>) {
    let res = http.get(url).bearer_auth(token).send().await.expect("GET");
    assert!(res.status().is_success(), "{url}: {}", res.status());
    let next = res
        .headers()
        .get(reqwest::header::LINK)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once('<'))
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(link, _)| link.to_owned());
    (res.json().await.expect("JSON body"), next)
}

/// The URLs of the first `pages` pages from `first` on.
async fn page_urls(
    http: &reqwest::Client,
    base: &str,
    first: &str,
    token: &str,
    pages: usize,
) -> Vec<String> {
    let mut urls = vec![first.to_owned()];
    while urls.len() < pages {
        let last = urls.last().expect("one");
        let (body, link) = get(http, last, token).await;
        let next = link
            .map(|l| {
                if l.starts_with("http") {
                    l
                } else {
                    // a path: relative to the server
                    let host = base.trim_end_matches("/api/v1");
                    format!("{host}{l}")
                }
            })
            .or_else(|| {
                body["next"].as_str().map(|n| {
                    format!(
                        "{}&after={n}",
                        first.split("&after=").next().unwrap_or(first)
                    )
                })
            });
        match next {
            Some(n) => urls.push(n),
            None => break,
        }
    }
    urls
}

/// `rate` calls a second for `secs` seconds, cycling through `urls`, each timed from its
/// scheduled start: `p50 / p99 / max` in ms, calls done a second, and how many items the
/// pages held on average.
async fn open_loop(
    http: &reqwest::Client,
    urls: &[String],
    token: &str,
    rate: u64,
    secs: u64,
) -> (String, f64, f64) {
    let total = rate * secs;
    let gap = Duration::from_secs(1) / u32::try_from(rate).expect("rate fits");
    let begun = Instant::now();
    let mut tasks = Vec::with_capacity(usize::try_from(total).expect("fits"));
    for k in 0..total {
        let at = begun + gap * u32::try_from(k).expect("fits");
        tokio::time::sleep_until(at.into()).await;
        let url = urls[usize::try_from(k).expect("fits") % urls.len()].clone();
        let (http, token) = (http.clone(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let (body, _) = get(&http, &url, &token).await;
            let items = body
                .as_array()
                .or_else(|| body["events"].as_array())
                .map_or(0, Vec::len);
            (at.elapsed(), items)
        }));
    }
    let mut took = Vec::with_capacity(tasks.len());
    let mut items = 0usize;
    for t in tasks {
        let (d, n) = t.await.expect("call");
        took.push(d);
        items += n;
    }
    let done_per_s = total as f64 / begun.elapsed().as_secs_f64();
    let [p50, p99, max] = quantiles_ms(took, [0.50, 0.99, 1.0]);
    (
        format!("{p50:.1} / {p99:.1} / {max:.1}"),
        done_per_s,
        items as f64 / total as f64,
    )
}

/// `clients` callers of `url`, each calling again as soon as it has its answer, for `secs`:
/// calls a second.
async fn closed_loop(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    clients: usize,
    secs: u64,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let begun = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url, token, done) =
                (http.clone(), url.to_owned(), token.to_owned(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let res = http
                        .get(&url)
                        .bearer_auth(&token)
                        .send()
                        .await
                        .expect("GET");
                    assert!(res.status().is_success(), "{}", res.status());
                    let _ = res.bytes().await.expect("body");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("caller");
    }
    done.load(Ordering::Relaxed) as f64 / begun.elapsed().as_secs_f64()
}

async fn run(engine: Engine, requests: usize, audit_rows: usize, rate: u64, secs: u64) {
    let db = fresh_db(engine, 4).await;
    let t = Instant::now();
    build_chain(&db.store, audit_rows).await;
    let chain_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    seed_requests(&db.store, requests).await;
    if engine == Engine::Postgres {
        jit_server::store::query("VACUUM ANALYZE requests")
            .execute(&db.store)
            .await
            .expect("vacuum");
    }
    println!(
        "{}: {audit_rows} audit rows in {chain_s:.1} s, {requests} requests in {:.1} s",
        engine.name(),
        t.elapsed().as_secs_f64()
    );
    let (app, server, base, issuer) = serve_simulated(&db.url).await;
    let http = reqwest::Client::new();
    pages(engine, &http, &base, &issuer, rate, secs).await;
    let clients: usize = env_or("JIT_BENCH_LISTS_CLIENTS", 16);
    let ents = format!("{base}/entitlements");
    let oncall = issuer.token(2, &["grp-jit-requesters", "grp-oncall"]);
    let _ = closed_loop(&http, &ents, &oncall, clients, 1).await;
    let cpu = CpuTimes::now();
    let per_s = closed_loop(&http, &ents, &oncall, clients, secs).await;
    let busy = busy_since(cpu);
    println!(
        "{}: `GET /api/v1/entitlements` closed-loop, {clients} callers: {per_s:.0} calls/s, CPU {busy}",
        engine.name()
    );
    server.abort();
    app.store.close().await;
    db.remove().await;
}

fn main() {
    if !start_up() {
        return;
    }
    println!("machine: {}", machine());
    let requests: usize = env_or("JIT_BENCH_LISTS_REQUESTS", 100_000);
    let audit_rows: usize = env_or("JIT_BENCH_LISTS_AUDIT", 1_000_000);
    let rate: u64 = env_or("JIT_BENCH_LISTS_RATE", 200);
    let secs: u64 = env_or("JIT_BENCH_LISTS_SECS", 10);
    println!(
        "{requests} requests, {audit_rows} audit rows; {rate} calls/s for {secs} s a case; \
         times from each call's scheduled start"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for engine in engines() {
        rt.block_on(run(engine, requests, audit_rows, rate, secs));
    }
    println!("machine after: {}", machine());
}
