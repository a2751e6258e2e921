//! The chain itself: events written, hashed, read and verified.
//!
//! Each row's hash is SHA-256 over a length-prefixed encoding of its fields,
//! the sequence number and the previous row's hash included. An event is
//! written inside the caller's transaction, so it commits or rolls back with
//! the change it records. On SQLite, whose write transactions hold the one
//! write lock from their start, it is chained right there; on PostgreSQL it
//! goes to `audit_pending` and is chained moments after commit, many events
//! in one transaction ([`super::seal`]).

use std::time::Instant;

use futures_util::TryStreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{ConnectOptions as _, Connection as _, Row as _};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::clock::{from_ms, to_ms};
use crate::store::db::{self, Row, query, query_built};
use crate::store::{Engine, Native, Store, StoreError, Tx};

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Advisory lock id that serialises chaining on PostgreSQL.
pub(crate) const CHAIN_LOCK: i64 = 7_301_002;

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// Who acted: a user's email, or `system`.
    pub actor: &'a str,
    /// What happened: `request.created`, `grant.activated`, …
    pub action: &'a str,
    /// The request it concerns.
    pub request_id: Option<Uuid>,
    /// The entitlement it concerns.
    pub entitlement: Option<&'a str>,
    /// Details; never secrets.
    pub data: Value,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Sequence number, from 1, without gaps.
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// Actor.
    pub actor: String,
    /// Action.
    pub action: String,
    /// Request id text.
    pub request_id: Option<String>,
    /// Entitlement id.
    pub entitlement: Option<String>,
    /// Exact JSON text that was hashed.
    pub data: String,
    /// Previous row's hash.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
    /// PostgreSQL: committed but not chained yet (read from `audit_pending`). Its `seq` is the
    /// place it takes when chained in the order read, and both hashes are empty.
    pub pending: bool,
}

impl Event {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(Self {
            seq: row.try_get("seq")?,
            at: row.try_get("at")?,
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            request_id: row.try_get("request_id")?,
            entitlement: row.try_get("entitlement")?,
            data: row.try_get("data")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
            pending: false,
        })
    }

    /// A row of [`CHAIN_AND_PENDING`]: a chained event, or a pending one (`pending` 1).
    fn from_marked_row(row: &Row) -> Result<Self, StoreError> {
        Ok(Self {
            pending: row.try_get::<i64>("pending")? != 0,
            ..Self::from_row(row)?
        })
    }

    /// The recomputed hash of this row's content.
    pub fn computed_hash(&self) -> String {
        chain_hash(&Canonical {
            seq: self.seq,
            at: self.at,
            actor: &self.actor,
            action: &self.action,
            request_id: self.request_id.as_deref(),
            entitlement: self.entitlement.as_deref(),
            data: &self.data,
            prev_hash: &self.prev_hash,
        })
    }

    /// The wire form.
    pub fn to_api(&self) -> jit_api::AuditEvent {
        jit_api::AuditEvent {
            seq: self.seq,
            at: from_ms(self.at),
            actor: self.actor.clone(),
            action: self.action.clone(),
            request_id: self.request_id.as_deref().and_then(|s| s.parse().ok()),
            entitlement: self.entitlement.clone(),
            data: serde_json::from_str(&self.data).unwrap_or(Value::Null),
            prev_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
            pending: self.pending,
        }
    }
}

/// The fields that are hashed, in order.
pub struct Canonical<'a> {
    /// Sequence number.
    pub seq: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// Actor.
    pub actor: &'a str,
    /// Action.
    pub action: &'a str,
    /// Request id.
    pub request_id: Option<&'a str>,
    /// Entitlement.
    pub entitlement: Option<&'a str>,
    /// Data JSON text.
    pub data: &'a str,
    /// Previous hash (hex).
    pub prev_hash: &'a str,
}

/// Writes the canonical encoding (docs/audit.md): a version line, then each
/// field as `<byte length>:<bytes>\n`; absent optional fields as `-\n`.
pub fn canonical_bytes(c: &Canonical<'_>, out: &mut Vec<u8>) {
    fn field(out: &mut Vec<u8>, v: &[u8]) {
        out.extend_from_slice(itoa::Buffer::new().format(v.len()).as_bytes());
        out.push(b':');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    fn opt(out: &mut Vec<u8>, v: Option<&str>) {
        match v {
            Some(v) => field(out, v.as_bytes()),
            None => out.extend_from_slice(b"-\n"),
        }
    }
    fn int(out: &mut Vec<u8>, v: i64) {
        field(out, itoa::Buffer::new().format(v).as_bytes());
    }
    out.extend_from_slice(b"jit-audit-v1\n");
    int(out, c.seq);
    field(out, c.prev_hash.as_bytes());
    int(out, c.at);
    field(out, c.actor.as_bytes());
    field(out, c.action.as_bytes());
    opt(out, c.request_id);
    opt(out, c.entitlement);
    field(out, c.data.as_bytes());
}

/// SHA-256 of the canonical encoding, lowercase hex.
pub fn chain_hash(c: &Canonical<'_>) -> String {
    let mut buf = Vec::with_capacity(256 + c.data.len());
    canonical_bytes(c, &mut buf);
    hex::encode(Sha256::digest(&buf))
}

/// Writes `event` inside `tx`: on SQLite as the next row of the chain, on
/// PostgreSQL to `audit_pending`, chained after `tx` commits.
pub async fn append(
    tx: &mut Tx,
    at: OffsetDateTime,
    event: NewEvent<'_>,
) -> Result<(), StoreError> {
    if let Some(held) = &mut tx.held {
        held.push(crate::store::held::HeldEvent::new(to_ms(at), &event));
        return Ok(());
    }
    if tx.backend() == crate::store::Backend::Postgres {
        return append_all(tx, at, vec![event]).await;
    }
    append_chained(tx, at, event).await
}

/// SQLite: chains `event` in place.
async fn append_chained(
    tx: &mut Tx,
    at: OffsetDateTime,
    event: NewEvent<'_>,
) -> Result<(), StoreError> {
    let started = Instant::now();
    let result = chain_in_place(tx, at, event).await;
    measured(started, result.is_ok());
    result
}

async fn chain_in_place(
    tx: &mut Tx,
    at: OffsetDateTime,
    event: NewEvent<'_>,
) -> Result<(), StoreError> {
    let at = to_ms(at);
    let data = data_text(&event)?;
    let request_id = event.request_id.map(|id| id.to_string());
    let last = query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await?;
    let (last_seq, prev_hash) = match last {
        Some(row) => (row.try_get::<i64>("seq")?, row.try_get::<String>("hash")?),
        None => (0, GENESIS.to_owned()),
    };
    let seq = last_seq + 1;
    let hash = chain_hash(&Canonical {
        seq,
        at,
        actor: event.actor,
        action: event.action,
        request_id: request_id.as_deref(),
        entitlement: event.entitlement,
        data: &data,
        prev_hash: &prev_hash,
    });
    query(
        "INSERT INTO audit_events (seq, at, actor, action, request_id, entitlement, data, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(seq)
    .bind(at)
    .bind(event.actor)
    .bind(event.action)
    .bind(request_id)
    .bind(event.entitlement)
    .bind(data)
    .bind(prev_hash)
    .bind(hash)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Writes `events` inside `tx`, in order: [`append`] for each on SQLite, one
/// statement on PostgreSQL.
pub async fn append_all(
    tx: &mut Tx,
    at: OffsetDateTime,
    events: Vec<NewEvent<'_>>,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    if let Some(held) = &mut tx.held {
        held.extend(
            events
                .iter()
                .map(|e| crate::store::held::HeldEvent::new(to_ms(at), e)),
        );
        return Ok(());
    }
    if tx.backend() != crate::store::Backend::Postgres {
        for event in events {
            append_chained(tx, at, event).await?;
        }
        return Ok(());
    }
    // The rows get their ids, and so their places in the chain, in this
    // order.
    let mut q = query_built(pending_sql(1, events.len()));
    for event in &events {
        q = bind_pending(q, at, event)?;
    }
    let started = Instant::now();
    let result = q.execute(&mut *tx).await;
    measured(started, result.is_ok());
    result?;
    tx.chain_after_commit = true;
    Ok(())
}

/// Counts an audit append (the statement or transaction that wrote it)
/// that began at `started` in the metrics.
pub(crate) fn measured(started: Instant, ok: bool) {
    crate::metrics::observe("jit_audit_append_seconds", &[], started.elapsed());
    if !ok {
        crate::metrics::inc("jit_audit_append_errors_total", &[]);
    }
}

/// Writes an event that comes with no other change, in a transaction of its
/// own (on PostgreSQL one statement).
pub async fn append_alone(
    store: &Store,
    at: OffsetDateTime,
    event: NewEvent<'_>,
) -> Result<(), StoreError> {
    match store.engine() {
        Engine::Postgres(db) => {
            let started = Instant::now();
            let result = to_pending(at, &event)?.execute(store).await;
            measured(started, result.is_ok());
            result?;
            db.sealer.kick(&db.pool);
            Ok(())
        }
        Engine::Sqlite(_) => {
            let mut tx = store.begin().await?;
            append(&mut tx, at, event).await?;
            tx.commit().await
        }
    }
}

/// Whether `event` can be written now: appends it in a transaction of its
/// own, sends it, and rolls back. Used before an action that cannot be
/// taken back once done (an STS session), so that its event, written
/// after it, is known to be writable (`App::mint_credentials`).
pub async fn probe(
    store: &Store,
    at: OffsetDateTime,
    event: NewEvent<'_>,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    append(&mut tx, at, event).await?;
    tx.rollback().await
}

/// PostgreSQL, [`probe`] inside `tx`, the transaction that goes on to take the action and
/// record it: appends `event` to `audit_pending` after a savepoint and rolls back to it, in
/// one simple query (one round trip, where a transaction of its own takes three), so the
/// values are literals ([`db::literal`]). The insert passes or fails exactly as the record
/// after the action will (the same table, privileges and triggers); on failure `tx` is
/// aborted and only good for rolling back.
pub async fn probe_in(
    tx: &mut Tx,
    at: OffsetDateTime,
    event: &NewEvent<'_>,
) -> Result<(), StoreError> {
    let text = |v: &str| {
        db::literal(v).ok_or_else(|| {
            // As a bound value would be: PostgreSQL text holds no NUL.
            StoreError::Db(sqlx::Error::Encode(
                "a NUL character in an audit event".into(),
            ))
        })
    };
    let or_null = |v: Option<&str>| v.map_or_else(|| Ok("NULL".to_owned()), text);
    let request_id = event.request_id.map(|id| id.to_string());
    let sql = format!(
        "SAVEPOINT jit_probe; {PENDING_INSERT} ({}, {}, {}, {}, {}, {}); \
         ROLLBACK TO SAVEPOINT jit_probe; RELEASE SAVEPOINT jit_probe",
        to_ms(at),
        text(event.actor)?,
        text(event.action)?,
        or_null(request_id.as_deref())?,
        or_null(event.entitlement)?,
        text(&data_text(event)?)?,
    );
    db::batch(&mut *tx, &sql).await
}

const PENDING_INSERT: &str =
    "INSERT INTO audit_pending (at, actor, action, request_id, entitlement, data) VALUES";

/// The insert of `event` into `audit_pending`.
fn to_pending(at: OffsetDateTime, event: &NewEvent<'_>) -> Result<db::Query, StoreError> {
    bind_pending(
        query_built(format!("{PENDING_INSERT} ($1, $2, $3, $4, $5, $6)")),
        at,
        event,
    )
}

/// The insert of `rows` events into `audit_pending`, their values from
/// `$first` on ([`bind_pending`] each).
pub(in crate::store) fn pending_sql(first: usize, rows: usize) -> String {
    format!("{PENDING_INSERT} {}", db::values_list_from(first, rows, 6))
}

/// Binds the six values of `event`'s row in `audit_pending`.
pub(in crate::store) fn bind_pending(
    q: db::Query,
    at: OffsetDateTime,
    event: &NewEvent<'_>,
) -> Result<db::Query, StoreError> {
    Ok(q.bind(to_ms(at))
        .bind(event.actor)
        .bind(event.action)
        .bind(event.request_id.map(|id| id.to_string()))
        .bind(event.entitlement)
        .bind(data_text(event)?))
}

/// The event's details as the JSON text that is stored and hashed.
fn data_text(event: &NewEvent<'_>) -> Result<String, StoreError> {
    serde_json::to_string(&event.data).map_err(|e| StoreError::Corrupt(format!("audit data: {e}")))
}

/// Waits until every event committed before this call is in the chain
/// (PostgreSQL; on SQLite events are chained when written).
pub async fn caught_up(store: &Store) -> Result<(), StoreError> {
    match store.engine() {
        Engine::Sqlite(_) => Ok(()),
        Engine::Postgres(db) => db.sealer.catch_up(&db.pool).await,
    }
}

/// Events written but not chained yet, and when the oldest was written
/// (PostgreSQL; always none on SQLite).
pub async fn pending(store: &Store) -> Result<(i64, Option<i64>), StoreError> {
    match store.engine() {
        Engine::Sqlite(_) => Ok((0, None)),
        Engine::Postgres(_) => {
            let row = query("SELECT COUNT(*) AS n, MIN(at) AS oldest FROM audit_pending")
                .fetch_one(store)
                .await?;
            Ok((row.try_get("n")?, row.try_get("oldest")?))
        }
    }
}

/// Filters for listing events.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Exact actor.
    pub actor: Option<String>,
    /// Exact entitlement.
    pub entitlement: Option<String>,
    /// Action, or action prefix ending in `.` (e.g. `request.`).
    pub action: Option<String>,
    /// Request id.
    pub request_id: Option<Uuid>,
    /// Not before (unix ms).
    pub since: Option<i64>,
    /// Before (unix ms).
    pub until: Option<i64>,
    /// Only events with `seq` below this.
    pub before_seq: Option<i64>,
    /// Page size.
    pub limit: i64,
}

/// Lists events newest first.
///
/// On PostgreSQL the page comes from the chain and the committed events not chained yet, read
/// in one statement (one snapshot: the sealer moves an event from one table to the other in one
/// transaction, so each is read exactly once), without waiting for the sealer. The pending ones
/// are the newest, in the order the sealer chains them, marked [`Event::pending`]. Should they
/// fill the page (the sealer is far behind), the read waits for the chain to catch up instead,
/// so that a page never ends on a pending event: the next page's cursor is always a chained
/// `seq`.
pub async fn list(store: &Store, f: &Filter) -> Result<Vec<Event>, StoreError> {
    let limit = f.limit.clamp(1, 10_000);
    if store.backend() == crate::store::Backend::Postgres {
        let events = chain_and_pending(store, f, " ORDER BY seq DESC", Some(limit)).await?;
        let pending = events.iter().filter(|e| e.pending).count();
        if i64::try_from(pending).unwrap_or(i64::MAX) < limit - 1 {
            return Ok(events);
        }
        caught_up(store).await?;
    }
    let mut w = Where::of(f);
    if let Some(b) = f.before_seq {
        w.push(" AND seq < ?", Arg::Int(b));
    }
    w.push(" ORDER BY seq DESC LIMIT ?", Arg::Int(limit));
    events(w.query().fetch_all(store).await, Event::from_row)
}

/// PostgreSQL: the events matching `f` (and its `before_seq`), in the chain and pending, in
/// one statement, ordered by `order` (on `seq`), at most `limit`. A pending event's `seq` is
/// the chain's head (in the same snapshot) plus its place among all pending events by `id`: the
/// place the sealer gives it, as it chains them in that order.
async fn chain_and_pending(
    store: &Store,
    f: &Filter,
    order: &str,
    limit: Option<i64>,
) -> Result<Vec<Event>, StoreError> {
    let mut w = Where::conditions(f);
    if let Some(b) = f.before_seq {
        w.push(" AND seq < ?", Arg::Int(b));
    }
    let conds = std::mem::take(&mut w.sql);
    let order = match limit {
        Some(n) => {
            w.args.push(Arg::Int(n));
            format!("{order} LIMIT ${}", w.args.len())
        }
        None => order.to_owned(),
    };
    w.sql = format!(
        "WITH pend AS (
             SELECT (SELECT COALESCE(MAX(seq), 0) FROM audit_events)
                        + ROW_NUMBER() OVER (ORDER BY id) AS seq,
                    at, actor, action, request_id, entitlement, data,
                    '' AS prev_hash, '' AS hash, 1::int8 AS pending
             FROM audit_pending)
         SELECT * FROM (
             (SELECT seq, at, actor, action, request_id, entitlement, data, prev_hash, hash,
                     0::int8 AS pending
              FROM audit_events WHERE 1 = 1{conds}{order})
             UNION ALL
             (SELECT * FROM pend WHERE 1 = 1{conds}{order})
         ) AS both_kinds{order}"
    );
    events(w.query().fetch_all(store).await, Event::from_marked_row)
}

/// Events that match `f` (its `before_seq` and `limit` aside) with `seq` above `after`, oldest
/// first, at most `limit`: one page of an export ([`super::export::stream`]).
pub async fn page_after(
    store: &Store,
    f: &Filter,
    after: i64,
    limit: i64,
) -> Result<Vec<Event>, StoreError> {
    let mut w = Where::of(f);
    w.push(" AND seq > ?", Arg::Int(after));
    w.push(" ORDER BY seq LIMIT ?", Arg::Int(limit.clamp(1, 10_000)));
    events(w.query().fetch_all(store).await, Event::from_row)
}

/// A `SELECT` of events built condition by condition, `?` standing for the next placeholder.
struct Where {
    sql: String,
    args: Vec<Arg>,
}

impl Where {
    /// The events of the chain that meet the conditions of `f` apart from `before_seq` and
    /// `limit`.
    fn of(f: &Filter) -> Self {
        let mut w = Self::conditions(f);
        w.sql
            .insert_str(0, "SELECT * FROM audit_events WHERE 1 = 1");
        w
    }

    /// The conditions of `f` apart from `before_seq` and `limit`, each ` AND …`.
    fn conditions(f: &Filter) -> Self {
        let mut w = Self {
            sql: String::new(),
            args: Vec::new(),
        };
        if let Some(a) = &f.actor {
            w.push(" AND actor = ?", Arg::Text(a.clone()));
        }
        if let Some(e) = &f.entitlement {
            w.push(" AND entitlement = ?", Arg::Text(e.clone()));
        }
        if let Some(a) = &f.action {
            if let Some(prefix) = a.strip_suffix('.') {
                w.push(" AND action LIKE ?", Arg::Text(format!("{prefix}.%")));
            } else {
                w.push(" AND action = ?", Arg::Text(a.clone()));
            }
        }
        if let Some(r) = f.request_id {
            w.push(" AND request_id = ?", Arg::Text(r.to_string()));
        }
        if let Some(s) = f.since {
            w.push(" AND at >= ?", Arg::Int(s));
        }
        if let Some(u) = f.until {
            w.push(" AND at < ?", Arg::Int(u));
        }
        w
    }

    fn push(&mut self, cond: &str, arg: Arg) {
        self.args.push(arg);
        self.sql
            .push_str(&cond.replace('?', &format!("${}", self.args.len())));
    }

    fn query(self) -> db::Query {
        let mut q = query_built(self.sql);
        for a in self.args {
            q = match a {
                Arg::Text(t) => q.bind(t),
                Arg::Int(i) => q.bind(i),
            };
        }
        q
    }
}

/// The events of `rows`; a row that cannot be read as an event (a `seq` of
/// NULL, a column of the wrong type) makes the whole read
/// [`StoreError::AuditDamaged`], naming the row, rather than a blank failure.
fn events(
    rows: Result<Vec<Row>, StoreError>,
    read: fn(&Row) -> Result<Event, StoreError>,
) -> Result<Vec<Event>, StoreError> {
    let damaged = |e: StoreError, row: Option<&Row>| {
        let seq = row.map_or_else(String::new, |r| match r.try_get::<Option<i64>>("seq") {
            Ok(Some(seq)) => format!("the row at seq {seq} "),
            Ok(None) => "a row with seq NULL ".to_owned(),
            Err(_) => "a row whose seq is not a number ".to_owned(),
        });
        let why = match e {
            StoreError::Corrupt(why) => why,
            other => return other,
        };
        StoreError::AuditDamaged(format!(
            "{seq}cannot be read ({why}); run `jit-server audit verify`"
        ))
    };
    let rows = rows.map_err(|e| damaged(e, None))?;
    rows.iter()
        .map(|r| read(r).map_err(|e| damaged(e, Some(r))))
        .collect()
}

enum Arg {
    Text(String),
    Int(i64),
}

/// Events of one request, oldest first (the request timeline); on PostgreSQL with those not
/// chained yet, last (see [`list`]).
pub async fn for_request(store: &Store, id: Uuid) -> Result<Vec<Event>, StoreError> {
    if store.backend() == crate::store::Backend::Postgres {
        let f = Filter {
            request_id: Some(id),
            ..Filter::default()
        };
        return chain_and_pending(store, &f, " ORDER BY seq", None).await;
    }
    events(
        query("SELECT * FROM audit_events WHERE request_id = $1 ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(store)
            .await,
        Event::from_row,
    )
}

/// The newest event with `action` (not a prefix), if any; on PostgreSQL pending ones included
/// (see [`list`]).
pub async fn last_of(store: &Store, action: &str) -> Result<Option<Event>, StoreError> {
    let f = Filter {
        action: Some(action.to_owned()),
        limit: 1,
        ..Filter::default()
    };
    if store.backend() == crate::store::Backend::Postgres {
        return Ok(chain_and_pending(store, &f, " ORDER BY seq DESC", Some(1))
            .await?
            .pop());
    }
    Ok(list(store, &f).await?.pop())
}

/// Ranges shorter than this are not split further.
const MIN_RANGE: i64 = 100_000;

/// A walk of fewer rows than this, in one range, reads over one of the pool's connections.
const POOLED_RANGE: i64 = 10_000;

/// At most this many ranges are read at once.
const MAX_RANGES: usize = 4;

/// One verification at a time per process: each opens up to [`MAX_RANGES`]
/// connections of its own, outside the pool (docs/deploy.md counts them), or reads a short
/// walk over one of the pool's.
static VERIFYING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Recomputes the chain from `from` (default 1) straight from the table and
/// reports the first sequence number that does not verify.
///
/// A long chain is cut into contiguous ranges of sequence numbers, read and
/// hashed concurrently (one connection and one core each, up to the machine's
/// parallelism and [`MAX_RANGES`]); then the ranges are joined in order: each
/// range's first row must follow the previous range's last one, exactly as
/// the rows inside a range must follow each other. The report is the one a
/// single pass in order would give.
pub async fn verify(store: &Store, from: Option<i64>) -> Result<jit_api::VerifyReport, StoreError> {
    Ok(verify_with_head(store, from, Count::All).await?.0)
}

/// What a verification counts apart from its walk ([`count_rows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Every row of the table: none outside the chain, none missing before the walk's start.
    /// A pass over the whole table (O(rows)).
    All,
    /// Nothing: a check in steps, whose cost is what it walks ([`verify_since`], and the
    /// checkpoint writer after a checkpoint of its own key). The walk itself still shows that
    /// the rows it visited are contiguous: each `seq` one past the last, each `prev_hash` the
    /// last row's hash.
    Walked,
}

/// [`verify`], and the stored hash of the last row that passed when every
/// row did (the anchor's when there was nothing to check).
async fn verify_with_head(
    store: &Store,
    from: Option<i64>,
    count: Count,
) -> Result<(jit_api::VerifyReport, Option<String>), StoreError> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    verify_ranges(store, from, cores.min(MAX_RANGES), MIN_RANGE, count).await
}

/// [`verify`] in at most `max_ranges` ranges of at least `min_range` rows
/// (tests cut small chains with it).
#[doc(hidden)]
pub async fn verify_in_ranges(
    store: &Store,
    from: Option<i64>,
    max_ranges: usize,
    min_range: i64,
) -> Result<jit_api::VerifyReport, StoreError> {
    Ok(
        verify_ranges(store, from, max_ranges, min_range, Count::All)
            .await?
            .0,
    )
}

async fn verify_ranges(
    store: &Store,
    from: Option<i64>,
    max_ranges: usize,
    min_range: i64,
    count: Count,
) -> Result<(jit_api::VerifyReport, Option<String>), StoreError> {
    let _one_at_a_time = VERIFYING
        .acquire()
        .await
        .map_err(|e| StoreError::Corrupt(format!("audit verify: {e}")))?;
    let (mut report, head) = verify_chain(store, from, None, max_ranges, min_range, count).await?;
    report.recomputed_from = Some(from.unwrap_or(1).max(1));
    report.pending = u64::try_from(pending(store).await?.0).unwrap_or(0);
    Ok((report, head))
}

/// Verifies the chain after row `seq`, which must still hold `hash` (`seq` 0: the whole
/// chain), and returns the report and the newest row's hash when every row passed: how the
/// checkpoint writer checks what it is about to sign, from the previous checkpoint on. The
/// rows up to `seq` are not read again; with [`Count::All`] they are counted (none may be
/// missing, none may lie outside the chain), with [`Count::Walked`] not: the round then costs
/// what it walks, and `checked` is the number of rows walked, `seq + 1` to `last_seq` without a
/// gap. The report's `pending` is not counted.
pub async fn verify_after(
    store: &Store,
    seq: i64,
    hash: &str,
    count: Count,
) -> Result<(jit_api::VerifyReport, Option<String>), StoreError> {
    let _one_at_a_time = VERIFYING
        .acquire()
        .await
        .map_err(|e| StoreError::Corrupt(format!("audit verify: {e}")))?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let anchor = (seq > 0).then_some(hash);
    let (mut report, head) = verify_chain(
        store,
        Some(seq + 1),
        anchor,
        cores.min(MAX_RANGES),
        MIN_RANGE,
        count,
    )
    .await?;
    report.recomputed_from = Some(seq + 1);
    // Nothing after the anchor: the head is the anchor's.
    let head = head.filter(|_| report.ok).map(|h| {
        if report.last_seq.is_none() {
            hash.to_owned()
        } else {
            h
        }
    });
    Ok((report, head))
}

/// The stored hashes of the rows at `seqs` (those that exist).
pub async fn hashes_at(
    store: &Store,
    seqs: &[i64],
) -> Result<std::collections::HashMap<i64, String>, StoreError> {
    let mut out = std::collections::HashMap::with_capacity(seqs.len());
    for chunk in seqs.chunks(500) {
        let mut q = query_built(format!(
            "SELECT seq, hash FROM audit_events WHERE seq IN {}",
            db::values_list(1, chunk.len())
        ));
        for seq in chunk {
            q = q.bind(*seq);
        }
        for row in q.fetch_all(store).await? {
            out.insert(row.try_get::<i64>("seq")?, row.try_get::<String>("hash")?);
        }
    }
    Ok(out)
}

/// Rows in the table.
pub async fn row_count(store: &Store) -> Result<u64, StoreError> {
    let n: i64 = query("SELECT COUNT(*) AS n FROM audit_events")
        .fetch_one(store)
        .await?
        .try_get("n")?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The stored hash of row `seq`, if there is one.
async fn stored_hash(store: &Store, seq: i64) -> Result<Option<String>, StoreError> {
    query("SELECT hash FROM audit_events WHERE seq = $1")
        .bind(seq)
        .fetch_optional(store)
        .await?
        .map(|r| r.try_get("hash"))
        .transpose()
}

/// How far a verification got: the newest row that passed, and how many
/// rows from 1 to it passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The newest row that passed.
    pub seq: i64,
    /// Its stored hash.
    pub hash: String,
    /// Rows that passed, 1 to `seq`.
    pub checked: u64,
}

/// [`verify`] of the whole chain, done in steps: given the mark of an earlier pass, only the
/// rows from the mark on are read (the mark's own row again, linked to the stored hash of the
/// row before it, and then every row after it), provided the mark's row still holds the hash
/// it had; when it does not, the whole chain is read again. When the check in steps finds a
/// problem, the whole chain is read again, so the report names the first bad row of the whole
/// chain. Returns the report as of the whole chain and the new mark.
///
/// Rows before the mark are neither read nor counted (counting is a pass over the whole table,
/// and a step costs what it walks), so an edit, deletion or insertion before the mark made after
/// the mark was taken, that leaves the mark's row as it was, goes unseen until a full [`verify`]
/// (`mark` `None`); so do rows outside the chain ([`count_rows`]), and `rows` is absent. The
/// mark lives in the broker's memory only (`App::audit_verified`): nothing in the database
/// says how far a check got, so nobody who can write the database can move it.
pub async fn verify_since(
    store: &Store,
    since: Option<&Verified>,
) -> Result<(jit_api::VerifyReport, Option<Verified>), StoreError> {
    let since = match since {
        Some(mark) if stored_hash(store, mark.seq).await?.as_ref() == Some(&mark.hash) => {
            Some(mark)
        }
        _ => None,
    };
    let count = if since.is_some() {
        Count::Walked
    } else {
        Count::All
    };
    let (mut report, head) = verify_with_head(store, since.map(|m| m.seq), count).await?;
    if let Some(mark) = since {
        if !report.ok || head.is_none() {
            // Fail closed: name the first bad row of the whole chain.
            return Box::pin(verify_since(store, None)).await;
        }
        // The mark's row was read again: count it once.
        report.checked += mark.checked.saturating_sub(1);
    }
    let mark = match (report.last_seq, head) {
        (Some(seq), Some(hash)) => Some(Verified {
            seq,
            hash,
            checked: report.checked,
        }),
        _ => None,
    };
    Ok((report, mark))
}

/// Walks the chain from `from`, linked to the stored hash of the row before it, which must be
/// `anchor` when one is given (the hash a checkpoint signed).
async fn verify_chain(
    store: &Store,
    from: Option<i64>,
    anchor: Option<&str>,
    max_ranges: usize,
    min_range: i64,
    count: Count,
) -> Result<(jit_api::VerifyReport, Option<String>), StoreError> {
    let from = from.unwrap_or(1).max(1);
    let prev = if from == 1 {
        GENESIS.to_owned()
    } else {
        match stored_hash(store, from - 1).await? {
            Some(hash) if anchor.is_none_or(|a| a == hash) => hash,
            Some(_) => {
                let why = "the row no longer holds the hash that was signed";
                return Ok((bad(0, None, from - 1, why), None));
            }
            None => {
                let why = "row is missing (the chain cannot start there)";
                return Ok((bad(0, None, from - 1, why), None));
            }
        }
    };
    let head = head_seq(store).await?.unwrap_or(0);
    let ranges = split(from, head, max_ranges, min_range);
    // A short walk (the checkpoint writer's, every round) is read over one of the pool's
    // connections: a connection of its own would start a PostgreSQL backend each time, which
    // costs more than the walk and competes with the requests for the cores.
    let pooled = ranges.len() == 1 && head - from < POOLED_RANGE;
    // One task (SQLite: one blocking thread) per range, so they use all cores.
    let scans = ranges.into_iter().map(|(start, end)| {
        let native = store.native();
        async move {
            match native {
                Native::Sqlite(path) => {
                    tokio::task::spawn_blocking(move || scan_sqlite(&path, start, end)).await
                }
                Native::Postgres(_, pool) if pooled => {
                    let mut conn = pool.acquire().await?;
                    return scan_postgres(&mut conn, start, end).await;
                }
                Native::Postgres(options, _) => {
                    tokio::spawn(async move {
                        let mut conn = options.connect().await?;
                        let range = scan_postgres(&mut conn, start, end).await?;
                        conn.close().await?;
                        Ok(range)
                    })
                    .await
                }
            }
            .map_err(|e| StoreError::Corrupt(format!("audit verify: {e}")))?
        }
    });
    let mut chain = Joined {
        next_seq: from,
        prev_hash: prev,
        checked: 0,
        last_seq: None,
    };
    for range in futures_util::future::try_join_all(scans).await? {
        if let Err(report) = chain.join(range) {
            return Ok((*report, None));
        }
    }
    let last = chain.last_seq.unwrap_or(from - 1);
    let (rows, stray) = match count {
        Count::All => {
            let (rows, stray) = count_rows(store, from, last, chain.checked).await?;
            (Some(rows), stray)
        }
        Count::Walked => (None, None),
    };
    let ok = stray.is_none();
    let report = jit_api::VerifyReport {
        ok,
        checked: chain.checked,
        last_seq: chain.last_seq,
        first_bad_seq: None,
        problem: stray,
        pending: 0,
        rows,
        held: 0,
        checkpoints: None,
        recomputed_from: None,
    };
    Ok((report, ok.then_some(chain.prev_hash)))
}

/// Counts the table's rows apart from the walk, which reads only rows whose
/// `seq` lies in the chain's range: a row whose `seq` is NULL, below 1 or not
/// a whole number (possible on a SQLite file edited by hand, or after an
/// owner dropped a constraint) is never walked. Returns the number of rows
/// and, when some were not walked, what is wrong.
///
/// One statement, so one snapshot: rows appended after the walk have a `seq`
/// past `last` and are not counted against it.
async fn count_rows(
    store: &Store,
    from: i64,
    last: i64,
    checked: u64,
) -> Result<(u64, Option<String>), StoreError> {
    let sqlite = store.backend() == crate::store::Backend::Sqlite;
    let whole = if sqlite {
        " AND typeof(seq) = 'integer'"
    } else {
        ""
    };
    let row = query_built(format!(
        "SELECT (SELECT COUNT(*) FROM audit_events) AS total,
                (SELECT COUNT(*) FROM audit_events WHERE seq >= 1 AND seq <= $1) AS known,
                (SELECT COUNT(*) FROM audit_events WHERE seq >= $2 AND seq <= $1) AS walked,
                (SELECT COUNT(*) FROM audit_events WHERE seq > $1{whole}) AS later"
    ))
    .bind(last)
    .bind(from)
    .fetch_one(store)
    .await?;
    let count = |name: &str| -> Result<u64, StoreError> {
        Ok(u64::try_from(row.try_get::<i64>(name)?).unwrap_or(0))
    };
    let (total, known, walked, later) = (
        count("total")?,
        count("known")?,
        count("walked")?,
        count("later")?,
    );
    let stray = total.saturating_sub(known + later);
    if stray > 0 {
        let first = query(if sqlite {
            "SELECT quote(seq) AS seq, action FROM audit_events
             WHERE seq IS NULL OR typeof(seq) <> 'integer' OR seq < 1 LIMIT 1"
        } else {
            "SELECT COALESCE(seq::text, 'NULL') AS seq, action FROM audit_events
             WHERE seq IS NULL OR seq < 1 ORDER BY seq LIMIT 1"
        })
        .fetch_optional(store)
        .await?;
        let first = match first {
            Some(r) => format!(
                " (the first has seq {} and action `{}`)",
                r.try_get::<String>("seq")?,
                r.try_get::<Option<String>>("action")?.unwrap_or_default()
            ),
            None => String::new(),
        };
        let rows = if stray == 1 { "row is" } else { "rows are" };
        return Ok((
            total,
            Some(format!(
                "{stray} {rows} outside the chain, where the walk cannot reach them: seq NULL, \
                 below 1 or not a whole number{first}"
            )),
        ));
    }
    let below = u64::try_from(from - 1).unwrap_or(0);
    if known.saturating_sub(walked) != below {
        return Ok((
            total,
            Some(format!(
                "rows below seq {from} are missing: the table holds {} of the {below} before it",
                known.saturating_sub(walked)
            )),
        ));
    }
    if walked != checked {
        return Ok((
            total,
            Some(format!(
                "{walked} rows hold a seq from {from} to {last} but {checked} were verified"
            )),
        ));
    }
    Ok((total, None))
}

/// The newest `seq` of the chain (none when empty). Only whole numbers: on a SQLite file
/// edited by hand a `seq` may hold text, which sorts after every number (such a row is found
/// by `count_rows`).
pub async fn head_seq(store: &Store) -> Result<Option<i64>, StoreError> {
    query(
        "SELECT CAST(MAX(seq) AS BIGINT) AS head FROM audit_events
         WHERE seq <= 9223372036854775807",
    )
    .fetch_one(store)
    .await?
    .try_get("head")
}

/// `[start, end)` ranges covering `from..=head`, the last one open-ended so
/// rows appended meanwhile are read too.
fn split(from: i64, head: i64, parts: usize, min_range: i64) -> Vec<(i64, i64)> {
    let rows = (head - from + 1).max(0);
    let parts = i64::try_from(parts)
        .unwrap_or(1)
        .min(rows / min_range.max(1))
        .max(1);
    let step = rows / parts;
    (0..parts)
        .map(|i| {
            let start = from + i * step;
            let end = if i == parts - 1 {
                i64::MAX
            } else {
                start + step
            };
            (start, end)
        })
        .collect()
}

/// What one range held, checked on its own: every row's hash, and every row
/// after the first against the row before it. Its first row is checked
/// against the previous range when the ranges are joined.
#[derive(Debug, Default)]
struct Range {
    /// The first row's `seq` and `prev_hash`.
    first: Option<(i64, String)>,
    /// The last good row's `seq` and `hash`.
    last: Option<(i64, String)>,
    /// Rows that verified.
    checked: u64,
    /// The first row that did not: its `seq` and what is wrong.
    failure: Option<(i64, String)>,
}

impl Range {
    /// The next row cannot be read (a NULL where the schema had none, a
    /// value of the wrong type): the range stops before it.
    fn unreadable(&mut self, start: i64, why: impl std::fmt::Display) {
        let seq = self.last.as_ref().map_or(start, |(seq, _)| seq + 1);
        self.failure = Some((seq, format!("row cannot be read: {why}")));
    }

    /// Checks the next row as read from the database; false once a row
    /// failed or could not be read (stop reading).
    fn read<E: std::fmt::Display>(
        &mut self,
        start: i64,
        read: Result<(Canonical<'_>, &str), E>,
        buf: &mut Vec<u8>,
    ) -> bool {
        match read {
            Ok((r, hash)) => self.row(&r, hash, buf),
            Err(e) => {
                self.unreadable(start, e);
                false
            }
        }
    }

    /// Checks the next row; false once a row failed (stop reading).
    fn row(&mut self, r: &Canonical<'_>, hash: &str, buf: &mut Vec<u8>) -> bool {
        match &self.last {
            None => self.first = Some((r.seq, r.prev_hash.to_owned())),
            Some((last_seq, last_hash)) => {
                if let Some(why) = link(r.seq, r.prev_hash, *last_seq + 1, last_hash) {
                    self.failure = Some((*last_seq + 1, why));
                    return false;
                }
            }
        }
        buf.clear();
        canonical_bytes(r, buf);
        let mut computed = [0u8; 64];
        if hex::encode_to_slice(Sha256::digest(&buf[..]), &mut computed).is_err()
            || computed.as_slice() != hash.as_bytes()
        {
            self.failure = Some((r.seq, "content does not match its hash".to_owned()));
            return false;
        }
        self.checked += 1;
        match &mut self.last {
            Some((seq, h)) => {
                *seq = r.seq;
                h.clear();
                h.push_str(hash);
            }
            None => self.last = Some((r.seq, hash.to_owned())),
        }
        true
    }
}

/// Whether a row (`seq`, `prev_hash`) sits where the chain expects its next
/// row (`next_seq`, after `last_hash`); why not if not.
fn link(seq: i64, prev_hash: &str, next_seq: i64, last_hash: &str) -> Option<String> {
    if seq > next_seq {
        Some(format!("row is missing (next row found is {seq})"))
    } else if seq < next_seq {
        Some(format!("row out of order (found {seq})"))
    } else if prev_hash != last_hash {
        Some("prev_hash does not match the previous row's hash".to_owned())
    } else {
        None
    }
}

/// The chain verified so far, ranges joined in order.
struct Joined {
    next_seq: i64,
    prev_hash: String,
    checked: u64,
    last_seq: Option<i64>,
}

impl Joined {
    /// Appends the next range; the report at the first row that fails.
    fn join(&mut self, range: Range) -> Result<(), Box<jit_api::VerifyReport>> {
        let Some((first_seq, first_prev)) = &range.first else {
            if let Some((_, why)) = range.failure {
                // Its first row could not be read: that is where the chain stops.
                return Err(Box::new(bad(
                    self.checked,
                    self.last_seq,
                    self.next_seq,
                    &why,
                )));
            }
            // An empty range: nothing to join (a gap shows at the next row).
            return Ok(());
        };
        if let Some(why) = link(*first_seq, first_prev, self.next_seq, &self.prev_hash) {
            return Err(Box::new(bad(
                self.checked,
                self.last_seq,
                self.next_seq,
                &why,
            )));
        }
        if let Some((seq, why)) = range.failure {
            let last_seq = range.last.as_ref().map(|(s, _)| *s).or(self.last_seq);
            return Err(Box::new(bad(
                self.checked + range.checked,
                last_seq,
                seq,
                &why,
            )));
        }
        if let Some((seq, hash)) = range.last {
            self.checked += range.checked;
            self.last_seq = Some(seq);
            self.next_seq = seq + 1;
            self.prev_hash = hash;
        }
        Ok(())
    }
}

const RANGE_SQL: &str =
    "SELECT seq, at, actor, action, request_id, entitlement, data, prev_hash, hash
     FROM audit_events WHERE seq >= $1 AND seq < $2 ORDER BY seq";

/// Reads and checks `[start, end)` with rusqlite on a read-only connection
/// (runs on a blocking thread).
fn scan_sqlite(path: &std::path::Path, start: i64, end: i64) -> Result<Range, StoreError> {
    let conn = crate::store::open_reader(path)?;
    // SQLite numbers `$1`, `$2` as the first and second parameter, as the pool's queries rely on.
    let mut stmt = conn.prepare(RANGE_SQL)?;
    let mut rows = stmt.query([start, end])?;
    let mut range = Range::default();
    let mut buf = Vec::with_capacity(1024);
    while let Some(row) = rows.next()? {
        let text = |i: usize| -> rusqlite::Result<&str> { Ok(row.get_ref(i)?.as_str()?) };
        let opt_text =
            |i: usize| -> rusqlite::Result<Option<&str>> { Ok(row.get_ref(i)?.as_str_or_null()?) };
        let decoded = (|| {
            let r = Canonical {
                seq: row.get(0)?,
                at: row.get(1)?,
                actor: text(2)?,
                action: text(3)?,
                request_id: opt_text(4)?,
                entitlement: opt_text(5)?,
                data: text(6)?,
                prev_hash: text(7)?,
            };
            Ok::<_, rusqlite::Error>((r, text(8)?))
        })();
        if !range.read(start, decoded, &mut buf) {
            break;
        }
    }
    Ok(range)
}

/// Reads and checks `[start, end)` on a new PostgreSQL connection of the
/// native driver, which decodes text in place.
async fn scan_postgres(
    conn: &mut sqlx::PgConnection,
    start: i64,
    end: i64,
) -> Result<Range, StoreError> {
    let mut range = Range::default();
    let mut buf = Vec::with_capacity(1024);
    {
        let mut rows = sqlx::query::<sqlx::Postgres>(RANGE_SQL)
            .bind(start)
            .bind(end)
            .fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            let decoded = (|| {
                let r = Canonical {
                    seq: row.try_get(0)?,
                    at: row.try_get(1)?,
                    actor: row.try_get(2)?,
                    action: row.try_get(3)?,
                    request_id: row.try_get(4)?,
                    entitlement: row.try_get(5)?,
                    data: row.try_get(6)?,
                    prev_hash: row.try_get(7)?,
                };
                Ok::<_, sqlx::Error>((r, row.try_get(8)?))
            })();
            if !range.read(start, decoded, &mut buf) {
                break;
            }
            // Rows arrive in batches already buffered, so the stream rarely waits: without
            // this, hashing a walk of thousands of rows held a worker thread for milliseconds
            // and the requests queued behind it (the checkpoint round's cost in the `load`
            // bench's PostgreSQL p99; SQLite scans on a blocking thread).
            tokio::task::consume_budget().await;
        }
    }
    Ok(range)
}

fn bad(checked: u64, last_seq: Option<i64>, seq: i64, why: &str) -> jit_api::VerifyReport {
    jit_api::VerifyReport {
        ok: false,
        checked,
        last_seq,
        first_bad_seq: Some(seq),
        problem: Some(why.to_owned()),
        pending: 0,
        rows: None,
        held: 0,
        checkpoints: None,
        recomputed_from: None,
    }
}

/// Streams every event from `from` in order to `sink` (exports).
pub async fn for_each(
    store: &Store,
    from: i64,
    mut sink: impl FnMut(Event) -> std::io::Result<()>,
) -> Result<u64, StoreError> {
    query("SELECT * FROM audit_events WHERE seq >= $1 ORDER BY seq")
        .bind(from)
        .for_each(store, |row| {
            sink(Event::from_row(&row)?).map_err(|e| StoreError::Corrupt(format!("export: {e}")))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of docs/audit.md: the first two events of a log.
    fn example() -> [Canonical<'static>; 2] {
        [
            Canonical {
                seq: 1,
                at: 1_767_225_600_000,
                actor: "alice@example.com",
                action: "request.created",
                request_id: Some("0194f1a2-7b3c-7d4e-8f50-6a7b8c9d0e1f"),
                entitlement: Some("aws-prod-admin"),
                data: r#"{"duration":"1h","reason":"INC-42"}"#,
                prev_hash: GENESIS,
            },
            Canonical {
                seq: 2,
                at: 1_767_225_660_000,
                actor: "system",
                action: "policy.loaded",
                request_id: None,
                entitlement: None,
                data: r#"{"policy_hash":"ab12"}"#,
                prev_hash: "9cbfa24172acfb0410ff15ac9ae52db40ca4b6425ab905e4ac0921803d6e1b5d",
            },
        ]
    }

    #[test]
    fn the_documented_example_encodes_and_hashes_as_published() {
        let [first, second] = example();
        let mut buf = Vec::new();
        canonical_bytes(&first, &mut buf);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "jit-audit-v1\n1:1\n64:0000000000000000000000000000000000000000000000000000000000000000\n\
             13:1767225600000\n17:alice@example.com\n15:request.created\n\
             36:0194f1a2-7b3c-7d4e-8f50-6a7b8c9d0e1f\n14:aws-prod-admin\n\
             35:{\"duration\":\"1h\",\"reason\":\"INC-42\"}\n"
        );
        assert_eq!(
            chain_hash(&first),
            "9cbfa24172acfb0410ff15ac9ae52db40ca4b6425ab905e4ac0921803d6e1b5d"
        );
        assert_eq!(chain_hash(&first), second.prev_hash);

        let mut buf = Vec::new();
        canonical_bytes(&second, &mut buf);
        assert!(
            String::from_utf8(buf)
                .unwrap()
                .contains("\n13:policy.loaded\n-\n-\n22:")
        );
        assert_eq!(
            chain_hash(&second),
            "c7edebbe6d0b138eefa53ef28f4d586e213b89c4e9d1aa021aa002fbe34aedc7"
        );
    }

    #[test]
    fn ranges_cover_the_chain_from_the_start_without_gaps() {
        for (from, head, parts, min_range) in [
            (1, 0, 4, 100_000),      // empty chain
            (1, 99_999, 4, 100_000), // too short to cut
            (1, 1_000_000, 4, 100_000),
            (1, 1_000_000, 2, 100_000),
            (500, 250_000, 4, 100_000), // from a checkpoint on
            (1, 7, 3, 1),
            (9, 5, 3, 1), // from past the end
        ] {
            let ranges = split(from, head, parts, min_range);
            let rows = (head - from + 1).max(0);
            assert!(!ranges.is_empty() && ranges.len() <= parts.max(1));
            assert_eq!(ranges[0].0, from);
            assert_eq!(ranges.last().map(|r| r.1), Some(i64::MAX), "open-ended");
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].1, pair[1].0, "contiguous");
                assert!(pair[0].1 - pair[0].0 >= min_range, "{ranges:?}");
            }
            if rows < 2 * min_range {
                assert_eq!(ranges.len(), 1, "{rows} rows: {ranges:?}");
            }
        }
    }

    #[test]
    fn absent_and_empty_fields_hash_differently() {
        let [first, _] = example();
        let absent = Canonical {
            entitlement: None,
            ..first
        };
        let empty = Canonical {
            entitlement: Some(""),
            ..first
        };
        assert_ne!(chain_hash(&absent), chain_hash(&empty));
    }

    #[test]
    fn length_prefixes_keep_field_boundaries() {
        // moving a character across a field boundary changes the hash
        let [first, _] = example();
        let a = Canonical {
            actor: "alice@example.com.",
            action: "request",
            ..first
        };
        let b = Canonical {
            actor: "alice@example.com",
            action: ".request",
            ..first
        };
        assert_ne!(chain_hash(&a), chain_hash(&b));
    }
}
