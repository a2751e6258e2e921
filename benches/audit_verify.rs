//! `store::audit::verify` rows per second over a 1,000,000-row chain.
//!
//! The table is built once per run, fast: rows are hashed here with
//! `store::audit::chain_hash` and inserted 1,000 to a statement, 50,000 to a
//! transaction (the database's append-only and in-chain triggers still check
//! every row). Then `verify` recomputes the whole chain from the database.
//! Target: ≥ 500,000 rows/s (docs/performance.md).
//!
//! `cargo bench -p jit-server --bench audit_verify`
//! (`JIT_BENCH_PG_URL=postgres://…/postgres` adds PostgreSQL;
//! `JIT_BENCH_VERIFY_ROWS` changes the row count).

#![expect(clippy::expect_used, reason = "a benchmark aborts on set-up failure")]

mod common;

use std::time::{Duration, Instant};

use common::{engines, fresh_db, machine};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use jit_server::store::Store;
use jit_server::store::audit::{self, Canonical, GENESIS, chain_hash};

const ROWS_PER_STATEMENT: usize = 1_000;
const ROWS_PER_TRANSACTION: usize = 50_000;
const ACTIONS: [&str; 6] = [
    "request.created",
    "request.auto_approved",
    "grant.activated",
    "credentials.minted",
    "grant.expired",
    "auth.signed_in",
];

/// One generated row.
struct Row {
    seq: i64,
    at: i64,
    actor: String,
    action: &'static str,
    request_id: Option<String>,
    entitlement: Option<&'static str>,
    data: String,
    prev_hash: String,
    hash: String,
}

/// The row after `prev_hash` at `seq`, with content like the broker writes.
fn make_row(seq: i64, prev_hash: String) -> Row {
    let i = usize::try_from(seq).unwrap_or(0);
    let action = ACTIONS[i % ACTIONS.len()];
    let signin = action == "auth.signed_in";
    let actor = format!("user{}@example.com", i % 997);
    let request_id =
        (!signin).then(|| uuid::Uuid::from_u128(u128::from(seq.unsigned_abs() / 5)).to_string());
    let entitlement = (!signin).then_some("aws-sandbox");
    let data = if signin {
        r#"{"method":"oidc","mfa":true}"#.to_owned()
    } else {
        format!(
            r#"{{"duration_seconds":3600,"justification":"load test {seq}","policy_hash":"9f2c6e1d4b7a","session_seconds":3600}}"#
        )
    };
    let at = 1_764_000_000_000 + seq * 7;
    let hash = chain_hash(&Canonical {
        seq,
        at,
        actor: &actor,
        action,
        request_id: request_id.as_deref(),
        entitlement,
        data: &data,
        prev_hash: &prev_hash,
    });
    Row {
        seq,
        at,
        actor,
        action,
        request_id,
        entitlement,
        data,
        prev_hash,
        hash,
    }
}

/// `INSERT … VALUES ($1, …, $9), …` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO audit_events (seq, at, actor, action, request_id, entitlement, data, prev_hash, hash) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..9 {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(r * 9 + c + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

/// Fills an empty audit table with a valid chain of `total` rows.
async fn build_chain(store: &Store, total: usize) {
    let full = insert_sql(ROWS_PER_STATEMENT);
    let mut prev = GENESIS.to_owned();
    let mut seq = 0i64;
    let mut done = 0usize;
    while done < total {
        let mut tx = store.begin().await.expect("begin");
        let tx_end = (done + ROWS_PER_TRANSACTION).min(total);
        while done < tx_end {
            let n = ROWS_PER_STATEMENT.min(tx_end - done);
            let rows: Vec<Row> = (0..n)
                .map(|_| {
                    seq += 1;
                    let row = make_row(seq, std::mem::take(&mut prev));
                    prev.clone_from(&row.hash);
                    row
                })
                .collect();
            let sql = if n == ROWS_PER_STATEMENT {
                full.clone()
            } else {
                insert_sql(n)
            };
            let mut q = jit_server::store::query_built(sql);
            for r in &rows {
                q = q
                    .bind(r.seq)
                    .bind(r.at)
                    .bind(r.actor.as_str())
                    .bind(r.action)
                    .bind(r.request_id.as_deref())
                    .bind(r.entitlement)
                    .bind(r.data.as_str())
                    .bind(r.prev_hash.as_str())
                    .bind(r.hash.as_str());
            }
            q.execute(&mut tx).await.expect("bulk insert");
            done += n;
        }
        tx.commit().await.expect("commit");
    }
    // As a long-lived table is: checkpointed (SQLite); vacuumed, with its
    // visibility map and hint bits set, rather than left to an autovacuum
    // that would run during the measurement (PostgreSQL).
    store.checkpoint().await.expect("checkpoint");
    if store.backend() == jit_server::store::Backend::Postgres {
        jit_server::store::query("VACUUM (ANALYZE) audit_events")
            .execute(store)
            .await
            .expect("vacuum");
    }
}

fn bench(c: &mut Criterion) {
    println!("machine: {}", machine());
    let total: usize = std::env::var("JIT_BENCH_VERIFY_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for engine in engines() {
        let db = rt.block_on(fresh_db(engine, 4));
        let started = Instant::now();
        rt.block_on(build_chain(&db.store, total));
        let took = started.elapsed();
        println!(
            "audit_verify/{}: built {total} rows in {:.1} s ({:.0} rows/s bulk)",
            engine.name(),
            took.as_secs_f64(),
            f64::from(u32::try_from(total).unwrap_or(u32::MAX)) / took.as_secs_f64()
        );
        let mut group = c.benchmark_group(format!("audit_verify/{}", engine.name()));
        group.throughput(Throughput::Elements(
            u64::try_from(total).unwrap_or(u64::MAX),
        ));
        group.sampling_mode(SamplingMode::Flat);
        group.bench_function(format!("rows/{total}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let report = audit::verify(&db.store, None).await.expect("verify");
                        assert!(report.ok, "generated chain does not verify: {report:?}");
                        assert_eq!(usize::try_from(report.checked).ok(), Some(total));
                    }
                    start.elapsed()
                })
            });
        });
        group.finish();
        rt.block_on(db.remove());
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    targets = bench
}
criterion_main!(benches);
