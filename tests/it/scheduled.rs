//! Scheduled access (issue 24 item 3, SPEC §10): a request with `start_at` is approved in
//! advance, waits as `scheduled`, is granted by the scheduler at its start (test clock) and
//! ends at `start_at + duration`; cancellable until it starts; bad starts refused. Both engines.

use std::time::Duration;

use jit_api::RequestState;
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use crate::support::server::{Caller, ENGINES, Engine, TestBroker, each_engine, start};

/// `ahead` from the broker's clock, in RFC 3339.
fn at(b: &TestBroker, ahead: time::Duration) -> String {
    (b.app.clock.now() + ahead)
        .replace_nanosecond(0)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

async fn schedule(who: &Caller, entitlement: &str, start_at: &str) -> (StatusCode, Value) {
    who.post(
        "/requests",
        json!({"entitlement": entitlement, "duration": "1h", "justification": "change window",
               "start_at": start_at}),
    )
    .await
}

each_engine!(
    scheduled_request_activates_at_its_start_and_expires_after,
    |engine| async move {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let bob = b.login("bob").await;
        let start_at = at(&b, time::Duration::hours(2));
        let (status, body) = schedule(&alice, "aws-prod-admin", &start_at).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["state"], "pending");
        assert_eq!(body["start_at"], start_at.as_str());
        let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
        // Approved in advance: it waits, granting nothing yet.
        let (status, body) = bob.approve(id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["state"], "scheduled");
        b.advance(Duration::from_mins(119)).await;
        let r = alice.show(id).await;
        assert_eq!(r.state, RequestState::Scheduled);
        assert_eq!(r.activated_at, None);
        // Listed by its state.
        let (status, list) = alice.get("/requests?state=scheduled").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert!(list.to_string().contains(&id.to_string()), "{list}");
        // At its start the scheduler grants it, for the window that starts at `start_at`.
        b.advance(Duration::from_mins(1)).await;
        let r = alice.show(id).await;
        assert_eq!(r.state, RequestState::Active, "{r:?}");
        let start = time::OffsetDateTime::parse(&start_at, &Rfc3339).unwrap();
        assert_eq!(r.expires_at, Some(start + time::Duration::hours(1)));
        b.advance(Duration::from_mins(59)).await;
        assert_eq!(alice.show(id).await.state, RequestState::Active);
        b.advance(Duration::from_mins(1)).await;
        assert_eq!(alice.show(id).await.state, RequestState::Expired);
        assert_eq!(
            b.audit_actions(Some(id)).await,
            [
                "request.created",
                "request.approval",
                "request.approved",
                "request.started",
                "grant.activated",
                "grant.expiring_soon",
                "grant.expired",
                "grant.removed",
            ]
        );
    }
);

each_engine!(
    auto_approved_scheduled_request_waits_and_late_start_keeps_its_window,
    |engine| async move {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        // aws-sandbox needs no approval: scheduled at once.
        let start_at = at(&b, time::Duration::minutes(30));
        let (status, body) = schedule(&alice, "aws-sandbox", &start_at).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["state"], "scheduled");
        let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
        // One open request per entitlement: a scheduled one counts.
        let (status, body) = alice
            .post(
                "/requests",
                json!({"entitlement": "aws-sandbox", "duration": "1h", "justification": "x"}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        // The broker gets to it late (40 minutes after its start): it still ends at start + 1h.
        b.clock.advance(time::Duration::minutes(70));
        b.run_jobs().await;
        let r = alice.show(id).await;
        assert_eq!(r.state, RequestState::Active, "{r:?}");
        let start = time::OffsetDateTime::parse(&start_at, &Rfc3339).unwrap();
        assert_eq!(r.expires_at, Some(start + time::Duration::hours(1)));
    }
);

each_engine!(
    scheduled_request_whose_window_passed_fails,
    |engine| async move {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let (status, body) =
            schedule(&alice, "aws-sandbox", &at(&b, time::Duration::minutes(10))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
        // The broker was down past the whole window: nothing is granted after it.
        b.clock.advance(time::Duration::minutes(80));
        b.run_jobs().await;
        let r = alice.show(id).await;
        assert_eq!(r.state, RequestState::Failed, "{r:?}");
        assert!(
            r.failure_reason
                .as_deref()
                .unwrap()
                .contains("window ended"),
            "{r:?}"
        );
        assert_eq!(r.activated_at, None);
        assert_eq!(
            b.audit_actions(Some(id)).await,
            ["request.created", "request.auto_approved", "grant.failed"]
        );
    }
);

each_engine!(
    scheduled_request_can_be_cancelled_before_it_starts,
    |engine| async move {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let bob = b.login("bob").await;
        let carol = b.login("carol").await;
        let (status, body) =
            schedule(&alice, "aws-sandbox", &at(&b, time::Duration::hours(1))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
        // Not someone else's to cancel, and not revocable: it is not active.
        let (status, _) = bob.post(&format!("/requests/{id}/cancel"), json!({})).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, body) = alice
            .post(&format!("/requests/{id}/revoke"), json!({}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(
            body["error"]["message"],
            "request is scheduled, not active: cancel it instead"
        );
        let (status, body) = alice
            .post(&format!("/requests/{id}/cancel"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["state"], "cancelled");
        // Its start passes with nothing granted.
        b.advance(Duration::from_mins(61)).await;
        let r = alice.show(id).await;
        assert_eq!(r.state, RequestState::Cancelled);
        assert_eq!(r.activated_at, None);
        assert_eq!(
            b.audit_actions(Some(id)).await,
            [
                "request.created",
                "request.auto_approved",
                "request.cancelled"
            ]
        );
        // An admin may cancel someone's scheduled request too, over the API and on its page
        // (which offers no cancelling of someone's granted or pending request).
        let (status, body) =
            schedule(&alice, "aws-sandbox", &at(&b, time::Duration::hours(1))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
        let (status, body) = carol
            .post(&format!("/requests/{id}/cancel"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["state"], "cancelled");
        let (status, body) =
            schedule(&alice, "aws-sandbox", &at(&b, time::Duration::hours(1))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
        let cookie = b.browser_login("carol").await;
        let (_, page) = b.page(&cookie, &format!("/requests/{id}")).await;
        assert!(page.contains(r#"id="cancel""#), "{page}");
        let csrf = page
            .split(r#"name="csrf" value=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap();
        let res = b
            .http
            .post(format!("{}/requests/{id}/cancel", b.url))
            .header(reqwest::header::COOKIE, &cookie)
            .header(reqwest::header::ORIGIN, &b.url)
            .form(&[("csrf", csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.text()
                .await
                .unwrap()
                .contains("You cancelled this request.")
        );
        assert_eq!(alice.show(id).await.state, RequestState::Cancelled);
        let (_, page) = b.page(&cookie, &format!("/requests/{id}")).await;
        assert!(!page.contains(r#"id="cancel""#), "{page}");
        let pending = alice.request("aws-prod-admin", "1h").await;
        let (_, page) = b.page(&cookie, &format!("/requests/{}", pending.id)).await;
        assert!(!page.contains(r#"id="cancel""#), "{page}");
    }
);

each_engine!(bad_start_times_are_refused, |engine| async move {
    let b = start(engine).await;
    let alice = b.login("alice").await;
    let past = at(&b, -time::Duration::minutes(1));
    let (status, body) = schedule(&alice, "aws-sandbox", &past).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["error"]["message"],
        format!("`start_at` {past} is not in the future: leave it out to start once approved")
    );
    let far = at(&b, time::Duration::days(8));
    let (status, body) = schedule(&alice, "aws-sandbox", &far).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["error"]["message"],
        format!(
            "`start_at` {far} is more than 7d ahead, the most `aws-sandbox` allows (`max_schedule_ahead`)"
        )
    );
    let (status, body) = schedule(&alice, "aws-sandbox", "tomorrow morning").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Seven days ahead is allowed.
    let (status, body) = schedule(&alice, "aws-sandbox", &at(&b, time::Duration::days(7))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Nothing refused was written.
    let (_, list) = alice.get("/requests").await;
    assert_eq!(list.as_array().map_or(0, Vec::len), 1, "{list}");
});
