//! Requests and their approvals.

use std::fmt::Write as _;

use jit_api::{Decision, RequestState};
use uuid::Uuid;

use super::audit::{self, NewEvent};
use super::db::{Arg, On, Query, query, query_built};
use super::jobs::{self, NewJob};
use super::{Backend, Store, StoreError, Tx, users, uuid_col};
use crate::clock::{from_ms, to_ms};
use crate::domain::{UnixMs, User};
use std::time::Instant;
use time::OffsetDateTime;

/// A request row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRow {
    /// Id.
    pub id: Uuid,
    /// Entitlement id.
    pub entitlement: String,
    /// Entitlement kind name.
    pub kind: String,
    /// Requester's user key.
    pub requester_key: String,
    /// Requester's email (display).
    pub requester_email: String,
    /// State.
    pub state: RequestState,
    /// Asked duration.
    pub duration_secs: i64,
    /// Justification.
    pub justification: String,
    /// Ticket.
    pub ticket: Option<String>,
    /// Approvals needed.
    pub approvals_required: i64,
    /// Break-glass.
    pub break_glass: bool,
    /// Extended request.
    pub extends_id: Option<Uuid>,
    /// First request of the extension chain.
    pub root_id: Uuid,
    /// Upstream object key.
    pub target_key: String,
    /// Simulated grant.
    pub simulated: bool,
    /// When it was made.
    pub created_at: UnixMs,
    /// When a pending request times out.
    pub pending_until: Option<UnixMs>,
    /// When a scheduled request's grant begins.
    pub start_at: Option<UnixMs>,
    /// When it was decided.
    pub decided_at: Option<UnixMs>,
    /// When its grant was made.
    pub activated_at: Option<UnixMs>,
    /// When its grant ends.
    pub expires_at: Option<UnixMs>,
    /// When it ended.
    pub ended_at: Option<UnixMs>,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Provider's reference.
    pub provider_ref: Option<String>,
    /// When its upstream removal was confirmed.
    pub deprovisioned_at: Option<UnixMs>,
    /// Break-glass reviewer.
    pub reviewed_by: Option<String>,
    /// When its break-glass review was done.
    pub reviewed_at: Option<UnixMs>,
}

fn opt_uuid(v: Option<&str>) -> Result<Option<Uuid>, StoreError> {
    v.map(uuid_col).transpose()
}

/// A nullable unix-ms column.
fn opt_time(row: &super::db::Row, col: &str) -> Result<Option<UnixMs>, StoreError> {
    Ok(row.try_get::<Option<i64>>(col)?.map(UnixMs::from_millis))
}

impl RequestRow {
    fn from_row(row: &super::db::Row) -> Result<Self, StoreError> {
        let state: String = row.try_get("state")?;
        Ok(Self {
            id: uuid_col(&row.try_get::<String>("id")?)?,
            entitlement: row.try_get("entitlement")?,
            kind: row.try_get("kind")?,
            requester_key: row.try_get("requester_key")?,
            requester_email: row.try_get("requester_email")?,
            state: state.parse().map_err(StoreError::Corrupt)?,
            duration_secs: row.try_get("duration_secs")?,
            justification: row.try_get("justification")?,
            ticket: row.try_get("ticket")?,
            approvals_required: row.try_get("approvals_required")?,
            break_glass: row.try_get::<i64>("break_glass")? != 0,
            extends_id: opt_uuid(row.try_get::<Option<String>>("extends_id")?.as_deref())?,
            root_id: uuid_col(&row.try_get::<String>("root_id")?)?,
            target_key: row.try_get("target_key")?,
            simulated: row.try_get::<i64>("simulated")? != 0,
            created_at: UnixMs::from_millis(row.try_get("created_at")?),
            pending_until: opt_time(row, "pending_until")?,
            start_at: opt_time(row, "start_at")?,
            decided_at: opt_time(row, "decided_at")?,
            activated_at: opt_time(row, "activated_at")?,
            expires_at: opt_time(row, "expires_at")?,
            ended_at: opt_time(row, "ended_at")?,
            failure_reason: row.try_get("failure_reason")?,
            provider_ref: row.try_get("provider_ref")?,
            deprovisioned_at: opt_time(row, "deprovisioned_at")?,
            reviewed_by: row.try_get("reviewed_by")?,
            reviewed_at: opt_time(row, "reviewed_at")?,
        })
    }

    /// The wire form, with its approvals.
    pub fn to_api(&self, approvals: &[ApprovalRow]) -> jit_api::Request {
        let secs = u64::try_from(self.duration_secs).unwrap_or(0);
        jit_api::Request {
            id: self.id,
            entitlement: self.entitlement.clone(),
            requester: self.requester_email.clone(),
            state: self.state,
            duration: jit_api::format_duration(secs),
            duration_seconds: secs,
            justification: self.justification.clone(),
            ticket: self.ticket.clone(),
            created_at: self.created_at.to_datetime(),
            pending_until: self.pending_until.map(UnixMs::to_datetime),
            start_at: self.start_at.map(UnixMs::to_datetime),
            activated_at: self.activated_at.map(UnixMs::to_datetime),
            expires_at: self.expires_at.map(UnixMs::to_datetime),
            approvals: approvals
                .iter()
                .map(|a| jit_api::Approval {
                    approver: a.approver_email.clone(),
                    decision: a.decision,
                    comment: a.comment.clone(),
                    at: from_ms(a.at),
                })
                .collect(),
            approvals_required: u32::try_from(self.approvals_required).unwrap_or(0),
            break_glass: self.break_glass,
            extends: self.extends_id,
            simulated: self.simulated,
            failure_reason: self.failure_reason.clone(),
            kind: self.kind.clone(),
            target: String::new(),
        }
    }
}

/// An approval row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRow {
    /// Approver key.
    pub approver_key: String,
    /// Approver email.
    pub approver_email: String,
    /// Decision.
    pub decision: Decision,
    /// Comment.
    pub comment: Option<String>,
    /// Unix ms.
    pub at: i64,
}

/// The unique index that lets a person hold one open request for an
/// entitlement (extensions aside).
pub const ONE_OPEN: &str = "requests_one_open";
/// The unique index that lets a grant have one open extension.
pub const ONE_OPEN_EXTENSION: &str = "requests_one_open_extension";

/// The insert of a request row, its nineteen values from `$first` on.
fn insert_sql(first: usize) -> String {
    format!(
        "INSERT INTO requests (id, entitlement, kind, requester_key, requester_email, state,
            duration_secs, justification, ticket, approvals_required, break_glass, extends_id,
            root_id, target_key, simulated, created_at, pending_until, decided_at, start_at)
         VALUES {}",
        super::db::values_list_from(first, 1, 19)
    )
}

/// Binds the values of [`insert_sql`].
fn bind_insert(q: Query, r: &RequestRow) -> Query {
    q.bind(r.id.to_string())
        .bind(&r.entitlement)
        .bind(&r.kind)
        .bind(&r.requester_key)
        .bind(&r.requester_email)
        .bind(r.state.as_str())
        .bind(r.duration_secs)
        .bind(&r.justification)
        .bind(&r.ticket)
        .bind(r.approvals_required)
        .bind(i64::from(r.break_glass))
        .bind(r.extends_id.map(|u| u.to_string()))
        .bind(r.root_id.to_string())
        .bind(&r.target_key)
        .bind(i64::from(r.simulated))
        .bind(r.created_at.millis())
        .bind(r.pending_until.map(UnixMs::millis))
        .bind(r.decided_at.map(UnixMs::millis))
        .bind(r.start_at.map(UnixMs::millis))
}

/// What a refused insert of `r` means, by the unique index that refused it.
fn insert_error(e: StoreError, r: &RequestRow) -> StoreError {
    match e.unique_constraint() {
        Some(ONE_OPEN) => StoreError::Conflict(format!(
            "you already have an open request for `{}`; extend it or wait until it ends",
            r.entitlement
        )),
        Some(ONE_OPEN_EXTENSION) => StoreError::Conflict(format!(
            "the grant already has an open extension for `{}`: wait for it, or cancel it",
            r.entitlement
        )),
        _ => e,
    }
}

/// Inserts a new request (the caller has validated it), pending or, when
/// granted at once, approved.
pub async fn insert(tx: &mut Tx, r: &RequestRow) -> Result<(), StoreError> {
    bind_insert(query_built(insert_sql(1)), r)
        .execute(tx)
        .await
        .map_err(|e| insert_error(e, r))?;
    Ok(())
}

/// A new request with all it writes at once: its requester's profile, its
/// audit events and its jobs.
pub struct NewRequest<'a> {
    /// The request (validated by the caller).
    pub row: &'a RequestRow,
    /// Who asked.
    pub user: &'a User,
    /// Its audit events, in order.
    pub events: Vec<NewEvent<'a>>,
    /// Its jobs (activation or timeout, notifications).
    pub jobs: &'a [NewJob<'a>],
    /// When.
    pub at: OffsetDateTime,
}

/// Writes a new request ([`NewRequest`]) and commits it. On PostgreSQL it
/// is one statement (one round trip, atomic in autocommit): the requester's
/// upsert, the request, its events into `audit_pending` and its jobs as
/// data-modifying `WITH` clauses, each on its own table. On SQLite the
/// same writes in one transaction.
pub async fn create(store: &Store, new: NewRequest<'_>) -> Result<(), StoreError> {
    let now = to_ms(new.at);
    if store.backend() == Backend::Sqlite {
        let mut tx = store.begin().await?;
        users::upsert(&mut tx, new.user, now).await?;
        insert(&mut tx, new.row).await?;
        audit::append_all(&mut tx, new.at, new.events).await?;
        jobs::enqueue_all(&mut tx, new.jobs, now).await?;
        return tx.commit().await;
    }
    let (events, jobs) = (new.events.len(), new.jobs.len());
    let user_first = 20;
    let events_first = user_first + 6;
    let jobs_first = events_first + 6 * events;
    let mut clauses = vec![
        format!("r AS ({})", insert_sql(1)),
        format!("u AS ({})", users::upsert_sql(user_first)),
    ];
    if events > 0 {
        clauses.push(format!(
            "a AS ({})",
            audit::pending_sql(events_first, events)
        ));
    }
    let main = if jobs > 0 {
        jobs::insert_sql(jobs_first, jobs)
    } else {
        "SELECT 1".to_owned()
    };
    let mut q = query_built(format!("WITH {} {main}", clauses.join(", ")));
    q = bind_insert(q, new.row);
    q = users::bind_upsert(q, new.user, now);
    for event in &new.events {
        q = audit::bind_pending(q, new.at, event)?;
    }
    q = jobs::bind_inserts(q, new.jobs, now);
    let started = Instant::now();
    let result = q.execute(store).await;
    if events > 0 {
        audit::measured(started, result.is_ok());
    }
    result.map_err(|e| insert_error(e, new.row))?;
    store.committed(
        events > 0,
        Vec::new(),
        new.jobs.iter().map(|j| j.due_at).min(),
    );
    Ok(())
}

/// Reads a request.
pub async fn get(store: &Store, id: Uuid) -> Result<Option<RequestRow>, StoreError> {
    let row = query("SELECT * FROM requests WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(store)
        .await?;
    row.as_ref().map(RequestRow::from_row).transpose()
}

/// The open (pending, approved, scheduled or active) request of `requester_key` for `entitlement`, not an
/// extension: the one `requests_one_open` lets exist.
pub async fn open_request(
    store: &Store,
    requester_key: &str,
    entitlement: &str,
) -> Result<Option<RequestRow>, StoreError> {
    let row = query(
        "SELECT * FROM requests WHERE requester_key = $1 AND entitlement = $2
         AND state IN ('pending','approved','scheduled','active') AND extends_id IS NULL",
    )
    .bind(requester_key)
    .bind(entitlement)
    .fetch_optional(store)
    .await?;
    row.as_ref().map(RequestRow::from_row).transpose()
}

/// Reads a request and, when recorded, its requester as a grantee, in one statement (on
/// `on`: the pool, or a transaction that holds the request's object locked).
pub async fn get_for_grant<'a>(
    on: impl Into<On<'a>>,
    id: Uuid,
) -> Result<Option<(RequestRow, Option<crate::domain::Grantee>)>, StoreError> {
    let Some(r) = query(
        "SELECT r.*, u.key AS grantee_key, u.email AS grantee_email, u.name AS grantee_name,
                u.oid AS grantee_oid
         FROM requests r LEFT JOIN users u ON u.key = r.requester_key WHERE r.id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(on)
    .await?
    else {
        return Ok(None);
    };
    let grantee = match r.try_get::<Option<String>>("grantee_key")? {
        Some(key) => Some(crate::domain::Grantee {
            key,
            email: r.try_get("grantee_email")?,
            name: r.try_get("grantee_name")?,
            oid: r.try_get("grantee_oid")?,
        }),
        None => None,
    };
    Ok(Some((RequestRow::from_row(&r)?, grantee)))
}

/// Reads a request and its decisions (oldest first), in one statement.
pub async fn get_with_approvals(
    store: &Store,
    id: Uuid,
) -> Result<Option<(RequestRow, Vec<ApprovalRow>)>, StoreError> {
    let rows = query(
        "SELECT r.*, a.approver_key, a.approver_email, a.decision, a.comment, a.at AS decided
         FROM requests r LEFT JOIN approvals a ON a.request_id = r.id
         WHERE r.id = $1 ORDER BY a.at, a.approver_key",
    )
    .bind(id.to_string())
    .fetch_all(store)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut approvals = Vec::new();
    for r in &rows {
        if r.try_get::<Option<String>>("approver_key")?.is_some() {
            approvals.push(approval_from(r, "decided")?);
        }
    }
    Ok(Some((RequestRow::from_row(first)?, approvals)))
}

/// Reads a request inside a write transaction, locking its row on PostgreSQL.
pub async fn lock(store: &Store, tx: &mut Tx, id: Uuid) -> Result<RequestRow, StoreError> {
    let sql = format!("SELECT * FROM requests WHERE id = $1{}", store.for_update());
    let row = query_built(sql)
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    RequestRow::from_row(&row)
}

/// Locks and reads every request of the extension chain that starts at `root`, the first
/// request first: the root's row is locked alone before the others, as
/// [`lock_root`] does when an extension is filed, so that a revocation and a new extension
/// take turns (the revocation then sees the extension) and never wait for each other.
pub async fn lock_chain(
    store: &Store,
    tx: &mut Tx,
    root: Uuid,
) -> Result<Vec<RequestRow>, StoreError> {
    lock_root(store, tx, root).await?;
    let sql = format!(
        "SELECT * FROM requests WHERE root_id = $1 ORDER BY created_at, id{}",
        store.for_update()
    );
    let rows = query_built(sql)
        .bind(root.to_string())
        .fetch_all(&mut *tx)
        .await?;
    rows.iter().map(RequestRow::from_row).collect()
}

/// Locks the first request of an extension chain (PostgreSQL; SQLite's one writer
/// serializes already): what filing an extension and revoking a chain both take first.
pub async fn lock_root(store: &Store, tx: &mut Tx, root: Uuid) -> Result<(), StoreError> {
    if store.for_update().is_empty() {
        return Ok(());
    }
    lock(store, tx, root).await.map(|_| ())
}

/// Fields a state change may set.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// When it was decided.
    pub decided_at: Option<UnixMs>,
    /// When its grant was made.
    pub activated_at: Option<UnixMs>,
    /// When its grant ends.
    pub expires_at: Option<UnixMs>,
    /// When it ended.
    pub ended_at: Option<UnixMs>,
    /// Failure reason.
    pub failure_reason: Option<String>,
    /// Provider reference.
    pub provider_ref: Option<String>,
    /// Simulated grant.
    pub simulated: Option<bool>,
}

/// Moves a locked request from `from` to `to`; fails if it was not in `from`.
pub async fn set_state(
    tx: &mut Tx,
    id: Uuid,
    from: RequestState,
    to: RequestState,
    c: &Changes,
) -> Result<(), StoreError> {
    if change_state(tx, id, from, to, c).await? {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!("request is no longer {from}")))
    }
}

/// Moves a request from `from` to `to` if it is in `from` (the update locks
/// the row and checks its latest version); false when it is not.
pub async fn change_state(
    tx: &mut Tx,
    id: Uuid,
    from: RequestState,
    to: RequestState,
    c: &Changes,
) -> Result<bool, StoreError> {
    let done = query(
        "UPDATE requests SET state = $1,
            decided_at = COALESCE($2, decided_at),
            activated_at = COALESCE($3, activated_at),
            expires_at = COALESCE($4, expires_at),
            ended_at = COALESCE($5, ended_at),
            failure_reason = COALESCE($6, failure_reason),
            provider_ref = COALESCE($7, provider_ref),
            simulated = COALESCE($8, simulated)
         WHERE id = $9 AND state = $10",
    )
    .bind(to.as_str())
    .bind(c.decided_at.map(UnixMs::millis))
    .bind(c.activated_at.map(UnixMs::millis))
    .bind(c.expires_at.map(UnixMs::millis))
    .bind(c.ended_at.map(UnixMs::millis))
    .bind(&c.failure_reason)
    .bind(&c.provider_ref)
    .bind(c.simulated.map(i64::from))
    .bind(id.to_string())
    .bind(from.as_str())
    .execute(&mut *tx)
    .await
    .map_err(|e| StoreError::from_insert(e, "another open request holds this entitlement"))?;
    if done == 1 {
        tx.changed.push(id);
    }
    Ok(done == 1)
}

/// Marks the upstream object removed (or not needing removal).
pub async fn set_deprovisioned(tx: &mut Tx, id: Uuid, at: i64) -> Result<(), StoreError> {
    query("UPDATE requests SET deprovisioned_at = $1 WHERE id = $2 AND deprovisioned_at IS NULL")
        .bind(at)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Records a break-glass review.
pub async fn set_reviewed(tx: &mut Tx, id: Uuid, by: &str, at: i64) -> Result<bool, StoreError> {
    let done = query(
        "UPDATE requests SET reviewed_by = $1, reviewed_at = $2
         WHERE id = $3 AND break_glass = 1 AND reviewed_at IS NULL",
    )
    .bind(by)
    .bind(at)
    .bind(id.to_string())
    .execute(&mut *tx)
    .await?;
    Ok(done == 1)
}

/// Other requests that hold the same upstream object and still need it.
pub async fn live_holders(
    store: &Store,
    target_key: &str,
    except: Uuid,
) -> Result<Vec<Uuid>, StoreError> {
    // An active request's object is never removed yet: `deprovisioned_at IS
    // NULL` holds for it, and lets the partial index on `target_key` serve.
    let rows = query(
        "SELECT id FROM requests WHERE target_key = $1 AND deprovisioned_at IS NULL
         AND id <> $2 AND state = 'active'",
    )
    .bind(target_key)
    .bind(except.to_string())
    .fetch_all(store)
    .await?;
    rows.iter()
        .map(|r| uuid_col(&r.try_get::<String>("id")?))
        .collect()
}

/// Whether request `id` is still approved (`None` if not) and, if so, whether another request
/// holds the same upstream object, `target_key`: a live grant, or an ended one whose removal is
/// still due. One statement: what an activation reads under the target's lock before the
/// provider call.
pub async fn approved_and_held<'a>(
    on: impl Into<On<'a>>,
    id: Uuid,
    target_key: &str,
) -> Result<Option<bool>, StoreError> {
    let row = query(
        "SELECT CASE WHEN EXISTS (
             SELECT 1 FROM requests WHERE target_key = $1 AND deprovisioned_at IS NULL AND id <> $2
             AND (state = 'active' OR (state IN ('expired', 'revoked') AND activated_at IS NOT NULL))
         ) THEN 1 ELSE 0 END AS held
         FROM requests WHERE id = $2 AND state = $3",
    )
    .bind(target_key)
    .bind(id.to_string())
    .bind(RequestState::Approved.as_str())
    .fetch_optional(on)
    .await?;
    row.map(|r| r.try_get::<i64>("held").map(|held| held == 1))
        .transpose()
}

/// The other ended (revoked or expired) grants of the chain that starts at `root` whose
/// object is not removed yet: a removal of `except`'s object removes theirs too.
pub async fn ended_in_chain(
    tx: &mut Tx,
    root: Uuid,
    except: Uuid,
) -> Result<Vec<Uuid>, StoreError> {
    let rows = query(
        "SELECT id FROM requests WHERE root_id = $1 AND id <> $2 AND deprovisioned_at IS NULL
         AND state IN ('expired', 'revoked') ORDER BY created_at, id",
    )
    .bind(root.to_string())
    .bind(except.to_string())
    .fetch_all(&mut *tx)
    .await?;
    rows.iter()
        .map(|r| uuid_col(&r.try_get::<String>("id")?))
        .collect()
}

/// Number of extensions in a chain.
pub async fn extension_count(tx: &mut Tx, root: Uuid) -> Result<i64, StoreError> {
    let row = query(
        "SELECT COUNT(*) AS n FROM requests WHERE root_id = $1 AND extends_id IS NOT NULL
         AND state NOT IN ('denied', 'cancelled', 'timed_out', 'failed')",
    )
    .bind(root.to_string())
    .fetch_one(&mut *tx)
    .await?;
    row.try_get("n")
}

/// Inserts a decision; an approver counts once (primary key).
pub async fn insert_approval(
    tx: &mut Tx,
    request: Uuid,
    a: &ApprovalRow,
) -> Result<(), StoreError> {
    query(
        "INSERT INTO approvals (request_id, approver_key, approver_email, decision, comment, at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(request.to_string())
    .bind(&a.approver_key)
    .bind(&a.approver_email)
    .bind(match a.decision {
        Decision::Approve => "approve",
        Decision::Deny => "deny",
    })
    .bind(&a.comment)
    .bind(a.at)
    .execute(&mut *tx)
    .await
    .map_err(|e| StoreError::from_insert(e, "you have already decided on this request"))?;
    Ok(())
}

fn approval_from_row(r: &super::db::Row) -> Result<ApprovalRow, StoreError> {
    approval_from(r, "at")
}

/// An approval from a row whose decision time is in column `at`.
fn approval_from(r: &super::db::Row, at: &str) -> Result<ApprovalRow, StoreError> {
    let d: String = r.try_get("decision")?;
    Ok(ApprovalRow {
        approver_key: r.try_get("approver_key")?,
        approver_email: r.try_get("approver_email")?,
        decision: if d == "deny" {
            Decision::Deny
        } else {
            Decision::Approve
        },
        comment: r.try_get("comment")?,
        at: r.try_get(at)?,
    })
}

/// Decisions on each of `requests`, oldest first (requests without any are absent).
pub async fn approvals_of(
    store: &Store,
    requests: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<ApprovalRow>>, StoreError> {
    let mut out: std::collections::HashMap<Uuid, Vec<ApprovalRow>> =
        std::collections::HashMap::new();
    for chunk in requests.chunks(500) {
        let mut q = query_built(format!(
            "SELECT * FROM approvals WHERE request_id IN {} ORDER BY at, approver_key",
            super::db::values_list(1, chunk.len())
        ));
        for id in chunk {
            q = q.bind(id.to_string());
        }
        for r in q.fetch_all(store).await? {
            let id = uuid_col(&r.try_get::<String>("request_id")?)?;
            out.entry(id).or_default().push(approval_from_row(&r)?);
        }
    }
    Ok(out)
}

/// Decisions on a request inside a transaction.
pub async fn approvals_tx(tx: &mut Tx, request: Uuid) -> Result<Vec<ApprovalRow>, StoreError> {
    let rows = query("SELECT * FROM approvals WHERE request_id = $1 ORDER BY at, approver_key")
        .bind(request.to_string())
        .fetch_all(&mut *tx)
        .await?;
    rows.iter().map(approval_from_row).collect()
}

/// Where a page of requests starts: after the request created at
/// `created_at` (unix ms) with id `id`, in the list's order (newest first).
/// Its text form, `<created_at>.<id>`, is the `after` of `GET /api/v1/requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Creation time of the last request of the previous page.
    pub created_at: i64,
    /// Its id.
    pub id: Uuid,
}

impl Cursor {
    /// The cursor after `row`.
    pub fn after(row: &RequestRow) -> Self {
        Self {
            created_at: row.created_at.millis(),
            id: row.id,
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_at, self.id)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("`{s}` is not a cursor of this list (pass the `after` of a `next` link)");
        let (at, id) = s.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            created_at: at.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this requester.
    pub requester_key: Option<String>,
    /// Only requests on these entitlements (none when empty)…
    pub entitlements_in: Option<Vec<String>>,
    /// …or, with `entitlements_in`, of this requester (what a user may see:
    /// their own, and those on entitlements they might decide on).
    pub or_requester: Option<String>,
    /// Only these states.
    pub states: Vec<RequestState>,
    /// Only this entitlement.
    pub entitlement: Option<String>,
    /// Only unreviewed break-glass requests.
    pub unreviewed_break_glass: bool,
    /// Not this requester's (what an approver decides on).
    pub not_requester: Option<String>,
    /// Only requests this approver has not decided on yet.
    pub not_decided_by: Option<String>,
    /// Only requests after this one (keyset pagination).
    pub after: Option<Cursor>,
    /// Only requests before this one, read oldest first (the page before;
    /// ignored with `after`).
    pub before: Option<Cursor>,
    /// Page size (at least 1).
    pub limit: i64,
}

/// Lists requests, newest first (`created_at`, then `id`, descending); with
/// `before`, the ones just newer than it, oldest first.
///
/// A list of one state (or of any) is one statement that walks an index in
/// the list's order and stops after the page. `state IN (a, b)` cannot walk
/// `requests_state_newest_first` in order: the database would read and sort
/// every request in those states for each page. So several states are read
/// as a page of each, merged here.
pub async fn list(store: &Store, f: &ListFilter) -> Result<Vec<RequestRow>, StoreError> {
    let mut states = f.states.clone();
    states.sort_unstable_by_key(|s| s.as_str());
    states.dedup();
    if states.len() < 2 {
        return list_in_order(store, f).await;
    }
    let mut rows = Vec::new();
    for state in states {
        let one = ListFilter {
            states: vec![state],
            ..f.clone()
        };
        rows.extend(list_in_order(store, &one).await?);
    }
    let key = |r: &RequestRow| (r.created_at, r.id);
    if f.after.is_none() && f.before.is_some() {
        rows.sort_unstable_by_key(key);
    } else {
        rows.sort_unstable_by_key(|r| std::cmp::Reverse(key(r)));
    }
    rows.truncate(usize::try_from(f.limit.max(1)).unwrap_or(usize::MAX));
    Ok(rows)
}

/// [`list`] as one statement.
async fn list_in_order(store: &Store, f: &ListFilter) -> Result<Vec<RequestRow>, StoreError> {
    let (mut sql, mut binds) = matching("SELECT * FROM requests", f);
    let (order, after) = match (f.after, f.before) {
        (Some(c), _) => ("DESC", Some(("<", c))),
        (None, Some(c)) => ("ASC", Some((">", c))),
        (None, None) => ("DESC", None),
    };
    if let Some((cmp, c)) = after {
        // A row value, so both engines seek to the cursor in the index
        // instead of filtering every row newer than it.
        binds.push(c.created_at.into());
        let at = binds.len();
        binds.push(c.id.to_string().into());
        let id = binds.len();
        let _ = write!(sql, " AND (created_at, id) {cmp} (${at}, ${id})");
    }
    binds.push(f.limit.max(1).into());
    let _ = write!(
        sql,
        " ORDER BY created_at {order}, id {order} LIMIT ${}",
        binds.len()
    );
    let mut q = query_built(sql);
    for b in binds {
        q = q.bind(b);
    }
    let rows = q.fetch_all(store).await?;
    rows.iter().map(RequestRow::from_row).collect()
}

/// How many requests match `f` (its cursors and limit aside), in one statement.
pub async fn count(store: &Store, f: &ListFilter) -> Result<u64, StoreError> {
    let (sql, binds) = matching("SELECT COUNT(*) AS n FROM requests", f);
    let mut q = query_built(sql);
    for b in binds {
        q = q.bind(b);
    }
    let n: i64 = q.fetch_one(store).await?.try_get("n")?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// `select` with the `WHERE` of `f`'s filters (not its cursors) and their values.
fn matching(select: &str, f: &ListFilter) -> (String, Vec<Arg>) {
    let mut sql = format!("{select} WHERE 1 = 1");
    let mut binds: Vec<Arg> = Vec::new();
    let mut mark = |v: Arg| {
        binds.push(v);
        format!("${}", binds.len())
    };
    if let Some(k) = &f.requester_key {
        let _ = write!(sql, " AND requester_key = {}", mark(k.into()));
    }
    if let Some(ents) = &f.entitlements_in {
        let mut any = Vec::new();
        if !ents.is_empty() {
            let marks: Vec<String> = ents.iter().map(|e| mark(e.into())).collect();
            any.push(format!("entitlement IN ({})", marks.join(", ")));
        }
        if let Some(k) = &f.or_requester {
            any.push(format!("requester_key = {}", mark(k.into())));
        }
        if any.is_empty() {
            any.push("1 = 0".to_owned());
        }
        let _ = write!(sql, " AND ({})", any.join(" OR "));
    }
    if let Some(e) = &f.entitlement {
        let _ = write!(sql, " AND entitlement = {}", mark(e.into()));
    }
    if !f.states.is_empty() {
        let marks: Vec<String> = f.states.iter().map(|s| mark(s.as_str().into())).collect();
        let _ = write!(sql, " AND state IN ({})", marks.join(", "));
    }
    if f.unreviewed_break_glass {
        sql.push_str(" AND break_glass = 1 AND reviewed_at IS NULL");
    }
    if let Some(k) = &f.not_requester {
        let _ = write!(sql, " AND requester_key <> {}", mark(k.into()));
    }
    if let Some(k) = &f.not_decided_by {
        let _ = write!(
            sql,
            " AND NOT EXISTS (SELECT 1 FROM approvals a \
             WHERE a.request_id = requests.id AND a.approver_key = {})",
            mark(k.into())
        );
    }
    (sql, binds)
}

/// Grants that ended (expired or revoked) after `since_ms` and whose access
/// has not been removed yet: every one of them, however many.
pub async fn ended_not_removed(
    store: &Store,
    since_ms: i64,
) -> Result<Vec<RequestRow>, StoreError> {
    let rows = query(
        "SELECT * FROM requests WHERE state IN ('expired', 'revoked')
         AND activated_at IS NOT NULL AND deprovisioned_at IS NULL AND ended_at > $1",
    )
    .bind(since_ms)
    .fetch_all(store)
    .await?;
    rows.iter().map(RequestRow::from_row).collect()
}

/// Requests an approver has decided on, newest decision first, each with
/// the cursor of its decision (`created_at` is the decision's time): up to
/// `limit` after `after`, or, with `before`, the ones just newer than it,
/// oldest first.
pub async fn decided_by(
    store: &Store,
    approver_key: &str,
    after: Option<Cursor>,
    before: Option<Cursor>,
    limit: i64,
) -> Result<Vec<(RequestRow, Cursor)>, StoreError> {
    let (order, from) = match (after, before) {
        (Some(c), _) => ("DESC", Some(("<", c))),
        (None, Some(c)) => ("ASC", Some((">", c))),
        (None, None) => ("DESC", None),
    };
    let keyset = from.map_or(String::new(), |(cmp, _)| {
        format!(" AND (a.at {cmp} $3 OR (a.at = $3 AND r.id {cmp} $4))")
    });
    let mut q = query_built(format!(
        "SELECT r.*, a.at AS decided_at_ms FROM requests r JOIN approvals a ON a.request_id = r.id
         WHERE a.approver_key = $1{keyset} ORDER BY a.at {order}, r.id {order} LIMIT $2"
    ))
    .bind(approver_key)
    .bind(limit.clamp(1, 1000));
    if let Some((_, c)) = from {
        q = q.bind(c.created_at).bind(c.id.to_string());
    }
    let rows = q.fetch_all(store).await?;
    rows.iter()
        .map(|r| {
            let row = RequestRow::from_row(r)?;
            let at: i64 = r.try_get("decided_at_ms")?;
            let cursor = Cursor {
                created_at: at,
                id: row.id,
            };
            Ok((row, cursor))
        })
        .collect()
}

/// Counts requests by state (metrics).
pub async fn count_by_state(store: &Store) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = query("SELECT state, COUNT(*) AS n FROM requests GROUP BY state")
        .fetch_all(store)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
        .collect()
}
