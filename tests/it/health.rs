//! `/healthz`, `/readyz` and `/metrics` of a running broker: the Prometheus text
//! follows what the broker did (requests by state, jobs, their retries, provider
//! calls, audit appends, scheduler backlog).

use std::time::Duration;

use jit_server::config::{EmailConfig, Secret};
use jit_server::providers::Providers;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::server::{ENGINES, TestBroker, free_port, start_with};

/// The value of the sample `series` (name with its labels, exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(b: &TestBroker) -> String {
    let res = reqwest::get(format!("{}/metrics", b.url)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let kind = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain"), "{kind}");
    res.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_requests_jobs_retries_and_provider_calls() {
    assert_eq!(sample("a{x=\"1\"} 2\n", "a{x=\"1\"}"), Some(2.0));
    assert_eq!(sample("ab 2\n", "a"), None);
    for engine in ENGINES {
        // Mail to a closed port: every notification fails and is retried.
        let port = free_port();
        let b = start_with(engine, Providers::simulated(), |c| {
            c.notify.email = Some(EmailConfig {
                smtp_url: Secret::new(format!("smtp://127.0.0.1:{port}")),
                from: "jit <jit@example.com>".to_owned(),
            });
        })
        .await;

        let health: Value = reqwest::get(format!("{}/healthz", b.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health, json!({"status": "ok"}));
        let res = reqwest::get(format!("{}/readyz", b.url)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let ready: Value = res.json().await.unwrap();
        assert_eq!(ready["status"], "ready", "{ready}");
        assert_eq!(ready["database"], true);
        assert_eq!(ready["policies"], true);

        let before = scrape(&b).await;
        let count = |text: &str, series: &str| sample(text, series).unwrap_or(0.0);

        let alice = b.login("alice").await;
        let sandbox = alice.request("aws-sandbox", "1h").await;
        alice.request("aws-prod-admin", "1h").await;
        b.run_jobs().await;
        let (status, _) = alice
            .post(&format!("/requests/{}/credentials", sandbox.id), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        b.advance(Duration::from_secs(2)).await;

        let after = scrape(&b).await;
        // Gauges come from this broker's database.
        assert_eq!(
            sample(&after, "jit_requests{state=\"active\"}"),
            Some(1.0),
            "{after}"
        );
        assert_eq!(
            sample(&after, "jit_requests{state=\"pending\"}"),
            Some(1.0),
            "{after}"
        );
        for gauge in ["jit_jobs_due", "jit_scheduler_lag_seconds"] {
            assert!(sample(&after, gauge).is_some(), "no {gauge}: {after}");
        }
        // Counters are process-wide (other tests run in this process): they only grow.
        for series in [
            "jit_jobs_total{kind=\"activate\"}",
            "jit_job_retries_total{kind=\"notify\"}",
            "jit_upstream_duration_seconds_count{provider=\"aws_role\",op=\"grant\"}",
            "jit_upstream_duration_seconds_count{provider=\"aws_role\",op=\"mint\"}",
            "jit_audit_append_seconds_count",
        ] {
            assert!(
                count(&after, series) > count(&before, series),
                "{series} did not grow:\n{after}"
            );
        }
        assert!(
            after.contains("# TYPE jit_upstream_duration_seconds histogram"),
            "{after}"
        );
    }
}
