//! Audit export memory: the peak resident memory an export of a 1,000,000-row chain adds to
//! the process, for `jit-server audit export` (`store::audit::export::export`, rows read in batches) and
//! for the audit page's download (`store::audit::export::stream`, a page of 1,000 events at a time,
//! consumed here as fast as it comes, as a response body is). Target: ≤ 20 MiB each
//! (docs/performance.md). The peak is measured from `/proc/self/status` (`VmHWM`, reset before
//! each export through `/proc/self/clear_refs`; Linux only).
//!
//! `cargo bench -p jit-server --bench audit_export`
//! (`JIT_BENCH_PG_URL=postgres://…/postgres` adds PostgreSQL;
//! `JIT_BENCH_EXPORT_ROWS` changes the row count).

#![expect(clippy::expect_used, reason = "a benchmark aborts on set-up failure")]

mod common;

use std::io::Write;
use std::time::Instant;

use common::chain::build_chain;
use common::{engines, env_or, fresh_db, machine};
use futures_util::TryStreamExt as _;
use jit_server::store::audit::Filter;
use jit_server::store::audit::export::{self, ExportFormat};

/// A kibibyte count from `/proc/self/status`.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a kB field")
}

/// Bytes written, nothing kept.
struct Count(u64);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += u64::try_from(buf.len()).unwrap_or(u64::MAX);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {
    println!("machine: {}", machine());
    let total: usize = env_or("JIT_BENCH_EXPORT_ROWS", 1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for engine in engines() {
        let db = rt.block_on(fresh_db(engine, 4));
        rt.block_on(build_chain(&db.store, total));
        for (download, format) in [
            (false, ExportFormat::Jsonl),
            (false, ExportFormat::Csv),
            (true, ExportFormat::Jsonl),
            (true, ExportFormat::Csv),
        ] {
            std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak (clear_refs)");
            let before = status_kib("VmRSS");
            let started = Instant::now();
            let bytes = rt.block_on(async {
                if download {
                    export::stream(db.store.clone(), format, Filter::default())
                        .try_fold(0_u64, |n, chunk| async move {
                            Ok(n + u64::try_from(chunk.len()).unwrap_or(u64::MAX))
                        })
                        .await
                        .expect("stream")
                } else {
                    let mut out = Count(0);
                    let n = export::export(&db.store, format, 1, &mut out)
                        .await
                        .expect("export");
                    assert_eq!(usize::try_from(n).ok(), Some(total));
                    out.0
                }
            });
            let took = started.elapsed();
            let growth = status_kib("VmHWM").saturating_sub(before);
            #[expect(clippy::cast_precision_loss, reason = "sizes far below 2^52")]
            let mib = |kib: u64| kib as f64 / 1024.0;
            let how = if download {
                "page download"
            } else {
                "audit export"
            };
            println!(
                "audit_export/{}: {how} {format} of {total} rows: {:.0} MiB in {:.1} s, \
                 peak RSS +{:.1} MiB (from {:.1} MiB)",
                engine.name(),
                mib(bytes / 1024),
                took.as_secs_f64(),
                mib(growth),
                mib(before),
            );
        }
        rt.block_on(db.remove());
    }
}
