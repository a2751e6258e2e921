//! Migrations with checksums, and the application role's grants.
//!
//! The SQL files under `migrations/{sqlite,postgres}` are embedded and run in order. What was
//! applied is recorded in `_sqlx_migrations`, sqlx's table, with the SHA-384 of each file as
//! applied: a landed migration that was edited afterwards no longer matches, and neither
//! `migrate` nor `serve` goes on (the error names it). PostgreSQL runs through sqlx's
//! [`Migrator`] (its advisory lock, one transaction per migration); SQLite, which the store
//! reaches through rusqlite rather than sqlx, keeps the same table, checksums and rules here.
//!
//! The list is written out rather than read by `sqlx::migrate!`: the macro would embed the same
//! files but compiles sqlx's PostgreSQL driver a second time, for the host, to do it; a unit
//! test checks that every file is listed.
//!
//! A database migrated by an earlier jit keeps its versions in `schema_migrations` (no
//! checksums). The first `migrate` of this version records them in `_sqlx_migrations` with the
//! checksums of the files it embeds, trusting that nobody edited them before; the old table is
//! left as it was.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Instant;

use sqlx::migrate::{Migration as SqlxMigration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr as _};

use super::{Backend, Engine, Store, StoreError, TxConn};

/// One embedded migration, in both dialects.
struct Source {
    version: i64,
    /// The file name without `.sql`, e.g. `0001_init`.
    file: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.file)
    }
}

impl Source {
    /// `0001_init`: how reports name it (its file name without `.sql`).
    fn id(&self) -> String {
        self.file.to_owned()
    }

    fn sql(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Sqlite => self.sqlite,
            Backend::Postgres => self.postgres,
        }
    }

    /// sqlx's form of it, which computes the checksum (SHA-384 of the SQL text); the
    /// description is the name after the number, as `sqlx::migrate!` makes it.
    fn to_sqlx(&self, backend: Backend) -> SqlxMigration {
        let name = self.file.split_once('_').map_or(self.file, |(_, n)| n);
        SqlxMigration::new(
            self.version,
            Cow::Owned(name.replace('_', " ")),
            MigrationType::Simple,
            AssertSqlSafe(self.sql(backend)).into_sql_str(),
            false,
        )
    }
}

macro_rules! migration {
    ($version:literal, $file:literal) => {
        Source {
            version: $version,
            file: $file,
            sqlite: include_str!(concat!("../../../../migrations/sqlite/", $file, ".sql")),
            postgres: include_str!(concat!("../../../../migrations/postgres/", $file, ".sql")),
        }
    };
}

/// Every migration, in order. Append-only, like the files.
const SOURCES: &[Source] = &[
    migration!(1, "0001_init"),
    migration!(2, "0002_audit_pending"),
    migration!(3, "0003_audit_seq_not_null"),
    migration!(4, "0004_requests_newest_first"),
    migration!(5, "0005_audit_checkpoints"),
    migration!(6, "0006_jobs_failures"),
    migration!(7, "0007_scheduled_requests"),
    migration!(8, "0008_requests_by_state"),
    migration!(9, "0009_jobs_done"),
];

/// What `serve` connecting as `database.app_role` may do, table by table: exactly what its
/// statements need. The audit tables get no UPDATE, DELETE (but for chained pending events,
/// which a trigger checks), TRUNCATE or ALTER; nothing is owned. A table added by a migration
/// needs its line here (a test compares this with the schema).
pub const APP_GRANTS: &[(&str, &str)] = &[
    ("users", "SELECT, INSERT, UPDATE"),
    ("requests", "SELECT, INSERT, UPDATE"),
    ("approvals", "SELECT, INSERT"),
    ("jobs", "SELECT, INSERT, UPDATE, DELETE"),
    ("sessions", "SELECT, INSERT, UPDATE, DELETE"),
    ("audit_events", "SELECT, INSERT"),
    ("audit_pending", "SELECT, INSERT, DELETE"),
    ("audit_checkpoints", "SELECT, INSERT"),
    ("_sqlx_migrations", "SELECT"),
];

/// Sequences `serve` draws from (`nextval` needs USAGE).
const APP_SEQUENCES: &[&str] = &["audit_pending_id_seq"];

/// Advisory lock id that serialises migration runs on PostgreSQL (around sqlx's own lock, so
/// that each run can say which migrations it applied).
const MIGRATION_LOCK: i64 = 7_301_001;

/// sqlx's bookkeeping table, as sqlx makes it on each engine.
const TABLE_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)";
const TABLE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
)";

/// A row of `_sqlx_migrations`.
struct Applied {
    version: i64,
    checksum: Vec<u8>,
    success: bool,
}

/// What the database holds, against what this build embeds.
struct Status {
    /// Not applied yet, in order.
    pending: Vec<&'static Source>,
    /// Versions are recorded only in an earlier jit's `schema_migrations`.
    legacy: bool,
}

/// Compares what was applied with what is embedded: an edited, unknown or half-applied
/// migration is an error naming it; otherwise the pending ones.
fn assess(applied: &[Applied], backend: Backend) -> Result<Vec<&'static Source>, StoreError> {
    for a in applied {
        let Some(source) = SOURCES.iter().find(|s| s.version == a.version) else {
            return Err(StoreError::Migration(format!(
                "the database has migration {:04}, which this jit does not have: it was \
                 migrated by a newer version; run that version",
                a.version
            )));
        };
        if !a.success {
            return Err(StoreError::Migration(format!(
                "migration `{}` failed part way on this database: repair it by hand, then \
                 remove its row from `_sqlx_migrations`",
                source.id()
            )));
        }
        if a.checksum != source.to_sqlx(backend).checksum.as_ref() {
            return Err(StoreError::Migration(format!(
                "migration `{}` was changed after it was applied to this database (its \
                 checksum differs): restore `migrations/{}/{}.sql` as it was; a change goes \
                 in a new migration",
                source.id(),
                match backend {
                    Backend::Sqlite => "sqlite",
                    Backend::Postgres => "postgres",
                },
                source.id()
            )));
        }
    }
    Ok(SOURCES
        .iter()
        .filter(|s| !applied.iter().any(|a| a.version == s.version))
        .collect())
}

/// Applies what is missing (after checking what was applied); returns the names of the
/// migrations this call applied.
pub(super) async fn run(store: &Store) -> Result<Vec<String>, StoreError> {
    match store.engine() {
        Engine::Postgres(db) => run_postgres(&db.pool).await,
        Engine::Sqlite(_) => run_sqlite(store).await,
    }
}

async fn run_postgres(pool: &sqlx::PgPool) -> Result<Vec<String>, StoreError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    let result = async {
        adopt_legacy_postgres(&mut conn).await?;
        let pending = assess(&applied_postgres(&mut conn).await?, Backend::Postgres)?;
        let migrator = Migrator::with_migrations(
            SOURCES
                .iter()
                .map(|s| s.to_sqlx(Backend::Postgres))
                .collect(),
        );
        migrator
            .run_direct(None, &mut *conn, false)
            .await
            .map_err(|e| StoreError::Migration(describe(&e)))?;
        Ok(pending.iter().map(|s| s.id()).collect())
    }
    .await;
    // A connection that goes back to the pool must not keep the lock.
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await?;
    result
}

/// sqlx's error, with the migration named as the files name it.
fn describe(e: &sqlx::migrate::MigrateError) -> String {
    use sqlx::migrate::MigrateError;
    let name = |v: i64| {
        SOURCES
            .iter()
            .find(|s| s.version == v)
            .map_or_else(|| format!("{v:04}"), Source::id)
    };
    match e {
        MigrateError::ExecuteMigration(e, v) => format!("migration `{}` failed: {e}", name(*v)),
        MigrateError::VersionMismatch(v) => format!(
            "migration `{}` was changed after it was applied to this database",
            name(*v)
        ),
        other => other.to_string(),
    }
}

/// The rows of `_sqlx_migrations` (none when the table does not exist).
async fn applied_postgres(conn: &mut sqlx::PgConnection) -> Result<Vec<Applied>, StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, Vec<u8>, bool)> =
        sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(version, checksum, success)| Applied {
            version,
            checksum,
            success,
        })
        .collect())
}

/// Records the versions an earlier jit kept in `schema_migrations` in `_sqlx_migrations`.
async fn adopt_legacy_postgres(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    use sqlx::Connection as _;
    let legacy: bool = sqlx::query_scalar(
        "SELECT to_regclass('_sqlx_migrations') IS NULL
            AND to_regclass('schema_migrations') IS NOT NULL",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !legacy {
        return Ok(());
    }
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(TABLE_POSTGRES).execute(&mut *tx).await?;
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&mut *tx)
            .await?;
    for version in versions {
        let m = known(version)?.to_sqlx(Backend::Postgres);
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES ($1, $2, TRUE, $3, 0)",
        )
        .bind(m.version)
        .bind(m.description.as_ref())
        .bind(m.checksum.as_ref())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn known(version: i64) -> Result<&'static Source, StoreError> {
    SOURCES
        .iter()
        .find(|s| s.version == version)
        .ok_or_else(|| {
            StoreError::Migration(format!(
                "the database has migration {version:04}, which this jit does not have: it was \
                 migrated by a newer version; run that version"
            ))
        })
}

/// SQLite: the same table and rules; the write lock (`BEGIN IMMEDIATE`) keeps two processes
/// from migrating at once.
async fn run_sqlite(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut done = Vec::new();
    loop {
        let mut tx = store.begin().await?;
        let TxConn::Sqlite(writer) = tx.conn() else {
            unreachable!("a SQLite store")
        };
        // On the writer thread, inside the transaction.
        let applied = writer.run(apply_next_sqlite).await?;
        tx.commit().await?;
        match applied {
            Some(id) => done.push(id),
            None => return Ok(done),
        }
    }
}

/// Applies the first pending migration, if any, and records it; returns its name.
fn apply_next_sqlite(conn: &mut rusqlite::Connection) -> Result<Option<String>, StoreError> {
    conn.execute_batch(TABLE_SQLITE)?;
    adopt_legacy_sqlite(conn)?;
    let pending = assess(&applied_sqlite(conn)?, Backend::Sqlite)?;
    let Some(next) = pending.first() else {
        return Ok(None);
    };
    let m = next.to_sqlx(Backend::Sqlite);
    let started = Instant::now();
    conn.execute_batch(next.sqlite)
        .map_err(|e| StoreError::Migration(format!("migration `{}` failed: {e}", next.id())))?;
    conn.execute(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (?1, ?2, TRUE, ?3, ?4)",
        rusqlite::params![
            m.version,
            m.description.as_ref(),
            m.checksum.as_ref(),
            i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX)
        ],
    )?;
    Ok(Some(next.id()))
}

fn applied_sqlite(conn: &rusqlite::Connection) -> Result<Vec<Applied>, StoreError> {
    let exists = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'")?
        .exists([])?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt =
        conn.prepare("SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version")?;
    let rows = stmt.query_map([], |r| {
        Ok(Applied {
            version: r.get(0)?,
            // A BLOB as sqlx writes it; anything else read as bytes, to fail the comparison.
            checksum: r
                .get_ref(1)?
                .as_bytes()
                .map(<[u8]>::to_vec)
                .unwrap_or_default(),
            success: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn adopt_legacy_sqlite(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    let table = |name: &str| -> rusqlite::Result<bool> {
        conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
            .exists([name])
    };
    let recorded: i64 =
        conn.query_row("SELECT COUNT(*) FROM _sqlx_migrations", [], |r| r.get(0))?;
    if recorded > 0 || !table("schema_migrations")? {
        return Ok(());
    }
    let mut stmt = conn.prepare("SELECT version FROM schema_migrations ORDER BY version")?;
    let versions = stmt
        .query_map([], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    for version in versions {
        let m = known(version)?.to_sqlx(Backend::Sqlite);
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (?1, ?2, TRUE, ?3, 0)",
            rusqlite::params![m.version, m.description.as_ref(), m.checksum.as_ref()],
        )?;
    }
    Ok(())
}

/// What is applied, without changing anything (no DDL: `serve` as the application role).
async fn status(store: &Store) -> Result<Status, StoreError> {
    let (applied, legacy) = match store.engine() {
        Engine::Postgres(db) => {
            let mut conn = db.pool.acquire().await?;
            let applied = applied_postgres(&mut conn).await?;
            let legacy: bool = sqlx::query_scalar(
                "SELECT to_regclass('_sqlx_migrations') IS NULL
                    AND to_regclass('schema_migrations') IS NOT NULL",
            )
            .fetch_one(&mut *conn)
            .await?;
            (applied, legacy)
        }
        Engine::Sqlite(db) => {
            super::sqlite::read(&db.readers, |conn| {
                let applied = applied_sqlite(conn)?;
                let legacy = applied.is_empty()
                    && conn
                        .prepare(
                            "SELECT 1 FROM sqlite_master WHERE type = 'table' \
                             AND name = 'schema_migrations'",
                        )?
                        .exists([])?;
                Ok((applied, legacy))
            })
            .await?
        }
    };
    Ok(Status {
        pending: assess(&applied, store.backend())?,
        legacy,
    })
}

/// The migrations not yet applied (all of them on an empty database); an error when an
/// applied one was edited, is unknown to this build or failed part way.
pub(super) async fn pending(store: &Store) -> Result<Vec<String>, StoreError> {
    Ok(status(store)
        .await?
        .pending
        .iter()
        .map(|s| s.id())
        .collect())
}

/// Nothing pending and nothing edited; otherwise an error that says what to do.
pub(super) async fn check(store: &Store) -> Result<(), StoreError> {
    let status = status(store).await?;
    if status.pending.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = status.pending.iter().map(|s| s.id()).collect();
    let why = if status.legacy {
        "; it was migrated by an earlier jit, whose records gain checksums at the next migrate"
    } else {
        ""
    };
    Err(StoreError::Migration(format!(
        "the database is not migrated ({} pending{why}): run `jit-server migrate` \
         (as the owner of the tables, `database.migrate_url`)",
        names.join(", ")
    )))
}

/// PostgreSQL: grants `role` exactly [`APP_GRANTS`] (and [`APP_SEQUENCES`]) in the current
/// schema, after revoking whatever it held there; refuses a role that could switch the audit
/// triggers off (a superuser, or a member of the tables' owner).
pub(super) async fn grant_app_role(store: &Store, role: &str) -> Result<(), StoreError> {
    let Engine::Postgres(db) = store.engine() else {
        return Err(StoreError::Migration(
            "`database.app_role` is for PostgreSQL: on SQLite the file's permissions are the \
             boundary"
                .to_owned(),
        ));
    };
    let mut tx = db.pool.begin().await?;
    let found: Option<(bool, bool, String)> = sqlx::query_as(
        "SELECT r.rolsuper,
                pg_has_role(r.oid, t.tableowner, 'MEMBER'),
                current_schema()::text
         FROM pg_roles r, pg_tables t
         WHERE r.rolname = $1 AND t.schemaname = current_schema() AND t.tablename = 'audit_events'",
    )
    .bind(role)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((superuser, owner, schema)) = found else {
        return Err(StoreError::Migration(format!(
            "role `{role}` (`database.app_role`) does not exist: create it first, e.g. \
             `CREATE ROLE {role} LOGIN PASSWORD '…'`"
        )));
    };
    if superuser || owner {
        return Err(StoreError::Migration(format!(
            "role `{role}` (`database.app_role`) is {} the owner of the tables: it could switch \
             the audit log's triggers off; use a role of its own",
            if superuser {
                "a superuser, above"
            } else {
                "a member of"
            }
        )));
    }
    let (role_q, schema_q) = (quote_ident(role), quote_ident(&schema));
    let mut sql = format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA {schema_q} FROM {role_q};
         REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema_q} FROM {role_q};
         GRANT USAGE ON SCHEMA {schema_q} TO {role_q};"
    );
    for (table, privileges) in APP_GRANTS {
        let _ = write!(
            sql,
            "\nGRANT {privileges} ON {schema_q}.{} TO {role_q};",
            quote_ident(table)
        );
    }
    for sequence in APP_SEQUENCES {
        let _ = write!(
            sql,
            "\nGRANT USAGE ON SEQUENCE {schema_q}.{} TO {role_q};",
            quote_ident(sequence)
        );
    }
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// PostgreSQL: the connection is `role` (or a member of it) and cannot switch the audit
/// triggers off or change the audit tables: not a superuser, not the tables' owner, no
/// UPDATE, DELETE or TRUNCATE on `audit_events`.
pub(super) async fn check_app_role(store: &Store, role: &str) -> Result<(), StoreError> {
    let Engine::Postgres(db) = store.engine() else {
        return Err(StoreError::Migration(
            "`database.app_role` is for PostgreSQL".to_owned(),
        ));
    };
    let row: Option<(String, bool, bool, bool, bool)> = sqlx::query_as(
        "SELECT current_user::text,
                pg_has_role(current_user, r.oid, 'MEMBER'),
                (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
                COALESCE(pg_has_role(current_user, t.tableowner, 'MEMBER'), FALSE),
                CASE WHEN to_regclass('audit_events') IS NULL THEN FALSE
                     ELSE has_table_privilege('audit_events', 'UPDATE, DELETE, TRUNCATE') END
         FROM pg_roles r
         LEFT JOIN pg_tables t ON t.schemaname = current_schema() AND t.tablename = 'audit_events'
         WHERE r.rolname = $1",
    )
    .bind(role)
    .fetch_optional(&db.pool)
    .await?;
    let Some((me, member, superuser, owner, may_change)) = row else {
        return Err(StoreError::Migration(format!(
            "role `{role}` (`database.app_role`) does not exist: run `jit-server migrate` as \
             the owner after creating it"
        )));
    };
    let problem = if !member {
        format!("`database.url` connects as `{me}`, which is not `{role}` (`database.app_role`)")
    } else if superuser || owner {
        format!(
            "`database.url` connects as `{me}`, which {} the audit tables' triggers off: \
             connect as `{role}`",
            if superuser {
                "is a superuser and can switch"
            } else {
                "owns the tables and can switch"
            }
        )
    } else if may_change {
        format!(
            "`{me}` may UPDATE, DELETE or TRUNCATE `audit_events`: run `jit-server migrate`, \
             which grants `{role}` only what the broker needs"
        )
    } else {
        return Ok(());
    };
    Err(StoreError::Migration(problem))
}

/// A PostgreSQL identifier, quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_listed_in_order() {
        for dialect in ["sqlite", "postgres"] {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations/");
            let mut files: Vec<String> = std::fs::read_dir(format!("{dir}{dialect}"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            let listed: Vec<String> = SOURCES.iter().map(|s| format!("{}.sql", s.id())).collect();
            assert_eq!(files, listed, "migrations/{dialect}");
        }
        for (i, s) in SOURCES.iter().enumerate() {
            assert_eq!(s.version, i64::try_from(i).unwrap() + 1, "{}", s.id());
            assert!(
                s.file.starts_with(&format!("{:04}_", s.version)),
                "{}",
                s.id()
            );
        }
    }

    #[test]
    fn an_edited_migration_is_named() {
        let mut applied: Vec<Applied> = SOURCES
            .iter()
            .map(|s| Applied {
                version: s.version,
                checksum: s.to_sqlx(Backend::Sqlite).checksum.into_owned(),
                success: true,
            })
            .collect();
        assert!(assess(&applied, Backend::Sqlite).unwrap().is_empty());
        // The other dialect's checksums differ: each engine is checked against its own files.
        assert!(assess(&applied, Backend::Postgres).is_err());
        applied[0].checksum[0] ^= 1;
        let e = assess(&applied, Backend::Sqlite).unwrap_err().to_string();
        assert!(
            e.contains("`0001_init` was changed") && e.contains("migrations/sqlite/0001_init.sql"),
            "{e}"
        );
        applied[0].checksum[0] ^= 1;
        applied.push(Applied {
            version: 99,
            checksum: Vec::new(),
            success: true,
        });
        let e = assess(&applied, Backend::Sqlite).unwrap_err().to_string();
        assert!(e.contains("migration 0099") && e.contains("newer"), "{e}");
        applied.pop();
        applied.truncate(1);
        let pending: Vec<String> = assess(&applied, Backend::Sqlite)
            .unwrap()
            .iter()
            .map(|s| s.id())
            .collect();
        assert_eq!(
            pending,
            [
                "0002_audit_pending",
                "0003_audit_seq_not_null",
                "0004_requests_newest_first",
                "0005_audit_checkpoints",
                "0006_jobs_failures",
                "0007_scheduled_requests",
                "0008_requests_by_state",
                "0009_jobs_done"
            ]
        );
    }
}
