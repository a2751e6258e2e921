//! Scheduled access (SPEC §10): a request with `start_at` is approved in advance and waits as
//! `scheduled`; its activation job comes due at `start_at` and starts it here, then makes the
//! grant as for any approved request. Its window is `start_at` to `start_at + duration`,
//! whenever the broker gets to it: a start that comes too late (the broker was down, or the
//! last approval arrived after the window) fails the request instead of granting past it.

use jit_api::RequestState;
use serde_json::json;

use super::grants::JobOutcome;
use super::step::{Notice, Step, next_state};
use super::{App, ServiceError};
use crate::domain::{Event, UnixMs};
use crate::notify::NotificationKind;
use crate::store::jobs::{self, Job};
use crate::store::requests::{self as store, Changes, RequestRow};

/// What starting a scheduled request came to.
pub(super) enum Started {
    /// Started (now `approved`): make the grant.
    Grant(Box<RequestRow>),
    /// Nothing to grant (cancelled before, or its window is over); the job is done.
    Done(JobOutcome),
}

impl App {
    /// Starts scheduled request `row` when its activation job comes due: `scheduled →
    /// approved` with its `request.started` event, in one transaction.
    pub(super) async fn start_scheduled(
        &self,
        job: &Job,
        row: &RequestRow,
    ) -> Result<Started, ServiceError> {
        let now = self.now_unix();
        let mut tx = self.store.begin().await?;
        let current = store::lock(&self.store, &mut tx, row.id).await?;
        if current.state != RequestState::Scheduled {
            // Cancelled before it started.
            jobs::complete(&mut tx, job.id, now.millis()).await?;
            tx.commit().await?;
            return Ok(Started::Done(JobOutcome::Done));
        }
        let start = current.start_at.unwrap_or(now);
        if start > now {
            // Claimed early (a clock moved back): wait for the start.
            tx.rollback().await?;
            return Ok(Started::Done(JobOutcome::NotYet(start.millis())));
        }
        let ends = start.plus_secs(current.duration_secs);
        if ends <= now {
            self.fail_grant(&mut tx, job, &current, window_over(ends))
                .await?;
            tx.commit().await?;
            return Ok(Started::Done(JobOutcome::Done));
        }
        let to = next_state(current.state, Event::Start)?;
        let step = Step {
            actor: "system",
            action: "request.started",
            data: json!({ "start_at": start.to_string(), "expires_at": ends.to_string() }),
            notice: None,
        };
        self.take_step(&mut tx, &current, to, &Changes::default(), step)
            .await?;
        tx.commit().await?;
        Ok(Started::Grant(Box::new(RequestRow {
            state: to,
            ..current
        })))
    }

    /// Fails locked request `row` (approved, or scheduled) whose grant cannot be made, for
    /// `reason`, with its `grant.failed` event and notification, and completes its activation
    /// `job`.
    pub(super) async fn fail_grant(
        &self,
        tx: &mut crate::store::Tx,
        job: &Job,
        row: &RequestRow,
        reason: String,
    ) -> Result<(), ServiceError> {
        let now_ms = self.now_ms();
        let to = next_state(row.state, Event::Fail)?;
        let changes = Changes {
            ended_at: Some(UnixMs::from_millis(now_ms)),
            failure_reason: Some(reason.clone()),
            ..Changes::default()
        };
        let step = Step {
            actor: "system",
            action: "grant.failed",
            data: json!({ "reason": reason, "attempts": job.failure_number() }),
            notice: Some(Notice {
                kind: NotificationKind::GrantFailed,
                actor: None,
                comment: None,
            }),
        };
        self.take_step(tx, row, to, &changes, step).await?;
        // A bundle's failed grant may leave a member whose roll-back failed (PIM refuses a
        // removal in an assignment's first five minutes), and an earlier run of the job may
        // have made the grant: a cloud call that failed may have succeeded all the same (a
        // time-out), and a broker that stopped mid-call left no record. Then the removal is
        // queued, and repeated until it succeeds. A first run that failed made nothing.
        let bundle = self
            .policy
            .catalog
            .get(&row.entitlement)
            .is_some_and(|e| e.kind == crate::policy::Kind::Bundle);
        if bundle || job.attempts > 1 {
            self.queue_deprovision(tx, row.id, now_ms).await?;
        } else {
            store::set_deprovisioned(tx, row.id, now_ms).await?;
        }
        jobs::complete(tx, job.id, now_ms).await?;
        Ok(())
    }
}

/// Why a scheduled request whose window ended at `ends` is not granted.
pub(super) fn window_over(ends: UnixMs) -> String {
    format!("its window ended at {ends} before the grant could be made")
}
