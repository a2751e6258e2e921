//! Entra PIM providers and the Graph client against the in-repo Graph fake
//! (`graph_fake.rs`; Microsoft ships no emulator).

#![expect(
    clippy::too_many_lines,
    reason = "test helpers panic loudly; scenario tests read top to bottom"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use jit_server::clock::{Clock, ManualClock, SystemClock};
use jit_server::config::Secret;
use jit_server::policy::catalog::{Catalog, Entitlement};
use jit_server::providers::graph::{EntraGroup, EntraRole, GraphClient, GraphError, Tuning};
use jit_server::providers::{GrantProvider, GrantSpec, Grantee, LiveGrant, ProviderError};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::graph_fake::{Fault, GraphFake, group_instance, role_instance};

const ROLE: &str = "62e90394-69f5-4237-9190-012177145e10";
const OTHER_ROLE: &str = "fdd7a751-b60b-444a-984c-02652fe8fa1c";
const GROUP: &str = "68e55cce-cf7e-4a2d-9046-3e4e75c4bfa7";
const ROLE_REQUESTS: &str = "/v1.0/roleManagement/directory/roleAssignmentScheduleRequests";
const GROUP_REQUESTS: &str =
    "/v1.0/identityGovernance/privilegedAccess/group/assignmentScheduleRequests";

/// A clock that stands still (exact request bodies).
struct FixedClock(OffsetDateTime);

impl Clock for FixedClock {
    fn now(&self) -> OffsetDateTime {
        self.0
    }
}

fn now_s() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap()
}

fn fast() -> Tuning {
    Tuning {
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        poll_interval: Duration::from_millis(10),
        max_polls: 5,
        ..Tuning::default()
    }
}

fn client_with(fake: &GraphFake, tuning: Tuning, clock: Arc<dyn Clock>) -> Arc<GraphClient> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Arc::new(GraphClient::with_options(&fake.config(), tuning, clock).unwrap())
}

fn catalog() -> Catalog {
    let text = format!(
        r#"
[[entitlement]]
id = "entra-admin"
title = "Privileged role administrator"
kind = "entra_role"
role_definition_id = "{ROLE}"
max_duration = "8h"

[[entitlement]]
id = "entra-admin-short"
title = "Same role, shorter"
kind = "entra_role"
role_definition_id = "{ROLE}"
max_duration = "1h"

[[entitlement]]
id = "prod-owners"
title = "Owners of the production group"
kind = "entra_group"
group_id = "{GROUP}"
access_id = "owner"
max_duration = "4h"
"#
    );
    Catalog::parse(&text, "entitlements.toml").unwrap()
}

fn grantee(oid: Option<&str>) -> Grantee {
    Grantee {
        key: "tid|alice".to_owned(),
        email: "alice@example.com".to_owned(),
        name: "Alice".to_owned(),
        oid: oid.map(str::to_owned),
    }
}

fn oid() -> String {
    Uuid::new_v4().to_string()
}

#[expect(
    clippy::too_many_arguments,
    reason = "a test builder mirroring GrantSpec"
)]
fn spec<'a>(
    grantee: &'a Grantee,
    entitlement: &'a Entitlement,
    starts_at: OffsetDateTime,
    ends_at: OffsetDateTime,
    justification: &'a str,
    ticket: Option<&'a str>,
    overlapping: bool,
    request_id: Uuid,
) -> GrantSpec<'a> {
    GrantSpec {
        request_id,
        grantee,
        entitlement,
        starts_at,
        ends_at,
        justification,
        ticket,
        overlapping,
        held: false,
    }
}

fn minutes(m: i64) -> time::Duration {
    time::Duration::minutes(m)
}

fn bodies(fake: &GraphFake, path: &str) -> Vec<Value> {
    fake.requests_to("POST", path)
        .into_iter()
        .map(|r| r.body)
        .collect()
}

#[tokio::test]
async fn assign_sends_the_documented_body() {
    let fake = GraphFake::start().await;
    let now = now_s();
    let client = client_with(&fake, fast(), Arc::new(FixedClock(now)));
    let role = EntraRole::new(client);
    let cat = catalog();
    let alice = oid();
    let g = grantee(Some(&alice));
    let id = Uuid::new_v4();
    let s = spec(
        &g,
        cat.get("entra-admin").unwrap(),
        now,
        now + minutes(90),
        "fix INC-1",
        Some("INC-1"),
        false,
        id,
    );

    let record = role.grant(&s).await.unwrap();

    let posts = fake.requests_to("POST", ROLE_REQUESTS);
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].body,
        json!({
            "action": "adminAssign",
            "principalId": alice,
            "roleDefinitionId": ROLE,
            "directoryScopeId": "/",
            "justification": "fix INC-1",
            "scheduleInfo": {
                "startDateTime": jit_time(now),
                "expiration": { "type": "afterDuration", "duration": "PT1H30M" }
            },
            "ticketInfo": { "ticketNumber": "INC-1", "ticketSystem": "jit" }
        })
    );
    assert!(posts[0].headers["content-type"].starts_with("application/json"));
    assert!(posts[0].headers["authorization"].starts_with("Bearer fake-entra-token-"));
    assert_eq!(record.details["graph"]["action"], "adminAssign");
    assert_eq!(record.details["graph"]["status"], "Provisioned");
    assert_eq!(
        record.reference.as_deref(),
        record.details["graph"]["request_id"].as_str()
    );
    let instances = fake.instances();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].principal, alice);
    assert_eq!(instances[0].object, ROLE);
    let end = instances[0].end.unwrap();
    assert!(
        (end - (now + minutes(90))).abs() < time::Duration::seconds(5),
        "{end}"
    );
    fake.assert_no_violations();
}

fn jit_time(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[tokio::test]
async fn group_assignment_and_extension_send_the_documented_bodies() {
    let fake = GraphFake::start().await;
    let now = now_s();
    let group = EntraGroup::new(client_with(&fake, fast(), Arc::new(FixedClock(now))));
    let cat = catalog();
    let ent = cat.get("prod-owners").unwrap();
    let bob = oid();
    let g = grantee(Some(&bob));

    group
        .grant(&spec(
            &g,
            ent,
            now,
            now + minutes(120),
            "deploy",
            None,
            false,
            Uuid::new_v4(),
        ))
        .await
        .unwrap();
    // A second, overlapping grant that ends later: the membership is extended.
    let record = group
        .grant(&spec(
            &g,
            ent,
            now,
            now + minutes(240),
            "deploy more",
            None,
            true,
            Uuid::new_v4(),
        ))
        .await
        .unwrap();

    let posts = bodies(&fake, GROUP_REQUESTS);
    assert_eq!(
        posts,
        vec![
            json!({
                "action": "adminAssign",
                "accessId": "owner",
                "principalId": bob,
                "groupId": GROUP,
                "justification": "deploy",
                "scheduleInfo": {
                    "startDateTime": jit_time(now),
                    "expiration": { "type": "afterDuration", "duration": "PT2H" }
                }
            }),
            json!({
                "action": "adminExtend",
                "accessId": "owner",
                "principalId": bob,
                "groupId": GROUP,
                "justification": "deploy more",
                "scheduleInfo": {
                    "startDateTime": jit_time(now),
                    "expiration": { "type": "afterDuration", "duration": "PT4H" }
                }
            }),
        ]
    );
    assert_eq!(record.details["graph"]["action"], "adminExtend");
    let lists = fake.requests_to("GET", "assignmentScheduleInstances");
    assert_eq!(lists.len(), 1);
    assert!(
        lists[0].query.contains(&(
            "$filter".to_owned(),
            format!("groupId eq '{GROUP}' and principalId eq '{bob}'")
        )),
        "{:?}",
        lists[0].query
    );
    let instances = fake.instances();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].scope, "owner");
    assert!((instances[0].end.unwrap() - (now + minutes(240))).abs() < time::Duration::seconds(5));

    // Removal of the membership.
    fake.advance(minutes(6));
    let id = Uuid::new_v4();
    group
        .revoke(&spec(
            &g,
            ent,
            now,
            now + minutes(240),
            "x",
            None,
            false,
            id,
        ))
        .await
        .unwrap();
    assert_eq!(
        bodies(&fake, GROUP_REQUESTS).last().unwrap(),
        &json!({
            "action": "adminRemove",
            "accessId": "owner",
            "principalId": bob,
            "groupId": GROUP,
            "justification": format!("jit: access of request {id} ended"),
        })
    );
    assert!(fake.instances().is_empty());
    fake.assert_no_violations();
}

#[tokio::test]
async fn overlapping_role_grants_extend_and_never_shorten() {
    let fake = GraphFake::start().await;
    let now = now_s();
    let role = EntraRole::new(client_with(&fake, fast(), Arc::new(FixedClock(now))));
    let cat = catalog();
    let ent = cat.get("entra-admin").unwrap();
    let carol = oid();
    let g = grantee(Some(&carol));

    role.grant(&spec(
        &g,
        ent,
        now,
        now + minutes(60),
        "a",
        None,
        false,
        Uuid::new_v4(),
    ))
    .await
    .unwrap();
    // Not flagged as overlapping: Graph answers RoleAssignmentExists and the
    // provider extends instead.
    let extended = role
        .grant(&spec(
            &g,
            ent,
            now,
            now + minutes(180),
            "b",
            Some("CHG-7"),
            false,
            Uuid::new_v4(),
        ))
        .await
        .unwrap();
    assert_eq!(extended.details["graph"]["action"], "adminExtend");
    // Shorter than what exists: nothing is sent, the access is not cut.
    let covered = role
        .grant(&spec(
            &g,
            ent,
            now,
            now + minutes(120),
            "c",
            None,
            true,
            Uuid::new_v4(),
        ))
        .await
        .unwrap();
    assert_eq!(covered.details["graph"]["action"], "none");

    let posts = bodies(&fake, ROLE_REQUESTS);
    let actions: Vec<&str> = posts
        .iter()
        .map(|b| b["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["adminAssign", "adminAssign", "adminExtend"]);
    assert_eq!(
        posts[2],
        json!({
            "action": "adminExtend",
            "principalId": carol,
            "roleDefinitionId": ROLE,
            "directoryScopeId": "/",
            "justification": "b",
            "scheduleInfo": {
                "startDateTime": jit_time(now),
                "expiration": { "type": "afterDuration", "duration": "PT3H" }
            },
            "ticketInfo": { "ticketNumber": "CHG-7", "ticketSystem": "jit" }
        })
    );
    let lists = fake.requests_to("GET", "roleAssignmentScheduleInstances");
    assert!(lists.iter().all(|l| l.query.contains(&(
        "$filter".to_owned(),
        format!("principalId eq '{carol}' and roleDefinitionId eq '{ROLE}'")
    ))));
    let instances = fake.instances();
    assert_eq!(instances.len(), 1);
    assert!((instances[0].end.unwrap() - (now + minutes(180))).abs() < time::Duration::seconds(5));
    fake.assert_no_violations();
}

#[tokio::test]
async fn early_removal_is_refused_for_five_minutes_then_done() {
    let fake = GraphFake::start().await;
    let role = EntraRole::new(client_with(&fake, fast(), Arc::new(SystemClock)));
    let cat = catalog();
    let ent = cat.get("entra-admin").unwrap();
    let dave = oid();
    let g = grantee(Some(&dave));
    let now = now_s();
    let id = Uuid::new_v4();
    let s = spec(&g, ent, now, now + minutes(60), "oops", None, false, id);
    role.grant(&s).await.unwrap();

    let refused = role.revoke(&s).await.unwrap_err();
    let ProviderError::Transient(reason) = refused else {
        panic!("PIM's five-minute rule must be retried, got {refused:?}");
    };
    assert!(
        reason.starts_with("graph: ActiveDurationTooShort: "),
        "{reason}"
    );
    assert_eq!(fake.instances().len(), 1, "still active");

    fake.advance(minutes(5) + time::Duration::seconds(1));
    role.revoke(&s).await.unwrap();
    assert!(fake.instances().is_empty());
    let remove = bodies(&fake, ROLE_REQUESTS).pop().unwrap();
    assert_eq!(
        remove,
        json!({
            "action": "adminRemove",
            "principalId": dave,
            "roleDefinitionId": ROLE,
            "directoryScopeId": "/",
            "justification": format!("jit: access of request {id} ended"),
        })
    );
    // Already gone (PIM's own expiry got there first): still a success.
    role.revoke(&s).await.unwrap();
    fake.assert_no_violations();
}

/// Standing access the broker did not make (a permanent assignment) covers a
/// grant, and the grant's end leaves it in place: the broker removes only what
/// it assigns, always until a time.
#[tokio::test]
async fn a_permanent_assignment_covers_a_grant_and_outlives_its_end() {
    let fake = GraphFake::start().await;
    let role = EntraRole::new(client_with(&fake, fast(), Arc::new(SystemClock)));
    let cat = catalog();
    let ent = cat.get("entra-admin").unwrap();
    let erin = oid();
    fake.seed_instance(role_instance(&erin, ROLE, None, "Assigned", "Direct"));
    let g = grantee(Some(&erin));
    let now = now_s();
    let s = spec(
        &g,
        ent,
        now,
        now + minutes(60),
        "x",
        None,
        false,
        Uuid::new_v4(),
    );

    let record = role.grant(&s).await.unwrap();
    assert_eq!(record.details["graph"]["action"], "none");
    assert_eq!(record.details["graph"]["covered_until"], "no expiry");
    role.revoke(&s).await.unwrap();

    let left = fake.instances();
    assert_eq!(left.len(), 1, "the standing assignment stays");
    assert_eq!(left[0].end, None);
    let actions: Vec<String> = bodies(&fake, ROLE_REQUESTS)
        .iter()
        .map(|b| b["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["adminAssign"], "no adminRemove is sent");
    fake.assert_no_violations();
}

#[tokio::test]
async fn token_is_cached_single_flight_and_renewed_before_expiry() {
    let fake = GraphFake::start().await;
    let clock = ManualClock::new();
    let client = client_with(&fake, fast(), Arc::new(clock.clone()));
    let user = oid();
    fake.set_user_groups(&user, vec![(oid(), "sre".to_owned())]);

    let calls = (0..20).map(|_| client.user_groups(&user));
    for result in futures_util::future::join_all(calls).await {
        assert_eq!(result.unwrap().len(), 1);
    }
    assert_eq!(
        fake.token_requests(),
        1,
        "twenty concurrent calls, one token"
    );

    // 3599 s tokens are kept until five minutes before expiry.
    clock.advance(minutes(54));
    client.user_groups(&user).await.unwrap();
    assert_eq!(fake.token_requests(), 1);
    clock.advance(minutes(1));
    client.user_groups(&user).await.unwrap();
    assert_eq!(fake.token_requests(), 2, "renewed 5 minutes before expiry");

    let form = &fake.requests_to("POST", "/oauth2/v2.0/token")[0].body;
    let secret = fake.config().client_secret.unwrap().expose().to_owned();
    assert_eq!(
        form,
        &json!({
            "grant_type": "client_credentials",
            "client_id": fake.client_id,
            "scope": "https://graph.microsoft.com/.default",
            "client_secret": secret,
        })
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_rejected_token_is_renewed_once() {
    let fake = GraphFake::start().await;
    let client = client_with(&fake, fast(), Arc::new(SystemClock));
    let user = oid();
    fake.set_user_groups(&user, vec![]);
    fake.set_token_lifetime(900);
    client.user_groups(&user).await.unwrap();
    // The fake's clock passes the token's expiry while the broker's does not.
    fake.advance(minutes(16));
    client.user_groups(&user).await.unwrap();
    assert_eq!(fake.token_requests(), 2);
}

#[tokio::test]
async fn throttling_honours_retry_after() {
    let fake = GraphFake::start().await;
    let role = EntraRole::new(client_with(&fake, fast(), Arc::new(SystemClock)));
    let cat = catalog();
    let g = grantee(Some(&oid()));
    let now = now_s();
    fake.inject(Fault::throttle(
        Method::POST,
        "roleAssignmentScheduleRequests",
        Some(1),
        2,
    ));

    let started = Instant::now();
    role.grant(&spec(
        &g,
        cat.get("entra-admin").unwrap(),
        now,
        now + minutes(30),
        "j",
        None,
        false,
        Uuid::new_v4(),
    ))
    .await
    .unwrap();

    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(fake.requests_to("POST", ROLE_REQUESTS).len(), 3);
    assert_eq!(fake.instances().len(), 1);
    fake.assert_no_violations();
}

#[tokio::test]
async fn retries_are_bounded() {
    let fake = GraphFake::start().await;
    let tuning = Tuning {
        max_attempts: 3,
        ..fast()
    };
    let client = client_with(&fake, tuning, Arc::new(SystemClock));
    let user = oid();
    fake.set_user_groups(&user, vec![]);

    // 503 without Retry-After: exponential backoff, three attempts, then the error.
    fake.inject(Fault::unavailable(
        Method::GET,
        "transitiveMemberOf",
        None,
        10,
    ));
    let e = client.user_groups(&user).await.unwrap_err();
    assert_eq!(e.status(), Some(503));
    assert_eq!(e.code(), Some("ServiceUnavailable"));
    assert!(e.is_transient());
    assert!(matches!(
        ProviderError::from(e),
        ProviderError::Transient(_)
    ));
    assert_eq!(fake.requests_to("GET", "transitiveMemberOf").len(), 3);

    // A Retry-After beyond the bound ends the call at once; the scheduler retries later.
    let fake = GraphFake::start().await;
    let client = client_with(&fake, fast(), Arc::new(SystemClock));
    fake.set_user_groups(&user, vec![]);
    fake.inject(Fault::throttle(
        Method::GET,
        "transitiveMemberOf",
        Some(600),
        1,
    ));
    let started = Instant::now();
    let e = client.user_groups(&user).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(e, GraphError::Api { status: 429, retry_after: Some(d), .. } if d == Duration::from_mins(10)),
        "{e:?}"
    );
    assert_eq!(fake.requests_to("GET", "transitiveMemberOf").len(), 1);

    // 504 is retried too.
    fake.inject(Fault::graph(
        Method::GET,
        "transitiveMemberOf",
        504,
        "GatewayTimeout",
        "Gateway timeout.",
        1,
    ));
    client.user_groups(&user).await.unwrap();
    assert_eq!(fake.requests_to("GET", "transitiveMemberOf").len(), 3);
}

#[tokio::test]
async fn failed_grants_carry_graphs_reason() {
    let fake = GraphFake::start().await;
    let role = EntraRole::new(client_with(&fake, fast(), Arc::new(SystemClock)));
    let cat = catalog();
    let ent = cat.get("entra-admin").unwrap();
    let now = now_s();
    let g = grantee(Some(&oid()));
    let s = |hours: i64| {
        spec(
            &g,
            ent,
            now,
            now + time::Duration::hours(hours),
            "j",
            None,
            false,
            Uuid::new_v4(),
        )
    };

    // PIM policy: longer than the role allows.
    fake.set_max_duration(Some(3600));
    let e = role.grant(&s(2)).await.unwrap_err();
    assert_eq!(
        e,
        ProviderError::Permanent(
            "graph: RoleAssignmentRequestPolicyValidationFailed: The following policy rules failed: [\"ExpirationRule\"]".to_owned()
        )
    );
    fake.set_max_duration(None);

    // PIM policy: a ticket is required.
    fake.set_require_ticket(true);
    let e = role.grant(&s(1)).await.unwrap_err();
    assert_eq!(
        e,
        ProviderError::Permanent(
            "graph: RoleAssignmentRequestPolicyValidationFailed: The following policy rules failed: [\"TicketingRule\"]".to_owned()
        )
    );
    fake.set_require_ticket(false);

    // The app lacks the permission.
    fake.inject(Fault::graph(
        Method::POST,
        "roleAssignmentScheduleRequests",
        403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
        1,
    ));
    let e = role.grant(&s(1)).await.unwrap_err();
    assert_eq!(
        e,
        ProviderError::Permanent("graph: Authorization_RequestDenied: Insufficient privileges to complete the operation.".to_owned())
    );

    // PIM accepted the request but it failed.
    fake.set_final_status(Some("Failed"));
    let ProviderError::Permanent(reason) = role.grant(&s(1)).await.unwrap_err() else {
        panic!("a failed request is final");
    };
    assert!(
        reason.starts_with("graph: Failed: PIM did not carry out `adminAssign`"),
        "{reason}"
    );

    // PIM wants its own approval: the request is cancelled and the grant fails.
    fake.set_final_status(Some("PendingApproval"));
    let ProviderError::Permanent(reason) = role.grant(&s(1)).await.unwrap_err() else {
        panic!("a PIM approval is not the broker's");
    };
    assert!(
        reason.contains("PendingApproval") && reason.contains("turn PIM approval off"),
        "{reason}"
    );
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.path.ends_with("/cancel"))
            .count(),
        1
    );
    fake.set_final_status(None);

    // No object id: nothing is sent.
    let before = fake.requests_to("POST", ROLE_REQUESTS).len();
    let nobody = grantee(None);
    let e = role
        .grant(&spec(
            &nobody,
            ent,
            now,
            now + minutes(30),
            "j",
            None,
            false,
            Uuid::new_v4(),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        ProviderError::Permanent(
            "`alice@example.com` has no Entra object id (oid), so PIM cannot assign them"
                .to_owned()
        )
    );
    assert_eq!(fake.requests_to("POST", ROLE_REQUESTS).len(), before);
    assert!(fake.instances().is_empty());
    fake.assert_no_violations();
}

#[tokio::test]
async fn pending_requests_are_polled_until_provisioned() {
    let fake = GraphFake::start().await;
    let role = EntraRole::new(client_with(&fake, fast(), Arc::new(SystemClock)));
    let cat = catalog();
    let ent = cat.get("entra-admin").unwrap();
    let now = now_s();
    let g = grantee(Some(&oid()));

    fake.set_pending_polls(2);
    let record = role
        .grant(&spec(
            &g,
            ent,
            now,
            now + minutes(30),
            "j",
            None,
            false,
            Uuid::new_v4(),
        ))
        .await
        .unwrap();
    assert_eq!(record.details["graph"]["status"], "Provisioned");
    let id = record.reference.unwrap();
    assert_eq!(
        fake.requests_to("GET", &format!("roleAssignmentScheduleRequests/{id}"))
            .len(),
        2
    );
    assert_eq!(fake.instances().len(), 1);

    // Still pending after the bound: transient, the scheduler tries again.
    fake.set_pending_polls(100);
    let h = grantee(Some(&oid()));
    let e = role
        .grant(&spec(
            &h,
            ent,
            now,
            now + minutes(30),
            "j",
            None,
            false,
            Uuid::new_v4(),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::Transient(m) if m.contains("still `PendingProvisioning` after 5 checks")),
        "{e:?}"
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn writes_are_rate_limited() {
    let fake = GraphFake::start().await;
    let tuning = Tuning {
        writes_per_second: 5.0,
        write_burst: 1,
        ..fast()
    };
    let role = EntraRole::new(client_with(&fake, tuning, Arc::new(SystemClock)));
    let cat = catalog();
    let ent = cat.get("entra-admin").unwrap();
    let now = now_s();
    let started = Instant::now();
    for _ in 0..4 {
        let g = grantee(Some(&oid()));
        role.grant(&spec(
            &g,
            ent,
            now,
            now + minutes(30),
            "j",
            None,
            false,
            Uuid::new_v4(),
        ))
        .await
        .unwrap();
    }
    // One from the burst, then one every 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.instances().len(), 4);
}

#[tokio::test]
async fn reconcile_removes_orphans_and_reports_the_rest() {
    let fake = GraphFake::start().await;
    fake.set_page_size(2);
    let client = client_with(&fake, fast(), Arc::new(SystemClock));
    let role = EntraRole::new(client.clone());
    let group = EntraGroup::new(client);
    let cat = catalog();
    let managed: Vec<Entitlement> = cat.iter().cloned().collect();
    let now = fake.now();
    let (live, orphan, permanent, activated, inherited, missing, unmanaged) =
        (oid(), oid(), oid(), oid(), oid(), oid(), oid());
    let in_an_hour = Some(now + time::Duration::hours(1));
    fake.seed_instance(role_instance(&live, ROLE, in_an_hour, "Assigned", "Direct"));
    fake.seed_instance(role_instance(
        &orphan, ROLE, in_an_hour, "Assigned", "Direct",
    ));
    fake.seed_instance(role_instance(&permanent, ROLE, None, "Assigned", "Direct"));
    fake.seed_instance(role_instance(
        &activated,
        ROLE,
        in_an_hour,
        "Activated",
        "Direct",
    ));
    fake.seed_instance(role_instance(
        &inherited, ROLE, in_an_hour, "Assigned", "Group",
    ));
    fake.seed_instance(role_instance(
        &unmanaged, OTHER_ROLE, in_an_hour, "Assigned", "Direct",
    ));
    let live_grant = |who: &str, entitlement: &str| LiveGrant {
        request_id: Uuid::new_v4(),
        entitlement: entitlement.to_owned(),
        grantee: grantee(Some(who)),
        ends_at: now + time::Duration::hours(1),
    };
    // Explained through the other entitlement on the same role.
    let grants = vec![
        live_grant(&live, "entra-admin-short"),
        live_grant(&missing, "entra-admin"),
    ];

    let report = role.reconcile(&managed, &grants).await.unwrap();

    assert_eq!(report.removed.len(), 1, "{report:#?}");
    assert!(report.removed[0].contains(&orphan), "{report:#?}");
    assert_eq!(report.unexplained.len(), 3, "{report:#?}");
    for (who, why) in [
        (&permanent, "permanent"),
        (&activated, "activated"),
        (&inherited, "through a group"),
    ] {
        assert!(
            report
                .unexplained
                .iter()
                .any(|u| u.contains(who.as_str()) && u.contains(why)),
            "{why}: {report:#?}"
        );
    }
    assert_eq!(report.missing.len(), 1, "{report:#?}");
    assert!(
        report.missing[0].contains(&grants[1].request_id.to_string())
            && report.missing[0].contains(&missing)
    );
    let remaining: Vec<String> = fake.instances().into_iter().map(|i| i.principal).collect();
    assert!(
        !remaining.contains(&orphan) && remaining.contains(&live) && remaining.contains(&unmanaged)
    );
    assert_eq!(
        bodies(&fake, ROLE_REQUESTS),
        vec![json!({
            "action": "adminRemove",
            "principalId": orphan,
            "roleDefinitionId": ROLE,
            "directoryScopeId": "/",
            "justification": "jit reconciliation: no live grant explains this assignment",
        })]
    );
    // The instance listing was paged and filtered by role only.
    let lists = fake.requests_to("GET", "roleAssignmentScheduleInstances");
    assert_eq!(lists.len(), 3, "six instances, two per page");
    assert!(lists[0].query.contains(&(
        "$filter".to_owned(),
        format!("roleDefinitionId eq '{ROLE}'")
    )));

    // Groups: an orphan ownership goes, a member (another access) is not ours.
    let (owner, member) = (oid(), oid());
    fake.seed_instance(group_instance(&owner, GROUP, "owner", in_an_hour));
    fake.seed_instance(group_instance(&member, GROUP, "member", in_an_hour));
    let report = group.reconcile(&managed, &[]).await.unwrap();
    assert_eq!(report.removed.len(), 1, "{report:#?}");
    assert!(report.removed[0].contains(&owner));
    assert!(
        report.unexplained.is_empty() && report.missing.is_empty(),
        "{report:#?}"
    );
    let lists = fake.requests_to("GET", "assignmentScheduleInstances");
    assert!(
        lists[0]
            .query
            .contains(&("$filter".to_owned(), format!("groupId eq '{GROUP}'")))
    );
    fake.assert_no_violations();
}

#[tokio::test]
async fn transitive_member_of_follows_paging() {
    let fake = GraphFake::start().await;
    fake.set_page_size(2);
    let client = client_with(&fake, fast(), Arc::new(SystemClock));
    let user = oid();
    let groups: Vec<(String, String)> = (0..5).map(|i| (oid(), format!("group {i}"))).collect();
    fake.set_user_groups(&user, groups.clone());

    let ids = client.user_groups(&user).await.unwrap();

    assert_eq!(
        ids,
        groups.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>()
    );
    let gets = fake.requests_to("GET", "transitiveMemberOf");
    assert_eq!(gets.len(), 3);
    assert!(
        gets.iter()
            .all(|g| g.headers.get("consistencylevel").map(String::as_str) == Some("eventual"))
    );
    assert_eq!(
        gets[0].path,
        format!("/v1.0/users/{user}/transitiveMemberOf/microsoft.graph.group")
    );
    assert!(
        gets[0]
            .query
            .contains(&("$select".to_owned(), "id,displayName".to_owned()))
    );
    assert!(
        gets[0]
            .query
            .contains(&("$count".to_owned(), "true".to_owned()))
    );

    let e = client.user_groups(&oid()).await.unwrap_err();
    assert_eq!(e.code(), Some("Request_ResourceNotFound"));
    fake.assert_no_violations();
}

/// A throw-away RSA key and self-signed certificate from the `openssl` CLI.
struct TestCert {
    key_pem: String,
    cert_pem: String,
    public_pem: String,
    der: Vec<u8>,
}

fn make_cert() -> TestCert {
    let dir = std::env::temp_dir().join(format!("jit-graph-cert-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("the openssl CLI is needed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-subj",
        "/CN=jit-test",
    ]);
    run(&[
        "x509", "-in", "cert.pem", "-pubkey", "-noout", "-out", "pub.pem",
    ]);
    run(&[
        "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
    ]);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let cert = TestCert {
        key_pem: String::from_utf8(read("key.pem")).unwrap(),
        cert_pem: String::from_utf8(read("cert.pem")).unwrap(),
        public_pem: String::from_utf8(read("pub.pem")).unwrap(),
        der: read("cert.der"),
    };
    std::fs::remove_dir_all(&dir).unwrap();
    cert
}

#[tokio::test]
async fn certificate_credentials_sign_a_client_assertion() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let fake = GraphFake::start().await;
    let trusted = make_cert();
    fake.trust_certificate(&trusted.public_pem, &trusted.der);
    let user = oid();
    fake.set_user_groups(&user, vec![(oid(), "g".to_owned())]);
    let config = |cert: &TestCert| {
        let mut config = fake.config();
        config.client_secret = None;
        config.certificate_key = Some(Secret::new(cert.key_pem.clone()));
        config.certificate = Some(cert.cert_pem.clone());
        config
    };

    let client =
        GraphClient::with_options(&config(&trusted), fast(), Arc::new(SystemClock)).unwrap();
    assert_eq!(client.user_groups(&user).await.unwrap().len(), 1);

    let form = fake
        .requests_to("POST", "/oauth2/v2.0/token")
        .pop()
        .unwrap()
        .body;
    assert_eq!(
        form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    assert!(form.get("client_secret").is_none());
    let header = jsonwebtoken::decode_header(form["client_assertion"].as_str().unwrap()).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::PS256);
    assert!(header.x5t_s256.is_some());
    fake.assert_no_violations();

    // A certificate the app does not know: the token endpoint refuses, the
    // grant fails with its reason.
    let stranger = make_cert();
    let client = Arc::new(
        GraphClient::with_options(&config(&stranger), fast(), Arc::new(SystemClock)).unwrap(),
    );
    let e = client.user_groups(&user).await.unwrap_err();
    assert!(
        matches!(&e, GraphError::Token { status: 401, error, description, .. } if error == "invalid_client" && description.starts_with("AADSTS700027:")),
        "{e:?}"
    );
    let cat = catalog();
    let g = grantee(Some(&user));
    let now = now_s();
    let err = EntraRole::new(client)
        .grant(&spec(
            &g,
            cat.get("entra-admin").unwrap(),
            now,
            now + minutes(30),
            "j",
            None,
            false,
            Uuid::new_v4(),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.starts_with("graph token: invalid_client: AADSTS700027")),
        "{err:?}"
    );
    assert!(!format!("{err:?}").contains("PRIVATE KEY"));

    // Half a credential is a configuration error.
    let mut half = config(&trusted);
    half.certificate = None;
    let e = GraphClient::new(&half).unwrap_err();
    assert_eq!(
        e.to_string(),
        "graph: `entra.certificate` is required with `entra.certificate_key`"
    );
}
