//! The durable scheduler: claims due jobs from the database and runs them.
//!
//! Jobs survive restarts: a broker killed at any point leaves its claimed
//! jobs to a lease that runs out, after which this or another broker runs
//! them again. The lease is short and renewed while a job runs, so a dead
//! broker's jobs wait seconds, not minutes. Every job handler is idempotent.
//!
//! Between rounds the scheduler sleeps until the next job falls due, and at
//! most `scheduler.tick`: a commit that queues or moves a job due before then
//! wakes it at once ([`crate::store::Store::job_wake`]; one due later, such
//! as a new grant's expiry, is found by the round it wakes for anyway), a job
//! this broker retries moves its wake-up earlier, and the tick bounds how long
//! it takes to see the jobs other brokers queued and the leases of a dead
//! broker running out.
//!
//! Beside the jobs, each broker sweeps what is kept only for a while ([`sweep`]): the jobs done
//! a week ago and the sessions past their end, every [`SWEEP_EVERY`], in short statements.

use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::service::grants::{JobOutcome, internal_retry_ms};
use crate::service::{App, ServiceError};
use crate::store::jobs::{self, Job, JobKind};
use crate::store::{StoreError, sessions};

/// How long a claimed job stays ours before others may take it, unless renewed.
const LEASE_MS: i64 = 5_000;
/// How often the lease of a running job is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// Jobs running at once in this broker (and claimed per round at most).
const BATCH: i64 = 32;

/// Runs until `shutdown` turns true: claims due jobs while fewer than
/// [`BATCH`] run, and runs each as soon as it is claimed (a slow job does
/// not hold up the others); sleeps until the next job is due, at most `tick`.
pub async fn run(app: App, tick: Duration, mut shutdown: watch::Receiver<bool>) {
    info!(tick_ms = tick.as_millis(), "scheduler started");
    let reconcile_every = app.config.scheduler.reconcile_every.duration();
    let mut next_reconcile = std::time::Instant::now();
    let replays = tokio::spawn(replay_held(app.clone(), shutdown.clone()));
    let sweeps = tokio::spawn(sweep_now_and_then(app.clone(), shutdown.clone()));
    let mut running = tokio::task::JoinSet::new();
    // Whether to claim at the top of the loop, and whether the last claim
    // filled every free slot (so more jobs may be due).
    let (mut claim_now, mut more) = (true, false);
    // When to claim next unless woken sooner.
    let mut next = tokio::time::Instant::now();
    loop {
        if std::time::Instant::now() >= next_reconcile {
            next_reconcile += reconcile_every;
            let every_ms = i64::try_from(reconcile_every.as_millis()).unwrap_or(i64::MAX);
            if let Err(e) = app.queue_reconcile(every_ms).await {
                error!(error = %e, "could not queue reconciliation");
            }
        }
        // Finished jobs free their slots.
        while running.try_join_next().is_some() {}
        let room = BATCH - i64::try_from(running.len()).unwrap_or(BATCH);
        if claim_now && room > 0 {
            // Every job committed from now on wakes it, until it says when it sleeps.
            app.store.scheduler_sleeps_until(i64::MAX);
            match jobs::claim_and_next(&app.store, app.now_ms(), LEASE_MS, room).await {
                Ok((due, next_due)) => {
                    more = i64::try_from(due.len()).unwrap_or(0) == room;
                    for job in due {
                        running.spawn(run_one(app.clone(), job));
                    }
                    next = wake_at(&app, tick, next_due);
                }
                Err(e) => {
                    more = false;
                    error!(error = %e, "scheduler round failed");
                    next = tokio::time::Instant::now() + tick;
                }
            }
        }
        // A commit wakes it only for a job due before `next`.
        app.store
            .scheduler_sleeps_until(app.now_ms().saturating_add(ms_until(next)));
        claim_now = tokio::select! {
            () = tokio::time::sleep_until(next) => true,
            () = app.wake.notified() => true,
            // A slot is free: claim again if jobs may be waiting for one.
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok(Some(at)) = done {
                    next = next.min(instant_at(&app, at));
                }
                more
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    while running.join_next().await.is_some() {}
                    let _ = replays.await;
                    let _ = sweeps.await;
                    info!("scheduler stopped");
                    return;
                }
                true
            }
        };
    }
}

/// When to claim next: when the next job not yet due falls due (`next_due`, unix ms), at
/// most `tick` from now.
fn wake_at(app: &App, tick: Duration, next_due: Option<i64>) -> tokio::time::Instant {
    let cap = tokio::time::Instant::now() + tick;
    next_due.map_or(cap, |at| cap.min(instant_at(app, at)))
}

/// Milliseconds from now until `at` on the timer's clock (0 when it passed).
fn ms_until(at: tokio::time::Instant) -> i64 {
    let left = at.saturating_duration_since(tokio::time::Instant::now());
    i64::try_from(left.as_millis()).unwrap_or(i64::MAX)
}

/// The moment of the broker's clock's unix ms `at`, on the timer's clock.
fn instant_at(app: &App, at: i64) -> tokio::time::Instant {
    let ms = u64::try_from(at.saturating_sub(app.now_ms())).unwrap_or(0);
    tokio::time::Instant::now() + Duration::from_millis(ms)
}

/// How often held audit events are offered to the audit store again.
const REPLAY_EVERY: Duration = Duration::from_secs(1);

/// Offers the events held while the audit store failed to it again, every
/// [`REPLAY_EVERY`], until `shutdown` (docs/audit.md, "Held events").
async fn replay_held(app: App, mut shutdown: watch::Receiver<bool>) {
    let mut failures = 0u64;
    loop {
        tokio::select! {
            () = tokio::time::sleep(REPLAY_EVERY) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
        if app.spool.waiting().is_empty() {
            failures = 0;
            continue;
        }
        match app.replay_held().await {
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                // Loud, but once a minute is enough: each held event was logged.
                if failures % 60 == 1 {
                    error!(
                        error = %e,
                        held = app.spool.waiting_events(),
                        "held audit events still wait: the audit store refuses them"
                    );
                }
            }
        }
    }
}

/// How often each broker sweeps ([`sweep`]); the first sweep is at its start.
const SWEEP_EVERY: Duration = Duration::from_mins(10);
/// How soon it sweeps again when a sweep stopped at its bound with rows left: a backlog (the
/// first sweeps after an upgrade from a jit that kept every job) goes ten statements of 1,000
/// rows a table every 10 s, 1,000 rows a second.
const SWEEP_AGAIN: Duration = Duration::from_secs(10);
/// Rows one statement of a sweep deletes at most: milliseconds on either engine, so the
/// statement never holds SQLite's writer (whose turns queue behind it) or a PostgreSQL
/// transaction for long.
const SWEEP_BATCH: i64 = 1_000;
/// Statements a sweep runs at most on each table; the writer takes the others' turns between
/// them.
const SWEEP_BATCHES: usize = 10;

/// What a sweep deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swept {
    /// Jobs done before the retention ([`jobs::DONE_KEPT_MS`]).
    pub jobs: u64,
    /// Sessions past their absolute end.
    pub sessions: u64,
    /// A table may hold more to delete: the sweep stopped at its bound.
    pub more: bool,
}

/// Deletes, in statements of at most [`SWEEP_BATCH`] rows and at most [`SWEEP_BATCHES`] of them
/// a table, the jobs done more than [`jobs::DONE_KEPT_MS`] ago and the sessions past their end
/// (by the broker's clock). Several brokers may sweep at once: on PostgreSQL each statement
/// takes rows no other holds and waits for none; a row two brokers both deleted is simply gone.
///
/// # Errors
/// A statement the database refused; the rows deleted before it stay deleted.
pub async fn sweep(app: &App) -> Result<Swept, StoreError> {
    let now = app.now_ms();
    let (jobs, more_jobs) =
        in_batches(|| jobs::delete_done(&app.store, now - jobs::DONE_KEPT_MS, SWEEP_BATCH)).await?;
    let (sessions, more_sessions) =
        in_batches(|| sessions::purge_expired(&app.store, now, SWEEP_BATCH)).await?;
    Ok(Swept {
        jobs,
        sessions,
        more: more_jobs || more_sessions,
    })
}

/// Runs `delete` (one statement that deletes at most [`SWEEP_BATCH`] rows and says how many it
/// did) until one deletes fewer, or [`SWEEP_BATCHES`] ran: the rows deleted, and whether there
/// may be more (every statement deleted a full batch).
async fn in_batches<F, Fut>(mut delete: F) -> Result<(u64, bool), StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let full = u64::try_from(SWEEP_BATCH).unwrap_or(u64::MAX);
    let mut deleted = 0;
    for _ in 0..SWEEP_BATCHES {
        let n = delete().await?;
        deleted += n;
        if n < full {
            return Ok((deleted, false));
        }
    }
    Ok((deleted, true))
}

/// Sweeps ([`sweep`]) at once, then every [`SWEEP_EVERY`] (every [`SWEEP_AGAIN`] while a
/// backlog lasts), until `shutdown`. A failed sweep is logged and tried again at the next.
async fn sweep_now_and_then(app: App, mut shutdown: watch::Receiver<bool>) {
    loop {
        let wait = match sweep(&app).await {
            Ok(swept) => {
                if swept.jobs + swept.sessions > 0 {
                    info!(
                        jobs = swept.jobs,
                        sessions = swept.sessions,
                        more = swept.more,
                        "deleted done jobs and ended sessions"
                    );
                }
                if swept.more { SWEEP_AGAIN } else { SWEEP_EVERY }
            }
            Err(e) => {
                warn!(error = %e, "could not delete done jobs and ended sessions; trying again later");
                SWEEP_EVERY
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// Claims and runs the jobs due now, waiting for all of them, after offering
/// held audit events to the store again; returns how many jobs ran (tests
/// drive the scheduler with it).
pub async fn run_due(app: &App) -> Result<usize, crate::store::StoreError> {
    if !app.spool.waiting().is_empty()
        && let Err(e) = app.replay_held().await
    {
        warn!(error = %e, "held audit events still wait");
    }
    let due = jobs::claim(&app.store, app.now_ms(), LEASE_MS, BATCH).await?;
    let n = due.len();
    let mut set = tokio::task::JoinSet::new();
    for job in due {
        set.spawn(run_one(app.clone(), job));
    }
    while set.join_next().await.is_some() {}
    Ok(n)
}

/// Runs claimed job `job`: the use case of its kind.
///
/// # Errors
/// A kind this broker does not know, a job that needs a request and has none, or what the
/// use case fails with.
pub async fn dispatch(app: &App, job: &Job) -> Result<JobOutcome, ServiceError> {
    let kind = job
        .job_kind()
        .map_err(|e| ServiceError::Internal(anyhow::anyhow!(e)))?;
    let request = || {
        job.request_id
            .ok_or_else(|| ServiceError::Internal(anyhow::anyhow!("job `{kind}` without request")))
    };
    match kind {
        JobKind::Reconcile => app.reconcile(job).await,
        JobKind::PruneDenies => app.prune_denies(job).await,
        JobKind::Notify => {
            request()?;
            app.deliver(job).await
        }
        JobKind::Activate => app.activate(job, request()?).await,
        JobKind::Expire => app.expire(job, request()?).await,
        JobKind::Timeout => app.time_out(job, request()?).await,
        JobKind::Deprovision => app.deprovision(job, request()?).await,
        JobKind::ExpiryWarning => app.expiry_warning(job, request()?).await,
    }
}

/// Runs one claimed job, renewing its lease meanwhile, and records the
/// outcome; gives the time of its next attempt when it is to be retried.
async fn run_one(app: App, job: Job) -> Option<i64> {
    let started = std::time::Instant::now();
    let late_ms = app.now_ms() - job.due_at;
    // A job may take longer than its lease (polling a cloud): keep it ours while it runs.
    let renewer = {
        let app = app.clone();
        let id = job.id;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                if let Err(e) = jobs::renew_lease(&app.store, id, app.now_ms() + LEASE_MS).await {
                    warn!(error = %e, "could not renew a job lease");
                }
            }
        })
    };
    let result = dispatch(&app, &job).await;
    renewer.abort();
    crate::metrics::job_ran(&job.kind, started.elapsed(), late_ms);
    let at = match result {
        Ok(JobOutcome::Done) => return None,
        Ok(JobOutcome::NotYet(at)) => {
            if let Err(e) = jobs::postpone(&app.store, job.id, at).await {
                error!(error = %e, "could not reschedule job");
            }
            at
        }
        Ok(JobOutcome::RetryAt(at, why)) => {
            crate::metrics::job_retried(&job.kind);
            warn!(job.kind = %job.kind, request.id = ?job.request_id, attempts = job.attempts, failures = job.failures, reason = %why, "job will be retried");
            if let Err(e) = jobs::retry_later(&app.store, job.id, at, &why).await {
                error!(error = %e, "could not reschedule job");
            }
            at
        }
        Err(e) => {
            crate::metrics::job_retried(&job.kind);
            error!(job.kind = %job.kind, request.id = ?job.request_id, attempts = job.attempts, failures = job.failures, error = ?e, "job failed");
            let at = app.now_ms() + internal_retry_ms(&job);
            if let Err(e) = jobs::retry_later(&app.store, job.id, at, "internal error").await {
                error!(error = %e, "could not reschedule job");
            }
            at
        }
    };
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::{SWEEP_BATCH, SWEEP_BATCHES, in_batches};

    /// [`in_batches`] over a table of `backlog` rows: what it returns, and how many statements
    /// it ran.
    async fn sweep_of(backlog: u64) -> ((u64, bool), usize) {
        let batch = u64::try_from(SWEEP_BATCH).unwrap();
        let (mut left, mut statements) = (backlog, 0);
        let result = in_batches(|| {
            statements += 1;
            let n = left.min(batch);
            left -= n;
            async move { Ok(n) }
        })
        .await
        .unwrap();
        (result, statements)
    }

    #[tokio::test]
    async fn a_sweep_deletes_in_bounded_batches_and_says_when_more_is_left() {
        assert_eq!(sweep_of(0).await, ((0, false), 1));
        assert_eq!(sweep_of(2_500).await, ((2_500, false), 3));
        // A last full batch cannot tell: one more statement finds none.
        assert_eq!(sweep_of(3_000).await, ((3_000, false), 4));
        let most = u64::try_from(SWEEP_BATCHES).unwrap() * u64::try_from(SWEEP_BATCH).unwrap();
        assert_eq!(sweep_of(most).await, ((most, true), SWEEP_BATCHES));
        assert_eq!(sweep_of(50_000).await, ((most, true), SWEEP_BATCHES));
    }

    #[tokio::test]
    async fn a_refused_statement_ends_the_sweep() {
        let mut statements = 0;
        let result = in_batches(|| {
            statements += 1;
            async { Err(crate::store::StoreError::NotFound) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(statements, 1);
    }
}
