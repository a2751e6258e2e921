//! The scheduler sleeps until the next job falls due and is woken when a job
//! is queued: with a tick of 30 s, jobs still run the moment they are due.

use std::time::{Duration, Instant};

use jit_api::RequestState;
use jit_server::scheduler::sweep;
use jit_server::store::jobs::JobKind;
use jit_server::store::{jobs, query};
use tokio::sync::watch;

use crate::support::server::{Caller, ENGINES, Engine, TestBroker, each_engine, start};

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

/// The rows of `sql` (a `COUNT(*)`, its one `$1` bound to `arg`).
async fn count(
    b: &TestBroker,
    sql: &'static str,
    arg: impl Into<jit_server::store::db::Arg>,
) -> i64 {
    query(sql)
        .bind(arg)
        .fetch_one(&b.app.store)
        .await
        .unwrap()
        .try_get_at(0)
        .unwrap()
}

/// The running scheduler sweeps ([`jit_server::scheduler::sweep`]) as it starts: a grant's jobs
/// done more than a week ago and the sessions past their end go; a job done just now, a job
/// due in a year and a live session stay.
async fn swept_by_the_running_scheduler(engine: Engine) {
    let b = start(engine).await;
    let (alice, bob, r) = prod_admin(&b).await;
    bob.approve(r.id).await;
    b.run_jobs().await;
    b.advance(Duration::from_mins(61)).await;
    assert_eq!(alice.show(r.id).await.state, RequestState::Expired);
    let grant_jobs = "SELECT COUNT(*) FROM jobs WHERE request_id = $1 AND done_at IS NOT NULL";
    let request = r.id.to_string();
    let done = count(&b, grant_jobs, &request).await;
    assert!(done >= 3, "{engine:?}: activate, expire, deprovision…");

    // Eight days on: alice's and bob's sessions (12 h) ended, carol's starts.
    b.clock.advance(time::Duration::days(8));
    let now = b.app.now_ms();
    let recent = queue(&b, now).await;
    b.run_jobs().await;
    assert!(done_at(&b, &recent).await.is_some());
    let next_year = queue(&b, now + 365 * 24 * 3_600_000).await;
    let carol = b.login("carol").await;
    let ended_sessions = "SELECT COUNT(*) FROM sessions WHERE expires_at <= $1";
    assert!(count(&b, ended_sessions, now).await >= 2, "{engine:?}");

    let (stop, stopped) = watch::channel(false);
    let scheduler = tokio::spawn(jit_server::scheduler::run(b.app.clone(), TICK, stopped));
    let since = Instant::now();
    loop {
        let left = count(&b, grant_jobs, &request).await;
        if left == 0 && count(&b, ended_sessions, now).await == 0 {
            break;
        }
        assert!(
            since.elapsed() < TICK / 2,
            "{engine:?}: the running scheduler did not sweep ({left} of {done} jobs left)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done_at(&b, &recent).await.is_some(), "{engine:?}");
    assert_eq!(done_at(&b, &next_year).await, None, "{engine:?}");
    let (status, me) = carol.get("/me").await;
    assert_eq!(status, 200, "{engine:?}: {me}");
    stop.send(true).unwrap();
    scheduler.await.unwrap();
}

each_engine!(
    the_running_scheduler_deletes_old_done_jobs_and_ended_sessions,
    swept_by_the_running_scheduler
);

/// A backlog larger than a sweep deletes (ten statements of 1,000 rows) goes over several
/// sweeps, each saying whether more may be left; a job done within the week stays.
async fn backlog_over_sweeps(engine: Engine) {
    let b = start(engine).await;
    let long_ago = b.app.now_ms() - jobs::DONE_KEPT_MS - 1;
    query(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 10500)
         INSERT INTO jobs (id, kind, payload, due_at, created_at, done_at)
         SELECT 'old-' || n, 'notify', '{}', $1, $1, $1 FROM g",
    )
    .bind(long_ago)
    .execute(&b.app.store)
    .await
    .unwrap();
    let recent = queue(&b, b.app.now_ms()).await;
    b.run_jobs().await;
    let mut sweeps = Vec::new();
    for _ in 0..3 {
        let swept = sweep(&b.app).await.unwrap();
        sweeps.push((swept.jobs, swept.more));
    }
    assert_eq!(
        sweeps,
        [(10_000, true), (500, false), (0, false)],
        "{engine:?}"
    );
    assert_eq!(
        count(
            &b,
            "SELECT COUNT(*) FROM jobs WHERE done_at < $1",
            b.app.now_ms()
        )
        .await,
        1
    );
    assert!(done_at(&b, &recent).await.is_some(), "{engine:?}");
}

each_engine!(
    a_backlog_of_done_jobs_goes_over_several_sweeps,
    backlog_over_sweeps
);
