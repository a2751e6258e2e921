//! The checkpoint writer: every `audit.checkpoint_every`, and at shutdown, when the chain has
//! grown, one broker signs its head and writes the checkpoint to every sink.
//!
//! A round, on PostgreSQL under an advisory lock (only one broker of a cluster writes a given
//! checkpoint; the others skip the round; [`WriterLock`]):
//! 1. the newest checkpoint recorded in the database (`audit_checkpoints`) is the previous one;
//!    one signed by this broker's key must verify with it;
//! 2. the chain after the previous checkpoint's `seq` is verified, anchored on the hash that
//!    checkpoint signed: a broker never signs over a chain that was changed since. After a
//!    checkpoint of this broker's key the round reads only those rows, and signs
//!    `event_count` as the previous one's plus the rows walked; the first checkpoint, and one
//!    after a checkpoint it cannot verify (another key's), counts the whole table;
//! 3. the new checkpoint is signed and written to every sink, oldest unsent first; it is
//!    recorded in the database when at least one sink holds it.
//!
//! The database work of a round is a few short reads, each on a connection of the pool only
//! for as long as it runs, and the insert at the end: signing and the sinks' writes hold no
//! connection of the pool (the lock's transaction, on a connection of its own, holds nothing
//! but the lock). A sink that fails keeps its checkpoints in a
//! backlog, retried every round; nothing here ever holds up a grant (SQLite's write lock is
//! not taken across a round). When no checkpoint
//! has been written for 3 intervals while the chain grew, or the chain does not verify, the
//! broker raises an alarm: an error in the log, `jit_audit_checkpoint_alarm` 1, and an email
//! to `notify.security_emails`.

use std::sync::{Arc, Mutex as SyncMutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Mutex, watch};
use tracing::{error, info, warn};

use super::sink::{Sink, SinkError, SinkSpec};
use super::{Checkpoint, Claim, GENESIS, PublicKey, Signer};
use crate::config::Config;
use crate::store::checkpoints::{self, Stored, WriterLock};
use crate::store::{Store, StoreError, audit};

/// Longest a sink write may take.
const SINK_TIMEOUT: Duration = Duration::from_secs(30);
/// Checkpoints kept for a failing sink at most (the oldest go first).
const BACKLOG_MAX: usize = 10_000;
/// Intervals without a checkpoint, while the chain grew, before the alarm.
const ALARM_AFTER: u32 = 3;
/// How often [`Checkpointer::run`] walks the rows appended since the last step, between
/// rounds ([`Checkpointer::step`]): at 200 arrivals a second about 800 rows, a few
/// milliseconds, where a round a minute apart walked about 48,000 at once (docs/performance.md,
/// "Checkpoint cost inside the run").
pub const STEP_EVERY: Duration = Duration::from_secs(1);

/// What a round did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Signed and written to at least one sink.
    Written(Box<Checkpoint>),
    /// The chain has not grown since the newest checkpoint.
    Unchanged,
    /// Another broker holds the writer's lock.
    OtherBroker,
}

/// A round that could not write.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// The chain (or the previous checkpoint) does not verify: nothing is signed.
    #[error("{0}")]
    Refused(String),
    /// No sink took the checkpoint.
    #[error("no sink took checkpoint {0}: {1}")]
    Sinks(u64, String),
    /// Signing failed.
    #[error("cannot sign checkpoint: {0}")]
    Sign(String),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] StoreError),
}

/// A sink's state, for `/readyz` and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkStatus {
    /// `s3://…` or `file://…`.
    pub name: String,
    /// Whether its last write succeeded.
    pub ok: bool,
    /// The last error, while it lasts.
    pub error: Option<String>,
    /// Checkpoints not yet written to it.
    pub backlog: usize,
}

/// The writer's state, for `/readyz`, the metrics and the pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Each sink.
    pub sinks: Vec<SinkStatus>,
    /// The newest checkpoint recorded (by any broker), as of the last round.
    pub newest: Option<jit_api::CheckpointInfo>,
    /// Why the alarm is raised, while it is.
    pub alarm: Option<String>,
}

struct Slot {
    sink: Sink,
    backlog: Vec<Checkpoint>,
}

/// The writer of one broker.
pub struct Checkpointer {
    signer: Arc<dyn Signer>,
    every: Duration,
    broker_id: String,
    security_emails: Vec<String>,
    /// One round at a time; the sinks and what was written but not recorded.
    inner: Mutex<Inner>,
    status: SyncMutex<Status>,
    /// When this writer started (the alarm's clock before any checkpoint exists).
    started_ms: SyncMutex<Option<i64>>,
}

struct Inner {
    slots: Vec<Slot>,
    /// Written to a sink, not yet in `audit_checkpoints` (the insert failed).
    unrecorded: Option<Checkpoint>,
    /// PostgreSQL: one writer at a time across brokers.
    lock: WriterLock,
    /// How far the steps between rounds walked the chain after this writer's last checkpoint.
    walked: Option<Walked>,
}

/// The chain after checkpoint `after` (its hash), walked to row `seq` (whose stored hash is
/// `hash`) in `rows` rows: what the next round need not walk again ([`Checkpointer::step`]).
struct Walked {
    after: String,
    seq: i64,
    hash: String,
    rows: u64,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("key", &self.signer.public_key().key_id())
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// The writer `[audit]` configures; none without a signing key.
    pub async fn from_config(config: &Config) -> anyhow::Result<Option<Arc<Self>>> {
        let audit = &config.audit;
        let Some(raw) = &audit.signing_key else {
            return Ok(None);
        };
        let signer = super::keys::load_signer(raw, config.aws.as_ref())
            .await
            .map_err(|e| anyhow::anyhow!("config: `audit.signing_key`: {e}"))?;
        let retention = u64::from(audit.checkpoint_retention_days) * 86_400;
        let mut sinks = Vec::new();
        for text in &audit.checkpoint_sinks {
            let spec = SinkSpec::parse(text)
                .map_err(|e| anyhow::anyhow!("config: `audit.checkpoint_sinks`: {e}"))?;
            sinks.push(
                Sink::open(&spec, config.aws.as_ref(), retention)
                    .await
                    .map_err(|e| anyhow::anyhow!("config: `audit.checkpoint_sinks`: {e}"))?,
            );
        }
        let every = audit.checkpoint_every.duration();
        Ok(Some(Arc::new(Self::new(
            signer,
            sinks,
            every,
            audit.broker_id(),
            config.notify.security_emails.clone(),
        ))))
    }

    /// A writer over `sinks`.
    pub fn new(
        signer: Arc<dyn Signer>,
        sinks: Vec<Sink>,
        every: Duration,
        broker_id: String,
        security_emails: Vec<String>,
    ) -> Self {
        let status = Status {
            sinks: sinks
                .iter()
                .map(|s| SinkStatus {
                    name: s.name(),
                    ok: true,
                    error: None,
                    backlog: 0,
                })
                .collect(),
            newest: None,
            alarm: None,
        };
        Self {
            signer,
            every,
            broker_id,
            security_emails,
            inner: Mutex::new(Inner {
                slots: sinks
                    .into_iter()
                    .map(|sink| Slot {
                        sink,
                        backlog: Vec::new(),
                    })
                    .collect(),
                unrecorded: None,
                walked: None,
                lock: WriterLock::default(),
            }),
            status: SyncMutex::new(status),
            started_ms: SyncMutex::new(None),
        }
    }

    /// The public key of this broker's signing key.
    pub fn public_key(&self) -> &PublicKey {
        self.signer.public_key()
    }

    /// How often it runs.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// The state as of the last round.
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One round at time `now_ms` (see the module's documentation).
    pub async fn round(&self, store: &Store, now_ms: i64) -> Result<Outcome, RoundError> {
        let started = std::time::Instant::now();
        let mut inner = self.inner.lock().await;
        self.started_ms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(now_ms);
        // PostgreSQL: one writer at a time across brokers, for the whole round, the sinks'
        // writes and the record included. SQLite has one broker, and its write lock must not
        // be held across a round.
        let Some(held) = inner.lock.try_lock(store).await? else {
            // The other broker writes the next checkpoint, and a walk anchored on this one's
            // would be thrown away by its next round (it no longer follows the newest): no
            // steps until this broker writes again.
            inner.walked = None;
            return Ok(Outcome::OtherBroker);
        };
        let result = self.locked_round(store, &mut inner, now_ms).await;
        if let Err(e) = inner.lock.release(held).await {
            // Its connection closed: PostgreSQL released the lock with it.
            warn!(error = %e, "cannot release the checkpoint writer's lock; its connection is closed");
        }
        self.update_sinks(&inner);
        crate::metrics::observe("jit_audit_checkpoint_seconds", &[], started.elapsed());
        result
    }

    async fn locked_round(
        &self,
        store: &Store,
        inner: &mut Inner,
        now_ms: i64,
    ) -> Result<Outcome, RoundError> {
        let mut newest = checkpoints::newest(store).await?;
        // A checkpoint that reached a sink but not the database: record it first.
        if let Some(cp) = inner.unrecorded.take() {
            let follows = match &newest {
                Some(n) => n.number + 1 == cp.number && n.hash == cp.prev,
                None => cp.number == 1,
            };
            if follows {
                let stored = stored(&cp);
                checkpoints::insert(store, &stored).await?;
                newest = Some(stored);
            }
        }
        let (previous, trusted) = match &newest {
            Some(n) => {
                let (cp, trusted) = self.previous(n)?;
                (Some(cp), trusted)
            }
            None => (None, false),
        };
        self.set_newest(previous.as_ref());
        let (anchor_seq, anchor_hash) = previous
            .as_ref()
            .map_or((0, audit::GENESIS.to_owned()), |p| {
                (p.seq, p.head_hash.clone())
            });
        // What the steps since this writer's checkpoint walked already (their walk ends on a
        // row whose stored hash must still be the one they saw: the walk below starts there).
        let walked = inner
            .walked
            .take()
            .filter(|w| trusted && previous.as_ref().is_some_and(|p| p.hash == w.after))
            .map_or((anchor_seq, anchor_hash, 0), |w| (w.seq, w.hash, w.rows));
        // After a checkpoint this key signed, the rows up to it are what that checkpoint says
        // (off the host, where `verify --checkpoints` holds the table against every one): the
        // round walks the rows after it, and counts nothing else. Otherwise it counts the
        // whole table (docs/audit.md, "Writing them").
        let count = if trusted {
            audit::Count::Walked
        } else {
            audit::Count::All
        };
        let (report, head) = audit::verify_after(store, walked.0, &walked.1, count).await?;
        let Some(head) = head.filter(|_| report.ok) else {
            let at = report
                .first_bad_seq
                .map(|s| format!("first bad seq {s}: "))
                .unwrap_or_default();
            let after = previous
                .as_ref()
                .map(|p| format!(" after checkpoint {} (seq {})", p.number, p.seq))
                .unwrap_or_default();
            return Err(RoundError::Refused(format!(
                "the audit chain does not verify{after}: {at}{}; nothing is signed",
                report.problem.unwrap_or_default()
            )));
        };
        let seq = report.last_seq.unwrap_or(walked.0);
        if seq == anchor_seq {
            inner.walked = previous.as_ref().filter(|_| trusted).map(|p| Walked {
                after: p.hash.clone(),
                seq,
                hash: head,
                rows: 0,
            });
            self.flush(inner).await;
            return Ok(Outcome::Unchanged);
        }
        let event_count = event_count(previous.as_ref(), count, walked.2 + report.checked, seq)?;
        let claim = Claim {
            number: previous.as_ref().map_or(1, |p| p.number + 1),
            prev: previous
                .as_ref()
                .map_or_else(|| GENESIS.to_owned(), |p| p.hash.clone()),
            seq,
            head_hash: head,
            event_count,
            at: now_ms,
            broker_id: self.broker_id.clone(),
        };
        self.publish(store, inner, claim).await
    }

    /// Signs `claim`, writes it to the sinks and records it: the round's checkpoint.
    async fn publish(
        &self,
        store: &Store,
        inner: &mut Inner,
        claim: Claim,
    ) -> Result<Outcome, RoundError> {
        let cp = Checkpoint::sign(claim, self.signer.as_ref())
            .await
            .map_err(|e| RoundError::Sign(e.to_string()))?;
        for slot in &mut inner.slots {
            slot.backlog.push(cp.clone());
            if slot.backlog.len() > BACKLOG_MAX {
                slot.backlog.remove(0);
            }
        }
        let errors = self.flush(inner).await;
        let somewhere = inner
            .slots
            .iter()
            .any(|s| !s.backlog.iter().any(|b| b.number == cp.number));
        if !somewhere {
            // Nowhere off the host: forget it; the next round signs afresh.
            for slot in &mut inner.slots {
                slot.backlog.retain(|b| b.number != cp.number);
            }
            return Err(RoundError::Sinks(cp.number, errors.join("; ")));
        }
        if let Err(e) = checkpoints::insert(store, &stored(&cp)).await {
            inner.unrecorded = Some(cp);
            return Err(e.into());
        }
        self.set_newest(Some(&cp));
        inner.walked = Some(Walked {
            after: cp.hash.clone(),
            seq: cp.seq,
            hash: cp.head_hash.clone(),
            rows: 0,
        });
        info!(
            checkpoint.number = cp.number,
            checkpoint.seq = cp.seq,
            "audit checkpoint signed"
        );
        Ok(Outcome::Written(Box::new(cp)))
    }

    /// The previous checkpoint, from its stored form, and whether this broker's key signed it;
    /// one signed with this broker's key must verify with it (one from a key used before is
    /// taken as it is, but not trusted for its count: the sinks' chain of checkpoints, verified
    /// with every key, is what shows a forgery).
    fn previous(&self, stored: &Stored) -> Result<(Checkpoint, bool), RoundError> {
        let refuse = |why: String| {
            RoundError::Refused(format!(
                "the newest checkpoint in the database ({}) cannot be used: {why}; nothing is signed",
                stored.number
            ))
        };
        let cp =
            Checkpoint::from_json(&stored.body, "audit_checkpoints").map_err(|e| refuse(e.0))?;
        if cp.number != stored.number || cp.hash != stored.hash || cp.seq != stored.seq {
            return Err(refuse("its row does not match its body".to_owned()));
        }
        let ours = cp.key_id == self.signer.public_key().key_id();
        if ours {
            cp.verify(self.signer.public_key())
                .map_err(|e| refuse(e.0))?;
        } else if cp.claim().hash() != cp.hash {
            return Err(refuse("its fields do not match its hash".to_owned()));
        }
        Ok((cp, ours))
    }

    /// Writes each sink's backlog, oldest first; returns the errors met.
    async fn flush(&self, inner: &mut Inner) -> Vec<String> {
        // Each sink's error, in the order of the slots (and of `status.sinks`).
        let mut failed: Vec<Option<String>> = Vec::with_capacity(inner.slots.len());
        for slot in &mut inner.slots {
            let name = slot.sink.name();
            let mut error = None;
            while let Some(cp) = slot.backlog.first() {
                let result = tokio::time::timeout(SINK_TIMEOUT, slot.sink.put(cp))
                    .await
                    .unwrap_or_else(|_| {
                        Err(SinkError::Io(format!(
                            "no answer within {}s",
                            SINK_TIMEOUT.as_secs()
                        )))
                    });
                match result {
                    Ok(()) => {
                        crate::metrics::inc("jit_audit_checkpoints_total", &[("sink", &name)]);
                        slot.backlog.remove(0);
                    }
                    Err(e) => {
                        crate::metrics::inc(
                            "jit_audit_checkpoint_errors_total",
                            &[("sink", &name)],
                        );
                        warn!(sink = %slot.sink.name(), error = %e, "cannot write an audit checkpoint; will retry");
                        error = Some(format!("{}: {e}", slot.sink.name()));
                        if matches!(e, SinkError::Conflict(_)) {
                            // Retrying cannot help; the alarm and the log say it.
                            slot.backlog.remove(0);
                        }
                        break;
                    }
                }
            }
            failed.push(error);
        }
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        for (s, error) in status.sinks.iter_mut().zip(&failed) {
            s.ok = error.is_none();
            s.error.clone_from(error);
        }
        failed.into_iter().flatten().collect()
    }

    fn update_sinks(&self, inner: &Inner) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, slot) in inner.slots.iter().enumerate() {
            if let Some(s) = status.sinks.get_mut(i) {
                s.backlog = slot.backlog.len();
            }
        }
    }

    fn set_newest(&self, cp: Option<&Checkpoint>) {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .newest = cp.map(Checkpoint::to_api);
    }

    /// Why the alarm should be raised at `now_ms`, if it should: a round refused to sign, or
    /// no checkpoint for [`ALARM_AFTER`] intervals while the chain grew.
    async fn alarm_reason(
        &self,
        store: &Store,
        now_ms: i64,
        round: &Result<Outcome, RoundError>,
    ) -> Result<Option<String>, StoreError> {
        if let Err(RoundError::Refused(why)) = round {
            return Ok(Some(why.clone()));
        }
        let newest = checkpoints::newest(store).await?;
        let head = audit::head_seq(store).await?;
        let covered = newest.as_ref().map_or(0, |n| n.seq);
        if head.unwrap_or(0) <= covered {
            return Ok(None);
        }
        let since = match &newest {
            Some(n) => Checkpoint::from_json(&n.body, "audit_checkpoints")
                .map_or(0, |c| crate::clock::to_ms(c.at)),
            None => self
                .started_ms
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .unwrap_or(now_ms),
        };
        let limit =
            i64::try_from(self.every.as_millis() * u128::from(ALARM_AFTER)).unwrap_or(i64::MAX);
        if now_ms - since <= limit {
            return Ok(None);
        }
        let last = match round {
            Err(e) => format!(": {e}"),
            Ok(_) => String::new(),
        };
        Ok(Some(format!(
            "no audit checkpoint has been written for {}s while the chain grew to seq {}{last}",
            (now_ms - since) / 1000,
            head.unwrap_or(0)
        )))
    }

    /// Raises or clears the alarm after a round.
    async fn check_alarm(
        &self,
        store: &Store,
        now_ms: i64,
        round: &Result<Outcome, RoundError>,
        notifier: &crate::notify::Notifier,
    ) {
        let reason = match self.alarm_reason(store, now_ms, round).await {
            Ok(reason) => reason,
            Err(e) => Some(format!("cannot check the audit checkpoints: {e}")),
        };
        let was = std::mem::replace(
            &mut self
                .status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .alarm,
            reason.clone(),
        );
        match (was, reason) {
            (None, Some(why)) => {
                error!(alarm = %why, "audit checkpoint alarm");
                notifier
                    .alert(
                        &self.security_emails,
                        "audit checkpoint alarm",
                        &format!(
                            "The jit broker {} raised the audit checkpoint alarm:\n\n{why}\n\n\
                             Signed checkpoints of the audit log are not being written off the \
                             database host. See /readyz and the broker's log.",
                            self.broker_id
                        ),
                    )
                    .await;
            }
            (Some(_), None) => info!("audit checkpoint alarm cleared"),
            (Some(_), Some(why)) => error!(alarm = %why, "audit checkpoint alarm persists"),
            (None, None) => {}
        }
    }

    /// Runs rounds every interval until `stop`, then a last one (the shutdown checkpoint).
    pub async fn run(self: Arc<Self>, app: crate::service::App, mut stop: watch::Receiver<bool>) {
        info!(
            every_s = self.every.as_secs(),
            sinks = self.status().sinks.len(),
            "audit checkpoints started"
        );
        let mut round_at = tokio::time::Instant::now() + self.every;
        loop {
            let step_at = tokio::time::Instant::now() + STEP_EVERY;
            tokio::select! {
                () = tokio::time::sleep_until(step_at.min(round_at)) => {}
                _ = stop.changed() => break,
            }
            if tokio::time::Instant::now() < round_at {
                if let Err(e) = self.step(&app.store).await {
                    warn!(error = %e, "audit checkpoint step failed; the round walks it again");
                }
                continue;
            }
            // Logged and alarmed there.
            let _ = self.tick(&app).await;
            round_at = tokio::time::Instant::now() + self.every;
        }
        // The last checkpoint covers every event committed before the stop: on PostgreSQL
        // the newest may still wait for a sealer round.
        let last = async {
            if let Err(e) = crate::store::audit::caught_up(&app.store).await {
                error!(error = %e, "audit chain did not catch up before the shutdown checkpoint");
            }
            self.round(&app.store, app.now_ms()).await
        };
        match tokio::time::timeout(SINK_TIMEOUT, last).await {
            Ok(Ok(Outcome::Written(cp))) => {
                info!(checkpoint.number = cp.number, "shutdown checkpoint written");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => error!(error = %e, "shutdown checkpoint failed"),
            Err(_) => error!("shutdown checkpoint took too long"),
        }
    }

    /// Walks the rows appended since this writer's last checkpoint (or since the last step),
    /// as the next round would, so that the round walks only what came after: the walk's cost
    /// comes in small steps over the interval ([`STEP_EVERY`]) instead of at once. Nothing
    /// before a checkpoint of this broker's key (the first round counts the whole table),
    /// nor while another broker writes them, nor while a round runs. A walk that meets a bad row forgets the steps: the next round
    /// walks from its checkpoint again, and refuses there.
    pub async fn step(&self, store: &Store) -> Result<(), StoreError> {
        let Ok(mut inner) = self.inner.try_lock() else {
            return Ok(());
        };
        let Some(w) = inner.walked.as_mut() else {
            return Ok(());
        };
        let (report, head) =
            audit::verify_after(store, w.seq, &w.hash, audit::Count::Walked).await?;
        match (report.last_seq, head) {
            (Some(seq), Some(head)) if report.ok => {
                w.rows += report.checked;
                w.seq = seq;
                w.hash = head;
            }
            (None, Some(_)) if report.ok => {}
            _ => inner.walked = None,
        }
        Ok(())
    }

    /// The seq up to which the steps between rounds walked the chain after this writer's
    /// last checkpoint; `None` when they do not walk (no checkpoint of this writer's yet,
    /// another broker writes them, or a round runs).
    pub fn steps_walked_to(&self) -> Option<i64> {
        self.inner.try_lock().ok()?.walked.as_ref().map(|w| w.seq)
    }

    /// One round at the broker's time, its failure logged, and the alarm check: what
    /// [`Checkpointer::run`] does each interval.
    pub async fn tick(&self, app: &crate::service::App) -> Result<Outcome, RoundError> {
        let now = app.now_ms();
        let result = self.round(&app.store, now).await;
        if let Err(e) = &result {
            error!(error = %e, "audit checkpoint round failed");
        }
        self.check_alarm(&app.store, now, &result, &app.notifier)
            .await;
        result
    }
}

fn stored(cp: &Checkpoint) -> Stored {
    Stored {
        number: cp.number,
        seq: cp.seq,
        hash: cp.hash.clone(),
        body: cp.to_json(),
    }
}

/// The rows from 1 to `seq` the new checkpoint claims: after a checkpoint of this broker's key,
/// whose rows were not counted again ([`audit::Count::Walked`]), the previous checkpoint's count
/// plus the rows walked, which must run from its `seq` to `seq` without a gap; otherwise `seq`
/// (the whole table was counted: none missing before the walk).
fn event_count(
    previous: Option<&Checkpoint>,
    count: audit::Count,
    walked: u64,
    seq: i64,
) -> Result<u64, RoundError> {
    match (previous, count) {
        (Some(p), audit::Count::Walked) if i64::try_from(walked) == Ok(seq - p.seq) => {
            Ok(p.event_count + walked)
        }
        (Some(p), audit::Count::Walked) => Err(RoundError::Refused(format!(
            "the audit chain after checkpoint {} (seq {}) walked {walked} rows to seq {seq}; \
             nothing is signed",
            p.number, p.seq
        ))),
        _ => Ok(u64::try_from(seq).unwrap_or(0)),
    }
}
