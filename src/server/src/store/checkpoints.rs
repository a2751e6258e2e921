//! The database's copy of the signed audit checkpoints (`audit_checkpoints`, append-only):
//! the chain of checkpoints that brokers sharing the database extend, and what the pages and
//! exports show. The sinks off the host are the record that counts (`crate::checkpoint`).

use super::db::{On, Row, query};
use super::{Native, Store, StoreError};

/// The advisory lock id of the checkpoint writer on PostgreSQL.
const WRITER_LOCK: i64 = 7_301_003;

/// A stored checkpoint: its number, the `seq` it covers, its hash and its signed JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// 1, 2, 3, …
    pub number: u64,
    /// The newest `seq` it covers.
    pub seq: i64,
    /// Its hash (what the next one names).
    pub hash: String,
    /// The signed checkpoint, JSON.
    pub body: String,
}

impl Stored {
    fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(Self {
            number: u64::try_from(row.try_get::<i64>("number")?)
                .map_err(|_| StoreError::Corrupt("checkpoint number below 0".to_owned()))?,
            seq: row.try_get("seq")?,
            hash: row.try_get("hash")?,
            body: row.try_get("body")?,
        })
    }
}

/// The newest checkpoint, if any.
pub async fn newest<'a>(on: impl Into<On<'a>>) -> Result<Option<Stored>, StoreError> {
    query("SELECT number, seq, hash, body FROM audit_checkpoints ORDER BY number DESC LIMIT 1")
        .fetch_optional(on)
        .await?
        .as_ref()
        .map(Stored::from_row)
        .transpose()
}

/// Records a checkpoint; a second one with the same number is a conflict.
pub async fn insert<'a>(on: impl Into<On<'a>>, cp: &Stored) -> Result<(), StoreError> {
    query("INSERT INTO audit_checkpoints (number, seq, hash, body) VALUES ($1, $2, $3, $4)")
        .bind(i64::try_from(cp.number).unwrap_or(i64::MAX))
        .bind(cp.seq)
        .bind(cp.hash.as_str())
        .bind(cp.body.as_str())
        .execute(on)
        .await
        .map_err(|e| StoreError::from_insert(e, "checkpoint number"))?;
    Ok(())
}

/// The signed JSON of every checkpoint covering a `seq` from `from_seq` on, oldest first, one
/// at a time to `each`, without holding them all (exports).
pub async fn for_each_covering(
    store: &Store,
    from_seq: i64,
    mut each: impl FnMut(String) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    query("SELECT body FROM audit_checkpoints WHERE seq >= $1 ORDER BY number")
        .bind(from_seq)
        .for_each(store, |row| each(row.try_get("body")?))
        .await
}

/// PostgreSQL: the checkpoint writer's lock, so that one broker of a cluster writes a given
/// checkpoint: a transaction-scoped advisory lock, taken without waiting, in a transaction that
/// lasts the round, on a connection of the writer's own outside the pool, kept open from round
/// to round (a new backend each round would cost more than the round). That transaction does
/// nothing but hold the lock: the round's reads and its insert run on the pool, one short
/// statement at a time, so signing and the sinks' writes hold no connection of the pool and no
/// lock a request could wait for. A transaction-scoped lock, unlike a session-level one, is
/// released by PostgreSQL whatever happens to the round (its connection lost, the broker
/// killed), and behaves the same behind a pooler in transaction mode. SQLite has one broker
/// and no lock.
#[derive(Default)]
pub struct WriterLock {
    conn: Option<sqlx::PgConnection>,
}

/// The lock, held for one round until [`WriterLock::release`]. Dropped instead (a round that
/// was cancelled), its connection closes, and PostgreSQL ends the transaction and the lock.
#[must_use = "the lock is held until released"]
pub struct Held {
    conn: Option<sqlx::PgConnection>,
}

impl WriterLock {
    /// Takes the lock if no other broker holds it: `None` when one does. A kept connection
    /// that fails (the server closed it) is dropped and a new one tried once.
    pub async fn try_lock(&mut self, store: &Store) -> Result<Option<Held>, StoreError> {
        let Native::Postgres(options, _) = store.native() else {
            return Ok(Some(Held { conn: None }));
        };
        let mut fresh = false;
        loop {
            let mut conn = if let Some(conn) = self.conn.take() {
                conn
            } else {
                fresh = true;
                sqlx::ConnectOptions::connect(&*options).await?
            };
            match lock(&mut conn).await {
                Ok(true) => return Ok(Some(Held { conn: Some(conn) })),
                Ok(false) => {
                    self.conn = Some(conn);
                    return Ok(None);
                }
                Err(_) if !fresh => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Ends the round's transaction, which releases the lock, and keeps the connection for
    /// the next round; a connection that fails is closed (which releases it too).
    pub async fn release(&mut self, mut held: Held) -> Result<(), StoreError> {
        let Some(mut conn) = held.conn.take() else {
            return Ok(());
        };
        sqlx::raw_sql("COMMIT").execute(&mut conn).await?;
        self.conn = Some(conn);
        Ok(())
    }
}

/// Opens a transaction and takes the lock in it; when another broker holds it, the
/// transaction is ended at once.
async fn lock(conn: &mut sqlx::PgConnection) -> Result<bool, StoreError> {
    sqlx::raw_sql("BEGIN").execute(&mut *conn).await?;
    let got = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_xact_lock($1)")
        .bind(WRITER_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    if !got {
        sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
    }
    Ok(got)
}
