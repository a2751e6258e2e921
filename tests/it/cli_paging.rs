//! `jit` follows the broker's pages (issue 23 item 3): `jit status` counts
//! and `-o json` lists every request however many pages they take, `--limit`
//! and `--all` choose how many the table shows, and a short id is found on
//! any page. Against the broker in development mode, on SQLite and
//! PostgreSQL.

use std::collections::HashSet;
use std::sync::Arc;

use jit_api::RequestState;
use jit_server::domain::UnixMs;
use jit_server::http::auth::demo_user;
use jit_server::store::audit::NewEvent;
use jit_server::store::requests::{self, RequestRow};
use jit_server::store::users;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::cli_e2e::harness::{Out, StderrLog, User};
use crate::paging::pending;
use crate::support::server::{ENGINES, Engine, each_engine, start};

/// More than two of the pages `jit` asks for (500).
const MINE: usize = 1_100;

/// Runs `jit ARGS…` as `user` off the runtime's workers.
async fn jit(user: &Arc<User>, args: &[&str]) -> Out {
    let user = Arc::clone(user);
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        user.jit(&args)
    })
    .await
    .unwrap()
}

each_engine!(jit_status_follows_every_page, |engine| async move {
    let b = start(engine).await;
    let alice = demo_user("alice").unwrap();
    let now = jit_server::clock::to_ms(b.app.now());
    let mut tx = b.app.store.begin().await.unwrap();
    users::upsert(&mut tx, &alice, now).await.unwrap();
    let mut mine: Vec<RequestRow> = Vec::with_capacity(MINE);
    for i in 0..MINE {
        // Ended ones (only one may be open per entitlement), three to a millisecond.
        let at = now - 10_000_000 + i64::try_from(i / 3).unwrap();
        let mut r = pending(&alice, "aws-sandbox", "aws_role", at);
        r.state = RequestState::Cancelled;
        r.ended_at = Some(UnixMs::from_millis(at + 1));
        requests::insert(&mut tx, &r).await.unwrap();
        mine.push(r);
    }
    tx.commit().await.unwrap();
    let want: HashSet<Uuid> = mine.iter().map(|r| r.id).collect();

    let user = Arc::new(User::new("alice", &StderrLog::default()));
    jit(&user, &["login", "--server", &b.url, "--user", "alice"])
        .await
        .ok();

    // -o json: every one, once.
    let listed = jit(&user, &["-o", "json", "status"]).await.ok().json();
    let ids: Vec<Uuid> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), MINE, "{engine:?}");
    assert_eq!(
        ids.iter().copied().collect::<HashSet<_>>(),
        want,
        "{engine:?}"
    );

    // The table: the 20 newest, --limit N, --all; the rest counted.
    let table = jit(&user, &["status"]).await.ok().stdout;
    assert!(
        table.contains(&format!("… {} older requests not shown", MINE - 20)),
        "{table}"
    );
    let table = jit(&user, &["status", "--limit", "5"]).await.ok().stdout;
    assert!(
        table.contains(&format!("… {} older requests not shown", MINE - 5)),
        "{table}"
    );
    let rows = |t: &str| t.lines().filter(|l| l.contains("cancelled")).count();
    assert_eq!(rows(&table), 5, "{table}");
    let table = jit(&user, &["status", "--all"]).await.ok().stdout;
    assert_eq!(rows(&table), MINE, "{engine:?}");
    assert!(!table.contains("older requests not shown"), "{table}");
    jit(&user, &["status", "--all", "--limit", "3"])
        .await
        .fails(1, "cannot be used with");

    // The oldest, on the last page, by the end of its id.
    let oldest = mine[0].id.to_string();
    let end = &oldest[oldest.len() - 12..];
    let shown = jit(&user, &["-o", "json", "show", end]).await.ok().json();
    assert_eq!(shown["id"], Value::String(oldest.clone()), "{engine:?}");

    // Its timeline, more events than a page of the audit log holds (1,000): every one.
    let mut tx = b.app.store.begin().await.unwrap();
    for n in 0..NOTES {
        let note = format!("note {n}");
        jit_server::store::audit::append(
            &mut tx,
            b.app.now(),
            NewEvent {
                actor: &alice.email,
                action: "request.noted",
                request_id: Some(mine[0].id),
                entitlement: Some("aws-sandbox"),
                data: json!({ "comment": note }),
            },
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let detail = jit(&user, &["show", end]).await.ok().stdout;
    let notes = detail
        .lines()
        .filter(|l| l.contains("request.noted by alice@example.com"))
        .count();
    assert_eq!(notes, NOTES, "{engine:?}");
    assert!(detail.contains("\"note 0\"") && detail.contains(&format!("\"note {}\"", NOTES - 1)));
});

/// Events of one request: more than a page of the audit log.
const NOTES: usize = 1_050;
