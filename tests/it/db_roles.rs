//! PostgreSQL with two roles (docs/deploy.md, "PostgreSQL roles"): `jit-server migrate`, as the
//! owner of the tables, grants an application role exactly what `serve` needs; `serve`, as
//! that role, runs no DDL, runs the whole request → approve → grant → expire flow, and the role
//! can neither change the audit log nor switch its guards off.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use jit_api::RequestState;
use jit_server::config::Config;
use jit_server::store::migrate::APP_GRANTS;
use sqlx::{Connection as _, PgConnection};

use crate::support::peer_env;
use crate::support::server::{Engine, fresh_db, server_bin, start_on};

/// A broker built in development mode on `url` as `role`; only whether it starts matters.
async fn build_as(url: &str, role: &str) -> anyhow::Result<()> {
    let mut config = Config::default();
    config.database.url = url.to_owned();
    config.database.app_role = Some(role.to_owned());
    config.policy.dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies").into();
    jit_server::server::build(
        config,
        true,
        jit_server::http::AuthMode::Dev,
        jit_server::providers::Providers::simulated(),
        Arc::new(jit_server::clock::SystemClock),
    )
    .await
    .map(|_| ())
}

/// Runs `sql` on `conn`; the database's error text if it refused.
async fn try_sql(conn: &mut PgConnection, sql: &str) -> Result<(), String> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_as_the_application_role_works_end_to_end_and_cannot_touch_the_audit_log() {
    crate::support::init();
    let db = fresh_db(Engine::Postgres).await;
    let owner_url = db.url.clone();
    let role = format!(
        "jit_app_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let mut admin = PgConnection::connect(&peer_env("JIT_TEST_PG_URL"))
        .await
        .unwrap();
    try_sql(&mut admin, &format!("CREATE ROLE {role} LOGIN"))
        .await
        .unwrap();
    let mut app_url = url::Url::parse(&owner_url).unwrap();
    app_url.set_username(&role).unwrap();
    let app_url = app_url.to_string();

    // Before `migrate`: serve names what is missing and creates nothing.
    let e = format!("{:#}", build_as(&app_url, &role).await.unwrap_err());
    assert!(
        e.contains(&crate::support::db::all_pending()) && e.contains("jit-server migrate"),
        "{e}"
    );
    let mut owner = PgConnection::connect(&owner_url).await.unwrap();
    let tables: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema()")
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert_eq!(tables, 0, "serve ran DDL");

    migrate_as_owner(&app_url, &owner_url, &role);

    // Every table has its grants (a table added without them fails here).
    let schema: BTreeSet<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
    )
    .fetch_all(&mut owner)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let granted: BTreeSet<String> = APP_GRANTS.iter().map(|(t, _)| (*t).to_owned()).collect();
    assert_eq!(schema, granted);

    // serve as the owner while `database.app_role` is set: refused.
    let e = format!("{:#}", build_as(&owner_url, &role).await.unwrap_err());
    assert!(
        e.contains("database.app_role") && e.contains("superuser"),
        "{e}"
    );

    // serve as the application role: the whole flow.
    let b = start_on(
        db,
        jit_server::http::AuthMode::Dev,
        jit_server::providers::Providers::simulated(),
        |c| {
            c.database.url.clone_from(&app_url);
            c.database.app_role = Some(role.clone());
        },
    )
    .await;
    the_whole_flow(&b).await;
    // A week on, the sweep deletes the flow's done jobs and the ended sessions as the role.
    b.clock.advance(time::Duration::days(8));
    let swept = jit_server::scheduler::sweep(&b.app).await.unwrap();
    assert!(swept.jobs >= 3 && swept.sessions >= 3, "{swept:?}");

    refusals(&app_url).await;
    drop(b);

    // Clean up: the database, then the role (cluster-wide).
    let _ = owner.close().await;
    let name = owner_url.rsplit('/').next().unwrap();
    try_sql(&mut admin, &format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
    try_sql(&mut admin, &format!("DROP ROLE {role}"))
        .await
        .unwrap();
}

/// `jit-server migrate` as the owner, granting the application role.
fn migrate_as_owner(app_url: &str, owner_url: &str, role: &str) {
    let out = Command::new(server_bin())
        .arg("migrate")
        .env("JIT_DATABASE__URL", app_url)
        .env("JIT_DATABASE__MIGRATE_URL", owner_url)
        .env("JIT_DATABASE__APP_ROLE", role)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("applied {}", crate::support::db::MIGRATIONS[3]))
            && stdout.contains(&format!(
                "role `{role}` may do what `jit-server serve` needs"
            )),
        "{stdout}"
    );
}

/// Request → approve → grant → expire, and the chain verifies.
async fn the_whole_flow(b: &crate::support::server::TestBroker) {
    let alice = b.login("alice").await;
    let bob = b.login("bob").await;
    let r = alice.request("aws-prod-admin", "1h").await;
    let (status, body) = bob.approve(r.id).await;
    assert!(status.is_success(), "{body}");
    b.run_jobs().await;
    assert_eq!(alice.show(r.id).await.state, RequestState::Active);
    b.advance(Duration::from_mins(58)).await;
    b.advance(Duration::from_mins(2)).await;
    assert_eq!(alice.show(r.id).await.state, RequestState::Expired);
    assert_eq!(
        b.audit_actions(Some(r.id)).await,
        crate::support::server::EXPIRED_GRANT_TRAIL
    );
    let carol = b.login("carol").await;
    let (status, report) = carol.get("/audit/verify").await;
    assert!(status.is_success() && report["ok"] == true, "{report}");
}

/// What the application role cannot do to the audit log.
async fn refusals(app_url: &str) {
    let mut app = PgConnection::connect(app_url).await.unwrap();
    for (sql, why) in [
        (
            "UPDATE audit_events SET actor = 'x' WHERE seq = 1",
            "permission denied",
        ),
        (
            "DELETE FROM audit_events WHERE seq = 1",
            "permission denied",
        ),
        ("TRUNCATE audit_events", "permission denied"),
        (
            "ALTER TABLE audit_events DISABLE TRIGGER USER",
            "must be owner",
        ),
        (
            "ALTER TABLE audit_events DISABLE TRIGGER audit_no_update_delete",
            "must be owner",
        ),
        (
            "DROP TRIGGER audit_append_in_chain ON audit_events",
            "must be owner",
        ),
        (
            "ALTER TABLE audit_events ADD COLUMN note TEXT",
            "must be owner",
        ),
        ("DROP TABLE audit_events", "must be owner"),
        ("UPDATE audit_pending SET actor = 'x'", "permission denied"),
        ("TRUNCATE audit_pending", "permission denied"),
        (
            "ALTER TABLE audit_pending DISABLE TRIGGER USER",
            "must be owner",
        ),
        (
            "SET session_replication_role = replica",
            "permission denied",
        ),
        ("CREATE TABLE mine (id INT)", "permission denied"),
        (
            "UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea",
            "permission denied",
        ),
    ] {
        let e = try_sql(&mut app, sql).await.expect_err(sql);
        assert!(e.contains(why), "`{sql}`: {e}");
    }
    // A pending event leaves only by being chained, also for the role that may DELETE there.
    try_sql(
        &mut app,
        "INSERT INTO audit_pending (at, actor, action, data) VALUES (1, 'mallory', 'forged', '{}')",
    )
    .await
    .unwrap();
    let e = try_sql(
        &mut app,
        "DELETE FROM audit_pending WHERE actor = 'mallory'",
    )
    .await
    .unwrap_err();
    assert!(e.contains("is not in the chain"), "{e}");
    let _ = app.close().await;
}
