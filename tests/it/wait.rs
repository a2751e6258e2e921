//! Waiting for a request's state without polling: the long poll of
//! `GET /api/v1/requests/{id}?wait=…&timeout=…`, on each engine and across
//! two brokers sharing one PostgreSQL database.

use std::time::{Duration, Instant};

use jit_api::RequestState;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::server::{ENGINES, Engine, TestBroker, fresh_db, start, start_on};

/// How soon a waiting client must hear of a change.
const PROMPT: Duration = Duration::from_secs(1);

/// Starts a long poll on `path` in the background; resolves to the answer
/// and when it came.
fn long_poll(
    caller: &crate::support::server::Caller,
    path: String,
) -> tokio::task::JoinHandle<((StatusCode, Value), Instant)> {
    let caller = caller.clone();
    tokio::spawn(async move {
        let answer = caller.get(&path).await;
        (answer, Instant::now())
    })
}

/// Waits until `b` has someone waiting on `n` requests (the long poll reached the broker).
async fn until_watched(b: &TestBroker, n: usize) {
    for _ in 0..200 {
        if b.app.store.changes().watched() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nobody waits on the broker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_client_hears_of_the_grant_at_once_or_at_the_timeout() {
    for engine in ENGINES {
        one_broker(engine).await;
    }
}

async fn one_broker(engine: Engine) {
    let b = start(engine).await;
    let alice = b.login("alice").await;
    let bob = b.login("bob").await;
    let r = alice.request("aws-prod-admin", "1h").await;
    assert_eq!(r.state, RequestState::Pending);
    let path = format!("/requests/{}?wait=active,denied,failed&timeout=20s", r.id);

    // Nothing happens: the answer is the request as it stands, at the timeout.
    let started = Instant::now();
    let (status, body) = alice
        .get(&format!("/requests/{}?wait=active&timeout=1s", r.id))
        .await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "pending", "{engine:?}");
    assert!(
        took >= Duration::from_secs(1),
        "{engine:?}: answered after {took:?}"
    );
    assert!(
        took < Duration::from_secs(1) + PROMPT,
        "{engine:?}: answered after {took:?}"
    );
    assert_eq!(
        b.app.store.changes().watched(),
        0,
        "the waiter is forgotten"
    );

    // Approval alone (approved, not yet active) does not answer a wait for `active`…
    let waiting = long_poll(&alice, path.clone());
    until_watched(&b, 1).await;
    let (status, body) = bob.approve(r.id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "{engine:?}: answered before the grant"
    );
    // …the activation does, at once.
    b.run_jobs().await;
    let activated = Instant::now();
    let ((status, body), at) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "active", "{engine:?}: {body}");
    assert!(
        at.duration_since(activated) < PROMPT,
        "{engine:?}: answered {:?} after the grant",
        at.duration_since(activated)
    );
    // Already there: answered at once.
    let started = Instant::now();
    let (_, body) = alice.get(&path).await;
    assert_eq!(body["state"], "active");
    assert!(started.elapsed() < PROMPT);

    // A request that ends otherwise ends the wait too, whatever was asked.
    let r = alice.request("aws-prod-readonly", "1h").await;
    let waiting = long_poll(&alice, format!("/requests/{}?wait=active", r.id));
    until_watched(&b, 1).await;
    let (status, _) = alice
        .post(&format!("/requests/{}/cancel", r.id), serde_json::json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let cancelled = Instant::now();
    let ((_, body), at) = waiting.await.unwrap();
    assert_eq!(body["state"], "cancelled", "{engine:?}: {body}");
    assert!(at.duration_since(cancelled) < PROMPT);

    // Waiting shows nothing more than reading: not someone else's request.
    let mallory = b.login("mallory").await;
    let started = Instant::now();
    let (status, _) = mallory
        .get(&format!("/requests/{}?wait=active&timeout=5s", r.id))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(started.elapsed() < PROMPT);
}

#[tokio::test]
async fn malformed_waits_are_refused() {
    let b = start(Engine::Sqlite).await;
    let alice = b.login("alice").await;
    let r = alice.request("aws-prod-admin", "1h").await;
    for (query, message) in [
        ("wait=granted", "invalid `wait`: unknown state `granted`"),
        (
            "wait=",
            "`wait` names no state: use e.g. `wait=active,denied,failed`",
        ),
        ("timeout=5s", "`timeout` needs `wait`"),
        ("wait=active&timeout=2m", "invalid `timeout`: at most `50s`"),
        (
            "wait=active&timeout=0",
            "invalid `timeout`: duration must be longer than zero",
        ),
    ] {
        let (status, body) = alice.get(&format!("/requests/{}?{query}", r.id)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{query}");
        assert_eq!(body["error"]["message"], message, "{query}");
    }
    // Plain reads go on as before.
    let (status, body) = alice.get(&format!("/requests/{}", r.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "pending");
}

/// Two brokers on one PostgreSQL database: a client waiting on one hears at
/// once of an approval and a grant made through the other, by LISTEN/NOTIFY
/// (the waiting broker's fallback re-read is set far beyond the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_waiting_on_one_broker_hears_of_a_change_on_another() {
    let db = fresh_db(Engine::Postgres).await;
    let second = db.shared();
    let a = start_on(
        db,
        jit_server::http::AuthMode::Dev,
        jit_server::providers::Providers::simulated(),
        |c| c.server.long_poll_reread = "10m".parse().unwrap(),
    )
    .await;
    let b = start_on(
        second,
        jit_server::http::AuthMode::Dev,
        jit_server::providers::Providers::simulated(),
        |_| {},
    )
    .await;
    // Each broker signs its own development tokens.
    let alice = a.login("alice").await;
    let bob = b.login("bob").await;
    let r = alice.request("aws-prod-admin", "1h").await;

    // Nobody acts: the answer comes at the timeout.
    let started = Instant::now();
    let (_, body) = alice
        .get(&format!("/requests/{}?wait=approved&timeout=2s", r.id))
        .await;
    assert_eq!(body["state"], "pending");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(2) + PROMPT,
        "{took:?}"
    );

    let approved = long_poll(
        &alice,
        format!("/requests/{}?wait=approved&timeout=20s", r.id),
    );
    let active = long_poll(
        &alice,
        format!("/requests/{}?wait=active&timeout=20s", r.id),
    );
    until_watched(&a, 1).await;
    // Both polls are in: wait for the second to reach the broker too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = bob.approve(r.id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let decided = Instant::now();
    let ((_, body), at) = approved.await.unwrap();
    assert_eq!(body["state"], "approved", "{body}");
    assert!(
        at.duration_since(decided) < PROMPT,
        "{:?}",
        at.duration_since(decided)
    );
    // The other broker makes the grant.
    b.run_jobs().await;
    let granted = Instant::now();
    let ((_, body), at) = active.await.unwrap();
    assert_eq!(body["state"], "active", "{body}");
    assert!(
        at.duration_since(granted) < PROMPT,
        "{:?}",
        at.duration_since(granted)
    );
}

/// `jit request --wait` waits with one long poll instead of a poll series,
/// and ends the moment access is granted. A proxy in front of the broker
/// counts the calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jit_request_wait_asks_once_and_ends_at_the_grant() {
    let jit = tokio::task::spawn_blocking(crate::cli_e2e::harness::jit_bin)
        .await
        .unwrap();
    for engine in ENGINES {
        let b = start(engine).await;
        let proxy = crate::fault_proxy::FaultProxy::start(&b.url).await;
        let home = tempfile::tempdir().unwrap();
        let command = |args: &[&str]| {
            let mut cmd = std::process::Command::new(jit);
            cmd.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", home.path())
                .env("JIT_CONFIG_DIR", home.path().join("config"))
                .env("JIT_CACHE_DIR", home.path().join("cache"))
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd
        };
        let login = command(&["login", "--server", &proxy.url, "--user", "alice"])
            .output()
            .unwrap();
        assert!(login.status.success(), "{login:?}");
        let waiting = command(&[
            "-o",
            "json",
            "request",
            "aws-prod-admin",
            "--duration",
            "1h",
            "--reason",
            "wait test",
            "--wait",
        ])
        .spawn()
        .unwrap();
        until_watched(&b, 1).await;
        // Long enough for a poller to have asked again.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let id = proxy
            .all()
            .iter()
            .find_map(|r| {
                r.target
                    .strip_prefix("GET /api/v1/requests/")
                    .and_then(|rest| rest.split_once('?'))
                    .map(|(id, _)| id.to_owned())
            })
            .unwrap();
        let bob = b.login("bob").await;
        let (status, body) = bob.approve(id.parse().unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        b.run_jobs().await;
        let granted = Instant::now();
        let out = tokio::task::spawn_blocking(move || waiting.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let took = granted.elapsed();
        assert!(out.status.success(), "{engine:?}: {out:?}");
        let done: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(done["state"], "active", "{engine:?}: {done}");
        assert!(
            took < PROMPT,
            "{engine:?}: jit ended {took:?} after the grant"
        );
        let reads: Vec<String> = proxy
            .all()
            .into_iter()
            .map(|r| r.target)
            .filter(|t| t.starts_with(&format!("GET /api/v1/requests/{id}")))
            .collect();
        assert_eq!(reads.len(), 1, "{engine:?}: {reads:?}");
        assert!(
            reads[0].contains("wait=scheduled%2Cactive%2Cexpired%2Cdenied%2Ccancelled%2Ctimed_out%2Crevoked%2Cfailed&timeout=25s"),
            "{reads:?}"
        );
    }
}
