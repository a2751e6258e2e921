//! `jit-server report access` over a seeded history, on both engines: one grant row per
//! `grant.activated` event, with what its request's events say; the unreviewed break-glass
//! uses; the reconciliation findings; CSV a spreadsheet reads (RFC 4180, read back with
//! Python's `csv` module).

use std::process::Command;
use std::time::Duration;

use jit_server::store::audit::{self, Filter, NewEvent};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::db::TestDb;
use crate::support::server::{ENGINES, run_ok, server_bin, start};

/// `jit-server report access` on `db_url` in `format`: stdout.
fn report(db_url: &str, format: &str) -> String {
    let out = run_ok(
        Command::new(server_bin())
            .args([
                "report",
                "access",
                "--from",
                "2000-01-01",
                "--to",
                "2100-01-01T00:00:00Z",
                "--format",
                format,
            ])
            .env("JIT_DATABASE__URL", db_url),
    );
    String::from_utf8(out.stdout).unwrap()
}

/// CSV text as a spreadsheet reads it (Python's `csv` module): one object per row.
fn read_csv(text: &str) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import csv, json, sys\n\
             rows = list(csv.DictReader(sys.stdin, strict=True))\n\
             json.dump(rows, sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[expect(
    clippy::too_many_lines,
    reason = "one seeded history, then the report read against it"
)]
async fn access_report_matches_the_audit_log_row_for_row() {
    for engine in ENGINES {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let bob = b.login("bob").await;
        let oscar = b.login("oscar").await;
        // Approved by bob, used (credentials, console), revoked by alice.
        let (status, body) = alice
            .post(
                "/requests",
                json!({"entitlement": "aws-prod-admin", "duration": "1h",
                       "justification": "fix \"replication\", now\nplease", "ticket": "INC-4711"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let admin: jit_api::Request = serde_json::from_value(body).unwrap();
        bob.approve(admin.id).await;
        b.run_jobs().await;
        let (status, _) = alice
            .post(&format!("/requests/{}/credentials", admin.id), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = alice
            .post(&format!("/requests/{}/console-url", admin.id), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = alice
            .post(&format!("/requests/{}/revoke", admin.id), json!({}))
            .await;
        assert!(status.is_success());
        // Auto-approved, runs out.
        let sandbox = alice.request("aws-sandbox", "30m").await;
        b.run_jobs().await;
        b.advance(Duration::from_mins(31)).await;
        b.run_jobs().await;
        // Break-glass, reviewed by bob; and one nobody reviewed.
        let glass = |ent: &'static str| {
            let oscar = &oscar;
            async move {
                let (status, body) = oscar
                    .post(
                        "/requests",
                        json!({"entitlement": ent, "duration": "1h",
                               "justification": "outage", "break_glass": true}),
                    )
                    .await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                serde_json::from_value::<jit_api::Request>(body).unwrap()
            }
        };
        let reviewed = glass("aws-billing-sso").await;
        b.run_jobs().await;
        let (status, body) = bob
            .post(
                &format!("/requests/{}/review", reviewed.id),
                json!({"comment": "fine"}),
            )
            .await;
        assert!(status.is_success(), "{body}");
        let (status, _) = oscar
            .post(&format!("/requests/{}/revoke", reviewed.id), json!({}))
            .await;
        assert!(status.is_success());
        let unreviewed = glass("aws-billing-sso").await;
        b.run_jobs().await;
        // A reconciliation finding.
        audit::append_alone(
            &b.app.store,
            time::OffsetDateTime::now_utc(),
            NewEvent {
                actor: "system",
                action: "reconcile.drift",
                request_id: None,
                entitlement: None,
                data: json!({"kind": "aws_role", "unexplained": ["JitAdmin: mallory"]}),
            },
        )
        .await
        .unwrap();

        let activations = audit::list(
            &b.app.store,
            &Filter {
                action: Some("grant.activated".to_owned()),
                limit: 100,
                ..Filter::default()
            },
        )
        .await
        .unwrap();
        let db_url = b.app.config.database.url.clone();
        let lines: Vec<Value> = report(&db_url, "jsonl")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let csv = read_csv(&report(&db_url, "csv"));
        assert_eq!(csv.len(), lines.len(), "{engine:?}");
        for (c, j) in csv.iter().zip(&lines) {
            // The same rows in both formats, every cell as text.
            for (k, v) in j.as_object().unwrap() {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                assert_eq!(c[k].as_str().unwrap(), text, "{engine:?} {k}");
            }
        }
        let grants: Vec<&Value> = lines.iter().filter(|r| r["section"] == "grant").collect();
        // Row for row: one per grant.activated event, in order.
        let mut events: Vec<_> = activations.iter().collect();
        events.sort_by_key(|e| e.seq);
        assert_eq!(grants.len(), events.len(), "{engine:?}: {lines:#?}");
        for (row, ev) in grants.iter().zip(&events) {
            assert_eq!(row["seq"], ev.seq, "{engine:?}");
            assert_eq!(row["request_id"], ev.request_id.clone().unwrap());
            assert_eq!(row["entitlement"], ev.entitlement.clone().unwrap());
        }
        let row = |id: uuid::Uuid| {
            *grants
                .iter()
                .find(|r| r["request_id"] == id.to_string())
                .unwrap()
        };
        let admin_row = row(admin.id);
        assert_eq!(admin_row["requester"], "alice@example.com");
        assert_eq!(
            admin_row["justification"],
            "fix \"replication\", now\nplease"
        );
        assert_eq!(admin_row["ticket"], "INC-4711");
        assert_eq!(admin_row["approved_by"], "bob@example.com");
        assert_eq!(admin_row["credentials_minted"], 1);
        assert_eq!(admin_row["console_signins"], 1);
        assert_eq!(admin_row["end"], "grant.revoked");
        assert_eq!(admin_row["ended_by"], "alice@example.com");
        assert_eq!(admin_row["break_glass"], false);
        let sandbox_row = row(sandbox.id);
        assert_eq!(sandbox_row["approved_by"], "auto-approved");
        assert_eq!(sandbox_row["end"], "grant.expired");
        assert_eq!(sandbox_row["ended_by"], "system");
        assert_eq!(sandbox_row["held_seconds"], 30 * 60, "{sandbox_row}");
        let reviewed_row = row(reviewed.id);
        assert_eq!(reviewed_row["approved_by"], "break-glass");
        assert_eq!(reviewed_row["break_glass_reviewed_by"], "bob@example.com");
        let unreviewed_row = row(unreviewed.id);
        assert_eq!(unreviewed_row["break_glass"], true);
        assert_eq!(unreviewed_row["break_glass_reviewed_by"], "");
        assert_eq!(unreviewed_row["ended_at"], "", "still held");
        let unreviewed_rows: Vec<&Value> = lines
            .iter()
            .filter(|r| r["section"] == "unreviewed_break_glass")
            .collect();
        assert_eq!(unreviewed_rows.len(), 1, "{engine:?}");
        assert_eq!(unreviewed_rows[0]["request_id"], unreviewed.id.to_string());
        let findings: Vec<&Value> = lines
            .iter()
            .filter(|r| r["section"] == "reconcile_finding")
            .collect();
        assert_eq!(findings.len(), 1, "{engine:?}");
        assert!(
            findings[0]["detail"]
                .as_str()
                .unwrap()
                .contains("JitAdmin: mallory")
        );
        // A period before all of it: nothing.
        let out = Command::new(server_bin())
            .args([
                "report",
                "access",
                "--from",
                "2001-01-01",
                "--to",
                "2001-02-01",
            ])
            .env("JIT_DATABASE__URL", &db_url)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap().lines().count(),
            1,
            "the header alone"
        );
    }
}

/// The access review page: auditors only, the grants of the period with the filters, the
/// unreviewed break-glass uses, and downloads that are the report of the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_access_review_page_filters_and_downloads() {
    for engine in ENGINES {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let oscar = b.login("oscar").await;
        let sandbox = alice.request("aws-sandbox", "1h").await;
        let (status, body) = oscar
            .post(
                "/requests",
                json!({"entitlement": "aws-billing-sso", "duration": "1h",
                       "justification": "outage", "break_glass": true}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let glass: jit_api::Request = serde_json::from_value(body).unwrap();
        b.run_jobs().await;

        let alice_cookie = b.browser_login("alice").await;
        let (status, _) = b.page(&alice_cookie, "/reports/access").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{engine:?}");
        let carol = b.browser_login("carol").await;
        let (status, page) = b.page(&carol, "/reports/access").await;
        assert_eq!(status, StatusCode::OK, "{engine:?}: {page}");
        for want in [
            format!("<a href=\"/requests/{}\">view", sandbox.id),
            format!("<a href=\"/requests/{}\">view", glass.id),
            "<td>auto-approved</td>".to_owned(),
            "break-glass (reviewed by nobody yet)".to_owned(),
            format!("<a href=\"/requests/{}\">review it</a>", glass.id),
        ] {
            assert!(page.contains(&want), "{engine:?}: {want}: {page}");
        }
        let (_, page) = b
            .page(&carol, "/reports/access?requester=oscar%40example.com")
            .await;
        assert!(page.contains(&glass.id.to_string()), "{page}");
        assert!(!page.contains(&sandbox.id.to_string()), "{page}");
        let (_, page) = b
            .page(&carol, "/reports/access?from=2001-01-01&to=2001-01-31")
            .await;
        assert!(page.contains("No grants in this period."), "{page}");
        let (status, _) = b.page(&carol, "/reports/access?from=someday").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // The download is the command line's report for the same period.
        let (status, csv) = b
            .page(
                &carol,
                "/reports/access/export?format=csv&from=2000-01-01&to=2099-12-31",
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(csv, report(&b.app.config.database.url, "csv"), "{engine:?}");
        assert_eq!(
            read_csv(&csv).len(),
            3,
            "two grants and one unreviewed use: {csv}"
        );
    }
}

/// On PostgreSQL a transaction's events wait in `audit_pending` until a sealer chains them. The
/// report covers every event committed before it ran, so it chains those first: a grant a
/// broker recorded a moment before (here: one whose broker is gone, its events never chained)
/// is in the report, and the log verifies afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_covers_events_not_chained_yet() {
    let db = TestDb::postgres().await;
    let id = uuid::Uuid::now_v7();
    db.exec(&format!(
        "INSERT INTO audit_pending (at, actor, action, request_id, entitlement, data) VALUES \
         (1767225600000, 'alice@example.com', 'request.created', '{id}', 'aws-sandbox', \
          '{{\"justification\":\"INC-1\"}}'), \
         (1767225600001, 'system', 'request.auto_approved', '{id}', 'aws-sandbox', '{{}}'), \
         (1767225600002, 'system', 'grant.activated', '{id}', 'aws-sandbox', \
          '{{\"expires_at\":\"2026-01-01T00:30:00Z\"}}')"
    ))
    .await
    .unwrap();
    let lines: Vec<Value> = report(&db.url, "jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["request_id"], id.to_string());
    assert_eq!(lines[0]["requester"], "alice@example.com");
    assert_eq!(lines[0]["approved_by"], "auto-approved");
    assert_eq!(lines[0]["held_seconds"], 30 * 60);
    assert_eq!(audit::pending(&db.store).await.unwrap(), (0, None));
}
