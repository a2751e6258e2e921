//! Honest revocation through the broker: a revoke or an expiry ends the
//! sessions the grant handed out (not only the grant), on SQLite and
//! PostgreSQL, against moto through the fault proxy.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use jit_api::RequestState;
use jit_server::http::AuthMode;
use jit_server::providers::Providers;
use jit_server::providers::aws::{AwsProviders, Tuning};
use jit_server::service::grants::JobOutcome;
use jit_server::store::jobs;
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::broker_aws::{
    AwsBroker, Options, audit_fault_broker, aws_broker_with, broker_credentials, events, tuning,
};
use crate::fault_proxy::{Fault, FaultProxy};
use crate::sessions::{cutoff, deny_for, ps_policy, real_permission_set, role_policy, user_deny};
use crate::support::server::{Caller, Engine, TestBroker, server_bin};

/// Everyone may ask for the sandbox (the demo catalog lets only requesters).
const EVERYONE_SANDBOX: &str = r#"
@id("test-everyone-sandbox")
permit (principal, action == Action::"request", resource == Entitlement::"aws-sandbox");
"#;

/// An active `aws-sandbox` grant of `who`, and the issue time of the session it minted.
async fn active_with_session(b: &TestBroker, who: &Caller) -> (uuid::Uuid, OffsetDateTime) {
    let r = who.request("aws-sandbox", "1h").await;
    b.run_jobs().await;
    assert_eq!(who.show(r.id).await.state, RequestState::Active);
    let (status, body) = who
        .post(&format!("/requests/{}/credentials", r.id), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expires = OffsetDateTime::parse(body["Expiration"].as_str().unwrap(), &Rfc3339).unwrap();
    let seconds: i64 = events(b, "credentials.minted")
        .await
        .last()
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["session_seconds"]
                .as_i64()
                .unwrap()
        })
        .unwrap();
    (r.id, expires - time::Duration::seconds(seconds))
}

async fn a_revoke_ends_the_grantees_sessions(engine: Engine) {
    let env = aws_broker_with(
        engine,
        Options {
            tuning: Some(Tuning {
                session_lifetime: Some(Duration::from_secs(4)),
                ..tuning()
            }),
            cedar: EVERYONE_SANDBOX,
            ..Options::default()
        },
    )
    .await;
    let b = &env.b;
    let role = &env.sandbox_role.1;
    let alice = b.login("alice").await;
    let oscar = b.login("oscar").await;
    let (first, issued) = active_with_session(b, &alice).await;
    let (oscars, _) = active_with_session(b, &oscar).await;

    let (status, body) = alice
        .post(&format!("/requests/{first}/revoke"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    b.run_jobs().await;
    let (policy, _) = role_policy(&env.moto.url, role).await.unwrap();
    let deny = deny_for(&policy, "aws:SourceIdentity", "alice@example.com").unwrap();
    let first_cutoff = cutoff(deny);
    assert!(first_cutoff >= issued, "{first_cutoff} < {issued}");
    assert!(
        deny_for(&policy, "aws:SourceIdentity", "oscar@example.com").is_none(),
        "oscar's live grant is untouched: {policy}"
    );
    let removed = events(b, "grant.removed").await;
    assert_eq!(removed.len(), 1);
    let data: Value = serde_json::from_str(&removed[0].data).unwrap();
    assert_eq!(data["sessions"]["scope"], "user", "{data}");
    assert_eq!(data["sessions"]["source_identity"], "alice@example.com");
    assert_eq!(
        OffsetDateTime::parse(
            data["sessions"]["issued_before"].as_str().unwrap(),
            &Rfc3339
        )
        .unwrap(),
        first_cutoff
    );

    // Oscar's grant expires: his deny is written at expiry.
    b.advance(Duration::from_mins(61)).await;
    assert_eq!(oscar.show(oscars).await.state, RequestState::Expired);
    let (policy, _) = role_policy(&env.moto.url, role).await.unwrap();
    assert!(deny_for(&policy, "aws:SourceIdentity", "oscar@example.com").is_some());

    // Once every session they target has expired (4 s here), the denies go.
    tokio::time::sleep(Duration::from_secs(5)).await;
    b.advance(Duration::from_secs(10)).await;
    assert!(
        role_policy(&env.moto.url, role).await.is_none(),
        "pruned and deleted"
    );
    let pruned = events(b, "sessions.denies_pruned").await;
    assert!(!pruned.is_empty());
    assert_eq!(pruned[0].entitlement.as_deref(), Some("aws-sandbox"));
    b.audit_actions(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_ends_the_grantees_sessions_sqlite() {
    a_revoke_ends_the_grantees_sessions(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_ends_the_grantees_sessions_postgres() {
    a_revoke_ends_the_grantees_sessions(Engine::Postgres).await;
}

/// An extended grant: its first request's expiry keeps the access (that is what extending
/// means); revoking that first request then ends the whole chain (the live extension, and an
/// approved one not yet granted), with one removal of the object whose deny covers the session
/// minted from the extension. SQLite and PostgreSQL, moto.
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn revoking_an_extended_grant_ends_the_chain(engine: Engine) {
    let env = aws_broker_with(
        engine,
        Options {
            cedar: EVERYONE_SANDBOX,
            ..Options::default()
        },
    )
    .await;
    let b = &env.b;
    let role = &env.sandbox_role.1;
    let alice = b.login("alice").await;
    let (first, _) = active_with_session(b, &alice).await;
    let extend = |id: uuid::Uuid| {
        let alice = alice.clone();
        async move {
            let (status, body) = alice
                .post(
                    &format!("/requests/{id}/extend"),
                    json!({ "by": "30m", "justification": "more" }),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            serde_json::from_value::<jit_api::Request>(body).unwrap()
        }
    };
    let ext = extend(first).await;
    b.run_jobs().await;
    assert_eq!(alice.show(ext.id).await.state, RequestState::Active);

    // The first request's window ends, the extension's goes on: no deny.
    let puts = env.proxy.count("PutRolePolicy");
    b.advance(Duration::from_mins(61)).await;
    assert_eq!(alice.show(first).await.state, RequestState::Expired);
    assert_eq!(alice.show(ext.id).await.state, RequestState::Active);
    assert_eq!(env.proxy.count("PutRolePolicy"), puts, "the access stays");
    let skipped = events(b, "grant.removal_skipped").await;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].request_id, Some(first.to_string()));
    let (status, body) = alice
        .post(&format!("/requests/{}/credentials", ext.id), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let issued = OffsetDateTime::now_utc() - time::Duration::seconds(2);
    // A second extension, approved (auto) and not granted yet.
    let ext2 = extend(ext.id).await;
    assert_eq!(ext2.state, RequestState::Approved);

    // Revoking the first request (expired already) ends the chain's live grants.
    let (status, body) = alice.revoke(first, "done").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "expired");
    for id in [ext.id, ext2.id] {
        assert_eq!(alice.show(id).await.state, RequestState::Revoked, "{id}");
    }
    b.run_jobs().await;
    assert_eq!(
        env.proxy.count("PutRolePolicy"),
        puts + 1,
        "one deny for the chain"
    );
    let (policy, _) = role_policy(&env.moto.url, role).await.unwrap();
    let cut = cutoff(deny_for(&policy, "aws:SourceIdentity", "alice@example.com").unwrap());
    assert!(
        cut >= issued,
        "the minted session is denied: {cut} < {issued}"
    );
    // No credentials from any request of the chain, and nothing left to revoke.
    for id in [first, ext.id, ext2.id] {
        let (status, body) = alice
            .post(&format!("/requests/{id}/credentials"), json!({}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{id}: {body}");
        let (status, body) = alice
            .post(&format!("/requests/{id}/revoke"), json!({}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{id}: {body}");
    }
    assert_eq!(
        b.audit_actions(Some(ext.id)).await[..],
        [
            "request.extension_requested",
            "request.auto_approved",
            "grant.activated",
            "credentials.minted",
            "grant.revoked",
            "grant.removed"
        ]
    );
    // Whichever of the two removals ran first removed the object; the other was removed
    // with it.
    let removed: Vec<(String, Value)> = events(b, "grant.removed")
        .await
        .into_iter()
        .map(|e| {
            (
                e.request_id.unwrap(),
                serde_json::from_str(&e.data).unwrap(),
            )
        })
        .collect();
    assert_eq!(removed.len(), 2, "{removed:?}");
    let (took_it, data) = &removed[0];
    assert_eq!(data["sessions"]["source_identity"], "alice@example.com");
    assert_eq!(
        removed[1].1["removed_with"].as_str(),
        Some(took_it.as_str())
    );
    let mut ids: Vec<&str> = removed.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    let mut chain = [ext.id, ext2.id].map(|id| id.to_string());
    chain.sort_unstable();
    assert_eq!(ids, chain);
    for e in events(b, "grant.revoked").await {
        let data: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(data["reason"], "done", "{data}");
        assert_eq!(data["revoked_with"], json!(first), "{data}");
    }
    assert_eq!(events(b, "grant.revoked").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_extended_grant_ends_the_chain_sqlite() {
    revoking_an_extended_grant_ends_the_chain(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_extended_grant_ends_the_chain_postgres() {
    revoking_an_extended_grant_ends_the_chain(Engine::Postgres).await;
}

/// Two brokers on one PostgreSQL database end grants on one role at the
/// same moment; IAM answers slowly, so their policy updates would overlap:
/// the database lock makes them take turns and no statement is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_revoking_on_one_role_lose_no_deny() {
    let env = aws_broker_with(
        Engine::Postgres,
        Options {
            cedar: EVERYONE_SANDBOX,
            ..Options::default()
        },
    )
    .await;
    let b = &env.b;
    // The second broker: its own providers (its own in-process locks).
    let proxy2 = FaultProxy::start(&env.moto.url).await;
    let aws2 = AwsProviders::with_credentials(
        &env.moto.config(&proxy2.url),
        "http://127.0.0.1",
        broker_credentials(),
        tuning(),
    )
    .await;
    let mut config = (*b.app.config).clone();
    config.policy.dir = env.policies.path().to_owned();
    let second = jit_server::server::build(
        config,
        true,
        AuthMode::Dev,
        aws2.install(Providers::simulated()),
        Arc::new(b.clock.clone()),
    )
    .await
    .unwrap()
    .app;

    let users = ["alice", "bob", "carol", "dave", "oscar", "mallory"];
    let mut ids = Vec::new();
    for user in users {
        let who = b.login(user).await;
        let r = who.request("aws-sandbox", "1h").await;
        ids.push((who, r.id));
    }
    b.run_jobs().await;
    for (who, id) in &ids {
        assert_eq!(who.show(*id).await.state, RequestState::Active);
    }
    for proxy in [&env.proxy, &proxy2] {
        proxy.script(
            "GetRolePolicy",
            100,
            Fault::Delay(Duration::from_millis(150)),
        );
    }
    for (who, id) in &ids {
        let (status, body) = who.post(&format!("/requests/{id}/revoke"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Each broker takes half of the removals; all run at once.
    let now = b.app.now_ms();
    let mut runs = Vec::new();
    for app in [&b.app, &second] {
        let claimed = jobs::claim(&app.store, now, 60_000, 3).await.unwrap();
        assert_eq!(claimed.len(), 3);
        for job in claimed {
            assert_eq!(job.kind, "deprovision");
            let app = app.clone();
            runs.push(tokio::spawn(async move {
                jit_server::scheduler::dispatch(&app, &job).await.unwrap()
            }));
        }
    }
    for run in futures_util::future::join_all(runs).await {
        assert_eq!(run.unwrap(), JobOutcome::Done);
    }
    b.run_jobs().await;
    let (policy, _) = role_policy(&env.moto.url, &env.sandbox_role.1)
        .await
        .unwrap();
    for user in users {
        let email = format!("{user}@example.com");
        assert!(
            deny_for(&policy, "aws:SourceIdentity", &email).is_some(),
            "{email} lost: {policy}"
        );
    }
    assert_eq!(events(b, "grant.removed").await.len(), users.len());
}

async fn no_audit_row_no_session(engine: Engine) {
    let env = audit_fault_broker(engine).await;
    let b = &env.b;
    let fault = env.audit.as_ref().unwrap();
    let alice = b.login("alice").await;
    let r = alice.request("aws-sandbox", "1h").await;
    b.run_jobs().await;
    assert_eq!(alice.show(r.id).await.state, RequestState::Active);

    // The audit store fails: no session, and AWS is not even asked.
    fault.fail().await;
    for what in ["credentials", "console-url"] {
        let (status, body) = alice
            .post(&format!("/requests/{}/{what}", r.id), json!({}))
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
        assert_eq!(body["error"]["code"], "audit_unavailable", "{body}");
    }
    assert_eq!(
        env.proxy.count("AssumeRole"),
        0,
        "no STS call without an audit row"
    );
    fault.heal().await;
    let (status, body) = alice
        .post(&format!("/requests/{}/credentials", r.id), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(env.proxy.count("AssumeRole"), 1);
    let minted = events(b, "credentials.minted").await;
    assert_eq!(minted.len(), 1);
    assert!(
        minted[0]
            .data
            .contains(body["AccessKeyId"].as_str().unwrap())
    );

    // The store fails while STS answers: the session is withdrawn (the
    // person's deny covers it) and the caller gets no credentials.
    let (status, body) = mint_as_the_store_fails(&env, &alice, r.id).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "audit_unavailable");
    assert!(body.get("SecretAccessKey").is_none());
    let (policy, _) = role_policy(&env.moto.url, &env.sandbox_role.1)
        .await
        .unwrap();
    let deny = deny_for(&policy, "aws:SourceIdentity", "alice@example.com").unwrap();
    assert!(cutoff(deny) >= OffsetDateTime::now_utc() - time::Duration::seconds(3));
    fault.heal().await;
    b.run_jobs().await;
    assert_eq!(
        events(b, "credentials.minted").await.len(),
        1,
        "the withdrawn one is not"
    );
    // Its withdrawal was held, and is in the chain now.
    let withdrawn = events(b, "credentials.withdrawn").await;
    assert_eq!(withdrawn.len(), 1);
    let data: Value = serde_json::from_str(&withdrawn[0].data).unwrap();
    assert!(data["held"]["n"].is_u64(), "{data}");
    assert_eq!(data["sessions"]["source_identity"], "alice@example.com");
    b.audit_actions(None).await;
}

/// Asks for `caller`'s credentials of request `id`, and makes the audit store of `env` (an
/// [`audit_fault_broker`]) fail while STS answers (the call is held there 800 ms, so
/// the probe before it passed): the broker's answer.
pub(crate) async fn mint_as_the_store_fails(
    env: &AwsBroker,
    caller: &Caller,
    id: uuid::Uuid,
) -> (StatusCode, Value) {
    let fault = env.audit.as_ref().expect("a broker with `audit_fault`");
    let asked = env.proxy.count("AssumeRole");
    env.proxy
        .script("AssumeRole", 1, Fault::Delay(Duration::from_millis(800)));
    let call = {
        let caller = caller.clone();
        let path = format!("/requests/{id}/credentials");
        tokio::spawn(async move { caller.post(&path, json!({})).await })
    };
    while env.proxy.count("AssumeRole") == asked {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fault.fail().await;
    call.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_audit_row_no_session_sqlite() {
    no_audit_row_no_session(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_audit_row_no_session_postgres() {
    no_audit_row_no_session(Engine::Postgres).await;
}

/// `jit-server audit verify` on the database as its owner, with the broker's
/// spool: (exit code, stdout).
fn verify_with_spool(owner_url: &str, spool: &Path) -> (i32, String) {
    let out = Command::new(server_bin())
        .args(["audit", "verify"])
        .env("JIT_DATABASE__URL", owner_url)
        .env("JIT_AUDIT__SPOOL", spool)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn removal_never_waits_for_the_audit_store(engine: Engine) {
    let env = aws_broker_with(
        engine,
        Options {
            audit_fault: true,
            cedar: EVERYONE_SANDBOX,
            ..Options::default()
        },
    )
    .await;
    let b = &env.b;
    let fault = env.audit.as_ref().unwrap();
    let owner_url = fault.owner_url.clone();
    let role = &env.sandbox_role.1;
    let alice = b.login("alice").await;
    let oscar = b.login("oscar").await;
    let carol = b.login("carol").await;
    let dave = b.login("dave").await;
    let (revoked, _) = active_with_session(b, &alice).await;
    let (expiring, _) = active_with_session(b, &oscar).await;
    let before = b.audit_actions(None).await.len();

    fault.fail().await;
    // Granting stays closed...
    let (status, _) = dave
        .post(
            "/requests",
            json!({
                "entitlement": "aws-sandbox", "duration": "1h", "justification": "during the outage"
            }),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    // ...taking away does not wait.
    let (status, body) = alice.revoke(revoked, "done").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "revoked");
    b.run_jobs().await;
    let (policy, _) = role_policy(&env.moto.url, role).await.unwrap();
    assert!(deny_for(&policy, "aws:SourceIdentity", "alice@example.com").is_some());
    // At expiry the same.
    b.advance(Duration::from_mins(61)).await;
    assert_eq!(oscar.show(expiring).await.state, RequestState::Expired);
    let (policy, _) = role_policy(&env.moto.url, role).await.unwrap();
    assert!(deny_for(&policy, "aws:SourceIdentity", "oscar@example.com").is_some());

    // Loud: not ready, a metric, verify names each held event.
    let ready = b
        .http
        .get(format!("{}/readyz", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["audit"]["held"], 4, "{ready}");
    let metrics = b
        .http
        .get(format!("{}/metrics", b.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("jit_audit_held_events 4"), "{metrics}");
    let (status, report) = carol.get("/audit/verify").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["held"], 4, "{report}");
    let (code, out) = verify_with_spool(&owner_url, &b.spool);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("held: 4 events not in the chain yet"), "{out}");
    for (action, id) in [
        ("grant.revoked", revoked),
        ("grant.removed", revoked),
        ("grant.expired", expiring),
        ("grant.removed", expiring),
    ] {
        assert!(
            out.contains(&format!(": {action} by ")) && out.contains(&id.to_string()),
            "{action} {id}: {out}"
        );
    }
    assert_eq!(
        b.audit_actions(None).await.len(),
        before,
        "nothing reached the chain"
    );

    // The store works again: the held events go into the chain, in order.
    let spool_before = std::fs::read(&b.spool).unwrap();
    fault.heal().await;
    b.run_jobs().await;
    let actions = b.audit_actions(None).await;
    assert_eq!(
        &actions[before..before + 4],
        [
            "grant.revoked",
            "grant.removed",
            "grant.expired",
            "grant.removed"
        ]
    );
    let held: Vec<Value> = jit_server::store::audit::list(
        &b.app.store,
        &jit_server::store::audit::Filter {
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .into_iter()
    .rev()
    .filter_map(|e| {
        serde_json::from_str::<Value>(&e.data)
            .unwrap()
            .get("held")
            .cloned()
    })
    .collect();
    assert_eq!(held.len(), 4);
    // Each held record links to the one before.
    for pair in held.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a["n"] != b["n"] {
            assert_eq!(b["n"].as_u64(), a["n"].as_u64().map(|n| n + 1));
            assert_eq!(b["prev"], a["hash"]);
        }
    }
    let (code, out) = verify_with_spool(&owner_url, &b.spool);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("audit chain ok") && !out.contains("held:"),
        "{out}"
    );
    // A broker that died after the replay committed, before its spool said
    // so, replays nothing twice.
    let stale = b.spool.with_extension("stale");
    std::fs::write(&stale, &spool_before).unwrap();
    let mut restarted = b.app.clone();
    restarted.spool = jit_server::store::held::Spool::open(&stale).unwrap();
    assert_eq!(restarted.spool.waiting_events(), 4);
    assert_eq!(restarted.replay_held().await.unwrap(), 0);
    assert_eq!(restarted.spool.waiting_events(), 0);
    assert_eq!(b.audit_actions(None).await, actions);
    let ready = b
        .http
        .get(format!("{}/readyz", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(alice.show(revoked).await.state, RequestState::Revoked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_never_waits_for_the_audit_store_sqlite() {
    removal_never_waits_for_the_audit_store(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_never_waits_for_the_audit_store_postgres() {
    removal_never_waits_for_the_audit_store(Engine::Postgres).await;
}

async fn identity_center_revoke_ends_portal_sessions(engine: Engine) {
    let moto = crate::broker_aws::Moto::connect().await;
    let (ps, ps_moto) = real_permission_set(&moto.sso, &moto.instance_arn, "PT1H").await;
    let env = aws_broker_with(
        engine,
        Options {
            ps: Some(ps.clone()),
            ..Options::default()
        },
    )
    .await;
    env.proxy.rewrite(&ps, &ps_moto);
    let b = &env.b;
    let alice_id = env.moto.user("alice@example.com").await;
    let alice = b.login("alice").await;
    let bob = b.login("bob").await;
    let r = alice.request("aws-billing-sso", "1h").await;
    bob.approve(r.id).await;
    b.run_jobs().await;
    assert_eq!(alice.show(r.id).await.state, RequestState::Active);
    assert_eq!(
        env.moto.assigned(&ps_moto).await,
        std::slice::from_ref(&alice_id)
    );

    let (status, body) = alice
        .post(&format!("/requests/{}/revoke", r.id), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    b.run_jobs().await;
    assert!(env.moto.assigned(&ps_moto).await.is_empty());
    let policy = ps_policy(&env.moto.sso, &env.moto.instance_arn, &ps_moto).await;
    assert!(user_deny(&policy, &alice_id).is_some(), "{policy}");
    assert_eq!(policy["Statement"][0]["Sid"], "OperatorReadOnly");
    assert_eq!(env.proxy.count("ProvisionPermissionSet"), 1);
    let removed = events(b, "grant.removed").await;
    let data: Value = serde_json::from_str(&removed[0].data).unwrap();
    assert_eq!(data["sessions"]["user_id"], alice_id.as_str(), "{data}");
    // A prune is due once the session duration has passed.
    let due: Vec<String> = jit_server::store::query(
        "SELECT payload FROM jobs WHERE kind = 'prune_denies' AND done_at IS NULL",
    )
    .fetch_all(&b.app.store)
    .await
    .unwrap()
    .iter()
    .map(|r| r.try_get("payload").unwrap())
    .collect();
    assert_eq!(
        due,
        [json!({ "entitlement": "aws-billing-sso" }).to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_center_revoke_ends_portal_sessions_sqlite() {
    identity_center_revoke_ends_portal_sessions(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_center_revoke_ends_portal_sessions_postgres() {
    identity_center_revoke_ends_portal_sessions(Engine::Postgres).await;
}
