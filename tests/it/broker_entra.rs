//! Entra PIM grants through a broker whose providers come from its `[entra]`
//! section (`providers::from_config`), pointed at the Graph fake.
//!
//! Development sign-in gives users no Entra object id, and PIM needs one
//! (`principalId`): requests and decisions go through the service layer as
//! users with an `oid`, exactly as the HTTP layer calls it after an OIDC
//! sign-in; states are read back over the JSON API (as the auditor carol).
//! A development user without an `oid` shows what happens then.

use std::sync::Arc;
use std::time::Duration;

use jit_api::{CreateRequest, Decision, DurationInput, RequestState};
use jit_server::clock::SystemClock;
use jit_server::config::Config;
use jit_server::domain::User;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::graph_fake::{Fault, GraphFake};
use crate::support::server::{Caller, ENGINES, Engine, TestBroker, start_with};

/// `entra-user-admin` in policies/entitlements.toml.
const USER_ADMIN_ROLE: &str = "fe930be7-5e62-47db-91af-98c3a49a38b1";
/// `entra-sec-ops-group` in policies/entitlements.toml.
const SEC_OPS_GROUP: &str = "3f1c2a4e-7b6d-4e8f-9a0b-1c2d3e4f5a6b";
const ROLE_REQUESTS: &str = "/v1.0/roleManagement/directory/roleAssignmentScheduleRequests";
const GROUP_REQUESTS: &str =
    "/v1.0/identityGovernance/privilegedAccess/group/assignmentScheduleRequests";

struct EntraBroker {
    b: TestBroker,
    fake: GraphFake,
    /// The auditor, reading states over the API.
    carol: Caller,
    tenant: String,
}

async fn entra_broker(engine: Engine) -> EntraBroker {
    crate::support::init();
    let fake = GraphFake::start().await;
    let mut config = Config::default();
    config.entra = Some(fake.config());
    let (providers, graph) = jit_server::providers::from_config(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    assert!(graph.is_some(), "the Graph client is built from `[entra]`");
    let entra = fake.config();
    let b = start_with(engine, providers, |c| c.entra = Some(entra)).await;
    let carol = b.login("carol").await;
    let tenant = fake.tenant.clone();
    EntraBroker {
        b,
        fake,
        carol,
        tenant,
    }
}

impl EntraBroker {
    /// A signed-in user with an Entra object id.
    fn user(&self, name: &str, groups: &[&str]) -> User {
        let oid = Uuid::new_v4().to_string();
        User {
            key: format!("{}/{oid}", self.tenant),
            oid: Some(oid),
            name: name.to_owned(),
            email: format!("{name}@example.com"),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            roles: vec![],
            mfa: true,
            auth_time: Some(time::OffsetDateTime::now_utc().unix_timestamp()),
            acrs: vec![],
        }
    }

    /// Files a request as `user` and has `approver` approve it.
    async fn approved(
        &self,
        user: &User,
        approver: &User,
        entitlement: &str,
        duration: &str,
        ticket: Option<&str>,
    ) -> Uuid {
        let view = self
            .b
            .app
            .create_request(
                user,
                &CreateRequest {
                    entitlement: entitlement.to_owned(),
                    bundle: None,
                    duration: DurationInput::Text(duration.to_owned()),
                    justification: "broker test".to_owned(),
                    ticket: ticket.map(str::to_owned),
                    break_glass: false,
                    start_at: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(view.row.state, RequestState::Pending);
        let id = view.row.id;
        let view = self
            .b
            .app
            .decide(approver, id, Decision::Approve, Some("ok"))
            .await
            .unwrap();
        assert_eq!(view.row.state, RequestState::Approved);
        id
    }

    /// The request as the API shows it.
    async fn show(&self, id: Uuid) -> Value {
        let (status, body) = self.carol.get(&format!("/requests/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// POST bodies the fake received at `path` with this `action`.
    fn posts(&self, path: &str, action: &str) -> Vec<Value> {
        self.fake
            .requests_to("POST", path)
            .into_iter()
            .map(|r| r.body)
            .filter(|b| b["action"] == action)
            .collect()
    }
}

async fn role_is_active_when_provisioned_and_removed_on_revoke(engine: Engine) {
    let env = entra_broker(engine).await;
    let b = &env.b;
    let alice = env.user("alice", &["grp-jit-requesters"]);
    let bob = env.user("bob", &["grp-jit-approvers"]);
    // PIM answers `PendingProvisioning` twice before `Provisioned`.
    env.fake.set_pending_polls(2);
    let id = env
        .approved(&alice, &bob, "entra-user-admin", "1h", Some("INC-912"))
        .await;
    assert!(env.fake.instances().is_empty());
    b.run_jobs().await;
    let shown = env.show(id).await;
    assert_eq!(shown["state"], "active", "{shown}");
    assert_eq!(shown["simulated"], false);
    let assigned = env.posts(ROLE_REQUESTS, "adminAssign");
    assert_eq!(assigned.len(), 1);
    assert_eq!(assigned[0]["principalId"], alice.oid.as_deref().unwrap());
    assert_eq!(assigned[0]["roleDefinitionId"], USER_ADMIN_ROLE);
    assert_eq!(assigned[0]["ticketInfo"]["ticketNumber"], "INC-912");
    // Whole seconds, rounded up so that PIM covers the whole window.
    let duration = assigned[0]["scheduleInfo"]["expiration"]["duration"]
        .as_str()
        .unwrap();
    assert!(duration == "PT1H" || duration == "PT1H1S", "{duration}");
    let instances = env.fake.instances();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].principal, alice.oid.clone().unwrap());
    assert_eq!(instances[0].object, USER_ADMIN_ROLE);
    let activated = b.audit_actions(Some(id)).await;
    assert_eq!(
        activated,
        [
            "request.created",
            "request.approval",
            "request.approved",
            "grant.activated"
        ]
    );

    // Revoked at once: PIM refuses removal in the first five minutes, the
    // broker keeps trying.
    let view = b.app.revoke(&alice, id, Some("done early")).await.unwrap();
    assert_eq!(view.row.state, RequestState::Revoked);
    b.run_jobs().await;
    b.advance(Duration::from_secs(3)).await;
    assert!(env.posts(ROLE_REQUESTS, "adminRemove").len() >= 2);
    assert_eq!(env.fake.instances().len(), 1, "PIM still holds it");
    assert_eq!(env.show(id).await["state"], "revoked");
    let retries = b
        .audit_actions(Some(id))
        .await
        .into_iter()
        .filter(|a| a == "grant.removal_retry")
        .count();
    assert_eq!(retries, 1, "the first refusal is audited, not every one");

    // Five minutes later PIM lets go.
    env.fake
        .advance(time::Duration::minutes(5) + time::Duration::seconds(1));
    b.advance(Duration::from_mins(5)).await;
    assert!(env.fake.instances().is_empty());
    let removes = env.posts(ROLE_REQUESTS, "adminRemove");
    assert!(
        removes
            .iter()
            .all(|r| r["principalId"] == alice.oid.as_deref().unwrap()
                && r["roleDefinitionId"] == USER_ADMIN_ROLE)
    );
    let n = removes.len();
    b.advance(Duration::from_mins(10)).await;
    assert_eq!(
        env.posts(ROLE_REQUESTS, "adminRemove").len(),
        n,
        "done once"
    );
    let actions = b.audit_actions(Some(id)).await;
    assert_eq!(
        &actions[4..],
        ["grant.revoked", "grant.removal_retry", "grant.removed"]
    );
    env.fake.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_is_active_when_provisioned_and_removed_on_revoke_sqlite() {
    role_is_active_when_provisioned_and_removed_on_revoke(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_is_active_when_provisioned_and_removed_on_revoke_postgres() {
    role_is_active_when_provisioned_and_removed_on_revoke(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_membership_follows_the_grant_to_its_end() {
    for engine in ENGINES {
        let env = entra_broker(engine).await;
        let b = &env.b;
        let alice = env.user("alice", &["grp-jit-requesters"]);
        let bob = env.user("bob", &["grp-jit-approvers"]);
        let id = env
            .approved(&alice, &bob, "entra-sec-ops-group", "2h", None)
            .await;
        b.run_jobs().await;
        assert_eq!(env.show(id).await["state"], "active");
        let assigned = env.posts(GROUP_REQUESTS, "adminAssign");
        assert_eq!(assigned.len(), 1);
        assert_eq!(assigned[0]["groupId"], SEC_OPS_GROUP);
        assert_eq!(assigned[0]["accessId"], "member");
        assert_eq!(assigned[0]["principalId"], alice.oid.as_deref().unwrap());
        let instances = env.fake.instances();
        assert_eq!(instances.len(), 1);
        assert_eq!(instances[0].kind, "group");

        // At the end PIM's schedule has removed it already; the broker's
        // removal finds nothing and is content.
        env.fake.advance(time::Duration::minutes(121));
        b.advance(Duration::from_mins(121)).await;
        assert_eq!(env.show(id).await["state"], "expired");
        assert!(env.fake.instances().is_empty());
        // The fake's clock also left the broker's Graph token behind: the
        // removal's first call (the listing that looks for a permanent
        // assignment to leave alone) is refused (401), the token renewed, the
        // removal sent once.
        assert_eq!(env.fake.token_requests(), 2);
        assert_eq!(env.posts(GROUP_REQUESTS, "adminRemove").len(), 1);
        assert_eq!(
            b.audit_actions(Some(id)).await[3..],
            ["grant.activated", "grant.expired", "grant.removed"]
        );
        env.fake.assert_no_violations();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_errors_fail_the_grant_with_graphs_code_and_message() {
    for engine in ENGINES {
        let env = entra_broker(engine).await;
        let b = &env.b;
        let alice = env.user("alice", &["grp-jit-requesters"]);
        let bob = env.user("bob", &["grp-jit-approvers"]);

        env.fake.inject(Fault::graph(
            Method::POST,
            "roleAssignmentScheduleRequests",
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
            1,
        ));
        let denied = env
            .approved(&alice, &bob, "entra-user-admin", "1h", Some("INC-9000"))
            .await;
        // PIM policy: at most one hour for this group.
        env.fake.set_max_duration(Some(3600));
        let too_long = env
            .approved(&alice, &bob, "entra-sec-ops-group", "2h", None)
            .await;
        b.run_jobs().await;

        let shown = env.show(denied).await;
        assert_eq!(shown["state"], "failed", "{shown}");
        assert_eq!(
            shown["failure_reason"],
            "graph: Authorization_RequestDenied: Insufficient privileges to complete the operation."
        );
        let shown = env.show(too_long).await;
        assert_eq!(shown["state"], "failed", "{shown}");
        let reason = shown["failure_reason"].as_str().unwrap();
        assert!(
            reason.starts_with("graph: RoleAssignmentRequestPolicyValidationFailed: ")
                && reason.contains("ExpirationRule"),
            "{reason}"
        );
        // Final: not tried again.
        let posts = env.fake.requests_to("POST", "ScheduleRequests").len();
        b.advance(Duration::from_mins(30)).await;
        assert_eq!(
            env.fake.requests_to("POST", "ScheduleRequests").len(),
            posts
        );
        assert!(env.fake.instances().is_empty());

        // A user without an object id (development sign-in) cannot be
        // assigned: the grant fails before anything is sent.
        let dev_alice = b.login("alice").await;
        let dev_bob = b.login("bob").await;
        let r = dev_alice.request("entra-sec-ops-group", "1h").await;
        let (status, body) = dev_bob.approve(r.id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        b.run_jobs().await;
        let (_, shown) = dev_alice.get(&format!("/requests/{}", r.id)).await;
        assert_eq!(shown["state"], "failed", "{shown}");
        assert_eq!(
            shown["failure_reason"],
            "`alice@example.com` has no Entra object id (oid), so PIM cannot assign them"
        );
        assert_eq!(
            env.fake.requests_to("POST", "ScheduleRequests").len(),
            posts
        );
        let failed = jit_server::store::audit::list(
            &b.app.store,
            &jit_server::store::audit::Filter {
                action: Some("grant.failed".to_owned()),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(failed.len(), 3);
        b.audit_actions(None).await;
    }
}

/// Revoking the first request of an extended role grant ends the extension's access too
/// (it is the same PIM assignment), cancels a pending extension, and removes the
/// assignment once.
async fn revoking_an_extended_role_removes_the_assignment(engine: Engine) {
    let env = entra_broker(engine).await;
    let b = &env.b;
    let alice = env.user("alice", &["grp-jit-requesters"]);
    let bob = env.user("bob", &["grp-jit-approvers"]);
    let id = env
        .approved(&alice, &bob, "entra-user-admin", "1h", Some("INC-913"))
        .await;
    b.run_jobs().await;
    assert_eq!(env.show(id).await["state"], "active");
    let ext = b.app.extend(&alice, id, 1800, None).await.unwrap().row.id;
    b.app
        .decide(&bob, ext, Decision::Approve, Some("ok"))
        .await
        .unwrap();
    b.run_jobs().await;
    assert_eq!(env.show(ext).await["state"], "active");
    assert_eq!(env.fake.instances().len(), 1, "one assignment, extended");
    let pending = b.app.extend(&alice, ext, 1800, None).await.unwrap().row.id;
    assert_eq!(env.show(pending).await["state"], "pending");
    // Past PIM's first five minutes, so that the removal is taken at once.
    env.fake
        .advance(time::Duration::minutes(5) + time::Duration::seconds(1));

    let view = b.app.revoke(&alice, id, Some("done")).await.unwrap();
    assert_eq!(view.row.state, RequestState::Revoked);
    assert_eq!(env.show(ext).await["state"], "revoked");
    assert_eq!(env.show(pending).await["state"], "cancelled");
    b.run_jobs().await;
    assert!(
        env.fake.instances().is_empty(),
        "{:?}",
        env.fake.instances()
    );
    assert_eq!(env.posts(ROLE_REQUESTS, "adminRemove").len(), 1);
    b.advance(Duration::from_mins(10)).await;
    assert_eq!(
        env.posts(ROLE_REQUESTS, "adminRemove").len(),
        1,
        "removed once"
    );
    let last = |actions: Vec<String>| actions.last().cloned();
    assert_eq!(
        last(b.audit_actions(Some(id)).await).as_deref(),
        Some("grant.removed")
    );
    assert_eq!(
        last(b.audit_actions(Some(ext)).await).as_deref(),
        Some("grant.removed")
    );
    assert_eq!(
        last(b.audit_actions(Some(pending)).await).as_deref(),
        Some("request.cancelled")
    );
    // Nothing else to revoke.
    let err = b.app.revoke(&alice, ext, None).await.unwrap_err();
    assert_eq!(err.to_string(), "request is revoked, not active");
    env.fake.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_extended_role_removes_the_assignment_sqlite() {
    revoking_an_extended_role_removes_the_assignment(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_extended_role_removes_the_assignment_postgres() {
    revoking_an_extended_role_removes_the_assignment(Engine::Postgres).await;
}
