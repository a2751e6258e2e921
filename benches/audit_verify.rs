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

use common::chain::build_chain;
use common::{engines, env_or, fresh_db, machine};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use jit_server::store::audit;

fn bench(c: &mut Criterion) {
    println!("machine: {}", machine());
    let total: usize = env_or("JIT_BENCH_VERIFY_ROWS", 1_000_000);
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
