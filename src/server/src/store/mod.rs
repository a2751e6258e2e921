//! All SQL lives here. One code path serves SQLite and PostgreSQL through
//! the small query interface of [`db`]: ids are TEXT, times are BIGINT unix
//! milliseconds, flags are BIGINT 0/1, JSON is TEXT, and placeholders are `$n`.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use thiserror::Error;

pub mod audit;
pub mod changes;
pub mod checkpoints;
pub mod db;
pub mod held;
pub mod jobs;
pub mod migrate;
pub mod report;
pub mod requests;
pub mod sessions;
mod sqlite;
pub mod users;

pub use db::{query, query_built};
pub use sqlite::CHECKPOINT_EVERY;

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
    /// PostgreSQL said no. (Not a `source`: the message already holds it, and
    /// `error: {:#}` would say it twice.)
    #[error("database: {0}")]
    Db(sqlx::Error),
    /// SQLite said no.
    #[error("database: {0}")]
    Sqlite(rusqlite::Error),
    /// The database URL or file cannot be used.
    #[error("database: {0}")]
    Open(String),
    /// The migrations applied to the database do not match this build's, or the
    /// application role cannot be used (says what to do).
    #[error("{0}")]
    Migration(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
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

    /// The unique index or constraint that refused a write, by name.
    /// PostgreSQL names it; SQLite names its columns, which
    /// [`SQLITE_UNIQUE`] maps back to the index's name.
    pub fn unique_constraint(&self) -> Option<&str> {
        if !self.is_unique_violation() {
            return None;
        }
        match self {
            Self::Db(sqlx::Error::Database(db)) => db.constraint(),
            Self::Sqlite(rusqlite::Error::SqliteFailure(_, Some(msg))) => {
                let columns = msg.strip_prefix("UNIQUE constraint failed: ")?;
                SQLITE_UNIQUE
                    .iter()
                    .find(|(c, _)| *c == columns)
                    .map(|(_, name)| *name)
            }
            _ => None,
        }
    }

    /// PostgreSQL gave up waiting for a lock (`lock_timeout`).
    pub fn is_lock_timeout(&self) -> bool {
        matches!(self, Self::Db(sqlx::Error::Database(db)) if db.code().as_deref() == Some("55P03"))
    }
}

/// The unique indexes whose refusals the store tells apart, by the columns
/// SQLite names when one refuses a write (`UNIQUE constraint failed: …`).
const SQLITE_UNIQUE: &[(&str, &str)] = &[
    (
        "requests.requester_key, requests.entitlement",
        requests::ONE_OPEN,
    ),
    ("requests.extends_id", requests::ONE_OPEN_EXTENSION),
];

/// The database.
#[derive(Debug, Clone)]
pub struct Store {
    engine: Arc<Engine>,
    changes: Arc<changes::Changes>,
    /// Told when a transaction that queued or moved a job committed: the
    /// scheduler's wake ([`Store::job_wake`]).
    job_wake: Arc<tokio::sync::Notify>,
    /// Until when (unix ms) the scheduler sleeps, as it last said; `i64::MAX` (every job is
    /// due before it wakes) while it claims or before it runs
    /// ([`Store::scheduler_sleeps_until`]).
    scheduler_sleeps_until: Arc<std::sync::atomic::AtomicI64>,
}

/// The engine and its connections.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per store, behind an Arc: the size is paid once"
)]
pub(crate) enum Engine {
    /// SQLite in process.
    Sqlite(sqlite::Sqlite),
    /// PostgreSQL through a pool.
    Postgres(Postgres),
}

/// A PostgreSQL database.
pub(crate) struct Postgres {
    pub(crate) pool: PgPool,
    options: PgConnectOptions,
    /// Chains the events written to `audit_pending` (see [`seal`]).
    pub(crate) sealer: audit::seal::Sealer,
}

impl std::fmt::Debug for Postgres {
    // The options hold the database password: say nothing of them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").finish_non_exhaustive()
    }
}

pub(crate) use sqlite::open_reader;

/// How to reach the database outside the store's connections, for the bulk
/// read of `audit verify`.
#[derive(Clone)]
pub(crate) enum Native {
    /// The database file, opened read-only.
    Sqlite(PathBuf),
    /// The pool's own connect options, and the pool.
    Postgres(Box<PgConnectOptions>, PgPool),
}

/// An open write transaction ([`Store::begin`]). Dropped without
/// [`Tx::commit`], it rolls back.
pub struct Tx {
    conn: TxInner,
    /// PostgreSQL: audit events went to `audit_pending`; chain them after commit.
    pub(crate) chain_after_commit: bool,
    /// Audit events held instead of written ([`Tx::hold_audit`]).
    pub(crate) held: Option<Vec<held::HeldEvent>>,
    /// Requests whose state changed: their waiters are woken after commit.
    pub(crate) changed: Vec<uuid::Uuid>,
    /// The earliest time a job queued or moved here falls due: the scheduler is woken
    /// after commit when it would otherwise sleep past it.
    pub(crate) jobs_due: Option<i64>,
    store: Store,
}

enum TxInner {
    Sqlite(sqlite::SqliteTx),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// The connection of a transaction, for [`db`]: on SQLite the writer
/// thread's turn, whose statements run there ([`sqlite::SqliteTx::run`]).
pub(crate) enum TxConn<'a> {
    Sqlite(&'a sqlite::SqliteTx),
    Postgres(&'a mut sqlx::PgConnection),
}

impl Tx {
    /// The connection the transaction's statements run on.
    pub(crate) fn conn(&mut self) -> TxConn<'_> {
        match &mut self.conn {
            TxInner::Sqlite(t) => TxConn::Sqlite(t),
            TxInner::Postgres(t) => TxConn::Postgres(t),
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

    /// Jobs falling due at `due` were queued or moved: the scheduler is woken after commit
    /// if it would sleep past the earliest.
    pub(crate) fn queued_due(&mut self, due: impl IntoIterator<Item = i64>) {
        self.jobs_due = due.into_iter().chain(self.jobs_due).min();
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
            changed,
            jobs_due,
            store,
            ..
        } = self;
        match conn {
            TxInner::Sqlite(t) => t.commit().await?,
            TxInner::Postgres(t) => t.commit().await?,
        }
        store.committed(chain_after_commit, changed, jobs_due);
        Ok(())
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), StoreError> {
        match self.conn {
            TxInner::Sqlite(t) => t.rollback().await?,
            TxInner::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }
}

/// Opens and closes one connection, so that a database that is down or
/// refuses the broker is named with its cause (the pool would only say it
/// timed out). A refused or unreachable server is tried again until `wait`
/// has passed (it may be starting); anything else (a wrong password, no
/// such database) fails at once.
async fn first_connection(options: &PgConnectOptions, wait: Duration) -> Result<(), StoreError> {
    use sqlx::Connection as _;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let cause =
            match tokio::time::timeout(left, sqlx::PgConnection::connect_with(options)).await {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    return Ok(());
                }
                Ok(Err(e)) if matches!(e, sqlx::Error::Io(_)) => e.to_string(),
                Ok(Err(e)) => return Err(unreachable_db(options, &e.to_string())),
                Err(_) => format!("no answer within {}s", wait.as_secs()),
            };
        if tokio::time::Instant::now() + Duration::from_millis(250) >= deadline {
            return Err(unreachable_db(options, &cause));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn unreachable_db(options: &PgConnectOptions, cause: &str) -> StoreError {
    StoreError::Open(format!(
        "cannot connect to PostgreSQL at {}:{} (database `{}`): {cause}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    ))
}

impl Store {
    /// Connects to `sqlite:PATH` / `sqlite://PATH` (the file is created if
    /// missing) or `postgres://…`, waiting up to 30 s for a PostgreSQL that is
    /// starting.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        Self::connect_within(url, max_connections, Duration::from_secs(30)).await
    }

    /// [`Store::connect`], waiting at most `wait` for PostgreSQL to answer
    /// (commands run by hand fail sooner than a starting broker).
    pub async fn connect_within(
        url: &str,
        max_connections: u32,
        wait: Duration,
    ) -> Result<Self, StoreError> {
        let engine = if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = sqlite_path(rest)?;
            Engine::Sqlite(sqlite::Sqlite::open(&path)?)
        } else {
            let options = PgConnectOptions::from_str(url)?;
            first_connection(&options, wait).await?;
            let pool = PgPoolOptions::new()
                .acquire_timeout(wait)
                .max_connections(max_connections.max(1))
                // A broken connection fails its query (and the pool drops it);
                // a round trip on every acquire costs more than it saves.
                .test_before_acquire(false)
                .connect_with(options.clone())
                .await?;
            Engine::Postgres(Postgres {
                pool,
                options,
                sealer: audit::seal::Sealer::default(),
            })
        };
        Ok(Self {
            engine: Arc::new(engine),
            changes: Arc::new(changes::Changes::new()),
            job_wake: Arc::default(),
            scheduler_sleeps_until: Arc::new(std::sync::atomic::AtomicI64::new(i64::MAX)),
        })
    }

    /// Wakes this broker's scheduler: told by every commit that queued or
    /// moved a job (and by the service when a job is due at once).
    pub fn job_wake(&self) -> &Arc<tokio::sync::Notify> {
        &self.job_wake
    }

    /// The scheduler says it sleeps until unix ms `at` (`i64::MAX`: it is claiming, wake it
    /// for every job, as if it slept for ever). A commit then wakes it only for a job due before that: an activation's
    /// commit, which queues the grant's expiry an hour ahead, costs the scheduler no round of
    /// claiming nothing. Said before each sleep and at the start of each claim, so a job
    /// committed while it claims wakes it (the wake is kept until it waits).
    pub fn scheduler_sleeps_until(&self, at: i64) {
        self.scheduler_sleeps_until
            .store(at, std::sync::atomic::Ordering::SeqCst);
    }

    /// Who waits for which request to change ([`changes`]).
    pub fn changes(&self) -> &Arc<changes::Changes> {
        &self.changes
    }

    /// PostgreSQL: from now on this broker hears of the request changes
    /// other brokers make and tells them of its own ([`changes`]). SQLite:
    /// nothing to do, the broker is alone.
    pub async fn share_changes(&self) -> Result<(), StoreError> {
        if let Engine::Postgres(db) = &*self.engine {
            self.changes.listen(&db.options).await?;
        }
        Ok(())
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How to reach the database without the store's connections (bulk reads).
    pub(crate) fn native(&self) -> Native {
        match &*self.engine {
            Engine::Sqlite(db) => Native::Sqlite(db.readers.path.clone()),
            Engine::Postgres(db) => Native::Postgres(Box::new(db.options.clone()), db.pool.clone()),
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

    /// Begins a write transaction. On SQLite it waits for the writer
    /// thread's turn and takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// read-then-write sequences never race; its statements run on that
    /// thread ([`sqlite`]). On PostgreSQL it takes a connection and sends
    /// `BEGIN`; each statement is then a round trip of its own, so a hot path
    /// that writes several tables at once is one statement written out in
    /// `store/` ([`requests::create`]).
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let conn = match &*self.engine {
            Engine::Sqlite(db) => TxInner::Sqlite(db.begin().await?),
            Engine::Postgres(db) => TxInner::Postgres(db.pool.begin().await?),
        };
        Ok(self.tx(conn))
    }

    fn tx(&self, conn: TxInner) -> Tx {
        Tx {
            conn,
            chain_after_commit: false,
            held: None,
            changed: Vec::new(),
            jobs_due: None,
            store: self.clone(),
        }
    }

    /// PostgreSQL only: a transaction begun by `statements`, a simple query that starts with
    /// `BEGIN` and may go on with statements of its own (no parameters: values in it are
    /// literals, [`db::literal`]), sent in one round trip. On SQLite an error: its statements
    /// would not be run.
    ///
    /// When a statement after `BEGIN` fails the transaction is rolled back and the error is
    /// sqlx's `BeginFailed` (the server's message is not kept by sqlx on this path).
    pub async fn begin_with(&self, statements: String) -> Result<Tx, StoreError> {
        let Engine::Postgres(db) = &*self.engine else {
            return Err(StoreError::Db(sqlx::Error::Configuration(
                "a transaction begun by statements of its own is PostgreSQL's".into(),
            )));
        };
        let conn = TxInner::Postgres(db.pool.begin_with(sqlx::AssertSqlSafe(statements)).await?);
        Ok(self.tx(conn))
    }

    /// What follows a commit: PostgreSQL's sealer chains the events written
    /// to `audit_pending`, the waiters of `changed` requests wake, and the
    /// scheduler looks again when a job was queued or moved that falls due before it
    /// would.
    fn committed(&self, chained: bool, changed: Vec<uuid::Uuid>, jobs_due: Option<i64>) {
        if chained && let Engine::Postgres(pg) = self.engine() {
            pg.sealer.kick(&pg.pool);
        }
        self.changes.committed(changed);
        let sleeps_until = self
            .scheduler_sleeps_until
            .load(std::sync::atomic::Ordering::SeqCst);
        if jobs_due.is_some_and(|due| due <= sleeps_until) {
            self.job_wake.notify_one();
        }
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
        self.changes.stop();
        match &*self.engine {
            Engine::Sqlite(db) => db.readers.clear(),
            Engine::Postgres(db) => db.pool.close().await,
        }
    }

    /// SQLite: copies the write-ahead log back into the database file and
    /// syncs it now (`PRAGMA wal_checkpoint(PASSIVE)`: readers and writers go
    /// on meanwhile), on the checkpointer's thread, which also does so every
    /// [`CHECKPOINT_EVERY`] by itself. PostgreSQL: nothing to do.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        match &*self.engine {
            Engine::Sqlite(db) => db.checkpoint().await,
            Engine::Postgres(_) => Ok(()),
        }
    }

    /// Cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        if let Engine::Sqlite(db) = &*self.engine {
            db.check()?;
        }
        query("SELECT 1").fetch_one(self).await?;
        Ok(())
    }
}

/// The file a `sqlite:` URL names (`None` for other URLs or a malformed one).
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    sqlite_path(url.strip_prefix("sqlite:")?).ok()
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
        assert_eq!(
            sqlite_file("sqlite://jit-dev.db"),
            Some(PathBuf::from("jit-dev.db"))
        );
        assert_eq!(sqlite_file("postgres://db/jit"), None);
    }
}
