//! A migrated [`Store`] in a fresh database, on SQLite or PostgreSQL.
//!
//! ```ignore
//! use crate::support::{TestDb, both_backends};
//!
//! // Two tests, `my_test::sqlite` and `my_test::postgres`, with the same body:
//! both_backends!(my_test, |db| {
//!     let mut tx = db.store.begin().await.unwrap();
//!     // ...
//! });
//!
//! // Or by hand, e.g. for a server under test:
//! let db = TestDb::new(Backend::Postgres).await;
//! let url = db.url.clone(); // hand it to `jit-server` as `JIT_DATABASE__URL`
//! ```
//!
//! The database is removed when the `TestDb` is dropped, also when the test fails: the SQLite
//! file's directory is deleted, the PostgreSQL database is dropped `WITH (FORCE)`.

use std::path::PathBuf;

use jit_server::store::{Backend, Store};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::{init, peer_env};

/// Every migration this build has, in order (as `jit-server migrate` names them).
pub const MIGRATIONS: [&str; 9] = [
    "0001_init",
    "0002_audit_pending",
    "0003_audit_seq_not_null",
    "0004_requests_newest_first",
    "0005_audit_checkpoints",
    "0006_jobs_failures",
    "0007_scheduled_requests",
    "0008_requests_by_state",
    "0009_jobs_done",
];

/// How errors list every migration as pending: `0001_init, …, 0005_… pending`.
pub fn all_pending() -> String {
    format!("{} pending", MIGRATIONS.join(", "))
}

/// A migrated store in a database of its own.
#[derive(Debug)]
pub struct TestDb {
    /// The store, migrated.
    pub store: Store,
    /// Connection URL of this database (for a server or CLI under test).
    pub url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Sqlite { dir: PathBuf },
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    /// A fresh, migrated database on `backend`.
    pub async fn new(backend: Backend) -> Self {
        let db = Self::unmigrated(backend).await;
        db.store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("migrations failed on {}: {e}", db.name()));
        db
    }

    /// A fresh SQLite file in a temporary directory, migrated.
    pub async fn sqlite() -> Self {
        Self::new(Backend::Sqlite).await
    }

    /// A fresh database `t_<random>` in the PostgreSQL cluster of `JIT_TEST_PG_URL`, migrated.
    pub async fn postgres() -> Self {
        Self::new(Backend::Postgres).await
    }

    /// A fresh, empty database on `backend` (no migrations applied).
    pub async fn unmigrated(backend: Backend) -> Self {
        init();
        let (url, max_connections, cleanup) = match backend {
            Backend::Sqlite => create_sqlite(),
            Backend::Postgres => create_postgres().await,
        };
        match Store::connect(&url, max_connections).await {
            Ok(store) => Self {
                store,
                url,
                cleanup,
            },
            Err(e) => {
                drop_database(&cleanup);
                panic!("cannot open test database `{url}`: {e}");
            }
        }
    }

    /// Which engine.
    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// `sqlite` or `postgres`, for assertion messages.
    pub fn name(&self) -> &'static str {
        match self.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Runs SQL as the database owner (a superuser on PostgreSQL), outside the store's API.
    pub async fn exec(&self, sql: &str) -> Result<(), jit_server::store::StoreError> {
        jit_server::store::db::batch(&self.store, sql).await
    }

    /// Switches off the audit log's append-only triggers, as a privileged attacker could.
    pub async fn disable_audit_triggers(&self) {
        disable_audit_triggers(&self.store).await;
    }
}

/// Switches off the audit log's append-only triggers of `store`'s database, as its owner (or
/// whoever holds the SQLite file) could.
pub async fn disable_audit_triggers(store: &Store) {
    let sql = match store.backend() {
        Backend::Sqlite => {
            "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; \
             DROP TRIGGER audit_append_in_chain;"
        }
        Backend::Postgres => "ALTER TABLE audit_events DISABLE TRIGGER USER",
    };
    jit_server::store::db::batch(store, sql)
        .await
        .unwrap_or_else(|e| panic!("cannot disable the audit triggers: {e}"));
}

/// What the owner of the SQLite file or of the PostgreSQL tables can do to get a row past the
/// constraints of `audit_events` (migration 0003): the triggers go, then SQLite's table is
/// rebuilt without the constraints on `seq`, PostgreSQL's loses the check on `seq` and the
/// NOT NULL on `actor` (its primary key still refuses a NULL `seq`).
pub async fn loosen_audit_table(store: &Store) {
    disable_audit_triggers(store).await;
    let sql = match store.backend() {
        Backend::Sqlite => {
            "CREATE TABLE loose (seq BIGINT PRIMARY KEY, at BIGINT NOT NULL, actor TEXT NOT NULL,
                 action TEXT NOT NULL, request_id TEXT, entitlement TEXT, data TEXT NOT NULL,
                 prev_hash TEXT NOT NULL, hash TEXT NOT NULL UNIQUE);
             INSERT INTO loose SELECT * FROM audit_events;
             DROP TABLE audit_events;
             ALTER TABLE loose RENAME TO audit_events;"
        }
        Backend::Postgres => {
            "ALTER TABLE audit_events DROP CONSTRAINT audit_events_seq_check;
             ALTER TABLE audit_events ALTER COLUMN actor DROP NOT NULL;"
        }
    };
    jit_server::store::db::batch(store, sql)
        .await
        .unwrap_or_else(|e| panic!("cannot loosen the audit table: {e}"));
}

/// An insert into `audit_events` of a row at `seq` (SQL text) by `actor` (SQL text) for
/// `request`, with a made-up hash: a row forged past the constraints.
pub fn stray_audit_row(seq: &str, actor: &str, request: uuid::Uuid) -> String {
    format!(
        "INSERT INTO audit_events (seq, at, actor, action, request_id, entitlement, data, prev_hash, hash)
         VALUES ({seq}, 1, {actor}, 'grant.activated', '{request}', NULL, '{{}}', '{zero}', 'f{unique}')",
        zero = jit_server::store::audit::GENESIS,
        unique = uuid::Uuid::new_v4().simple(),
    )
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database(&self.cleanup);
    }
}

fn create_sqlite() -> (String, u32, Cleanup) {
    let dir = std::env::temp_dir().join(format!("jit-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create `{}`: {e}", dir.display()));
    let url = format!("sqlite:{}", dir.join("jit.db").display());
    (url, 8, Cleanup::Sqlite { dir })
}

async fn create_postgres() -> (String, u32, Cleanup) {
    let admin_url = peer_env("JIT_TEST_PG_URL");
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at JIT_TEST_PG_URL: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create database `{name}`: {e}"));
    let _ = admin.close().await;
    let mut url =
        url::Url::parse(&admin_url).unwrap_or_else(|e| panic!("JIT_TEST_PG_URL is not a URL: {e}"));
    url.set_path(&name);
    (url.to_string(), 10, Cleanup::Postgres { admin_url, name })
}

/// Removes the database; never panics (it may run while a failed test unwinds).
fn drop_database(cleanup: &Cleanup) {
    match cleanup {
        Cleanup::Sqlite { dir } => {
            let _ = std::fs::remove_dir_all(dir);
        }
        Cleanup::Postgres { admin_url, name } => {
            let (admin_url, sql) = (
                admin_url.clone(),
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
            // Drop cannot await, and may run inside a runtime: use a thread with its own.
            let done = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let mut admin = PgConnection::connect(&admin_url).await?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut admin)
                        .await?;
                    admin.close().await
                })
                .map_err(std::io::Error::other)
            })
            .join();
            if let Ok(Err(e)) = done {
                eprintln!("warning: cannot drop test database `{name}`: {e}");
            }
        }
    }
}

/// A fresh, migrated database on each engine: SQLite first, then PostgreSQL.
pub async fn each_backend() -> Vec<TestDb> {
    vec![TestDb::sqlite().await, TestDb::postgres().await]
}

/// Defines a module `$name` with two tests, `sqlite` and `postgres`, that run the same body
/// with `$db` bound to a fresh [`TestDb`] of that engine. The body sees the enclosing module's
/// imports. Tests run on a multi-threaded runtime, so spawned tasks really run in parallel.
macro_rules! both_backends {
    ($(#[$meta:meta])* $name:ident, |$db:ident| $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports, reason = "the body may not need every import")]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let $db = $crate::support::TestDb::sqlite().await;
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let $db = $crate::support::TestDb::postgres().await;
                $body
            }
        }
    };
}
pub(crate) use both_backends;
