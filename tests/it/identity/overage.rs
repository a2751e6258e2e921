//! Bearer tokens from the device flow, and group overage through a responder with the Microsoft
//! Graph `transitiveMemberOf` shape.

use super::browser::*;
use super::*;

#[tokio::test]
async fn device_flow_access_token_is_accepted() {
    init();
    let (identity, _) = fixture_identity(Arc::new(SystemClock), None).await;
    let cli = identity.cli_config().unwrap();
    let tokens = device_tokens("carol", &cli.scopes.join(" "), None).await;
    let token = access_token(&tokens);
    assert_eq!(payload_of(&token)["scope"], "access");
    let user = identity
        .bearer
        .validate(&token)
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason()));
    assert_eq!(user.key, format!("{TENANT}/{}", oid_for("carol")));
    assert_eq!(user.name, "Carol Auditor");
    assert_eq!(user.email, "carol@example.com");
    assert_eq!(user.groups, ["grp-jit-auditors"]);
    assert_eq!(user.roles, ["jit.auditor"]);
    // validating again is served from the key cache
    assert_eq!(identity.bearer.validate(&token).await.unwrap(), user);
}

// ---------------------------------------------------------------------------------------------
// Group overage: a responder with the Microsoft Graph `transitiveMemberOf` shape.

#[derive(Default)]
struct GraphState {
    base: Mutex<String>,
    requests: AtomicUsize,
    groups: HashMap<String, Vec<String>>,
}

async fn graph_member_of(
    State(state): State<Arc<GraphState>>,
    axum::extract::Path(oid): axum::extract::Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> axum::response::Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer graph-test-token")
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": "InvalidAuthenticationToken", "message": "no token"}})),
        )
            .into_response();
    }
    assert_eq!(
        query.get("$select").map(String::as_str),
        Some("id,displayName")
    );
    let Some(groups) = state.groups.get(&oid) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "Request_ResourceNotFound", "message": "no such user"}})),
        )
            .into_response();
    };
    // two pages: the first with an @odata.nextLink carrying a $skiptoken
    let second = query.contains_key("$skiptoken");
    let (page, next) = if second {
        (&groups[2..], None)
    } else {
        let base = state.base.lock().unwrap().clone();
        let next = format!(
            "{base}/v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group?$select=id,displayName&$skiptoken=p2"
        );
        (&groups[..2], Some(next))
    };
    let mut body = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#groups(id,displayName)",
        "value": page.iter().map(|id| json!({
            "@odata.type": "#microsoft.graph.group", "id": id, "displayName": format!("name of {id}")
        })).collect::<Vec<_>>(),
    });
    if let Some(next) = next {
        body["@odata.nextLink"] = json!(next);
    }
    Json(body).into_response()
}

/// What the Graph helper does, reduced: `transitiveMemberOf/microsoft.graph.group`, following
/// `@odata.nextLink`.
struct GraphGroups {
    base: String,
    http: reqwest::Client,
}

#[async_trait::async_trait]
impl GroupResolver for GraphGroups {
    async fn user_groups(&self, oid: &str) -> Result<Vec<String>, GroupLookupError> {
        let mut url = format!(
            "{}/users/{oid}/transitiveMemberOf/microsoft.graph.group?$select=id,displayName&$top=999",
            self.base
        );
        let mut groups = Vec::new();
        loop {
            let response = self
                .http
                .get(&url)
                .bearer_auth("graph-test-token")
                .header("ConsistencyLevel", "eventual")
                .send()
                .await
                .map_err(|e| GroupLookupError(e.to_string()))?;
            if !response.status().is_success() {
                return Err(GroupLookupError(format!(
                    "graph answered {}",
                    response.status()
                )));
            }
            let page: Value = response
                .json()
                .await
                .map_err(|e| GroupLookupError(e.to_string()))?;
            for item in page["value"].as_array().into_iter().flatten() {
                if item["@odata.type"] == "#microsoft.graph.group" {
                    groups.push(item["id"].as_str().unwrap_or_default().to_owned());
                }
            }
            match page["@odata.nextLink"].as_str() {
                Some(next) => next.clone_into(&mut url),
                None => return Ok(groups),
            }
        }
    }
}

#[tokio::test]
async fn group_overage_is_resolved_through_graph() {
    init();
    let olga_groups: Vec<String> = ["grp-big-1", "grp-big-2", "grp-prod-admins"]
        .map(str::to_owned)
        .to_vec();
    let graph = Arc::new(GraphState {
        groups: HashMap::from([(oid_for("olga"), olga_groups.clone())]),
        ..GraphState::default()
    });
    let base = serve(
        Router::new()
            .route(
                "/v1.0/users/{oid}/transitiveMemberOf/microsoft.graph.group",
                get(graph_member_of),
            )
            .with_state(Arc::clone(&graph)),
    )
    .await;
    *graph.base.lock().unwrap() = base.clone();
    let resolver: Arc<dyn GroupResolver> = Arc::new(GraphGroups {
        base: format!("{base}/v1.0"),
        http: reqwest::Client::new(),
    });
    let (identity, redirect) = fixture_identity(Arc::new(SystemClock), Some(resolver)).await;

    let (url, state) = identity.oidc.begin("/", None);
    let walk = Browser::new().sign_in(&url, &redirect, "olga").await;
    let (code, returned) = callback(&walk.end);
    let sign_in = identity
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason()));
    assert!(
        payload_of(&sign_in.id_token.expose())
            .get("groups")
            .is_none()
    );
    assert_eq!(sign_in.user.groups, olga_groups);
    assert_eq!(graph.requests.load(Ordering::SeqCst), 2, "two pages");

    // the CLI's bearer token has the overage marker too; the cached groups answer
    let tokens = device_tokens("olga", "openid profile access", None).await;
    let token = access_token(&tokens);
    assert!(payload_of(&token)["_claim_names"]["groups"].is_string());
    let user = identity.bearer.validate(&token).await.unwrap();
    assert_eq!(user.groups, olga_groups);
    assert_eq!(
        graph.requests.load(Ordering::SeqCst),
        2,
        "served from the cache"
    );

    // users without overage never reach Graph
    let tokens = device_tokens("bob", "openid access", None).await;
    assert_eq!(
        identity
            .bearer
            .validate(&access_token(&tokens))
            .await
            .unwrap()
            .groups,
        ["grp-jit-approvers"]
    );
    assert_eq!(graph.requests.load(Ordering::SeqCst), 2);

    // without a resolver an overage user cannot sign in (fail closed, 503)
    let (no_graph, redirect) = fixture_identity(Arc::new(SystemClock), None).await;
    let (url, state) = no_graph.oidc.begin("/", None);
    let walk = Browser::new().sign_in(&url, &redirect, "olga").await;
    let (code, returned) = callback(&walk.end);
    let e = no_graph
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), AuthErrorKind::Unavailable);
    assert_eq!(e.status(), 503);
    let e = no_graph.bearer.validate(&token).await.unwrap_err();
    assert_eq!(e.kind(), AuthErrorKind::Unavailable);
}
