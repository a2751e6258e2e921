//! Grants: activation, expiry, time-outs and removal (run by the scheduler),
//! and on-demand credentials and console sign-in for AWS roles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use jit_api::RequestState;
use serde_json::json;
use uuid::Uuid;

use super::requests::{Ending, secs_ms};
use super::scheduled::Started;
use super::step::{Notice, Step, next_state};
use super::{App, Conflict, Forbidden, Missing, ServiceError, Unrecorded, UpstreamCall};
use crate::domain::{Event, UnixMs, User};
use crate::notify::NotificationKind;
use crate::policy::{Entitlement, Kind};
use crate::providers::{GrantRecord, GrantSpec, Grantee, ProviderError, Pruned, SessionsEnded};
use crate::store::audit::{self, NewEvent};
use crate::store::db::On;
use crate::store::held::Change;
use crate::store::jobs::{self, Job, JobKind};
use crate::store::requests::{self as store, Changes, RequestRow};
use crate::store::{Backend, Tx, query, query_built};

/// Failed attempts after which a grant that keeps failing transiently is
/// marked failed (a broker that died holding the job does not count).
const MAX_ACTIVATE_ATTEMPTS: i64 = 8;

/// Runs of an activation that ended without a record (the broker stopped, or lost the job's
/// lease, while making the grant) after which it fails instead of running again: a grant
/// that brings the broker down is not retried forever.
const MAX_UNFINISHED_ACTIVATIONS: i64 = 3;

/// One lock per upstream object, so that a removal and a new grant of the
/// same object never interleave inside this broker. (Across brokers the
/// PostgreSQL advisory lock in [`App::lock_target`] does the same.)
///
/// And the reconciliation gate: grants and removals pass it shared, a
/// reconciliation pass holds it alone, so that the pass compares upstream
/// with a database in which no grant is half made. Without it a pass that
/// read the live grants just before a new one was made removes the new
/// assignment as unexplained.
#[derive(Debug, Default)]
pub struct TargetLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The gate within this broker (SQLite; PostgreSQL uses an advisory lock).
    gate: Arc<tokio::sync::RwLock<()>>,
    /// Bounds how many objects are locked at once on PostgreSQL. Each lock
    /// holds a pooled connection while its job needs a second one: unbounded,
    /// a busy broker's locks take the whole pool and every job and request
    /// waits for a connection that never comes.
    db_slots: OnceLock<Arc<tokio::sync::Semaphore>>,
    /// The object of each request this broker activated or issued a session for lately.
    objects: KnownObjects,
}

/// Requests' objects (`target_key`), the last [`KNOWN_OBJECTS`] this broker saw. A request's
/// object is fixed when it is filed, so an entry is never stale: a session for a grant this
/// broker made locks the object without reading the request first (on PostgreSQL one
/// round trip fewer; the request is read under the lock all the same).
struct KnownObjects(Mutex<crate::fifo::Fifo<Uuid, String>>);

impl Default for KnownObjects {
    fn default() -> Self {
        Self(Mutex::new(crate::fifo::Fifo::new(KNOWN_OBJECTS)))
    }
}

/// How many requests' objects [`KnownObjects`] holds.
const KNOWN_OBJECTS: usize = 10_000;

impl std::fmt::Debug for KnownObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KnownObjects")
    }
}

impl KnownObjects {
    fn lock(&self) -> std::sync::MutexGuard<'_, crate::fifo::Fifo<Uuid, String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, id: Uuid) -> Option<String> {
        self.lock().get(&id).cloned()
    }

    fn keep(&self, id: Uuid, key: &str) {
        // What it lets go is dropped at the end of the function, after the lock (a statement's
        // temporary) is released.
        let _gone = self.lock().insert(id, key.to_owned());
    }
}

impl TargetLocks {
    fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 10_000 {
            map.retain(|_, l| Arc::strong_count(l) > 1);
        }
        map.entry(key.to_owned()).or_default().clone()
    }

    /// At most half the pool holds object locks at any time.
    fn db_slots(&self, pool_size: u32) -> Arc<tokio::sync::Semaphore> {
        self.db_slots
            .get_or_init(|| {
                let slots = usize::try_from(pool_size / 2).unwrap_or(1).max(1);
                Arc::new(tokio::sync::Semaphore::new(slots))
            })
            .clone()
    }
}

/// Held while an upstream object is changed.
pub struct TargetGuard {
    _local: tokio::sync::OwnedMutexGuard<()>,
    /// Further objects locked with it ([`TargetGuard::lock_also`]).
    also: Vec<tokio::sync::OwnedMutexGuard<()>>,
    _gate: Option<tokio::sync::OwnedRwLockReadGuard<()>>,
    // Dropped in this order: the lock's transaction, then its pool slot.
    db: Option<Tx>,
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl TargetGuard {
    /// Locks one more object for as long as this guard lives: the shared
    /// inline policy that a removal writes after locking its own object
    /// (always in that order, so two removals cannot wait for each other).
    /// On PostgreSQL the lock's own transaction takes it, so other brokers
    /// wait too.
    pub async fn lock_also(&mut self, app: &App, key: &str) -> Result<(), ServiceError> {
        let local = app.target_locks.get(key).lock_owned().await;
        self.also.push(local);
        if let Some(tx) = self.db.as_mut() {
            query(ALSO_SQL).bind(key).execute(tx).await?;
        }
        Ok(())
    }

    /// Where a read under this lock runs: on PostgreSQL in the lock's own transaction (its
    /// connection is at hand; each statement sees what committed before it), on SQLite on
    /// the store.
    pub fn reader<'a>(&'a mut self, store: &'a crate::store::Store) -> On<'a> {
        match self.db.as_mut() {
            Some(tx) => On::Tx(tx),
            None => On::Store(store),
        }
    }

    /// The transaction that records what the provider call did. On
    /// PostgreSQL it is the lock's own, so the object stays locked until
    /// the change commits (and one connection serves both); on SQLite a new
    /// one (its write lock is not held across a cloud call).
    pub async fn change_tx(&mut self, store: &crate::store::Store) -> Result<Tx, ServiceError> {
        match self.db.take() {
            Some(tx) => Ok(tx),
            None => Ok(store.begin().await?),
        }
    }
}

/// Held by a reconciliation pass: no grant or removal runs meanwhile.
pub struct ReconcileGuard {
    _local: Option<tokio::sync::OwnedRwLockWriteGuard<()>>,
    _db: Option<Tx>,
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The gate's advisory lock key: the two-key form, a key space apart from
/// the one-key target and audit locks. A grant or removal passes the gate
/// (shared) and locks its object, in one statement: the reconciliation pass
/// takes only the gate, so the order of the two cannot deadlock.
///
/// The statement goes with the `BEGIN` in one simple query (one round trip, not two), so
/// the key is in it as a literal ([`crate::store::db::literal`]).
fn begin_target_sql(key: &str) -> Result<String, ServiceError> {
    let key = crate::store::db::literal(key).ok_or_else(|| {
        ServiceError::Internal(anyhow::anyhow!("a target key holds a NUL character"))
    })?;
    Ok(format!(
        "BEGIN; SELECT pg_advisory_xact_lock_shared(7301, 1), \
         pg_advisory_xact_lock(hashtextextended({key}, 7301))"
    ))
}

const GATE_ALONE_SQL: &str = "SELECT pg_advisory_xact_lock(7301, 1)";
/// A further object, in the target key space.
const ALSO_SQL: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 7301))";

/// What a job run asks of the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Done; the job row was completed in the effect's transaction.
    Done,
    /// Try again at this unix-ms time: the attempt failed (counted, logged).
    RetryAt(i64, String),
    /// Claimed before it was due (a clock moved back, or its time moved later): run it at
    /// this unix-ms time. Not a failure: it neither counts towards the job's attempts to
    /// give up after nor backs off.
    NotYet(i64),
}

impl App {
    /// A pool slot for a transaction that holds a lock while its task
    /// needs further connections.
    async fn db_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ServiceError> {
        self.target_locks
            .db_slots(self.store.max_connections())
            .acquire_owned()
            .await
            .map_err(|e| ServiceError::Internal(e.into()))
    }

    /// Locks one upstream object for the duration of a provider call (and
    /// passes the reconciliation gate, shared).
    pub async fn lock_target(&self, key: &str) -> Result<TargetGuard, ServiceError> {
        let local = self.target_locks.get(key).lock_owned().await;
        if self.store.backend() == Backend::Postgres {
            let slot = self.db_slot().await?;
            let tx = self.store.begin_with(begin_target_sql(key)?).await?;
            Ok(TargetGuard {
                _local: local,
                also: Vec::new(),
                _gate: None,
                db: Some(tx),
                _slot: Some(slot),
            })
        } else {
            let gate = self.target_locks.gate.clone().read_owned().await;
            Ok(TargetGuard {
                _local: local,
                also: Vec::new(),
                _gate: Some(gate),
                db: None,
                _slot: None,
            })
        }
    }

    /// Closes the reconciliation gate: waits up to `wait` for the grants and
    /// removals under way (new ones wait meanwhile); `None` when they did
    /// not finish in time.
    pub async fn reconcile_gate(
        &self,
        wait: std::time::Duration,
    ) -> Result<Option<ReconcileGuard>, ServiceError> {
        if self.store.backend() == Backend::Postgres {
            let slot = self.db_slot().await?;
            let mut tx = self.store.begin().await?;
            let ms = wait.as_millis().max(1);
            query_built(format!("SET LOCAL lock_timeout = {ms}"))
                .execute(&mut tx)
                .await?;
            match query(GATE_ALONE_SQL).execute(&mut tx).await {
                Ok(_) => Ok(Some(ReconcileGuard {
                    _local: None,
                    _db: Some(tx),
                    _slot: Some(slot),
                })),
                Err(e) if e.is_lock_timeout() => Ok(None),
                Err(e) => Err(e.into()),
            }
        } else {
            let gate = self.target_locks.gate.clone();
            Ok(tokio::time::timeout(wait, gate.write_owned())
                .await
                .ok()
                .map(|g| ReconcileGuard {
                    _local: Some(g),
                    _db: None,
                    _slot: None,
                }))
        }
    }

    /// The requester of `row` as a grantee: every requester is recorded when they ask.
    fn grantee(row: &RequestRow, recorded: Option<Grantee>) -> Result<Grantee, ServiceError> {
        recorded.ok_or_else(|| {
            ServiceError::Internal(anyhow::anyhow!(
                "user `{}` is not recorded",
                row.requester_key
            ))
        })
    }

    fn catalog_entry(&self, id: &str) -> Result<&Entitlement, ServiceError> {
        self.policy.catalog.get(id).ok_or_else(|| {
            ServiceError::Internal(anyhow::anyhow!(
                "entitlement `{id}` is no longer in the catalog"
            ))
        })
    }

    async fn complete_only(&self, job: &Job) -> Result<JobOutcome, ServiceError> {
        let mut tx = self.store.begin().await?;
        jobs::complete(&mut tx, job.id, self.now_ms()).await?;
        tx.commit().await?;
        Ok(JobOutcome::Done)
    }

    /// Makes the grant of an approved request; active only once the cloud says so.
    pub(crate) async fn activate(&self, job: &Job, id: Uuid) -> Result<JobOutcome, ServiceError> {
        let Some((row, grantee)) = store::get_for_grant(&self.store, id).await? else {
            return self.complete_only(job).await;
        };
        self.target_locks.objects.keep(id, &row.target_key);
        let row = if row.state == RequestState::Scheduled {
            match self.start_scheduled(job, &row).await? {
                Started::Grant(row) => *row,
                Started::Done(outcome) => return Ok(outcome),
            }
        } else {
            row
        };
        if row.state != RequestState::Approved {
            return self.complete_only(job).await;
        }
        let ent = self.catalog_entry(&row.entitlement)?.clone();
        let grantee = Self::grantee(&row, grantee)?;
        let now = self.now_unix();
        let now_ms = now.millis();
        let ends = self.grant_ends(&row, now).await?;
        if row.start_at.is_some() && ends <= now {
            let reason = super::scheduled::window_over(ends);
            return self.fail_unstarted(job, id, reason, now_ms).await;
        }
        let unfinished = job.attempts - 1 - job.failures;
        if unfinished >= MAX_UNFINISHED_ACTIVATIONS {
            let reason = format!(
                "the broker stopped {unfinished} times while making this grant; \
                 anything it made is being removed"
            );
            return self.fail_unstarted(job, id, reason, now_ms).await;
        }
        let mut guard = self.lock_target(&row.target_key).await?;
        // Again under the lock: a request cancelled or revoked meanwhile is not granted (the
        // removal that ran meanwhile would not see the grant, and its job is done).
        // The object may exist already: another live grant holds it, an ended
        // grant's removal is still due (it will find this grant and keep the
        // object), or an earlier attempt of this job made it before the broker
        // died. Then the provider adopts or extends it instead of making a
        // second one.
        let Some(held) =
            store::approved_and_held(guard.reader(&self.store), id, &row.target_key).await?
        else {
            drop(guard);
            return self.complete_only(job).await;
        };
        let grant = Activation {
            job,
            row: &row,
            ent: &ent,
            grantee: &grantee,
            starts: now,
            ends,
            held,
            overlapping: job.attempts > 1 || held,
            now_ms,
        };
        let result = self.grant_upstream(&grant).await;
        let mut tx = guard.change_tx(&self.store).await?;
        let outcome = match result {
            Ok(record) => self.record_grant(&mut tx, &grant, record).await?,
            Err(e) => self.record_grant_error(&mut tx, &grant, &e).await?,
        };
        match outcome {
            JobOutcome::Done => tx.commit().await?,
            JobOutcome::RetryAt(..) | JobOutcome::NotYet(_) => tx.rollback().await?,
        }
        drop(guard);
        Ok(outcome)
    }

    /// When the grant of approved request `row`, made at `now`, ends: an extension's
    /// window continues the grant it extends, a scheduled request's starts at its
    /// `start_at` (however late it starts), any other's now.
    async fn grant_ends(&self, row: &RequestRow, now: UnixMs) -> Result<UnixMs, ServiceError> {
        let base = match row.extends_id {
            Some(parent) => store::get(&self.store, parent)
                .await?
                .and_then(|p| p.expires_at)
                .map_or(now, |e| e.max(now)),
            None => row.start_at.unwrap_or(now),
        };
        Ok(base.plus_secs(row.duration_secs))
    }

    /// Fails request `id` for `reason` before this run of `job` asks the cloud, in a
    /// transaction of its own (approved or started only after its window ended, or the
    /// broker stopped again and again while making it). When it is no longer approved,
    /// only completes `job`.
    async fn fail_unstarted(
        &self,
        job: &Job,
        id: Uuid,
        reason: String,
        now_ms: i64,
    ) -> Result<JobOutcome, ServiceError> {
        let mut tx = self.store.begin().await?;
        let current = store::lock(&self.store, &mut tx, id).await?;
        if current.state == RequestState::Approved {
            self.fail_grant(&mut tx, job, &current, reason).await?;
        } else {
            jobs::complete(&mut tx, job.id, now_ms).await?;
        }
        tx.commit().await?;
        Ok(JobOutcome::Done)
    }

    /// Asks the provider for grant `a`, and times the call.
    async fn grant_upstream(&self, a: &Activation<'_>) -> Result<GrantRecord, ProviderError> {
        let spec = GrantSpec {
            request_id: a.row.id,
            grantee: a.grantee,
            entitlement: a.ent,
            starts_at: a.starts.to_datetime(),
            ends_at: a.ends.to_datetime(),
            justification: &a.row.justification,
            ticket: a.row.ticket.as_deref(),
            overlapping: a.overlapping,
            held: a.held,
        };
        let provider = self.providers.get(a.ent.kind);
        let started = std::time::Instant::now();
        let result = provider.grant(&spec).await;
        crate::metrics::upstream(
            a.ent.kind.as_str(),
            "grant",
            started.elapsed(),
            result.is_ok(),
        );
        result
    }

    /// Records grant `a` that the provider made (`record`) inside `tx`: active if the
    /// request is still approved, else taken back.
    async fn record_grant(
        &self,
        tx: &mut Tx,
        a: &Activation<'_>,
        record: GrantRecord,
    ) -> Result<JobOutcome, ServiceError> {
        // Active if it is still approved: the update checks the row's
        // latest version under its lock, so no read is needed first.
        let activated = store::change_state(
            tx,
            a.row.id,
            RequestState::Approved,
            next_state(RequestState::Approved, Event::Activate)?,
            &Changes {
                activated_at: Some(a.starts),
                expires_at: Some(a.ends),
                provider_ref: record.reference.clone(),
                simulated: Some(self.providers.simulates(a.ent)),
                ..Changes::default()
            },
        )
        .await?;
        if activated {
            self.record_active(tx, a, record).await?;
        } else {
            self.record_orphaned(tx, a).await?;
        }
        Ok(JobOutcome::Done)
    }

    /// Records that grant `a` is active inside `tx`: its event and notifications, then
    /// completes its job and queues its expiry (and expiry warning).
    async fn record_active(
        &self,
        tx: &mut Tx,
        a: &Activation<'_>,
        record: GrantRecord,
    ) -> Result<(), ServiceError> {
        let id = a.row.id;
        let kind = if a.row.extends_id.is_some() {
            NotificationKind::Extended
        } else {
            NotificationKind::GrantActive
        };
        let step = Step {
            actor: "system",
            action: "grant.activated",
            data: json!({
                "expires_at": a.ends.to_string(),
                "reference": record.reference,
                "simulated": self.providers.simulates(a.ent),
                "overlapping": a.overlapping,
                "details": record.details,
                "extends": a.row.extends_id,
            }),
            notice: Some(Notice {
                kind,
                actor: None,
                comment: None,
            }),
        };
        self.record_step(tx, id, &a.ent.id, step).await?;
        let expire = jobs::NewJob {
            kind: JobKind::Expire,
            request_id: Some(id),
            payload: "{}",
            due_at: a.ends.millis(),
            dedupe_key: Some(format!("expire:{id}")),
        };
        let warning = self.expiry_warning_job(id, a.starts, a.ends);
        let due: Vec<_> = std::iter::once(expire).chain(warning).collect();
        jobs::complete_then(tx, a.job.id, &due, a.now_ms).await?;
        Ok(())
    }

    /// Records grant `a`, made while its request was cancelled or revoked, as orphaned
    /// inside `tx`, completes its job and queues its removal: the grant is taken back.
    async fn record_orphaned(&self, tx: &mut Tx, a: &Activation<'_>) -> Result<(), ServiceError> {
        let id = a.row.id;
        let current = store::lock(&self.store, tx, id).await?;
        let step = Step {
            actor: "system",
            action: "grant.orphaned",
            data: json!({ "state": current.state }),
            notice: None,
        };
        self.record_step(tx, id, &a.ent.id, step).await?;
        jobs::complete(tx, a.job.id, a.now_ms).await?;
        self.queue_deprovision(tx, id, a.now_ms).await
    }

    /// Records the provider's refusal `e` of grant `a` inside `tx`: the request fails when
    /// the refusal is permanent or the attempts are used up; `RetryAt` (for the caller to
    /// roll `tx` back) while it is approved and may be tried again; else its job is done.
    async fn record_grant_error(
        &self,
        tx: &mut Tx,
        a: &Activation<'_>,
        e: &ProviderError,
    ) -> Result<JobOutcome, ServiceError> {
        let current = store::lock(&self.store, tx, a.row.id).await?;
        let permanent = matches!(e, ProviderError::Permanent(_))
            || a.job.failure_number() >= MAX_ACTIVATE_ATTEMPTS;
        if permanent && current.state == RequestState::Approved {
            self.fail_grant(tx, a.job, &current, e.to_string()).await?;
        } else if current.state == RequestState::Approved {
            return Ok(JobOutcome::RetryAt(
                a.now_ms + a.job.backoff_ms(),
                e.to_string(),
            ));
        } else {
            jobs::complete(tx, a.job.id, a.now_ms).await?;
        }
        Ok(JobOutcome::Done)
    }

    /// Ends a grant whose window is over and queues the upstream removal
    /// (its audit events held when they cannot be written: `service::held`).
    pub(crate) async fn expire(&self, job: &Job, id: Uuid) -> Result<JobOutcome, ServiceError> {
        match self.expire_tx(job, id, false).await {
            Err(e) if e.is_store_failure() => {
                tracing::warn!(error = %e, request.id = %id, "expiry: could not write; holding its audit events");
                self.expire_tx(job, id, true).await
            }
            other => other,
        }
    }

    async fn expire_tx(&self, job: &Job, id: Uuid, hold: bool) -> Result<JobOutcome, ServiceError> {
        let now = self.now_unix();
        let now_ms = now.millis();
        let mut tx = self.store.begin().await?;
        if hold {
            tx.hold_audit();
        }
        let row = store::lock(&self.store, &mut tx, id).await?;
        if row.state != RequestState::Active {
            jobs::complete(&mut tx, job.id, now_ms).await?;
            tx.commit().await?;
            return Ok(JobOutcome::Done);
        }
        if let Some(end) = row.expires_at
            && end > now
        {
            tx.rollback().await?;
            return Ok(JobOutcome::NotYet(end.millis()));
        }
        self.end_request(
            &mut tx,
            &row,
            RequestState::Expired,
            now_ms,
            Ending {
                by: None,
                action: "grant.expired",
                data: json!({ "expires_at": row.expires_at.map(|t| t.to_string()) }),
                kind: Some(NotificationKind::Expired),
                comment: None,
            },
        )
        .await?;
        self.queue_deprovision(&mut tx, id, now_ms).await?;
        jobs::complete(&mut tx, job.id, now_ms).await?;
        let change = super::requests::ended(&row, RequestState::Expired, now_ms);
        self.commit_holding(tx, Some(change)).await?;
        self.wake.notify_one();
        Ok(JobOutcome::Done)
    }

    /// Times out a request nobody decided on.
    pub(crate) async fn time_out(&self, job: &Job, id: Uuid) -> Result<JobOutcome, ServiceError> {
        let now = self.now_unix();
        let now_ms = now.millis();
        let mut tx = self.store.begin().await?;
        let row = store::lock(&self.store, &mut tx, id).await?;
        if row.state == RequestState::Pending {
            if let Some(until) = row.pending_until
                && until > now
            {
                tx.rollback().await?;
                return Ok(JobOutcome::NotYet(until.millis()));
            }
            self.end_request(
                &mut tx,
                &row,
                RequestState::TimedOut,
                now_ms,
                Ending {
                    by: None,
                    action: "request.timed_out",
                    data: json!({}),
                    kind: Some(NotificationKind::TimedOut),
                    comment: None,
                },
            )
            .await?;
        }
        jobs::complete(&mut tx, job.id, now_ms).await?;
        tx.commit().await?;
        Ok(JobOutcome::Done)
    }

    /// Removes the upstream object of an ended grant and ends the sessions
    /// it handed out, unless another live grant needs them.
    pub(crate) async fn deprovision(
        &self,
        job: &Job,
        id: Uuid,
    ) -> Result<JobOutcome, ServiceError> {
        let Some((row, grantee)) = store::get_for_grant(&self.store, id).await? else {
            return self.complete_only(job).await;
        };
        if row.deprovisioned_at.is_some() || !row.state.is_terminal() {
            return self.complete_only(job).await;
        }
        let ent = self.catalog_entry(&row.entitlement)?.clone();
        let grantee = Self::grantee(&row, grantee)?;
        let mut guard = self.lock_target(&row.target_key).await?;
        // Again under the lock: the removal of another grant of its chain (a revocation
        // ends them all) may have removed the object meanwhile.
        if store::get(&self.store, id)
            .await?
            .is_none_or(|r| r.deprovisioned_at.is_some())
        {
            drop(guard);
            return self.complete_only(job).await;
        }
        let now = self.now_unix();
        let now_ms = now.millis();
        let holders = store::live_holders(&self.store, &row.target_key, id).await?;
        let result = if holders.is_empty() {
            for key in ent.policy_keys() {
                guard.lock_also(self, &key).await?;
            }
            let spec = GrantSpec {
                request_id: id,
                grantee: &grantee,
                entitlement: &ent,
                starts_at: row.activated_at.unwrap_or(now).to_datetime(),
                ends_at: row.expires_at.unwrap_or(now).to_datetime(),
                justification: &row.justification,
                ticket: row.ticket.as_deref(),
                overlapping: false,
                held: false,
            };
            Some(self.remove_upstream(&spec).await)
        } else {
            None
        };
        let tx = guard.change_tx(&self.store).await?;
        let removal = Removal {
            job,
            id,
            root: row.root_id,
            ent: &ent,
            holders: &holders,
            result: &result,
            now_ms,
        };
        let outcome = match self.record_removal(tx, &removal).await {
            // The upstream work is done: only its record waits for the
            // audit store, held meanwhile.
            Err(e) if e.is_store_failure() => {
                tracing::warn!(error = %e, request.id = %id, "removal: could not write; holding its audit events");
                let mut tx = self.store.begin().await?;
                tx.hold_audit();
                self.record_removal(tx, &removal).await?
            }
            other => other?,
        };
        drop(guard);
        Ok(outcome)
    }

    /// Records what a removal did, in `tx`, and commits it.
    async fn record_removal(
        &self,
        mut tx: Tx,
        r: &Removal<'_>,
    ) -> Result<JobOutcome, ServiceError> {
        let (id, ent, now_ms) = (r.id, r.ent, r.now_ms);
        let mut change = None;
        let outcome = match r.result {
            None => {
                self.audit(
                    &mut tx,
                    NewEvent {
                        actor: "system",
                        action: "grant.removal_skipped",
                        request_id: Some(id),
                        entitlement: Some(&ent.id),
                        data: json!({ "still_needed_by": r.holders }),
                    },
                )
                .await?;
                store::set_deprovisioned(&mut tx, id, now_ms).await?;
                jobs::complete(&mut tx, r.job.id, now_ms).await?;
                change = Some(Change::Deprovisioned {
                    request: id.to_string(),
                    at: now_ms,
                });
                JobOutcome::Done
            }
            Some(Ok(sessions)) => {
                change = Some(self.record_removed(&mut tx, r, sessions.as_ref()).await?);
                JobOutcome::Done
            }
            Some(Err(e)) => {
                // Removal must happen: keep trying, and say so in the log once in a while.
                let failure = r.job.failure_number();
                if failure == 1 || failure % 10 == 0 {
                    self.audit(
                        &mut tx,
                        NewEvent {
                            actor: "system",
                            action: "grant.removal_retry",
                            request_id: Some(id),
                            entitlement: Some(&ent.id),
                            data: json!({ "error": e.to_string(), "attempts": failure }),
                        },
                    )
                    .await?;
                }
                JobOutcome::RetryAt(now_ms + r.job.backoff_ms(), e.to_string())
            }
        };
        self.commit_holding(tx, change).await?;
        Ok(outcome)
    }

    /// Records the removal of `r`'s grant whose provider call ended `sessions`
    /// (and of the other ended grants of its chain, which held the same
    /// object) inside `tx`; the change to announce.
    async fn record_removed(
        &self,
        tx: &mut Tx,
        r: &Removal<'_>,
        sessions: Option<&SessionsEnded>,
    ) -> Result<Change, ServiceError> {
        let (id, ent, now_ms) = (r.id, r.ent, r.now_ms);
        let mut data = json!({ "simulated": self.providers.simulates(ent) });
        if let Some(ended) = sessions {
            data["sessions"] = ended.details.clone();
        }
        self.audit(
            tx,
            NewEvent {
                actor: "system",
                action: "grant.removed",
                request_id: Some(id),
                entitlement: Some(&ent.id),
                data,
            },
        )
        .await?;
        store::set_deprovisioned(tx, id, now_ms).await?;
        if let Some(at) = sessions.and_then(|s| s.prune_at) {
            self.queue_prune(tx, ent, at, now_ms).await?;
        }
        jobs::complete(tx, r.job.id, now_ms).await?;
        let mut changes = vec![Change::Deprovisioned {
            request: id.to_string(),
            at: now_ms,
        }];
        // The other ended grants of its chain held the same object: removed with it,
        // once (their own removals then find nothing to do).
        for other in store::ended_in_chain(tx, r.root, id).await? {
            self.audit(
                tx,
                NewEvent {
                    actor: "system",
                    action: "grant.removed",
                    request_id: Some(other),
                    entitlement: Some(&ent.id),
                    data: json!({ "removed_with": id }),
                },
            )
            .await?;
            store::set_deprovisioned(tx, other, now_ms).await?;
            changes.push(Change::Deprovisioned {
                request: other.to_string(),
                at: now_ms,
            });
        }
        Ok(if changes.len() == 1 {
            changes.remove(0)
        } else {
            Change::All { changes }
        })
    }

    /// The provider's removal of the grant's object, then the end of the
    /// sessions it handed out (both idempotent: a retry repeats both).
    async fn remove_upstream(
        &self,
        spec: &GrantSpec<'_>,
    ) -> Result<Option<SessionsEnded>, ProviderError> {
        let kind = spec.entitlement.kind;
        let provider = self.providers.get(kind);
        let started = std::time::Instant::now();
        let removed = provider.revoke(spec).await;
        crate::metrics::upstream(kind.as_str(), "revoke", started.elapsed(), removed.is_ok());
        removed?;
        let started = std::time::Instant::now();
        let ended = provider.end_sessions(spec).await;
        crate::metrics::upstream(
            kind.as_str(),
            "end_sessions",
            started.elapsed(),
            ended.is_ok(),
        );
        ended
    }

    /// Queues the pruning of `ent`'s deny statements at `at` (AWS's time,
    /// turned into a delay from now).
    async fn queue_prune(
        &self,
        tx: &mut Tx,
        ent: &Entitlement,
        at: time::OffsetDateTime,
        now_ms: i64,
    ) -> Result<(), ServiceError> {
        let delay = at - time::OffsetDateTime::now_utc();
        let due = now_ms + i64::try_from(delay.whole_milliseconds().max(0)).unwrap_or(0) + 1000;
        // A bundle's denies are its members' (each pruned on its own).
        for member in ent.members() {
            let Some(key) = member.policy_key() else {
                continue;
            };
            let payload = json!({ "entitlement": member.id }).to_string();
            jobs::enqueue(
                tx,
                JobKind::PruneDenies,
                None,
                &payload,
                due,
                Some(&format!("prune:{key}:{}", due / 1000)),
                now_ms,
            )
            .await?;
        }
        Ok(())
    }

    /// Drops the deny statements whose sessions have all expired, and comes
    /// back when the next ones have.
    pub(crate) async fn prune_denies(&self, job: &Job) -> Result<JobOutcome, ServiceError> {
        let payload: serde_json::Value = serde_json::from_str(&job.payload).unwrap_or_default();
        let ent = payload["entitlement"]
            .as_str()
            .and_then(|id| self.policy.catalog.get(id))
            .cloned();
        let Some((ent, key)) = ent.and_then(|e| e.policy_key().map(|k| (e, k))) else {
            // Gone from the catalog: a later removal on the same target prunes.
            return self.complete_only(job).await;
        };
        let mut guard = self.lock_target(&key).await?;
        let started = std::time::Instant::now();
        let result = self.providers.get(ent.kind).prune_denies(&ent).await;
        crate::metrics::upstream(
            ent.kind.as_str(),
            "prune",
            started.elapsed(),
            result.is_ok(),
        );
        let now_ms = self.now_ms();
        let tx = guard.change_tx(&self.store).await?;
        let outcome = match self.record_prune(tx, job, &ent, &result, now_ms).await {
            Err(e) if e.is_store_failure() => {
                tracing::warn!(error = %e, "pruning: could not write; holding its audit events");
                let mut tx = self.store.begin().await?;
                tx.hold_audit();
                self.record_prune(tx, job, &ent, &result, now_ms).await?
            }
            other => other?,
        };
        drop(guard);
        Ok(outcome)
    }

    /// Records what a pruning pass did, in `tx`, and commits it.
    async fn record_prune(
        &self,
        mut tx: Tx,
        job: &Job,
        ent: &Entitlement,
        result: &Result<Option<Pruned>, ProviderError>,
        now_ms: i64,
    ) -> Result<JobOutcome, ServiceError> {
        let outcome = match result {
            Ok(pruned) => {
                if let Some(p) = pruned
                    && p.pruned > 0
                {
                    self.audit(
                        &mut tx,
                        NewEvent {
                            actor: "system",
                            action: "sessions.denies_pruned",
                            request_id: None,
                            entitlement: Some(&ent.id),
                            data: json!({ "pruned": p.pruned, "remaining": p.remaining }),
                        },
                    )
                    .await?;
                }
                if let Some(next) = pruned.as_ref().and_then(|p| p.next) {
                    self.queue_prune(&mut tx, ent, next, now_ms).await?;
                }
                jobs::complete(&mut tx, job.id, now_ms).await?;
                JobOutcome::Done
            }
            Err(e) => JobOutcome::RetryAt(now_ms + job.backoff_ms(), e.to_string()),
        };
        self.commit_holding(tx, None).await?;
        Ok(outcome)
    }

    /// An active AWS-role grant the caller owns, with its entitlement.
    async fn own_active_role(
        &self,
        user: &User,
        id: Uuid,
        on: On<'_>,
    ) -> Result<(RequestRow, Entitlement, Grantee), ServiceError> {
        let (row, grantee) = store::get_for_grant(on, id)
            .await?
            .filter(|(r, _)| self.may_see(user, r))
            .ok_or_else(|| ServiceError::NotFound(Missing::Request(id)))?;
        if row.requester_key != user.key {
            return Err(ServiceError::Forbidden(Forbidden::Credentials));
        }
        let ent = self.catalog_entry(&row.entitlement)?.clone();
        // A bundle issues its AWS role's sessions (through the bundle's provider).
        if !self.issues_sessions(&ent.id) {
            return Err(ServiceError::Invalid(if ent.kind == Kind::Bundle {
                format!(
                    "bundle `{}` does not hold exactly one AWS role: it issues no credentials",
                    ent.id
                )
            } else {
                format!(
                    "`{}` is not an AWS role entitlement: it issues no credentials",
                    ent.id
                )
            }));
        }
        let now = self.now_unix();
        if row.state != RequestState::Active || row.expires_at.is_none_or(|e| e <= now) {
            return Err(ServiceError::Conflict(Conflict::NotActive(row.state)));
        }
        let grantee = Self::grantee(&row, grantee)?;
        Ok((row, ent, grantee))
    }

    /// Whether grants of `entitlement` issue AWS sessions: an AWS role, or a bundle with
    /// exactly one.
    pub fn issues_sessions(&self, entitlement: &str) -> bool {
        self.policy.catalog.get(entitlement).is_some_and(|e| {
            e.members()
                .iter()
                .filter(|m| m.kind == Kind::AwsRole)
                .count()
                == 1
        })
    }

    /// STS session length for a grant: what is left of its window, capped by
    /// the entitlement's session cap, never below STS's 900-second minimum.
    pub fn session_seconds(&self, row: &RequestRow, ent: &Entitlement) -> u64 {
        let left = u64::try_from(self.seconds_left(row)).unwrap_or(0);
        let cap = ent
            .members()
            .iter()
            .find_map(|m| match &m.target {
                crate::policy::catalog::Target::AwsRole {
                    session_seconds, ..
                } => Some(*session_seconds),
                _ => None,
            })
            .unwrap_or(crate::policy::catalog::DEFAULT_SESSION_SECONDS);
        left.min(cap).max(crate::policy::catalog::MIN_STS_SECONDS)
    }

    /// Mints STS credentials for the owner of an active `aws_role` grant.
    pub async fn mint_credentials(
        &self,
        user: &User,
        id: Uuid,
    ) -> Result<jit_api::Credentials, ServiceError> {
        match self.issue_session(user, id, Session::Credentials).await? {
            Issued::Credentials(c) => Ok(c),
            Issued::Console(_) => Err(ServiceError::Internal(anyhow::anyhow!(
                "wrong session kind"
            ))),
        }
    }

    /// A console sign-in URL for the owner of an active `aws_role` grant.
    pub async fn console_url(&self, user: &User, id: Uuid) -> Result<String, ServiceError> {
        match self.issue_session(user, id, Session::Console).await? {
            Issued::Console(url) => Ok(url),
            Issued::Credentials(_) => Err(ServiceError::Internal(anyhow::anyhow!(
                "wrong session kind"
            ))),
        }
    }

    /// Mints a session for the owner of an active `aws_role` grant and
    /// records it: no audit row, no session.
    ///
    /// The event is known to be writable before STS is asked (a probe writes
    /// it and rolls back: a failing audit store answers `AuditUnavailable`
    /// and AWS sees no call; on PostgreSQL inside the lock's transaction, to a
    /// savepoint, in one round trip), and the session is handed out only once the
    /// event, with what only the call tells (the access key id), has
    /// committed. On SQLite the two writes are short transactions of their own,
    /// so its one writer is not held across the STS round trip (every other
    /// write would wait for it). Should the second fail all the same, the
    /// session is ended as a removal ends it (the person's deny) before the
    /// error is returned, and the failure is recorded when the log takes it.
    /// The grant's object stays locked throughout: a removal of the grant
    /// waits for the mint, so its deny covers this session.
    async fn issue_session(
        &self,
        user: &User,
        id: Uuid,
        kind: Session,
    ) -> Result<Issued, ServiceError> {
        let (action, op) = match kind {
            Session::Credentials => ("credentials.minted", "mint"),
            Session::Console => ("console.signin", "console"),
        };
        let object = self.session_object(user, id).await?;
        let mut guard = self.lock_target(&object).await?;
        // Under the lock: revoked meanwhile means no session.
        let (row, ent, grantee) = self
            .own_active_role(user, id, guard.reader(&self.store))
            .await?;
        if row.target_key != object {
            return Err(ServiceError::Internal(anyhow::anyhow!(
                "request {id} names object `{}`, not the `{object}` locked",
                row.target_key
            )));
        }
        self.target_locks.objects.keep(id, &object);
        let seconds = self.session_seconds(&row, &ent);
        let spec = Self::spec_for(&row, &ent, &grantee);
        let event = |data: serde_json::Value| NewEvent {
            actor: &user.email,
            action,
            request_id: Some(id),
            entitlement: Some(&ent.id),
            data,
        };
        self.probe_session(&mut guard, id, event(json!({ "session_seconds": seconds })))
            .await?;
        let provider = self.providers.get(ent.kind);
        let started = std::time::Instant::now();
        let issued = match kind {
            Session::Credentials => provider
                .mint_credentials(&spec, seconds)
                .await
                .map(Issued::Credentials),
            Session::Console => provider
                .console_url(&spec, seconds)
                .await
                .map(Issued::Console),
        };
        crate::metrics::upstream(ent.kind.as_str(), op, started.elapsed(), issued.is_ok());
        let value = issued.map_err(ServiceError::upstream(match kind {
            Session::Credentials => UpstreamCall::MintCredentials,
            Session::Console => UpstreamCall::OpenConsole,
        }))?;
        let facts = match &value {
            Issued::Credentials(c) => json!({
                "access_key_id": c.access_key_id,
                "expiration": c.expiration,
            }),
            Issued::Console(_) => json!({}),
        };
        let mut data = json!({ "session_seconds": seconds });
        if let (Some(all), Some(more)) = (data.as_object_mut(), facts.as_object()) {
            all.extend(more.clone());
        }
        let recorded = async {
            let mut tx = guard.change_tx(&self.store).await?;
            self.audit(&mut tx, event(data.clone())).await?;
            tx.commit().await?;
            Ok::<(), ServiceError>(())
        }
        .await;
        drop(guard);
        if let Err(e) = recorded {
            tracing::error!(error = %e, request.id = %id, "a minted session could not be recorded: ending it");
            self.withdraw_session(&row, &ent, &grantee, action, &data)
                .await;
            return Err(ServiceError::AuditUnavailable(Unrecorded::Withdrawn));
        }
        Ok(value)
    }

    /// The object a session for request `id` locks: known when this broker made the grant,
    /// else read (and checked first: no lock for a request the caller may not use).
    async fn session_object(&self, user: &User, id: Uuid) -> Result<String, ServiceError> {
        if let Some(key) = self.target_locks.objects.get(id) {
            return Ok(key);
        }
        let (row, _, _) = self
            .own_active_role(user, id, On::Store(&self.store))
            .await?;
        Ok(row.target_key)
    }

    /// Whether the `event` of a session for request `id` can be written: PostgreSQL probes
    /// in the lock's transaction (one round trip), SQLite in a transaction of its own.
    /// `AuditUnavailable` when not: no session may be minted.
    async fn probe_session(
        &self,
        guard: &mut TargetGuard,
        id: Uuid,
        event: NewEvent<'_>,
    ) -> Result<(), ServiceError> {
        let probe = match guard.db.as_mut() {
            Some(tx) => audit::probe_in(tx, self.now(), &event).await,
            None => audit::probe(&self.store, self.now(), event).await,
        };
        probe.map_err(|e| {
            tracing::error!(error = %e, request.id = %id, "audit log not writable: no session minted");
            ServiceError::AuditUnavailable(Unrecorded::NotIssued)
        })
    }

    /// Ends a session that was minted but could not be recorded (the
    /// person's deny, as a removal writes it), records why when the log
    /// takes it, and queues the deny's pruning.
    async fn withdraw_session(
        &self,
        row: &RequestRow,
        ent: &Entitlement,
        grantee: &Grantee,
        action: &str,
        minted: &serde_json::Value,
    ) {
        let result = async {
            let mut guard = self.lock_target(&row.target_key).await?;
            for key in ent.policy_keys() {
                guard.lock_also(self, &key).await?;
            }
            let spec = Self::spec_for(row, ent, grantee);
            let ended = self
                .providers
                .get(ent.kind)
                .end_sessions(&spec)
                .await
                .map_err(ServiceError::upstream(UpstreamCall::EndSessions))?;
            let now_ms = self.now_ms();
            let mut tx = guard.change_tx(&self.store).await?;
            if let Some(at) = ended.as_ref().and_then(|s| s.prune_at) {
                self.queue_prune(&mut tx, ent, at, now_ms).await?;
            }
            tx.commit().await?;
            drop(guard);
            let event = NewEvent {
                actor: "system",
                action: "credentials.withdrawn",
                request_id: Some(row.id),
                entitlement: Some(&ent.id),
                data: json!({
                    "reason": format!("`{action}` could not be recorded"),
                    "minted": minted,
                    "sessions": ended.map(|s| s.details),
                }),
            };
            self.audit_alone_or_hold(event).await
        }
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, request.id = %row.id, "could not withdraw or record a session that was not recorded");
        }
    }

    fn spec_for<'a>(
        row: &'a RequestRow,
        ent: &'a Entitlement,
        grantee: &'a Grantee,
    ) -> GrantSpec<'a> {
        GrantSpec {
            request_id: row.id,
            grantee,
            entitlement: ent,
            starts_at: row.activated_at.unwrap_or(row.created_at).to_datetime(),
            ends_at: row.expires_at.unwrap_or(row.created_at).to_datetime(),
            justification: &row.justification,
            ticket: row.ticket.as_deref(),
            overlapping: false,
            held: false,
        }
    }
}

/// A grant the activation job makes, for its record ([`App::activate`]).
struct Activation<'a> {
    job: &'a Job,
    row: &'a RequestRow,
    ent: &'a Entitlement,
    grantee: &'a Grantee,
    /// Its window.
    starts: UnixMs,
    ends: UnixMs,
    /// Another live grant holds its object.
    held: bool,
    /// The object may exist already: the provider adopts or extends it.
    overlapping: bool,
    now_ms: i64,
}

/// What a removal did, for its record ([`App::record_removal`]).
struct Removal<'a> {
    job: &'a Job,
    id: Uuid,
    /// The first request of its extension chain.
    root: Uuid,
    ent: &'a Entitlement,
    holders: &'a [Uuid],
    result: &'a Option<Result<Option<SessionsEnded>, ProviderError>>,
    now_ms: i64,
}

/// Which session [`App::issue_session`] mints.
#[derive(Debug, Clone, Copy)]
enum Session {
    Credentials,
    Console,
}

/// What it handed out.
enum Issued {
    Credentials(jit_api::Credentials),
    Console(String),
}

/// Delay before retrying a job that failed with an internal error.
pub fn internal_retry_ms(job: &Job) -> i64 {
    job.backoff_ms() + secs_ms(1)
}
