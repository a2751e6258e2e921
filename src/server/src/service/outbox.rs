//! The transactional outbox: notifications are written as jobs in the same
//! transaction as the event that causes them, one job per channel, keyed by
//! an id of the event so an event is never queued twice; the
//! scheduler delivers them with retries, so a mail server or webhook that is
//! down only delays them.

use serde_json::json;
use uuid::Uuid;

use super::requests::RequestView;
use super::{App, ServiceError};
use crate::domain::UnixMs;
use crate::notify::{Audience, Delivery, Notification, NotificationKind};
use crate::store::Tx;
use crate::store::audit::NewEvent;
use crate::store::jobs::{self, Job, JobKind};
use crate::store::requests as store;

/// What the event was and who acted.
pub struct Told<'a> {
    /// Kind.
    pub kind: NotificationKind,
    /// The event's id ([`App::audit`]).
    pub event_id: Uuid,
    /// Who acted.
    pub actor: Option<&'a str>,
    /// Their comment.
    pub comment: Option<&'a str>,
    /// Whether the requester is told, as the kind says; `false`: only the others the kind names
    /// (an action that ends several requests tells the requester once, of the request named).
    pub to_requester: bool,
}

impl<'a> Told<'a> {
    /// `kind` of the event `event_id`, done by `actor` with `comment`, told to whom the kind
    /// names.
    pub fn by(
        actor: &'a str,
        kind: NotificationKind,
        event_id: Uuid,
        comment: Option<&'a str>,
    ) -> Self {
        Self {
            kind,
            event_id,
            actor: Some(actor),
            comment,
            to_requester: true,
        }
    }

    /// The same, told to all the kind names but the requester.
    #[must_use]
    pub fn not_to_requester(self) -> Self {
        Self {
            to_requester: false,
            ..self
        }
    }
}

impl App {
    /// Queues the notifications of an event on request `id`, inside the event's transaction.
    pub async fn notify(&self, tx: &mut Tx, id: Uuid, told: Told<'_>) -> Result<(), ServiceError> {
        if !self.notifier.is_configured() {
            return Ok(());
        }
        let row = store::lock(&self.store, tx, id).await?;
        let approvals = store::approvals_tx(tx, id).await?;
        let view = RequestView {
            target: self.describe(&row.entitlement),
            row,
            approvals,
        };
        let now = self.now_ms();
        for (payload, key) in self.notifications(&view, &told)? {
            jobs::enqueue(
                tx,
                JobKind::Notify,
                Some(id),
                &payload,
                now,
                Some(&key),
                now,
            )
            .await?;
        }
        Ok(())
    }

    /// The notification jobs of an event on the request `view` shows, one per
    /// channel: each one's payload and dedupe key (none when no notifier is
    /// configured or the entitlement left the catalog).
    pub(crate) fn notifications(
        &self,
        view: &RequestView,
        told: &Told<'_>,
    ) -> Result<Vec<(String, String)>, ServiceError> {
        if !self.notifier.is_configured() {
            return Ok(Vec::new());
        }
        let Some(ent) = self.policy.catalog.get(&view.row.entitlement) else {
            return Ok(Vec::new());
        };
        let recipients = told.kind.recipients(
            &Audience {
                requester: &view.row.requester_email,
                tell_requester: told.to_requester,
                approvers: &ent.notify.email,
                security: &self.config.notify.security_emails,
            },
            told.actor,
        );
        let notification = Notification {
            kind: told.kind,
            request: view.to_api(),
            entitlement_title: ent.title.clone(),
            actor: told.actor.map(str::to_owned),
            comment: told.comment.map(str::to_owned),
            link: Notification::link_for(&self.config.server.public_url, view.row.id),
            recipients,
            teams: ent.notify.teams,
        };
        self.notifier
            .channels(&notification)
            .into_iter()
            .map(|channel| {
                let delivery = Delivery {
                    channel,
                    notification: notification.clone(),
                };
                let payload = serde_json::to_string(&delivery)
                    .map_err(|e| ServiceError::Internal(e.into()))?;
                Ok((payload, delivery.dedupe_key(&told.event_id.to_string())))
            })
            .collect()
    }

    /// Delivers one queued notification.
    pub(crate) async fn deliver(
        &self,
        job: &Job,
    ) -> Result<super::grants::JobOutcome, ServiceError> {
        let delivery: Delivery = serde_json::from_str(&job.payload)
            .map_err(|e| ServiceError::Internal(anyhow::anyhow!("bad outbox payload: {e}")))?;
        let now = self.now_ms();
        match self
            .notifier
            .deliver(&delivery.channel, &delivery.notification)
            .await
        {
            Ok(()) => {
                let mut tx = self.store.begin().await?;
                jobs::complete(&mut tx, job.id, now).await?;
                tx.commit().await?;
                Ok(super::grants::JobOutcome::Done)
            }
            Err(e) if e.is_transient() && job.failure_number() < 30 => {
                let wait = e.retry_after().map_or_else(
                    || super::grants::internal_retry_ms(job),
                    |d| i64::try_from(d.as_millis()).unwrap_or(3_600_000),
                );
                Ok(super::grants::JobOutcome::RetryAt(
                    now + wait,
                    format!("{} delivery failed: {e}", delivery.channel.name()),
                ))
            }
            Err(e) => {
                // Given up: say so in the audit log, once, and stop.
                let mut tx = self.store.begin().await?;
                self.audit(
                    &mut tx,
                    NewEvent {
                        actor: "system",
                        action: "notification.failed",
                        request_id: job.request_id,
                        entitlement: Some(&delivery.notification.request.entitlement),
                        data: json!({
                            "channel": delivery.channel.name(),
                            "kind": delivery.notification.kind,
                            "error": e.to_string(),
                            "attempts": job.failure_number(),
                        }),
                    },
                )
                .await?;
                jobs::complete(&mut tx, job.id, now).await?;
                tx.commit().await?;
                Ok(super::grants::JobOutcome::Done)
            }
        }
    }

    /// The "ends soon" reminder of a grant that just became active, to
    /// queue with its expiry; none when the grant is not longer than twice the
    /// reminder's lead (a reminder right after the grant is noise).
    pub(crate) fn expiry_warning_job(
        &self,
        id: Uuid,
        activated: UnixMs,
        ends: UnixMs,
    ) -> Option<jobs::NewJob<'static>> {
        let lead = super::requests::secs_ms(self.config.notify.expiry_warning.secs());
        (ends.millis() - activated.millis() > 2 * lead).then(|| jobs::NewJob {
            kind: JobKind::ExpiryWarning,
            request_id: Some(id),
            payload: "{}",
            due_at: ends.millis() - lead,
            dedupe_key: Some(format!("expiry_warning:{id}")),
        })
    }

    /// Runs an "ends soon" reminder: queues the notification if the grant still runs.
    pub(crate) async fn expiry_warning(
        &self,
        job: &Job,
        id: Uuid,
    ) -> Result<super::grants::JobOutcome, ServiceError> {
        let mut tx = self.store.begin().await?;
        let row = store::lock(&self.store, &mut tx, id).await?;
        let now = self.now_unix();
        if row.state == jit_api::RequestState::Active && row.expires_at.is_some_and(|e| e > now) {
            let event_id = self
                .audit(
                    &mut tx,
                    NewEvent {
                        actor: "system",
                        action: "grant.expiring_soon",
                        request_id: Some(id),
                        entitlement: Some(&row.entitlement),
                        data: json!({ "expires_at": row.expires_at.map(|t| t.to_string()) }),
                    },
                )
                .await?;
            self.notify(
                &mut tx,
                id,
                Told {
                    kind: NotificationKind::ExpiringSoon,
                    event_id,
                    actor: None,
                    comment: None,
                    to_requester: true,
                },
            )
            .await?;
        }
        jobs::complete(&mut tx, job.id, now.millis()).await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok(super::grants::JobOutcome::Done)
    }
}
