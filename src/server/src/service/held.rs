//! Taking access away while the audit store fails (docs/audit.md, "Held
//! events"): a removal whose audit events cannot be written runs again with
//! them held in the spool ([`crate::store::held`]), and [`App::replay_held`]
//! moves them into the chain, in order, once the store takes them again.

use jit_api::RequestState;
use serde_json::Value;
use uuid::Uuid;

use super::{App, ServiceError};
use crate::clock::from_ms;
use crate::domain::UnixMs;
use crate::store::audit::{self, NewEvent};
use crate::store::held::{self, Change, HeldEvent};
use crate::store::requests::{self as store, Changes};
use crate::store::{StoreError, Tx};

impl ServiceError {
    /// The database refused a statement or a commit (the audit store
    /// failing among the possible causes): worth running a removal again
    /// with its events held.
    pub fn is_store_failure(&self) -> bool {
        match self {
            Self::Internal(e) => e
                .downcast_ref::<StoreError>()
                .is_some_and(|s| matches!(s, StoreError::Db(_) | StoreError::Sqlite(_))),
            _ => false,
        }
    }
}

impl App {
    /// Commits `tx`. When it held its audit events ([`Tx::hold_audit`]),
    /// they go to the spool first, on disk before the commit, with the
    /// `change` they record (made again at replay should this commit fail).
    pub(crate) async fn commit_holding(
        &self,
        mut tx: Tx,
        change: Option<Change>,
    ) -> Result<(), ServiceError> {
        let events = tx.take_held();
        if !events.is_empty() {
            self.hold(events, change).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records `event` in a transaction of its own ([`App::audit_alone`]) or, when the audit
    /// store fails, holds it in the spool: the same event either way, named as every event is
    /// (a bundle's lists its `members`), so the chain holds the same data whichever way it came.
    pub(crate) async fn audit_alone_or_hold(
        &self,
        event: NewEvent<'_>,
    ) -> Result<(), ServiceError> {
        let event = self.naming_members(event);
        match self.audit_alone(event.clone()).await {
            Err(e) if e.is_store_failure() => {
                self.hold(vec![HeldEvent::new(self.now_ms(), &event)], None)
                    .await
            }
            other => other,
        }
    }

    /// Puts `events` in the spool and says so loudly: one error line per
    /// event, a counter.
    pub(crate) async fn hold(
        &self,
        events: Vec<HeldEvent>,
        change: Option<Change>,
    ) -> Result<(), ServiceError> {
        let held = self
            .spool
            .hold(self.now_ms(), events, change)
            .await
            .map_err(|e| ServiceError::Internal(e.into()))?;
        for e in &held.events {
            crate::metrics::inc("jit_audit_held_total", &[]);
            tracing::error!(
                audit.action = %e.action,
                request.id = e.request_id.as_deref().unwrap_or(""),
                held.n = held.n,
                audit.spool = %self.spool.path().display(),
                "the audit store is failing: event held in the spool until it can be chained"
            );
        }
        Ok(())
    }

    /// Moves the held events into the chain, in the order they were held,
    /// and makes the state changes they record that did not commit; returns
    /// how many records. Fails (and keeps them) while the audit store still
    /// refuses them.
    pub async fn replay_held(&self) -> Result<usize, ServiceError> {
        let waiting = self.spool.waiting();
        let Some(last) = waiting.last().map(|h| h.n) else {
            return Ok(0);
        };
        // A replay that committed but died before the spool said so.
        let mut todo = Vec::with_capacity(waiting.len());
        for h in waiting {
            if !held::in_chain(&self.store, &h).await? {
                todo.push(h);
            }
        }
        let now_ms = self.now_ms();
        let mut tx = self.store.begin().await?;
        for h in &todo {
            if let Some(change) = &h.change {
                self.remake(&mut tx, change, now_ms).await?;
            }
            for e in &h.events {
                let mut data = e.data.clone();
                if let Value::Object(map) = &mut data {
                    map.insert("held".to_owned(), h.mark());
                } else {
                    data = serde_json::json!({ "value": data, "held": h.mark() });
                }
                let request_id = e.request_id.as_deref().and_then(|r| r.parse::<Uuid>().ok());
                audit::append(
                    &mut tx,
                    from_ms(e.at),
                    NewEvent {
                        actor: &e.actor,
                        action: &e.action,
                        request_id,
                        entitlement: e.entitlement.as_deref(),
                        data,
                    },
                )
                .await?;
            }
        }
        tx.commit().await?;
        self.spool
            .replayed(last)
            .await
            .map_err(|e| ServiceError::Internal(e.into()))?;
        tracing::warn!(
            records = todo.len(),
            through = last,
            "the audit store works again: held events chained"
        );
        self.wake.notify_one();
        Ok(todo.len())
    }

    /// Makes a held state change that did not commit (a no-op when it did).
    async fn remake(&self, tx: &mut Tx, change: &Change, now_ms: i64) -> Result<(), ServiceError> {
        if let Change::All { changes } = change {
            for one in changes {
                self.remake_one(tx, one, now_ms).await?;
            }
            return Ok(());
        }
        self.remake_one(tx, change, now_ms).await
    }

    /// [`App::remake`] of one change (an `All` inside an `All` is not made).
    async fn remake_one(
        &self,
        tx: &mut Tx,
        change: &Change,
        now_ms: i64,
    ) -> Result<(), ServiceError> {
        match change {
            Change::Ended {
                request,
                from,
                to,
                at,
            } => {
                let (Ok(id), Ok(from), Ok(to)) =
                    (request.parse::<Uuid>(), from.parse(), to.parse())
                else {
                    return Ok(());
                };
                let ended = store::change_state(
                    tx,
                    id,
                    from,
                    to,
                    &Changes {
                        ended_at: Some(UnixMs::from_millis(*at)),
                        ..Changes::default()
                    },
                )
                .await?;
                // Only a grant that may exist has something to remove (a cancelled pending
                // extension has none).
                if ended && matches!(from, RequestState::Approved | RequestState::Active) {
                    self.queue_deprovision(tx, id, now_ms).await?;
                }
            }
            Change::Deprovisioned { request, at } => {
                if let Ok(id) = request.parse::<Uuid>() {
                    store::set_deprovisioned(tx, id, *at).await?;
                }
            }
            Change::All { .. } => {}
        }
        Ok(())
    }
}
