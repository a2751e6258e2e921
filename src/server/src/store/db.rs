//! One small query interface over the two engines.
//!
//! SQLite runs in process through rusqlite, off the async runtime
//! ([`super::sqlite`]): writes on the one writer thread, a transaction's
//! statements there too, reads on blocking threads. PostgreSQL runs through
//! sqlx's native driver.
//!
//! The schema keeps to two column types, BIGINT and TEXT, so a bound value
//! is an [`Arg`] and a read value a [`Cell`] of one of those. Placeholders are
//! `$1`, `$2`, … on both engines (SQLite reads `$N` as a named parameter; it
//! is bound by its number, wherever it appears).

use std::borrow::Cow;
use std::sync::Arc;

use futures_util::TryStreamExt as _;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Column as _, Postgres, Row as _, TypeInfo as _, ValueRef as _};

use super::{Backend, Store, StoreError, Tx, sqlite};

/// Rows read ahead at a time by [`Query::for_each`] on SQLite.
const BATCH: usize = 256;

/// A value bound to a placeholder: a BIGINT or a TEXT, either maybe NULL
/// (PostgreSQL needs the type of a NULL too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// BIGINT.
    Int(Option<i64>),
    /// TEXT.
    Text(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Self::Int(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::Text(Some(v.to_owned()))
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Self::Text(Some(v))
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Self::Text(Some(v.clone()))
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Self::Text(v)
    }
}

impl From<&Option<String>> for Arg {
    fn from(v: &Option<String>) -> Self {
        Self::Text(v.clone())
    }
}

impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Self::Text(v.map(str::to_owned))
    }
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// NULL.
    Null,
    /// An integer (BIGINT, INTEGER, a count, a boolean as 0/1).
    Int(i64),
    /// Text.
    Text(String),
}

/// A type a [`Cell`] can be read as.
pub trait FromCell: Sized {
    /// The value, or what the cell held instead.
    fn from_cell(cell: &Cell) -> Result<Self, String>;
}

impl FromCell for i64 {
    fn from_cell(cell: &Cell) -> Result<Self, String> {
        match cell {
            Cell::Int(v) => Ok(*v),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}

impl FromCell for String {
    fn from_cell(cell: &Cell) -> Result<Self, String> {
        match cell {
            Cell::Text(v) => Ok(v.clone()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl<T: FromCell> FromCell for Option<T> {
    fn from_cell(cell: &Cell) -> Result<Self, String> {
        match cell {
            Cell::Null => Ok(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

/// One result row.
#[derive(Debug, Clone)]
pub struct Row {
    names: Arc<[String]>,
    cells: Vec<Cell>,
}

impl Row {
    /// The value of column `name`.
    pub fn try_get<T: FromCell>(&self, name: &str) -> Result<T, StoreError> {
        let i = self
            .names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| StoreError::Corrupt(format!("no column `{name}` in the result")))?;
        T::from_cell(&self.cells[i])
            .map_err(|e| StoreError::Corrupt(format!("column `{name}`: {e}")))
    }

    /// The value of the column at `index` (from 0).
    pub fn try_get_at<T: FromCell>(&self, index: usize) -> Result<T, StoreError> {
        let cell = self
            .cells
            .get(index)
            .ok_or_else(|| StoreError::Corrupt(format!("no column {index} in the result")))?;
        T::from_cell(cell).map_err(|e| StoreError::Corrupt(format!("column {index}: {e}")))
    }
}

/// Where a query runs: on the store (a read on any connection; on SQLite a
/// write waits its turn at the write lock) or inside a transaction.
pub enum On<'a> {
    /// Outside a transaction.
    Store(&'a Store),
    /// Inside this transaction.
    Tx(&'a mut Tx),
}

impl<'a> From<&'a Store> for On<'a> {
    fn from(s: &'a Store) -> Self {
        Self::Store(s)
    }
}

impl<'a> From<&'a mut Tx> for On<'a> {
    fn from(t: &'a mut Tx) -> Self {
        Self::Tx(t)
    }
}

/// A statement with its bound values.
#[derive(Debug, Clone)]
#[must_use = "a query does nothing until it is executed or fetched"]
pub struct Query {
    sql: Cow<'static, str>,
    args: Vec<Arg>,
    /// PostgreSQL: planned with its values at every run ([`Query::planned_each_run`]).
    planned_each_run: bool,
}

/// A statement written in the source.
pub fn query(sql: &'static str) -> Query {
    Query {
        sql: Cow::Borrowed(sql),
        args: Vec::new(),
        planned_each_run: false,
    }
}

/// A statement assembled at run time from constant pieces and `$n`
/// placeholders; never from input (that is what binding is for).
pub fn query_built(sql: String) -> Query {
    Query {
        sql: Cow::Owned(sql),
        args: Vec::new(),
        planned_each_run: false,
    }
}

/// `text` as a PostgreSQL string literal, for a statement that cannot take parameters (a
/// simple query, such as the `BEGIN` of [`Store::begin_with`](super::Store::begin_with)):
/// an escape string (`E'…'`) with every quote and backslash doubled, which reads back as
/// `text` whatever `standard_conforming_strings` is (the connection's encoding is UTF-8,
/// in which no multi-byte character contains a quote or backslash byte). `None` for text
/// PostgreSQL cannot hold (a NUL character): bind it instead.
pub fn literal(text: &str) -> Option<String> {
    if text.contains('\0') {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("E'");
    for c in text.chars() {
        if c == '\'' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    Some(out)
}

/// `= ANY (ARRAY(…))` or `IN (…)`: the rows that `pick` (`SELECT id FROM … LIMIT …`) picks, for
/// an `UPDATE` or a `DELETE` of at most that many rows (`WHERE id {picked}`); neither engine
/// has `… LIMIT` on those (SQLite only when built with it). PostgreSQL picks them into an array
/// first, so the pick runs once, before the change, which then finds them by primary key; it
/// locks each row as it picks it and passes over those another transaction holds (`FOR UPDATE
/// SKIP LOCKED`), so brokers doing the same at once share the rows out and never wait for each
/// other. SQLite writes one transaction at a time anyway.
pub(crate) fn picked(backend: Backend, pick: &str) -> String {
    match backend {
        Backend::Postgres => format!("= ANY (ARRAY({pick} FOR UPDATE SKIP LOCKED))"),
        Backend::Sqlite => format!("IN ({pick})"),
    }
}

/// Runs `delete` (`DELETE FROM t WHERE key`) on the rows `pick` picks ([`picked`]), its `$1`
/// bound to `value` and its `$2` to `limit`: a bounded delete; how many rows went. Planned with
/// its values at every run ([`Query::planned_each_run`]): such deletes run now and then, and a
/// plan a connection made while the table was small could read all of it.
pub(crate) async fn delete_picked(
    store: &Store,
    delete: &str,
    pick: &str,
    value: i64,
    limit: i64,
) -> Result<u64, StoreError> {
    query_built(format!("{delete} {}", picked(store.backend(), pick)))
        .bind(value)
        .bind(limit)
        .planned_each_run()
        .execute(store)
        .await
}

/// The placeholders of a multi-row `VALUES` list: `rows` tuples of
/// `columns` each, numbered on (`($1, $2), ($3, $4)` for 2 × 2); one row of
/// `n` is the list of an `IN`.
pub(crate) fn values_list(rows: usize, columns: usize) -> String {
    values_list_from(1, rows, columns)
}

/// [`values_list`] numbered from `$first` (a clause after others in one
/// statement).
pub(crate) fn values_list_from(first: usize, rows: usize, columns: usize) -> String {
    let tuple = |r: usize| {
        let slots: Vec<String> = (0..columns)
            .map(|c| format!("${}", first + r * columns + c))
            .collect();
        format!("({})", slots.join(", "))
    };
    (0..rows).map(tuple).collect::<Vec<_>>().join(", ")
}

/// What to do with the statement's result.
#[derive(Clone, Copy)]
enum Want {
    /// Rows affected.
    Count,
    /// At most one row.
    One,
    /// Every row.
    All,
}

/// A statement's result.
enum Out {
    Count(u64),
    Rows(Vec<Row>),
}

impl Query {
    /// PostgreSQL plans this statement with its values at every run (sent as an unnamed
    /// statement), instead of the plan a connection settles on for a statement it prepared:
    /// after five runs that is a generic plan, made without the values for the table as it
    /// was then, and kept until the table's statistics change. For a statement whose best
    /// plan turns on how large a table is now (the scheduler's claim,
    /// [`super::jobs::claim_and_next`]); planning costs about 0.1 ms a run. SQLite: no
    /// change.
    pub fn planned_each_run(mut self) -> Self {
        self.planned_each_run = true;
        self
    }

    /// Binds the next placeholder.
    pub fn bind(mut self, v: impl Into<Arg>) -> Self {
        self.args.push(v.into());
        self
    }

    /// Runs the statement; returns the number of rows it changed.
    pub async fn execute<'a>(self, on: impl Into<On<'a>>) -> Result<u64, StoreError> {
        match self.run(on.into(), Want::Count).await? {
            Out::Count(n) => Ok(n),
            Out::Rows(_) => Ok(0),
        }
    }

    /// The first row, if any.
    pub async fn fetch_optional<'a>(
        self,
        on: impl Into<On<'a>>,
    ) -> Result<Option<Row>, StoreError> {
        match self.run(on.into(), Want::One).await? {
            Out::Rows(rows) => Ok(rows.into_iter().next()),
            Out::Count(_) => Ok(None),
        }
    }

    /// The first row; [`StoreError::NotFound`] without one.
    pub async fn fetch_one<'a>(self, on: impl Into<On<'a>>) -> Result<Row, StoreError> {
        self.fetch_optional(on).await?.ok_or(StoreError::NotFound)
    }

    /// Every row.
    pub async fn fetch_all<'a>(self, on: impl Into<On<'a>>) -> Result<Vec<Row>, StoreError> {
        match self.run(on.into(), Want::All).await? {
            Out::Rows(rows) => Ok(rows),
            Out::Count(_) => Ok(Vec::new()),
        }
    }

    /// Every row, one at a time to `each`, without holding them all (exports).
    /// On SQLite the rows are read on a blocking thread and come over in
    /// batches of [`BATCH`], at most two batches ahead of `each`.
    pub async fn for_each(
        self,
        store: &Store,
        mut each: impl FnMut(Row) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        match store.engine() {
            super::Engine::Sqlite(db) => {
                let (batches, rows) = tokio::sync::mpsc::channel(2);
                let reading = sqlite::read(&db.readers, move |conn| {
                    let mut stmt = conn.prepare_cached(&self.sql)?;
                    bind_sqlite(&mut stmt, &self.args)?;
                    let names = column_names(&stmt);
                    let mut rows = stmt.raw_query();
                    let mut batch = Vec::with_capacity(BATCH);
                    while let Some(r) = rows.next()? {
                        batch.push(sqlite_row(&names, r)?);
                        if batch.len() == BATCH
                            && batches
                                .blocking_send(std::mem::replace(
                                    &mut batch,
                                    Vec::with_capacity(BATCH),
                                ))
                                .is_err()
                        {
                            // `each` failed: its error is the answer.
                            return Ok(());
                        }
                    }
                    let _ = batches.blocking_send(batch);
                    Ok(())
                });
                let consuming = async {
                    // Dropped at the end, also on an error of `each`: that stops the reader.
                    let mut rows = rows;
                    while let Some(batch) = rows.recv().await {
                        for row in batch {
                            each(row)?;
                            n += 1;
                        }
                    }
                    Ok::<_, StoreError>(())
                };
                let (read, consumed) = tokio::join!(reading, consuming);
                consumed?;
                read?;
            }
            super::Engine::Postgres(db) => {
                let mut names = None;
                let mut rows = self.pg().fetch(&db.pool);
                while let Some(r) = rows.try_next().await? {
                    let names = names.get_or_insert_with(|| pg_names(&r));
                    each(pg_row(names, &r)?)?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    async fn run(self, on: On<'_>, want: Want) -> Result<Out, StoreError> {
        match on {
            On::Tx(tx) => match tx.conn() {
                super::TxConn::Sqlite(t) => {
                    t.run(move |conn| run_sqlite(conn, &self.sql, &self.args, want))
                        .await
                }
                super::TxConn::Postgres(conn) => self.run_pg(conn, want).await,
            },
            On::Store(store) => match store.engine() {
                super::Engine::Sqlite(db) => {
                    // A read on a reader; a write on the writer thread, in turn.
                    let (sql, args) = (self.sql.clone(), self.args.clone());
                    let read = sqlite::read(&db.readers, move |conn| {
                        let mut stmt = conn.prepare_cached(&sql)?;
                        if !stmt.readonly() {
                            return Ok(None);
                        }
                        bind_sqlite(&mut stmt, &args)?;
                        collect_sqlite(conn, &mut stmt, want).map(Some)
                    })
                    .await?;
                    match read {
                        Some(out) => Ok(out),
                        None => {
                            db.write(move |conn| run_sqlite(conn, &self.sql, &self.args, want))
                                .await
                        }
                    }
                }
                super::Engine::Postgres(db) => {
                    let mut conn = db.pool.acquire().await?;
                    self.run_pg(&mut conn, want).await
                }
            },
        }
    }

    pub(in crate::store) fn pg(&self) -> sqlx::query::Query<'_, Postgres, PgArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(&*self.sql)).persistent(!self.planned_each_run);
        for a in &self.args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_deref()),
            };
        }
        q
    }

    async fn run_pg(&self, conn: &mut sqlx::PgConnection, want: Want) -> Result<Out, StoreError> {
        let q = self.pg();
        match want {
            Want::Count => Ok(Out::Count(q.execute(conn).await?.rows_affected())),
            Want::One => {
                let row = q.fetch_optional(conn).await?;
                Ok(Out::Rows(match row {
                    Some(r) => vec![pg_row(&pg_names(&r), &r)?],
                    None => Vec::new(),
                }))
            }
            Want::All => {
                let rows = q.fetch_all(conn).await?;
                let Some(first) = rows.first() else {
                    return Ok(Out::Rows(Vec::new()));
                };
                let names = pg_names(first);
                Ok(Out::Rows(
                    rows.iter()
                        .map(|r| pg_row(&names, r))
                        .collect::<Result<_, _>>()?,
                ))
            }
        }
    }
}

/// Runs several statements without bound values (migrations, test set-up).
pub async fn batch<'a>(on: impl Into<On<'a>>, sql: &str) -> Result<(), StoreError> {
    match on.into() {
        On::Tx(tx) => match tx.conn() {
            super::TxConn::Sqlite(t) => {
                let sql = sql.to_owned();
                t.run(move |conn| Ok(conn.execute_batch(&sql)?)).await?;
            }
            super::TxConn::Postgres(conn) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(conn)
                    .await?;
            }
        },
        On::Store(store) => match store.engine() {
            super::Engine::Sqlite(db) => {
                let sql = sql.to_owned();
                db.write(move |conn| Ok(conn.execute_batch(&sql)?)).await?;
            }
            super::Engine::Postgres(db) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&db.pool)
                    .await?;
            }
        },
    }
    Ok(())
}

fn run_sqlite(
    conn: &rusqlite::Connection,
    sql: &str,
    args: &[Arg],
    want: Want,
) -> Result<Out, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind_sqlite(&mut stmt, args)?;
    collect_sqlite(conn, &mut stmt, want)
}

fn collect_sqlite(
    conn: &rusqlite::Connection,
    stmt: &mut rusqlite::Statement<'_>,
    want: Want,
) -> Result<Out, StoreError> {
    let names = column_names(stmt);
    let mut rows = stmt.raw_query();
    match want {
        Want::Count => {
            // Step to the end (a statement may return rows, as PRAGMAs do).
            while rows.next()?.is_some() {}
            Ok(Out::Count(conn.changes()))
        }
        Want::One => {
            let row = rows.next()?.map(|r| sqlite_row(&names, r)).transpose()?;
            Ok(Out::Rows(row.into_iter().collect()))
        }
        Want::All => {
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(sqlite_row(&names, r)?);
            }
            Ok(Out::Rows(out))
        }
    }
}

/// Binds `args` by placeholder number: `$3` takes the third value.
fn bind_sqlite(stmt: &mut rusqlite::Statement<'_>, args: &[Arg]) -> Result<(), StoreError> {
    stmt.clear_bindings();
    for index in 1..=stmt.parameter_count() {
        let arg = stmt
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| n.checked_sub(1))
            .and_then(|n| args.get(n))
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "placeholder {index} of the statement has no `$n` value"
                ))
            })?;
        match arg {
            Arg::Int(v) => stmt.raw_bind_parameter(index, v)?,
            Arg::Text(v) => stmt.raw_bind_parameter(index, v)?,
        }
    }
    Ok(())
}

fn column_names(stmt: &rusqlite::Statement<'_>) -> Arc<[String]> {
    stmt.column_names().into_iter().map(str::to_owned).collect()
}

fn sqlite_row(names: &Arc<[String]>, r: &rusqlite::Row<'_>) -> Result<Row, StoreError> {
    use rusqlite::types::ValueRef;
    let cells = (0..names.len())
        .map(|i| {
            Ok(match r.get_ref(i)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Int(v),
                ValueRef::Text(t) => Cell::Text(
                    std::str::from_utf8(t)
                        .map_err(|e| StoreError::Corrupt(format!("text column: {e}")))?
                        .to_owned(),
                ),
                ValueRef::Real(_) | ValueRef::Blob(_) => {
                    return Err(StoreError::Corrupt(format!(
                        "column `{}` holds neither an integer nor text",
                        names[i]
                    )));
                }
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Row {
        names: names.clone(),
        cells,
    })
}

fn pg_names(r: &PgRow) -> Arc<[String]> {
    r.columns().iter().map(|c| c.name().to_owned()).collect()
}

fn pg_row(names: &Arc<[String]>, r: &PgRow) -> Result<Row, StoreError> {
    let cells = (0..r.len())
        .map(|i| {
            let raw = r.try_get_raw(i)?;
            if raw.is_null() {
                return Ok(Cell::Null);
            }
            let ty = raw.type_info().name().to_owned();
            Ok(match ty.as_str() {
                "INT8" => Cell::Int(r.try_get::<i64, _>(i)?),
                "INT4" => Cell::Int(i64::from(r.try_get::<i32, _>(i)?)),
                "INT2" => Cell::Int(i64::from(r.try_get::<i16, _>(i)?)),
                "BOOL" => Cell::Int(i64::from(r.try_get::<bool, _>(i)?)),
                "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" => Cell::Text(r.try_get::<String, _>(i)?),
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "column `{}` has type {other}, which jit does not read",
                        names[i]
                    )));
                }
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Row {
        names: names.clone(),
        cells,
    })
}
