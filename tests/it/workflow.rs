//! The request lifecycle and its invariants over the JSON API, on SQLite and
//! PostgreSQL (SPEC §4, §8).

use std::time::Duration;

use jit_api::RequestState;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::server::{ENGINES, Engine, TestBroker, each_engine, start};

async fn active(
    b: &TestBroker,
    alice: &crate::support::server::Caller,
    id: uuid::Uuid,
) -> jit_api::Request {
    b.run_jobs().await;
    let r = alice.show(id).await;
    assert_eq!(r.state, RequestState::Active, "{r:?}");
    r
}

each_engine!(request_approve_activate_expire, |engine| async move {
    let b = start(engine).await;
    let alice = b.login("alice").await;
    let bob = b.login("bob").await;
    let r = alice.request("aws-prod-admin", "1h").await;
    assert_eq!(r.state, RequestState::Pending);
    assert_eq!(r.requester, "alice@example.com");
    let (status, body) = bob.approve(r.id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "approved");
    let r = active(&b, &alice, r.id).await;
    assert!(r.simulated);
    let expires = r.expires_at.unwrap();
    assert!((expires - r.activated_at.unwrap()).whole_seconds() == 3600);
    // Not before the window ends…
    b.advance(Duration::from_mins(58)).await;
    assert_eq!(alice.show(r.id).await.state, RequestState::Active);
    // …and right after it.
    b.advance(Duration::from_mins(2)).await;
    assert_eq!(alice.show(r.id).await.state, RequestState::Expired);
    assert_eq!(
        b.audit_actions(Some(r.id)).await,
        crate::support::server::EXPIRED_GRANT_TRAIL
    );
});

each_engine!(deny_ends_the_request, |engine| async move {
    let b = start(engine).await;
    let alice = b.login("alice").await;
    let bob = b.login("bob").await;
    let r = alice.request("aws-prod-readonly", "1h").await;
    let (status, body) = bob
        .post(
            &format!("/requests/{}/deny", r.id),
            json!({"comment": "not now"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "denied");
    assert_eq!(body["approvals"][0]["comment"], "not now");
    // A decision after the request is decided is refused.
    let dave = b.login("dave").await;
    let (status, body) = dave.approve(r.id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
});

each_engine!(n_of_m_needs_distinct_approvers, |engine| async move {
    let b = start(engine).await;
    let alice = b.login("alice").await;
    let bob = b.login("bob").await;
    let dave = b.login("dave").await;
    let r = alice.request("aws-prod-readonly", "2h").await;
    assert_eq!(r.approvals_required, 2);
    assert_eq!(bob.approve(r.id).await.1["state"], "pending");
    // The same approver counts once.
    let (status, body) = bob.approve(r.id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(alice.show(r.id).await.state, RequestState::Pending);
    assert_eq!(dave.approve(r.id).await.1["state"], "approved");
    active(&b, &alice, r.id).await;
});

each_engine!(requester_never_approves_own_request, |engine| async move {
    let b = start(engine).await;
    // carol is an admin: the policies let admins approve anything, but not their own requests.
    let carol = b.login("carol").await;
    let (status, body) = carol
        .post(
            "/requests",
            json!({"entitlement": "aws-sandbox", "duration": "3h", "justification": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let alice = b.login("alice").await;
    let r = alice.request("aws-prod-admin", "1h").await;
    let (status, body) = alice.approve(r.id).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("own request")
    );
    // mallory is no approver at all and does not even see the request.
    let mallory = b.login("mallory").await;
    let (status, _) = mallory.approve(r.id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(alice.show(r.id).await.state, RequestState::Pending);
});

each_engine!(cancel_by_requester_only, |engine| async move {
    let b = start(engine).await;
    let alice = b.login("alice").await;
    let bob = b.login("bob").await;
    let r = alice.request("aws-prod-admin", "1h").await;
    let (status, _) = bob
        .post(&format!("/requests/{}/cancel", r.id), json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = alice
        .post(&format!("/requests/{}/cancel", r.id), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "cancelled");
    let (status, _) = bob.approve(r.id).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = alice
        .post(&format!("/requests/{}/cancel", r.id), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
});

each_engine!(pending_requests_time_out, |engine| async move {
    let b = start(engine).await;
    let alice = b.login("alice").await;
    let r = alice.request("aws-prod-admin", "1h").await;
    assert_eq!(
        alice.show(r.id).await,
        r,
        "the answer to the create is what a read says"
    );
    b.advance(Duration::from_mins(30)).await;
    assert_eq!(alice.show(r.id).await.state, RequestState::Pending);
    b.advance(Duration::from_mins(32)).await;
    assert_eq!(alice.show(r.id).await.state, RequestState::TimedOut);
    let bob = b.login("bob").await;
    assert_eq!(bob.approve(r.id).await.0, StatusCode::CONFLICT);
});

each_engine!(auto_approval_and_its_limits, |engine| async move {
    let b = start(engine).await;
    let alice = b.login("alice").await;
    // approvals_required = 0 and policy allows up to 2h: granted at once.
    let r = alice.request("aws-sandbox", "1h").await;
    assert_eq!(r.state, RequestState::Approved);
    // the answer to the create is what a read says
    assert_eq!(alice.show(r.id).await, r);
    active(&b, &alice, r.id).await;
    assert_eq!(
        b.audit_actions(Some(r.id)).await[..3],
        [
            "request.created",
            "request.auto_approved",
            "grant.activated"
        ]
    );
});

each_engine!(
    duration_justification_and_ticket_rules,
    |engine| async move {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let cases = [
            (
                json!({"entitlement": "aws-prod-admin", "duration": "5h", "justification": "x"}),
                "maximum",
            ),
            (
                json!({"entitlement": "aws-prod-admin", "duration": "1h", "justification": "  "}),
                "justification is required",
            ),
            (
                json!({"entitlement": "aws-prod-admin", "duration": "1h", "justification": "x".repeat(4097)}),
                "longer than 4096",
            ),
            (
                json!({"entitlement": "aws-prod-admin", "duration": "soon", "justification": "x"}),
                "invalid duration",
            ),
            (
                json!({"entitlement": "aws-prod-admin", "duration": 0, "justification": "x"}),
                "longer than zero",
            ),
            (
                json!({"entitlement": "entra-user-admin", "duration": "1h", "justification": "x"}),
                "ticket is required",
            ),
            (
                json!({"entitlement": "entra-user-admin", "duration": "1h", "justification": "x", "ticket": "CHG-1"}),
                "does not match",
            ),
        ];
        for (body, needle) in cases {
            let (status, res) = alice.post("/requests", body.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {res}");
            let msg = res["error"]["message"].as_str().unwrap();
            assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        }
        let (status, res) = alice
            .post(
                "/requests",
                json!({"entitlement": "nope", "duration": "1h", "justification": "x"}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{res}");
        // Seconds as a number and a well-formed ticket are accepted.
        let (status, res) = alice
        .post("/requests", json!({"entitlement": "entra-user-admin", "duration": 3600, "justification": "x", "ticket": "INC-42"}))
        .await;
        assert_eq!(status, StatusCode::CREATED, "{res}");
        assert_eq!(res["ticket"], "INC-42");
        // Exactly 4 KiB is fine.
        let (status, res) = alice
        .post("/requests", json!({"entitlement": "aws-prod-readonly", "duration": "1h", "justification": "y".repeat(4096)}))
        .await;
        assert_eq!(status, StatusCode::CREATED, "{res}");
        // Policy: mallory may request nothing.
        let mallory = b.login("mallory").await;
        let (status, _) = mallory
            .post(
                "/requests",
                json!({"entitlement": "aws-sandbox", "duration": "1h", "justification": "x"}),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (_, list) = mallory.get("/entitlements").await;
        assert_eq!(list, json!([]));
    }
);

/// Bidirectional controls, zero-width and other format characters in justification, ticket
/// and comments are refused with 400 naming the field, the character and its position, and
/// nothing is written; text of any script, emoji and combining marks pass unchanged.
#[tokio::test]
async fn text_that_hides_or_reorders_itself_is_refused() {
    let b = start(Engine::Sqlite).await;
    let alice = b.login("alice").await;
    let bob = b.login("bob").await;
    let create = |justification: &str, ticket: Option<&str>| {
        let mut body = json!({"entitlement": "entra-user-admin", "duration": "1h", "justification": justification, "ticket": "INC-7"});
        if let Some(t) = ticket {
            body["ticket"] = json!(t);
        }
        body
    };
    for (body, needle) in [
        (
            create("ok\u{202E}gnp.exe", None),
            "justification has a bidirectional control character (U+202E) at character 3",
        ),
        (
            create("\u{2067}isolated", None),
            "justification has a bidirectional control character (U+2067) at character 1",
        ),
        (
            create("see\u{200B}attached", None),
            "justification has an invisible formatting character (U+200B) at character 4",
        ),
        (
            create("soft\u{AD}hyphen", None),
            "justification has an invisible formatting character (U+00AD) at character 5",
        ),
        (
            create("nul\u{0}byte", None),
            "justification has a control character (U+0000) at character 4",
        ),
        (
            create("x", Some("INC-\u{FEFF}42")),
            "ticket has an invisible formatting character (U+FEFF) at character 5",
        ),
        (
            create("x", Some("INC-42\u{202C}")),
            "ticket has a bidirectional control character (U+202C) at character 7",
        ),
    ] {
        let (status, res) = alice.post("/requests", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {res}");
        assert_eq!(res["error"]["code"], "invalid_request", "{res}");
        let msg = res["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
    }
    let (_, mine) = alice.get("/requests?mine=true").await;
    assert_eq!(mine, json!([]), "a refused request was written");

    // Ordinary text of other scripts, emoji and combining marks is kept as typed.
    let text = "déploiement — 中文, עברית, می\u{200C}خواهم, 👍🏽 👩\u{200D}💻 ❤\u{FE0F}, e\u{301}";
    let (status, res) = alice.post("/requests", create(text, None)).await;
    assert_eq!(status, StatusCode::CREATED, "{res}");
    assert_eq!(res["justification"], text);
    let id = res["id"].as_str().unwrap().to_owned();

    // Comments: approving, denying, revoking.
    for (path, comment, needle) in [
        (
            "approve",
            "fine\u{2066}",
            "comment has a bidirectional control character (U+2066) at character 5",
        ),
        (
            "deny",
            "\u{2060}no",
            "comment has an invisible formatting character (U+2060) at character 1",
        ),
    ] {
        let (status, res) = bob
            .post(
                &format!("/requests/{id}/{path}"),
                json!({ "comment": comment }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {res}");
        let msg = res["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
    }
    let (_, request) = bob.get(&format!("/requests/{id}")).await;
    assert_eq!(
        request["state"], "pending",
        "a refused decision was written"
    );
    assert_eq!(request["approvals"], json!([]));
    let (status, res) = bob
        .post(
            &format!("/requests/{id}/approve"),
            json!({ "comment": "d\u{2019}accord ✅ — ok" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    assert_eq!(res["approvals"][0]["comment"], "d\u{2019}accord ✅ — ok");
}

each_engine!(revoke_by_requester_or_admin, |engine| async move {
    let b = start(engine).await;
    let alice = b.login("alice").await;
    let bob = b.login("bob").await;
    let carol = b.login("carol").await;
    let r = alice.request("aws-sandbox", "1h").await;
    active(&b, &alice, r.id).await;
    let (status, _) = bob
        .post(&format!("/requests/{}/revoke", r.id), json!({}))
        .await;
    assert!(
        status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
        "{status}"
    );
    let (status, body) = carol.revoke(r.id, "incident over").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "revoked");
    b.run_jobs().await;
    let actions = b.audit_actions(Some(r.id)).await;
    assert_eq!(
        actions[actions.len() - 2..],
        ["grant.revoked", "grant.removed"]
    );
    // Revoked is final.
    let (status, _) = alice
        .post(&format!("/requests/{}/revoke", r.id), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
});

each_engine!(
    extension_keeps_access_until_the_last_grant_ends,
    |engine| async move {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let bob = b.login("bob").await;
        let r = alice.request("aws-prod-admin", "1h").await;
        bob.approve(r.id).await;
        let r = active(&b, &alice, r.id).await;
        // An overlapping request for the same entitlement is refused: extend instead.
        let (status, body) = alice
        .post("/requests", json!({"entitlement": "aws-prod-admin", "duration": "1h", "justification": "again"}))
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (status, ext) = alice
            .post(&format!("/requests/{}/extend", r.id), json!({"by": "30m"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{ext}");
        assert_eq!(
            ext["state"], "pending",
            "extensions of prod-admin need a new approval"
        );
        let ext_id: uuid::Uuid = ext["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(ext["extends"], r.id.to_string());
        // A second extension while this one is open: the unique index refuses it, and the
        // answer names the open extension (not the open request).
        let (status, body) = alice
            .post(&format!("/requests/{}/extend", r.id), json!({"by": "30m"}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("already has an open extension"),
            "{message}"
        );
        bob.approve(ext_id).await;
        let ext = active(&b, &alice, ext_id).await;
        assert_eq!(
            ext.expires_at.unwrap(),
            r.expires_at.unwrap() + time::Duration::minutes(30)
        );
        // The extension's grant found the first one holding the upstream object.
        let overlapping = |id| {
            let store = b.app.store.clone();
            async move {
                let events = jit_server::store::audit::for_request(&store, id)
                    .await
                    .unwrap();
                let activated = events
                    .iter()
                    .find(|e| e.action == "grant.activated")
                    .expect("grant.activated");
                serde_json::from_str::<serde_json::Value>(&activated.data).unwrap()["overlapping"]
                    .clone()
            }
        };
        assert_eq!(overlapping(r.id).await, json!(false));
        assert_eq!(overlapping(ext_id).await, json!(true));
        // The first grant ends; its upstream object stays because the extension needs it.
        b.advance(Duration::from_mins(61)).await;
        assert_eq!(alice.show(r.id).await.state, RequestState::Expired);
        assert_eq!(alice.show(ext_id).await.state, RequestState::Active);
        let first = b.audit_actions(Some(r.id)).await;
        assert_eq!(first.last().unwrap(), "grant.removal_skipped");
        b.advance(Duration::from_mins(30)).await;
        assert_eq!(alice.show(ext_id).await.state, RequestState::Expired);
        assert_eq!(
            b.audit_actions(Some(ext_id)).await.last().unwrap(),
            "grant.removed"
        );
    }
);

each_engine!(
    a_revoke_ends_the_whole_extension_chain,
    |engine| async move {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let bob = b.login("bob").await;
        // An active grant of alice's with an approved and active extension.
        let extended = || async {
            let r = alice.request("aws-prod-admin", "1h").await;
            bob.approve(r.id).await;
            active(&b, &alice, r.id).await;
            let ext = alice.extend(r.id, "30m").await;
            bob.approve(ext).await;
            active(&b, &alice, ext).await;
            (r, ext)
        };
        // A grant, its live extension, and a second extension waiting.
        let (r, live) = extended().await;
        let waiting = alice.extend(live, "30m").await;
        assert_eq!(alice.show(waiting).await.state, RequestState::Pending);

        // Revoking the first id ends every link: the live extension is revoked with it, the
        // waiting one withdrawn (approved later, it would grant the access again).
        let (status, body) = alice
            .post(
                &format!("/requests/{}/revoke", r.id),
                json!({"comment": "done early"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        b.run_jobs().await;
        assert_eq!(alice.show(r.id).await.state, RequestState::Revoked);
        assert_eq!(alice.show(live).await.state, RequestState::Revoked);
        assert_eq!(alice.show(waiting).await.state, RequestState::Cancelled);
        let event_of = |id: uuid::Uuid, action: &'static str| {
            let store = b.app.store.clone();
            async move {
                let events = jit_server::store::audit::for_request(&store, id)
                    .await
                    .unwrap();
                let e = events
                    .into_iter()
                    .find(|e| e.action == action)
                    .unwrap_or_else(|| panic!("{id}: no {action}"));
                let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
                (e.actor, data)
            }
        };
        let (actor, data) = event_of(live, "grant.revoked").await;
        assert_eq!(data["revoked_with"], r.id.to_string(), "{data}");
        assert_eq!(data["reason"], "done early", "{data}");
        assert_eq!(actor, "alice@example.com");
        let (_, data) = event_of(waiting, "request.cancelled").await;
        assert_eq!(data["revoked_with"], r.id.to_string(), "{data}");
        // Nothing of the chain still holds the object: its removal is not skipped.
        let actions = b.audit_actions(Some(live)).await;
        assert!(
            actions.iter().any(|a| a == "grant.removed")
                || b.audit_actions(Some(r.id))
                    .await
                    .iter()
                    .any(|a| a == "grant.removed"),
            "{actions:?}"
        );
        for id in [r.id, live] {
            assert!(
                !b.audit_actions(Some(id))
                    .await
                    .iter()
                    .any(|a| a == "grant.removal_skipped"),
                "{id}: removal skipped"
            );
        }
        // Bob cannot approve the withdrawn extension.
        let (status, _) = bob
            .post(&format!("/requests/{waiting}/approve"), json!({}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT);

        // Naming the extension ends the grant it extends too.
        let (r, ext) = extended().await;
        let (status, body) = alice
            .post(&format!("/requests/{ext}/revoke"), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(alice.show(r.id).await.state, RequestState::Revoked);
        assert_eq!(alice.show(ext).await.state, RequestState::Revoked);

        // The first grant expired while its extension lives: revoking the first id ends the
        // extension (the access the user means), and a finished chain stays a conflict.
        let (r, ext) = extended().await;
        b.advance(Duration::from_mins(61)).await;
        assert_eq!(alice.show(r.id).await.state, RequestState::Expired);
        let (status, body) = alice
            .post(&format!("/requests/{}/revoke", r.id), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(alice.show(r.id).await.state, RequestState::Expired);
        assert_eq!(alice.show(ext).await.state, RequestState::Revoked);
        let (status, _) = alice
            .post(&format!("/requests/{}/revoke", r.id), json!({}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
    }
);

each_engine!(extensions_are_capped, |engine| async move {
    let b = start(engine).await;
    let alice = b.login("alice").await;
    let r = alice.request("aws-sandbox", "1h").await;
    active(&b, &alice, r.id).await;
    // aws-sandbox: auto-approved short extensions, at most 3.
    let mut current = r.id;
    for _ in 0..3 {
        let (status, ext) = alice
            .post(&format!("/requests/{current}/extend"), json!({"by": "30m"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{ext}");
        assert_eq!(ext["state"], "approved");
        current = ext["id"].as_str().unwrap().parse().unwrap();
        active(&b, &alice, current).await;
    }
    let (status, body) = alice
        .post(&format!("/requests/{current}/extend"), json!({"by": "30m"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 3 extensions")
    );
    // An extension longer than the maximum is refused.
    let (status, _) = alice
        .post(&format!("/requests/{current}/extend"), json!({"by": "3h"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
});

each_engine!(
    break_glass_grants_at_once_and_waits_for_review,
    |engine| async move {
        let b = start(engine).await;
        let oscar = b.login("oscar").await;
        let alice = b.login("alice").await;
        let bob = b.login("bob").await;
        let bg = |e: &str| json!({"entitlement": e, "duration": "1h", "justification": "outage", "break_glass": true});
        // alice is not on call: policy refuses her break-glass.
        assert_eq!(
            alice.post("/requests", bg("aws-billing-sso")).await.0,
            StatusCode::FORBIDDEN
        );
        // aws-prod-readonly does not allow break-glass at all.
        assert_eq!(
            oscar.post("/requests", bg("aws-prod-readonly")).await.0,
            StatusCode::BAD_REQUEST
        );
        let (status, r) = oscar.post("/requests", bg("aws-billing-sso")).await;
        assert_eq!(status, StatusCode::CREATED, "{r}");
        assert_eq!(r["state"], "approved", "break-glass needs no approval");
        let id: uuid::Uuid = r["id"].as_str().unwrap().parse().unwrap();
        active(&b, &oscar, id).await;
        // The review item stays until an approver reviews it; the requester cannot.
        assert_eq!(
            oscar
                .post(&format!("/requests/{id}/review"), json!({}))
                .await
                .0,
            StatusCode::FORBIDDEN
        );
        let pending_review = b
            .app
            .reviews_for(&jit_server::http::auth::demo_user("bob").unwrap())
            .await
            .unwrap();
        assert_eq!(pending_review.len(), 1);
        let (status, body) = bob
            .post(
                &format!("/requests/{id}/review"),
                json!({"comment": "justified"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            bob.post(&format!("/requests/{id}/review"), json!({}))
                .await
                .0,
            StatusCode::CONFLICT
        );
        assert!(
            b.app
                .reviews_for(&jit_server::http::auth::demo_user("bob").unwrap())
                .await
                .unwrap()
                .is_empty()
        );
        let actions = b.audit_actions(Some(id)).await;
        assert_eq!(
            actions[..3],
            ["request.created", "request.break_glass", "grant.activated"]
        );
        assert!(actions.contains(&"break_glass.reviewed".to_owned()));
    }
);

each_engine!(
    credentials_only_for_the_owner_of_an_active_role_grant,
    |engine| async move {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let bob = b.login("bob").await;
        let r = alice.request("aws-sandbox", "1h").await;
        let (status, _) = alice
            .post(&format!("/requests/{}/credentials", r.id), json!({}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "not active yet");
        active(&b, &alice, r.id).await;
        let (status, creds) = alice
            .post(&format!("/requests/{}/credentials", r.id), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{creds}");
        for k in [
            "AccessKeyId",
            "SecretAccessKey",
            "SessionToken",
            "Expiration",
        ] {
            assert!(creds[k].is_string(), "{k} missing in {creds}");
        }
        let (status, _) = bob
            .post(&format!("/requests/{}/credentials", r.id), json!({}))
            .await;
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
            "{status}"
        );
        let carol = b.login("carol").await;
        let (status, _) = carol
            .post(&format!("/requests/{}/credentials", r.id), json!({}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // The mint is audited with the key id and never the secret.
        let events = jit_server::store::audit::for_request(&b.app.store, r.id)
            .await
            .unwrap();
        let minted = events
            .iter()
            .find(|e| e.action == "credentials.minted")
            .unwrap();
        assert!(minted.data.contains(creds["AccessKeyId"].as_str().unwrap()));
        assert!(
            !minted
                .data
                .contains(creds["SecretAccessKey"].as_str().unwrap())
        );
        assert!(
            !minted
                .data
                .contains(creds["SessionToken"].as_str().unwrap())
        );
    }
);

each_engine!(api_errors_have_the_documented_shape, |engine| async move {
    let b = start(engine).await;
    let res = b
        .http
        .get(format!("{}/api/v1/me", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let alice = b.login("alice").await;
    let (status, body) = alice.get("/requests/not-a-uuid").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let res = b
        .http
        .post(format!("{}/api/v1/requests", b.url))
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    let (status, me) = alice.get("/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], "alice@example.com");
    let (status, _) = alice.get("/requests?state=bogus").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A misspelt query parameter is refused, not ignored (which would list everything).
    for path in [
        "/requests?stat=pending",
        "/requests/00000000-0000-0000-0000-000000000000?wiat=active",
        "/audit?actr=alice@example.com",
        "/audit/verify?fulll=true",
    ] {
        let (status, body) = alice.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{path}: {body}");
        assert!(body.to_string().contains("unknown field"), "{path}: {body}");
    }
});

each_engine!(concurrent_approvals_give_one_grant, |engine| async move {
    let b = start(engine).await;
    let alice = b.login("alice").await;
    let r = alice.request("aws-prod-readonly", "1h").await;
    // 50 distinct approvers (bob and dave, each with many sessions, plus carol):
    // the policy lets approvers and admins decide; each identity counts once.
    let mut callers = Vec::new();
    for i in 0..50 {
        callers.push(b.login(["bob", "dave", "carol"][i % 3]).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for c in callers {
        tasks.spawn(async move { c.approve(r.id).await.0 });
    }
    let mut ok = 0;
    while let Some(s) = tasks.join_next().await {
        let s = s.unwrap();
        if s == StatusCode::OK {
            ok += 1;
        } else {
            assert_eq!(s, StatusCode::CONFLICT);
        }
    }
    assert!((2..=3).contains(&ok), "{ok} approvals accepted");
    b.run_jobs().await;
    let done = alice.show(r.id).await;
    assert_eq!(done.state, RequestState::Active);
    let actions = b.audit_actions(Some(r.id)).await;
    assert_eq!(
        actions.iter().filter(|a| *a == "request.approved").count(),
        1
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "grant.activated").count(),
        1
    );
});

each_engine!(
    concurrent_identical_requests_give_one_open_request,
    |engine| async move {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let a = alice.clone();
            tasks.spawn(async move {
            a.post("/requests", json!({"entitlement": "aws-sandbox", "duration": "1h", "justification": "race"}))
                .await
                .0
        });
        }
        let mut created = 0;
        while let Some(s) = tasks.join_next().await {
            match s.unwrap() {
                StatusCode::CREATED => created += 1,
                StatusCode::CONFLICT => {}
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(created, 1);
        b.run_jobs().await;
        let (_, list) = alice.get("/requests?mine=true&state=active").await;
        assert_eq!(list.as_array().unwrap().len(), 1);
    }
);

each_engine!(
    concurrent_approve_and_cancel_end_consistently,
    |engine| async move {
        for _ in 0..10 {
            let b = start(engine).await;
            let alice = b.login("alice").await;
            let bob = b.login("bob").await;
            let r = alice.request("aws-prod-admin", "1h").await;
            let cancel_path = format!("/requests/{}/cancel", r.id);
            let (a, c) = tokio::join!(bob.approve(r.id), alice.post(&cancel_path, json!({})));
            b.run_jobs().await;
            let end = alice.show(r.id).await;
            let actions = b.audit_actions(Some(r.id)).await;
            match (a.0, c.0) {
                (StatusCode::OK, StatusCode::OK) => {
                    // Approved first, then cancelled before or after activation: nothing stays granted.
                    assert_eq!(end.state, RequestState::Cancelled);
                    assert!(
                        !actions.contains(&"grant.activated".to_owned())
                            || actions.last().unwrap() == "grant.removed"
                    );
                }
                (StatusCode::OK, StatusCode::CONFLICT) => {
                    assert_eq!(end.state, RequestState::Active);
                }
                (StatusCode::CONFLICT, StatusCode::OK) => {
                    assert_eq!(end.state, RequestState::Cancelled);
                }
                other => panic!("inconsistent outcome {other:?}"),
            }
        }
    }
);

each_engine!(
    audit_write_failure_rolls_back_the_change,
    |engine| async move {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let bob = b.login("bob").await;
        let r = alice.request("aws-prod-admin", "1h").await;
        // A privileged user makes every audit write fail: where the event is written in the
        // change's transaction (SQLite: the chain; PostgreSQL: the pending table).
        let sql = match engine {
            Engine::Sqlite => {
                "CREATE TRIGGER audit_break BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit store broken'); END"
            }
            Engine::Postgres => {
                "CREATE FUNCTION audit_break() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit store broken'; END $$; \
             CREATE TRIGGER audit_break BEFORE INSERT ON audit_pending FOR EACH ROW EXECUTE FUNCTION audit_break();"
            }
        };
        jit_server::store::db::batch(&b.app.store, sql)
            .await
            .unwrap();
        let (status, body) = bob.approve(r.id).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert!(
            !body.to_string().contains("audit store broken"),
            "5xx bodies say nothing internal"
        );
        let after = alice.show(r.id).await;
        assert_eq!(after.state, RequestState::Pending);
        assert!(
            after.approvals.is_empty(),
            "the approval row was rolled back too"
        );
        b.run_jobs().await;
        assert_eq!(
            alice.show(r.id).await.state,
            RequestState::Pending,
            "nothing was granted"
        );
        let (status, _) = alice
            .post(
                "/requests",
                json!({"entitlement": "aws-sandbox", "duration": "1h", "justification": "x"}),
            )
            .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let (_, mine) = alice.get("/requests?mine=true").await;
        assert_eq!(
            mine.as_array().unwrap().len(),
            1,
            "no request was stored without its audit event"
        );
    }
);

each_engine!(
    fifty_distinct_approvers_at_once_give_one_grant,
    |engine| async move {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let r = alice.request("aws-prod-readonly", "1h").await;
        assert_eq!(r.approvals_required, 2);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let app = b.app.clone();
            tasks.spawn(async move {
                let approver = jit_server::domain::User {
                    key: format!("test/approver-{i}"),
                    oid: None,
                    name: format!("Approver {i}"),
                    email: format!("approver-{i}@example.com"),
                    groups: vec!["grp-jit-approvers".to_owned()],
                    roles: vec![],
                    mfa: true,
                    auth_time: None,
                    acrs: vec![],
                };
                app.decide(&approver, r.id, jit_api::Decision::Approve, None)
                    .await
            });
        }
        let (mut ok, mut conflicts) = (0, 0);
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                Ok(_) => ok += 1,
                Err(jit_server::service::ServiceError::Conflict(_)) => conflicts += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            (ok, conflicts),
            (2, 48),
            "exactly the two approvals that were needed count"
        );
        b.run_jobs().await;
        let done = alice.show(r.id).await;
        assert_eq!(done.state, RequestState::Active);
        assert_eq!(done.approvals.len(), 2);
        let actions = b.audit_actions(Some(r.id)).await;
        assert_eq!(
            actions.iter().filter(|a| *a == "request.approval").count(),
            2
        );
        assert_eq!(
            actions.iter().filter(|a| *a == "request.approved").count(),
            1
        );
        assert_eq!(
            actions.iter().filter(|a| *a == "grant.activated").count(),
            1
        );
    }
);

/// A simulated grant's console is a page of the broker that says so; the API gives its
/// absolute URL (it used to be `about:blank#…`, which browsers refuse to be sent to).
#[tokio::test]
async fn the_console_of_a_simulated_grant_is_a_page_of_the_broker() {
    let b = start(Engine::Sqlite).await;
    let alice = b.login("alice").await;
    let r = alice.request("aws-sandbox", "1h").await;
    let r = active(&b, &alice, r.id).await;
    let (status, body) = alice
        .post(&format!("/requests/{}/console-url", r.id), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["url"], format!("{}/simulated/console/{}", b.url, r.id));
    assert!(
        b.audit_actions(Some(r.id))
            .await
            .contains(&"console.signin".to_owned())
    );
}

/// The step-up rules of the service (development mode asks nothing, so they are checked here on
/// a broker told it is not): the authentication context must be in `acrs`; a sign-in older than
/// `oidc.mfa_max_age` is refused where the token says when it was, accepted where it does not
/// (Entra's access tokens: Conditional Access decides); `require_mfa` needs `amr` and a time.
#[tokio::test]
async fn step_up_rules_for_authentication_contexts_and_mfa() {
    use jit_server::policy::catalog::Target;
    use jit_server::service::ServiceError;
    let b = start(Engine::Sqlite).await;
    let mut app = b.app.clone();
    app.dev = false;
    let now = app.now().unix_timestamp();
    let mut ent = crate::aws::entitlement(
        "ctx",
        Target::EntraRole {
            role_definition_id: "r".to_owned(),
            directory_scope_id: "/".to_owned(),
        },
    );
    ent.auth_context = Some("c1".to_owned());
    ent.approve_auth_context = Some("c2".to_owned());
    let user = |acrs: &[&str], auth_time: Option<i64>, mfa: bool| jit_server::domain::User {
        key: "t/u".to_owned(),
        oid: Some("u".to_owned()),
        name: "U".to_owned(),
        email: "u@example.com".to_owned(),
        groups: vec![],
        roles: vec![],
        mfa,
        auth_time,
        acrs: acrs.iter().map(|s| (*s).to_owned()).collect(),
    };
    let refused = |r: Result<_, ServiceError>| match r {
        Err(ServiceError::StepUpRequired(s)) => s,
        other => panic!("expected a step-up, got {other:?}"),
    };

    let ok = app
        .check_step_up(&user(&["c1"], Some(now - 60), false), &ent)
        .unwrap();
    assert_eq!(ok.auth_context.as_deref(), Some("c1"));
    assert_eq!(ok.auth_time, Some(now - 60));
    // No `auth_time` (an Entra access token): the context alone counts.
    app.check_step_up(&user(&["c2", "c1"], None, false), &ent)
        .unwrap();
    let s = refused(app.check_step_up(&user(&[], Some(now), true), &ent));
    assert_eq!(s.auth_context.as_deref(), Some("c1"));
    assert_eq!(s.max_age, 3600);
    assert!(!s.mfa);
    assert!(
        s.message.contains("authentication context `c1`"),
        "{}",
        s.message
    );
    let s = refused(app.check_step_up(&user(&["c1"], Some(now - 3601), false), &ent));
    assert!(s.message.contains("at most 1h"), "{}", s.message);
    // Approving asks for its own context.
    let s = refused(app.check_approve_step_up(&user(&["c1"], Some(now), false), &ent));
    assert_eq!(s.auth_context.as_deref(), Some("c2"));
    app.check_approve_step_up(&user(&["c2"], Some(now), false), &ent)
        .unwrap();

    // `require_mfa` (issuers that send `amr`): MFA, and a time to judge it by.
    ent.auth_context = None;
    ent.require_mfa = true;
    let s = refused(app.check_step_up(&user(&[], Some(now), false), &ent));
    assert!(s.mfa && s.auth_context.is_none(), "{s:?}");
    refused(app.check_step_up(&user(&[], None, true), &ent));
    refused(app.check_step_up(&user(&[], Some(now - 7200), true), &ent));
    let ok = app
        .check_step_up(&user(&[], Some(now), true), &ent)
        .unwrap();
    assert_eq!(ok.auth_context, None);
    // Development mode asks nothing.
    b.app.check_step_up(&user(&[], None, false), &ent).unwrap();
}

// The audit page's export links carry its filters, and the export answers with the events the
// filters let through, oldest first (every one, not a page); only auditors may export.
each_engine!(
    the_audit_export_keeps_to_the_pages_filters,
    |engine| async move {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let bob = b.login("bob").await;
        let mut mine = Vec::new();
        for entitlement in ["aws-prod-admin", "aws-prod-readonly", "aws-sandbox"] {
            let r = alice.request(entitlement, "1h").await;
            // events of other actors between hers
            if r.state == RequestState::Pending {
                let (status, body) = bob.approve(r.id).await;
                assert_eq!(status, StatusCode::OK, "{engine:?}: {body}");
            }
            mine.push(r.id);
        }
        jit_server::store::audit::caught_up(&b.app.store)
            .await
            .unwrap();
        let first = jit_server::store::audit::for_request(&b.app.store, mine[0])
            .await
            .unwrap();
        let actor = first[0].actor.clone();

        let carol = b.browser_login("carol").await;
        let filters = format!(
            "&actor={}&action=request.",
            url::form_urlencoded::byte_serialize(actor.as_bytes()).collect::<String>()
        );
        let (status, page) = b.page(&carol, &format!("/audit?{}", &filters[1..])).await;
        assert_eq!(status, StatusCode::OK, "{engine:?}: {page}");
        let escaped = filters.replace('&', "&#38;");
        assert!(
            page.contains(&format!(r#"href="/audit/export?format=csv{escaped}""#))
                && page.contains(&format!(r#"href="/audit/export?format=jsonl{escaped}""#)),
            "{engine:?}: the export links lose the filters: {page}"
        );

        let (status, text) = b
            .page(&carol, &format!("/audit/export?format=jsonl{filters}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{engine:?}: {text}");
        let events: Vec<jit_api::AuditEvent> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let want = jit_server::store::audit::list(
            &b.app.store,
            &jit_server::store::audit::Filter {
                actor: Some(actor.clone()),
                action: Some("request.".to_owned()),
                limit: 10_000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let want: Vec<i64> = want.iter().rev().map(|e| e.seq).collect();
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            want,
            "{engine:?}"
        );
        assert!(want.len() >= 3, "{engine:?}: {want:?}");
        assert!(
            events
                .iter()
                .all(|e| e.actor == actor && e.action.starts_with("request.")),
            "{engine:?}: {text}"
        );
        let requests: std::collections::HashSet<_> =
            events.iter().filter_map(|e| e.request_id).collect();
        assert_eq!(requests, mine.iter().copied().collect(), "{engine:?}");

        // CSV the same way, with its header
        let (status, csv) = b
            .page(&carol, &format!("/audit/export?format=csv{filters}"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(csv.starts_with(jit_server::store::audit::export::CSV_HEADER));
        assert_eq!(
            csv.matches("\r\n").count(),
            want.len() + 1,
            "{engine:?}: {csv}"
        );

        // a bad day is a clear error; a requester may not export
        let (status, text) = b
            .page(&carol, "/audit/export?format=csv&since=yesterday")
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{engine:?}: {text}");
        assert!(
            text.contains("`yesterday` is not a date"),
            "{engine:?}: {text}"
        );
        let alice_web = b.browser_login("alice").await;
        let (status, _) = b.page(&alice_web, "/audit/export?format=csv").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{engine:?}");
    }
);
