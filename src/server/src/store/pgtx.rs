//! A PostgreSQL transaction that saves round trips.
//!
//! Every statement is a round trip to a backend process, and on a small
//! machine their count, more than their work, bounds the broker
//! (docs/performance.md). So a transaction sends `BEGIN` only with the first
//! statement that needs it open, and a write whose result nobody reads
//! ([`Query::defer`](super::db::Query::defer)) waits to go with the others
//! as one statement of data-modifying `WITH` clauses: before the
//! transaction's next statement that is not deferred, or at commit. A
//! transaction of deferred writes only is that one statement in autocommit,
//! which PostgreSQL runs atomically: a new request (its requester, the
//! request, its audit events and its activation job) is one round trip
//! instead of six.
//!
//! The statements of one `WITH` see the database as it was before all of
//! them and run in no fixed order. So a deferred write joins the waiting ones
//! only if none of them writes its table, with one exception: an insert of
//! new rows may join an update of its table, which cannot have touched
//! them. Otherwise the waiting writes go first. Every table is then written
//! by at most one statement that could see another's rows, rows keep the
//! order of their statement (the audit events' order is their order in the
//! chain), and no row is written twice.

use std::time::Instant;

use sqlx::pool::PoolConnection;

use super::StoreError;
use super::db::{Arg, Query};

/// What a deferred write writes.
#[derive(Debug, Clone)]
#[must_use]
pub struct Write {
    table: &'static str,
    kind: Kind,
    conflict: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Adds new rows only.
    Insert,
    /// May change rows that exist (an update, or an insert that updates on
    /// conflict).
    Update,
}

impl Write {
    /// An insert of new rows into `table`.
    pub fn insert(table: &'static str) -> Self {
        Self {
            table,
            kind: Kind::Insert,
            conflict: None,
        }
    }

    /// A write that may change existing rows of `table`.
    pub fn update(table: &'static str) -> Self {
        Self {
            table,
            kind: Kind::Update,
            conflict: None,
        }
    }

    /// A unique index of the table refusing the write means `what`
    /// ([`StoreError::Conflict`]).
    pub fn on_conflict(mut self, what: String) -> Self {
        self.conflict = Some(what);
        self
    }

    /// The error a refused write reports: a unique violation of this
    /// write's table is the conflict it names.
    pub(crate) fn error(&self, e: StoreError) -> StoreError {
        match &self.conflict {
            Some(what) => StoreError::from_insert(e, what),
            None => e,
        }
    }

    /// Whether this write may go in one statement with `earlier`.
    fn joins(&self, earlier: &Self) -> bool {
        self.table != earlier.table || (self.kind == Kind::Insert && earlier.kind == Kind::Update)
    }
}

/// The audit events waiting to be chained: a statement that writes them
/// counts as an audit append in the metrics.
const AUDIT_TABLE: &str = "audit_pending";

/// An open PostgreSQL transaction ([`super::Tx`]).
pub(crate) struct PgTx {
    conn: Conn,
    waiting: Vec<(Write, Query)>,
}

enum Conn {
    /// Nothing sent yet.
    Idle(PoolConnection<sqlx::Postgres>),
    /// After `BEGIN`.
    Open(sqlx::Transaction<'static, sqlx::Postgres>),
    /// `BEGIN` failed.
    Broken,
}

impl PgTx {
    pub(crate) fn new(conn: PoolConnection<sqlx::Postgres>) -> Self {
        Self {
            conn: Conn::Idle(conn),
            waiting: Vec::new(),
        }
    }

    /// Holds `q` back, after the waiting writes if it cannot join them.
    pub(crate) async fn defer(&mut self, write: Write, q: Query) -> Result<(), StoreError> {
        if q.starts_with_with() {
            // Its own WITH cannot nest in another: it goes alone, in order.
            let conn = self.open().await?;
            return match q.execute_pg(conn).await {
                Ok(_) => Ok(()),
                Err(e) => Err(write.error(e)),
            };
        }
        if !self.waiting.iter().all(|(w, _)| write.joins(w)) {
            let waiting = std::mem::take(&mut self.waiting);
            send(self.open_only().await?, waiting).await?;
        }
        self.waiting.push((write, q));
        Ok(())
    }

    /// The open transaction's connection, with every waiting write sent:
    /// for a statement that is not deferred.
    pub(crate) async fn open(&mut self) -> Result<&mut sqlx::PgConnection, StoreError> {
        let waiting = std::mem::take(&mut self.waiting);
        let conn = self.open_only().await?;
        send(conn, waiting).await?;
        Ok(conn)
    }

    /// Sends `BEGIN` if it was not sent yet.
    async fn open_only(&mut self) -> Result<&mut sqlx::PgConnection, StoreError> {
        if matches!(self.conn, Conn::Idle(_))
            && let Conn::Idle(conn) = std::mem::replace(&mut self.conn, Conn::Broken)
        {
            self.conn = Conn::Open(sqlx::Transaction::begin(conn, None).await?);
        }
        match &mut self.conn {
            Conn::Open(tx) => Ok(&mut **tx),
            Conn::Idle(_) | Conn::Broken => Err(StoreError::Open(
                "the transaction could not begin".to_owned(),
            )),
        }
    }

    /// Sends what waits and commits: a transaction that sent nothing else
    /// yet is one statement in autocommit.
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        match self.conn {
            Conn::Idle(mut conn) => send(&mut conn, self.waiting).await,
            Conn::Open(mut tx) => {
                send(&mut tx, self.waiting).await?;
                tx.commit().await?;
                Ok(())
            }
            Conn::Broken => Err(StoreError::Open(
                "the transaction could not begin".to_owned(),
            )),
        }
    }

    /// Rolls back (the waiting writes were never sent).
    pub(crate) async fn rollback(self) -> Result<(), StoreError> {
        if let Conn::Open(tx) = self.conn {
            tx.rollback().await?;
        }
        Ok(())
    }
}

/// Sends `writes` as one statement; an error names the write it belongs to
/// where the database says which table refused it.
async fn send(
    conn: &mut sqlx::PgConnection,
    writes: Vec<(Write, Query)>,
) -> Result<(), StoreError> {
    let audit = writes.iter().any(|(w, _)| w.table == AUDIT_TABLE);
    let (writes, queries): (Vec<Write>, Vec<Query>) = writes.into_iter().unzip();
    let Some(statement) = combine(queries) else {
        return Ok(());
    };
    let started = Instant::now();
    let result = statement.execute_pg(conn).await;
    if audit {
        super::audit::measured(started, result.is_ok());
    }
    match result {
        Ok(_) => Ok(()),
        Err(e) => {
            let table = match &e {
                StoreError::Db(sqlx::Error::Database(db)) => db.table().map(str::to_owned),
                _ => None,
            };
            let write = match table {
                Some(t) => writes.iter().find(|w| w.table == t),
                None if writes.len() == 1 => writes.first(),
                None => None,
            };
            Err(match write {
                Some(w) => w.error(e),
                None => e,
            })
        }
    }
}

/// One statement of `queries` (none without any): the last is the main
/// statement, the others `WITH` clauses before it, their placeholders
/// numbered on.
fn combine(mut queries: Vec<Query>) -> Option<Query> {
    let last = queries.pop()?;
    if queries.is_empty() {
        return Some(last);
    }
    let mut args: Vec<Arg> = Vec::new();
    let mut clauses = Vec::with_capacity(queries.len());
    for (i, q) in queries.into_iter().enumerate() {
        let (sql, a) = q.into_parts();
        clauses.push(format!("w{i} AS ({})", renumber(&sql, args.len())));
        args.extend(a);
    }
    let (sql, a) = last.into_parts();
    let main = renumber(&sql, args.len());
    args.extend(a);
    Some(Query::built(
        format!("WITH {} {main}", clauses.join(", ")),
        args,
    ))
}

/// `sql` with every placeholder `$n` made `$(n + by)`; quoted text and
/// identifiers are left alone.
fn renumber(sql: &str, by: usize) -> String {
    if by == 0 {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
        } else if c == '\'' || c == '"' {
            quote = Some(c);
        } else if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut n = 0usize;
            while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                n = n * 10 + d as usize;
                chars.next();
            }
            out.push_str(&(n + by).to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_on_outside_quotes() {
        assert_eq!(
            renumber(
                "UPDATE t SET a = $1, b = '$2', \"$3\" = $12 WHERE c = $2",
                10
            ),
            "UPDATE t SET a = $11, b = '$2', \"$3\" = $22 WHERE c = $12"
        );
        assert_eq!(renumber("SELECT $1", 0), "SELECT $1");
    }

    #[test]
    fn writes_combine_into_one_statement_in_order() {
        let q = combine(vec![
            Query::built(
                "INSERT INTO a VALUES ($1, $2)".to_owned(),
                vec![1.into(), 2.into()],
            ),
            Query::built("UPDATE b SET x = $1".to_owned(), vec![3.into()]),
            Query::built("INSERT INTO c VALUES ($1)".to_owned(), vec!["z".into()]),
        ]);
        let (sql, args) = q.expect("three statements make one").into_parts();
        assert_eq!(
            sql,
            "WITH w0 AS (INSERT INTO a VALUES ($1, $2)), w1 AS (UPDATE b SET x = $3) \
             INSERT INTO c VALUES ($4)"
        );
        assert_eq!(args, vec![1.into(), 2.into(), 3.into(), "z".into()]);
        assert!(combine(Vec::new()).is_none());
    }

    #[test]
    fn a_write_joins_unless_its_table_is_written_already() {
        let insert = Write::insert("jobs");
        let update = Write::update("jobs");
        assert!(Write::insert("audit_pending").joins(&insert));
        assert!(
            !insert.joins(&Write::insert("jobs")),
            "rows keep their order"
        );
        assert!(!update.joins(&insert), "an update would miss the new rows");
        assert!(!update.joins(&Write::update("jobs")), "a row written twice");
        assert!(insert.joins(&update), "new rows are not the updated ones");
    }
}
