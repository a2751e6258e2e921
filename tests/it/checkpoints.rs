//! Signed audit checkpoints with a file sink, each scenario on both engines (brokers sharing a
//! database: PostgreSQL only, the engine brokers share): the writer signs the chain's
//! head only when it grew, each checkpoint names the one before, `audit verify --checkpoints`
//! holds the database against them (and fails with another key), exports carry them and
//! verify offline, a chain changed since the last checkpoint is never signed, a failing sink
//! raises the alarm without holding up grants, and on PostgreSQL one broker writes a given
//! checkpoint.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use jit_server::checkpoint::keys::{self, Ed25519Signer};
use jit_server::checkpoint::sink::{Sink, SinkSpec};
use jit_server::checkpoint::writer::{Checkpointer, Outcome};
use jit_server::checkpoint::{PublicKey, Signer as _, verify};
use jit_server::store::{Backend, db};
use reqwest::StatusCode;

use crate::support::db::disable_audit_triggers;
use crate::support::server::{ENGINES, Engine, TestBroker, run, run_ok, server_bin, start_with};

/// A key pair written to `dir`: (`file:` reference of the private key, public key file).
pub fn key_files(dir: &Path, name: &str) -> (String, PathBuf, PublicKey) {
    let (signer, pem) = keys::generate().unwrap();
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    std::fs::write(&private, pem).unwrap();
    std::fs::write(&public, signer.public_key().to_pem()).unwrap();
    (
        format!("file:{}", private.display()),
        public,
        signer.public_key().clone(),
    )
}

/// A development broker that signs checkpoints into `sink_dir`.
pub async fn broker(engine: Engine, key: &str, sink_dir: &Path) -> TestBroker {
    let (key, sink) = (key.to_owned(), format!("file://{}", sink_dir.display()));
    start_with(
        engine,
        jit_server::providers::Providers::simulated(),
        move |c| {
            c.audit.signing_key = Some(key);
            c.audit.checkpoint_sinks = vec![sink];
            c.audit.broker_id = Some("jit-test".to_owned());
        },
    )
    .await
}

/// Files a request as alice (three or so audit events).
pub async fn activity(b: &TestBroker, n: usize) {
    let alice = b.login("alice").await;
    let bob = b.login("bob").await;
    for _ in 0..n {
        let r = alice.request("aws-prod-admin", "1h").await;
        bob.approve(r.id).await;
        b.run_jobs().await;
        let (status, body) = alice
            .post(&format!("/requests/{}/revoke", r.id), serde_json::json!({}))
            .await;
        assert!(status.is_success(), "{body}");
        b.run_jobs().await;
    }
    jit_server::store::audit::caught_up(&b.app.store)
        .await
        .unwrap();
}

async fn tick(b: &TestBroker) -> Outcome {
    b.app
        .checkpoints
        .as_ref()
        .unwrap()
        .tick(&b.app)
        .await
        .unwrap()
}

fn written(outcome: Outcome) -> jit_server::checkpoint::Checkpoint {
    match outcome {
        Outcome::Written(cp) => *cp,
        other => panic!("no checkpoint written: {other:?}"),
    }
}

async fn sink_list(dir: &Path) -> Vec<jit_server::checkpoint::Checkpoint> {
    Sink::open(&SinkSpec::File(dir.to_owned()), None, 1)
        .await
        .unwrap()
        .list()
        .await
        .unwrap()
}

/// `verify --checkpoints` of the broker's database against the checkpoints in `sink`.
async fn against_sink(b: &TestBroker, sink: &Path, key: &PublicKey) -> jit_api::VerifyReport {
    verify::against(
        &b.app.store,
        &sink_list(sink).await,
        std::slice::from_ref(key),
    )
    .await
    .unwrap()
}

/// `jit-server audit …` against the broker's database; exit code, stdout, stderr.
fn cli(b: &TestBroker, args: &[&str]) -> (i32, String, String) {
    run(Command::new(server_bin())
        .args(args)
        .env("JIT_DATABASE__URL", b.app.config.database.url.as_str())
        .env_remove("JIT_CONFIG"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoints_chain_cover_the_log_and_verify_from_the_sink() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let sink = dir.path().join("sink");
        let (key, public, public_key) = key_files(dir.path(), "cp");
        let b = broker(engine, &key, &sink).await;
        activity(&b, 1).await;

        let first = written(tick(&b).await);
        assert_eq!(
            (first.number, first.prev.as_str()),
            (1, jit_server::checkpoint::GENESIS)
        );
        assert_eq!(first.broker_id, "jit-test");
        assert_eq!(
            tick(&b).await,
            Outcome::Unchanged,
            "{engine:?}: nothing new, nothing signed"
        );
        activity(&b, 1).await;
        let second = written(tick(&b).await);
        assert_eq!(
            (second.number, second.prev.clone()),
            (2, first.hash.clone())
        );
        assert!(second.seq > first.seq && second.event_count == u64::try_from(second.seq).unwrap());
        let in_sink = sink_list(&sink).await;
        assert_eq!(in_sink, [first.clone(), second.clone()]);

        // Events after the newest checkpoint: a chain, not yet covered.
        activity(&b, 1).await;
        let report = verify::against(&b.app.store, &in_sink, std::slice::from_ref(&public_key))
            .await
            .unwrap();
        let c = report.checkpoints.clone().unwrap();
        assert!(report.ok, "{engine:?}: {report:?}");
        assert_eq!((c.checked, c.newest.as_ref().unwrap().number), (2, 2));
        assert_eq!(
            c.not_covered,
            u64::try_from(report.last_seq.unwrap() - second.seq).unwrap()
        );
        assert!(c.not_covered > 0);

        let sink_url = format!("file://{}", sink.display());
        command_line_api_and_page(
            &b,
            dir.path(),
            &sink_url,
            &public,
            c.not_covered,
            second.seq,
        )
        .await;
        exports_verify_offline(&b, dir.path(), &public);

        // A tail truncated below the newest checkpoint: the checkpoint disproves the database.
        disable_audit_triggers(&b.app.store).await;
        let cut = second.seq - 1;
        db::batch(
            &b.app.store,
            &format!("DELETE FROM audit_events WHERE seq >= {cut}"),
        )
        .await
        .unwrap();
        let (code, _, stderr) = cli(
            &b,
            &[
                "audit",
                "verify",
                "--checkpoints",
                &sink_url,
                "--public-key",
                public.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 2, "{engine:?}");
        assert!(
            stderr.contains("checkpoint 2 (signed")
                && stderr.contains(&format!(
                    "the database's chain ends at seq {}: its tail was truncated",
                    cut - 1
                )),
            "{engine:?}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chain_changed_since_the_last_checkpoint_is_never_signed_and_raises_the_alarm() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let sink = dir.path().join("sink");
        let (key, _, _) = key_files(dir.path(), "cp");
        let b = broker(engine, &key, &sink).await;
        activity(&b, 1).await;
        let first = written(tick(&b).await);
        activity(&b, 1).await;
        // Someone rewrites a covered row, hash and all: the writer's anchor no longer holds.
        disable_audit_triggers(&b.app.store).await;
        db::batch(
            &b.app.store,
            &format!(
                "UPDATE audit_events SET hash = '{}' WHERE seq = {}",
                "0".repeat(64),
                first.seq
            ),
        )
        .await
        .unwrap();
        let c = b.app.checkpoints.as_ref().unwrap();
        let e = c.tick(&b.app).await.unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "the audit chain does not verify after checkpoint 1 (seq {})",
                first.seq
            )) && e.contains("nothing is signed"),
            "{engine:?}: {e}"
        );
        assert_eq!(sink_list(&sink).await.len(), 1);
        let alarm = c.status().alarm.unwrap_or_default();
        assert!(alarm.contains("does not verify"), "{alarm}");
        let ready = crate::support::get_json(&b.http, &format!("{}/readyz", b.url)).await;
        assert_eq!(ready["status"], "ready", "{ready}");
        assert!(
            ready["audit_checkpoints"]["alarm"]
                .as_str()
                .unwrap()
                .contains("does not verify")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_sink_is_retried_raises_the_alarm_and_never_holds_up_a_grant() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        // A sink under a regular file cannot be created.
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, "x").unwrap();
        let sink = blocker.join("sink");
        let (key, _, _) = key_files(dir.path(), "cp");
        let b = broker(engine, &key, &sink).await;
        let c = b.app.checkpoints.clone().unwrap();
        for round in 0..4 {
            activity(&b, 1).await;
            let e = c.tick(&b.app).await.unwrap_err().to_string();
            assert!(e.contains("no sink took checkpoint 1"), "{engine:?}: {e}");
            let status = c.status();
            assert!(!status.sinks[0].ok && status.sinks[0].error.is_some());
            if round < 3 {
                assert!(
                    status.alarm.is_none(),
                    "{engine:?}: alarm after {round} intervals"
                );
            }
            b.clock
                .advance(time::Duration::try_from(c.every()).unwrap());
        }
        activity(&b, 1).await;
        let _ = c.tick(&b.app).await;
        let alarm = c.status().alarm.unwrap_or_default();
        assert!(
            alarm.contains("no audit checkpoint has been written for"),
            "{engine:?}: {alarm}"
        );
        let metrics = b.http.get(format!("{}/metrics", b.url)).send().await;
        let metrics = metrics.unwrap().text().await.unwrap();
        assert!(
            metrics.contains("jit_audit_checkpoint_alarm 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("jit_audit_checkpoint_errors_total{sink="),
            "{metrics}"
        );
        // The sink comes back: the next round writes, the alarm clears.
        std::fs::remove_file(&blocker).unwrap();
        let cp = written(c.tick(&b.app).await.unwrap());
        assert_eq!(cp.number, 1);
        assert!(c.status().alarm.is_none() && c.status().sinks[0].ok);
    }
}

/// After a checkpoint of its own key, a round reads only the rows signed since (issue 20: a
/// round costs what it walks, not the table): it signs `event_count` as the previous one's
/// plus the rows walked, and does not see a row deleted before the previous checkpoint, which
/// `verify --checkpoints` reports against that checkpoint. A writer with another key (a
/// rotation) cannot trust the previous checkpoint's count: it counts the whole table, and
/// refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_later_round_walks_only_the_rows_since_the_previous_checkpoint() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let sink = dir.path().join("sink");
        let (key, _, public_key) = key_files(dir.path(), "cp");
        let b = broker(engine, &key, &sink).await;
        activity(&b, 1).await;
        let first = written(tick(&b).await);
        assert_eq!(first.event_count, u64::try_from(first.seq).unwrap());
        assert!(first.seq > 2, "{engine:?}: {first:?}");

        // The owner deletes row 2, covered by checkpoint 1.
        disable_audit_triggers(&b.app.store).await;
        db::batch(&b.app.store, "DELETE FROM audit_events WHERE seq = 2")
            .await
            .unwrap();
        activity(&b, 1).await;
        let second = written(tick(&b).await);
        let walked = u64::try_from(second.seq - first.seq).unwrap();
        assert_eq!(
            (second.number, second.event_count),
            (2, first.event_count + walked),
            "{engine:?}: the previous count plus the rows walked"
        );
        let rows = jit_server::store::audit::row_count(&b.app.store)
            .await
            .unwrap();
        assert_eq!(
            rows + 1,
            second.event_count,
            "{engine:?}: the round did not count the table"
        );

        // The checkpoint that covered row 2 disproves the database.
        let report = against_sink(&b, &sink, &public_key).await;
        let c = report.checkpoints.clone().unwrap();
        let problem = report.problem.clone().unwrap_or_default();
        assert!(!report.ok, "{engine:?}: {report:?}");
        assert_eq!(
            (report.first_bad_seq, c.disproved_by, c.checked),
            (Some(2), Some(1), 0),
            "{engine:?}: {report:?}"
        );
        assert!(
            problem.starts_with("checkpoint 1 (signed")
                && problem.contains("row 2 at or below it no longer verifies"),
            "{engine:?}: {problem}"
        );

        // A writer with another key counts the whole table: it finds the hole and signs nothing.
        let (other_key, _, _) = key_files(dir.path(), "other");
        let rotated = file_writer(&other_key, &sink, "jit-rotated").await;
        activity(&b, 1).await;
        let e = rotated
            .round(&b.app.store, b.app.now_ms())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "the audit chain does not verify after checkpoint 2 (seq {}): rows below seq {} \
                 are missing",
                second.seq,
                second.seq + 1
            )) && e.contains("nothing is signed"),
            "{engine:?}: {e}"
        );
        assert_eq!(sink_list(&sink).await.len(), 2);
    }
}

/// Some activity, then a step of the writer `c`: the head it walked to.
async fn stepped(b: &TestBroker, c: &Checkpointer) -> i64 {
    activity(b, 1).await;
    c.step(&b.app.store).await.unwrap();
    jit_server::store::audit::head_seq(&b.app.store)
        .await
        .unwrap()
        .unwrap()
}

/// Between rounds the writer walks the new rows in steps, and the round goes on from where
/// they ended: it signs the same count a round alone would. A row the steps walked and someone
/// then edited in place is not walked again, so the round signs, and `verify --checkpoints`
/// names the row (as for a row edited just after any walk passed it); a rewrite that changes
/// the hash the steps ended on is never signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn steps_walk_ahead_of_the_round_and_what_they_walked_stays_held() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let (sink, (key, _, public_key)) = (dir.path().join("sink"), key_files(dir.path(), "cp"));
        let (b, c) = {
            let b = broker(engine, &key, &sink).await;
            let c = b.app.checkpoints.clone().unwrap();
            (b, c)
        };
        activity(&b, 1).await;
        let first = written(tick(&b).await);
        let walked = stepped(&b, &c).await;
        assert!(walked > first.seq + 1, "{engine:?}");
        activity(&b, 1).await;
        let second = written(tick(&b).await);
        assert_eq!(
            (second.number, second.event_count),
            (2, u64::try_from(second.seq).unwrap()),
            "{engine:?}: the steps' rows and the round's, counted once each"
        );

        // A row the steps walked is edited in place: the round goes on after it and signs.
        stepped(&b, &c).await;
        let edited = second.seq + 1;
        disable_audit_triggers(&b.app.store).await;
        db::batch(
            &b.app.store,
            &format!("UPDATE audit_events SET actor = 'mallory' WHERE seq = {edited}"),
        )
        .await
        .unwrap();
        activity(&b, 1).await;
        let third = written(tick(&b).await);
        let report = against_sink(&b, &sink, &public_key).await;
        assert!(!report.ok, "{engine:?}: {report:?}");
        assert_eq!(report.first_bad_seq, Some(edited), "{engine:?}: {report:?}");
        assert_eq!(
            report.checkpoints.unwrap().disproved_by,
            Some(third.number),
            "{engine:?}"
        );

        // The row a step ended on is rewritten, hash and all: never signed.
        let end = stepped(&b, &c).await;
        db::batch(
            &b.app.store,
            &format!(
                "UPDATE audit_events SET hash = '{}' WHERE seq = {end}",
                "0".repeat(64)
            ),
        )
        .await
        .unwrap();
        activity(&b, 1).await;
        let e = c.tick(&b.app).await.unwrap_err().to_string();
        assert!(
            e.contains("does not verify") && e.contains("nothing is signed"),
            "{engine:?}: {e}"
        );
        assert_eq!(sink_list(&sink).await.len(), 3, "{engine:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn brokers_sharing_postgresql_write_one_chain_of_checkpoints() {
    let (_dir, sink, key, public_key) = sink_and_key();
    let a = broker(Engine::Postgres, &key, &sink).await;
    // A second writer on the same database: another broker's checkpointer.
    let other = file_writer(&key, &sink, "jit-other").await;
    for _ in 0..5 {
        activity(&a, 1).await;
        let (x, y) = tokio::join!(tick(&a), other.round(&a.app.store, a.app.now_ms()));
        let y = y.unwrap();
        let outcomes = [&x, &y];
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| matches!(o, Outcome::Written(_)))
                .count(),
            1,
            "{outcomes:?}"
        );
        assert!(outcomes.iter().all(|o| matches!(
            o,
            Outcome::Written(_) | Outcome::OtherBroker | Outcome::Unchanged
        )));
    }
    let all = sink_list(&sink).await;
    assert_eq!(
        all.iter().map(|c| c.number).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let report = verify::against(&a.app.store, &all, &[public_key])
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(a.app.store.backend(), Backend::Postgres);
}

/// A broker whose round found another broker writing stops walking ahead in steps (the other
/// writes the next checkpoint, so the walk would be thrown away), and walks again once it
/// writes one itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_that_does_not_write_the_checkpoints_does_not_walk_ahead() {
    let (_dir, sink, key, _) = sink_and_key();
    let a = broker(Engine::Postgres, &key, &sink).await;
    let c = a.app.checkpoints.clone().unwrap();
    activity(&a, 1).await;
    let first = written(tick(&a).await);
    let walked = stepped(&a, &c).await;
    assert_eq!(c.steps_walked_to(), Some(walked));
    assert!(walked > first.seq, "the steps walked the new rows");

    // Another broker holds the writer's lock for the next round.
    let mut other = jit_server::store::checkpoints::WriterLock::default();
    let held = other.try_lock(&a.app.store).await.unwrap().unwrap();
    activity(&a, 1).await;
    assert_eq!(tick(&a).await, Outcome::OtherBroker);
    assert_eq!(c.steps_walked_to(), None);
    stepped(&a, &c).await;
    assert_eq!(
        c.steps_walked_to(),
        None,
        "no steps while another broker writes"
    );
    other.release(held).await.unwrap();

    // Its own checkpoint again: the steps walk after it.
    let next = written(tick(&a).await);
    let walked = stepped(&a, &c).await;
    assert!(walked > next.seq);
    assert_eq!(c.steps_walked_to(), Some(walked));
}

/// `serve` signs a checkpoint every interval while the chain grows, and a last one when it
/// stops (SIGTERM).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_checkpoints_every_interval_and_at_shutdown() {
    for engine in ENGINES {
        serve_checkpoints(engine).await;
    }
}

async fn serve_checkpoints(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink");
    let (key, public, _) = key_files(dir.path(), "cp");
    let db = crate::support::server::fresh_db(engine).await;
    let sink_url = format!("file://{}", sink.display());
    let mut server = crate::support::server::ServerProcess::start_dev_with(
        dir.path(),
        &db.url,
        &[
            ("JIT_AUDIT__SIGNING_KEY", key.as_str()),
            ("JIT_AUDIT__CHECKPOINT_SINKS", &format!("[\"{sink_url}\"]")),
            ("JIT_AUDIT__CHECKPOINT_EVERY", "3s"),
        ],
    );
    let http = reqwest::Client::new();
    let sign_in = || async {
        http.post(format!("{}/api/v1/dev/token", server.url))
            .json(&serde_json::json!({ "user": "alice" }))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    };
    sign_in().await;
    let mut waited = 0;
    while sink_list_or_empty(&sink).await.is_empty() {
        assert!(waited < 300, "{engine:?}: no checkpoint within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    // More events, then a clean stop at once (the next interval is seconds away): the last
    // checkpoint covers them. Counted before the events, so that a checkpoint covering them is
    // new whether the shutdown or, on a slow machine, the interval wrote it.
    let before = sink_list_or_empty(&sink).await.len();
    sign_in().await;
    sign_in().await;
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{engine:?}: {exit}");
    let all = sink_list_or_empty(&sink).await;
    assert!(
        all.len() > before,
        "{engine:?}: no shutdown checkpoint: {all:?}"
    );
    let newest = all.last().unwrap();
    let store = jit_server::store::Store::connect(&db.url, 1).await.unwrap();
    let head = jit_server::store::audit::verify(&store, None)
        .await
        .unwrap();
    if Some(newest.seq) != head.last_seq {
        let events = jit_server::store::audit::list(
            &store,
            &jit_server::store::audit::Filter {
                limit: 20,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        panic!(
            "{engine:?}: the shutdown checkpoint covers seq {} of {:?}; events: {:?}",
            newest.seq,
            head.last_seq,
            events
                .iter()
                .map(|e| (e.seq, e.action.as_str(), e.at))
                .collect::<Vec<_>>()
        );
    }
    run_ok(
        Command::new(server_bin())
            .args([
                "audit",
                "verify",
                "--checkpoints",
                &sink_url,
                "--public-key",
            ])
            .arg(&public)
            .env("JIT_DATABASE__URL", &db.url),
    );
}

async fn sink_list_or_empty(dir: &Path) -> Vec<jit_server::checkpoint::Checkpoint> {
    if dir.exists() {
        sink_list(dir).await
    } else {
        Vec::new()
    }
}

/// `audit verify --checkpoints` with the right key and another; the API and the audit page.
async fn command_line_api_and_page(
    b: &TestBroker,
    dir: &Path,
    sink_url: &str,
    public: &Path,
    not_covered: u64,
    newest_seq: i64,
) {
    let engine = b.app.store.backend();
    // The command line, with the public key file and with another key.
    let (code, stdout, stderr) = cli(
        b,
        &[
            "audit",
            "verify",
            "--checkpoints",
            sink_url,
            "--public-key",
            public.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{engine:?}: {stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "checkpoints from {sink_url}: 2 verified; the newest, 2"
        )) && stdout.contains("events after the newest checkpoint, verified as a chain only"),
        "{stdout}"
    );
    let (_, other, _) = key_files(dir, "other");
    let (code, _, stderr) = cli(
        b,
        &[
            "audit",
            "verify",
            "--checkpoints",
            sink_url,
            "--public-key",
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2, "{engine:?}: {stderr}");
    assert!(
        stderr.contains("checkpoint 1: the signature does not verify with this public key"),
        "{stderr}"
    );

    // The API and the audit page show the newest checkpoint covering the chain.
    let carol = b.login("carol").await;
    let (status, api) = carol.get("/audit/verify").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api["checkpoints"]["newest"]["number"], 2, "{api}");
    // carol's sign-in is an event too
    assert!(
        api["checkpoints"]["not_covered"].as_u64().unwrap() > not_covered,
        "{api}"
    );
    let cookie = b.browser_login("carol").await;
    let (_, page) = b.page(&cookie, "/audit").await;
    assert!(
        page.contains(&format!(
            "signed checkpoint 2 covers events 1 to {newest_seq}"
        )),
        "{page}"
    );
}

/// Exports carry the checkpoints and verify with no database; a forged export does not.
fn exports_verify_offline(b: &TestBroker, dir: &Path, public: &Path) {
    // Exports carry the checkpoints and verify with no database.
    let (code, export, stderr) = cli(b, &["audit", "export", "--format", "jsonl"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(export.matches("\"record\":\"checkpoint\"").count(), 2);
    let file = dir.join("audit.jsonl");
    std::fs::write(&file, &export).unwrap();
    let verify_export = || {
        cli(
            b,
            &[
                "audit",
                "verify",
                "--export",
                file.to_str().unwrap(),
                "--public-key",
                public.to_str().unwrap(),
            ],
        )
    };
    let (code, stdout, stderr) = verify_export();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("checkpoints from") && stdout.contains("2 verified"),
        "{stdout}"
    );
    let forged = export.replacen(
        "\"actor\":\"alice@example.com\"",
        "\"actor\":\"mallory@example.com\"",
        1,
    );
    std::fs::write(&file, forged).unwrap();
    let (code, _, stderr) = verify_export();
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("content does not match its hash"),
        "{stderr}"
    );
    let (code, ocsf, _) = cli(b, &["audit", "export", "--format", "ocsf"]);
    assert_eq!(code, 0);
    assert_eq!(
        ocsf.matches("\"event_code\":\"audit.checkpoint\"").count(),
        2
    );
}

/// A checkpoint writer of its own (another broker's, or one after a key rotation): the key
/// file `key` (`file:…`), one file sink at `sink`, signing as `broker_id`.
/// A temporary directory (kept while it lives) with a file sink and a signing key (`cp`) in
/// it: the sink's path, the key's `file:` reference and its public key.
fn sink_and_key() -> (tempfile::TempDir, PathBuf, String, PublicKey) {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("sink");
    let (key, _, public_key) = key_files(dir.path(), "cp");
    (dir, sink, key, public_key)
}

async fn file_writer(key: &str, sink: &std::path::Path, broker_id: &str) -> Checkpointer {
    let signer: Arc<dyn jit_server::checkpoint::Signer> = Arc::new(
        Ed25519Signer::from_pem(&std::fs::read_to_string(key.trim_start_matches("file:")).unwrap())
            .unwrap(),
    );
    Checkpointer::new(
        signer,
        vec![
            Sink::open(&SinkSpec::File(sink.to_path_buf()), None, 1)
                .await
                .unwrap(),
        ],
        Duration::from_mins(1),
        broker_id.to_owned(),
        Vec::new(),
    )
}
