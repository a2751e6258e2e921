//! The SQLite engine off the async runtime: the writer thread takes turns in
//! order, a transaction holds its turn until it ends, and nothing a statement
//! waits for (a lock, the disk) blocks the runtime's threads.

use std::path::PathBuf;
use std::time::Duration;

use jit_server::store::{Backend, Store, query};

use crate::support::TestDb;

fn file(db: &TestDb) -> PathBuf {
    db.url
        .strip_prefix("sqlite:")
        .map(|p| PathBuf::from(p.trim_start_matches("//")))
        .unwrap()
}

async fn count(store: &Store) -> i64 {
    query("SELECT COUNT(*) AS n FROM users")
        .fetch_one(store)
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

async fn add_user(store: &Store, key: &str) -> Result<u64, jit_server::store::StoreError> {
    query("INSERT INTO users (key, name, email, updated_at) VALUES ($1, $1, $1, 0)")
        .bind(key)
        .execute(store)
        .await
}

/// On a runtime of one thread: while the broker's writes wait for a lock another
/// process holds (SQLite's busy handler sleeps for up to 10 s), reads and timers
/// go on; the writes go through once the lock is free.
#[test]
fn a_write_waiting_for_a_lock_leaves_the_runtime_free() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = TestDb::new(Backend::Sqlite).await;
        let other = rusqlite::Connection::open(file(&db)).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();

        let store = db.store.clone();
        let alone = tokio::spawn(async move { add_user(&store, "alone").await });
        let store = db.store.clone();
        let in_tx = tokio::spawn(async move {
            let mut tx = store.begin().await?;
            query("INSERT INTO users (key, name, email, updated_at) VALUES ('tx', 'tx', 'tx', 0)")
                .execute(&mut tx)
                .await?;
            tx.commit().await
        });

        let started = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let read = tokio::time::timeout(Duration::from_secs(2), count(&db.store))
            .await
            .expect("a read while writes wait for the lock");
        assert_eq!(read, 0);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the runtime was blocked for {:?}",
            started.elapsed()
        );
        assert!(!alone.is_finished() && !in_tx.is_finished());

        other.execute_batch("COMMIT").unwrap();
        assert_eq!(alone.await.unwrap().unwrap(), 1);
        in_tx.await.unwrap().unwrap();
        assert_eq!(count(&db.store).await, 2);
    });
}

/// A transaction holds the writer's turn: writes outside it wait until it ends,
/// and one dropped part way (its task cancelled) rolls back and frees the turn.
#[tokio::test]
async fn a_transaction_holds_the_writers_turn_until_it_ends() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut tx = db.store.begin().await.unwrap();
    query("INSERT INTO users (key, name, email, updated_at) VALUES ('a', 'a', 'a', 0)")
        .execute(&mut tx)
        .await
        .unwrap();
    let store = db.store.clone();
    let waiting = tokio::spawn(async move { add_user(&store, "b").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "a write went past an open transaction"
    );
    // readers see the database as it was before the transaction
    assert_eq!(count(&db.store).await, 0);
    tx.commit().await.unwrap();
    waiting.await.unwrap().unwrap();
    assert_eq!(count(&db.store).await, 2);

    // A task cancelled inside its transaction: nothing of it stays, the next goes on.
    let store = db.store.clone();
    let cancelled = tokio::spawn(async move {
        let mut tx = store.begin().await.unwrap();
        query("INSERT INTO users (key, name, email, updated_at) VALUES ('c', 'c', 'c', 0)")
            .execute(&mut tx)
            .await
            .unwrap();
        std::future::pending::<()>().await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancelled.abort();
    let _ = cancelled.await;
    tokio::time::timeout(Duration::from_secs(2), add_user(&db.store, "d"))
        .await
        .expect("the writer's turn came back")
        .unwrap();
    let keys: Vec<String> = query("SELECT key FROM users ORDER BY key")
        .fetch_all(&db.store)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get("key").unwrap())
        .collect();
    assert_eq!(keys, ["a", "b", "d"]);

    // A statement that fails leaves the transaction usable, as before.
    let mut tx = db.store.begin().await.unwrap();
    assert!(
        query("INSERT INTO users (key, name, email, updated_at) VALUES ('a', 'a', 'a', 0)")
            .execute(&mut tx)
            .await
            .unwrap_err()
            .is_unique_violation()
    );
    query("INSERT INTO users (key, name, email, updated_at) VALUES ('e', 'e', 'e', 0)")
        .execute(&mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&db.store).await, 4);
}
