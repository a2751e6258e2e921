//! Hash-chained audit appends per second, on SQLite and PostgreSQL.
//!
//! Each append is its own transaction, as in the broker: `store.begin()`,
//! `store::audit::append`, commit. On SQLite the event is chained right there
//! (read the last row, hash, insert); on PostgreSQL it is written to
//! `audit_pending` and the store's sealer chains it after commit, so the clock
//! stops only when every event of the run is in the chain
//! (`store::audit::caught_up`). `writers/1` is one writer in a loop;
//! `writers/8` is eight concurrent writers sharing the work. Targets:
//! ≥ 1,000 rows/s on SQLite, ≥ 2,000 on PostgreSQL (docs/performance.md).
//!
//! `cargo bench -p jit-server --bench audit_append`
//! (`JIT_BENCH_PG_URL=postgres://…/postgres` adds PostgreSQL).

#![expect(clippy::expect_used, reason = "a benchmark aborts on set-up failure")]

mod common;

use std::time::{Duration, Instant};

use common::{Engine, engines, fresh_db, machine};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jit_server::store::audit::{self, NewEvent};
use jit_server::store::{Backend, Store};
use serde_json::json;

/// Appends `n` events, each in its own transaction.
async fn append_n(store: &Store, n: u64) {
    let request_id = uuid::Uuid::now_v7();
    for _ in 0..n {
        let mut tx = store.begin().await.expect("begin");
        audit::append(
            &mut tx,
            time::OffsetDateTime::now_utc(),
            NewEvent {
                actor: "alice@example.com",
                action: "credentials.minted",
                request_id: Some(request_id),
                entitlement: Some("aws-sandbox"),
                data: json!({
                    "access_key_id": "ASIAEXAMPLEEXAMPLE12",
                    "expiration": "2026-11-29T12:00:00Z",
                    "session_seconds": 3600,
                }),
            },
        )
        .await
        .expect("append");
        tx.commit().await.expect("commit");
    }
}

/// Appends `iters` events split over `writers` concurrent tasks; returns the
/// wall time until all of them are chained.
async fn run(store: &Store, iters: u64, writers: u64) -> Duration {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..writers {
        let share = iters / writers + u64::from(w < iters % writers);
        let store = store.clone();
        set.spawn(async move { append_n(&store, share).await });
    }
    while let Some(r) = set.join_next().await {
        r.expect("writer task");
    }
    audit::caught_up(store)
        .await
        .expect("chain the appended events");
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    println!("machine: {}", machine());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for engine in engines() {
        let db = rt.block_on(fresh_db(engine, 10));
        assert_eq!(
            db.store.backend(),
            match engine {
                Engine::Sqlite => Backend::Sqlite,
                Engine::Postgres => Backend::Postgres,
            }
        );
        let mut group = c.benchmark_group(format!("audit_append/{}", engine.name()));
        group.throughput(Throughput::Elements(1));
        for writers in [1, 8] {
            group.bench_function(format!("writers/{writers}"), |b| {
                b.iter_custom(|iters| rt.block_on(run(&db.store, iters, writers)));
            });
        }
        group.finish();
        let report = rt.block_on(audit::verify(&db.store, None)).expect("verify");
        assert!(report.ok, "chain broken after the benchmark: {report:?}");
        println!(
            "audit_append/{}: {} rows appended, chain verified",
            engine.name(),
            report.checked
        );
        rt.block_on(db.remove());
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    targets = bench
}
criterion_main!(benches);
