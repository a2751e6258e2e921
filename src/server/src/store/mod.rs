//! All SQL lives here. One code path serves SQLite and PostgreSQL through
//! the small query interface of [`db`]: ids are TEXT, times are BIGINT unix
//! milliseconds, flags are BIGINT 0/1, JSON is TEXT, and placeholders are `$n`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex as SyncMutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use thiserror::Error;
use tokio::sync::{Mutex, OwnedMutexGuard};

pub mod audit;
pub mod db;
pub mod export;
pub mod held;
pub mod jobs;
pub mod migrate;
mod pgtx;
pub mod requests;
mod seal;
pub mod sessions;
pub mod users;

pub use db::{query, query_built};
pub use pgtx::Write;

/// How often a broker on SQLite checkpoints the write-ahead log.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How long a SQLite statement waits for a lock another process holds.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which engine is behind the store.
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
    /// A row of the audit log cannot be read as an event: someone changed the
    /// table outside the broker (docs/audit.md, "No invisible rows").
    #[error("the audit log is damaged: {0}")]
    AuditDamaged(String),
    /// PostgreSQL said no.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// SQLite said no.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database URL or file cannot be used.
    #[error("database: {0}")]
    Open(String),
    /// The migrations applied to the database do not match this build's, or the
    /// application role cannot be used (says what to do).
    #[error("{0}")]
    Migration(String),
}

impl StoreError {
    /// Maps unique-constraint violations to [`StoreError::Conflict`].
    pub fn from_insert(e: Self, what: &str) -> Self {
        if e.is_unique_violation() {
            Self::Conflict(what.to_owned())
        } else {
            e
        }
    }

    /// A unique or primary-key constraint refused the write.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Self::Db(sqlx::Error::Database(db)) => db.is_unique_violation(),
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }

    /// PostgreSQL gave up waiting for a lock (`lock_timeout`).
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, Self::Db(sqlx::Error::Database(db)) if db.code().as_deref() == Some("55P03"))
    }
}

/// The database.
#[derive(Debug, Clone)]
pub struct Store {
    engine: Arc<Engine>,
}

/// The engine and its connections.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per store, behind an Arc: the size is paid once"
)]
pub(crate) enum Engine {
    /// SQLite in process.
    Sqlite(Sqlite),
    /// PostgreSQL through a pool.
    Postgres(Postgres),
}

/// A SQLite database: one connection writes, any number read.
///
/// SQLite has one write lock per database. A second connection that finds
/// it taken sleeps in the busy handler (1, 2, 5, 10 ms, …) rather than
/// taking it the moment it is free, so the broker writes through one
/// connection and its writers queue for it in order instead.
pub(crate) struct Sqlite {
    path: PathBuf,
    /// The writing connection; holding the lock is holding the turn.
    pub(crate) writer: Arc<Mutex<rusqlite::Connection>>,
    /// Idle read-only connections (WAL: readers never wait for the writer).
    readers: SyncMutex<Vec<rusqlite::Connection>>,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A PostgreSQL database.
pub(crate) struct Postgres {
    pub(crate) pool: PgPool,
    options: PgConnectOptions,
    /// Chains the events written to `audit_pending` (see [`seal`]).
    pub(crate) sealer: seal::Sealer,
}

impl std::fmt::Debug for Postgres {
    // The options hold the database password: say nothing of them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").finish_non_exhaustive()
    }
}

/// A read-only SQLite connection, back to the idle ones when dropped.
pub(crate) struct Reader<'a> {
    conn: Option<rusqlite::Connection>,
    db: &'a Sqlite,
}

impl std::ops::Deref for Reader<'_> {
    type Target = rusqlite::Connection;

    fn deref(&self) -> &rusqlite::Connection {
        // Present until drop.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self
                .db
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if idle.len() < 16 {
                idle.push(conn);
            }
        }
    }
}

impl Sqlite {
    fn open(path: &Path) -> Result<Self, StoreError> {
        use rusqlite::OpenFlags;
        let writer = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Open(format!("cannot open `{}`: {e}", path.display())))?;
        writer.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
        writer.set_prepared_statement_cache_capacity(128);
        // The broker checkpoints the write-ahead log in the background
        // (`Store::checkpoint`); the automatic checkpoint, which runs with an
        // fsync inside whichever commit crosses its threshold, is only the backstop.
        writer.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 10000;",
        )?;
        Ok(Self {
            path: path.to_owned(),
            writer: Arc::new(Mutex::new(writer)),
            readers: SyncMutex::new(Vec::new()),
        })
    }

    /// An idle reader, or a new one.
    pub(crate) fn reader(&self) -> Result<Reader<'_>, StoreError> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = if let Some(conn) = idle {
            conn
        } else {
            let conn = open_reader(&self.path)?;
            conn.set_prepared_statement_cache_capacity(128);
            conn
        };
        Ok(Reader {
            conn: Some(conn),
            db: self,
        })
    }
}

/// A read-only connection to the SQLite file at `path`.
pub(crate) fn open_reader(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
    Ok(conn)
}

/// How to reach the database outside the store's connections, for the bulk
/// read of `audit verify`.
#[derive(Clone)]
pub(crate) enum Native {
    /// The database file, opened read-only.
    Sqlite(PathBuf),
    /// The pool's own connect options.
    Postgres(Box<PgConnectOptions>),
}

/// An open write transaction ([`Store::begin`]). Dropped without
/// [`Tx::commit`], it rolls back.
pub struct Tx {
    conn: TxInner,
    /// PostgreSQL: audit events went to `audit_pending`; chain them after commit.
    pub(crate) chain_after_commit: bool,
    /// Audit events held instead of written ([`Tx::hold_audit`]).
    pub(crate) held: Option<Vec<held::HeldEvent>>,
    store: Store,
}

enum TxInner {
    Sqlite(SqliteTx),
    Postgres(pgtx::PgTx),
}

/// The SQLite writer inside `BEGIN IMMEDIATE`; rolls back when dropped open.
struct SqliteTx {
    conn: OwnedMutexGuard<rusqlite::Connection>,
    open: bool,
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if self.open {
            // Nothing to report to: the transaction is abandoned.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// The connection of a transaction, for [`db`].
pub(crate) enum TxConn<'a> {
    Sqlite(&'a mut rusqlite::Connection),
    Postgres(&'a mut sqlx::PgConnection),
}

impl Tx {
    /// The connection for a statement that is not deferred (PostgreSQL:
    /// the transaction begun, the deferred writes sent).
    pub(crate) async fn conn(&mut self) -> Result<TxConn<'_>, StoreError> {
        match &mut self.conn {
            TxInner::Sqlite(t) => Ok(TxConn::Sqlite(&mut t.conn)),
            TxInner::Postgres(t) => Ok(TxConn::Postgres(t.open().await?)),
        }
    }

    /// Where deferred writes wait: PostgreSQL's transaction; none on SQLite.
    pub(crate) fn deferring(&mut self) -> Option<&mut pgtx::PgTx> {
        match &mut self.conn {
            TxInner::Sqlite(_) => None,
            TxInner::Postgres(t) => Some(t),
        }
    }

    /// Which engine.
    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// From now on this transaction collects its audit events instead of
    /// writing them (the audit store is failing; see [`held`]). The caller
    /// takes them with [`Tx::take_held`] and makes them durable elsewhere
    /// before it commits.
    pub fn hold_audit(&mut self) {
        self.held.get_or_insert_with(Vec::new);
    }

    /// The events held so far.
    pub fn take_held(&mut self) -> Vec<held::HeldEvent> {
        self.held.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), StoreError> {
        let Self {
            conn,
            chain_after_commit,
            store,
            ..
        } = self;
        match conn {
            TxInner::Sqlite(mut t) => {
                t.conn.execute_batch("COMMIT")?;
                t.open = false;
            }
            TxInner::Postgres(t) => t.commit().await?,
        }
        if chain_after_commit && let Engine::Postgres(pg) = store.engine() {
            pg.sealer.kick(&pg.pool);
        }
        Ok(())
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), StoreError> {
        match self.conn {
            TxInner::Sqlite(mut t) => {
                t.open = false;
                t.conn.execute_batch("ROLLBACK")?;
            }
            TxInner::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }
}

impl Store {
    /// Connects to `sqlite:PATH` / `sqlite://PATH` (the file is created if
    /// missing) or `postgres://…`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let engine = if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = sqlite_path(rest)?;
            Engine::Sqlite(Sqlite::open(&path)?)
        } else {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .acquire_timeout(Duration::from_secs(30))
                .max_connections(max_connections.max(1))
                // A broken connection fails its query (and the pool drops it);
                // a round trip on every acquire costs more than it saves.
                .test_before_acquire(false)
                .connect_with(options.clone())
                .await?;
            Engine::Postgres(Postgres {
                pool,
                options,
                sealer: seal::Sealer::default(),
            })
        };
        Ok(Self {
            engine: Arc::new(engine),
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How to reach the database without the store's connections (bulk reads).
    pub(crate) fn native(&self) -> Native {
        match &*self.engine {
            Engine::Sqlite(db) => Native::Sqlite(db.path.clone()),
            Engine::Postgres(db) => Native::Postgres(Box::new(db.options.clone())),
        }
    }

    /// Applies pending migrations, after checking that none applied was edited
    /// since (`store::migrate`); returns the names of those it applied.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        migrate::run(self).await
    }

    /// Migrations not yet applied; an error when an applied one was edited.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        migrate::pending(self).await
    }

    /// Checks, without changing anything, that every migration is applied
    /// and none was edited since; the error says which and what to do.
    pub async fn check_migrations(&self) -> Result<(), StoreError> {
        migrate::check(self).await
    }

    /// PostgreSQL: grants the application role exactly what `serve` needs
    /// ([`migrate::APP_GRANTS`]), revoking the rest.
    pub async fn grant_app_role(&self, role: &str) -> Result<(), StoreError> {
        migrate::grant_app_role(self, role).await
    }

    /// PostgreSQL: the connection is the application role and cannot switch
    /// the audit triggers off or change the audit tables.
    pub async fn check_app_role(&self, role: &str) -> Result<(), StoreError> {
        migrate::check_app_role(self, role).await
    }

    /// Which engine.
    pub fn backend(&self) -> Backend {
        match &*self.engine {
            Engine::Sqlite(_) => Backend::Sqlite,
            Engine::Postgres(_) => Backend::Postgres,
        }
    }

    /// The most connections this store opens at once (PostgreSQL's pool size;
    /// SQLite: one writer and a reader per concurrent statement).
    pub fn max_connections(&self) -> u32 {
        match &*self.engine {
            Engine::Sqlite(_) => 1,
            Engine::Postgres(db) => db.pool.options().get_max_connections(),
        }
    }

    /// Begins a write transaction. On SQLite it waits for the writing
    /// connection and takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// read-then-write sequences never race. On PostgreSQL it takes a
    /// connection; `BEGIN` goes with the first statement that needs it, and
    /// deferred writes wait to go together (`store/pgtx.rs`).
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let conn = match &*self.engine {
            Engine::Sqlite(db) => {
                let conn = db.writer.clone().lock_owned().await;
                conn.execute_batch("BEGIN IMMEDIATE")?;
                TxInner::Sqlite(SqliteTx { conn, open: true })
            }
            Engine::Postgres(db) => TxInner::Postgres(pgtx::PgTx::new(db.pool.acquire().await?)),
        };
        Ok(Tx {
            conn,
            chain_after_commit: false,
            held: None,
            store: self.clone(),
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

    /// Closes the connections (PostgreSQL: the pool; SQLite: the idle readers).
    pub async fn close(&self) {
        match &*self.engine {
            Engine::Sqlite(db) => db
                .readers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear(),
            Engine::Postgres(db) => db.pool.close().await,
        }
    }

    /// SQLite: copies the write-ahead log back into the database file and
    /// syncs it (`PRAGMA wal_checkpoint(PASSIVE)`: readers and writers go on
    /// meanwhile), on a connection and a thread of its own. The scheduler
    /// calls it every [`CHECKPOINT_EVERY`], so the `fsync` is not paid by a
    /// request. PostgreSQL: nothing to do.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if let Engine::Sqlite(db) = &*self.engine {
            let path = db.path.clone();
            tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
                let conn = rusqlite::Connection::open_with_flags(
                    &path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
                Ok(())
            })
            .await
            .map_err(|e| StoreError::Open(format!("checkpoint: {e}")))??;
        }
        Ok(())
    }

    /// Cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        query("SELECT 1").fetch_one(self).await?;
        Ok(())
    }
}

/// The file of a `sqlite:` URL (what follows the scheme): `//PATH` or `PATH`,
/// optionally `?mode=rwc`, the default.
fn sqlite_path(rest: &str) -> Result<PathBuf, StoreError> {
    let (path, params) = rest.split_once('?').unwrap_or((rest, ""));
    let path = path.strip_prefix("//").unwrap_or(path);
    if path.is_empty() || path.starts_with(':') {
        return Err(StoreError::Open(
            "a SQLite URL names a file: `sqlite://PATH`".to_owned(),
        ));
    }
    for p in params.split('&').filter(|p| !p.is_empty()) {
        if p != "mode=rwc" {
            return Err(StoreError::Open(format!(
                "unsupported SQLite URL parameter `{p}`"
            )));
        }
    }
    Ok(PathBuf::from(path))
}

/// Reads a TEXT uuid column.
pub(crate) fn uuid_col(s: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::from_str(s).map_err(|_| StoreError::Corrupt(format!("bad uuid `{s}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_a_file() {
        for (url, path) in [
            ("//jit.db", "jit.db"),
            ("///var/lib/jit/jit.db", "/var/lib/jit/jit.db"),
            ("/tmp/x.db", "/tmp/x.db"),
            ("//jit.db?mode=rwc", "jit.db"),
        ] {
            assert_eq!(sqlite_path(url).unwrap(), PathBuf::from(path), "{url}");
        }
        for bad in ["", "//", ":memory:", "//x.db?cache=shared"] {
            assert!(sqlite_path(bad).is_err(), "{bad}");
        }
    }
}
