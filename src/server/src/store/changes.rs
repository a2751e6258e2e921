//! Word that a request changed state, for clients waiting on it (the long
//! poll of `GET /api/v1/requests/{id}?wait=…`) instead of polling.
//!
//! A state change ([`super::requests::change_state`]) notes the request in
//! its transaction; only once the transaction has committed
//! ([`super::Tx::commit`]) are the waiters on this broker woken, so a waiter
//! that re-reads always sees the change. On PostgreSQL the broker also tells
//! the others sharing the database: after the commit, `pg_notify` on
//! [`CHANNEL`] with the request ids, sent from a task of its own (commits
//! close together go in one notification), and every broker `LISTEN`s on a
//! connection of its own and wakes its waiters. A notification can be lost
//! (the broker stops between commit and send, the listening connection
//! drops): a waiter therefore re-reads at least every
//! `server.long_poll_reread` (5 s) anyway, and when the listening connection is lost and made again, every
//! waiter re-reads at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::{Notify, mpsc, watch};
use uuid::Uuid;

/// The PostgreSQL channel of state changes. Payload: the sending broker's id,
/// then the request ids, separated by spaces.
pub const CHANNEL: &str = "jit_request_changes";

/// Request ids per notification: a payload stays far below PostgreSQL's
/// 8000-byte limit.
const IDS_PER_NOTIFY: usize = 100;

/// How long the listener waits before connecting again after a failure.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The waiters of one broker, by request.
pub struct Changes {
    /// Tags this broker's notifications, so it does not wake its waiters twice.
    broker: Uuid,
    waiters: Mutex<HashMap<Uuid, Arc<Notify>>>,
    /// Set when the broker stops: waits end at once.
    ending: AtomicBool,
    /// PostgreSQL, once [`Changes::listen`] ran: ids for other brokers.
    outbound: OnceLock<mpsc::UnboundedSender<Vec<Uuid>>>,
    /// Dropped or set to stop the listener.
    stop: OnceLock<watch::Sender<bool>>,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes")
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

/// A waiter's interest in one request, from [`Changes::watch`]; dropped, it
/// is forgotten.
pub struct Watch {
    changes: Arc<Changes>,
    id: Uuid,
    notify: Arc<Notify>,
}

impl Watch {
    /// Resolves at the next change of the request after this call (or when
    /// the broker stops). Enable it (`Notified::enable`) before reading the
    /// request, so a change between the read and the wait is not missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// The broker is stopping: answer now.
    pub fn ending(&self) -> bool {
        self.changes.ending.load(Ordering::Acquire)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut waiters = self.changes.lock();
        // Clones are made only under the lock: the map's and this one left.
        if Arc::strong_count(&self.notify) <= 2 {
            waiters.remove(&self.id);
        }
    }
}

impl Default for Changes {
    fn default() -> Self {
        Self::new()
    }
}

impl Changes {
    /// A hub with an id of its own.
    pub fn new() -> Self {
        Self {
            broker: Uuid::new_v4(),
            waiters: Mutex::default(),
            ending: AtomicBool::new(false),
            outbound: OnceLock::new(),
            stop: OnceLock::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Notify>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts waiting for changes of request `id`.
    pub fn watch(self: &Arc<Self>, id: Uuid) -> Watch {
        let notify = self.lock().entry(id).or_default().clone();
        Watch {
            changes: self.clone(),
            id,
            notify,
        }
    }

    /// How many requests have waiters (for tests).
    pub fn watched(&self) -> usize {
        self.lock().len()
    }

    /// Wakes the waiters of `ids` on this broker.
    fn wake(&self, ids: impl IntoIterator<Item = Uuid>) {
        let waiters = self.lock();
        for id in ids {
            if let Some(n) = waiters.get(&id) {
                n.notify_waiters();
            }
        }
    }

    /// Wakes every waiter: they read their request again.
    fn wake_all(&self) {
        for n in self.lock().values() {
            n.notify_waiters();
        }
    }

    /// The requests `ids` changed and the change committed: wakes their
    /// waiters here and, on PostgreSQL, tells the other brokers.
    pub(crate) fn committed(&self, ids: Vec<Uuid>) {
        if ids.is_empty() {
            return;
        }
        self.wake(ids.iter().copied());
        if let Some(out) = self.outbound.get() {
            // The sender is gone only when the broker stops.
            let _ = out.send(ids);
        }
    }

    /// The broker is stopping: every wait answers now, and so do later ones.
    pub fn end_waits(&self) {
        self.ending.store(true, Ordering::Release);
        self.wake_all();
    }

    /// Stops the PostgreSQL listener and sender, if running.
    pub(crate) fn stop(&self) {
        if let Some(stop) = self.stop.get() {
            let _ = stop.send(true);
        }
    }

    /// PostgreSQL: listens for the other brokers' changes and sends this
    /// broker's, on two connections of their own (not the pool's). Runs
    /// until [`Changes::stop`] or the hub is dropped; connection failures are
    /// logged and retried. Only the first call starts anything.
    pub(crate) async fn listen(
        self: &Arc<Self>,
        options: &PgConnectOptions,
    ) -> Result<(), sqlx::Error> {
        let (stop_tx, stop_rx) = watch::channel(false);
        if self.stop.set(stop_tx).is_err() {
            return Ok(());
        }
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        // Set once: `stop` above was unset, so this is the first call.
        let _ = self.outbound.set(tx);
        tokio::spawn(receive(Arc::downgrade(self), listener, stop_rx.clone()));
        tokio::spawn(send(self.broker, pool, rx, stop_rx));
        Ok(())
    }
}

/// Wakes this broker's waiters for what other brokers changed.
async fn receive(
    changes: Weak<Changes>,
    mut listener: PgListener,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            next = listener.try_recv() => next,
            _ = stop.changed() => return,
        };
        let Some(changes) = changes.upgrade() else {
            return;
        };
        match next {
            Ok(Some(n)) => {
                let mut parts = n.payload().split(' ');
                if parts.next() == Some(changes.broker.to_string().as_str()) {
                    continue;
                }
                changes.wake(parts.filter_map(|p| Uuid::parse_str(p).ok()));
            }
            // The connection was lost (and made again): what was sent
            // meanwhile is lost, so every waiter reads again.
            Ok(None) => changes.wake_all(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for request changes; retrying");
                changes.wake_all();
                drop(changes);
                tokio::select! {
                    () = tokio::time::sleep(RECONNECT_AFTER) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// Sends this broker's changes to the others, those that came together in
/// one notification.
async fn send(
    broker: Uuid,
    pool: PgPool,
    mut rx: mpsc::UnboundedReceiver<Vec<Uuid>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ids = Vec::new();
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(more) => ids.extend(more),
                None => break,
            },
            _ = stop.changed() => break,
        }
        while let Ok(more) = rx.try_recv() {
            ids.extend(more);
        }
        for chunk in ids.chunks(IDS_PER_NOTIFY) {
            let payload = std::iter::once(broker)
                .chain(chunk.iter().copied())
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(" ");
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(payload)
                .execute(&pool)
                .await
            {
                // The waiters elsewhere read again within `server.long_poll_reread`.
                tracing::warn!(error = %e, "cannot tell other brokers of a request change");
            }
        }
        ids.clear();
    }
    pool.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commit_wakes_the_waiters_of_its_requests_only() {
        let changes = Arc::new(Changes::new());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let wa = changes.watch(a);
        let wb = changes.watch(b);
        let wa2 = changes.watch(a);
        assert_eq!(changes.watched(), 2);
        {
            let mut fa = std::pin::pin!(wa.changed());
            fa.as_mut().enable();
            let mut fa2 = std::pin::pin!(wa2.changed());
            fa2.as_mut().enable();
            let mut fb = std::pin::pin!(wb.changed());
            fb.as_mut().enable();
            changes.committed(vec![a]);
            let ms = Duration::from_millis(50);
            assert!(tokio::time::timeout(ms, fa).await.is_ok());
            assert!(tokio::time::timeout(ms, fa2).await.is_ok());
            assert!(tokio::time::timeout(ms, fb).await.is_err());
        }
        drop(wa);
        assert_eq!(changes.watched(), 2, "another waiter still watches `a`");
        drop(wa2);
        drop(wb);
        assert_eq!(changes.watched(), 0);
    }

    #[tokio::test]
    async fn ending_wakes_everyone() {
        let changes = Arc::new(Changes::new());
        let w = changes.watch(Uuid::new_v4());
        let mut f = std::pin::pin!(w.changed());
        f.as_mut().enable();
        assert!(!w.ending());
        changes.end_waits();
        assert!(w.ending());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), f)
                .await
                .is_ok()
        );
    }
}
