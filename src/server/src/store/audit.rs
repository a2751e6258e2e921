//! The hash-chained, append-only audit log (SPEC §5, docs/audit.md).
//!
//! Each row's hash is SHA-256 over a length-prefixed encoding of its fields,
//! the sequence number and the previous row's hash included. Appends take a
//! chain lock (PostgreSQL advisory lock; SQLite's write lock) inside the
//! caller's transaction, so the event commits or rolls back with the change
//! it records.

use futures_util::TryStreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Backend, Store, StoreError, Tx};
use crate::clock::{from_ms, to_ms};

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Advisory lock id that serialises appends on PostgreSQL.
const CHAIN_LOCK: i64 = 7_301_002;

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
}

impl Event {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
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
        out.extend_from_slice(v.len().to_string().as_bytes());
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
    out.extend_from_slice(b"jit-audit-v1\n");
    field(out, c.seq.to_string().as_bytes());
    field(out, c.prev_hash.as_bytes());
    field(out, c.at.to_string().as_bytes());
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

/// Appends `event` inside `tx`; returns its sequence number.
pub async fn append(
    tx: &mut Tx,
    backend: Backend,
    at: OffsetDateTime,
    event: NewEvent<'_>,
) -> Result<i64, StoreError> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(CHAIN_LOCK)
            .execute(&mut **tx)
            .await?;
    }
    let last = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await?;
    let (last_seq, prev_hash) = match last {
        Some(row) => (
            row.try_get::<i64, _>("seq")?,
            row.try_get::<String, _>("hash")?,
        ),
        None => (0, GENESIS.to_owned()),
    };
    let seq = last_seq + 1;
    let at = to_ms(at);
    let data = serde_json::to_string(&event.data)
        .map_err(|e| StoreError::Corrupt(format!("audit data: {e}")))?;
    let request_id = event.request_id.map(|id| id.to_string());
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
    sqlx::query(
        "INSERT INTO audit_events (seq, at, actor, action, request_id, entitlement, data, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(seq)
    .bind(at)
    .bind(event.actor)
    .bind(event.action)
    .bind(request_id)
    .bind(event.entitlement)
    .bind(&data)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    Ok(seq)
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
pub async fn list(store: &Store, f: &Filter) -> Result<Vec<Event>, StoreError> {
    let mut sql = String::from("SELECT * FROM audit_events WHERE 1 = 1");
    let mut args: Vec<Arg> = Vec::new();
    let mut push = |sql: &mut String, cond: &str, arg: Arg| {
        args.push(arg);
        sql.push_str(&cond.replace('?', &format!("${}", args.len())));
    };
    if let Some(a) = &f.actor {
        push(&mut sql, " AND actor = ?", Arg::Text(a.clone()));
    }
    if let Some(e) = &f.entitlement {
        push(&mut sql, " AND entitlement = ?", Arg::Text(e.clone()));
    }
    if let Some(a) = &f.action {
        if let Some(prefix) = a.strip_suffix('.') {
            push(
                &mut sql,
                " AND action LIKE ?",
                Arg::Text(format!("{prefix}.%")),
            );
        } else {
            push(&mut sql, " AND action = ?", Arg::Text(a.clone()));
        }
    }
    if let Some(r) = f.request_id {
        push(&mut sql, " AND request_id = ?", Arg::Text(r.to_string()));
    }
    if let Some(s) = f.since {
        push(&mut sql, " AND at >= ?", Arg::Int(s));
    }
    if let Some(u) = f.until {
        push(&mut sql, " AND at < ?", Arg::Int(u));
    }
    if let Some(b) = f.before_seq {
        push(&mut sql, " AND seq < ?", Arg::Int(b));
    }
    push(
        &mut sql,
        " ORDER BY seq DESC LIMIT ?",
        Arg::Int(f.limit.clamp(1, 10_000)),
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for a in args {
        q = match a {
            Arg::Text(t) => q.bind(t),
            Arg::Int(i) => q.bind(i),
        };
    }
    let rows = q.fetch_all(store.pool()).await?;
    rows.iter()
        .map(|r| Event::from_row(r).map_err(StoreError::from))
        .collect()
}

enum Arg {
    Text(String),
    Int(i64),
}

/// Events of one request, oldest first (the request timeline).
pub async fn for_request(store: &Store, id: Uuid) -> Result<Vec<Event>, StoreError> {
    let rows = sqlx::query("SELECT * FROM audit_events WHERE request_id = $1 ORDER BY seq")
        .bind(id.to_string())
        .fetch_all(store.pool())
        .await?;
    rows.iter()
        .map(|r| Event::from_row(r).map_err(StoreError::from))
        .collect()
}

/// The newest event with `action`, if any.
pub async fn last_of(store: &Store, action: &str) -> Result<Option<Event>, StoreError> {
    let row = sqlx::query("SELECT * FROM audit_events WHERE action = $1 ORDER BY seq DESC LIMIT 1")
        .bind(action)
        .fetch_optional(store.pool())
        .await?;
    row.as_ref()
        .map(Event::from_row)
        .transpose()
        .map_err(StoreError::from)
}

/// Recomputes the chain from `from` (default 1) straight from the table and
/// reports the first sequence number that does not verify.
pub async fn verify(store: &Store, from: Option<i64>) -> Result<jit_api::VerifyReport, StoreError> {
    let from = from.unwrap_or(1).max(1);
    let mut expected_prev = if from == 1 {
        GENESIS.to_owned()
    } else {
        let row = sqlx::query("SELECT hash FROM audit_events WHERE seq = $1")
            .bind(from - 1)
            .fetch_optional(store.pool())
            .await?;
        match row {
            Some(r) => r.try_get("hash")?,
            None => {
                return Ok(bad(
                    0,
                    None,
                    from - 1,
                    "row is missing (the chain cannot start there)",
                ));
            }
        }
    };
    let mut expected_seq = from;
    let mut checked = 0u64;
    let mut last_seq = None;
    let mut buf = Vec::with_capacity(1024);
    let mut rows = sqlx::query(
        "SELECT seq, at, actor, action, request_id, entitlement, data, prev_hash, hash
         FROM audit_events WHERE seq >= $1 ORDER BY seq",
    )
    .bind(from)
    .fetch(store.pool());
    while let Some(row) = rows.try_next().await? {
        let ev = Event::from_row(&row)?;
        if ev.seq != expected_seq {
            let why = if ev.seq > expected_seq {
                format!("row is missing (next row found is {})", ev.seq)
            } else {
                format!("row out of order (found {})", ev.seq)
            };
            return Ok(bad(checked, last_seq, expected_seq, &why));
        }
        if ev.prev_hash != expected_prev {
            return Ok(bad(
                checked,
                last_seq,
                ev.seq,
                "prev_hash does not match the previous row's hash",
            ));
        }
        buf.clear();
        canonical_bytes(
            &Canonical {
                seq: ev.seq,
                at: ev.at,
                actor: &ev.actor,
                action: &ev.action,
                request_id: ev.request_id.as_deref(),
                entitlement: ev.entitlement.as_deref(),
                data: &ev.data,
                prev_hash: &ev.prev_hash,
            },
            &mut buf,
        );
        if hex::encode(Sha256::digest(&buf)) != ev.hash {
            return Ok(bad(
                checked,
                last_seq,
                ev.seq,
                "content does not match its hash",
            ));
        }
        checked += 1;
        last_seq = Some(ev.seq);
        expected_seq += 1;
        expected_prev = ev.hash;
    }
    Ok(jit_api::VerifyReport {
        ok: true,
        checked,
        last_seq,
        first_bad_seq: None,
        problem: None,
    })
}

fn bad(checked: u64, last_seq: Option<i64>, seq: i64, why: &str) -> jit_api::VerifyReport {
    jit_api::VerifyReport {
        ok: false,
        checked,
        last_seq,
        first_bad_seq: Some(seq),
        problem: Some(why.to_owned()),
    }
}

/// Streams every event from `from` in order to `sink` (exports).
pub async fn for_each(
    store: &Store,
    from: i64,
    mut sink: impl FnMut(Event) -> std::io::Result<()>,
) -> Result<u64, StoreError> {
    let mut rows = sqlx::query("SELECT * FROM audit_events WHERE seq >= $1 ORDER BY seq")
        .bind(from)
        .fetch(store.pool());
    let mut n = 0;
    while let Some(row) = rows.try_next().await? {
        sink(Event::from_row(&row)?).map_err(|e| StoreError::Corrupt(format!("export: {e}")))?;
        n += 1;
    }
    Ok(n)
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
