//! The fake itself can fail: it refuses what ARM refuses.

#![expect(clippy::too_many_lines, reason = "scenario tests read top to bottom")]

use reqwest::Method;
use serde_json::{Value, json};

use super::{ArmFake, CONTRIBUTOR, Policy, READER, Scope};
use crate::graph_fake::{ARM_SCOPES, GRAPH_SCOPE, GraphFake};

const SUB: &str = "38ab2ccc-3747-4567-b36b-9478f5602f0d";
const OTHER_SUB: &str = "0b1f6471-1bf0-4dda-aec3-cb9272f09590";

async fn token(graph: &GraphFake, scope: &str) -> String {
    let secret = graph.config().client_secret.unwrap().expose().to_owned();
    let r: Value = reqwest::Client::new()
        .post(format!("{}/{}/oauth2/v2.0/token", graph.base, graph.tenant))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", graph.client_id.as_str()),
            ("scope", scope),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["access_token"].as_str().unwrap().to_owned()
}

fn requests_url(arm: &ArmFake, scope: &str, name: &str) -> String {
    format!(
        "{}{scope}/providers/Microsoft.Authorization/roleAssignmentScheduleRequests/{name}?api-version=2020-10-01",
        arm.base
    )
}

fn assign(principal: &str, role: &str, duration: &str) -> Value {
    json!({ "properties": {
        "principalId": principal,
        "roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role}"),
        "requestType": "AdminAssign",
        "justification": "selftest",
        "ticketInfo": { "ticketNumber": "INC-1", "ticketSystem": "jit" },
        "scheduleInfo": { "startDateTime": "2020-01-01T00:00:00Z",
                          "expiration": { "type": "AfterDuration", "duration": duration } },
    }})
}

#[tokio::test]
async fn the_fake_rejects_what_arm_rejects() {
    let graph = GraphFake::start().await;
    let arm = ArmFake::start(graph.login()).await;
    let http = reqwest::Client::new();
    let arm_token = token(&graph, ARM_SCOPES[0]).await;
    let graph_token = token(&graph, GRAPH_SCOPE).await;
    let principal = uuid::Uuid::new_v4().to_string();
    let sub = format!("/subscriptions/{SUB}");
    let put =
        |url: String, token: &str, body: &Value| http.put(url).bearer_auth(token).json(body).send();
    let name = || uuid::Uuid::new_v4().to_string();
    let good = assign(&principal, CONTRIBUTOR, "PT1H");

    // Authentication: none, a Graph token, a forged one.
    let r = http
        .put(requests_url(&arm, &sub, &name()))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = put(requests_url(&arm, &sub, &name()), &graph_token, &good)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "InvalidAuthenticationTokenAudience"
    );
    let r = put(requests_url(&arm, &sub, &name()), "forged", &good)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Graph refuses an ARM token the same way.
    let r = http
        .get(format!(
            "{}/v1.0/users/x/transitiveMemberOf/microsoft.graph.group",
            graph.base
        ))
        .bearer_auth(&arm_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(graph.violations().len(), 1, "{:?}", graph.violations());

    // api-version: missing, another one.
    let url = requests_url(&arm, &sub, &name());
    let r = put(
        url.replace("?api-version=2020-10-01", ""),
        &arm_token,
        &good,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = put(url.replace("2020-10-01", "2022-04-01"), &arm_token, &good)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Scopes that are none of the documented forms.
    for bad in [
        "/subscriptions/not-a-guid",
        "/tenants/x",
        "/subscriptions/{SUB}/resourceGroups/bad.",
    ] {
        let r = put(
            requests_url(&arm, &bad.replace("{SUB}", SUB), &name()),
            &arm_token,
            &good,
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let bad_bodies = [
        ("unknown field", {
            let mut b = good.clone();
            b["properties"]["extra"] = json!(1);
            b
        }),
        ("not under properties", {
            let mut b = good["properties"].clone();
            b["properties"] = json!({});
            b
        }),
        ("bad duration", {
            let mut b = good.clone();
            b["properties"]["scheduleInfo"]["expiration"]["duration"] = json!("1 hour");
            b
        }),
        ("principal not a guid", {
            let mut b = good.clone();
            b["properties"]["principalId"] = json!("alice");
            b
        }),
        ("role of another subscription", {
            let mut b = good.clone();
            b["properties"]["roleDefinitionId"] = json!(format!(
                "/subscriptions/{OTHER_SUB}/providers/Microsoft.Authorization/roleDefinitions/{CONTRIBUTOR}"
            ));
            b
        }),
        ("role without guid", {
            let mut b = good.clone();
            b["properties"]["roleDefinitionId"] = json!("Contributor");
            b
        }),
        ("camel-case request type", {
            let mut b = good.clone();
            b["properties"]["requestType"] = json!("adminAssign");
            b
        }),
        ("Graph's expiration type", {
            let mut b = good.clone();
            b["properties"]["scheduleInfo"]["expiration"]["type"] = json!("afterDuration");
            b
        }),
        ("duration and end", {
            let mut b = good.clone();
            b["properties"]["scheduleInfo"]["expiration"]["endDateTime"] =
                json!("2030-01-01T01:00:00Z");
            b
        }),
        ("condition version 1.0", {
            let mut b = good.clone();
            b["properties"]["condition"] = json!("@Resource[x] StringEquals 'y'");
            b["properties"]["conditionVersion"] = json!("1.0");
            b
        }),
        ("no expiration sent", {
            let mut b = good.clone();
            b["properties"]["scheduleInfo"] = json!({ "startDateTime": "2030-01-01T00:00:00Z" });
            b
        }),
    ];
    for (what, body) in &bad_bodies {
        let r = put(requests_url(&arm, &sub, &name()), &arm_token, body)
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{what}");
        let e: Value = r.json().await.unwrap();
        assert!(
            e["error"]["code"].is_string() && e["error"]["message"].is_string(),
            "{what}: {e}"
        );
    }
    let r = put(requests_url(&arm, &sub, "not-a-guid"), &arm_token, &good)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // 3 tokens + 2 api-versions + 3 scopes + the bodies + the name.
    assert_eq!(
        arm.violations().len(),
        3 + 2 + 3 + bad_bodies.len() + 1,
        "{:#?}",
        arm.violations()
    );

    // A good request: accepted, provisioned only once read.
    let first = name();
    let r = put(requests_url(&arm, &sub, &first), &arm_token, &good)
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["properties"]["status"], "Accepted");
    assert_eq!(created["name"], first);
    assert_eq!(
        created["properties"]["expandedProperties"]["roleDefinition"]["displayName"],
        "Contributor"
    );
    assert!(arm.assignments().is_empty(), "not before it is provisioned");
    let read: Value = http
        .get(requests_url(&arm, &sub, &first))
        .bearer_auth(&arm_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["properties"]["status"], "Provisioned");
    let held = arm.assignments();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].role, CONTRIBUTOR);
    assert_eq!(
        held[0].end.unwrap() - held[0].start,
        time::Duration::hours(1)
    );

    // The same name again: 409. The same assignment under a new name: RoleAssignmentExists.
    let r = put(requests_url(&arm, &sub, &first), &arm_token, &good)
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = put(requests_url(&arm, &sub, &name()), &arm_token, &good)
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "RoleAssignmentExists"
    );
    // Removal inside five minutes is refused; later it is done.
    let mut remove = good.clone();
    remove["properties"]["requestType"] = json!("AdminRemove");
    remove["properties"]
        .as_object_mut()
        .unwrap()
        .remove("scheduleInfo");
    let r = put(requests_url(&arm, &sub, &name()), &arm_token, &remove)
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "ActiveDurationTooShort"
    );
    arm.set_pending_reads(0);
    arm.advance(time::Duration::minutes(5));
    let r = put(requests_url(&arm, &sub, &name()), &arm_token, &remove)
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.unwrap()["properties"]["status"],
        "Revoked"
    );
    assert!(arm.assignments().is_empty());
    let r = put(requests_url(&arm, &sub, &name()), &arm_token, &remove)
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "RoleAssignmentDoesNotExist"
    );

    // Policy rules, unknown roles, missing write permission, throttling: ARM's answers, no violations.
    let before = arm.violations().len();
    arm.set_policy(Policy {
        max_duration: Some(1800),
        require_ticket: true,
        ..Policy::default()
    });
    let mut no_ticket = good.clone();
    no_ticket["properties"]
        .as_object_mut()
        .unwrap()
        .remove("ticketInfo");
    let r = put(requests_url(&arm, &sub, &name()), &arm_token, &no_ticket)
        .await
        .unwrap();
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        e["error"]["code"],
        "RoleAssignmentRequestPolicyValidationFailed"
    );
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("ExpirationRule") && message.contains("TicketingRule"),
        "{message}"
    );
    arm.set_policy(Policy::default());
    let unknown = assign(&principal, "11111111-2222-3333-4444-555555555555", "PT1H");
    let r = put(requests_url(&arm, &sub, &name()), &arm_token, &unknown)
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "RoleDefinitionDoesNotExist"
    );
    let rg = Scope::ResourceGroup(SUB.to_owned(), "rg-app".to_owned());
    arm.deny_write(&rg);
    let r = put(requests_url(&arm, &rg.id(), &name()), &arm_token, &good)
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    arm.throttle(Method::PUT, "roleAssignmentScheduleRequests", 7, 1);
    let r = put(
        requests_url(&arm, &sub, &name()),
        &arm_token,
        &assign(&principal, READER, "PT1H"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(
        r.headers()["x-ms-ratelimit-remaining-subscription-writes"],
        "0"
    );
    assert_eq!(arm.violations().len(), before);
}

#[tokio::test]
async fn instances_list_by_the_documented_filters() {
    let graph = GraphFake::start().await;
    let arm = ArmFake::start(graph.login()).await;
    let http = reqwest::Client::new();
    let arm_token = token(&graph, ARM_SCOPES[1]).await;
    arm.place_subscription(SUB, "mg-platform");
    let alice = uuid::Uuid::new_v4().to_string();
    let bob = uuid::Uuid::new_v4().to_string();
    let mg = Scope::ManagementGroup("mg-platform".to_owned());
    let sub = Scope::Subscription(SUB.to_owned());
    let rg = Scope::ResourceGroup(SUB.to_owned(), "rg-app".to_owned());
    arm.seed(super::RoleAssignment::new(mg.clone(), READER, &alice, None));
    arm.seed(super::RoleAssignment::new(
        sub.clone(),
        CONTRIBUTOR,
        &bob,
        None,
    ));
    arm.seed(super::RoleAssignment::new(
        rg.clone(),
        CONTRIBUTOR,
        &alice,
        None,
    ));
    arm.set_page_size(1);
    let list = |scope: String, filter: &str| {
        let http = http.clone();
        let token = arm_token.clone();
        let mut url = url::Url::parse(&format!(
            "{}{scope}/providers/Microsoft.Authorization/roleAssignmentScheduleInstances",
            arm.base
        ))
        .unwrap();
        url.query_pairs_mut()
            .append_pair("api-version", "2020-10-01");
        if !filter.is_empty() {
            url.query_pairs_mut().append_pair("$filter", filter);
        }
        async move {
            let mut items = Vec::new();
            let mut next = Some(url.to_string());
            while let Some(u) = next.take() {
                let page: Value = http
                    .get(u)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                items.extend(
                    page["value"]
                        .as_array()
                        .unwrap_or_else(|| panic!("{page}"))
                        .iter()
                        .cloned(),
                );
                next = page["nextLink"].as_str().map(str::to_owned);
            }
            items
        }
    };
    // atScope(): at and above, not below.
    assert_eq!(list(sub.id(), "atScope()").await.len(), 2);
    // principalId: at, above and below.
    assert_eq!(
        list(sub.id(), &format!("principalId eq '{alice}'"))
            .await
            .len(),
        2
    );
    assert_eq!(list(mg.id(), "").await.len(), 3);
    let at_rg = list(rg.id(), "atScope()").await;
    assert_eq!(at_rg.len(), 3);
    assert!(
        at_rg
            .iter()
            .all(|i| i["properties"]["endDateTime"].is_null())
    );
    let r = http
        .get(format!(
            "{}{}/providers/Microsoft.Authorization/roleAssignmentScheduleInstances?api-version=2020-10-01&$filter=displayName%20eq%20%27x%27",
            arm.base,
            sub.id()
        ))
        .bearer_auth(&arm_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(arm.violations().len(), 1);
}
