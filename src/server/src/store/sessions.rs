//! Browser sessions, stored server-side under the SHA-256 of their id.

use super::db::{delete_picked, query};
use super::{Store, StoreError};

/// A session row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// SHA-256 of the cookie value, hex.
    pub id_hash: String,
    /// Signed-in user, if any.
    pub user_key: Option<String>,
    /// JSON: the user, or pre-login state.
    pub data: String,
    /// CSRF token bound to this session.
    pub csrf_token: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub last_seen_at: i64,
    /// Unix ms (absolute end).
    pub expires_at: i64,
}

/// Stores a new session.
pub async fn insert(store: &Store, s: &SessionRow) -> Result<(), StoreError> {
    query(
        "INSERT INTO sessions (id_hash, user_key, data, csrf_token, created_at, last_seen_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&s.id_hash)
    .bind(&s.user_key)
    .bind(&s.data)
    .bind(&s.csrf_token)
    .bind(s.created_at)
    .bind(s.last_seen_at)
    .bind(s.expires_at)
    .execute(store)
    .await?;
    Ok(())
}

/// Reads a session by id hash.
pub async fn get(store: &Store, id_hash: &str) -> Result<Option<SessionRow>, StoreError> {
    let row = query("SELECT * FROM sessions WHERE id_hash = $1")
        .bind(id_hash)
        .fetch_optional(store)
        .await?;
    row.map(|r| {
        Ok(SessionRow {
            id_hash: r.try_get("id_hash")?,
            user_key: r.try_get("user_key")?,
            data: r.try_get("data")?,
            csrf_token: r.try_get("csrf_token")?,
            created_at: r.try_get("created_at")?,
            last_seen_at: r.try_get("last_seen_at")?,
            expires_at: r.try_get("expires_at")?,
        })
    })
    .transpose()
}

/// Marks activity (idle timeout).
pub async fn touch(store: &Store, id_hash: &str, now: i64) -> Result<(), StoreError> {
    query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2")
        .bind(now)
        .bind(id_hash)
        .execute(store)
        .await?;
    Ok(())
}

/// Ends a session; returns whether one was deleted (single use of pre-login state).
pub async fn delete(store: &Store, id_hash: &str) -> Result<bool, StoreError> {
    let done = query("DELETE FROM sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(store)
        .await?;
    Ok(done == 1)
}

/// Deletes up to `limit` sessions past their absolute end at `now`, the earliest ended first;
/// how many it deleted. The scheduler's sweep runs it: a session is otherwise deleted only when
/// it is presented after its end or signed out, so the sign-in pages' pre-login sessions and
/// every session whose browser never came back stayed for good, the user's ID token with them.
/// One short statement ([`super::db::picked`]: PostgreSQL brokers sweeping at once take
/// different rows).
pub async fn purge_expired(store: &Store, now: i64, limit: i64) -> Result<u64, StoreError> {
    delete_picked(
        store,
        "DELETE FROM sessions WHERE id_hash",
        "SELECT id_hash FROM sessions WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2",
        now,
        limit,
    )
    .await
}
