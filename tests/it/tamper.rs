//! Tamper evidence seen from outside the store: what the broker's pages and API say when the
//! audit table was changed behind its back. Every test runs on SQLite and PostgreSQL.

use jit_server::store::{Backend, audit, db};
use reqwest::StatusCode;

use crate::support::db::{loosen_audit_table, stray_audit_row};
use crate::support::server::{ENGINES, start};

/// A request page, the audit page and the audit API that meet a row that cannot be read say
/// that the audit log is damaged, and which row; none answers a bare internal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_that_meet_a_bad_row_say_the_audit_log_is_damaged() {
    for engine in ENGINES {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let r = alice.request("aws-prod-admin", "1h").await;
        audit::caught_up(&b.app.store).await.unwrap();
        loosen_audit_table(&b.app.store).await;
        // SQLite: a row whose seq is NULL; PostgreSQL (whose primary key refuses that): a row
        // whose actor is NULL.
        let (forged, named) = match b.app.store.backend() {
            Backend::Sqlite => (stray_audit_row("NULL", "'x'", r.id), "seq NULL"),
            Backend::Postgres => (stray_audit_row("1000", "NULL", r.id), "seq 1000"),
        };
        db::batch(&b.app.store, &forged).await.unwrap();

        let cookie = b.browser_login("alice").await;
        let (status, page) = b.page(&cookie, &format!("/requests/{}", r.id)).await;
        assert_eq!(status, StatusCode::OK, "{engine:?}: {page}");
        assert!(
            page.contains(r#"id="audit-damaged""#)
                && page.contains("the audit log is damaged")
                && page.contains(named),
            "{engine:?}: {page}"
        );
        assert!(
            page.contains("aws-prod-admin"),
            "the request is still shown"
        );

        let carol = b.login("carol").await;
        let (status, body) = carol.get(&format!("/audit?request_id={}", r.id)).await;
        assert_eq!(body["error"]["code"], "audit_damaged", "{engine:?}: {body}");
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("the audit log is damaged: ") && message.contains(named),
            "{engine:?}: {message}"
        );

        let cookie = b.browser_login("carol").await;
        let (status, page) = b.page(&cookie, "/audit").await;
        assert_eq!(status, StatusCode::OK, "{engine:?}: {page}");
        assert!(
            page.contains(r#"id="audit-damaged""#) && page.contains("chain broken"),
            "{engine:?}: {page}"
        );
    }
}
