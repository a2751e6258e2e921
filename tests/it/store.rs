//! The store on both engines: migrations, the audit chain and its tamper evidence, the
//! append-only triggers, concurrent appends, durable jobs, the one-open-request rule and the
//! audit exports. Every test runs once on SQLite and once on PostgreSQL.

use std::collections::HashSet;

use jit_api::RequestState;
use jit_server::domain::{UnixMs, User};
use jit_server::store::audit::export::{self, CSV_HEADER, ExportFormat, OCSF_VERSION};
use jit_server::store::audit::{self, Canonical, NewEvent};
use jit_server::store::jobs::JobKind;
use jit_server::store::requests::{self, RequestRow};
use jit_server::store::{Backend, Store, StoreError, jobs, query, query_built, users};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::support::{TestDb, both_backends};

const T0: i64 = 1_790_000_000_000;

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// Appends one event in its own transaction and waits until it is in the chain.
async fn append(store: &Store, at_ms: i64, ev: NewEvent<'_>) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    audit::append(&mut tx, at, ev).await?;
    tx.commit().await?;
    audit::caught_up(store).await
}

/// The first column of every row of `sql`, as integers.
async fn ints(store: &Store, sql: &'static str) -> Vec<i64> {
    column(store, sql).await
}

/// The first column of every row of `sql`, as text.
async fn texts(store: &Store, sql: &'static str) -> Vec<String> {
    column(store, sql).await
}

/// The first column of every row of `sql`.
async fn column<T: jit_server::store::db::FromCell>(store: &Store, sql: &'static str) -> Vec<T> {
    query(sql)
        .fetch_all(store)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_at::<T>(0).unwrap())
        .collect()
}

/// Appends `n` varied events (optional fields present and absent, unicode, nested data).
async fn seed(store: &Store, n: i64) -> Result<(), StoreError> {
    for i in 1..=n {
        let request = (i % 2 == 0).then(Uuid::now_v7);
        let entitlement = (i % 3 != 0).then_some("aws-prod-admin");
        append(
            store,
            T0 + i * 1_000,
            NewEvent {
                actor: if i % 2 == 0 { "alice@example.com" } else { "system" },
                action: "request.created",
                request_id: request,
                entitlement,
                data: json!({ "i": i, "reason": "déploiement \"urgent\"\n", "tags": ["a", { "b": null }] }),
            },
        )
        .await?;
    }
    Ok(())
}

/// `audit::verify`, checked against the same chain read in 2, 3 and 7 ranges
/// joined together: cutting the chain must not change the report.
async fn verify(db: &TestDb, from: Option<i64>) -> jit_api::VerifyReport {
    let report = audit::verify(&db.store, from).await.unwrap();
    for ranges in [2, 3, 7] {
        let cut = audit::verify_in_ranges(&db.store, from, ranges, 1)
            .await
            .unwrap();
        assert_eq!(cut, report, "{}: {ranges} ranges", db.name());
    }
    report
}

async fn seqs(db: &TestDb) -> Vec<i64> {
    ints(&db.store, "SELECT seq FROM audit_events ORDER BY seq").await
}

/// Asserts that `sql` is refused by the database with a message containing `why`.
async fn refused(db: &TestDb, sql: &str, why: &str) {
    let err = db
        .exec(sql)
        .await
        .expect_err(&format!("{}: `{sql}` went through", db.name()));
    assert!(
        err.to_string().contains(why),
        "{}: `{sql}` failed with {err}",
        db.name()
    );
}

fn user(key: &str) -> User {
    User {
        key: key.into(),
        oid: None,
        name: key.into(),
        email: format!("{key}@example.com"),
        groups: vec!["grp-jit-requesters".into()],
        roles: vec![],
        mfa: false,
        auth_time: None,
        acrs: vec![],
    }
}

fn request(requester: &User, entitlement: &str) -> RequestRow {
    let id = Uuid::now_v7();
    RequestRow {
        id,
        entitlement: entitlement.into(),
        kind: "aws_role".into(),
        requester_key: requester.key.clone(),
        requester_email: requester.email.clone(),
        state: RequestState::Pending,
        duration_secs: 3600,
        justification: "incident 42".into(),
        ticket: None,
        approvals_required: 1,
        break_glass: false,
        extends_id: None,
        root_id: id,
        target_key: format!("aws:{entitlement}"),
        simulated: false,
        created_at: UnixMs::from_millis(T0),
        pending_until: Some(UnixMs::from_millis(T0 + 3_600_000)),
        start_at: None,
        decided_at: None,
        activated_at: None,
        expires_at: None,
        ended_at: None,
        failure_reason: None,
        provider_ref: None,
        deprovisioned_at: None,
        reviewed_by: None,
        reviewed_at: None,
    }
}

async fn add_user(store: &Store, u: &User) {
    let mut tx = store.begin().await.unwrap();
    users::upsert(&mut tx, u, T0).await.unwrap();
    tx.commit().await.unwrap();
}

async fn insert_request(store: &Store, r: &RequestRow) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    requests::insert(&mut tx, r).await?;
    tx.commit().await?;
    Ok(())
}

async fn enqueue(store: &Store, kind: &str, due_at: i64, dedupe: Option<&str>) {
    let mut tx = store.begin().await.unwrap();
    jobs::enqueue(
        &mut tx,
        kind.parse().unwrap(),
        None,
        "{}",
        due_at,
        dedupe,
        T0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn job_count(store: &Store) -> i64 {
    ints(store, "SELECT COUNT(*) FROM jobs").await[0]
}

// ---------------------------------------------------------------------------------------------
// migrations
// ---------------------------------------------------------------------------------------------

both_backends!(migrations_are_idempotent, |db| {
    assert!(
        db.store.migrate().await.unwrap().is_empty(),
        "{}: second run applied something",
        db.name()
    );
    assert!(db.store.migrate().await.unwrap().is_empty());
    let n = ints(
        &db.store,
        "SELECT COUNT(*) FROM _sqlx_migrations WHERE success",
    )
    .await;
    assert_eq!(
        n,
        [i64::try_from(crate::support::db::MIGRATIONS.len()).unwrap()]
    );
    db.store.check_migrations().await.unwrap();
    assert!(db.store.pending_migrations().await.unwrap().is_empty());
});

/// Changes the recorded checksum of migration 1, which is what the database sees when the
/// landed file `0001_init.sql` was edited after it was applied.
async fn edit_migration_1(db: &TestDb) {
    db.exec(match db.backend() {
        Backend::Sqlite => "UPDATE _sqlx_migrations SET checksum = X'00' WHERE version = 1",
        Backend::Postgres => {
            "UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea WHERE version = 1"
        }
    })
    .await
    .unwrap();
}

both_backends!(an_edited_migration_stops_migrate_and_the_start, |db| {
    edit_migration_1(&db).await;
    for e in [
        db.store.migrate().await.unwrap_err(),
        db.store.check_migrations().await.unwrap_err(),
    ] {
        let e = e.to_string();
        assert!(
            e.contains("migration `0001_init` was changed after it was applied"),
            "{}: {e}",
            db.name()
        );
    }
    let mut config = jit_server::config::Config::default();
    config.database.url.clone_from(&db.url);
    let started = jit_server::server::build(
        config,
        true,
        jit_server::http::AuthMode::Dev,
        jit_server::providers::Providers::simulated(),
        std::sync::Arc::new(jit_server::clock::SystemClock),
    )
    .await;
    let e = format!("{:#}", started.err().expect("the broker started"));
    assert!(e.contains("`0001_init` was changed"), "{}: {e}", db.name());
});

both_backends!(
    a_database_migrated_by_an_earlier_jit_gains_checksums,
    |db| {
        // What an earlier jit left: its own table of versions, no checksums, and
        // the schema of its three migrations.
        db.exec(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL);
         INSERT INTO schema_migrations VALUES (1, 'init', 0), (2, 'audit_pending', 0), (3, 'audit_seq_not_null', 0);
         DROP TABLE _sqlx_migrations;
         DROP INDEX requests_newest_first;
         DROP INDEX requests_state_newest_first;
         DROP INDEX jobs_done;
         CREATE INDEX requests_state ON requests (state);
         DROP TABLE audit_checkpoints;
         ALTER TABLE jobs DROP COLUMN failures;
         ALTER TABLE requests DROP COLUMN start_at;",
    )
    .await
    .unwrap();
        // PostgreSQL keeps the trigger's function when its table goes.
        if db.name() == "postgres" {
            db.exec("DROP FUNCTION audit_checkpoints_refuse_change();")
                .await
                .unwrap();
        }
        let e = db.store.check_migrations().await.unwrap_err().to_string();
        assert!(
            e.contains(&crate::support::db::all_pending()) && e.contains("earlier jit"),
            "{}: {e}",
            db.name()
        );
        assert_eq!(
            db.store.migrate().await.unwrap(),
            [
                "0004_requests_newest_first",
                "0005_audit_checkpoints",
                "0006_jobs_failures",
                "0007_scheduled_requests",
                "0008_requests_by_state",
                "0009_jobs_done"
            ],
            "nothing is run again, what came later is"
        );
        db.store.check_migrations().await.unwrap();
        edit_migration_1(&db).await;
        assert!(
            db.store.check_migrations().await.is_err(),
            "checksums hold from now on"
        );
    }
);

both_backends!(an_empty_database_names_every_migration_pending, |db| {
    let fresh = TestDb::unmigrated(db.backend()).await;
    let e = fresh
        .store
        .check_migrations()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&crate::support::db::all_pending()) && e.contains("jit-server migrate"),
        "{}: {e}",
        db.name()
    );
});

mod concurrent_migrations_apply_once {
    use super::*;

    async fn run(backend: Backend) {
        let db = TestDb::unmigrated(backend).await;
        // Brokers starting together: each has its own pool on the same, empty database.
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let url = db.url.clone();
            tasks.push(tokio::spawn(async move {
                let store = Store::connect(&url, 2).await?;
                let applied = store.migrate().await;
                store.close().await;
                applied
            }));
        }
        let mut applied = Vec::new();
        for t in tasks {
            applied.extend(
                t.await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("{}: {e}", db.name())),
            );
        }
        // Each migration once, whichever broker took it (one broker may apply the first and
        // another the second).
        applied.sort();
        assert_eq!(applied, crate::support::db::MIGRATIONS, "{}", db.name());
        assert!(db.store.migrate().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        run(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        run(Backend::Postgres).await;
    }
}

// ---------------------------------------------------------------------------------------------
// audit chain
// ---------------------------------------------------------------------------------------------

both_backends!(audit_chain_verifies_when_intact, |db| {
    let empty = verify(&db, None).await;
    assert!(
        empty.ok && empty.checked == 0 && empty.last_seq.is_none(),
        "{empty:?}"
    );

    seed(&db.store, 5).await.unwrap();
    let report = verify(&db, None).await;
    assert!(report.ok, "{}: {report:?}", db.name());
    assert_eq!(
        (report.checked, report.last_seq, report.first_bad_seq),
        (5, Some(5), None)
    );

    let tail = verify(&db, Some(3)).await;
    assert!(
        tail.ok && tail.checked == 3 && tail.last_seq == Some(5),
        "{tail:?}"
    );
    let at_end = verify(&db, Some(6)).await;
    assert!(at_end.ok && at_end.checked == 0, "{at_end:?}");
    // starting further on claims rows that are not there (a truncated tail, say)
    let past_end = verify(&db, Some(9)).await;
    assert_eq!(past_end.first_bad_seq, Some(8), "{past_end:?}");

    // stored hashes are the documented encoding, linked from the genesis hash
    let events = audit::list(
        &db.store,
        &audit::Filter {
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [5, 4, 3, 2, 1]
    );
    assert_eq!(events[4].prev_hash, audit::GENESIS);
    for pair in events.windows(2) {
        assert_eq!(pair[0].prev_hash, pair[1].hash);
    }
    for e in &events {
        assert_eq!(e.hash, e.computed_hash());
    }
    assert!(
        events.iter().any(|e| e.request_id.is_none())
            && events.iter().any(|e| e.entitlement.is_none())
    );
});

/// The events the database file alone holds (a copy of it without its write-ahead log); none
/// when the copy cannot be read (a checkpoint was writing it meanwhile).
fn events_in_file(file: &std::path::Path) -> Option<i64> {
    let dir = tempfile::tempdir().ok()?;
    let copy = dir.path().join("copy.db");
    std::fs::copy(file, &copy).ok()?;
    let conn = rusqlite::Connection::open(&copy).ok()?;
    conn.query_row("SELECT COUNT(*) FROM audit_events", [], |r| r.get(0))
        .ok()
}

#[tokio::test]
async fn a_checkpoint_moves_the_write_ahead_log_into_the_database_file() {
    let db = TestDb::new(Backend::Sqlite).await;
    let file = db
        .url
        .strip_prefix("sqlite:")
        .map(|p| std::path::PathBuf::from(p.trim_start_matches("//")))
        .unwrap();
    seed(&db.store, 300).await.unwrap();
    // asked for
    db.store.checkpoint().await.unwrap();
    assert_eq!(events_in_file(&file), Some(300));
    // and by the checkpointer on its own, within moments
    seed(&db.store, 10).await.unwrap();
    let started = std::time::Instant::now();
    while events_in_file(&file) != Some(310) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the log was not checkpointed in the background"
        );
        tokio::time::sleep(jit_server::store::CHECKPOINT_EVERY / 2).await;
    }
    // and nothing was lost on the way
    assert!(verify(&db, None).await.ok);
}

both_backends!(an_append_rolls_back_with_its_transaction, |db| {
    let mut tx = db.store.begin().await.unwrap();
    audit::append(
        &mut tx,
        OffsetDateTime::now_utc(),
        NewEvent {
            actor: "system",
            action: "grant.activated",
            request_id: None,
            entitlement: None,
            data: json!({}),
        },
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    audit::caught_up(&db.store).await.unwrap();
    assert!(
        seqs(&db).await.is_empty(),
        "{}: a rolled back event stayed",
        db.name()
    );
    assert_eq!(audit::pending(&db.store).await.unwrap(), (0, None));
    seed(&db.store, 1).await.unwrap();
    assert_eq!(seqs(&db).await, [1]);
    assert!(verify(&db, None).await.ok);
});

both_backends!(events_written_together_are_chained_in_order, |db| {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(T0) * 1_000_000).unwrap();
    let request = Uuid::now_v7();
    let ev = |action, request_id, entitlement, data| NewEvent {
        actor: "système",
        action,
        request_id,
        entitlement,
        data,
    };
    // rolled back: none of them was written
    let mut tx = db.store.begin().await.unwrap();
    audit::append_all(
        &mut tx,
        at,
        vec![
            ev("a.dropped", None, None, json!({})),
            ev("b.dropped", None, None, json!({})),
        ],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();

    let mut tx = db.store.begin().await.unwrap();
    audit::append_all(&mut tx, at, Vec::new()).await.unwrap();
    audit::append(&mut tx, at, ev("first", None, None, json!({ "n": 1 })))
        .await
        .unwrap();
    audit::append_all(
        &mut tx,
        at,
        vec![
            ev(
                "second",
                Some(request),
                Some("aws-sandbox"),
                json!({ "n": 2, "why": "déploiement \"urgent\"" }),
            ),
            ev("third", None, Some("aws-sandbox"), json!(null)),
            ev("fourth", Some(request), None, json!([1, { "b": null }])),
        ],
    )
    .await
    .unwrap();
    audit::append(&mut tx, at, ev("fifth", None, None, json!({})))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    audit::caught_up(&db.store).await.unwrap();

    let report = verify(&db, None).await;
    assert!(
        report.ok && report.checked == 5,
        "{}: {report:?}",
        db.name()
    );
    let actions: Vec<String> = query("SELECT action FROM audit_events ORDER BY seq")
        .fetch_all(&db.store)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String>("action").unwrap())
        .collect();
    assert_eq!(
        actions,
        ["first", "second", "third", "fourth", "fifth"],
        "{}",
        db.name()
    );
    let mine: Vec<(String, i64, String, Option<String>, String)> =
        audit::for_request(&db.store, request)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.action, e.at, e.actor, e.entitlement, e.data))
            .collect();
    assert_eq!(
        mine,
        [
            (
                "second".to_owned(),
                T0,
                "système".to_owned(),
                Some("aws-sandbox".to_owned()),
                json!({ "n": 2, "why": "déploiement \"urgent\"" }).to_string()
            ),
            (
                "fourth".to_owned(),
                T0,
                "système".to_owned(),
                None,
                "[1,{\"b\":null}]".to_owned()
            ),
        ],
        "{}",
        db.name()
    );
});

both_backends!(edited_payload_is_named, |db| {
    seed(&db.store, 5).await.unwrap();
    db.disable_audit_triggers().await;
    db.exec(r#"UPDATE audit_events SET data = '{"i":3,"reason":"routine"}' WHERE seq = 3"#)
        .await
        .unwrap();
    let report = verify(&db, None).await;
    assert!(!report.ok, "{}: {report:?}", db.name());
    assert_eq!(report.first_bad_seq, Some(3), "{}: {report:?}", db.name());
    assert_eq!((report.checked, report.last_seq), (2, Some(2)));
    assert_eq!(
        report.problem.as_deref(),
        Some("content does not match its hash")
    );
    // from past the edit, the rest still verifies
    assert!(verify(&db, Some(4)).await.ok);
});

both_backends!(edited_actor_time_and_optional_fields_are_named, |db| {
    for (seq, sql) in [
        (
            2,
            "UPDATE audit_events SET actor = 'mallory@example.com' WHERE seq = 2",
        ),
        (1, "UPDATE audit_events SET at = at + 1 WHERE seq = 1"),
        // seq 3 has no entitlement: an empty one is not the same as none
        (3, "UPDATE audit_events SET entitlement = '' WHERE seq = 3"),
        (4, "UPDATE audit_events SET request_id = NULL WHERE seq = 4"),
        (
            5,
            "UPDATE audit_events SET action = 'request.denied' WHERE seq = 5",
        ),
    ] {
        let db = TestDb::new(db.backend()).await;
        seed(&db.store, 5).await.unwrap();
        db.disable_audit_triggers().await;
        db.exec(sql).await.unwrap();
        let report = verify(&db, None).await;
        assert_eq!(
            report.first_bad_seq,
            Some(seq),
            "{}: `{sql}`: {report:?}",
            db.name()
        );
    }
});

both_backends!(deleted_middle_row_is_named, |db| {
    seed(&db.store, 5).await.unwrap();
    db.disable_audit_triggers().await;
    db.exec("DELETE FROM audit_events WHERE seq = 3")
        .await
        .unwrap();
    let report = verify(&db, None).await;
    assert!(!report.ok);
    assert_eq!(report.first_bad_seq, Some(3), "{}: {report:?}", db.name());
    assert_eq!(
        report.problem.as_deref(),
        Some("row is missing (next row found is 4)")
    );
    // starting right after the hole: the anchor row is gone
    assert_eq!(verify(&db, Some(4)).await.first_bad_seq, Some(3));
});

both_backends!(swapped_rows_are_named, |db| {
    seed(&db.store, 5).await.unwrap();
    db.disable_audit_triggers().await;
    db.exec("UPDATE audit_events SET seq = 1000 WHERE seq = 2")
        .await
        .unwrap();
    db.exec("UPDATE audit_events SET seq = 2 WHERE seq = 3")
        .await
        .unwrap();
    db.exec("UPDATE audit_events SET seq = 3 WHERE seq = 1000")
        .await
        .unwrap();
    let report = verify(&db, None).await;
    assert_eq!(report.first_bad_seq, Some(2), "{}: {report:?}", db.name());
    assert_eq!(
        report.problem.as_deref(),
        Some("prev_hash does not match the previous row's hash")
    );
});

both_backends!(renumbered_rows_are_named, |db| {
    // The deletion hidden by renumbering the rows after it.
    seed(&db.store, 5).await.unwrap();
    db.disable_audit_triggers().await;
    db.exec("DELETE FROM audit_events WHERE seq = 3")
        .await
        .unwrap();
    db.exec("UPDATE audit_events SET seq = 3 WHERE seq = 4")
        .await
        .unwrap();
    db.exec("UPDATE audit_events SET seq = 4 WHERE seq = 5")
        .await
        .unwrap();
    assert_eq!(seqs(&db).await, [1, 2, 3, 4]);
    let report = verify(&db, None).await;
    assert_eq!(report.first_bad_seq, Some(3), "{}: {report:?}", db.name());
});

both_backends!(renumbered_seq_alone_is_named, |db| {
    // seq is hashed: moving the last row up by one breaks it even though nothing else changed
    seed(&db.store, 5).await.unwrap();
    db.disable_audit_triggers().await;
    db.exec("UPDATE audit_events SET seq = 6 WHERE seq = 5")
        .await
        .unwrap();
    let report = verify(&db, None).await;
    assert_eq!(report.first_bad_seq, Some(5), "{}: {report:?}", db.name());
});

async fn loosen_seq(db: &TestDb) {
    crate::support::db::loosen_audit_table(&db.store).await;
}

use crate::support::db::stray_audit_row as stray_insert;

both_backends!(seq_is_not_null_even_without_the_triggers, |db| {
    seed(&db.store, 2).await.unwrap();
    db.disable_audit_triggers().await;
    let why = match db.backend() {
        Backend::Sqlite => "NOT NULL constraint failed",
        Backend::Postgres => "null value in column \"seq\"",
    };
    refused(&db, &stray_insert("NULL", "'x'", Uuid::now_v7()), why).await;
    if db.backend() == Backend::Sqlite {
        for seq in ["'3x'", "2.5", "0"] {
            refused(
                &db,
                &stray_insert(seq, "'x'", Uuid::now_v7()),
                "CHECK constraint failed",
            )
            .await;
        }
    }
    assert_eq!(seqs(&db).await, [1, 2], "{}", db.name());
});

both_backends!(rows_the_walk_cannot_reach_are_counted_and_named, |db| {
    // The walk reads the chain's range of seq; a row outside it is found by counting the table.
    seed(&db.store, 5).await.unwrap();
    let good = verify(&db, None).await;
    assert!(good.ok && good.rows == Some(5), "{}: {good:?}", db.name());
    loosen_seq(&db).await;
    let (seq, shown) = match db.backend() {
        Backend::Sqlite => ("NULL", "seq NULL"),
        Backend::Postgres => ("0", "seq 0"),
    };
    db.exec(&stray_insert(seq, "'mallory@example.com'", Uuid::now_v7()))
        .await
        .unwrap();
    let report = verify(&db, None).await;
    assert!(!report.ok, "{}: {report:?}", db.name());
    assert_eq!((report.checked, report.rows), (5, Some(6)), "{}", db.name());
    let problem = report.problem.unwrap_or_default();
    assert!(
        problem.starts_with("1 row is outside the chain") && problem.contains(shown),
        "{}: {problem}",
        db.name()
    );
    // From a later start too: the count covers the whole table.
    let tail = verify(&db, Some(4)).await;
    assert!(!tail.ok && tail.checked == 2, "{}: {tail:?}", db.name());
    // An append after the count is not a stray row: only rows at or below the walked seq count.
    if db.backend() == Backend::Sqlite {
        db.exec("DELETE FROM audit_events WHERE seq IS NULL")
            .await
            .unwrap();
        assert!(verify(&db, None).await.ok);
        db.exec(&stray_insert("'7x'", "'x'", Uuid::now_v7()))
            .await
            .unwrap();
        let text = verify(&db, None).await;
        assert!(
            text.problem
                .as_deref()
                .unwrap_or_default()
                .contains("seq '7x'"),
            "{text:?}"
        );
    }
});

both_backends!(
    an_unreadable_row_stops_the_walk_and_reads_say_the_log_is_damaged,
    |db| {
        seed(&db.store, 5).await.unwrap();
        loosen_seq(&db).await;
        let request = Uuid::now_v7();
        // SQLite: a seq that is not a whole number sits between 2 and 3; PostgreSQL: a NULL actor.
        let (insert, first_bad) = match db.backend() {
            Backend::Sqlite => (stray_insert("2.5", "'x'", request), 3),
            Backend::Postgres => (stray_insert("6", "NULL", request), 6),
        };
        db.exec(&insert).await.unwrap();
        let report = verify(&db, None).await;
        assert!(!report.ok, "{}: {report:?}", db.name());
        assert_eq!(
            report.first_bad_seq,
            Some(first_bad),
            "{}: {report:?}",
            db.name()
        );
        assert!(
            report
                .problem
                .as_deref()
                .unwrap_or_default()
                .starts_with("row cannot be read: "),
            "{}: {report:?}",
            db.name()
        );
        let err = audit::for_request(&db.store, request).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::AuditDamaged(_))
                && err.to_string().starts_with("the audit log is damaged: ")
                && err.to_string().contains("jit-server audit verify"),
            "{}: {err}",
            db.name()
        );
        let all = audit::list(
            &db.store,
            &audit::Filter {
                limit: 100,
                ..audit::Filter::default()
            },
        )
        .await;
        assert!(
            matches!(all, Err(StoreError::AuditDamaged(_))),
            "{}: {all:?}",
            db.name()
        );
    }
);

both_backends!(a_rehashed_edit_is_caught_at_the_next_row, |db| {
    // An attacker who also recomputes the edited row's hash moves the break one row down.
    seed(&db.store, 5).await.unwrap();
    db.disable_audit_triggers().await;
    let mut row = audit::list(
        &db.store,
        &audit::Filter {
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .into_iter()
    .find(|e| e.seq == 3)
    .unwrap();
    row.data = r#"{"i":3}"#.into();
    let forged = row.computed_hash();
    query("UPDATE audit_events SET data = $1, hash = $2 WHERE seq = 3")
        .bind(&row.data)
        .bind(&forged)
        .execute(&db.store)
        .await
        .unwrap();
    let report = verify(&db, None).await;
    assert_eq!(report.first_bad_seq, Some(4), "{}: {report:?}", db.name());
});

both_backends!(a_truncated_tail_needs_an_offsite_checkpoint, |db| {
    // The documented limit (docs/audit.md): dropping the newest rows leaves a valid, shorter
    // chain. Only a checkpoint kept elsewhere (last seq + hash) shows it.
    seed(&db.store, 5).await.unwrap();
    let checkpoint = audit::last_of(&db.store, "request.created")
        .await
        .unwrap()
        .unwrap();
    db.disable_audit_triggers().await;
    db.exec("DELETE FROM audit_events WHERE seq >= 4")
        .await
        .unwrap();
    let report = verify(&db, None).await;
    assert!(report.ok, "{report:?}");
    assert!(
        report.last_seq < Some(checkpoint.seq),
        "the checkpoint shows the truncation"
    );
});

/// A report of a check in steps as the full pass gives it: that one recomputed from 1 and
/// counted the table's rows (`rows`), which a step does not.
fn as_full(report: &jit_api::VerifyReport, rows: u64) -> jit_api::VerifyReport {
    assert_eq!(report.rows, None, "a step counts no rows: {report:?}");
    jit_api::VerifyReport {
        recomputed_from: Some(1),
        rows: Some(rows),
        ..report.clone()
    }
}

both_backends!(
    verifying_in_steps_reads_what_was_added_and_matches_a_full_pass,
    |db| {
        let name = db.name();
        let (empty, mark) = audit::verify_since(&db.store, None).await.unwrap();
        assert!(
            empty.ok && empty.checked == 0 && mark.is_none(),
            "{name}: {empty:?}"
        );

        seed(&db.store, 5).await.unwrap();
        let (first, mark) = audit::verify_since(&db.store, None).await.unwrap();
        assert_eq!(first, verify(&db, None).await, "{name}");
        assert_eq!(first.recomputed_from, Some(1), "{name}");
        let mark = mark.expect("a mark after a pass");
        assert_eq!((mark.seq, mark.checked), (5, 5), "{name}");

        // Nothing new: the marked row is read again, and the same mark comes back.
        let (same, again) = audit::verify_since(&db.store, Some(&mark)).await.unwrap();
        assert_eq!(as_full(&same, 5), first, "{name}");
        assert_eq!(same.recomputed_from, Some(5), "{name}");
        assert_eq!(again.as_ref(), Some(&mark), "{name}");

        // Three more: counted on top of the mark, as a full pass counts them.
        seed(&db.store, 3).await.unwrap();
        let (step, mark) = audit::verify_since(&db.store, Some(&mark)).await.unwrap();
        assert_eq!(as_full(&step, 8), verify(&db, None).await, "{name}");
        assert_eq!((step.checked, step.last_seq), (8, Some(8)), "{name}");
        assert_eq!(step.recomputed_from, Some(5), "{name}");
        let mark = mark.unwrap();

        // A row added after the mark and edited is caught by the step, and the report is the
        // full pass's (which names the first bad row of the whole chain).
        seed(&db.store, 2).await.unwrap();
        db.disable_audit_triggers().await;
        db.exec("UPDATE audit_events SET actor = 'mallory' WHERE seq = 10")
            .await
            .unwrap();
        let (broken, none) = audit::verify_since(&db.store, Some(&mark)).await.unwrap();
        assert_eq!(broken, verify(&db, None).await, "{name}");
        assert_eq!(broken.first_bad_seq, Some(10), "{name}: {broken:?}");
        assert!(none.is_none(), "{name}: no mark from a failed pass");
        db.exec("UPDATE audit_events SET actor = 'alice@example.com' WHERE seq = 10")
            .await
            .unwrap();

        // The marked row edited without its hash: the step reads it again and sees it.
        let restore = ints(&db.store, "SELECT at FROM audit_events WHERE seq = 8").await[0];
        db.exec("UPDATE audit_events SET at = at + 1 WHERE seq = 8")
            .await
            .unwrap();
        let (edited, _) = audit::verify_since(&db.store, Some(&mark)).await.unwrap();
        assert_eq!(edited.first_bad_seq, Some(8), "{name}: {edited:?}");
        db.exec(&format!(
            "UPDATE audit_events SET at = {restore} WHERE seq = 8"
        ))
        .await
        .unwrap();

        // An older row edited, the marked row left as it is: the step cannot see it (it reads
        // only from the mark on); the full pass can.
        db.exec("UPDATE audit_events SET actor = 'mallory' WHERE seq = 3")
            .await
            .unwrap();
        let (blind, _) = audit::verify_since(&db.store, Some(&mark)).await.unwrap();
        assert!(
            blind.ok && blind.recomputed_from == Some(8),
            "{name}: {blind:?}"
        );
        let (full, none) = audit::verify_since(&db.store, None).await.unwrap();
        assert_eq!(full, verify(&db, None).await, "{name}");
        assert_eq!(full.first_bad_seq, Some(3), "{name}: {full:?}");
        assert!(none.is_none(), "{name}");
        db.exec("UPDATE audit_events SET actor = 'system' WHERE seq = 3")
            .await
            .unwrap();
        assert!(verify(&db, None).await.ok, "{name}: restored");

        // An older row deleted: the step neither reads nor counts the rows before the mark;
        // the full pass sees it.
        let (_, mark) = audit::verify_since(&db.store, None).await.unwrap();
        let mark = mark.unwrap();
        db.exec("DELETE FROM audit_events WHERE seq = 2")
            .await
            .unwrap();
        let (blind, _) = audit::verify_since(&db.store, Some(&mark)).await.unwrap();
        assert!(blind.ok, "{name}: {blind:?}");
        let (gap, _) = audit::verify_since(&db.store, None).await.unwrap();
        assert_eq!(gap, verify(&db, None).await, "{name}");
        assert_eq!(gap.first_bad_seq, Some(2), "{name}: {gap:?}");

        // When the marked row no longer holds the mark's hash, everything is read again.
        db.exec("UPDATE audit_events SET hash = 'forged', actor = 'mallory' WHERE seq = 10")
            .await
            .unwrap();
        let (full, _) = audit::verify_since(&db.store, Some(&mark)).await.unwrap();
        assert_eq!(full, verify(&db, None).await, "{name}");
        assert_eq!(full.recomputed_from, Some(1), "{name}: {full:?}");
    }
);

both_backends!(the_database_refuses_to_change_the_log, |db| {
    seed(&db.store, 3).await.unwrap();
    refused(
        &db,
        "UPDATE audit_events SET actor = 'x' WHERE seq = 2",
        "append-only",
    )
    .await;
    refused(&db, "UPDATE audit_events SET seq = seq + 10", "append-only").await;
    refused(&db, "DELETE FROM audit_events WHERE seq = 3", "append-only").await;
    refused(&db, "DELETE FROM audit_events", "append-only").await;
    if db.backend() == Backend::Postgres {
        refused(&db, "TRUNCATE audit_events", "append-only").await;
        refused(&db, "TRUNCATE audit_events CASCADE", "append-only").await;
    }
    // inserts must extend the chain: no gap, no fork, no foreign prev_hash
    let last = audit::last_of(&db.store, "request.created")
        .await
        .unwrap()
        .unwrap();
    let insert = |seq: i64, prev: &str| {
        format!(
            "INSERT INTO audit_events (seq, at, actor, action, data, prev_hash, hash) \
             VALUES ({seq}, 0, 'x', 'x', '{{}}', '{prev}', '{}')",
            "f".repeat(64)
        )
    };
    refused(&db, &insert(5, &last.hash), "out of chain").await;
    refused(&db, &insert(4, audit::GENESIS), "out of chain").await;
    let dup = db.exec(&insert(3, &last.prev_hash)).await;
    assert!(
        dup.is_err(),
        "{}: a second row 3 (a fork) went in",
        db.name()
    );

    assert_eq!(seqs(&db).await, [1, 2, 3]);
    assert!(verify(&db, None).await.ok);
});

both_backends!(concurrent_appends_form_one_chain, |db| {
    const TASKS: i64 = 20;
    const EACH: i64 = 10;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = db.store.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..EACH {
                let actor = format!("user{t}@example.com");
                let ev = NewEvent {
                    actor: &actor,
                    action: "request.created",
                    request_id: Some(Uuid::now_v7()),
                    entitlement: Some("aws-prod-admin"),
                    data: json!({ "task": t, "i": i }),
                };
                append(&store, T0 + i, ev).await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for h in handles {
        h.await
            .unwrap()
            .unwrap_or_else(|e| panic!("{}: {e}", db.name()));
    }
    let expected: Vec<i64> = (1..=TASKS * EACH).collect();
    // every event once: each task's ten, in the order it wrote them
    let events = audit::list(
        &db.store,
        &audit::Filter {
            limit: 1_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for t in 0..TASKS {
        let mine: Vec<Value> = events
            .iter()
            .rev()
            .filter(|e| e.actor == format!("user{t}@example.com"))
            .map(|e| serde_json::from_str::<Value>(&e.data).unwrap()["i"].clone())
            .collect();
        assert_eq!(
            mine,
            (0..EACH).map(Value::from).collect::<Vec<_>>(),
            "{}: task {t}",
            db.name()
        );
    }
    assert_eq!(
        seqs(&db).await,
        expected,
        "{}: gaps in the table",
        db.name()
    );
    let report = verify(&db, None).await;
    assert!(report.ok, "{}: {report:?}", db.name());
    assert_eq!(report.checked, u64::try_from(TASKS * EACH).unwrap());
    let forks = ints(
        &db.store,
        "SELECT COUNT(*) FROM (SELECT prev_hash FROM audit_events GROUP BY prev_hash HAVING COUNT(*) > 1) f",
    )
    .await;
    assert_eq!(forks, [0]);
});

// ---------------------------------------------------------------------------------------------
// PostgreSQL: events chained after commit (audit_pending)
// ---------------------------------------------------------------------------------------------

/// What a broker killed after its commits leaves: events written, none chained yet.
async fn leave_pending(db: &TestDb, n: i64) {
    db.exec(&format!(
        "INSERT INTO audit_pending (at, actor, action, request_id, entitlement, data) \
         SELECT {T0} + i, 'system', 'grant.activated', NULL, 'aws-sandbox', '{{\"i\":' || i || '}}' \
         FROM generate_series(1, {n}) AS i"
    ))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_left_pending_are_chained_in_the_order_written() {
    let db = TestDb::postgres().await;
    {
        // a broker that wrote three events and is gone: no sealer runs in `db.store` yet
        let other = Store::connect(&db.url, 2).await.unwrap();
        seed(&other, 3).await.unwrap();
        other.close().await;
    }
    // more than one sealing transaction holds (1,000 events each)
    leave_pending(&db, 2_500).await;
    let (n, oldest) = audit::pending(&db.store).await.unwrap();
    assert_eq!((n, oldest), (2_500, Some(T0 + 1)));
    let report = verify(&db, None).await;
    assert!(
        report.ok && report.checked == 3,
        "only chained events are checked: {report:?}"
    );

    audit::caught_up(&db.store).await.unwrap();
    assert_eq!(audit::pending(&db.store).await.unwrap(), (0, None));
    let report = verify(&db, None).await;
    assert!(report.ok && report.checked == 2_503, "{report:?}");
    let order = ints(
        &db.store,
        "SELECT CAST(data::json->>'i' AS BIGINT) FROM audit_events WHERE seq > 3 ORDER BY seq",
    )
    .await;
    assert_eq!(order, (1..=2_500).collect::<Vec<i64>>());
}

#[tokio::test]
async fn a_pending_event_leaves_only_by_being_chained() {
    let db = TestDb::postgres().await;
    // no sealer runs in this store until it is asked to chain
    leave_pending(&db, 2).await;
    refused(
        &db,
        "UPDATE audit_pending SET actor = 'x'",
        "append-only until chained",
    )
    .await;
    refused(&db, "TRUNCATE audit_pending", "append-only until chained").await;
    refused(
        &db,
        "DELETE FROM audit_pending WHERE id = 1",
        "not in the chain",
    )
    .await;
    // a forged row claiming to be event 1 does not let it go either
    db.exec(&format!(
        "INSERT INTO audit_events (seq, at, actor, action, data, prev_hash, hash, pending_id) \
         VALUES (1, {}, 'system', 'grant.activated', '{{\"i\":99}}', '{}', '{}', 1)",
        T0 + 1,
        audit::GENESIS,
        "e".repeat(64)
    ))
    .await
    .unwrap();
    refused(
        &db,
        "DELETE FROM audit_pending WHERE id = 1",
        "not in the chain",
    )
    .await;
    assert_eq!(audit::pending(&db.store).await.unwrap().0, 2);
}

#[tokio::test]
async fn reads_show_pending_events_without_waiting_for_the_sealer() {
    let db = TestDb::postgres().await;
    {
        // a broker that chained three events and is gone; no sealer ever runs in `db.store`
        // for the reads below, so a read that waited for one would time out
        let other = Store::connect(&db.url, 2).await.unwrap();
        seed(&other, 3).await.unwrap();
        audit::caught_up(&other).await.unwrap();
        other.close().await;
    }
    leave_pending(&db, 4).await;
    let all = |limit| audit::Filter {
        limit,
        ..Default::default()
    };
    let events = audit::list(&db.store, &all(10)).await.unwrap();
    // newest first: the pending ones after the chain's head, in the order they will be chained
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.seq, e.pending, e.hash.is_empty(), e.data.clone()))
        .collect();
    let pending = |seq, i: i64| (seq, true, true, format!("{{\"i\":{i}}}"));
    assert_eq!(
        seen[..4],
        [pending(7, 4), pending(6, 3), pending(5, 2), pending(4, 1)]
    );
    assert_eq!(
        events[4..]
            .iter()
            .map(|e| (e.seq, e.pending))
            .collect::<Vec<_>>(),
        [(3, false), (2, false), (1, false)]
    );
    assert!(events[4..].iter().all(|e| e.hash == e.computed_hash()));
    let api = events[0].to_api();
    assert!(api.pending && api.hash.is_empty() && api.seq == 7);
    let json = serde_json::to_value(events[4].to_api()).unwrap();
    assert!(
        json.get("pending").is_none(),
        "chained events keep their shape: {json}"
    );

    // the filters and the cursor apply to both
    let some = audit::Filter {
        actor: Some("system".into()),
        before_seq: Some(7),
        limit: 5,
        ..Default::default()
    };
    let seqs: Vec<_> = audit::list(&db.store, &some)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.seq, e.pending))
        .collect();
    assert_eq!(
        seqs,
        [(6, true), (5, true), (4, true), (3, false), (1, false)]
    );
    assert_eq!(
        audit::last_of(&db.store, "grant.activated")
            .await
            .unwrap()
            .map(|e| (e.seq, e.pending)),
        Some((7, true))
    );
    let id = ints(
        &db.store,
        "SELECT id FROM audit_pending ORDER BY id LIMIT 1",
    )
    .await[0];
    assert_eq!(
        audit::pending(&db.store).await.unwrap().0,
        4,
        "nothing waited for the sealer (a wait starts it, and it chains them): first id {id}"
    );

    // a page that pending events would fill (its cursor would be one of them) waits for the
    // chain instead: every event in it is chained, at the place it was listed at
    let page = audit::list(&db.store, &all(3)).await.unwrap();
    assert_eq!(
        page.iter().map(|e| (e.seq, e.pending)).collect::<Vec<_>>(),
        [(7, false), (6, false), (5, false)]
    );
    assert_eq!(page[0].data, "{\"i\":4}");
    assert_eq!(audit::pending(&db.store).await.unwrap().0, 0);
}

// ---------------------------------------------------------------------------------------------
// jobs
// ---------------------------------------------------------------------------------------------

both_backends!(concurrent_claimers_never_share_a_job, |db| {
    const JOBS: usize = 60;
    for _ in 0..JOBS {
        enqueue(&db.store, "expire", T0, None).await;
    }
    let mut claimers = Vec::new();
    for _ in 0..4 {
        let store = db.store.clone();
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = jobs::claim(&store, T0 + 10, 60_000, 3).await?;
                if batch.is_empty() {
                    return Ok::<_, StoreError>(mine);
                }
                mine.extend(batch.into_iter().map(|j| j.id));
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut all = Vec::new();
    for c in claimers {
        all.extend(
            c.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{}: {e}", db.name())),
        );
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "{}: a job was claimed twice",
        db.name()
    );
    assert_eq!(all.len(), JOBS, "{}: not every job was claimed", db.name());
});

both_backends!(a_claim_says_when_the_next_job_falls_due, |db| {
    let claim = |now: i64, limit: i64| jobs::claim_and_next(&db.store, now, 60_000, limit);
    assert_eq!(claim(T0, 10).await.unwrap(), (Vec::new(), None), "no jobs");
    enqueue(&db.store, "activate", T0, Some("a")).await;
    enqueue(&db.store, "expire", T0 + 1, Some("b")).await;
    enqueue(&db.store, "expire", T0 + 5_000, Some("c")).await;

    let (none, next) = claim(T0 - 1, 10).await.unwrap();
    assert!(none.is_empty(), "nothing is due yet");
    assert_eq!(next, Some(T0), "the first job is the next");
    // The limit leaves a due job: it is claimable (not "next"), the next is after now.
    let (due, next) = claim(T0 + 1, 1).await.unwrap();
    assert_eq!(due.iter().map(|j| j.due_at).collect::<Vec<_>>(), [T0]);
    assert_eq!(next, Some(T0 + 5_000));
    let (due, next) = claim(T0 + 1, 10).await.unwrap();
    assert_eq!(due.iter().map(|j| j.due_at).collect::<Vec<_>>(), [T0 + 1]);
    assert_eq!(next, Some(T0 + 5_000));
    // Leased jobs are neither claimed again nor next.
    let (due, next) = claim(T0 + 2, 10).await.unwrap();
    assert!(due.is_empty());
    assert_eq!(next, Some(T0 + 5_000));
    let (due, next) = claim(T0 + 5_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(next, None, "every job is claimed");
});

/// Planned with its values (as the broker sends it: `Query::planned_each_run`), the claim
/// reads its jobs by primary key on a table that grew since the connection last saw it,
/// done jobs and all, and claims the one due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_finds_its_jobs_by_key_in_a_table_that_grew() {
    use sqlx::{Connection as _, Row as _};
    let db = TestDb::postgres().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let prepare = format!(
        "PREPARE claim(bigint, bigint, bigint) AS {}",
        jobs::claim_statement_postgres()
    );
    // Our own statement text, no outside input.
    sqlx::raw_sql(sqlx::AssertSqlSafe(prepare))
        .execute(&mut conn)
        .await
        .unwrap();
    // Run on the empty table, then what a busy broker's table holds: done activations,
    // expiries due later, one due now; no ANALYZE since.
    for sql in [
        "EXECUTE claim(1, 2, 32)",
        "INSERT INTO jobs (id, kind, payload, due_at, created_at, done_at, attempts)
         SELECT 'done-' || g, 'activate', '{}', g, g, g + 5, 1 FROM generate_series(1, 10000) g",
        "INSERT INTO jobs (id, kind, payload, due_at, created_at)
         SELECT 'later-' || g, 'expire', '{}', 1000000 + g, g FROM generate_series(1, 5000) g",
        "INSERT INTO jobs (id, kind, payload, due_at, created_at)
         VALUES ('now', 'activate', '{}', 11000, 11000)",
        "SET plan_cache_mode = force_custom_plan",
    ] {
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
    let plan: Vec<String> = sqlx::raw_sql("EXPLAIN EXECUTE claim(11001, 16001, 32)")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    let plan = plan.join("\n");
    assert!(
        !plan.contains("Seq Scan"),
        "the claim scans the table:\n{plan}"
    );
    assert!(plan.contains("jobs_pkey"), "not by key:\n{plan}");
    let rows = sqlx::raw_sql("EXECUTE claim(11001, 16001, 32)")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<String, _>("id"), "now");
}

both_backends!(an_expired_lease_makes_a_job_claimable_again, |db| {
    enqueue(&db.store, "activate", T0, None).await;
    assert!(
        jobs::claim(&db.store, T0 - 1, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );

    let first = jobs::claim(&db.store, T0, 1_000, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].kind.as_str(), first[0].attempts, first[0].due_at),
        ("activate", 1, T0)
    );
    assert!(
        jobs::claim(&db.store, T0 + 999, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "lease still held"
    );

    let again = jobs::claim(&db.store, T0 + 1_000, 1_000, 10).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "{}: lease ran out but the job was not reclaimed",
        db.name()
    );
    assert_eq!((again[0].id, again[0].attempts), (first[0].id, 2));

    // retry_later frees the lease and moves the due time
    jobs::retry_later(&db.store, again[0].id, T0 + 5_000, "throttled")
        .await
        .unwrap();
    assert!(
        jobs::claim(&db.store, T0 + 4_999, 1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let third = jobs::claim(&db.store, T0 + 5_000, 1_000, 10).await.unwrap();
    assert_eq!(third[0].attempts, 3);

    let mut tx = db.store.begin().await.unwrap();
    jobs::complete(&mut tx, third[0].id, T0 + 5_001)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        jobs::claim(&db.store, T0 + 999_999, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "done jobs stay done"
    );
    assert_eq!(
        jobs::backlog(&db.store, T0 + 999_999).await.unwrap(),
        (0, None)
    );
});

// A broker killed while it holds a job is a claim, not a failure: the job's
// next real failure waits the first retry's backoff, not 2^claims seconds.
both_backends!(abandoned_claims_do_not_count_as_failures, |db| {
    const LEASE: i64 = 1_000;
    const ABANDONED: i64 = 6;
    enqueue(&db.store, "deprovision", T0, None).await;
    let mut now = T0;
    for n in 1..=ABANDONED {
        let got = jobs::claim(&db.store, now, LEASE, 10).await.unwrap();
        assert_eq!(got.len(), 1, "{}: claim {n}", db.name());
        assert_eq!((got[0].attempts, got[0].failures), (n, 0));
        // the broker dies: nobody renews or releases the lease
        now += LEASE;
    }
    let job = jobs::claim(&db.store, now, LEASE, 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!((job.attempts, job.failures), (ABANDONED + 1, 0));
    assert_eq!(job.failure_number(), 1);
    assert_eq!(
        job.backoff_ms(),
        2_000,
        "{}: the first failure's backoff",
        db.name()
    );
    assert_eq!(
        jit_server::service::grants::internal_retry_ms(&job),
        3_000,
        "{}",
        db.name()
    );
    // it fails once: due again after the first backoff, and claimable then
    jobs::retry_later(&db.store, job.id, now + job.backoff_ms(), "throttled")
        .await
        .unwrap();
    assert!(
        jobs::claim(&db.store, now + 1_999, LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let next = jobs::claim(&db.store, now + 2_000, LEASE, 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!((next.attempts, next.failures), (ABANDONED + 2, 1));
    assert_eq!((next.failure_number(), next.backoff_ms()), (2, 4_000));
    // abandoned again: still one failure
    let again = jobs::claim(&db.store, now + 2_000 + LEASE, LEASE, 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!((again.failures, again.backoff_ms()), (1, 4_000));
});

both_backends!(several_jobs_go_in_one_statement, |db| {
    enqueue(&db.store, "expire", T0, Some("expire:r1")).await;
    let job = |kind: &str, due_at, key: Option<&str>| jobs::NewJob {
        kind: kind.parse().unwrap(),
        request_id: None,
        payload: "{}",
        due_at,
        dedupe_key: key.map(str::to_owned),
    };
    let mut tx = db.store.begin().await.unwrap();
    jobs::enqueue_all(&mut tx, &[], T0).await.unwrap();
    jobs::enqueue_all(
        &mut tx,
        &[
            job("expire", T0 + 7, Some("expire:r1")),
            job("expiry_warning", T0 + 1, Some("expiry_warning:r1")),
            job("notify", T0 + 2, None),
        ],
        T0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        job_count(&db.store).await,
        3,
        "{}: the taken key is skipped",
        db.name()
    );
    let due: Vec<(String, i64)> = jobs::claim(&db.store, T0 + 10, 1_000, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| (j.kind, j.due_at))
        .collect();
    assert_eq!(
        due,
        [
            ("expire", T0),
            ("expiry_warning", T0 + 1),
            ("notify", T0 + 2)
        ]
        .map(|(k, d)| (k.to_owned(), d))
        .to_vec(),
        "{}",
        db.name()
    );
});

/// What filing an auto-approved request writes, in one transaction as the
/// broker does (on PostgreSQL one statement: `store::pgtx`).
async fn file_request(store: &Store, who: &User, r: &RequestRow) -> Result<(), StoreError> {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(T0) * 1_000_000)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let event = |action| NewEvent {
        actor: "carol@example.com",
        action,
        request_id: Some(r.id),
        entitlement: Some(&r.entitlement),
        data: json!({ "justification": r.justification }),
    };
    let mut tx = store.begin().await?;
    users::upsert(&mut tx, who, T0).await?;
    requests::insert(&mut tx, r).await?;
    audit::append_all(
        &mut tx,
        at,
        vec![event("request.created"), event("request.auto_approved")],
    )
    .await?;
    let key = format!("activate:{}", r.id);
    jobs::enqueue(
        &mut tx,
        JobKind::Activate,
        Some(r.id),
        "{}",
        T0,
        Some(&key),
        T0,
    )
    .await?;
    tx.commit().await
}

both_backends!(held_back_writes_land_together_or_not_at_all, |db| {
    let carol = user("carol");
    let first = request(&carol, "aws-prod-admin");
    file_request(&db.store, &carol, &first).await.unwrap();
    let counts = |db: &TestDb| {
        let store = db.store.clone();
        async move {
            audit::caught_up(&store).await.unwrap();
            (
                ints(&store, "SELECT COUNT(*) FROM requests").await[0],
                ints(&store, "SELECT COUNT(*) FROM audit_events").await[0],
                job_count(&store).await,
            )
        }
    };
    assert_eq!(counts(&db).await, (1, 2, 1), "{}", db.name());

    // A second open request is refused by the last write but one: the
    // conflict is reported as such, and the profile change, the events and
    // the job that came with it are gone too.
    let renamed = User {
        name: "Carol Renamed".into(),
        ..carol.clone()
    };
    let second = request(&renamed, "aws-prod-admin");
    match file_request(&db.store, &renamed, &second).await {
        Err(StoreError::Conflict(msg)) => assert!(msg.contains("`aws-prod-admin`"), "{msg}"),
        other => panic!("{}: expected a conflict, got {other:?}", db.name()),
    }
    assert_eq!(counts(&db).await, (1, 2, 1), "{}", db.name());
    let names = query("SELECT name FROM users WHERE key = 'carol'")
        .fetch_all(&db.store)
        .await
        .unwrap();
    assert_eq!(names.len(), 1);
    assert_eq!(names[0].try_get::<String>("name").unwrap(), "carol");
    assert!(audit::verify(&db.store, None).await.unwrap().ok);

    // A statement of the transaction sees what it wrote before; dropped, the
    // transaction leaves nothing.
    let other = request(&carol, "aws-dev-admin");
    {
        let mut tx = db.store.begin().await.unwrap();
        requests::insert(&mut tx, &other).await.unwrap();
        let seen = query("SELECT entitlement FROM requests WHERE id = $1")
            .bind(other.id.to_string())
            .fetch_optional(&mut tx)
            .await
            .unwrap();
        assert!(seen.is_some(), "{}: its own insert unseen", db.name());
    }
    assert!(requests::get(&db.store, other.id).await.unwrap().is_none());

    // A job done and the jobs it leaves, in one transaction.
    let claimed = jobs::claim(&db.store, T0, 60_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "{}", db.name());
    let mut tx = db.store.begin().await.unwrap();
    jobs::complete(&mut tx, claimed[0].id, T0).await.unwrap();
    let expire = format!("expire:{}", first.id);
    jobs::enqueue(
        &mut tx,
        JobKind::Expire,
        Some(first.id),
        "{}",
        T0,
        Some(&expire),
        T0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let due: Vec<String> = jobs::claim(&db.store, T0 + 1, 60_000, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.kind)
        .collect();
    assert_eq!(due, ["expire"], "{}: the activation is done", db.name());
    assert_eq!(counts(&db).await, (1, 2, 2), "{}", db.name());
});

both_backends!(a_dedupe_key_keeps_one_job, |db| {
    enqueue(&db.store, "expire", T0, Some("expire:r1")).await;
    enqueue(&db.store, "expire", T0 + 5, Some("expire:r1")).await;
    enqueue(&db.store, "notify", T0, None).await;
    enqueue(&db.store, "notify", T0, None).await;
    assert_eq!(job_count(&db.store).await, 3, "{}", db.name());

    // the key moves the one pending job (extensions)
    let mut tx = db.store.begin().await.unwrap();
    jobs::reschedule(&mut tx, "expire:r1", T0 + 60_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let due = jobs::claim(&db.store, T0 + 1, 1_000, 10).await.unwrap();
    assert_eq!(due.iter().filter(|j| j.kind == "expire").count(), 0);
    assert_eq!(due.len(), 2);
    assert_eq!(
        jobs::backlog(&db.store, T0 + 60_000).await.unwrap(),
        (3, Some(T0))
    );
});

// ---------------------------------------------------------------------------------------------
// retention: done jobs and ended sessions
// ---------------------------------------------------------------------------------------------

/// The dedupe keys of the jobs in the table, sorted.
async fn job_keys(store: &Store) -> Vec<String> {
    texts(store, "SELECT dedupe_key FROM jobs ORDER BY dedupe_key").await
}

/// Marks claimed job `id` done at `at`.
async fn complete_at(store: &Store, id: Uuid, at: i64) {
    let mut tx = store.begin().await.unwrap();
    jobs::complete(&mut tx, id, at).await.unwrap();
    tx.commit().await.unwrap();
}

both_backends!(
    done_jobs_go_after_their_retention_and_no_other_job_does,
    |db| {
        const DAY: i64 = 24 * 60 * 60 * 1000;
        // Told apart by when they are due: done long ago, done the moment the retention starts,
        // done recently, claimed by a broker still running it, failed and waiting for its retry,
        // and due in a year.
        for (key, due) in [
            ("old", T0),
            ("edge", T0 + 1),
            ("recent", T0 + 2),
            ("running", T0 + 3),
            ("retrying", T0 + 4),
            ("next-year", T0 + 365 * DAY),
        ] {
            enqueue(&db.store, "activate", due, Some(key)).await;
        }
        let claimed = jobs::claim(&db.store, T0 + 10, 30 * DAY, 10).await.unwrap();
        assert_eq!(claimed.len(), 5, "{}", db.name());
        let id = |due: i64| claimed.iter().find(|j| j.due_at == due).unwrap().id;
        let now = T0 + 20 * DAY;
        let cutoff = now - jobs::DONE_KEPT_MS;
        complete_at(&db.store, id(T0), cutoff - 1).await;
        complete_at(&db.store, id(T0 + 1), cutoff).await;
        complete_at(&db.store, id(T0 + 2), now - DAY).await;
        jobs::retry_later(&db.store, id(T0 + 4), now + DAY, "throttled")
            .await
            .unwrap();

        assert_eq!(
            jobs::delete_done(&db.store, cutoff, 1_000).await.unwrap(),
            1,
            "{}",
            db.name()
        );
        assert_eq!(
            job_keys(&db.store).await,
            ["edge", "next-year", "recent", "retrying", "running"],
            "{}: only the job done before the retention goes",
            db.name()
        );
        assert_eq!(
            jobs::delete_done(&db.store, cutoff, 1_000).await.unwrap(),
            0
        );
        // The kept jobs are as they were: the running one still leased, the failed one due later.
        assert!(
            jobs::claim(&db.store, now, 1_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            jobs::backlog(&db.store, now + DAY).await.unwrap(),
            (2, Some(T0 + 3)),
            "{}",
            db.name()
        );

        // A deleted job's key is free again (store::jobs::DONE_KEPT_MS says why that is harmless);
        // a kept done job's still is not.
        enqueue(&db.store, "activate", now, Some("old")).await;
        enqueue(&db.store, "activate", now, Some("edge")).await;
        assert_eq!(
            job_keys(&db.store).await,
            ["edge", "next-year", "old", "recent", "retrying", "running"]
        );
        assert_eq!(job_count(&db.store).await, 6);
    }
);

both_backends!(a_backlog_of_done_jobs_goes_a_batch_a_statement, |db| {
    for n in 0..5 {
        enqueue(&db.store, "notify", T0 + n, Some(&format!("n{n}"))).await;
    }
    for job in jobs::claim(&db.store, T0 + 10, 1_000, 10).await.unwrap() {
        complete_at(&db.store, job.id, job.due_at + 100).await;
    }
    let mut deleted = Vec::new();
    for _ in 0..4 {
        deleted.push(jobs::delete_done(&db.store, T0 + 1_000, 2).await.unwrap());
    }
    assert_eq!(deleted, [2, 2, 1, 0], "{}", db.name());
    assert_eq!(job_count(&db.store).await, 0);
});

/// PostgreSQL: a sweep passes over the done jobs another transaction holds (another broker's
/// sweep in flight) instead of waiting for them, and takes them at a later run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_at_once_share_the_done_jobs_without_waiting() {
    let db = TestDb::postgres().await;
    for n in 0..4 {
        enqueue(&db.store, "notify", T0 + n, Some(&format!("n{n}"))).await;
    }
    for job in jobs::claim(&db.store, T0 + 10, 1_000, 10).await.unwrap() {
        complete_at(&db.store, job.id, job.due_at + 100).await;
    }
    let mut other = db.store.begin().await.unwrap();
    let held = query("SELECT id FROM jobs WHERE dedupe_key IN ('n0', 'n2') FOR UPDATE")
        .fetch_all(&mut other)
        .await
        .unwrap();
    assert_eq!(held.len(), 2);
    let deleted = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        jobs::delete_done(&db.store, T0 + 1_000, 1_000),
    )
    .await
    .expect("the sweep waited for rows another transaction holds")
    .unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(job_keys(&db.store).await, ["n0", "n2"]);
    other.commit().await.unwrap();
    assert_eq!(
        jobs::delete_done(&db.store, T0 + 1_000, 1_000)
            .await
            .unwrap(),
        2
    );
    assert_eq!(job_count(&db.store).await, 0);
}

both_backends!(sessions_past_their_end_go_a_batch_a_statement, |db| {
    for (n, expires_at) in [T0 - 3, T0 - 2, T0 - 1, T0, T0 + 1].into_iter().enumerate() {
        jit_server::store::sessions::insert(
            &db.store,
            &jit_server::store::sessions::SessionRow {
                id_hash: format!("s{n}"),
                user_key: None,
                data: "{}".to_owned(),
                csrf_token: "csrf".to_owned(),
                created_at: T0 - 100,
                last_seen_at: T0 - 100,
                expires_at,
            },
        )
        .await
        .unwrap();
    }
    let mut deleted = Vec::new();
    for _ in 0..3 {
        deleted.push(
            jit_server::store::sessions::purge_expired(&db.store, T0, 3)
                .await
                .unwrap(),
        );
    }
    assert_eq!(deleted, [3, 1, 0], "{}", db.name());
    assert_eq!(
        texts(&db.store, "SELECT id_hash FROM sessions").await,
        ["s4"],
        "{}: the live session stays",
        db.name()
    );
});

// ---------------------------------------------------------------------------------------------
// requests
// ---------------------------------------------------------------------------------------------

both_backends!(one_open_request_per_requester_and_entitlement, |db| {
    let alice = user("alice");
    add_user(&db.store, &alice).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = db.store.clone();
        let r = request(&alice, "aws-prod-admin");
        tasks.push(tokio::spawn(
            async move { insert_request(&store, &r).await },
        ));
    }
    let (mut ok, mut conflicts) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict(msg)) => {
                assert!(msg.contains("`aws-prod-admin`"), "{msg}");
                conflicts += 1;
            }
            Err(e) => panic!("{}: unexpected error {e}", db.name()),
        }
    }
    assert_eq!((ok, conflicts), (1, 49), "{}", db.name());

    // other entitlements and other people are not affected
    insert_request(&db.store, &request(&alice, "aws-dev-admin"))
        .await
        .unwrap();
    let bob = user("bob");
    add_user(&db.store, &bob).await;
    insert_request(&db.store, &request(&bob, "aws-prod-admin"))
        .await
        .unwrap();

    // once the open one ends, a new one may be filed
    let open = requests::list(
        &db.store,
        &requests::ListFilter {
            requester_key: Some(alice.key.clone()),
            entitlement: Some("aws-prod-admin".into()),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(open.len(), 1);
    let mut tx = db.store.begin().await.unwrap();
    requests::set_state(
        &mut tx,
        open[0].id,
        RequestState::Pending,
        RequestState::Cancelled,
        &requests::Changes::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    insert_request(&db.store, &request(&alice, "aws-prod-admin"))
        .await
        .unwrap();
});

both_backends!(a_list_of_several_states_pages_like_one_statement, |db| {
    // Requests in four states, three created in each millisecond (ties broken by id).
    let states = [
        RequestState::Pending,
        RequestState::Active,
        RequestState::Expired,
        RequestState::Denied,
    ];
    let mut all = Vec::new();
    for i in 0..45_i64 {
        let who = user(&format!("u{i}"));
        add_user(&db.store, &who).await;
        let mut r = request(&who, "aws-prod-admin");
        r.state = states[usize::try_from(i % 4).unwrap()];
        r.created_at = UnixMs::from_millis(T0 + (i / 3) * 1_000);
        insert_request(&db.store, &r).await.unwrap();
        all.push(r);
    }
    let wanted = [
        RequestState::Active,
        RequestState::Pending,
        RequestState::Active,
    ];
    let mut expected: Vec<(i64, Uuid)> = all
        .iter()
        .filter(|r| wanted.contains(&r.state))
        .map(|r| (r.created_at.millis(), r.id))
        .collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    let filter = |after, before| requests::ListFilter {
        states: wanted.to_vec(),
        after,
        before,
        limit: 4,
        ..Default::default()
    };

    // Forward, newest first, page after page.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = requests::list(&db.store, &filter(after, None))
            .await
            .unwrap();
        assert!(page.len() <= 4);
        seen.extend(page.iter().map(|r| (r.created_at.millis(), r.id)));
        match page.last() {
            Some(last) if page.len() == 4 => after = Some(requests::Cursor::after(last)),
            _ => break,
        }
    }
    assert_eq!(
        seen,
        expected,
        "{}: every request once, in order",
        db.name()
    );

    // Backward from the oldest: the ones just newer, oldest first.
    let oldest = requests::Cursor {
        created_at: expected[expected.len() - 1].0,
        id: expected[expected.len() - 1].1,
    };
    let newer = requests::list(&db.store, &filter(None, Some(oldest)))
        .await
        .unwrap();
    let got: Vec<(i64, Uuid)> = newer
        .iter()
        .map(|r| (r.created_at.millis(), r.id))
        .collect();
    let want: Vec<(i64, Uuid)> = expected[expected.len() - 5..expected.len() - 1]
        .iter()
        .rev()
        .copied()
        .collect();
    assert_eq!(got, want, "{}", db.name());
});

both_backends!(
    a_commit_wakes_the_scheduler_only_for_a_job_due_before_it_would,
    |db| {
        use std::time::Duration;
        let wake = db.store.job_wake().clone();
        let woken = || async {
            tokio::time::timeout(Duration::from_millis(50), wake.notified())
                .await
                .is_ok()
        };
        // No scheduler has said when it sleeps: every queued job wakes it.
        enqueue(&db.store, "reconcile", T0 + 3_600_000, None).await;
        assert!(woken().await, "{}: before the scheduler runs", db.name());

        db.store.scheduler_sleeps_until(T0 + 1_000);
        enqueue(&db.store, "reconcile", T0 + 3_600_000, None).await;
        assert!(!woken().await, "{}: due after its sleep", db.name());
        enqueue(&db.store, "reconcile", T0 + 500, None).await;
        assert!(woken().await, "{}: due before it would wake", db.name());

        db.store.scheduler_sleeps_until(i64::MAX);
        enqueue(&db.store, "reconcile", T0 + 3_600_000, None).await;
        assert!(woken().await, "{}: while it claims", db.name());
    }
);

// ---------------------------------------------------------------------------------------------
// exports
// ---------------------------------------------------------------------------------------------

/// Events whose text would break naive CSV or run in a spreadsheet.
async fn seed_hostile(store: &Store) {
    let rows: [(&str, &str, Option<&str>, Value); 4] = [
        (
            "=cmd|' /C calc'!A0",
            "request.created",
            Some("aws,prod \"admin\""),
            json!({ "note": "line 1\r\nline 2" }),
        ),
        (
            "system",
            "grant.activated",
            Some("-2+3"),
            json!({ "requester": "@alice", "n": 1.5 }),
        ),
        ("bob@example.com", "auth.signed_in", None, json!({})),
        (
            "system",
            "policy.loaded",
            None,
            json!({ "hash": "+abc", "ünïcødé": "✓" }),
        ),
    ];
    for (i, (actor, action, entitlement, data)) in rows.into_iter().enumerate() {
        let request_id = (i % 2 == 0).then(Uuid::now_v7);
        let at = T0 + i64::try_from(i).unwrap() * 1_001;
        append(
            store,
            at,
            NewEvent {
                actor,
                action,
                request_id,
                entitlement,
                data,
            },
        )
        .await
        .unwrap();
    }
}

async fn export_text(db: &TestDb, format: ExportFormat, from: i64) -> (u64, String) {
    let mut out = Vec::new();
    let n = export::export(&db.store, format, from, &mut out)
        .await
        .unwrap();
    (n, String::from_utf8(out).unwrap())
}

both_backends!(jsonl_export_is_one_verifiable_event_per_line, |db| {
    seed_hostile(&db.store).await;
    let (n, text) = export_text(&db, ExportFormat::Jsonl, 1).await;
    assert_eq!(n, 4);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    let mut prev = audit::GENESIS.to_owned();
    for (i, line) in lines.iter().enumerate() {
        let ev: jit_api::AuditEvent = serde_json::from_str(line).unwrap();
        assert_eq!(ev.seq, i64::try_from(i).unwrap() + 1);
        assert_eq!(ev.prev_hash, prev);
        // everything needed to recompute the hash off-host is in the line
        let at = i64::try_from(ev.at.unix_timestamp_nanos() / 1_000_000).unwrap();
        let rid = ev.request_id.map(|u| u.to_string());
        let data = serde_json::to_string(&ev.data).unwrap();
        let hash = audit::chain_hash(&Canonical {
            seq: ev.seq,
            at,
            actor: &ev.actor,
            action: &ev.action,
            request_id: rid.as_deref(),
            entitlement: ev.entitlement.as_deref(),
            data: &data,
            prev_hash: &ev.prev_hash,
        });
        assert_eq!(
            hash,
            ev.hash,
            "{}: line {} does not re-verify",
            db.name(),
            i + 1
        );
        prev = ev.hash;
    }
    let (n, text) = export_text(&db, ExportFormat::Jsonl, 3).await;
    assert_eq!(n, 2);
    assert!(text.starts_with(r#"{"seq":3,"#), "{text}");
});

/// A strict RFC 4180 reader for the test: rows of cells.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut cell) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c != '"' {
                cell.push(c);
            } else if chars.peek() == Some(&'"') {
                chars.next();
                cell.push('"');
            } else {
                assert!(
                    matches!(chars.peek(), None | Some(',' | '\r')),
                    "text after a closing quote"
                );
                quoted = false;
            }
            continue;
        }
        match c {
            '"' => {
                assert!(cell.is_empty(), "quote inside an unquoted cell");
                quoted = true;
            }
            ',' => row.push(std::mem::take(&mut cell)),
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "bare CR");
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            '\n' => panic!("bare LF ends a record"),
            c => cell.push(c),
        }
    }
    assert!(
        !quoted && cell.is_empty() && row.is_empty(),
        "the file must end with CRLF"
    );
    rows
}

both_backends!(csv_export_quotes_and_defuses_formulas, |db| {
    seed_hostile(&db.store).await;
    let (n, text) = export_text(&db, ExportFormat::Csv, 1).await;
    assert_eq!(n, 4);
    let rows = parse_csv(&text);
    assert_eq!(rows[0].join(","), CSV_HEADER);
    assert_eq!(rows.len(), 5, "{text}");
    for row in &rows {
        assert_eq!(row.len(), 9, "{row:?}");
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{}: formula cell {cell:?}",
                db.name()
            );
        }
    }
    let stored = audit::list(
        &db.store,
        &audit::Filter {
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for (row, ev) in rows[1..].iter().zip(stored.iter().rev()) {
        let plain = |cell: &str| cell.strip_prefix('\'').unwrap_or(cell).to_owned();
        assert_eq!(row[0], ev.seq.to_string());
        let at = OffsetDateTime::parse(&row[1], &Rfc3339).unwrap();
        assert_eq!(
            i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap(),
            ev.at
        );
        assert_eq!(plain(&row[2]), ev.actor);
        assert_eq!(row[3], ev.action);
        assert_eq!(row[4], ev.request_id.clone().unwrap_or_default());
        assert_eq!(plain(&row[5]), ev.entitlement.clone().unwrap_or_default());
        assert_eq!(row[6], ev.data);
        assert_eq!(
            (row[7].as_str(), row[8].as_str()),
            (ev.prev_hash.as_str(), ev.hash.as_str())
        );
    }
    assert!(text.contains("\"'=cmd|' /C calc'!A0\""), "{text}");
    assert!(text.contains("\"aws,prod \"\"admin\"\"\""), "{text}");

    let (n, text) = export_text(&db, ExportFormat::Csv, 99).await;
    assert_eq!((n, text), (0, format!("{CSV_HEADER}\r\n")));
});

/// The chunks of [`export::stream`] with `filter`.
async fn stream_chunks(db: &TestDb, format: ExportFormat, filter: audit::Filter) -> Vec<String> {
    use futures_util::TryStreamExt as _;
    export::stream(db.store.clone(), format, filter)
        .map_ok(|chunk| String::from_utf8(chunk).unwrap())
        .try_collect()
        .await
        .unwrap()
}

both_backends!(
    a_streamed_export_reads_a_page_at_a_time_and_keeps_to_the_filters,
    |db| {
        seed(&db.store, 2_100).await.unwrap();
        // Everything: the same text as the whole export, one chunk per page of 1,000 events.
        let chunks = stream_chunks(&db, ExportFormat::Csv, audit::Filter::default()).await;
        let sizes: Vec<usize> = chunks.iter().map(|c| c.matches("\r\n").count()).collect();
        assert_eq!(
            sizes,
            [1_001, 1_000, 100],
            "{}: header + rows per chunk",
            db.name()
        );
        assert_eq!(
            chunks.concat(),
            export_text(&db, ExportFormat::Csv, 1).await.1
        );

        // The page's filters: alice's events (even i) before the 2,001st second, exactly one
        // page, oldest first; the page after it is empty and ends the stream.
        let filter = audit::Filter {
            actor: Some("alice@example.com".to_owned()),
            until: Some(T0 + 2_001 * 1_000),
            ..audit::Filter::default()
        };
        let chunks = stream_chunks(&db, ExportFormat::Jsonl, filter).await;
        assert_eq!(chunks.len(), 1, "{}", db.name());
        let seqs: Vec<i64> = chunks[0]
            .lines()
            .map(|l| serde_json::from_str::<jit_api::AuditEvent>(l).unwrap())
            .inspect(|ev| assert_eq!(ev.actor, "alice@example.com"))
            .map(|ev| ev.seq)
            .collect();
        assert_eq!(seqs, (1..=1_000).map(|i| i * 2).collect::<Vec<_>>());

        // Entitlement, action prefix and days together; none matching is an empty stream (CSV: the
        // header alone).
        let filter = audit::Filter {
            entitlement: Some("aws-prod-admin".to_owned()),
            action: Some("request.".to_owned()),
            since: Some(T0 + 2_050 * 1_000),
            ..audit::Filter::default()
        };
        let text = stream_chunks(&db, ExportFormat::Jsonl, filter)
            .await
            .concat();
        let want = (2_050..=2_100).filter(|i| i % 3 != 0).count();
        assert_eq!(text.lines().count(), want, "{}: {text}", db.name());
        let none = audit::Filter {
            action: Some("grant.".to_owned()),
            ..audit::Filter::default()
        };
        assert_eq!(
            stream_chunks(&db, ExportFormat::Csv, none.clone())
                .await
                .concat(),
            format!("{CSV_HEADER}\r\n")
        );
        assert!(
            stream_chunks(&db, ExportFormat::Jsonl, none)
                .await
                .is_empty()
        );
    }
);

both_backends!(ocsf_export_is_ocsf_shaped_and_keeps_the_chain, |db| {
    seed_hostile(&db.store).await;
    let (n, text) = export_text(&db, ExportFormat::Ocsf, 1).await;
    assert_eq!(n, 4);
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 4);
    for o in &events {
        for field in [
            "class_uid",
            "category_uid",
            "activity_id",
            "type_uid",
            "time",
            "severity_id",
            "metadata",
        ] {
            assert!(
                !o[field].is_null(),
                "{}: `{field}` missing in {o}",
                db.name()
            );
        }
        let class = o["class_uid"].as_u64().unwrap();
        assert_eq!(
            o["type_uid"].as_u64().unwrap(),
            class * 100 + o["activity_id"].as_u64().unwrap()
        );
        assert_eq!(o["category_uid"].as_u64().unwrap(), class / 1000);
        assert_eq!(o["metadata"]["version"], OCSF_VERSION);
        assert_eq!(o["metadata"]["product"]["name"], "jit");
        assert_eq!(o["time"], o["unmapped"]["at"]);
        if class == 3002 || class == 3005 {
            assert!(
                o["user"]["name"].is_string(),
                "`user` is required by {class}: {o}"
            );
        }
        let u = &o["unmapped"];
        let data = serde_json::to_string(&u["data"]).unwrap();
        let hash = audit::chain_hash(&Canonical {
            seq: u["seq"].as_i64().unwrap(),
            at: u["at"].as_i64().unwrap(),
            actor: u["actor"].as_str().unwrap(),
            action: u["action"].as_str().unwrap(),
            request_id: u["request_id"].as_str(),
            entitlement: u["entitlement"].as_str(),
            data: &data,
            prev_hash: u["prev_hash"].as_str().unwrap(),
        });
        assert_eq!(
            u["hash"].as_str(),
            Some(hash.as_str()),
            "{}: {o}",
            db.name()
        );
    }
    let classes: Vec<(u64, u64)> = events
        .iter()
        .map(|o| {
            (
                o["class_uid"].as_u64().unwrap(),
                o["activity_id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(classes, [(3005, 99), (3005, 1), (3002, 1), (0, 99)]);
    assert_eq!(events[1]["user"]["name"], "@alice");
    assert_eq!(events[1]["privileges"], json!(["-2+3"]));
    assert_eq!(
        events[0]["metadata"]["correlation_uid"],
        events[0]["unmapped"]["request_id"]
    );
});

// ---------------------------------------------------------------------------------------------
// reconciliation's view of ended grants
// ---------------------------------------------------------------------------------------------

both_backends!(
    ended_grants_waiting_for_removal_are_read_without_a_cap,
    |db| {
        let store = &db.store;
        let alice = user("alice");
        add_user(store, &alice).await;
        let since = T0 + 10_000;
        // Each row's end is its `created_at`; its class, its justification (set below).
        let row = |state: RequestState, at: i64, class: &str| {
            let mut r = request(&alice, "aws-sandbox");
            r.state = state;
            r.created_at = UnixMs::from_millis(at);
            r.justification = class.to_owned();
            r
        };
        let mut tx = store.begin().await.unwrap();
        // More than any page or former cap (1,000) of grants that ended and wait for removal.
        let mut want = HashSet::new();
        for i in 0..1_100 {
            let state = if i % 2 == 0 {
                RequestState::Expired
            } else {
                RequestState::Revoked
            };
            let r = row(state, since + 1 + i, "waiting");
            want.insert(r.id);
            requests::insert(&mut tx, &r).await.unwrap();
        }
        // Not theirs: ended at `since`, already removed, never active, still active.
        for r in [
            row(RequestState::Expired, since, "waiting"),
            row(RequestState::Revoked, since + 5, "removed"),
            row(RequestState::Revoked, since + 5, "never active"),
            row(RequestState::Active, since + 5, "active"),
        ] {
            requests::insert(&mut tx, &r).await.unwrap();
        }
        tx.commit().await.unwrap();
        for sql in [
            format!(
                "UPDATE requests SET activated_at = {T0}, ended_at = created_at \
             WHERE justification IN ('waiting', 'removed')"
            ),
            "UPDATE requests SET deprovisioned_at = created_at + 1 WHERE justification = 'removed'"
                .to_owned(),
            "UPDATE requests SET ended_at = created_at WHERE justification = 'never active'"
                .to_owned(),
            format!("UPDATE requests SET activated_at = {T0} WHERE justification = 'active'"),
        ] {
            db.exec(&sql).await.unwrap();
        }
        let got: HashSet<Uuid> = requests::ended_not_removed(store, since)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(got.len(), 1_100, "{}", db.name());
        assert_eq!(got, want, "{}", db.name());
    }
);

/// Text a simple query holds as a literal (`db::literal`: a statement that cannot take
/// parameters, such as a `BEGIN` that takes a lock or a probe's savepoint batch) reads back
/// as exactly that text, whatever it holds; and a probe of the audit log with such text in
/// every field passes, leaves nothing behind and keeps its transaction usable.
#[tokio::test]
async fn literals_in_a_simple_query_read_back_as_their_text() {
    let db = TestDb::postgres().await;
    let nasty = [
        "",
        "plain",
        "it's",
        r"back\slash",
        r"\'",
        r"\\''\\",
        "'); DROP TABLE audit_pending; --",
        "E'x'",
        "$$ $q$ dollar",
        "ünïcödé ✓ 日本 \u{202e}",
        "line\nbreak\ttab\r",
    ];
    for text in nasty {
        let lit = jit_server::store::db::literal(text).unwrap();
        let same = query_built(format!(
            "SELECT CASE WHEN {lit} = $1 THEN 1 ELSE 0 END AS same"
        ))
        .bind(text)
        .fetch_one(&db.store)
        .await
        .unwrap()
        .try_get::<i64>("same")
        .unwrap();
        assert_eq!(same, 1, "{text:?} read back as something else from {lit}");
    }
    assert!(jit_server::store::db::literal("nul\0").is_none());

    let before = ints(&db.store, "SELECT COUNT(*) FROM audit_pending").await;
    let mut tx = db.store.begin().await.unwrap();
    for text in nasty {
        let event = NewEvent {
            actor: text,
            action: text,
            request_id: Some(Uuid::now_v7()),
            entitlement: Some(text),
            data: json!({ "text": text }),
        };
        audit::probe_in(&mut tx, OffsetDateTime::now_utc(), &event)
            .await
            .unwrap_or_else(|e| panic!("probe of {text:?}: {e}"));
    }
    let inside = query("SELECT COUNT(*) AS n FROM audit_pending")
        .fetch_one(&mut tx)
        .await
        .unwrap()
        .try_get::<i64>("n")
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(vec![inside], before, "a probe left its row");
    assert_eq!(
        ints(&db.store, "SELECT COUNT(*) FROM audit_pending").await,
        before
    );
}
