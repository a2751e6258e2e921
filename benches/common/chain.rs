//! A valid audit chain of any length, built fast: rows are hashed here with
//! `store::audit::chain_hash` and inserted 1,000 to a statement, 50,000 to a
//! transaction (the database's append-only and in-chain triggers still check
//! every row), then checkpointed (SQLite) or vacuumed (PostgreSQL).

use jit_server::store::Store;
use jit_server::store::audit::{Canonical, GENESIS, chain_hash};

const ROWS_PER_STATEMENT: usize = 1_000;
const ROWS_PER_TRANSACTION: usize = 50_000;
const ACTIONS: [&str; 6] = [
    "request.created",
    "request.auto_approved",
    "grant.activated",
    "credentials.minted",
    "grant.expired",
    "auth.signed_in",
];

/// One generated row.
struct Row {
    seq: i64,
    at: i64,
    actor: String,
    action: &'static str,
    request_id: Option<String>,
    entitlement: Option<&'static str>,
    data: String,
    prev_hash: String,
    hash: String,
}

/// The row after `prev_hash` at `seq`, with content like the broker writes.
fn make_row(seq: i64, prev_hash: String) -> Row {
    let i = usize::try_from(seq).unwrap_or(0);
    let action = ACTIONS[i % ACTIONS.len()];
    let signin = action == "auth.signed_in";
    let actor = format!("user{}@example.com", i % 997);
    let request_id =
        (!signin).then(|| uuid::Uuid::from_u128(u128::from(seq.unsigned_abs() / 5)).to_string());
    let entitlement = (!signin).then_some("aws-sandbox");
    let data = if signin {
        r#"{"method":"oidc","mfa":true}"#.to_owned()
    } else {
        format!(
            r#"{{"duration_seconds":3600,"justification":"load test {seq}","policy_hash":"9f2c6e1d4b7a","session_seconds":3600}}"#
        )
    };
    let at = 1_764_000_000_000 + seq * 7;
    let hash = chain_hash(&Canonical {
        seq,
        at,
        actor: &actor,
        action,
        request_id: request_id.as_deref(),
        entitlement,
        data: &data,
        prev_hash: &prev_hash,
    });
    Row {
        seq,
        at,
        actor,
        action,
        request_id,
        entitlement,
        data,
        prev_hash,
        hash,
    }
}

/// `INSERT … VALUES ($1, …, $9), …` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO audit_events (seq, at, actor, action, request_id, entitlement, data, prev_hash, hash) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..9 {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(r * 9 + c + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

/// Fills an empty audit table with a valid chain of `total` rows.
pub async fn build_chain(store: &Store, total: usize) {
    let full = insert_sql(ROWS_PER_STATEMENT);
    let mut prev = GENESIS.to_owned();
    let mut seq = 0i64;
    let mut done = 0usize;
    while done < total {
        let mut tx = store.begin().await.expect("begin");
        let tx_end = (done + ROWS_PER_TRANSACTION).min(total);
        while done < tx_end {
            let n = ROWS_PER_STATEMENT.min(tx_end - done);
            let rows: Vec<Row> = (0..n)
                .map(|_| {
                    seq += 1;
                    let row = make_row(seq, std::mem::take(&mut prev));
                    prev.clone_from(&row.hash);
                    row
                })
                .collect();
            let sql = if n == ROWS_PER_STATEMENT {
                full.clone()
            } else {
                insert_sql(n)
            };
            let mut q = jit_server::store::query_built(sql);
            for r in &rows {
                q = q
                    .bind(r.seq)
                    .bind(r.at)
                    .bind(r.actor.as_str())
                    .bind(r.action)
                    .bind(r.request_id.as_deref())
                    .bind(r.entitlement)
                    .bind(r.data.as_str())
                    .bind(r.prev_hash.as_str())
                    .bind(r.hash.as_str());
            }
            q.execute(&mut tx).await.expect("bulk insert");
            done += n;
        }
        tx.commit().await.expect("commit");
    }
    // As a long-lived table is: checkpointed (SQLite); vacuumed, with its
    // visibility map and hint bits set, rather than left to an autovacuum
    // that would run during the measurement (PostgreSQL).
    store.checkpoint().await.expect("checkpoint");
    if store.backend() == jit_server::store::Backend::Postgres {
        jit_server::store::query("VACUUM (ANALYZE) audit_events")
            .execute(store)
            .await
            .expect("vacuum");
    }
}
