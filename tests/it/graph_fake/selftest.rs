//! The fake itself can fail: it refuses what Microsoft's documentation refuses.

use serde_json::{Value, json};

use super::checks::{is_guid, iso_seconds};
use super::{GRAPH_SCOPE, GraphFake};

#[tokio::test]
async fn the_fake_rejects_what_the_docs_reject() {
    let fake = GraphFake::start().await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}/v1.0{p}", fake.base);
    // No bearer token: 401 with a Graph error body.
    let r = http.get(url("/roleManagement/directory/roleAssignmentScheduleInstances?$filter=roleDefinitionId%20eq%20%27x%27")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    // A token from somewhere else: 401.
    let r = http
        .get(url("/users/x/transitiveMemberOf/microsoft.graph.group"))
        .bearer_auth("forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A wrong secret: invalid_client.
    let token_url = format!("{}/{}/oauth2/v2.0/token", fake.base, fake.tenant);
    let r = http
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &fake.client_id),
            ("scope", GRAPH_SCOPE),
            ("client_secret", "nope"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    // The right one.
    let secret = fake.config().client_secret.unwrap().expose().to_owned();
    let r: Value = http
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", &fake.client_id),
            ("scope", GRAPH_SCOPE),
            ("client_secret", &secret),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = r["access_token"].as_str().unwrap().to_owned();
    assert_eq!(r["token_type"], "Bearer");
    let guid = || uuid::Uuid::new_v4().to_string();
    let good = json!({
        "action": "adminAssign", "principalId": guid(), "roleDefinitionId": guid(), "directoryScopeId": "/",
        "justification": "j",
        "scheduleInfo": { "startDateTime": "2030-01-01T00:00:00Z", "expiration": { "type": "afterDuration", "duration": "PT1H" } },
    });
    let bad_cases = [
        ("unknown field", {
            let mut b = good.clone();
            b["extra"] = json!(1);
            b
        }),
        ("bad duration", {
            let mut b = good.clone();
            b["scheduleInfo"]["expiration"]["duration"] = json!("1 hour");
            b
        }),
        ("bad guid", {
            let mut b = good.clone();
            b["principalId"] = json!("alice");
            b
        }),
        ("bad action", {
            let mut b = good.clone();
            b["action"] = json!("assign");
            b
        }),
        ("bad type", {
            let mut b = good.clone();
            b["scheduleInfo"]["expiration"]["type"] = json!("afterHours");
            b
        }),
        ("missing schedule", {
            let mut b = good.clone();
            b.as_object_mut().unwrap().remove("scheduleInfo");
            b
        }),
        ("duration and end", {
            let mut b = good.clone();
            b["scheduleInfo"]["expiration"]["endDateTime"] = json!("2030-01-01T01:00:00Z");
            b
        }),
        ("bad scope", {
            let mut b = good.clone();
            b["directoryScopeId"] = json!("tenant");
            b
        }),
        ("unknown ticket field", {
            let mut b = good.clone();
            b["ticketInfo"] = json!({"ticketNumber": "1", "url": "x"});
            b
        }),
    ];
    for (name, body) in &bad_cases {
        let r = http
            .post(url(
                "/roleManagement/directory/roleAssignmentScheduleRequests",
            ))
            .bearer_auth(&token)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{name}");
        let e: Value = r.json().await.unwrap();
        assert!(
            e["error"]["code"].is_string() && e["error"]["message"].is_string(),
            "{name}: {e}"
        );
    }
    assert_eq!(fake.violations().len(), bad_cases.len());
    let r = http
        .post(url(
            "/roleManagement/directory/roleAssignmentScheduleRequests",
        ))
        .bearer_auth(&token)
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["status"], "Provisioned");
    assert_eq!(
        created["scheduleInfo"]["expiration"]["type"],
        "afterDuration"
    );
    assert_eq!(fake.instances().len(), 1);
    // The same assignment again: RoleAssignmentExists.
    let r = http
        .post(url(
            "/roleManagement/directory/roleAssignmentScheduleRequests",
        ))
        .bearer_auth(&token)
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "RoleAssignmentExists"
    );
}

#[test]
fn iso_durations_are_parsed_strictly() {
    assert_eq!(iso_seconds("PT1H30M"), Some(5400.0));
    assert_eq!(iso_seconds("P1DT1S"), Some(86_401.0));
    assert_eq!(iso_seconds("PT0.5S"), Some(0.5));
    for bad in ["PT", "P", "1H", "PT1M1H", "PTH", "PT1X", "pt1h"] {
        assert_eq!(iso_seconds(bad), None, "{bad}");
    }
    assert!(is_guid("62e90394-69f5-4237-9190-012177145e10"));
    assert!(!is_guid("62e90394-69f5-4237-9190-012177145e1"));
}
