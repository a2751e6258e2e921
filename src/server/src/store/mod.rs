//! All SQL lives here. One code path serves SQLite and PostgreSQL through
//! sqlx's `Any` driver: ids are TEXT, times are BIGINT unix milliseconds,
//! flags are BIGINT 0/1, JSON is TEXT, and placeholders are `$n`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, Transaction};
use thiserror::Error;

pub mod audit;
pub mod export;
pub mod jobs;
mod migrate;
pub mod requests;
pub mod sessions;
pub mod users;

/// How often a broker on SQLite checkpoints the write-ahead log.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// An open database transaction.
pub type Tx = Transaction<'static, Any>;

/// Which engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A store failure.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A uniqueness rule held: the thing exists already.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Nothing by that id.
    #[error("not found")]
    NotFound,
    /// A row held something this version cannot read.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database said no.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// SQLite said no, through rusqlite (the bulk read of `audit verify`).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl StoreError {
    /// Maps unique-constraint violations to [`StoreError::Conflict`].
    pub fn from_insert(e: sqlx::Error, what: &str) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            return Self::Conflict(what.to_owned());
        }
        Self::Db(e)
    }
}

/// The database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// Also says which engine it is ([`Store::backend`]).
    native: Native,
}

/// How to open a connection of the engine's own driver, outside the pool,
/// for the bulk read of `audit verify`: through `Any`, every value is copied
/// into an owned one and SQLite rows cross threads one by one, which cost
/// most of the time (docs/performance.md).
#[derive(Clone)]
pub(crate) enum Native {
    /// The database file, opened read-only with rusqlite.
    Sqlite(PathBuf),
    /// The pool's own connect options.
    Postgres(Box<PgConnectOptions>),
}

impl std::fmt::Debug for Native {
    // The options hold the database password: name the engine only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sqlite(_) => "Native(sqlite)",
            Self::Postgres(_) => "Native(postgres)",
        })
    }
}

impl Store {
    /// Connects to `sqlite:…` or `postgres://…`; creates the SQLite file if missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        install_default_drivers();
        let (backend, url) = if url.starts_with("sqlite:") {
            let url = if url.contains("mode=") {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            (Backend::Postgres, url.to_owned())
        };
        let options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(30))
            .max_connections(match backend {
                Backend::Sqlite => max_connections.clamp(1, 8),
                Backend::Postgres => max_connections,
            })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // The broker checkpoints the write-ahead log in the background
                        // (`Store::checkpoint`); the automatic checkpoint, which runs
                        // with an fsync inside whichever commit crosses its threshold,
                        // is only the backstop.
                        sqlx::raw_sql(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                             PRAGMA wal_autocheckpoint = 10000;",
                        )
                        .execute(conn)
                        .await?;
                    }
                    Ok(())
                })
            });
        let native = match backend {
            Backend::Sqlite => Native::Sqlite(
                SqliteConnectOptions::from_str(&url)?
                    .get_filename()
                    .to_owned(),
            ),
            Backend::Postgres => Native::Postgres(Box::new(PgConnectOptions::from_str(&url)?)),
        };
        let pool = options.connect(&url).await?;
        Ok(Self { pool, native })
    }

    /// How to reach the database without the pool (bulk reads).
    pub(crate) fn native(&self) -> &Native {
        &self.native
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        migrate::run(self).await
    }

    /// Migrations not yet applied.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        migrate::pending(self).await
    }

    /// The pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which engine.
    pub fn backend(&self) -> Backend {
        match self.native {
            Native::Sqlite(_) => Backend::Sqlite,
            Native::Postgres(_) => Backend::Postgres,
        }
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so read-then-write sequences never race.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match self.backend() {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// `FOR UPDATE` on PostgreSQL; nothing on SQLite, whose write
    /// transactions are already exclusive.
    pub fn for_update(&self) -> &'static str {
        match self.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// SQLite: copies the write-ahead log back into the database file and
    /// syncs it (`PRAGMA wal_checkpoint(PASSIVE)`: readers and writers go on
    /// meanwhile). The scheduler calls it every [`CHECKPOINT_EVERY`], so the
    /// `fsync` is not paid by a request. PostgreSQL: nothing to do.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if self.backend() == Backend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Reads a TEXT uuid column.
pub(crate) fn uuid_col(s: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::from_str(s).map_err(|_| StoreError::Corrupt(format!("bad uuid `{s}`")))
}
