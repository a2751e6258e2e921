//! SQLite in process, off the async runtime.
//!
//! rusqlite calls block: a statement is a few microseconds of CPU, but one
//! that meets a page not in memory, a lock another process holds or a slow
//! disk blocks its thread for as long as that takes. None of them runs on
//! the runtime's worker threads, whose blocking would stall every request
//! those threads serve:
//!
//! - **One writer thread** owns the one writing connection and takes turns
//!   from a queue, in order. A turn is a statement in autocommit, or a whole
//!   transaction: `BEGIN IMMEDIATE`, then the transaction's statements as its
//!   task sends them, until it commits, rolls back or is dropped (which rolls
//!   back). SQLite has one write lock per database; a second connection that
//!   finds it taken sleeps in the busy handler (1, 2, 5, 10 ms, …) rather
//!   than taking it the moment it is free, so the broker writes through one
//!   connection and its writers queue for it instead.
//! - **Reads** run on the runtime's blocking threads ([`tokio::task::spawn_blocking`]),
//!   each on a read-only connection from a small pool. In WAL mode readers
//!   never wait for the writer, nor it for them.
//! - **Durable commits in groups.** The writing connection runs with
//!   `synchronous = NORMAL`: a commit appends to the write-ahead log and
//!   never waits for the disk on the writer thread. A commit is answered only
//!   once a **syncer thread** has flushed the log (`fdatasync`) past it; one
//!   flush covers every commit made before it began, so commits share
//!   flushes and the writer goes on with the next turn meanwhile
//!   (docs/deploy.md, "SQLite durability").
//! - **Checkpoints** run on a **checkpointer thread** with a connection of
//!   its own, every [`CHECKPOINT_EVERY`]: `PRAGMA wal_checkpoint(PASSIVE)`
//!   copies what the log holds into the database file and syncs it without
//!   taking the write lock, so a checkpoint never holds up a transaction;
//!   checkpointing often keeps each one, and its flush, small.

use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{oneshot, watch};

use super::StoreError;

/// How long a SQLite statement waits for a lock another process holds.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the checkpointer copies the write-ahead log into the database file.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The write-ahead log is cut back to this size when it is restarted after
/// having grown past it (a long read held the checkpoints back).
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Idle read-only connections kept for the next reads.
const IDLE_READERS: usize = 16;

/// Work for the writer thread, on its connection.
type Job = Box<dyn FnOnce(&mut Connection, &Commits) + Send>;

/// What a job learns of the writer's commits.
struct Commits<'a> {
    /// The connection's `total_changes()` when the turn began.
    changes_at_start: u64,
    durable: &'a Durable,
    kick: &'a mpsc::Sender<()>,
}

impl Commits<'_> {
    /// After the job's statements: when they committed a change, its number
    /// in the order of commits (to wait for with [`Durable::wait`]); the
    /// syncer is told.
    fn committed(&self, conn: &Connection) -> Option<u64> {
        if !conn.is_autocommit() || conn.total_changes() == self.changes_at_start {
            return None;
        }
        let n = self.durable.written.fetch_add(1, Ordering::AcqRel) + 1;
        let _ = self.kick.send(());
        Some(n)
    }
}

/// Commits made durable in groups by the syncer thread.
struct Durable {
    /// Commits that changed something, counted by the writer.
    written: AtomicU64,
    /// How many of them the log holds on disk; or why it cannot be flushed
    /// (after a failed `fdatasync` nothing is known durable any more: every
    /// commit fails from then on, until the broker restarts).
    synced: watch::Sender<Result<u64, String>>,
}

impl Durable {
    /// Waits until commit `n` is on disk.
    async fn wait(&self, n: u64) -> Result<(), StoreError> {
        let mut synced = self.synced.subscribe();
        let state = synced
            .wait_for(|s| s.as_ref().map_or(true, |&done| done >= n))
            .await
            .map_err(|_| no_answer())?;
        match &*state {
            Ok(_) => Ok(()),
            Err(why) => Err(not_durable(why)),
        }
    }

    /// Whether flushing works.
    fn check(&self) -> Result<(), StoreError> {
        match &*self.synced.borrow() {
            Ok(_) => Ok(()),
            Err(why) => Err(not_durable(why)),
        }
    }
}

fn not_durable(why: &str) -> StoreError {
    StoreError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
        Some(format!(
            "the write-ahead log cannot be flushed to disk: {why}"
        )),
    ))
}

/// One turn of the writer.
enum Turn {
    /// A statement (or a batch of them) in autocommit.
    Once(Job),
    /// A transaction: `BEGIN IMMEDIATE`, said on `begun`, then the steps
    /// that come on `steps` until one ends it or their sender is dropped.
    Tx {
        begun: oneshot::Sender<Result<(), StoreError>>,
        steps: mpsc::Receiver<Step>,
    },
}

/// A statement of a transaction.
enum Step {
    /// A statement; the transaction goes on.
    Run(Job),
    /// `COMMIT` or `ROLLBACK`: the last step of the turn.
    End(Job),
}

/// A SQLite database: the writer, syncer and checkpointer threads, and the readers.
pub(crate) struct Sqlite {
    /// Turns for the writer thread, which stops when this is dropped (and
    /// the syncer after it).
    turns: mpsc::Sender<Turn>,
    durable: Arc<Durable>,
    /// Checkpoints asked for now; the checkpointer stops when this is dropped.
    checkpoints: mpsc::Sender<oneshot::Sender<Result<(), StoreError>>>,
    pub(crate) readers: Arc<Readers>,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite")
            .field("path", &self.readers.path)
            .finish_non_exhaustive()
    }
}

/// The file and its idle read-only connections.
pub(crate) struct Readers {
    pub(crate) path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// A read-only connection, back to the idle ones when dropped.
pub(crate) struct Reader<'a> {
    conn: Option<Connection>,
    pool: &'a Readers,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        // Present until drop.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self
                .pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if idle.len() < IDLE_READERS {
                idle.push(conn);
            }
        }
    }
}

impl Readers {
    /// An idle reader, or a new one. Blocks: call it on a blocking thread.
    pub(crate) fn get(&self) -> Result<Reader<'_>, StoreError> {
        let idle = self
            .idle
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
            pool: self,
        })
    }

    /// Closes the idle readers.
    pub(crate) fn clear(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// A read-only connection to the SQLite file at `path`.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// The error of a job that ended without an answer: it panicked (the
/// writer thread goes on with the next turn).
fn no_answer() -> StoreError {
    StoreError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERNAL),
        Some("the database writer gave no answer".to_owned()),
    ))
}

impl Sqlite {
    /// Opens (creating) the file at `path` in WAL mode and starts its threads.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let writer = open_writing(path)
            .map_err(|e| StoreError::Open(format!("cannot open `{}`: {e}", path.display())))?;
        writer.set_prepared_statement_cache_capacity(128);
        // Checkpoints are the checkpointer's; the automatic one, which would
        // run inside whichever commit crosses its threshold, with two
        // flushes, is only a backstop should the checkpointer fall behind.
        writer.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; \
             PRAGMA wal_autocheckpoint = 10000; PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
        ))?;
        let checkpointer = open_writing(path)?;
        let durable = Arc::new(Durable {
            written: AtomicU64::new(0),
            synced: watch::Sender::new(Ok(0)),
        });
        let (turns, queue) = mpsc::channel();
        let (kick, kicks) = mpsc::channel();
        let (checkpoints, asked) = mpsc::channel();
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        let for_writer = durable.clone();
        let for_syncer = durable.clone();
        spawn("jit-sqlite-writer", move || {
            write_loop(writer, &queue, &for_writer, &kick);
        })?;
        spawn("jit-sqlite-sync", move || {
            sync_loop(&wal, &for_syncer, &kicks);
        })?;
        spawn("jit-sqlite-checkpoint", move || {
            checkpoint_loop(&checkpointer, &asked);
        })?;
        Ok(Self {
            turns,
            durable,
            checkpoints,
            readers: Arc::new(Readers {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    fn send(&self, turn: Turn) -> Result<(), StoreError> {
        self.turns.send(turn).map_err(|_| no_answer())
    }

    /// Runs `f` on the writing connection in autocommit, in turn; answers
    /// once what it wrote is on disk.
    pub(crate) async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.send(Turn::Once(Box::new(move |conn, commits| {
            let result = f(conn);
            let _ = answer.send(result.map(|r| (r, commits.committed(conn))));
        })))?;
        let (r, commit) = answered.await.map_err(|_| no_answer())??;
        if let Some(n) = commit {
            self.durable.wait(n).await?;
        }
        Ok(r)
    }

    /// Waits for the writer's turn and begins a transaction (`BEGIN IMMEDIATE`:
    /// the write lock is taken at once, so read-then-write sequences never race).
    pub(crate) async fn begin(&self) -> Result<SqliteTx, StoreError> {
        let (begun, answer) = oneshot::channel();
        let (steps, queue) = mpsc::channel();
        self.send(Turn::Tx {
            begun,
            steps: queue,
        })?;
        answer.await.map_err(|_| no_answer())??;
        Ok(SqliteTx {
            steps,
            durable: self.durable.clone(),
        })
    }

    /// A checkpoint now, on the checkpointer's thread.
    pub(crate) async fn checkpoint(&self) -> Result<(), StoreError> {
        let (answer, answered) = oneshot::channel();
        self.checkpoints.send(answer).map_err(|_| no_answer())?;
        answered.await.map_err(|_| no_answer())?
    }

    /// Whether commits can be made durable (`/readyz`).
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        self.durable.check()
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map(drop)
        .map_err(|e| StoreError::Open(format!("cannot start thread `{name}`: {e}")))
}

/// A read-write connection: the writer's or the checkpointer's.
fn open_writing(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Commits do not wait for the disk on the writer thread (the syncer
    // flushes them); checkpoints flush the log before and the database file
    // after copying.
    conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
    Ok(conn)
}

/// Runs `f` with a read-only connection on a blocking thread.
pub(crate) async fn read<R: Send + 'static>(
    readers: &Arc<Readers>,
    f: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
) -> Result<R, StoreError> {
    let readers = readers.clone();
    tokio::task::spawn_blocking(move || f(&*readers.get()?))
        .await
        .map_err(|_| no_answer())?
}

/// A transaction holding the writer's turn ([`Sqlite::begin`]); dropped
/// without [`SqliteTx::commit`] or [`SqliteTx::rollback`], it rolls back.
pub(crate) struct SqliteTx {
    steps: mpsc::Sender<Step>,
    durable: Arc<Durable>,
}

impl SqliteTx {
    /// Runs `f` inside the transaction, on the writer thread.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.send(Step::Run(Box::new(move |conn, _| {
            let _ = answer.send(f(conn));
        })))?;
        answered.await.map_err(|_| no_answer())?
    }

    /// Commits; answered once the commit is on disk. The writer goes on
    /// with the next turn meanwhile.
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        self.end(true).await
    }

    /// Rolls back; the writer goes on with the next turn.
    pub(crate) async fn rollback(self) -> Result<(), StoreError> {
        self.end(false).await
    }

    async fn end(self, commit: bool) -> Result<(), StoreError> {
        let (answer, answered) = oneshot::channel();
        self.send(Step::End(Box::new(move |conn, commits| {
            let sql = if commit { "COMMIT" } else { "ROLLBACK" };
            let result = conn.execute_batch(sql).map_err(StoreError::from);
            let _ = answer.send(result.map(|()| {
                if commit {
                    commits.committed(conn)
                } else {
                    None
                }
            }));
        })))?;
        if let Some(n) = answered.await.map_err(|_| no_answer())?? {
            self.durable.wait(n).await?;
        }
        Ok(())
    }

    fn send(&self, step: Step) -> Result<(), StoreError> {
        self.steps.send(step).map_err(|_| no_answer())
    }
}

/// The writer thread: turns in order until the store is dropped.
fn write_loop(
    mut conn: Connection,
    turns: &mpsc::Receiver<Turn>,
    durable: &Durable,
    kick: &mpsc::Sender<()>,
) {
    while let Ok(turn) = turns.recv() {
        let commits = Commits {
            changes_at_start: conn.total_changes(),
            durable,
            kick,
        };
        match turn {
            Turn::Once(job) => run(&mut conn, &commits, job),
            Turn::Tx { begun, steps } => {
                let began = conn.execute_batch("BEGIN IMMEDIATE").map_err(Into::into);
                let ok = began.is_ok();
                // When nobody waits any more, the steps' sender is gone too.
                if begun.send(began).is_ok() && ok {
                    while let Ok(step) = steps.recv() {
                        match step {
                            Step::Run(job) => run(&mut conn, &commits, job),
                            Step::End(job) => {
                                run(&mut conn, &commits, job);
                                break;
                            }
                        }
                    }
                }
                // Dropped or failed part way: no transaction outlives its turn.
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
            }
        }
    }
}

/// Runs one job; a panic in it is the job's failure (its caller hears no
/// answer), not the writer's.
fn run(conn: &mut Connection, commits: &Commits<'_>, job: Job) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(conn, commits)));
}

/// The syncer thread: after each commit (many at a time when they come
/// faster than the disk flushes), `fdatasync` of the log, then every commit
/// counted before it began is durable. Stops with the writer.
fn sync_loop(wal: &Path, durable: &Durable, kicks: &mpsc::Receiver<()>) {
    let mut file = None;
    while kicks.recv().is_ok() {
        while kicks.try_recv().is_ok() {}
        let upto = durable.written.load(Ordering::Acquire);
        match flush(wal, &mut file) {
            Ok(()) => durable.synced.send_modify(|synced| {
                if let Ok(done) = synced {
                    *done = upto.max(*done);
                }
            }),
            Err(e) => {
                let why = format!("`{}`: {e}", wal.display());
                tracing::error!(error = %why, "cannot flush the SQLite write-ahead log: commits fail from now on");
                let _previous = durable.synced.send_replace(Err(why));
                return;
            }
        }
    }
}

/// `fdatasync` of the log file at `wal`, opened once and again should
/// SQLite have made a new one (same path, another file: after the last
/// connection closed, which checkpointed everything and removed it).
fn flush(wal: &Path, file: &mut Option<File>) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let current = match std::fs::metadata(wal) {
        Ok(m) => (m.dev(), m.ino()),
        // No log: its last commits were checkpointed into the (synced) database file.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let same = match file {
        Some(f) => {
            let m = f.metadata()?;
            (m.dev(), m.ino()) == current
        }
        None => false,
    };
    if !same {
        *file = Some(File::open(wal)?);
    }
    match file {
        Some(f) => f.sync_data(),
        None => Ok(()),
    }
}

/// The checkpointer thread: a passive checkpoint every [`CHECKPOINT_EVERY`]
/// and whenever one is asked for, until the store is dropped.
fn checkpoint_loop(
    conn: &Connection,
    asked: &mpsc::Receiver<oneshot::Sender<Result<(), StoreError>>>,
) {
    let checkpoint = || -> Result<(), StoreError> {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    };
    loop {
        match asked.recv_timeout(CHECKPOINT_EVERY) {
            Ok(answer) => {
                let _ = answer.send(checkpoint());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = checkpoint() {
                    tracing::warn!(error = %e, "could not checkpoint the database");
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced(db: &Sqlite) -> u64 {
        *db.durable.synced.borrow().as_ref().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_is_answered_once_the_log_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Sqlite::open(&dir.path().join("t.db")).unwrap());
        db.write(|c| Ok(c.execute_batch("CREATE TABLE t (x INTEGER)")?))
            .await
            .unwrap();
        let base = db.durable.written.load(Ordering::Acquire);
        // concurrent transactions and autocommit writes: each answered commit is flushed
        let tasks = (0..8).map(|task| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    // this commit's number is above every number counted before it
                    let before = db.durable.written.load(Ordering::Acquire);
                    if i % 2 == 0 {
                        let tx = db.begin().await.unwrap();
                        tx.run(move |c| Ok(c.execute("INSERT INTO t VALUES (?1)", [task])?))
                            .await
                            .unwrap();
                        tx.commit().await.unwrap();
                    } else {
                        db.write(move |c| Ok(c.execute("INSERT INTO t VALUES (?1)", [task])?))
                            .await
                            .unwrap();
                    }
                    assert!(
                        synced(&db) > before,
                        "answered before the flush: {} synced, {before} counted before",
                        synced(&db)
                    );
                }
            })
        });
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(db.durable.written.load(Ordering::Acquire), base + 160);
        assert_eq!(synced(&db), base + 160);

        // a rollback and a read-only transaction wait for nothing and count nothing
        let tx = db.begin().await.unwrap();
        tx.run(|c| Ok(c.execute("INSERT INTO t VALUES (0)", [])?))
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        let tx = db.begin().await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(db.durable.written.load(Ordering::Acquire), base + 160);

        // the database file holds them once checkpointed
        db.checkpoint().await.unwrap();
        let n: i64 = read(&db.readers, |c| {
            Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?)
        })
        .await
        .unwrap();
        assert_eq!(n, 160);
    }
}
