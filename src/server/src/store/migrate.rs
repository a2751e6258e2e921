//! A small migration runner over the embedded `migrations/{sqlite,postgres}`.

use super::db::query;
use super::{Backend, Store, StoreError};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

impl Migration {
    /// `0001_init`: how reports name it.
    fn id(&self) -> String {
        format!("{:04}_{}", self.version, self.name)
    }
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sqlite: include_str!("../../../../migrations/sqlite/0001_init.sql"),
        postgres: include_str!("../../../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "audit_pending",
        sqlite: include_str!("../../../../migrations/sqlite/0002_audit_pending.sql"),
        postgres: include_str!("../../../../migrations/postgres/0002_audit_pending.sql"),
    },
    Migration {
        version: 3,
        name: "audit_seq_not_null",
        sqlite: include_str!("../../../../migrations/sqlite/0003_audit_seq_not_null.sql"),
        postgres: include_str!("../../../../migrations/postgres/0003_audit_seq_not_null.sql"),
    },
];

/// Advisory lock id that serialises migration runs on PostgreSQL.
const MIGRATION_LOCK: i64 = 7_301_001;

/// Applies what is missing, each migration in its own transaction; returns their names.
pub(super) async fn run(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let mut tx = store.begin().await?;
        if store.backend() == Backend::Postgres {
            // Brokers starting together must not race each other, not even on creating the
            // bookkeeping table (concurrent `CREATE TABLE IF NOT EXISTS` fails on PostgreSQL).
            query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut tx)
                .await?;
        }
        super::db::batch(
            &mut tx,
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version BIGINT PRIMARY KEY,
                 name TEXT NOT NULL,
                 applied_at BIGINT NOT NULL)",
        )
        .await?;
        let done = query("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(m.version)
            .fetch_optional(&mut tx)
            .await?;
        if done.is_some() {
            tx.rollback().await?;
            continue;
        }
        let sql = match store.backend() {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        super::db::batch(&mut tx, sql).await?;
        query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(crate::clock::to_ms(time::OffsetDateTime::now_utc()))
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        applied.push(m.id());
    }
    Ok(applied)
}

/// The migrations not yet applied (all of them on an empty database).
pub(super) async fn pending(store: &Store) -> Result<Vec<String>, StoreError> {
    let exists = match store.backend() {
        Backend::Sqlite => {
            query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'")
        }
        Backend::Postgres => query(
            "SELECT 1 FROM pg_catalog.pg_tables
             WHERE schemaname = current_schema() AND tablename = 'schema_migrations'",
        ),
    }
    .fetch_optional(store)
    .await?
    .is_some();
    let mut done = Vec::new();
    if exists {
        for row in query("SELECT version FROM schema_migrations")
            .fetch_all(store)
            .await?
        {
            done.push(row.try_get::<i64>("version")?);
        }
    }
    Ok(MIGRATIONS
        .iter()
        .filter(|m| !done.contains(&m.version))
        .map(Migration::id)
        .collect())
}
