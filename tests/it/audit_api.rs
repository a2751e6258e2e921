//! The audit API on both engines: `GET /api/v1/audit/verify` checks in steps, and in full on
//! request (`full=true`); what a check in steps can and cannot see (docs/audit.md).

use jit_server::store::db;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::db::disable_audit_triggers;
use crate::support::server::{ENGINES, Engine, each_engine, start};

each_engine!(
    verify_checks_in_steps_and_in_full_on_request,
    |engine| async move {
        let b = start(engine).await;
        let carol = b.login("carol").await;
        // The broker's first check reads the whole chain.
        let (status, first) = carol.get("/audit/verify").await;
        assert_eq!(status, StatusCode::OK, "{engine:?}: {first}");
        assert!(
            first["ok"] == true && first["recomputed_from"] == 1,
            "{engine:?}: {first}"
        );
        let mark = first["last_seq"].as_i64().unwrap();
        assert!(mark > 1, "{engine:?}: {first}");

        // Later ones from the newest row that passed on, counted as a whole-chain check.
        let oscar = b.login("oscar").await;
        let (status, body) = oscar
            .post(
                "/requests",
                json!({"entitlement": "aws-sandbox", "duration": "1h", "justification": "steps", "ticket": "INC-3"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (_, step) = carol.get("/audit/verify").await;
        let (_, full) = carol.get("/audit/verify?full=true").await;
        assert!(
            step["ok"] == true && full["ok"] == true,
            "{engine:?}: {step} {full}"
        );
        assert_eq!(step["recomputed_from"], mark, "{engine:?}: {step}");
        assert_eq!(full["recomputed_from"], 1, "{engine:?}: {full}");
        assert!(
            step["last_seq"].as_i64().unwrap() > mark,
            "{engine:?}: {step}"
        );
        // the full check ran after the step: it may count the step's own sign-in event more
        assert!(
            step["checked"].as_u64().unwrap() <= full["checked"].as_u64().unwrap()
                && step["checked"].as_i64() == step["last_seq"].as_i64(),
            "{engine:?}: {step} {full}"
        );

        // An old row edited behind the broker's back (triggers dropped, as only the database
        // owner can), the remembered row left as it is: the step cannot see it, the full check
        // does, and so does every check after that one until the chain is whole again.
        disable_audit_triggers(&b.app.store).await;
        db::batch(
            &b.app.store,
            "UPDATE audit_events SET actor = 'mallory' WHERE seq = 2",
        )
        .await
        .unwrap();
        let (_, blind) = carol.get("/audit/verify").await;
        assert!(blind["ok"] == true, "{engine:?}: {blind}");
        assert!(
            blind["recomputed_from"].as_i64().unwrap() > 1,
            "{engine:?}: {blind}"
        );
        let (_, caught) = carol.get("/audit/verify?full=true").await;
        assert!(
            caught["ok"] == false && caught["first_bad_seq"] == 2,
            "{engine:?}: {caught}"
        );
        let (_, still) = carol.get("/audit/verify").await;
        assert!(
            still["ok"] == false && still["first_bad_seq"] == 2 && still["recomputed_from"] == 1,
            "{engine:?}: a failed check leaves no point to resume from: {still}"
        );

        let (status, body) = carol.get("/audit/verify?full=maybe").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{engine:?}: {body}");
        let (status, _) = oscar.get("/audit/verify?full=true").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{engine:?}");
    }
);
