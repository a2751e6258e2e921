//! Durable jobs: expiry, activation, revocation, notifications, reconciliation.
//!
//! Jobs are rows; a broker claims due ones by setting a lease
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several brokers share the
//! work), runs them, and marks them done in the transaction that records
//! their effect. A broker killed mid-job leaves the lease to run out and
//! another (or the restarted one) picks the job up again. A done job is deleted a week
//! after it ran ([`DONE_KEPT_MS`], the scheduler's sweep).

use uuid::Uuid;

use super::db::Query;
use super::db::{Row, delete_picked, picked, query, query_built};
use super::{Backend, Store, StoreError, Tx, uuid_col};

/// What a job does; stored as its word (`activate`, `prune_denies`…).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Make the grant of an approved request.
    Activate,
    /// End a grant at its window's end.
    Expire,
    /// Time out a pending request.
    Timeout,
    /// Remove the upstream object of an ended grant.
    Deprovision,
    /// Deliver a notification from the outbox.
    Notify,
    /// Warn a holder that their grant ends soon.
    ExpiryWarning,
    /// Compare what should exist upstream with what does.
    Reconcile,
    /// Prune the per-user session denies whose sessions have all expired.
    PruneDenies,
}

impl JobKind {
    /// Every kind.
    pub const ALL: [Self; 8] = [
        Self::Activate,
        Self::Expire,
        Self::Timeout,
        Self::Deprovision,
        Self::Notify,
        Self::ExpiryWarning,
        Self::Reconcile,
        Self::PruneDenies,
    ];

    /// The stored word.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Activate => "activate",
            Self::Expire => "expire",
            Self::Timeout => "timeout",
            Self::Deprovision => "deprovision",
            Self::Notify => "notify",
            Self::ExpiryWarning => "expiry_warning",
            Self::Reconcile => "reconcile",
            Self::PruneDenies => "prune_denies",
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;

    /// A stored word; an unknown one (written by a newer broker) is an error naming it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown job kind `{s}`"))
    }
}

/// A claimed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Id.
    pub id: Uuid,
    /// Kind as stored ([`JobKind`]; [`Job::job_kind`] reads it).
    pub kind: String,
    /// The request it concerns.
    pub request_id: Option<Uuid>,
    /// Kind-specific JSON.
    pub payload: String,
    /// Claims so far, this one included: more than one means an earlier
    /// run may have done part of the work (its broker may have died holding it).
    pub attempts: i64,
    /// Runs that failed before this one ([`retry_later`]); a claim whose
    /// broker died is not a failure.
    pub failures: i64,
    /// Unix ms it was due.
    pub due_at: i64,
}

impl Job {
    /// What the job does; an error naming the word when this broker does not know it (a
    /// newer broker wrote it).
    pub fn job_kind(&self) -> Result<JobKind, String> {
        self.kind.parse()
    }

    /// How long to wait before the next run when this one fails: 2 s after
    /// the first failure, doubling with each further one, at most 5 min.
    /// Only failures count: a job taken over from a dead broker is not
    /// held back for its restarts.
    #[must_use]
    pub fn backoff_ms(&self) -> i64 {
        let exp = u32::try_from((self.failures + 1).clamp(1, 10)).unwrap_or(10);
        (1000_i64 << exp).min(300_000)
    }

    /// Which failure this run is if it fails (1 for the first).
    #[must_use]
    pub const fn failure_number(&self) -> i64 {
        self.failures + 1
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// Kind.
    pub kind: JobKind,
    /// The request it concerns.
    pub request_id: Option<Uuid>,
    /// Kind-specific JSON.
    pub payload: &'a str,
    /// Unix ms it is due.
    pub due_at: i64,
    /// A second job with the same key is ignored.
    pub dedupe_key: Option<String>,
}

/// Enqueues a job; a second job with the same `dedupe_key` is ignored.
pub async fn enqueue(
    tx: &mut Tx,
    kind: JobKind,
    request_id: Option<Uuid>,
    payload: &str,
    due_at: i64,
    dedupe_key: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    let job = NewJob {
        kind,
        request_id,
        payload,
        due_at,
        dedupe_key: dedupe_key.map(str::to_owned),
    };
    enqueue_all(tx, &[job], now).await
}

/// Enqueues several jobs in one statement (one round trip on PostgreSQL);
/// a job whose `dedupe_key` is taken already is ignored.
pub async fn enqueue_all(tx: &mut Tx, jobs: &[NewJob<'_>], now: i64) -> Result<(), StoreError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let q = bind_inserts(query_built(insert_sql(1, jobs.len())), jobs, now);
    tx.queued_due(jobs.iter().map(|j| j.due_at));
    q.execute(tx).await?;
    Ok(())
}

/// The insert of `rows` jobs, their values from `$first` on (seven each).
pub(super) fn insert_sql(first: usize, rows: usize) -> String {
    format!(
        "INSERT INTO jobs (id, kind, request_id, payload, dedupe_key, due_at, created_at)
         VALUES {} ON CONFLICT (dedupe_key) DO NOTHING",
        super::db::values_list_from(first, rows, 7)
    )
}

/// Binds the values of [`insert_sql`] for `jobs`.
pub(super) fn bind_inserts(mut q: Query, jobs: &[NewJob<'_>], now: i64) -> Query {
    for job in jobs {
        q = q
            .bind(Uuid::now_v7().to_string())
            .bind(job.kind.as_str())
            .bind(job.request_id.map(|u| u.to_string()))
            .bind(job.payload)
            .bind(job.dedupe_key.as_deref())
            .bind(job.due_at)
            .bind(now);
    }
    q
}

/// Claims up to `limit` due jobs for `lease_ms`, oldest due first: one
/// statement that picks them (PostgreSQL: skipping rows another broker is
/// claiming) and sets their lease, planned with its values at every run as
/// [`claim_and_next`]'s is.
pub async fn claim(
    store: &Store,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<Job>, StoreError> {
    let rows = query_built(claim_sql(store.backend()))
        .bind(now)
        .bind(now + lease_ms)
        .bind(limit)
        .planned_each_run()
        .fetch_all(store)
        .await?;
    claimed(&rows)
}

/// [`claim`], and when the next job not yet due falls due ([`next_due`]), as the scheduler
/// asks before it sleeps: one statement on PostgreSQL (the claim's `UPDATE` as a `WITH`
/// clause, beside the read; both see the jobs as they were when the statement began, and a
/// claimed job was due already, so it is not the next), two on SQLite, where a failed read
/// after the claim keeps the claimed jobs and says nothing of the next (`None`: the
/// scheduler looks again at its tick).
pub async fn claim_and_next(
    store: &Store,
    now: i64,
    lease_ms: i64,
    limit: i64,
) -> Result<(Vec<Job>, Option<i64>), StoreError> {
    if store.backend() == Backend::Sqlite {
        let jobs = claim(store, now, lease_ms, limit).await?;
        let next = next_due(store, now).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read when the next job is due");
            None
        });
        return Ok((jobs, next));
    }
    let rows = claim_and_next_pg(now, lease_ms, limit)
        .fetch_all(store)
        .await?;
    let next = match rows.first() {
        Some(r) => r.try_get::<Option<i64>>("next_due")?,
        None => None,
    };
    Ok((claimed(&rows)?, next))
}

/// PostgreSQL's claim with the next job's due time ([`claim_and_next`]), planned with its
/// values at every run ([`Query::planned_each_run`]). Prepared, a connection settled after
/// five runs on a generic plan made for the table as it was then: while the table was
/// small, one that scans all of it, which it kept as the table grew (done jobs stay in it).
/// In the `load` bench, on a new database, about half the runs got that plan: the claim
/// took 1.0–2.5 ms instead of 0.08 and the whole run was slower (docs/performance.md,
/// 2026-12-05/06, 23:12–00:24 UTC).
fn claim_and_next_pg(now: i64, lease_ms: i64, limit: i64) -> Query {
    query_built(format!(
        "WITH c AS ({}) SELECT n.next_due, c.* FROM ({NEXT_DUE_SQL}) n LEFT JOIN c ON true",
        claim_sql(Backend::Postgres)
    ))
    .bind(now)
    .bind(now + lease_ms)
    .bind(limit)
    .planned_each_run()
}

/// PostgreSQL's claim statement ([`claim_sql`]), for `EXPLAIN`: how the server runs it.
pub fn claim_statement_postgres() -> String {
    claim_sql(Backend::Postgres)
}

/// The claim of up to `$3` jobs due at `$1`, leased until `$2`.
///
/// PostgreSQL picks the jobs into an array first (`= ANY (ARRAY(…))`: the pick runs once,
/// before the update), and the update finds them by primary key ([`picked`]).
fn claim_sql(backend: Backend) -> String {
    let pick = picked(
        backend,
        "SELECT id FROM jobs
             WHERE done_at IS NULL AND due_at <= $1 AND (locked_until IS NULL OR locked_until <= $1)
             ORDER BY due_at LIMIT $3",
    );
    format!(
        "UPDATE jobs SET locked_until = $2, attempts = attempts + 1
         WHERE id {pick}
         RETURNING id, kind, request_id, payload, attempts, failures, due_at"
    )
}

/// The jobs of claimed rows (a row without an `id` claimed none), oldest due first.
fn claimed(rows: &[Row]) -> Result<Vec<Job>, StoreError> {
    let mut jobs = Vec::with_capacity(rows.len());
    for r in rows {
        let Some(id) = r.try_get::<Option<String>>("id")? else {
            continue;
        };
        let request_id: Option<String> = r.try_get("request_id")?;
        jobs.push(Job {
            id: uuid_col(&id)?,
            kind: r.try_get("kind")?,
            request_id: request_id.as_deref().map(uuid_col).transpose()?,
            payload: r.try_get("payload")?,
            attempts: r.try_get("attempts")?,
            failures: r.try_get("failures")?,
            due_at: r.try_get("due_at")?,
        });
    }
    jobs.sort_by_key(|j| j.due_at);
    Ok(jobs)
}

/// Marks job `$2` done at `$1`.
const COMPLETE: &str =
    "UPDATE jobs SET done_at = $1, locked_until = NULL, last_error = NULL WHERE id = $2";

/// Marks a job done, inside the transaction that records its effect.
pub async fn complete(tx: &mut Tx, id: Uuid, now: i64) -> Result<(), StoreError> {
    query(COMPLETE)
        .bind(now)
        .bind(id.to_string())
        .execute(tx)
        .await?;
    Ok(())
}

/// Marks job `id` done and enqueues its follow-ups `next`, inside the
/// transaction that records its effect: one statement on PostgreSQL (the
/// update of the done row and the insert of new rows, each its own `WITH`
/// clause), two on SQLite.
pub async fn complete_then(
    tx: &mut Tx,
    id: Uuid,
    next: &[NewJob<'_>],
    now: i64,
) -> Result<(), StoreError> {
    if next.is_empty() || tx.backend() == Backend::Sqlite {
        complete(tx, id, now).await?;
        return enqueue_all(tx, next, now).await;
    }
    let q = query_built(format!(
        "WITH done AS ({COMPLETE}) {}",
        insert_sql(3, next.len())
    ))
    .bind(now)
    .bind(id.to_string());
    tx.queued_due(next.iter().map(|j| j.due_at));
    bind_inserts(q, next, now).execute(tx).await?;
    Ok(())
}

/// Extends the lease of a job that is still running.
pub async fn renew_lease(store: &Store, id: Uuid, locked_until: i64) -> Result<(), StoreError> {
    query("UPDATE jobs SET locked_until = $1 WHERE id = $2 AND done_at IS NULL")
        .bind(locked_until)
        .bind(id.to_string())
        .execute(store)
        .await?;
    Ok(())
}

/// Puts a job back for a later attempt, counting a failure.
pub async fn retry_later(
    store: &Store,
    id: Uuid,
    due_at: i64,
    error: &str,
) -> Result<(), StoreError> {
    query(
        "UPDATE jobs SET due_at = $1, locked_until = NULL, last_error = $2, failures = failures + 1
         WHERE id = $3",
    )
    .bind(due_at)
    .bind(truncate(error, 1000))
    .bind(id.to_string())
    .execute(store)
    .await?;
    Ok(())
}

/// Releases claimed job `id`, claimed before it was due, to run at `due_at`: not an
/// attempt (its claim is taken back) and not a failure.
pub async fn postpone(store: &Store, id: Uuid, due_at: i64) -> Result<(), StoreError> {
    query(
        "UPDATE jobs SET due_at = $1, locked_until = NULL, attempts = attempts - 1 WHERE id = $2",
    )
    .bind(due_at)
    .bind(id.to_string())
    .execute(store)
    .await?;
    Ok(())
}

/// Moves a pending job of `kind` for `request` to a new time (extensions).
pub async fn reschedule(tx: &mut Tx, dedupe_key: &str, due_at: i64) -> Result<(), StoreError> {
    tx.queued_due([due_at]);
    query("UPDATE jobs SET due_at = $1 WHERE dedupe_key = $2 AND done_at IS NULL")
        .bind(due_at)
        .bind(dedupe_key)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// When the next job not yet due at `now` falls due (unix ms), if any: how
/// long the scheduler may sleep.
pub async fn next_due(store: &Store, now: i64) -> Result<Option<i64>, StoreError> {
    let row = query(NEXT_DUE_SQL).bind(now).fetch_one(store).await?;
    row.try_get("next_due")
}

/// When the next job not yet due at `$1` falls due: one row, `next_due`, NULL when none.
const NEXT_DUE_SQL: &str = "SELECT (SELECT due_at FROM jobs WHERE done_at IS NULL AND due_at > $1 \
     ORDER BY due_at LIMIT 1) AS next_due";

/// Due jobs not yet done: (count, oldest due unix ms) for scheduler-lag metrics.
pub async fn backlog(store: &Store, now: i64) -> Result<(i64, Option<i64>), StoreError> {
    let row = query(
        "SELECT COUNT(*) AS n, MIN(due_at) AS oldest FROM jobs WHERE done_at IS NULL AND due_at <= $1",
    )
    .bind(now)
    .fetch_one(store)
    .await?;
    Ok((row.try_get("n")?, row.try_get("oldest")?))
}

/// How long a done job stays in the table: a week, then the scheduler's sweep deletes it
/// ([`delete_done`]). Done jobs were never deleted, so the table grew with every request
/// (several jobs each) for as long as the broker ran.
///
/// Nothing needs a done job for long. It holds its kind, request, payload, claims and failures
/// and when it was due and done; its `last_error` is cleared as it completes (a notification
/// given up on completes too). What the job did is recorded for good elsewhere: in its
/// request's state and times, and in the audit log (`grant.failed` with its reason,
/// `notification.failed`, `grant.removal_retry`…). Nothing in the broker reads done jobs:
/// the claim, [`next_due`] and [`backlog`] (`/readyz`, `jit_jobs_due`) read the jobs not done,
/// and the job metrics are counted in memory. A week leaves operators the rows of recent runs
/// (which needed retries, and how many) to look at after an incident.
///
/// A done job keeps its `dedupe_key` taken: while it is kept, a second job with that key is
/// ignored; once deleted, the key may be queued again. That is harmless: no key is queued again
/// a week after its job was done, and a job queued again would find nothing to do, as each one
/// reads its request again, under its lock, before it acts. Key by key (every `dedupe_key`
/// the broker writes):
/// - `activate:{id}`: queued as request `id` is approved or scheduled (or filed granted). No
///   request becomes pending, approved or scheduled again (`domain::transition`); the job
///   completes without effect unless its request is approved or scheduled.
/// - `timeout:{id}`: queued as the request is filed, pending; only a pending request times out.
/// - `expire:{id}`, `expiry_warning:{id}`: queued as the grant becomes active, which happens
///   once (`approved → active`); both act on an active grant only, the warning only before its
///   end.
/// - `deprovision:{id}`: queued as the request ends (or as a grant made while it ended is
///   recorded, in the same run of its activation); a request ends once, and the job completes
///   without effect once the request's `deprovisioned_at` is set, which every removal sets.
/// - `notify:{event}:{channel}`: `event` is the id of a new audit event, never used again.
/// - `reconcile:{n}` (the interval since the epoch) and `prune:{target}:{second}` (when it is
///   due, after now): a key a week old is not made again unless a broker's clock is a week
///   behind, and then one more reconciliation or pruning pass runs; both are idempotent.
pub const DONE_KEPT_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// Deletes up to `limit` jobs done before `before` (unix ms), the earliest done first; how many
/// it deleted. One short statement, through the index of done jobs (migration 0009); on
/// PostgreSQL brokers sweeping at once take different rows and never wait for each other
/// ([`picked`]). A job not done is never deleted, however old, far off or claimed.
pub async fn delete_done(store: &Store, before: i64, limit: i64) -> Result<u64, StoreError> {
    delete_picked(
        store,
        "DELETE FROM jobs WHERE id",
        "SELECT id FROM jobs WHERE done_at < $1 ORDER BY done_at LIMIT $2",
        before,
        limit,
    )
    .await
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::JobKind;

    #[test]
    fn job_kinds_read_back_their_stored_words() {
        for kind in JobKind::ALL {
            assert_eq!(kind.as_str().parse::<JobKind>(), Ok(kind));
        }
        assert_eq!(
            "defragment".parse::<JobKind>(),
            Err("unknown job kind `defragment`".to_owned())
        );
    }

    /// PostgreSQL gets the claim as an unnamed statement: planned with its values at every
    /// run, never a plan the connection cached for a smaller table.
    #[test]
    fn the_claim_is_planned_with_its_values_each_run() {
        let claim = super::claim_and_next_pg(1, 2, 3);
        assert!(!sqlx::Execute::persistent(&claim.pg()));
        let plain = super::query("SELECT 1");
        assert!(
            sqlx::Execute::persistent(&plain.pg()),
            "others stay prepared"
        );
    }
}
