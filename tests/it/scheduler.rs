//! The scheduler sleeps until the next job falls due and is woken when a job
//! is queued: with a tick of 30 s, jobs still run the moment they are due.

use std::time::{Duration, Instant};

use jit_api::RequestState;
use jit_server::store::jobs::JobKind;
use jit_server::store::{jobs, query};
use tokio::sync::watch;

use crate::support::server::{Caller, ENGINES, Engine, TestBroker, start};

/// Far longer than any wait below: a job found on time was not found by the tick.
const TICK: Duration = Duration::from_secs(30);
/// How late after its due time a job may run: far less than the tick, with
/// room for a busy host (how soon is measured by `benches/revoke_latency.rs`).
const PROMPT_MS: i64 = 3_000;

/// Queues a job that completes when it runs (the pruning of an entitlement
/// not in the catalog), due at `due_at`; its dedupe key names it.
async fn queue(b: &TestBroker, due_at: i64) -> String {
    let key = format!("test:{}", uuid::Uuid::now_v7());
    let mut tx = b.app.store.begin().await.unwrap();
    jobs::enqueue(
        &mut tx,
        JobKind::PruneDenies,
        None,
        r#"{"entitlement":"not-in-the-catalog"}"#,
        due_at,
        Some(&key),
        b.app.now_ms(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    key
}

async fn done_at(b: &TestBroker, key: &str) -> Option<i64> {
    query("SELECT done_at FROM jobs WHERE dedupe_key = $1")
        .bind(key)
        .fetch_one(&b.app.store)
        .await
        .unwrap()
        .try_get("done_at")
        .unwrap()
}

/// Waits until the job `key` is done; when it was.
async fn until_done(b: &TestBroker, key: &str) -> i64 {
    let start = Instant::now();
    loop {
        if let Some(at) = done_at(b, key).await {
            return at;
        }
        assert!(start.elapsed() < TICK / 2, "job {key} did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_run_when_due_not_at_the_next_tick() {
    for engine in ENGINES {
        on_time(engine).await;
    }
}

/// Alice, bob, and alice's request for `aws-prod-admin` (bob may approve it), on `b`.
async fn prod_admin(b: &TestBroker) -> (Caller, Caller, jit_api::Request) {
    let alice = b.login("alice").await;
    let bob = b.login("bob").await;
    let r = alice.request("aws-prod-admin", "1h").await;
    (alice, bob, r)
}

/// Waits until request `id` is active, at most [`PROMPT_MS`] from now (`after` says since what).
async fn promptly_active(who: &Caller, id: uuid::Uuid, after: &str) {
    let since = Instant::now();
    while who.show(id).await.state != RequestState::Active {
        assert!(
            since.elapsed() < Duration::from_millis(PROMPT_MS.unsigned_abs()),
            "not active {PROMPT_MS} ms after {after}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn on_time(engine: Engine) {
    let b = start(engine).await;
    let (stop, stopped) = watch::channel(false);
    let scheduler = tokio::spawn(jit_server::scheduler::run(b.app.clone(), TICK, stopped));

    // An approval queues the activation: its commit wakes the scheduler.
    let (alice, bob, r) = prod_admin(&b).await;
    let (status, body) = bob.approve(r.id).await;
    assert_eq!(status, 200, "{body}");
    promptly_active(&alice, r.id, &format!("{engine:?}: the approval")).await;

    // A request granted at once queues its activation with the request itself: that
    // commit wakes the scheduler.
    let r = alice.request("aws-sandbox", "1h").await;
    promptly_active(
        &alice,
        r.id,
        &format!("{engine:?}: an auto-approved request"),
    )
    .await;

    // A job due later runs when it is due.
    let due = b.app.now_ms() + 1_500;
    let key = queue(&b, due).await;
    let ran = until_done(&b, &key).await;
    assert!(
        (due..due + PROMPT_MS).contains(&ran),
        "{engine:?}: due at {due}, ran at {ran}"
    );

    // Asleep until a job due in 20 s, woken by one due sooner.
    let later = queue(&b, b.app.now_ms() + 20_000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let due = b.app.now_ms() + 1_000;
    let key = queue(&b, due).await;
    let ran = until_done(&b, &key).await;
    assert!(
        (due..due + PROMPT_MS).contains(&ran),
        "{engine:?}: due at {due}, ran at {ran}"
    );
    assert_eq!(done_at(&b, &later).await, None, "{engine:?}: ran early");

    stop.send(true).unwrap();
    scheduler.await.unwrap();
}

/// An expiry job claimed before the grant's end (here: moved earlier by hand, as a clock that
/// stepped back would) puts itself back to that end without counting a failure, and the
/// grant stays active until then.
async fn early_claim_is_no_failure(engine: Engine) {
    let b = start(engine).await;
    let (alice, bob, r) = prod_admin(&b).await;
    bob.approve(r.id).await;
    b.run_jobs().await;
    let r = alice.show(r.id).await;
    assert_eq!(r.state, RequestState::Active);
    let ends = r.expires_at.unwrap();
    let ends_ms = i64::try_from(ends.unix_timestamp_nanos() / 1_000_000).unwrap();
    let key = format!("expire:{}", r.id);
    query("UPDATE jobs SET due_at = $1 WHERE dedupe_key = $2")
        .bind(b.app.now_ms())
        .bind(&key)
        .execute(&b.app.store)
        .await
        .unwrap();
    b.run_jobs().await;
    assert_eq!(alice.show(r.id).await.state, RequestState::Active);
    let row = query("SELECT due_at, attempts, failures, done_at FROM jobs WHERE dedupe_key = $1")
        .bind(&key)
        .fetch_one(&b.app.store)
        .await
        .unwrap();
    assert_eq!(row.try_get::<i64>("due_at").unwrap(), ends_ms);
    assert_eq!(
        row.try_get::<i64>("attempts").unwrap(),
        0,
        "the early claim is taken back"
    );
    assert_eq!(row.try_get::<i64>("failures").unwrap(), 0);
    assert_eq!(row.try_get::<Option<i64>>("done_at").unwrap(), None);
    // At its end it runs, and the grant expires.
    b.advance(Duration::from_mins(61)).await;
    assert_eq!(alice.show(r.id).await.state, RequestState::Expired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_claimed_before_it_is_due_waits_without_a_failure() {
    for engine in ENGINES {
        early_claim_is_no_failure(engine).await;
    }
}

/// An activation whose runs keep ending without a record (the broker stopped while making
/// the grant) fails after three such runs instead of running forever, and what an earlier
/// run may have made is removed.
async fn unfinished_activations_fail(engine: Engine) {
    let b = start(engine).await;
    let (alice, bob, r) = prod_admin(&b).await;
    bob.approve(r.id).await;
    // Three claims that ended with no record, as a broker that died mid-run leaves them.
    query("UPDATE jobs SET attempts = 3 WHERE request_id = $1 AND kind = 'activate'")
        .bind(r.id.to_string())
        .execute(&b.app.store)
        .await
        .unwrap();
    b.run_jobs().await;
    let r = alice.show(r.id).await;
    assert_eq!(r.state, RequestState::Failed, "{r:?}");
    let reason = r.failure_reason.unwrap_or_default();
    assert!(reason.contains("stopped 3 times"), "{reason}");
    let actions = b.audit_actions(Some(r.id)).await;
    let failed = actions.iter().position(|a| a == "grant.failed").unwrap();
    assert!(
        actions[failed..].iter().any(|a| a == "grant.removed"),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_activation_that_never_finishes_fails_and_is_removed() {
    for engine in ENGINES {
        unfinished_activations_fail(engine).await;
    }
}

/// On PostgreSQL an upstream object's lock is taken with its transaction's `BEGIN`, one round
/// trip, so the key is written into that statement as a literal: it must name the very lock
/// another broker names by binding the key, whatever the key holds (quotes, backslashes, what
/// would end the statement), or two brokers would change one object at once.
#[tokio::test]
async fn the_target_lock_written_as_a_literal_is_the_bound_one() {
    let b = start(Engine::Postgres).await;
    let taken = |key: &'static str| {
        let store = b.app.store.clone();
        async move {
            // Autocommit: a lock it gets is let go at the end of the statement.
            query(
                "SELECT CASE WHEN pg_try_advisory_xact_lock(hashtextextended($1, 7301))
                 THEN 0 ELSE 1 END AS held",
            )
            .bind(key)
            .fetch_one(&store)
            .await
            .unwrap()
            .try_get::<i64>("held")
            .unwrap()
                == 1
        }
    };
    for key in [
        "aws_role|arn:aws:iam::222222222222:role/JitSandbox|alice",
        "it's",
        r"back\slash",
        r"\'",
        r"\\''\\",
        "E'x', 7301)); SELECT pg_advisory_unlock_all(); --",
        "ünïcödé ✓ 日本",
    ] {
        let guard = b.app.lock_target(key).await.unwrap();
        assert!(taken(key).await, "{key:?}: the literal named another lock");
        drop(guard);
        // The dropped transaction's rollback reaches the server as its connection goes
        // back to the pool, a moment later.
        let since = Instant::now();
        while taken(key).await {
            assert!(
                since.elapsed() < Duration::from_secs(5),
                "{key:?}: still locked after the guard ended"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
