//! Azure roles through a broker whose providers come from its `[entra]` and
//! `[azure]` sections (`providers::from_config`), pointed at the Graph fake's
//! login and the ARM fake, with the example catalog's `azure-prod-contributor`
//! (subscription Contributor, one approval, ticket required) and
//! `azure-platform-reader` (management group Reader, auto-approved).
//!
//! As in `broker_entra.rs`, requests and decisions go through the service layer
//! as users with an Entra object id (`oid`, what the token carries); states
//! are read back over the JSON API as the auditor carol. The broker's clock and
//! the cloud's (the fakes') are moved together.

use std::sync::Arc;
use std::time::Duration;

use jit_api::{CreateRequest, Decision, DurationInput, RequestState};
use jit_server::clock::SystemClock;
use jit_server::config::{Config, EmailConfig, Secret};
use jit_server::domain::User;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::arm_fake::{ArmFake, CONTRIBUTOR, READER, RoleAssignment, Scope};
use crate::graph_fake::GraphFake;
use crate::support::server::{Caller, Engine, TestBroker, start_with};
use crate::support::smtp::SmtpSink;

/// `azure-prod-contributor`'s subscription in policies/entitlements.toml.
const PROD_SUB: &str = "6e0a1d7c-3b52-4f1e-9c8d-2a4b6c8e0f13";
/// `azure-platform-reader`'s management group.
const PLATFORM_MG: &str = "mg-platform";

/// One scenario on SQLite and on PostgreSQL.
macro_rules! both_engines {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::support::server::Engine::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(crate::support::server::Engine::Postgres).await;
            }
        }
    };
}

struct AzureBroker {
    b: TestBroker,
    graph: GraphFake,
    arm: ArmFake,
    carol: Caller,
    tenant: String,
}

async fn azure_broker(engine: Engine, smtp: Option<u16>) -> AzureBroker {
    crate::support::init();
    let graph = GraphFake::start().await;
    let arm = ArmFake::start(graph.login()).await;
    arm.name_scope(&Scope::Subscription(PROD_SUB.to_owned()), "Production");
    let mut config = Config::default();
    config.entra = Some(graph.config());
    config.azure = Some(arm.config());
    let (providers, _) = jit_server::providers::from_config(&config, Arc::new(SystemClock))
        .await
        .unwrap();
    let (entra, azure) = (graph.config(), arm.config());
    let b = start_with(engine, providers, |c| {
        c.entra = Some(entra);
        c.azure = Some(azure);
        c.notify.email = smtp.map(|port| EmailConfig {
            smtp_url: Secret::new(format!("smtp://127.0.0.1:{port}")),
            from: "jit <jit@example.com>".to_owned(),
        });
    })
    .await;
    let carol = b.login("carol").await;
    let tenant = graph.tenant.clone();
    AzureBroker {
        b,
        graph,
        arm,
        carol,
        tenant,
    }
}

impl AzureBroker {
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

    /// Files a request as `user`; `approver` approves it when there is one.
    async fn request(
        &self,
        user: &User,
        approver: Option<&User>,
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
        let id = view.row.id;
        if let Some(approver) = approver {
            assert_eq!(view.row.state, RequestState::Pending);
            let view = self
                .b
                .app
                .decide(approver, id, Decision::Approve, Some("ok"))
                .await
                .unwrap();
            assert_eq!(view.row.state, RequestState::Approved);
        }
        id
    }

    /// The request as the API shows it.
    async fn show(&self, id: Uuid) -> Value {
        let (status, body) = self.carol.get(&format!("/requests/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Moves the cloud's clock and the broker's together.
    async fn advance(&self, by: Duration) {
        self.graph.advance(time::Duration::try_from(by).unwrap());
        self.b.advance(by).await;
    }

    /// The one assignment the ARM fake holds.
    fn only_assignment(&self) -> RoleAssignment {
        let held = self.arm.assignments();
        assert_eq!(held.len(), 1, "{held:#?}");
        held.into_iter().next().unwrap()
    }
}

fn api_time(v: &Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        v.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// Approve → active once ARM says provisioned, for the right principal, role,
/// scope and end; revoke → removed through a refused-too-early removal and a 429.
async fn contributor_is_granted_then_revoked(engine: Engine) {
    let env = azure_broker(engine, None).await;
    let b = &env.b;
    let alice = env.user("alice", &["grp-jit-requesters"]);
    let bob = env.user("bob", &["grp-jit-approvers"]);
    env.arm.set_pending_reads(2);
    let id = env
        .request(
            &alice,
            Some(&bob),
            "azure-prod-contributor",
            "1h",
            Some("CHG-311"),
        )
        .await;
    assert!(env.arm.assignments().is_empty(), "nothing before the grant");
    // Before ARM has named the subscription, the scope shows by its id.
    assert_eq!(
        env.show(id).await["target"],
        format!("Contributor at subscription {PROD_SUB}")
    );
    b.run_jobs().await;
    let shown = env.show(id).await;
    assert_eq!(shown["state"], "active", "{shown}");
    assert_eq!(shown["simulated"], false);
    // ARM's answers named it: the scope in words.
    assert_eq!(
        shown["target"],
        format!("Contributor at subscription “Production” ({PROD_SUB})")
    );
    let held = env.only_assignment();
    assert_eq!(held.principal, alice.oid.clone().unwrap());
    assert_eq!(held.role, CONTRIBUTOR);
    assert_eq!(held.scope, Scope::Subscription(PROD_SUB.to_owned()));
    assert_eq!(held.assignment_type, "Assigned");
    // The broker sends whole seconds from its now; ARM counts from when it
    // takes the request: the assignment may outlast the grant by a second or two.
    let expires = api_time(&shown["expires_at"]);
    assert!(
        (held.end.unwrap() - expires).abs() <= time::Duration::seconds(2),
        "assignment ends {:?}, grant {expires}",
        held.end
    );
    let assigned = env.arm.puts("AdminAssign");
    assert_eq!(assigned.len(), 1);
    assert_eq!(assigned[0]["ticketInfo"]["ticketNumber"], "CHG-311");
    assert_eq!(assigned[0]["justification"], "broker test");
    assert_eq!(
        b.audit_actions(Some(id)).await,
        [
            "request.created",
            "request.approval",
            "request.approved",
            "grant.activated"
        ]
    );

    // Revoked at once: ARM refuses removal in the first five minutes.
    let view = b.app.revoke(&alice, id, Some("done early")).await.unwrap();
    assert_eq!(view.row.state, RequestState::Revoked);
    b.run_jobs().await;
    b.advance(Duration::from_secs(3)).await;
    assert!(env.arm.puts("AdminRemove").len() >= 2);
    env.only_assignment();
    // Five minutes on, through a 429 that says when to come back.
    env.arm
        .throttle(Method::PUT, "roleAssignmentScheduleRequests", 1, 1);
    env.advance(Duration::from_mins(5) + Duration::from_secs(1))
        .await;
    assert!(env.arm.assignments().is_empty());
    let n = env.arm.puts("AdminRemove").len();
    env.advance(Duration::from_mins(10)).await;
    assert_eq!(env.arm.puts("AdminRemove").len(), n, "done once");
    let actions = b.audit_actions(Some(id)).await;
    assert_eq!(
        &actions[4..],
        ["grant.revoked", "grant.removal_retry", "grant.removed"]
    );
    assert_eq!(env.show(id).await["state"], "revoked");
    // Upstream calls are timed and counted per kind, as for the other providers.
    let metrics = b
        .http
        .get(format!("{}/metrics", b.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "jit_upstream_duration_seconds_count{provider=\"azure_role\",op=\"grant\"}",
        "jit_upstream_duration_seconds_count{provider=\"azure_role\",op=\"revoke\"}",
        "jit_upstream_errors_total{provider=\"azure_role\",op=\"revoke\"}",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    env.arm.assert_no_violations();
}
both_engines!(contributor_is_granted_then_revoked);

/// Reader on a management group, auto-approved; an extension moves the end of
/// the same assignment; the first grant's expiry leaves it to the extension
/// (the overlapping grant keeps it); the extension's expiry removes it (through a 429).
async fn reader_is_extended_kept_and_removed_at_expiry(engine: Engine) {
    let env = azure_broker(engine, None).await;
    let b = &env.b;
    let alice = env.user("alice", &["grp-jit-requesters"]);
    let id = env
        .request(&alice, None, "azure-platform-reader", "1h", None)
        .await;
    b.run_jobs().await;
    let first = env.show(id).await;
    assert_eq!(first["state"], "active", "{first}");
    assert_eq!(first["target"], "Reader at management group mg-platform");
    let held = env.only_assignment();
    assert_eq!(held.scope, Scope::ManagementGroup(PLATFORM_MG.to_owned()));
    assert_eq!(held.role, READER);
    assert_eq!(
        env.arm.puts("AdminAssign")[0]["roleDefinitionId"],
        format!("/providers/Microsoft.Authorization/roleDefinitions/{READER}")
    );

    // Thirty more minutes: auto-approved, an AdminExtend of the same schedule.
    let ext = b
        .app
        .extend(&alice, id, 1800, Some("still reading"))
        .await
        .unwrap()
        .row
        .id;
    b.run_jobs().await;
    let extension = env.show(ext).await;
    assert_eq!(extension["state"], "active", "{extension}");
    let extends = env.arm.puts("AdminExtend");
    assert_eq!(extends.len(), 1);
    assert_eq!(
        extends[0]["targetRoleAssignmentScheduleId"],
        held.schedule_id()
    );
    let moved = env.only_assignment();
    assert_eq!(moved.schedule, held.schedule, "the same assignment");
    let extension_end = api_time(&extension["expires_at"]);
    assert_eq!(
        extension_end - api_time(&first["expires_at"]),
        time::Duration::minutes(30)
    );
    assert!((moved.end.unwrap() - extension_end).abs() <= time::Duration::seconds(2));

    // The first grant ends: the extension still needs the assignment.
    env.advance(Duration::from_mins(61)).await;
    assert_eq!(env.show(id).await["state"], "expired");
    assert_eq!(env.show(ext).await["state"], "active");
    env.only_assignment();
    assert!(env.arm.puts("AdminRemove").is_empty());
    assert!(
        b.audit_actions(Some(id))
            .await
            .contains(&"grant.removal_skipped".to_owned())
    );

    // The extension ends: removed (ARM's own schedule would end it a moment
    // later; the broker's removal comes first, through a 429).
    env.arm
        .throttle(Method::PUT, "roleAssignmentScheduleRequests", 1, 1);
    let left = extension_end - env.graph.now();
    env.graph.advance(left - time::Duration::seconds(5));
    env.b
        .advance(Duration::try_from(left).unwrap() + Duration::from_secs(1))
        .await;
    assert_eq!(env.show(ext).await["state"], "expired");
    assert!(env.arm.assignments().is_empty(), "removed by the broker");
    // The cloud's clock also left the broker's ARM token behind (the client
    // keeps it by the system clock): the removal's first call (the listing that
    // looks for a permanent assignment to leave alone) is refused with 401 and
    // the token renewed; the removal is throttled, then sent again.
    let removes = env.arm.puts("AdminRemove");
    assert_eq!(removes.len(), 2, "throttled, done");
    assert_eq!(env.graph.login().token_requests().len(), 2);
    assert!(
        removes
            .iter()
            .all(|r| r["principalId"] == alice.oid.clone().unwrap())
    );
    let actions = b.audit_actions(Some(ext)).await;
    assert!(
        actions.ends_with(&["grant.expired".to_owned(), "grant.removed".to_owned()]),
        "{actions:?}"
    );
    env.arm.assert_no_violations();
}
both_engines!(reader_is_extended_kept_and_removed_at_expiry);

/// Reconciliation removes a time-bound assignment no grant explains and
/// reports a permanent one (standing access), both audited.
async fn reconciliation_removes_the_unexplained_and_reports_the_permanent(engine: Engine) {
    let env = azure_broker(engine, None).await;
    let b = &env.b;
    let alice = env.user("alice", &["grp-jit-requesters"]);
    let bob = env.user("bob", &["grp-jit-approvers"]);
    let id = env
        .request(
            &alice,
            Some(&bob),
            "azure-prod-contributor",
            "2h",
            Some("CHG-1"),
        )
        .await;
    b.run_jobs().await;
    assert_eq!(env.show(id).await["state"], "active");
    let sub = Scope::Subscription(PROD_SUB.to_owned());
    let (orphan, standing) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let in_an_hour = Some(env.graph.now() + time::Duration::hours(1));
    env.arm.seed(RoleAssignment::new(
        sub.clone(),
        CONTRIBUTOR,
        &orphan,
        in_an_hour,
    ));
    env.arm.seed(RoleAssignment::new(
        sub.clone(),
        CONTRIBUTOR,
        &standing,
        None,
    ));

    b.app.queue_reconcile(300_000).await.unwrap();
    b.run_jobs().await;

    let left: Vec<String> = env
        .arm
        .assignments()
        .into_iter()
        .map(|a| a.principal)
        .collect();
    assert!(!left.contains(&orphan), "the unexplained one is removed");
    assert!(
        left.contains(&standing),
        "the permanent one is reported, not removed"
    );
    assert!(
        left.contains(&alice.oid.clone().unwrap()),
        "the live grant's stays"
    );
    let drift = jit_server::store::audit::list(
        &b.app.store,
        &jit_server::store::audit::Filter {
            action: Some("reconcile.drift".to_owned()),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(drift.len(), 1, "{drift:#?}");
    let data: Value = serde_json::from_str(&drift[0].data).unwrap();
    assert_eq!(data["kind"], "azure_role");
    let removed = data["removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1, "{data}");
    assert!(removed[0].as_str().unwrap().contains(&orphan));
    assert!(
        removed[0].as_str().unwrap().starts_with(&format!(
            "Contributor at subscription “Production” ({PROD_SUB})"
        )),
        "{data}"
    );
    let unexplained = data["unexplained"].as_array().unwrap();
    assert_eq!(unexplained.len(), 1, "{data}");
    assert!(unexplained[0].as_str().unwrap().contains(&standing));
    assert!(unexplained[0].as_str().unwrap().contains("standing access"));
    assert_eq!(data["missing"], serde_json::json!([]));
    b.audit_actions(None).await;
    env.arm.assert_no_violations();
}
both_engines!(reconciliation_removes_the_unexplained_and_reports_the_permanent);

/// ARM refuses the assignment: the grant ends `failed` with ARM's reason, and
/// the requester is told (by mail) why.
async fn a_refused_assignment_fails_the_grant_and_tells_the_requester(engine: Engine) {
    let sink = SmtpSink::start(None).await;
    let env = azure_broker(engine, Some(sink.port)).await;
    let b = &env.b;
    let alice = env.user("alice", &["grp-jit-requesters"]);
    let bob = env.user("bob", &["grp-jit-approvers"]);
    env.arm
        .deny_write(&Scope::Subscription(PROD_SUB.to_owned()));
    let id = env
        .request(
            &alice,
            Some(&bob),
            "azure-prod-contributor",
            "1h",
            Some("CHG-2"),
        )
        .await;
    b.run_jobs().await;
    let shown = env.show(id).await;
    assert_eq!(shown["state"], "failed", "{shown}");
    let reason = shown["failure_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("arm: AuthorizationFailed: The client ")
            && reason.ends_with(&format!(
                "(the broker's app needs User Access Administrator or Owner at `/subscriptions/{PROD_SUB}`)"
            )),
        "{reason}"
    );
    assert!(env.arm.assignments().is_empty());
    // Final: not tried again.
    let puts = env.arm.puts("AdminAssign").len();
    b.advance(Duration::from_mins(30)).await;
    assert_eq!(env.arm.puts("AdminAssign").len(), puts);
    assert!(
        b.audit_actions(Some(id))
            .await
            .contains(&"grant.failed".to_owned())
    );
    // The requester hears why.
    let mut told = None;
    for _ in 0..50 {
        b.advance(Duration::from_secs(30)).await;
        // Quoted-printable soft line breaks joined.
        told = sink.mails().into_iter().find(|m| {
            m.to == ["alice@example.com"]
                && m.raw.replace("=\r\n", "").contains("AuthorizationFailed")
        });
        if told.is_some() {
            break;
        }
    }
    let mail = told.unwrap_or_else(|| panic!("alice was not told: {:#?}", sink.mails()));
    let raw = mail.raw.replace("=\r\n", "");
    assert!(raw.contains(&format!("/requests/{id}")), "{raw}");
    assert!(
        raw.contains(&format!("Contributor at subscription {PROD_SUB}")),
        "the mail says what was asked for: {raw}"
    );
    env.arm.assert_no_violations();
}
both_engines!(a_refused_assignment_fails_the_grant_and_tells_the_requester);

/// Development mode (no `[azure]`): the example Azure entitlements are granted
/// as simulated, through the same lifecycle.
async fn development_mode_simulates_azure_roles(engine: Engine) {
    let b = crate::support::server::start(engine).await;
    let alice = b.login("alice").await;
    let bob = b.login("bob").await;
    let reader = alice.request("azure-platform-reader", "1h").await;
    assert_eq!(reader.state, RequestState::Approved, "auto-approved");
    let (status, body) = alice
        .post(
            "/requests",
            serde_json::json!({ "entitlement": "azure-prod-contributor", "duration": "2h",
                                "justification": "deploy", "ticket": "CHG-9" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let contributor: jit_api::Request = serde_json::from_value(body).unwrap();
    let (status, body) = bob.approve(contributor.id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    b.run_jobs().await;
    for id in [reader.id, contributor.id] {
        let shown = alice.show(id).await;
        assert_eq!(shown.state, RequestState::Active);
        assert!(shown.simulated);
        assert_eq!(shown.kind, "azure_role");
    }
    let (_, list) = alice.get("/entitlements").await;
    let azure: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["id"].as_str().unwrap().starts_with("azure-"))
        .map(|e| (e["kind"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        azure,
        [
            ("azure_role", "Reader at management group mg-platform"),
            (
                "azure_role",
                "Contributor at subscription 6e0a1d7c-3b52-4f1e-9c8d-2a4b6c8e0f13"
            ),
        ]
    );
    let (status, _) = alice
        .post(
            &format!("/requests/{}/revoke", contributor.id),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    b.run_jobs().await;
    assert!(
        b.audit_actions(Some(contributor.id))
            .await
            .ends_with(&["grant.revoked".to_owned(), "grant.removed".to_owned()])
    );
}
both_engines!(development_mode_simulates_azure_roles);
