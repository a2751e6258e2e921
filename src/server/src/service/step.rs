//! The step every change of a request takes: the move of its state, the audit event that
//! says so and the notifications it causes, all in the caller's one transaction (so a
//! change whose event cannot be written does not happen).

use jit_api::RequestState;
use uuid::Uuid;

use super::outbox::Told;
use super::{App, ServiceError};
use crate::domain::{self, Event};
use crate::notify::NotificationKind;
use crate::store::Tx;
use crate::store::audit::NewEvent;
use crate::store::requests::{self as store, Changes, RequestRow};

/// What a step of a request records ([`App::record_step`]).
pub(crate) struct Step<'a> {
    /// Who acted: a user's email, or `system`.
    pub actor: &'a str,
    /// The audit action: `grant.activated`, `request.denied`, …
    pub action: &'a str,
    /// The audit event's details.
    pub data: serde_json::Value,
    /// Whom to tell what; `None`: nobody is told.
    pub notice: Option<Notice<'a>>,
}

/// The notifications of a step ([`Told`] without the event, which the step writes).
pub(crate) struct Notice<'a> {
    /// Whom to tell what.
    pub kind: NotificationKind,
    /// Who acted, as the notifications name them; `None` for the broker itself.
    pub actor: Option<&'a str>,
    /// The actor's comment.
    pub comment: Option<&'a str>,
}

/// The state a request in `from` moves to on `event`; a conflict when its life does not
/// allow that move.
pub(crate) fn next_state(from: RequestState, event: Event) -> Result<RequestState, ServiceError> {
    domain::transition(from, event).map_err(|e| ServiceError::Conflict(e.into()))
}

impl App {
    /// Moves locked request `row` from its state to `to` with `changes`, then records `step`
    /// ([`App::record_step`]) in the same transaction; the event's id.
    pub(crate) async fn take_step(
        &self,
        tx: &mut Tx,
        row: &RequestRow,
        to: RequestState,
        changes: &Changes,
        step: Step<'_>,
    ) -> Result<Uuid, ServiceError> {
        store::set_state(tx, row.id, row.state, to, changes).await?;
        self.record_step(tx, row.id, &row.entitlement, step).await
    }

    /// Records `step` of request `id` (of `entitlement`) inside `tx`: its audit event, then
    /// the notifications of its notice, if any; the event's id.
    pub(crate) async fn record_step(
        &self,
        tx: &mut Tx,
        id: Uuid,
        entitlement: &str,
        step: Step<'_>,
    ) -> Result<Uuid, ServiceError> {
        let event_id = self
            .audit(
                tx,
                NewEvent {
                    actor: step.actor,
                    action: step.action,
                    request_id: Some(id),
                    entitlement: Some(entitlement),
                    data: step.data,
                },
            )
            .await?;
        if let Some(notice) = step.notice {
            self.notify(
                tx,
                id,
                Told {
                    kind: notice.kind,
                    event_id,
                    actor: notice.actor,
                    comment: notice.comment,
                    to_requester: true,
                },
            )
            .await?;
        }
        Ok(event_id)
    }
}
