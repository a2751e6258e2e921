//! `store::audit::verify` rows per second over a 1,000,000-row chain.
//!
//! The table is built once per run, fast: rows are hashed here with
//! `store::audit::chain_hash` and inserted 1,000 to a statement, 50,000 to a
//! transaction (the database's append-only and in-chain triggers still check
//! every row). Then `verify` recomputes the whole chain from the database.
//! Target: ≥ 500,000 rows/s (docs/performance.md).
//!
//! Then the broker's checkpoint writer signs the chain (Ed25519, a file sink), and
//! `verify --checkpoints` (`checkpoint::verify::against`, what `jit-server audit verify
//! --checkpoints` runs) is measured over the same rows: the walk, the count and the
//! checkpoint held against the database. Target: ≥ 500,000 rows/s too.
//!
//! `cargo bench -p jit-server --bench audit_verify`
//! (`JIT_BENCH_PG_URL=postgres://…/postgres` adds PostgreSQL;
//! `JIT_BENCH_VERIFY_ROWS` changes the row count).

#![expect(clippy::expect_used, reason = "a benchmark aborts on set-up failure")]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::chain::build_chain;
use common::{engines, env_or, fresh_db, machine};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use jit_server::checkpoint::keys;
use jit_server::checkpoint::sink::{Sink, SinkSpec};
use jit_server::checkpoint::writer::{Checkpointer, Outcome};
use jit_server::checkpoint::{Checkpoint, PublicKey, Signer as _, verify};
use jit_server::store::{Store, audit};

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
        // The writer verifies what it signs (the whole chain, the first time), then signs.
        let sink_dir = tempfile::tempdir().expect("a directory for the checkpoint sink");
        let (keys, cps) = rt.block_on(sign(&db.store, sink_dir.path()));
        group.bench_function(format!("checkpoints/rows/{total}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let report = verify::against(&db.store, &cps, &keys)
                            .await
                            .expect("verify --checkpoints");
                        assert!(report.ok, "the chain does not hold: {report:?}");
                        let held = report.checkpoints.expect("checkpoints held");
                        assert_eq!((held.checked, held.not_covered), (1, 0));
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

/// A checkpoint over the whole chain, signed by the broker's writer into a file sink in
/// `dir`; the public key and the sink's checkpoints, as `audit verify` reads them.
async fn sign(store: &Store, dir: &Path) -> ([PublicKey; 1], Vec<Checkpoint>) {
    let (signer, _) = keys::generate().expect("a signing key");
    let public = signer.public_key().clone();
    let spec = SinkSpec::File(dir.join("cp"));
    let writer = Checkpointer::new(
        Arc::new(signer),
        vec![Sink::open(&spec, None, 1).await.expect("the sink")],
        Duration::from_mins(1),
        "bench".to_owned(),
        Vec::new(),
    );
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_millis(),
    )
    .expect("time");
    let outcome = writer.round(store, now).await.expect("sign a checkpoint");
    assert!(matches!(outcome, Outcome::Written(_)), "{outcome:?}");
    let cps = Sink::open(&spec, None, 1)
        .await
        .expect("the sink")
        .list()
        .await
        .expect("read the checkpoints back");
    ([public], cps)
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
