//! Users the broker has seen sign in (for notifications and grant providers).

use super::db::{Query, query, query_built};
use super::{Store, StoreError, Tx};
use crate::domain::Grantee;
use crate::domain::User;

/// The upsert of [`upsert`], its six values from `$1` on; `requests::create`
/// writes it as a clause of its own statement, numbered from elsewhere.
pub(super) fn upsert_sql(first: usize) -> String {
    let [key, email, name, oid, groups, at] = std::array::from_fn(|i| first + i);
    format!(
        "INSERT INTO users (key, email, name, oid, groups_json, updated_at)
         VALUES (${key}, ${email}, ${name}, ${oid}, ${groups}, ${at})
         ON CONFLICT (key) DO UPDATE SET email = excluded.email, name = excluded.name,
            oid = excluded.oid, groups_json = excluded.groups_json, updated_at = excluded.updated_at
         WHERE users.email IS DISTINCT FROM excluded.email OR users.name IS DISTINCT FROM excluded.name
            OR users.oid IS DISTINCT FROM excluded.oid
            OR users.groups_json IS DISTINCT FROM excluded.groups_json"
    )
}

/// Binds the six values of [`upsert_sql`].
pub(super) fn bind_upsert(q: Query, user: &User, now: i64) -> Query {
    let groups = serde_json::to_string(&user.groups).unwrap_or_else(|_| "[]".to_owned());
    q.bind(&user.key)
        .bind(&user.email)
        .bind(&user.name)
        .bind(&user.oid)
        .bind(groups)
        .bind(now)
}

/// Records a user's profile, or refreshes it when it changed (`updated_at`
/// is when it last changed).
pub async fn upsert(tx: &mut Tx, user: &User, now: i64) -> Result<(), StoreError> {
    bind_upsert(query_built(upsert_sql(1)), user, now)
        .execute(tx)
        .await?;
    Ok(())
}

/// A user's grantee facts.
pub async fn grantee(store: &Store, key: &str) -> Result<Option<Grantee>, StoreError> {
    let row = query("SELECT key, email, name, oid FROM users WHERE key = $1")
        .bind(key)
        .fetch_optional(store)
        .await?;
    row.map(|r| {
        Ok(Grantee {
            key: r.try_get("key")?,
            email: r.try_get("email")?,
            name: r.try_get("name")?,
            oid: r.try_get("oid")?,
        })
    })
    .transpose()
}
