//! Prometheus metrics, kept in process and rendered as text at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Registry {
    counters: BTreeMap<(&'static str, String), u64>,
    histograms: BTreeMap<(&'static str, String), Histogram>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut r = REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut r)
}

/// Adds one to a counter with one label set (`key="value"` pairs, pre-rendered).
pub fn inc(name: &'static str, labels: String) {
    with(|r| *r.counters.entry((name, labels)).or_default() += 1);
}

/// Observes a duration in a histogram.
pub fn observe(name: &'static str, labels: String, d: Duration) {
    with(|r| {
        r.histograms
            .entry((name, labels))
            .or_default()
            .observe(d.as_secs_f64());
    });
}

/// A label value, escaped for the exposition format.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

/// A job ran: duration and lateness.
pub fn job_ran(kind: &str, took: Duration, late_ms: i64) {
    let l = format!("kind=\"{}\"", label(kind));
    inc("jit_jobs_total", l.clone());
    observe("jit_job_duration_seconds", l.clone(), took);
    observe(
        "jit_job_lateness_seconds",
        l,
        Duration::from_millis(u64::try_from(late_ms.max(0)).unwrap_or(0)),
    );
}

/// A job failed and was scheduled again (an upstream refusal, a timeout, an internal error).
pub fn job_retried(kind: &str) {
    inc("jit_job_retries_total", format!("kind=\"{}\"", label(kind)));
}

/// A provider call finished.
pub fn upstream(provider: &str, op: &str, took: Duration, ok: bool) {
    let l = format!("provider=\"{}\",op=\"{}\"", label(provider), label(op));
    observe("jit_upstream_duration_seconds", l.clone(), took);
    if !ok {
        inc("jit_upstream_errors_total", l);
    }
}

/// A gauge computed at scrape time: name, help, (labels, value) pairs.
pub type Gauge<'a> = (&'a str, &'a str, Vec<(String, f64)>);

/// Renders everything recorded, plus `extra` gauges computed at scrape time.
pub fn render(extra: &[Gauge<'_>]) -> String {
    let mut out = String::new();
    with(|r| {
        let mut last = "";
        for ((name, labels), v) in &r.counters {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(out, "{name}{} {v}", braces(labels));
        }
        last = "";
        for ((name, labels), h) in &r.histograms {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} histogram");
                last = name;
            }
            let sep = if labels.is_empty() { "" } else { "," };
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{} {}", braces(labels), h.sum);
            let _ = writeln!(out, "{name}_count{} {}", braces(labels), h.count);
        }
    });
    for (name, help, values) in extra {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, v) in values {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_exposition_format() {
        inc("jit_test_total", "kind=\"a\"".to_owned());
        observe("jit_test_seconds", String::new(), Duration::from_millis(3));
        let text = render(&[("jit_test_gauge", "A gauge.", vec![(String::new(), 2.0)])]);
        assert!(text.contains("jit_test_total{kind=\"a\"} 1"), "{text}");
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
            text.contains("# TYPE jit_test_gauge gauge\njit_test_gauge 2"),
            "{text}"
        );
        assert_eq!(label("a\"b\nc"), "a\\\"b\\nc");
    }
}
