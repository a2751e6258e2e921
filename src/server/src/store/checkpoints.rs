//! The database's copy of the signed audit checkpoints (`audit_checkpoints`, append-only):
//! the chain of checkpoints that brokers sharing the database extend, and what the pages and
//! exports show. The sinks off the host are the record that counts (`crate::checkpoint`).

use super::db::{On, Row, query};
use super::{Store, StoreError};

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
