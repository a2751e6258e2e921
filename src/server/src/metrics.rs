//! Prometheus metrics at `/metrics`: recorded through the `metrics` facade and
//! rendered by `metrics-exporter-prometheus` in the text format (0.0.4).
//!
//! Counters and histograms live in one process-wide recorder. Gauges are
//! computed at scrape time from one broker's state (a test process runs
//! several brokers), so each scrape records them into a recorder of its own
//! and renders it after the process-wide one.

use std::sync::LazyLock;
use std::time::Duration;

use metrics::Label;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets, in seconds, of every histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// How often recorded histogram samples are folded into their buckets (the
/// exporter keeps raw samples until then).
const UPKEEP: Duration = Duration::from_secs(5);

/// Counters and histograms (`…_seconds`), with their help texts.
const DESCRIBED: [(&str, &str); 14] = [
    ("jit_jobs_total", "Jobs run, by kind."),
    ("jit_job_duration_seconds", "How long a job ran."),
    (
        "jit_job_lateness_seconds",
        "From a job's due time to its start.",
    ),
    (
        "jit_job_retries_total",
        "Jobs that failed and were scheduled again.",
    ),
    (
        "jit_upstream_duration_seconds",
        "Provider calls, by entitlement kind and operation.",
    ),
    ("jit_upstream_errors_total", "Provider calls that failed."),
    (
        "jit_audit_append_seconds",
        "One audit append inside a change's transaction.",
    ),
    (
        "jit_audit_append_errors_total",
        "Audit appends that failed (the change rolled back).",
    ),
    (
        "jit_audit_seal_seconds",
        "One sealer round that chained pending audit events.",
    ),
    (
        "jit_audit_seal_errors_total",
        "Sealer rounds that failed (retried).",
    ),
    (
        "jit_audit_held_total",
        "Audit events held in the spool while the audit store failed.",
    ),
    (
        "jit_audit_checkpoint_seconds",
        "One round of signing and writing audit checkpoints.",
    ),
    (
        "jit_audit_checkpoints_total",
        "Audit checkpoints written, by sink.",
    ),
    (
        "jit_audit_checkpoint_errors_total",
        "Audit checkpoint writes that failed, by sink.",
    ),
];

#[expect(
    clippy::expect_used,
    reason = "the bucket list is a non-empty constant"
)]
fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets(&BUCKETS)
        .expect("buckets are given")
}

/// The process-wide recorder, installed on first use.
static GLOBAL: LazyLock<PrometheusHandle> = LazyLock::new(|| {
    let recorder = builder().build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("another metrics recorder is installed: /metrics shows only the gauges");
    }
    for (name, help) in DESCRIBED {
        if name.ends_with("_seconds") {
            metrics::describe_histogram!(name, help);
        } else {
            metrics::describe_counter!(name, help);
        }
    }
    handle
});

/// `pairs` as labels, once the process-wide recorder is installed (a metric
/// recorded before that would be lost).
fn labels(pairs: &[(&'static str, &str)]) -> Vec<Label> {
    LazyLock::force(&GLOBAL);
    pairs
        .iter()
        .map(|(k, v)| Label::new(*k, (*v).to_owned()))
        .collect()
}

/// Adds one to a counter.
pub fn inc(name: &'static str, pairs: &[(&'static str, &str)]) {
    metrics::counter!(name, labels(pairs)).increment(1);
}

/// Observes a duration in a histogram.
pub fn observe(name: &'static str, pairs: &[(&'static str, &str)], d: Duration) {
    metrics::histogram!(name, labels(pairs)).record(d.as_secs_f64());
}

/// Folds recorded histogram samples into their buckets every few seconds, so
/// memory stays flat between scrapes. Runs until the runtime ends.
pub fn spawn_upkeep() {
    tokio::spawn(async {
        let mut every = tokio::time::interval(UPKEEP);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            GLOBAL.run_upkeep();
        }
    });
}

/// A job ran: duration and lateness.
pub fn job_ran(kind: &str, took: Duration, late_ms: i64) {
    let l = [("kind", kind)];
    inc("jit_jobs_total", &l);
    observe("jit_job_duration_seconds", &l, took);
    observe(
        "jit_job_lateness_seconds",
        &l,
        Duration::from_millis(u64::try_from(late_ms.max(0)).unwrap_or(0)),
    );
}

/// A job failed and was scheduled again (an upstream refusal, a timeout, an internal error).
pub fn job_retried(kind: &str) {
    inc("jit_job_retries_total", &[("kind", kind)]);
}

/// A provider call finished.
pub fn upstream(provider: &str, op: &str, took: Duration, ok: bool) {
    let l = [("provider", provider), ("op", op)];
    observe("jit_upstream_duration_seconds", &l, took);
    if !ok {
        inc("jit_upstream_errors_total", &l);
    }
}

/// A gauge computed at scrape time: name, help, and its values with their labels.
pub type Gauge = (
    &'static str,
    &'static str,
    Vec<(Vec<(&'static str, String)>, f64)>,
);

/// Renders everything recorded, then `gauges`.
pub fn render(gauges: &[Gauge]) -> String {
    let mut out = GLOBAL.render();
    let scrape = builder().build_recorder();
    let handle = scrape.handle();
    metrics::with_local_recorder(&scrape, || {
        for (name, help, values) in gauges {
            metrics::describe_gauge!(*name, *help);
            for (pairs, v) in values {
                let labels: Vec<Label> = pairs
                    .iter()
                    .map(|(k, v)| Label::new(*k, v.clone()))
                    .collect();
                metrics::gauge!(*name, labels).set(*v);
            }
        }
    });
    out.push_str(&handle.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_exposition_format() {
        inc("jit_test_total", &[("kind", "a\"b\nc")]);
        observe("jit_test_seconds", &[], Duration::from_millis(3));
        let text = render(&[(
            "jit_test_gauge",
            "A gauge.",
            vec![(Vec::new(), 2.0), (vec![("sink", "s3".to_owned())], 1.5)],
        )]);
        assert!(
            text.contains("jit_test_total{kind=\"a\\\"b\\nc\"} 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE jit_test_seconds histogram"), "{text}");
        assert!(
            text.contains("jit_test_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("jit_test_seconds_bucket{le=\"0.001\"} 0"),
            "{text}"
        );
        assert!(text.contains("jit_test_seconds_count 1"), "{text}");
        assert!(
            text.contains("# HELP jit_test_gauge A gauge.\n# TYPE jit_test_gauge gauge\n"),
            "{text}"
        );
        assert!(text.contains("\njit_test_gauge 2\n"), "{text}");
        assert!(
            text.contains("\njit_test_gauge{sink=\"s3\"} 1.5\n"),
            "{text}"
        );
    }
}
