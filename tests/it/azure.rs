//! The `azure_role` provider and the ARM client against the in-repo ARM fake
//! (`arm_fake.rs`; Microsoft ships no emulator), with tokens from the Graph
//! fake's login endpoint as `[azure]` takes `[entra]`'s app.

#![expect(
    clippy::too_many_lines,
    reason = "test helpers panic loudly; scenario tests read top to bottom"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use jit_server::clock::{Clock, ManualClock, SystemClock};
use jit_server::config::Config;
use jit_server::policy::catalog::{Catalog, Entitlement};
use jit_server::providers::azure::{ArmClient, AzureNames, AzureRole};
use jit_server::providers::graph::Tuning;
use jit_server::providers::{GrantProvider, GrantSpec, Grantee, LiveGrant, ProviderError};
use reqwest::Method;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::arm_fake::{ArmFake, CONTRIBUTOR, OWNER, Policy, READER, RoleAssignment, Scope};
use crate::graph_fake::{ARM_SCOPES, Fault, GraphFake};

pub(crate) const SUB: &str = "38ab2ccc-3747-4567-b36b-9478f5602f0d";
const RG: &str = "rg-payments";
const MG: &str = "mg-platform";

fn fast() -> Tuning {
    Tuning {
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        poll_interval: Duration::from_millis(10),
        max_polls: 5,
        ..Tuning::default()
    }
}

struct Env {
    graph: GraphFake,
    arm: ArmFake,
    names: Arc<AzureNames>,
    provider: AzureRole,
    catalog: Catalog,
}

async fn env_with(tuning: Tuning, clock: Arc<dyn Clock>) -> Env {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let graph = GraphFake::start().await;
    let arm = ArmFake::start(graph.login()).await;
    let mut config = Config::default();
    config.entra = Some(graph.config());
    config.azure = Some(arm.config());
    let (azure, app) = config.azure_app().unwrap().unwrap();
    let client = Arc::new(ArmClient::new(azure, &app, tuning, clock).unwrap());
    let names = Arc::new(AzureNames::default());
    let provider = AzureRole::new(client, names.clone());
    Env {
        graph,
        arm,
        names,
        provider,
        catalog: catalog(),
    }
}

async fn env() -> Env {
    env_with(fast(), Arc::new(SystemClock)).await
}

fn catalog() -> Catalog {
    let text = format!(
        r#"
[[entitlement]]
id = "sub-contributor"
title = "Subscription contributor"
kind = "azure_role"
scope = "/subscriptions/{SUB}"
role_definition_id = "{CONTRIBUTOR}"
max_duration = "8h"

[[entitlement]]
id = "sub-contributor-short"
title = "Same role, shorter"
kind = "azure_role"
scope = "/subscriptions/{SUB}"
role_definition_id = "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{CONTRIBUTOR}"
max_duration = "1h"

[[entitlement]]
id = "mg-reader"
title = "Platform reader"
kind = "azure_role"
scope = "/providers/Microsoft.Management/managementGroups/{MG}"
role_definition_id = "{READER}"
max_duration = "8h"

[[entitlement]]
id = "rg-owner"
title = "Payments owner, storage only"
kind = "azure_role"
scope = "/subscriptions/{SUB}/resourceGroups/{RG}"
role_definition_id = "{OWNER}"
condition = "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringEquals 'payments'"
max_duration = "2h"
"#
    );
    Catalog::parse(&text, "entitlements.toml").unwrap()
}

fn grantee(oid: Option<&str>) -> Grantee {
    Grantee {
        key: "tid/alice".to_owned(),
        email: "alice@example.com".to_owned(),
        name: "Alice".to_owned(),
        oid: oid.map(str::to_owned),
    }
}

fn oid() -> String {
    Uuid::new_v4().to_string()
}

fn spec<'a>(
    grantee: &'a Grantee,
    entitlement: &'a Entitlement,
    ends_at: OffsetDateTime,
    ticket: Option<&'a str>,
    overlapping: bool,
) -> GrantSpec<'a> {
    GrantSpec {
        request_id: Uuid::new_v4(),
        grantee,
        entitlement,
        starts_at: OffsetDateTime::now_utc(),
        ends_at,
        justification: "deploy hotfix",
        ticket,
        overlapping,
        held: false,
    }
}

fn minutes(m: i64) -> time::Duration {
    time::Duration::minutes(m)
}

fn sub() -> Scope {
    Scope::Subscription(SUB.to_owned())
}

#[tokio::test]
async fn assign_sends_the_documented_request_and_waits_for_provisioning() {
    let env = env().await;
    env.arm.set_pending_reads(2);
    env.arm.name_scope(&sub(), "Production");
    let alice = oid();
    let g = grantee(Some(&alice));
    let ends = env.arm.assignments().len();
    assert_eq!(ends, 0);
    let end = OffsetDateTime::now_utc() + minutes(90);

    let record = env
        .provider
        .grant(&spec(
            &g,
            env.catalog.get("sub-contributor").unwrap(),
            end,
            Some("INC-7"),
            false,
        ))
        .await
        .unwrap();

    let puts: Vec<_> = env
        .arm
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 1);
    let put = &puts[0];
    let (prefix, name) = put.path.rsplit_once('/').unwrap();
    assert_eq!(
        prefix,
        format!(
            "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignmentScheduleRequests"
        )
    );
    assert!(Uuid::try_parse(name).is_ok(), "{name}");
    assert_eq!(
        put.query,
        [("api-version".to_owned(), "2020-10-01".to_owned())]
    );
    assert!(put.headers["content-type"].starts_with("application/json"));
    let p = &put.body["properties"];
    let start = p["scheduleInfo"]["startDateTime"].as_str().unwrap();
    let duration = p["scheduleInfo"]["expiration"]["duration"]
        .as_str()
        .unwrap();
    assert!(
        duration == "PT1H30M" || duration == "PT1H30M1S",
        "{duration}"
    );
    assert_eq!(
        put.body,
        json!({ "properties": {
            "principalId": alice,
            "roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{CONTRIBUTOR}"),
            "requestType": "AdminAssign",
            "justification": "deploy hotfix",
            "ticketInfo": { "ticketNumber": "INC-7", "ticketSystem": "jit" },
            "scheduleInfo": { "startDateTime": start, "expiration": { "type": "AfterDuration", "duration": duration } },
        }})
    );
    // Read until provisioned: Accepted, Accepted, Provisioned.
    let gets = env
        .arm
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(name))
        .count();
    assert_eq!(gets, 2);
    assert_eq!(record.reference.as_deref(), Some(name));
    assert_eq!(record.details["arm"]["status"], "Provisioned");
    assert_eq!(record.details["arm"]["scope_name"], "Production");
    assert_eq!(record.details["arm"]["role_name"], "Contributor");
    let held = env.arm.assignments();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].principal.as_str(), held[0].role.as_str()),
        (alice.as_str(), CONTRIBUTOR)
    );
    assert!((held[0].end.unwrap() - end).abs() < time::Duration::seconds(2));
    assert_eq!(
        env.names.describe(
            CONTRIBUTOR,
            &jit_server::policy::azure::AzureScope::Subscription(SUB.to_owned())
        ),
        format!("Contributor at subscription “Production” ({SUB})")
    );
    // One ARM token, asked for with the ARM scope.
    let tokens = env.graph.login().token_requests();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["scope"], ARM_SCOPES[0]);
    env.arm.assert_no_violations();
}

#[tokio::test]
async fn role_definition_ids_are_written_for_each_scope_form() {
    let env = env().await;
    let g = grantee(Some(&oid()));
    let end = OffsetDateTime::now_utc() + minutes(30);
    for id in ["mg-reader", "rg-owner"] {
        env.provider
            .grant(&spec(&g, env.catalog.get(id).unwrap(), end, None, false))
            .await
            .unwrap();
    }
    let mg = &env.arm.puts("AdminAssign")[0];
    assert_eq!(
        mg["roleDefinitionId"],
        format!("/providers/Microsoft.Authorization/roleDefinitions/{READER}")
    );
    let rg = &env.arm.puts("AdminAssign")[1];
    assert_eq!(
        rg["roleDefinitionId"],
        format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{OWNER}")
    );
    assert!(rg["condition"].as_str().unwrap().contains("payments"));
    assert_eq!(rg["conditionVersion"], "2.0");
    let paths: Vec<String> = env
        .arm
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.path)
        .collect();
    assert!(paths[0].starts_with(&format!(
        "/providers/Microsoft.Management/managementGroups/{MG}/providers/Microsoft.Authorization/"
    )));
    assert!(paths[1].starts_with(&format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Authorization/"
    )));
    let held = env.arm.assignments();
    assert_eq!(held.len(), 2);
    assert!(
        held.iter()
            .any(|a| a.scope == Scope::ManagementGroup(MG.to_owned()))
    );
    assert!(held.iter().any(|a| a.condition.is_some()));
    env.arm.assert_no_violations();
}

#[tokio::test]
async fn overlapping_grants_extend_and_never_shorten() {
    let env = env().await;
    let g = grantee(Some(&oid()));
    let now = OffsetDateTime::now_utc();
    let long = env.catalog.get("sub-contributor").unwrap();
    let short = env.catalog.get("sub-contributor-short").unwrap();
    env.provider
        .grant(&spec(&g, long, now + minutes(30), None, false))
        .await
        .unwrap();
    let schedule = env.arm.assignments()[0].schedule_id();

    // A later end: AdminExtend of that schedule, to the new end.
    let record = env
        .provider
        .grant(&spec(&g, short, now + minutes(50), Some("INC-8"), true))
        .await
        .unwrap();
    let extends = env.arm.puts("AdminExtend");
    assert_eq!(extends.len(), 1);
    assert_eq!(extends[0]["targetRoleAssignmentScheduleId"], schedule);
    assert_eq!(
        extends[0]["scheduleInfo"]["expiration"]["type"],
        "AfterDateTime"
    );
    assert!(extends[0]["scheduleInfo"].get("startDateTime").is_none());
    assert_eq!(extends[0]["ticketInfo"]["ticketNumber"], "INC-8");
    assert_eq!(record.details["arm"]["request_type"], "AdminExtend");
    let held = env.arm.assignments();
    assert_eq!(held.len(), 1);
    assert!((held[0].end.unwrap() - (now + minutes(50))).abs() < time::Duration::seconds(2));

    // An earlier end: left alone.
    let record = env
        .provider
        .grant(&spec(&g, long, now + minutes(20), None, true))
        .await
        .unwrap();
    assert_eq!(record.details["arm"]["request_type"], "none");
    assert_eq!(env.arm.puts("AdminExtend").len(), 1);

    // A first grant that finds the assignment made (an earlier attempt): ARM
    // answers RoleAssignmentExists, the broker extends.
    env.provider
        .grant(&spec(&g, long, now + minutes(70), None, false))
        .await
        .unwrap();
    assert_eq!(env.arm.puts("AdminAssign").len(), 2);
    assert_eq!(env.arm.puts("AdminExtend").len(), 2);
    assert!(
        (env.arm.assignments()[0].end.unwrap() - (now + minutes(70))).abs()
            < time::Duration::seconds(2)
    );

    // Gone meanwhile: assigned afresh.
    env.arm.advance(minutes(71));
    assert!(env.arm.assignments().is_empty());
    env.provider
        .grant(&spec(
            &g,
            long,
            OffsetDateTime::now_utc() + minutes(140),
            None,
            true,
        ))
        .await
        .unwrap();
    assert_eq!(env.arm.assignments().len(), 1);
    assert_eq!(env.arm.puts("AdminAssign").len(), 3);
    env.arm.assert_no_violations();
}

/// Standing access the broker did not make (a permanent assignment) covers a
/// grant, and the grant's end leaves it in place.
#[tokio::test]
async fn a_permanent_assignment_covers_a_grant_and_outlives_its_end() {
    let env = env().await;
    let who = oid();
    env.arm
        .seed(RoleAssignment::new(sub(), CONTRIBUTOR, &who, None));
    let g = grantee(Some(&who));
    let ent = env.catalog.get("sub-contributor").unwrap();
    let s = spec(
        &g,
        ent,
        OffsetDateTime::now_utc() + minutes(30),
        None,
        false,
    );

    let record = env.provider.grant(&s).await.unwrap();
    assert_eq!(record.details["arm"]["request_type"], "none");
    assert_eq!(record.details["arm"]["covered_until"], "no expiry");
    env.provider.revoke(&s).await.unwrap();

    assert!(
        env.arm.puts("AdminRemove").is_empty(),
        "no AdminRemove is sent"
    );
    let held = env.arm.assignments();
    assert_eq!(held.len(), 1, "the standing assignment stays");
    assert_eq!(held[0].end, None);
    env.arm.assert_no_violations();
}

#[tokio::test]
async fn removal_goes_through_the_five_minute_floor_and_throttling() {
    let env = env().await;
    let alice = oid();
    let g = grantee(Some(&alice));
    let ent = env.catalog.get("sub-contributor").unwrap();
    let s = spec(
        &g,
        ent,
        OffsetDateTime::now_utc() + minutes(60),
        Some("INC-9"),
        false,
    );
    env.provider.grant(&s).await.unwrap();

    // Too early: a transient refusal, the assignment stays.
    let e = env.provider.revoke(&s).await.unwrap_err();
    assert!(
        matches!(&e, ProviderError::Transient(m) if m.starts_with("arm: ActiveDurationTooShort: ")),
        "{e:?}"
    );
    assert_eq!(env.arm.assignments().len(), 1);

    // Five minutes later, through two 429s that say when to come back.
    env.arm.advance(minutes(5));
    env.arm
        .throttle(Method::PUT, "roleAssignmentScheduleRequests", 1, 2);
    let started = Instant::now();
    env.provider.revoke(&s).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(env.arm.assignments().is_empty());
    let removes = env.arm.puts("AdminRemove");
    assert_eq!(
        removes.len(),
        4,
        "one refused early, two throttled, one done"
    );
    assert_eq!(removes[3]["principalId"], alice);
    assert_eq!(removes[3]["ticketInfo"]["ticketNumber"], "INC-9");
    assert!(removes[3].get("scheduleInfo").is_none());
    assert!(
        removes[3]["justification"]
            .as_str()
            .unwrap()
            .starts_with("jit: access of request ")
    );
    // A throttled PUT is sent again under the same name (ARM did not carry it
    // out); every new request has a name of its own.
    let names: std::collections::HashSet<String> = env
        .arm
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.path)
        .collect();
    assert_eq!(names.len(), 3, "refused early, throttled then done, gone");

    // Gone already: removed is removed.
    env.provider.revoke(&s).await.unwrap();
    // Throttled longer than the client waits: transient, for the scheduler to retry.
    let e = {
        let env = env_with(
            Tuning {
                max_retry_after: Duration::from_secs(5),
                ..fast()
            },
            Arc::new(SystemClock),
        )
        .await;
        env.arm
            .throttle(Method::PUT, "roleAssignmentScheduleRequests", 600, 1);
        env.provider.revoke(&s).await.unwrap_err()
    };
    assert!(
        matches!(&e, ProviderError::Transient(m) if m.starts_with("arm: SubscriptionRequestsThrottled: ")),
        "{e:?}"
    );
    env.arm.assert_no_violations();
}

#[tokio::test]
async fn a_lost_answer_is_followed_under_the_same_name() {
    let env = env().await;
    let g = grantee(Some(&oid()));
    env.arm.lose_answers(1);
    env.provider
        .grant(&spec(
            &g,
            env.catalog.get("sub-contributor").unwrap(),
            OffsetDateTime::now_utc() + minutes(30),
            None,
            false,
        ))
        .await
        .unwrap();
    let puts: Vec<_> = env
        .arm
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 2, "the 503 is retried");
    assert_eq!(
        puts[0].path, puts[1].path,
        "under the same name, which ARM then refuses with 409"
    );
    assert_eq!(env.arm.assignments().len(), 1, "made once");
    env.arm.assert_no_violations();
}

#[tokio::test]
async fn failures_carry_arms_reason() {
    let env = env().await;
    let g = grantee(Some(&oid()));
    let end = OffsetDateTime::now_utc() + minutes(30);
    let ent = env.catalog.get("sub-contributor").unwrap();
    env.arm.deny_write(&sub());
    let ProviderError::Permanent(m) = env
        .provider
        .grant(&spec(&g, ent, end, None, false))
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert!(
        m.starts_with("arm: AuthorizationFailed: The client ") && m.ends_with(&format!("(the broker's app needs User Access Administrator or Owner at `/subscriptions/{SUB}`)")),
        "{m}"
    );

    let env = self::env().await;
    let ent = env.catalog.get("sub-contributor").unwrap();
    env.arm.set_policy(Policy {
        max_duration: Some(600),
        require_ticket: true,
        permanent_allowed: false,
        ..Policy::default()
    });
    let ProviderError::Permanent(m) = env
        .provider
        .grant(&spec(&g, ent, end, None, false))
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert!(m.starts_with("arm: RoleAssignmentRequestPolicyValidationFailed: The following policy rules failed: [\"ExpirationRule\",\"TicketingRule\"]"), "{m}");
    env.arm.set_policy(Policy::default());

    env.arm.set_final_status(Some("Failed"));
    let ProviderError::Permanent(m) = env
        .provider
        .grant(&spec(&g, ent, end, None, false))
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert!(m.starts_with(&format!("arm: Failed: PIM did not carry out `AdminAssign` of Contributor at subscription {SUB} (request `")), "{m}");
    env.arm.set_final_status(Some("PendingApproval"));
    let ProviderError::Permanent(m) = env
        .provider
        .grant(&spec(&g, ent, end, None, false))
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert!(
        m.contains("PIM wants its own approval") && m.contains("cancelled"),
        "{m}"
    );
    assert_eq!(
        env.arm
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/cancel"))
            .count(),
        1
    );
    env.arm.set_final_status(None);
    assert!(env.arm.assignments().is_empty());

    // Still pending after every poll: transient (the scheduler tries again).
    env.arm.set_pending_reads(50);
    let e = env
        .provider
        .grant(&spec(&g, ent, end, None, false))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProviderError::Transient(m) if m.contains("is still `Accepted` after 5 checks")),
        "{e:?}"
    );
    env.arm.set_pending_reads(1);

    // A role that does not exist (a catalog typo): final, with what to check.
    let text = format!(
        "[[entitlement]]\nid = \"x\"\ntitle = \"x\"\nkind = \"azure_role\"\nscope = \"/subscriptions/{SUB}\"\nrole_definition_id = \"11111111-2222-3333-4444-555555555555\"\nmax_duration = \"1h\"\n"
    );
    let typo = Catalog::parse(&text, "e.toml").unwrap();
    let ProviderError::Permanent(m) = env
        .provider
        .grant(&spec(&g, typo.get("x").unwrap(), end, None, false))
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert!(
        m.starts_with("arm: RoleDefinitionDoesNotExist: ")
            && m.ends_with("(check the entitlement's `role_definition_id`)"),
        "{m}"
    );

    // No object id, or one that is not a GUID: nothing is sent.
    let before = env.arm.requests().len();
    for (who, expect) in [
        (grantee(None), "has no Entra object id"),
        (grantee(Some("dev-alice")), "which is not a GUID"),
    ] {
        let ProviderError::Permanent(m) = env
            .provider
            .grant(&spec(&who, ent, end, None, false))
            .await
            .unwrap_err()
        else {
            panic!()
        };
        assert!(m.contains(expect), "{m}");
    }
    assert_eq!(env.arm.requests().len(), before);
    // A window already over: nothing is sent either.
    let ProviderError::Permanent(m) = env
        .provider
        .grant(&spec(
            &g,
            ent,
            OffsetDateTime::now_utc() - minutes(1),
            None,
            false,
        ))
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert!(m.contains("before the grant could be made"), "{m}");
    env.arm.assert_no_violations();
}

#[tokio::test]
async fn reconcile_removes_unexplained_and_reports_standing_access() {
    let env = env().await;
    env.arm.set_page_size(2);
    env.arm.place_subscription(SUB, MG);
    let managed: Vec<Entitlement> = env.catalog.iter().cloned().collect();
    let now = OffsetDateTime::now_utc();
    let in_an_hour = Some(now + time::Duration::hours(1));
    let (live, orphan, permanent, activated, through_group, missing, other_role, below) =
        (oid(), oid(), oid(), oid(), oid(), oid(), oid(), oid());
    let seed = |who: &str, role: &str, end, assignment: &str, member: &str| {
        let mut a = RoleAssignment::new(sub(), role, who, end);
        a.assignment_type = assignment.to_owned();
        a.member_type = member.to_owned();
        env.arm.seed(a);
    };
    seed(&live, CONTRIBUTOR, in_an_hour, "Assigned", "Direct");
    seed(&orphan, CONTRIBUTOR, in_an_hour, "Assigned", "Direct");
    seed(&permanent, CONTRIBUTOR, None, "Assigned", "Direct");
    seed(&activated, CONTRIBUTOR, in_an_hour, "Activated", "Direct");
    seed(&through_group, CONTRIBUTOR, in_an_hour, "Assigned", "Group");
    // Not managed: another role at the scope, the managed role below it, and a
    // standing Reader on the management group above (the group's own pass sees it).
    seed(&other_role, OWNER, in_an_hour, "Assigned", "Direct");
    env.arm.seed(RoleAssignment::new(
        Scope::ResourceGroup(SUB.to_owned(), "rg-other".to_owned()),
        CONTRIBUTOR,
        &below,
        in_an_hour,
    ));
    let standing_reader = oid();
    env.arm.seed(RoleAssignment::new(
        Scope::ManagementGroup(MG.to_owned()),
        READER,
        &standing_reader,
        None,
    ));
    let live_grant = |who: &str, entitlement: &str| LiveGrant {
        request_id: Uuid::new_v4(),
        entitlement: entitlement.to_owned(),
        grantee: grantee(Some(who)),
        ends_at: now + time::Duration::hours(1),
    };
    // Explained through the other entitlement of the same role and scope.
    let grants = vec![
        live_grant(&live, "sub-contributor-short"),
        live_grant(&missing, "sub-contributor"),
    ];

    let report = env.provider.reconcile(&managed, &grants).await.unwrap();

    assert_eq!(report.removed.len(), 1, "{report:#?}");
    assert!(report.removed[0].contains(&orphan), "{report:#?}");
    assert_eq!(report.unexplained.len(), 4, "{report:#?}");
    for (who, why) in [
        (
            &permanent,
            "a permanent assignment the broker did not make (standing access)",
        ),
        (&activated, "activated by the principal"),
        (&through_group, "through a group"),
        (&standing_reader, "permanent assignment"),
    ] {
        assert!(
            report
                .unexplained
                .iter()
                .any(|u| u.contains(who.as_str()) && u.contains(why)),
            "{why}: {report:#?}"
        );
    }
    assert!(
        report
            .unexplained
            .iter()
            .any(|u| u.starts_with("Reader at management group mg-platform")),
        "{report:#?}"
    );
    assert_eq!(report.missing.len(), 1, "{report:#?}");
    assert!(
        report.missing[0].contains(&grants[1].request_id.to_string())
            && report.missing[0].contains(&missing)
    );
    let remaining: Vec<String> = env
        .arm
        .assignments()
        .into_iter()
        .map(|a| a.principal)
        .collect();
    for kept in [
        &live,
        &permanent,
        &activated,
        &through_group,
        &other_role,
        &below,
        &standing_reader,
    ] {
        assert!(remaining.contains(kept), "{kept}");
    }
    assert!(!remaining.contains(&orphan));
    let removes = env.arm.puts("AdminRemove");
    assert_eq!(removes.len(), 1);
    assert_eq!(removes[0]["principalId"], orphan);
    assert_eq!(
        removes[0]["justification"],
        "jit reconciliation: no live grant explains this assignment"
    );
    // One listing per managed scope (paged), with atScope().
    let lists: Vec<_> = env
        .arm
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/roleAssignmentScheduleInstances"))
        .collect();
    assert!(lists.iter().all(|l| {
        l.query
            .contains(&("$filter".to_owned(), "atScope()".to_owned()))
    }));
    let scopes: std::collections::HashSet<&str> = lists
        .iter()
        .map(|l| {
            l.path
                .split("/providers/Microsoft.Authorization/")
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(scopes.len(), 3, "{scopes:?}");
    env.arm.assert_no_violations();
    // ARM's failing listing fails the pass, with its reason.
    env.arm.inject(Fault::graph(
        Method::GET,
        "roleAssignmentScheduleInstances",
        403,
        "AuthorizationFailed",
        "no read",
        1,
    ));
    let e = env.provider.reconcile(&managed, &grants).await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with("arm: AuthorizationFailed: no read"),
        "{e}"
    );
}

#[tokio::test]
async fn the_token_is_cached_until_shortly_before_expiry() {
    let clock = ManualClock::new();
    let env = env_with(fast(), Arc::new(clock.clone())).await;
    env.graph.set_token_lifetime(900);
    let g = grantee(Some(&oid()));
    let ent = env.catalog.get("mg-reader").unwrap();
    let end = || OffsetDateTime::now_utc() + minutes(600);
    env.provider
        .grant(&spec(&g, ent, end(), None, false))
        .await
        .unwrap();
    env.provider
        .grant(&spec(&g, ent, end(), None, true))
        .await
        .unwrap();
    assert_eq!(env.graph.login().token_requests().len(), 1, "cached");
    // Five minutes before it expires, a new one.
    clock.advance(minutes(9));
    env.provider
        .grant(&spec(&g, ent, end(), None, true))
        .await
        .unwrap();
    assert_eq!(env.graph.login().token_requests().len(), 1, "still good");
    clock.advance(minutes(1));
    env.provider
        .grant(&spec(&g, ent, end(), None, true))
        .await
        .unwrap();
    let tokens = env.graph.login().token_requests();
    assert_eq!(tokens.len(), 2, "renewed");
    assert!(tokens.iter().all(|t| t["scope"] == ARM_SCOPES[0]));
    env.arm.assert_no_violations();
}
