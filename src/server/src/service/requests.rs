//! Requests: create, decide, cancel, revoke, extend, review, read.

use jit_api::{CreateRequest, Decision, RequestState};
use serde_json::json;
use uuid::Uuid;

use super::outbox::Told;
use super::step::{Notice, Step, next_state};
use super::{App, Conflict, Forbidden, Missing, ServiceError};
use crate::domain::{self, Event, UnixMs, User};
use crate::notify::NotificationKind;
use crate::policy::{Authorized, Entitlement, OwnRequest, RequestFacts, RequestResource, act};
use crate::store::audit::NewEvent;
use crate::store::jobs::{self, JobKind, NewJob};
use crate::store::requests::{self as store, ApprovalRow, Changes, NewRequest, RequestRow};
use crate::store::{Tx, users};

/// A request with its approvals, as pages and the API show it.
#[derive(Debug, Clone)]
pub struct RequestView {
    /// The row.
    pub row: RequestRow,
    /// Decisions.
    pub approvals: Vec<ApprovalRow>,
    /// What the entitlement grants, in words ([`App::describe`]).
    pub target: String,
}

/// How a new request is granted, as the policy module allowed it ([`App::create_request`]).
enum Grant {
    /// It waits for approvers (the policies' `request` alone).
    Approvals,
    /// At once: the policies' `auto_approve`.
    Auto(Authorized<act::AutoApprove>),
    /// At once, reviewed afterwards: the policies' `break_glass`.
    BreakGlass(Authorized<act::BreakGlass>),
}

/// A new request the policy module allowed, ready to be written.
struct Filing<'a> {
    /// The policies' `request`.
    asked: Authorized<act::Request>,
    grant: Grant,
    ent: &'a Entitlement,
    duration: u64,
    justification: String,
    ticket: Option<String>,
    start_at: Option<UnixMs>,
    signed_in: super::step_up::Satisfied,
    now: time::OffsetDateTime,
}

/// The activation job of approved request `row`: due now, or at its
/// `start_at` when it starts later.
fn activation_job(row: &RequestRow, now_ms: i64) -> NewJob<'static> {
    NewJob {
        kind: JobKind::Activate,
        request_id: Some(row.id),
        payload: "{}",
        due_at: row
            .start_at
            .map_or(now_ms, |start| start.millis().max(now_ms)),
        dedupe_key: Some(format!("activate:{}", row.id)),
    }
}

/// Who asks for what in a new request: the requester, and the entitlement, object and ticket
/// it names ([`pending_row`]). An extension's are its parent's.
struct Asker {
    requester_key: String,
    requester_email: String,
    entitlement: String,
    kind: String,
    ticket: Option<String>,
    target_key: String,
    simulated: bool,
}

impl Asker {
    /// `user` asking for `ent` (`simulated`: its grants are simulated), with `ticket`.
    fn new(user: &User, ent: &Entitlement, ticket: Option<String>, simulated: bool) -> Self {
        Self {
            requester_key: user.key.clone(),
            requester_email: user.email.clone(),
            entitlement: ent.id.clone(),
            kind: ent.kind.as_str().to_owned(),
            ticket,
            target_key: ent.target_key(&user.key),
            simulated,
        }
    }

    /// Who asked for what in `row`.
    fn of(row: &RequestRow) -> Self {
        Self {
            requester_key: row.requester_key.clone(),
            requester_email: row.requester_email.clone(),
            entitlement: row.entitlement.clone(),
            kind: row.kind.clone(),
            ticket: row.ticket.clone(),
            target_key: row.target_key.clone(),
            simulated: row.simulated,
        }
    }
}

/// A new request, for [`pending_row`].
struct NewRow<'a> {
    id: Uuid,
    ent: &'a Entitlement,
    asker: Asker,
    duration: u64,
    justification: String,
    /// Approved by policy: no approver needs to decide.
    auto: bool,
    now_ms: i64,
}

/// The row of new request `new`: pending until `ent`'s pending time-out, the first of its
/// own chain, needing `ent`'s approvals (none when auto-approved); nothing scheduled,
/// decided, granted, ended or reviewed yet.
fn pending_row(new: NewRow<'_>) -> RequestRow {
    let NewRow {
        id,
        ent,
        asker,
        now_ms,
        ..
    } = new;
    RequestRow {
        id,
        entitlement: asker.entitlement,
        kind: asker.kind,
        requester_key: asker.requester_key,
        requester_email: asker.requester_email,
        state: RequestState::Pending,
        duration_secs: i64::try_from(new.duration).unwrap_or(i64::MAX),
        justification: new.justification,
        ticket: asker.ticket,
        // Auto-approved: none needed, said the same way everywhere (API, pages, audit).
        approvals_required: if new.auto {
            0
        } else {
            i64::from(ent.approvals_required.max(1))
        },
        break_glass: false,
        extends_id: None,
        root_id: id,
        target_key: asker.target_key,
        simulated: asker.simulated,
        created_at: UnixMs::from_millis(now_ms),
        pending_until: Some(UnixMs::from_millis(now_ms).plus_millis(secs_ms(ent.pending_ttl))),
        start_at: None,
        decided_at: None,
        activated_at: None,
        expires_at: None,
        ended_at: None,
        failure_reason: None,
        provider_ref: None,
        deprovisioned_at: None,
        reviewed_by: None,
        reviewed_at: None,
    }
}

/// The time-out job of pending request `row`: due when its pending time ends.
fn timeout_job(row: &RequestRow, now_ms: i64) -> NewJob<'static> {
    NewJob {
        kind: JobKind::Timeout,
        request_id: Some(row.id),
        payload: "{}",
        due_at: row.pending_until.map_or(now_ms, UnixMs::millis),
        dedupe_key: Some(format!("timeout:{}", row.id)),
    }
}

/// The jobs of new request `row`, in the order the transaction-by-statement path queued
/// them: when `granted`, its activation before the break-glass `notifications`; else the
/// notifications before its time-out.
fn filing_jobs<'a>(
    row: &RequestRow,
    notifications: &'a [(String, String)],
    granted: bool,
    now_ms: i64,
) -> Vec<NewJob<'a>> {
    let notify_jobs = notifications.iter().map(|(payload, key)| NewJob {
        kind: JobKind::Notify,
        request_id: Some(row.id),
        payload,
        due_at: now_ms,
        dedupe_key: Some(key.clone()),
    });
    if granted {
        std::iter::once(activation_job(row, now_ms))
            .chain(notify_jobs)
            .collect()
    } else {
        notify_jobs
            .chain(std::iter::once(timeout_job(row, now_ms)))
            .collect()
    }
}

/// An extension the policy module allowed ([`App::extend`]), ready to be written.
struct Extension<'a> {
    /// The requester's own rule.
    requester: Authorized<act::Extend>,
    /// The policies' `request` with `extension` set.
    asked: Authorized<act::Request>,
    /// The policies' `auto_approve`, when they allow it.
    auto: Option<Authorized<act::AutoApprove>>,
    ent: &'a Entitlement,
    by: u64,
    justification: String,
    signed_in: super::step_up::Satisfied,
    now: time::OffsetDateTime,
    /// The first request of the grant's chain (locked first, as a revocation locks it).
    root: Uuid,
}

impl RequestView {
    /// Wire form.
    pub fn to_api(&self) -> jit_api::Request {
        jit_api::Request {
            target: self.target.clone(),
            ..self.row.to_api(&self.approvals)
        }
    }
}

/// How a request ends, for [`App::end_request`].
pub(crate) struct Ending<'a> {
    /// The user who ended it; `None` for the broker itself (`system`).
    pub by: Option<&'a str>,
    /// The audit action: `request.cancelled`, `grant.expired`, …
    pub action: &'a str,
    /// The audit event's details.
    pub data: serde_json::Value,
    /// Whom to tell what; `None`: nobody is told of this request's end (an action that ends
    /// several requests tells of them once, [`App::end_chain`]).
    pub kind: Option<NotificationKind>,
    /// The ender's comment, in the notifications.
    pub comment: Option<&'a str>,
}

impl App {
    fn entitlement(&self, id: &str) -> Result<&Entitlement, ServiceError> {
        self.policy
            .catalog
            .get(id)
            .ok_or_else(|| ServiceError::NotFound(Missing::Entitlement(id.to_owned())))
    }

    /// What a request asks for: exactly one of `entitlement` (an entitlement's id, or a
    /// bundle's: ids are shared) and `bundle` (a bundle's).
    pub fn requested(&self, input: &CreateRequest) -> Result<&Entitlement, ServiceError> {
        match (input.entitlement.as_str(), input.bundle.as_deref()) {
            ("", None) => Err(ServiceError::Invalid(
                "`entitlement` or `bundle` is required".to_owned(),
            )),
            (_, Some(_)) if !input.entitlement.is_empty() => Err(ServiceError::Invalid(
                "give either `entitlement` or `bundle`, not both".to_owned(),
            )),
            (id, None) => self.entitlement(id),
            (_, Some(id)) => match self.policy.catalog.get(id) {
                Some(b) if b.kind == crate::policy::Kind::Bundle => Ok(b),
                Some(_) => Err(ServiceError::Invalid(format!(
                    "`{id}` is an entitlement, not a bundle: send it as `entitlement`"
                ))),
                None => Err(ServiceError::NotFound(Missing::Bundle(id.to_owned()))),
            },
        }
    }

    /// The user's open request for an entitlement other than `ent` whose grant makes some
    /// of the same access (a bundle and its members): one of them at a time, so that
    /// ending one never takes away what the other still grants.
    async fn open_overlap(
        &self,
        user: &User,
        ent: &Entitlement,
    ) -> Result<Option<RequestRow>, ServiceError> {
        for other in self.policy.catalog.iter() {
            if other.id != ent.id
                && other.members().iter().any(|m| ent.grants(&m.id))
                && let Some(open) = store::open_request(&self.store, &user.key, &other.id).await?
            {
                return Ok(Some(open));
            }
        }
        Ok(None)
    }

    /// Files a request. Auto-approves or breaks glass when the policies allow. Refused when
    /// the user has an open request for it already, naming that one ([`App::open_request`]).
    pub async fn create_request(
        &self,
        user: &User,
        input: &CreateRequest,
    ) -> Result<RequestView, ServiceError> {
        let ent = self.requested(input)?;
        if let Some(open) = self.open_overlap(user, ent).await? {
            return Err(ServiceError::Conflict(Conflict::Overlap {
                requested: ent.id.clone(),
                open: open.entitlement.clone(),
                already: already_open(&open),
            }));
        }
        match self.file_request(user, ent, input).await {
            // The database refused a second open request (`requests_one_open`): say which.
            Err(ServiceError::Conflict(why)) => Err(ServiceError::Conflict(
                match self.open_request(user, &ent.id).await {
                    Ok(Some(open)) => Conflict::Other(already_open(&open)),
                    _ => why,
                },
            )),
            other => other,
        }
    }

    /// The user's open (pending, approved or active) request for `entitlement`, if any.
    pub async fn open_request(
        &self,
        user: &User,
        entitlement: &str,
    ) -> Result<Option<RequestRow>, ServiceError> {
        Ok(store::open_request(&self.store, &user.key, entitlement).await?)
    }

    /// The policies' leave for `user` to ask for `ent` as `facts` say (`request`); refused
    /// when they do not give it.
    fn may_ask(
        &self,
        user: &User,
        ent: &Entitlement,
        facts: &RequestFacts<'_>,
    ) -> Result<Authorized<act::Request>, ServiceError> {
        self.policy
            .authorize_entitlement::<act::Request>(user, ent, facts)
            .map_err(|_| ServiceError::Forbidden(Forbidden::Request(ent.id.clone())))
    }

    /// Checks a new request and asks the policy module how it may be granted, then writes it.
    async fn file_request(
        &self,
        user: &User,
        ent: &Entitlement,
        input: &CreateRequest,
    ) -> Result<RequestView, ServiceError> {
        let duration = input
            .duration
            .seconds()
            .map_err(|e| ServiceError::Invalid(e.to_string()))?;
        check_duration(ent, duration)?;
        let justification = domain::check_justification(&input.justification)?;
        let ticket = domain::check_ticket(
            input.ticket.as_deref(),
            ent.require_ticket,
            ent.ticket_pattern.as_deref(),
        )?;
        let now = self.now();
        let start_at = input
            .start_at
            .map(|at| check_start(ent, at, now, input.break_glass))
            .transpose()?;
        let facts = RequestFacts {
            duration_seconds: duration,
            justification: &justification,
            ticket: ticket.as_deref(),
            extension: false,
            break_glass: input.break_glass,
            now: now.unix_timestamp(),
            start_at: start_at.map(|t| t.millis().div_euclid(1000)),
        };
        let asked = self.may_ask(user, ent, &facts)?;
        // After the policy: nobody is sent to sign in again for what they may not ask for.
        let signed_in = self.check_step_up(user, ent)?;
        let grant = if input.break_glass {
            if !ent.break_glass {
                return Err(ServiceError::Invalid(format!(
                    "`{}` does not allow break-glass",
                    ent.id
                )));
            }
            Grant::BreakGlass(
                self.policy
                    .authorize_entitlement::<act::BreakGlass>(user, ent, &facts)
                    .map_err(|_| ServiceError::Forbidden(Forbidden::BreakGlass(ent.id.clone())))?,
            )
        } else if ent.approvals_required == 0 {
            self.policy
                .authorize_entitlement::<act::AutoApprove>(user, ent, &facts)
                .map_or(Grant::Approvals, Grant::Auto)
        } else {
            Grant::Approvals
        };
        let filing = Filing {
            asked,
            grant,
            ent,
            duration,
            justification,
            ticket,
            start_at,
            signed_in,
            now,
        };
        self.write_request(user, filing).await
    }

    /// Writes new request `filing` by `user` with its audit events, notifications and jobs.
    async fn write_request(
        &self,
        user: &User,
        filing: Filing<'_>,
    ) -> Result<RequestView, ServiceError> {
        let (ent, now, start_at, duration) =
            (filing.ent, filing.now, filing.start_at, filing.duration);
        if !filing.asked.is_for(user) || filing.asked.resource() != ent.id {
            return Err(ServiceError::Forbidden(Forbidden::Request(ent.id.clone())));
        }
        let (auto, break_glass) = match &filing.grant {
            Grant::Approvals => (false, false),
            Grant::Auto(a) => (a.is_for(user), false),
            Grant::BreakGlass(b) => (false, b.is_for(user)),
        };
        let granted = auto || break_glass;
        let id = Uuid::now_v7();
        let now_ms = crate::clock::to_ms(now);
        // Granted at once: the request is written approved, or scheduled when it starts
        // later (its two events, created and approved, are both recorded below).
        let (state, decided_at) = if granted {
            let event = if start_at.is_some() {
                Event::Schedule
            } else {
                Event::Approve
            };
            (
                next_state(RequestState::Pending, event)?,
                Some(UnixMs::from_millis(now_ms)),
            )
        } else {
            (RequestState::Pending, None)
        };
        let asker = Asker::new(user, ent, filing.ticket, self.providers.simulates(ent));
        let row = RequestRow {
            state,
            break_glass,
            start_at,
            decided_at,
            ..pending_row(NewRow {
                id,
                ent,
                asker,
                duration,
                justification: filing.justification,
                auto,
                now_ms,
            })
        };
        let events = self.filing_events(user, ent, &row, duration, granted, &filing.signed_in);
        let event_ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
        let view = RequestView {
            target: self.describe(&row.entitlement),
            row,
            // What is written, and nobody has decided on it yet (an automatic
            // approval is no approver's decision).
            approvals: Vec::new(),
        };
        let notifications = self.filing_notifications(user, &view, granted, &event_ids)?;
        let jobs = filing_jobs(&view.row, &notifications, granted, now_ms);
        store::create(
            &self.store,
            NewRequest {
                row: &view.row,
                user,
                events,
                jobs: &jobs,
                at: now,
            },
        )
        .await?;
        // Its commit woke the scheduler for a job due before it would wake anyway (a
        // second wake here had it claim again and find nothing: two statements an arrival).
        Ok(view)
    }

    /// The audit events of new request `row` by `user` for `duration` seconds of `ent`:
    /// `request.created`, then, when it was `granted` at once, its break-glass or
    /// automatic approval.
    fn filing_events<'a>(
        &self,
        user: &'a User,
        ent: &'a Entitlement,
        row: &RequestRow,
        duration: u64,
        granted: bool,
        signed_in: &super::step_up::Satisfied,
    ) -> Vec<NewEvent<'a>> {
        let mut data = json!({
            "duration_seconds": duration,
            "justification": row.justification,
            "ticket": row.ticket,
            "break_glass": row.break_glass,
            "approvals_required": row.approvals_required,
            "policy_hash": self.policy.hash,
        });
        signed_in.record(&mut data);
        if let Some(start) = row.start_at {
            data["start_at"] = json!(start.to_string());
        }
        let created = NewEvent {
            actor: &user.email,
            action: "request.created",
            request_id: Some(row.id),
            entitlement: Some(&ent.id),
            data,
        };
        let approved = granted.then(|| NewEvent {
            actor: "system",
            action: if row.break_glass {
                "request.break_glass"
            } else {
                "request.auto_approved"
            },
            request_id: Some(row.id),
            entitlement: Some(&ent.id),
            data: json!({}),
        });
        std::iter::once(created)
            .chain(approved)
            .map(|e| self.naming_members(e))
            .collect()
    }

    /// The notifications of new request `view` by `user` (payload and dedupe key each), from
    /// its events `event_ids`: the approvers hear of a request that waits for them and of a
    /// break-glass grant; nobody of a request `granted` by policy.
    fn filing_notifications(
        &self,
        user: &User,
        view: &RequestView,
        granted: bool,
        event_ids: &[Uuid],
    ) -> Result<Vec<(String, String)>, ServiceError> {
        let told = |kind, event_id| Told::by(&user.email, kind, event_id, None);
        match (granted, view.row.break_glass) {
            (true, false) => Ok(Vec::new()),
            (true, true) => {
                self.notifications(view, &told(NotificationKind::BreakGlass, event_ids[1]))
            }
            (false, _) => {
                self.notifications(view, &told(NotificationKind::NewRequest, event_ids[0]))
            }
        }
    }

    /// Moves a locked pending request to approved (scheduled, when it starts later) and queues
    /// its activation.
    async fn approve_in_tx(
        &self,
        tx: &mut Tx,
        row: &RequestRow,
        actor: &str,
        action: &str,
        data: serde_json::Value,
    ) -> Result<Uuid, ServiceError> {
        let now = self.now_unix();
        let event = if row.start_at.is_some_and(|start| start > now) {
            Event::Schedule
        } else {
            Event::Approve
        };
        let to = next_state(row.state, event)?;
        let changes = Changes {
            decided_at: Some(now),
            ..Changes::default()
        };
        let step = Step {
            actor,
            action,
            data,
            notice: None,
        };
        let event = self.take_step(tx, row, to, &changes, step).await?;
        self.queue_activation(tx, row, now.millis()).await?;
        Ok(event)
    }

    /// Queues the activation of approved request `row`: now, or at its `start_at` when it is
    /// scheduled (the job then starts it, `service::grants`).
    async fn queue_activation(
        &self,
        tx: &mut Tx,
        row: &RequestRow,
        now_ms: i64,
    ) -> Result<(), ServiceError> {
        jobs::enqueue_all(tx, &[activation_job(row, now_ms)], now_ms).await?;
        Ok(())
    }

    /// Approves or denies. N-of-M distinct approvers; one denial ends it.
    pub async fn decide(
        &self,
        user: &User,
        id: Uuid,
        decision: Decision,
        comment: Option<&str>,
    ) -> Result<RequestView, ServiceError> {
        let comment = domain::check_comment(comment)?;
        let mut tx = self.store.begin().await?;
        let row = self.lock_to_decide(&mut tx, user, id).await?;
        let ent = self.entitlement(&row.entitlement)?;
        let approver = self
            .policy
            .authorize_request(
                user,
                &resource(&row.id.to_string(), &row, ent),
                self.now().unix_timestamp(),
            )
            .map_err(|_| ServiceError::Forbidden(Forbidden::Decide))?;
        self.record_decision(&mut tx, &approver, user, &row, decision, comment)
            .await?;
        tx.commit().await?;
        self.wake.notify_one();
        self.view(id).await
    }

    /// Records `user`'s decision on locked request `row` inside `tx`, as `approver` allows:
    /// their approval or denial, and the request's approval or denial when it decides it.
    async fn record_decision(
        &self,
        tx: &mut Tx,
        approver: &Authorized<act::Approve>,
        user: &User,
        row: &RequestRow,
        decision: Decision,
        comment: Option<String>,
    ) -> Result<(), ServiceError> {
        if !approver.is_for(user) || approver.resource() != row.id.to_string() {
            return Err(ServiceError::Forbidden(Forbidden::Decide));
        }
        let id = row.id;
        let ent = self.entitlement(&row.entitlement)?;
        if row.state != RequestState::Pending {
            return Err(ServiceError::Conflict(Conflict::Already(row.state)));
        }
        // Saying no takes no step-up: it grants nothing.
        let signed_in = match decision {
            Decision::Approve => self.check_approve_step_up(user, ent)?,
            Decision::Deny => super::step_up::Satisfied::default(),
        };
        let now_ms = self.now_ms();
        users::upsert(tx, user, now_ms).await?;
        store::insert_approval(
            tx,
            id,
            &ApprovalRow {
                approver_key: user.key.clone(),
                approver_email: user.email.clone(),
                decision,
                comment: comment.clone(),
                at: now_ms,
            },
        )
        .await?;
        match decision {
            Decision::Deny => {
                self.record_denial(tx, user, row, comment.as_deref(), now_ms)
                    .await
            }
            Decision::Approve => {
                self.record_approval(tx, user, row, comment.as_deref(), &signed_in)
                    .await
            }
        }
    }

    /// Denies locked pending request `row` inside `tx` on `user`'s denial (with `comment`):
    /// its `request.denied` event, and the requester is told.
    async fn record_denial(
        &self,
        tx: &mut Tx,
        user: &User,
        row: &RequestRow,
        comment: Option<&str>,
        now_ms: i64,
    ) -> Result<(), ServiceError> {
        let to = next_state(row.state, Event::Deny)?;
        let changes = Changes {
            decided_at: Some(UnixMs::from_millis(now_ms)),
            ..Changes::default()
        };
        let step = Step {
            actor: &user.email,
            action: "request.denied",
            data: json!({ "comment": comment }),
            notice: Some(Notice {
                kind: NotificationKind::Denied,
                actor: Some(&user.email),
                comment,
            }),
        };
        self.take_step(tx, row, to, &changes, step).await?;
        Ok(())
    }

    /// Records `user`'s approval (with `comment`, after the sign-in `signed_in`) of locked
    /// pending request `row` inside `tx`: its `request.approval` event, then the request's
    /// approval when it has as many as it needs. The requester is told of whichever came
    /// last.
    async fn record_approval(
        &self,
        tx: &mut Tx,
        user: &User,
        row: &RequestRow,
        comment: Option<&str>,
        signed_in: &super::step_up::Satisfied,
    ) -> Result<(), ServiceError> {
        let approvals = store::approvals_tx(tx, row.id).await?;
        let approvers: Vec<&str> = approvals
            .iter()
            .filter(|a| a.decision == Decision::Approve)
            .map(|a| a.approver_email.as_str())
            .collect();
        let count = i64::try_from(approvers.len()).unwrap_or(i64::MAX);
        let mut data = json!({
            "comment": comment,
            "approvals": count,
            "approvals_required": row.approvals_required,
        });
        signed_in.record(&mut data);
        let approval = Step {
            actor: &user.email,
            action: "request.approval",
            data,
            notice: None,
        };
        let approval_event = self
            .record_step(tx, row.id, &row.entitlement, approval)
            .await?;
        let (kind, event_id) = if count >= row.approvals_required {
            let data = json!({ "approvers": approvers });
            let event = self
                .approve_in_tx(tx, row, "system", "request.approved", data)
                .await?;
            (NotificationKind::Approved, event)
        } else {
            (NotificationKind::ApprovalRecorded, approval_event)
        };
        let told = Told::by(&user.email, kind, event_id, comment);
        self.notify(tx, row.id, told).await
    }

    /// Withdraws a pending or approved request (the requester only), or a scheduled one before
    /// it starts (the requester or an admin): as the policy module decides
    /// ([`crate::policy::PolicySet::authorize_cancel`]).
    pub async fn cancel(&self, user: &User, id: Uuid) -> Result<RequestView, ServiceError> {
        let mut tx = self.store.begin().await?;
        let row = self.lock_visible(&mut tx, user, id).await?;
        let who = self
            .policy
            .authorize_cancel(user, &own(&row.id.to_string(), &row))
            .map_err(|_| {
                ServiceError::Forbidden(if row.state == RequestState::Scheduled {
                    Forbidden::CancelScheduled
                } else {
                    Forbidden::Cancel
                })
            })?;
        self.withdraw(&mut tx, &who, user, &row).await?;
        tx.commit().await?;
        self.wake.notify_one();
        self.view(id).await
    }

    /// Cancels locked request `row` inside `tx`, as `who` allows `user`.
    async fn withdraw(
        &self,
        tx: &mut Tx,
        who: &Authorized<act::Cancel>,
        user: &User,
        row: &RequestRow,
    ) -> Result<(), ServiceError> {
        let to = domain::transition(row.state, Event::Cancel)
            .map_err(|_| ServiceError::Conflict(Conflict::Already(row.state)))?;
        let by_admin = who.principal() != row.requester_key;
        let now_ms = self.now_ms();
        let ending = Ending {
            by: Some(&user.email),
            action: "request.cancelled",
            data: if by_admin {
                json!({ "was": row.state, "by_admin": true })
            } else {
                json!({ "was": row.state })
            },
            kind: Some(NotificationKind::Cancelled),
            comment: None,
        };
        self.end_request(tx, row, to, now_ms, ending).await?;
        if row.state == RequestState::Approved {
            // An activation may be under way: make sure nothing stays behind.
            self.queue_deprovision(tx, row.id, now_ms).await?;
        }
        Ok(())
    }

    /// Ends an approved or active grant early (the requester or an admin).
    ///
    /// Taking access away never waits for the audit store: when the events
    /// cannot be written, the revocation runs again with them held in the
    /// spool (`service::held`), and its removal goes ahead.
    pub async fn revoke(
        &self,
        user: &User,
        id: Uuid,
        reason: Option<&str>,
    ) -> Result<RequestView, ServiceError> {
        let reason = domain::check_comment(reason)?;
        match self.revoke_tx(user, id, reason.as_deref(), false).await {
            Err(e) if e.is_store_failure() => {
                tracing::warn!(error = %e, request.id = %id, "revoke: could not write; holding its audit events");
                self.revoke_tx(user, id, reason.as_deref(), true).await?;
            }
            other => other?,
        }
        self.wake.notify_one();
        self.view(id).await
    }

    /// The revocation's transaction; `hold`: its audit events go to the spool.
    ///
    /// A grant and its extensions are one access (an extension is a grant of the same
    /// object that continues it): revoking any request of the chain revokes every live
    /// grant of it and cancels its pending extensions, all in this transaction.
    async fn revoke_tx(
        &self,
        user: &User,
        id: Uuid,
        reason: Option<&str>,
        hold: bool,
    ) -> Result<(), ServiceError> {
        let not_found = || ServiceError::NotFound(Missing::Request(id));
        let root = store::get(&self.store, id)
            .await?
            .ok_or_else(not_found)?
            .root_id;
        let mut tx = self.store.begin().await?;
        if hold {
            tx.hold_audit();
        }
        let chain = store::lock_chain(&self.store, &mut tx, root).await?;
        let row = chain
            .iter()
            .find(|r| r.id == id)
            .filter(|r| self.may_see(user, r))
            .ok_or_else(not_found)?;
        let who = self
            .policy
            .authorize_revoke(user, &own(&row.id.to_string(), row))
            .map_err(|_| ServiceError::Forbidden(Forbidden::Revoke))?;
        let changes = self
            .end_chain(&mut tx, &who, user, row, &chain, reason)
            .await?;
        self.commit_holding(tx, Some(crate::store::held::Change::All { changes }))
            .await
    }

    /// Revokes the live grants (approved or active) of locked `chain`, named by its request
    /// `named`, and cancels its pending extensions, inside `tx`, as `who` allows `user`, and
    /// queues one notification of it to the requester (and one to the approvers of each
    /// cancelled extension); the changes it made. Refused when the chain holds no live grant.
    async fn end_chain(
        &self,
        tx: &mut Tx,
        who: &Authorized<act::Revoke>,
        user: &User,
        named: &RequestRow,
        chain: &[RequestRow],
        reason: Option<&str>,
    ) -> Result<Vec<crate::store::held::Change>, ServiceError> {
        let live =
            |r: &&RequestRow| matches!(r.state, RequestState::Approved | RequestState::Active);
        if !chain.iter().any(|r| live(&r)) {
            return Err(ServiceError::Conflict(
                if named.state == RequestState::Scheduled {
                    Conflict::ScheduledNotActive
                } else {
                    Conflict::NotActive(named.state)
                },
            ));
        }
        let now_ms = self.now_ms();
        let by_admin = who.principal() != named.requester_key;
        let mut changes = Vec::new();
        // The event the requester's one notification is keyed by: the named request's
        // revocation, if it was revoked (an expired first grant whose extension is revoked was
        // not, nor a named pending extension), else the first revocation's.
        let mut told_by = None;
        for row in chain {
            let Some((event, action)) = chain_link_ends(row) else {
                continue;
            };
            let to = domain::transition(row.state, event)
                .map_err(|e| ServiceError::Conflict(e.into()))?;
            let mut data = if to == RequestState::Revoked {
                json!({ "reason": reason, "by_admin": by_admin })
            } else {
                json!({ "was": row.state, "reason": "the grant it extends was revoked" })
            };
            if row.id != named.id {
                data["revoked_with"] = json!(named.id);
            }
            let ending = Ending {
                by: Some(&user.email),
                action,
                data,
                kind: None,
                comment: reason,
            };
            let event_id = self.end_request(tx, row, to, now_ms, ending).await?;
            if to == RequestState::Revoked {
                self.queue_deprovision(tx, row.id, now_ms).await?;
                if row.id == named.id || told_by.is_none() {
                    told_by = Some(event_id);
                }
            } else {
                // A cancelled extension's approvers were asked to decide on it: they are told
                // it was withdrawn, as when its requester cancels it (the requester hears of the
                // action once, below).
                let told = Told::by(&user.email, NotificationKind::Cancelled, event_id, reason);
                self.notify(tx, row.id, told.not_to_requester()).await?;
            }
            changes.push(ended(row, to, now_ms));
        }
        // One action, one notification (each link's event is in the audit log): the
        // revocation of the request the user named.
        if let Some(event_id) = told_by {
            let told = Told::by(&user.email, NotificationKind::Revoked, event_id, reason);
            self.notify(tx, named.id, told).await?;
        }
        Ok(changes)
    }

    /// Ends `row` inside `tx`: moves it from its state to `to` with `ended_at`
    /// = `now_ms`, records the event and queues its notifications, all in the
    /// one transaction; the event's id.
    pub(crate) async fn end_request(
        &self,
        tx: &mut Tx,
        row: &RequestRow,
        to: RequestState,
        now_ms: i64,
        ending: Ending<'_>,
    ) -> Result<Uuid, ServiceError> {
        let changes = Changes {
            ended_at: Some(UnixMs::from_millis(now_ms)),
            ..Changes::default()
        };
        let step = Step {
            actor: ending.by.unwrap_or("system"),
            action: ending.action,
            data: ending.data,
            notice: ending.kind.map(|kind| Notice {
                kind,
                actor: ending.by,
                comment: ending.comment,
            }),
        };
        self.take_step(tx, row, to, &changes, step).await
    }

    pub(crate) async fn queue_deprovision(
        &self,
        tx: &mut Tx,
        id: Uuid,
        now_ms: i64,
    ) -> Result<(), ServiceError> {
        jobs::enqueue(
            tx,
            JobKind::Deprovision,
            Some(id),
            "{}",
            now_ms,
            Some(&format!("deprovision:{id}")),
            now_ms,
        )
        .await?;
        Ok(())
    }

    /// Asks for more time on an active grant: a new request that needs a new
    /// approval unless policy auto-approves it. Capped per entitlement.
    pub async fn extend(
        &self,
        user: &User,
        id: Uuid,
        by: u64,
        justification: Option<&str>,
    ) -> Result<RequestView, ServiceError> {
        let parent = self.view(id).await?.row;
        let requester = self
            .policy
            .authorize_extend(user, &own(&parent.id.to_string(), &parent))
            .map_err(|_| ServiceError::Forbidden(Forbidden::Extend))?;
        if parent.state != RequestState::Active {
            return Err(ServiceError::Conflict(Conflict::NotActive(parent.state)));
        }
        let ent = self.entitlement(&parent.entitlement)?;
        check_duration(ent, by)?;
        let justification =
            domain::check_justification(justification.unwrap_or(&parent.justification))?;
        let now = self.now();
        let facts = RequestFacts {
            duration_seconds: by,
            justification: &justification,
            ticket: parent.ticket.as_deref(),
            extension: true,
            break_glass: false,
            now: now.unix_timestamp(),
            start_at: None,
        };
        let asked = self.may_ask(user, ent, &facts)?;
        let signed_in = self.check_step_up(user, ent)?;
        let auto = self
            .policy
            .authorize_entitlement::<act::AutoApprove>(user, ent, &facts)
            .ok();
        let new_id = self
            .file_extension(
                user,
                id,
                Extension {
                    requester,
                    asked,
                    auto,
                    ent,
                    by,
                    justification,
                    signed_in,
                    now,
                    root: parent.root_id,
                },
            )
            .await?;
        self.wake.notify_one();
        self.view(new_id).await
    }

    /// Writes the extension of grant `id` that `ext`'s proofs allow `user`; its request's id.
    async fn file_extension(
        &self,
        user: &User,
        id: Uuid,
        ext: Extension<'_>,
    ) -> Result<Uuid, ServiceError> {
        let ent = ext.ent;
        if !ext.requester.is_for(user)
            || !ext.asked.is_for(user)
            || ext.requester.resource() != id.to_string()
        {
            return Err(ServiceError::Forbidden(Forbidden::Extend));
        }
        let auto = ext.auto.is_some();
        let now_ms = crate::clock::to_ms(ext.now);
        let new_id = Uuid::now_v7();
        let mut tx = self.store.begin().await?;
        let parent = self.lock_extendable(&mut tx, ent, ext.root, id).await?;
        let row = RequestRow {
            extends_id: Some(parent.id),
            root_id: parent.root_id,
            ..pending_row(NewRow {
                id: new_id,
                ent,
                asker: Asker::of(&parent),
                duration: ext.by,
                justification: ext.justification,
                auto,
                now_ms,
            })
        };
        store::insert(&mut tx, &row).await?;
        let mut data = json!({
            "extends": parent.id,
            "by_seconds": ext.by,
            "justification": row.justification,
        });
        ext.signed_in.record(&mut data);
        let requested = Step {
            actor: &user.email,
            action: "request.extension_requested",
            data,
            // Auto-approved: nobody is asked to decide.
            notice: (!auto).then_some(Notice {
                kind: NotificationKind::NewRequest,
                actor: Some(&user.email),
                comment: None,
            }),
        };
        self.record_step(&mut tx, new_id, &ent.id, requested)
            .await?;
        if auto {
            self.approve_in_tx(
                &mut tx,
                &row,
                "system",
                "request.auto_approved",
                json!({ "extension": true }),
            )
            .await?;
        } else {
            jobs::enqueue_all(&mut tx, &[timeout_job(&row, now_ms)], now_ms).await?;
        }
        tx.commit().await?;
        Ok(new_id)
    }

    /// Locks grant `id` to extend inside `tx`, after the first request of its chain (`root`),
    /// as a revocation takes them: one that runs meanwhile either sees the extension or ends
    /// the grant before it is read. Refused when the grant is not active, or has as many
    /// extensions as `ent` allows.
    async fn lock_extendable(
        &self,
        tx: &mut Tx,
        ent: &Entitlement,
        root: Uuid,
        id: Uuid,
    ) -> Result<RequestRow, ServiceError> {
        store::lock_root(&self.store, tx, root).await?;
        let parent = store::lock(&self.store, tx, id).await?;
        if parent.state != RequestState::Active {
            return Err(ServiceError::Conflict(Conflict::NotActive(parent.state)));
        }
        let extensions = store::extension_count(tx, parent.root_id).await?;
        if extensions >= i64::from(ent.max_extensions) {
            return Err(ServiceError::Conflict(Conflict::TooManyExtensions {
                entitlement: ent.id.clone(),
                max: ent.max_extensions,
            }));
        }
        Ok(parent)
    }

    /// Marks a break-glass grant reviewed (an approver of it, not the requester).
    pub async fn review(
        &self,
        user: &User,
        id: Uuid,
        comment: Option<&str>,
    ) -> Result<RequestView, ServiceError> {
        let comment = domain::check_comment(comment)?;
        let mut tx = self.store.begin().await?;
        let row = self.lock_to_decide(&mut tx, user, id).await?;
        if !row.break_glass {
            return Err(ServiceError::Invalid(
                "only break-glass grants are reviewed".to_owned(),
            ));
        }
        let reviewer = self
            .approver_of(user, &row)
            .ok_or_else(|| ServiceError::Forbidden(Forbidden::Review))?;
        self.record_review(&mut tx, &reviewer, user, &row, comment)
            .await?;
        tx.commit().await?;
        self.view(id).await
    }

    /// Records `user`'s review of locked break-glass request `row` inside `tx`, as `reviewer`
    /// allows.
    async fn record_review(
        &self,
        tx: &mut Tx,
        reviewer: &Authorized<act::Approve>,
        user: &User,
        row: &RequestRow,
        comment: Option<String>,
    ) -> Result<(), ServiceError> {
        if !reviewer.is_for(user) || reviewer.resource() != row.id.to_string() {
            return Err(ServiceError::Forbidden(Forbidden::Review));
        }
        let id = row.id;
        let now_ms = self.now_ms();
        if !store::set_reviewed(tx, id, &user.email, now_ms).await? {
            return Err(ServiceError::Conflict(Conflict::AlreadyReviewed));
        }
        self.audit(
            tx,
            NewEvent {
                actor: &user.email,
                action: "break_glass.reviewed",
                request_id: Some(id),
                entitlement: Some(&row.entitlement),
                data: json!({ "comment": comment }),
            },
        )
        .await
        .map(|_| ())
    }

    /// The policy module's leave for `user` to decide on (approve, deny, review) `row`: never
    /// on their own; none when the policies refuse or its entitlement left the catalog.
    fn approver_of(&self, user: &User, row: &RequestRow) -> Option<Authorized<act::Approve>> {
        if row.requester_key == user.key {
            return None;
        }
        let ent = self.policy.catalog.get(&row.entitlement)?;
        self.policy
            .authorize_request(
                user,
                &resource(&row.id.to_string(), row, ent),
                self.now().unix_timestamp(),
            )
            .ok()
    }

    /// Whether policy lets `user` decide on `row` (never their own).
    pub fn may_decide(&self, user: &User, row: &RequestRow) -> bool {
        self.approver_of(user, row).is_some()
    }

    /// Whether the policy module lets `user` cancel `row` (for its page's button: the
    /// cancellation decides again).
    pub fn may_cancel(&self, user: &User, row: &RequestRow) -> bool {
        self.policy
            .authorize_cancel(user, &own(&row.id.to_string(), row))
            .is_ok()
    }

    /// Whether the policy module lets `user` revoke `row` (for its page's button: the
    /// revocation decides again).
    pub fn may_revoke(&self, user: &User, row: &RequestRow) -> bool {
        self.policy
            .authorize_revoke(user, &own(&row.id.to_string(), row))
            .is_ok()
    }

    /// Whether `user` may see `row`: their own, ones they may decide, or everything for auditors.
    pub fn may_see(&self, user: &User, row: &RequestRow) -> bool {
        row.requester_key == user.key
            || self.may_decide(user, row)
            || self.authorize_audit(user).is_ok()
    }

    /// Locks request `id` inside `tx` for `user` to decide on (approve, deny, review): one
    /// they may see, and not their own (the rule that holds whatever the policies say).
    async fn lock_to_decide(
        &self,
        tx: &mut Tx,
        user: &User,
        id: Uuid,
    ) -> Result<RequestRow, ServiceError> {
        let row = self.lock_visible(tx, user, id).await?;
        domain::check_decider(&row.requester_key, user)?;
        Ok(row)
    }

    async fn lock_visible(
        &self,
        tx: &mut Tx,
        user: &User,
        id: Uuid,
    ) -> Result<RequestRow, ServiceError> {
        let row = store::lock(&self.store, tx, id)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::NotFound => ServiceError::NotFound(Missing::Request(id)),
                other => other.into(),
            })?;
        if !self.may_see(user, &row) {
            return Err(ServiceError::NotFound(Missing::Request(id)));
        }
        Ok(row)
    }

    /// Reads a request (no visibility check).
    pub async fn view(&self, id: Uuid) -> Result<RequestView, ServiceError> {
        let (row, approvals) = store::get_with_approvals(&self.store, id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(Missing::Request(id)))?;
        Ok(RequestView {
            target: self.describe(&row.entitlement),
            row,
            approvals,
        })
    }

    /// What entitlement `id` grants, in words (empty when it left the catalog).
    pub fn describe(&self, id: &str) -> String {
        self.policy
            .catalog
            .get(id)
            .map(|e| self.providers.describe(e))
            .unwrap_or_default()
    }

    /// Reads a request the user may see.
    pub async fn get_visible(&self, user: &User, id: Uuid) -> Result<RequestView, ServiceError> {
        let view = self.view(id).await?;
        if self.may_see(user, &view.row) {
            Ok(view)
        } else {
            Err(ServiceError::NotFound(Missing::Request(id)))
        }
    }

    /// Entitlements the user may request (policy allows a one-hour request), and whether
    /// they may break glass on each: decided once per user and policy set while no policy
    /// reads the time ([`crate::policy::PolicySet::listing`]).
    pub fn requestable(&self, user: &User) -> Vec<(&Entitlement, bool)> {
        let listing = self.policy.listing(user, || {
            self.policy
                .catalog
                .iter()
                .filter(|e| self.may_request(user, e))
                .map(|e| (e.id.clone(), self.may_break_glass(user, e)))
                .collect()
        });
        listing
            .iter()
            .filter_map(|(id, glass)| Some((self.policy.catalog.get(id)?, *glass)))
            .collect()
    }

    /// Whether the user may ask for `ent` (for an hour, or its longest if shorter, with a
    /// ticket): what the listings show.
    fn may_request(&self, user: &User, ent: &Entitlement) -> bool {
        let facts = RequestFacts {
            duration_seconds: ent.max_duration.min(3600),
            justification: "listing",
            ticket: Some("INC-0"),
            extension: false,
            break_glass: false,
            now: self.now().unix_timestamp(),
            start_at: None,
        };
        self.policy
            .authorize_entitlement::<act::Request>(user, ent, &facts)
            .is_ok()
    }

    /// Whether the user may break glass on `ent`.
    fn may_break_glass(&self, user: &User, ent: &Entitlement) -> bool {
        ent.break_glass
            && self
                .policy
                .authorize_entitlement::<act::BreakGlass>(
                    user,
                    ent,
                    &RequestFacts {
                        duration_seconds: 3600,
                        justification: "listing",
                        ticket: None,
                        extension: false,
                        break_glass: true,
                        now: self.now().unix_timestamp(),
                        start_at: None,
                    },
                )
                .is_ok()
    }

    /// Time left on an active grant, in seconds.
    pub fn seconds_left(&self, row: &RequestRow) -> i64 {
        row.expires_at
            .map_or(0, |e| ((e.millis() - self.now_ms()) / 1000).max(0))
    }
}

/// The held form of `row` ending in `to` at `at`.
/// Request `row` (whose id is `id`, of entitlement `ent`) as an approver decides on it.
fn resource<'a>(id: &'a str, row: &'a RequestRow, ent: &'a Entitlement) -> RequestResource<'a> {
    RequestResource {
        id,
        requester_key: &row.requester_key,
        requester_email: &row.requester_email,
        entitlement: ent,
        duration_seconds: u64::try_from(row.duration_secs).unwrap_or(0),
        break_glass: row.break_glass,
    }
}

/// Request `row` (whose id is `id`) as the broker's own rules on it see it.
fn own<'a>(id: &'a str, row: &'a RequestRow) -> OwnRequest<'a> {
    OwnRequest {
        id,
        requester_key: &row.requester_key,
        scheduled: row.state == RequestState::Scheduled,
    }
}

pub(crate) fn ended(row: &RequestRow, to: RequestState, at: i64) -> crate::store::held::Change {
    crate::store::held::Change::Ended {
        request: row.id.to_string(),
        from: row.state.as_str().to_owned(),
        to: to.as_str().to_owned(),
        at,
    }
}

/// Why a second request for the same entitlement is refused, in the words of its state: an
/// active grant is extended, a pending request waits for its decision.
pub fn already_open(open: &RequestRow) -> String {
    let id = open.id.simple().to_string();
    let short = &id[id.len() - 8..];
    let ent = &open.entitlement;
    match (open.state, open.expires_at) {
        (RequestState::Active, Some(until)) => format!(
            "you already have access to `{ent}` until {} (request {short}): extend it to keep it longer",
            until
                .to_datetime()
                .format(time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute] UTC"
                ))
                .unwrap_or_default()
        ),
        (RequestState::Active, None) => format!(
            "you already have access to `{ent}` (request {short}): extend it to keep it longer"
        ),
        (state, _) => format!(
            "you already have a request for `{ent}` that is {state} (request {short}): wait for it, or cancel it"
        ),
    }
}

pub use crate::clock::fmt_ms;

/// Checks a requested `start_at`: in the future, at most the entitlement's
/// `max_schedule_ahead` ahead, and not with break-glass (which grants at once). Unix ms.
fn check_start(
    ent: &Entitlement,
    at: time::OffsetDateTime,
    now: time::OffsetDateTime,
    break_glass: bool,
) -> Result<UnixMs, ServiceError> {
    let shown = UnixMs::from_datetime(at);
    if break_glass {
        return Err(ServiceError::Invalid(
            "break-glass grants at once: it cannot have a `start_at`".to_owned(),
        ));
    }
    if at <= now {
        return Err(ServiceError::Invalid(format!(
            "`start_at` {shown} is not in the future: leave it out to start once approved"
        )));
    }
    let ahead = (at - now).whole_seconds();
    if u64::try_from(ahead).unwrap_or(u64::MAX) > ent.max_schedule_ahead {
        return Err(ServiceError::Invalid(format!(
            "`start_at` {shown} is more than {} ahead, the most `{}` allows (`max_schedule_ahead`)",
            jit_api::format_duration(ent.max_schedule_ahead),
            ent.id
        )));
    }
    Ok(UnixMs::from_datetime(at))
}

fn check_duration(ent: &Entitlement, secs: u64) -> Result<(), ServiceError> {
    if secs > ent.max_duration {
        return Err(ServiceError::Invalid(
            domain::RuleError::DurationTooLong {
                asked: jit_api::format_duration(secs),
                max: jit_api::format_duration(ent.max_duration),
                entitlement: ent.id.clone(),
            }
            .to_string(),
        ));
    }
    Ok(())
}

/// Seconds to milliseconds.
pub fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

/// What a chain's revocation does to one of its requests: it revokes a live grant (approved or
/// active) and cancels a pending extension, with the audit event's action; `None` for the
/// others, which have ended.
fn chain_link_ends(row: &RequestRow) -> Option<(Event, &'static str)> {
    match row.state {
        RequestState::Approved | RequestState::Active => Some((Event::Revoke, "grant.revoked")),
        RequestState::Pending if row.extends_id.is_some() => {
            Some((Event::Cancel, "request.cancelled"))
        }
        _ => None,
    }
}
