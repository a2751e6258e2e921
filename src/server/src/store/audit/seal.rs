//! PostgreSQL: chaining the audit events that transactions wrote to
//! `audit_pending` (docs/audit.md, "Appending on PostgreSQL").
//!
//! A transaction that changes something writes its audit events to
//! `audit_pending`, in the same transaction, without the chain lock; so
//! concurrent transactions commit (and flush the write-ahead log) together.
//! After each such commit the broker's sealer wakes: under the chain lock it
//! moves every committed pending event into `audit_events`, with its `seq`,
//! `prev_hash` and `hash`, one transaction and one flush for the whole batch.
//! Any broker's sealer chains any broker's events; one that crashed leaves
//! its pending events to the next round of another, or its own after restart.
//!
//! Readers of the log (the audit API and pages, a request's history) do not
//! wait for a round: they read the chain and the pending events in one
//! statement (`store::audit::list`). Verification and the access review wait
//! for a round that began after they did ([`Sealer::catch_up`]), so they cover
//! every event committed before them, in the chain.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgPool, Row as _};
use tokio::sync::{Notify, watch};
use tracing::warn;

use super::chain::{CHAIN_LOCK, Canonical, GENESIS, chain_hash};
use crate::store::StoreError;

/// Events chained per transaction at most.
const BATCH: i64 = 1_000;
/// A round runs at least this often, for events a crashed broker left.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Rounds start at most this often: under load, the events of many
/// transactions go into one (a round is a handful of statements and a flush).
const ROUND_GAP: Duration = Duration::from_millis(20);
/// How long a reader waits for the chain to catch up before it gives up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

/// The store's handle on its sealer task, started at the first use.
#[derive(Default)]
pub(crate) struct Sealer {
    shared: OnceLock<Arc<Shared>>,
}

struct Shared {
    kick: Notify,
    /// Rounds begun.
    started: AtomicU64,
    /// The newest round that finished without error.
    sealed: watch::Sender<u64>,
    /// The store is gone: finish the round and stop.
    stop: AtomicBool,
}

impl Drop for Sealer {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.get() {
            shared.stop.store(true, Ordering::SeqCst);
            shared.kick.notify_one();
        }
    }
}

impl Sealer {
    /// Starts the task on first use (it needs the caller's runtime).
    fn shared(&self, pool: &PgPool) -> &Arc<Shared> {
        self.shared.get_or_init(|| {
            let shared = Arc::new(Shared {
                kick: Notify::new(),
                started: AtomicU64::new(0),
                sealed: watch::Sender::new(0),
                stop: AtomicBool::new(false),
            });
            tokio::spawn(run(shared.clone(), pool.clone()));
            shared
        })
    }

    /// Asks for a round soon (after a commit that wrote pending events).
    pub(crate) fn kick(&self, pool: &PgPool) {
        self.shared(pool).kick.notify_one();
    }

    /// Waits until every event committed before this call is in the chain.
    pub(crate) async fn catch_up(&self, pool: &PgPool) -> Result<(), StoreError> {
        // Nothing pending in a snapshot taken now: every event committed before this call is
        // visible to it, so each is chained already.
        if sqlx::query("SELECT 1 FROM audit_pending LIMIT 1")
            .fetch_optional(pool)
            .await?
            .is_none()
        {
            return Ok(());
        }
        let shared = self.shared(pool);
        // A round numbered past the ones begun so far begins after this call.
        let needed = shared.started.load(Ordering::SeqCst) + 1;
        let mut sealed = shared.sealed.subscribe();
        shared.kick.notify_one();
        tokio::time::timeout(CATCH_UP_WAIT, sealed.wait_for(|round| *round >= needed))
            .await
            .map_err(|_| {
                StoreError::Open(
                    "audit events are waiting to be chained (see the broker's log)".to_owned(),
                )
            })?
            .map_err(|_| StoreError::Open("the audit sealer has stopped".to_owned()))?;
        Ok(())
    }
}

async fn run(shared: Arc<Shared>, pool: PgPool) {
    let mut failures = 0u32;
    // Whether a commit (or a reader) asked for this round, rather than the sweep.
    let mut kicked = false;
    loop {
        let stopping = shared.stop.load(Ordering::SeqCst) || pool.is_closed();
        let round = shared.started.fetch_add(1, Ordering::SeqCst) + 1;
        let began = Instant::now();
        match seal_all(&pool, kicked).await {
            Ok(n) => {
                failures = 0;
                if n > 0 {
                    crate::metrics::observe("jit_audit_seal_seconds", &[], began.elapsed());
                }
                shared.sealed.send_replace(round);
            }
            Err(e) if pool.is_closed() => {
                let _ = e;
                return;
            }
            Err(e) => {
                failures += 1;
                crate::metrics::inc("jit_audit_seal_errors_total", &[]);
                warn!(error = %e, "could not chain pending audit events; will retry");
                // Back off a little, but keep the sweep's pace at most.
                tokio::time::sleep(Duration::from_millis(50 << failures.min(4))).await;
                continue;
            }
        }
        if stopping {
            return;
        }
        kicked = tokio::select! {
            () = shared.kick.notified() => true,
            () = tokio::time::sleep(SWEEP_EVERY) => false,
        };
        tokio::time::sleep_until((began + ROUND_GAP).into()).await;
    }
}

/// Chains everything pending; returns how many events. A round that a commit asked for
/// (`kicked`) has events to chain, unless another broker's sealer took them first, so it
/// goes straight to the lock; the sweep looks first, which is cheap when idle (no
/// transaction, no lock).
async fn seal_all(pool: &PgPool, kicked: bool) -> Result<u64, StoreError> {
    let mut conn = pool.acquire().await?;
    if !kicked
        && sqlx::query("SELECT 1 FROM audit_pending LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?
            .is_none()
    {
        return Ok(0);
    }
    let mut total = 0;
    loop {
        let n = seal_batch(&mut conn).await?;
        total += n;
        if n < u64::try_from(BATCH).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}

/// One transaction: under the chain lock, the oldest pending events become
/// the next rows of the chain and leave `audit_pending`. Five round trips: the lock with its
/// `BEGIN`, the batch with the chain's head, the insert, the delete, the commit.
async fn seal_batch(conn: &mut sqlx::PgConnection) -> Result<u64, StoreError> {
    let mut tx = conn
        .begin_with(sqlx::AssertSqlSafe(format!(
            "BEGIN; SELECT pg_advisory_xact_lock({CHAIN_LOCK})"
        )))
        .await?;
    // Read after the lock (another broker may have chained some meanwhile), the head with
    // each event: one statement, one snapshot.
    let pending = sqlx::query(
        "SELECT p.id, p.at, p.actor, p.action, p.request_id, p.entitlement, p.data,
                h.seq AS head_seq, h.hash AS head_hash
         FROM (SELECT * FROM audit_pending ORDER BY id LIMIT $1) p
         LEFT JOIN (SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1) h ON true
         ORDER BY p.id",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    let Some(first) = pending.first() else {
        return Ok(0);
    };
    let (mut seq, mut prev): (i64, String) = match first.try_get::<Option<i64>, _>("head_seq")? {
        Some(head) => (head, first.try_get("head_hash")?),
        None => (0, GENESIS.to_owned()),
    };
    let mut cols = Columns::with_capacity(pending.len());
    for r in &pending {
        seq += 1;
        let at: i64 = r.try_get("at")?;
        let actor: String = r.try_get("actor")?;
        let action: String = r.try_get("action")?;
        let request_id: Option<String> = r.try_get("request_id")?;
        let entitlement: Option<String> = r.try_get("entitlement")?;
        let data: String = r.try_get("data")?;
        let hash = chain_hash(&Canonical {
            seq,
            at,
            actor: &actor,
            action: &action,
            request_id: request_id.as_deref(),
            entitlement: entitlement.as_deref(),
            data: &data,
            prev_hash: &prev,
        });
        cols.pending_id.push(r.try_get::<i64, _>("id")?);
        cols.seq.push(seq);
        cols.at.push(at);
        cols.actor.push(actor);
        cols.action.push(action);
        cols.request_id.push(request_id);
        cols.entitlement.push(entitlement);
        cols.data.push(data);
        cols.prev_hash
            .push(std::mem::replace(&mut prev, hash.clone()));
        cols.hash.push(hash);
    }
    // The in-chain trigger checks every row against the one before, in order.
    sqlx::query(
        "INSERT INTO audit_events
             (seq, at, actor, action, request_id, entitlement, data, prev_hash, hash, pending_id)
         SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::text[], $8::text[], $9::text[], $10::int8[])",
    )
    .bind(&cols.seq)
    .bind(&cols.at)
    .bind(&cols.actor)
    .bind(&cols.action)
    .bind(&cols.request_id)
    .bind(&cols.entitlement)
    .bind(&cols.data)
    .bind(&cols.prev_hash)
    .bind(&cols.hash)
    .bind(&cols.pending_id)
    .execute(&mut *tx)
    .await?;
    // Refused by a trigger unless each event is in the chain as it was written.
    sqlx::query("DELETE FROM audit_pending WHERE id = ANY($1::int8[])")
        .bind(&cols.pending_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(u64::try_from(cols.seq.len()).unwrap_or(0))
}

/// The batch, column by column, for `UNNEST`.
struct Columns {
    pending_id: Vec<i64>,
    seq: Vec<i64>,
    at: Vec<i64>,
    actor: Vec<String>,
    action: Vec<String>,
    request_id: Vec<Option<String>>,
    entitlement: Vec<Option<String>>,
    data: Vec<String>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        Self {
            pending_id: Vec::with_capacity(n),
            seq: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            actor: Vec::with_capacity(n),
            action: Vec::with_capacity(n),
            request_id: Vec::with_capacity(n),
            entitlement: Vec::with_capacity(n),
            data: Vec::with_capacity(n),
            prev_hash: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
        }
    }
}
