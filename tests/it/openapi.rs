//! The OpenAPI document at `/api/v1/openapi.json` (SPEC §6): an OpenAPI 3.1 document that
//! lists every `/api/v1` route the router has, and tells the truth: the responses of a real
//! development-mode broker, success and error alike, have a documented status and match the
//! documented schema (checked with a JSON Schema 2020-12 validator).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::server::{Engine, TestBroker, start};

/// (method, path) of every documented operation.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// The `.route(...)` calls of a source file: (path literal, methods).
fn routes_in(source: &str) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        let call = &rest[at + ".route(".len()..];
        // The call's arguments, up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let end = call
            .char_indices()
            .find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(i)
            })
            .expect("unbalanced .route(");
        let args = &call[..end];
        let path = args
            .split('"')
            .nth(1)
            .expect("route path literal")
            .to_owned();
        let handlers = &args[args.find(',').expect("route handler")..];
        let methods = ["get", "post", "put", "patch", "delete"]
            .into_iter()
            .filter(|m| {
                handlers
                    .match_indices(&format!("{m}("))
                    .any(|(i, _)| i == 0 || !handlers.as_bytes()[i - 1].is_ascii_alphanumeric())
            })
            .map(str::to_uppercase)
            .collect::<Vec<_>>();
        assert!(!methods.is_empty(), "no method in .route({args})");
        found.push((path, methods));
        rest = &call[end..];
    }
    found
}

/// Every route under `/api/v1`, read from the HTTP sources: the routes of `api.rs` (nested at
/// `/api/v1`) and the `/api/v1/...` routes other files register (the dev token).
fn api_routes_from_source() -> BTreeSet<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let nested = path.file_name().unwrap() == "api.rs";
        for (route, methods) in routes_in(&source) {
            let full = if nested {
                format!("/api/v1{route}")
            } else if route.starts_with("/api/v1/") {
                route
            } else {
                continue;
            };
            for m in methods {
                routes.insert((m, full.clone()));
            }
        }
    }
    routes
}

#[test]
fn route_parser_reads_wrapped_and_chained_routes() {
    let src = r#"
        Router::new()
            .route("/a", get(a))
            .route("/b", post(create).get(list))
            .route(
                "/c/{id}/console-url",
                post(console_url),
            )
            .route("/target", get(target_handler))
    "#;
    assert_eq!(
        routes_in(src),
        [
            ("/a".to_owned(), vec!["GET".to_owned()]),
            ("/b".to_owned(), vec!["GET".to_owned(), "POST".to_owned()]),
            ("/c/{id}/console-url".to_owned(), vec!["POST".to_owned()]),
            ("/target".to_owned(), vec!["GET".to_owned()]),
        ]
    );
}

/// Fetches the served document without a token.
async fn fetch_doc(b: &TestBroker) -> Value {
    let res = b
        .http
        .get(format!("{}/api/v1/openapi.json", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    res.json().await.expect("the document is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_is_openapi_3_1_and_lists_every_api_route() {
    let b = start(Engine::Sqlite).await;
    let doc = fetch_doc(&b).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    // The document the broker serves in development mode is the one the code builds.
    assert_eq!(
        doc,
        serde_json::to_value(jit_server::http::openapi::spec(true)).unwrap()
    );

    // Complete: the routes in the sources and the documented operations are the same set, so
    // a new handler without `#[utoipa::path]` (or a documented path without a route) fails.
    let from_source = api_routes_from_source();
    assert!(from_source.len() >= 19, "{from_source:?}");
    assert_eq!(documented(&doc), from_source);
    // Outside development mode the dev token route answers 404 and is not documented.
    let oidc = serde_json::to_value(jit_server::http::openapi::spec(false)).unwrap();
    let mut without_dev = from_source.clone();
    assert!(without_dev.remove(&("POST".to_owned(), "/api/v1/dev/token".to_owned())));
    assert_eq!(documented(&oidc), without_dev);

    // And the router really serves each documented operation: no 405, no API fallback 404.
    for (method, path) in documented(&doc) {
        let url = format!(
            "{}{}",
            b.url,
            path.replace("{id}", &Uuid::new_v4().to_string())
        );
        let res = b
            .http
            .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_ne!(
            body["error"]["message"], "no such API endpoint",
            "{method} {path} is documented but not routed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_documents_auth_and_error_shapes() {
    let doc = serde_json::to_value(jit_server::http::openapi::spec(true)).unwrap();
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    let public: BTreeSet<&str> = [
        "/api/v1/openapi.json",
        "/api/v1/cli-config",
        "/api/v1/dev/token",
    ]
    .into();
    for (method, path) in documented(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        assert!(
            op["operationId"].is_string() && op["summary"].is_string(),
            "{method} {path}"
        );
        let responses = op["responses"].as_object().unwrap();
        if public.contains(path.as_str()) {
            assert!(op.get("security").is_none(), "{method} {path} is public");
        } else {
            assert_eq!(op["security"], json!([{ "bearer": [] }]), "{method} {path}");
            for status in ["401", "500", "503"] {
                assert!(responses.contains_key(status), "{method} {path}: {status}");
            }
        }
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path}: no success response"
        );
        // Every error response carries the `ErrorBody` shape.
        for (status, response) in responses {
            if status.starts_with('2') {
                continue;
            }
            let response = resolve(&doc, response);
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path}: {status}"
            );
        }
    }
}

#[test]
fn every_request_body_refuses_fields_it_does_not_name() {
    for dev in [true, false] {
        let doc = serde_json::to_value(jit_server::http::openapi::spec(dev)).unwrap();
        for (method, path) in documented(&doc) {
            if method != "POST" {
                continue;
            }
            // Every action documents what it takes, an empty object when nothing, and that
            // any other field is refused (400), so a client's misspelt field is no trap.
            let op = &doc["paths"][&path]["post"];
            let body = &op["requestBody"]["content"]["application/json"]["schema"];
            assert!(body.is_object(), "{method} {path}: no JSON request body");
            let schemas: Vec<&Value> = match body["oneOf"].as_array() {
                Some(any) => any.iter().filter(|s| s["type"] != "null").collect(),
                None => vec![body],
            };
            assert!(!schemas.is_empty(), "{method} {path}: {body}");
            for schema in schemas {
                let schema = resolve(&doc, schema);
                assert_eq!(
                    schema["additionalProperties"],
                    json!(false),
                    "{method} {path}: {schema}"
                );
            }
        }
    }
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => doc
            .pointer(r.strip_prefix('#').unwrap())
            .unwrap_or_else(|| panic!("dangling {r}")),
        None => v,
    }
}

/// A JSON Schema 2020-12 validator for `schema`, whose `#/components/...` refs resolve
/// against the document.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    if schema.get("$ref").is_none() && schema.get("type").is_none() && schema.get("oneOf").is_none()
    {
        // `{}` would accept anything: a documented response must say what it is.
        assert!(
            schema.as_object().is_some_and(|o| !o.is_empty()),
            "empty schema"
        );
    }
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("schema does not compile: {e}\n{schema}"))
}

/// Sends API calls and checks every answer against the document.
struct Probe<'a> {
    b: &'a TestBroker,
    doc: Value,
    /// Statuses seen, per operation id.
    seen: Mutex<BTreeMap<String, BTreeSet<u16>>>,
}

impl Probe<'_> {
    /// Sends `method path` (`path` as documented, `{id}` replaced by `id`) and checks that the
    /// status is documented for the operation and the body matches its schema.
    async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        id: Option<&str>,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let op = &self.doc["paths"][path][method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} is not documented");
        let concrete = id.map_or_else(|| path.to_owned(), |id| path.replace("{id}", id));
        let mut req = self
            .b
            .http
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{concrete}", self.b.url),
            )
            .query(query);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let what = format!("{method} {concrete} -> {status} {text}");
        let documented = op["responses"]
            .get(status.as_str())
            .unwrap_or_else(|| panic!("undocumented status: {what}"));
        let response = resolve(&self.doc, documented);
        let schema = &response["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "no JSON schema for {what}");
        assert!(
            headers[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{what}"
        );
        for name in response["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|h| h.0)
        {
            assert!(
                headers.contains_key(name.as_str()),
                "no {name} header: {what}"
            );
        }
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {what}"));
        let errors: Vec<String> = validator(&self.doc, schema)
            .iter_errors(&body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{what}\nbreaks its schema: {errors:#?}");
        self.seen
            .lock()
            .unwrap()
            .entry(op["operationId"].as_str().unwrap().to_owned())
            .or_default()
            .insert(status.as_u16());
        (status, body)
    }

    async fn get(
        &self,
        token: Option<&str>,
        path: &str,
        query: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        self.call(token, "GET", path, None, query, None).await
    }

    async fn post(
        &self,
        token: Option<&str>,
        path: &str,
        id: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(token, "POST", path, Some(id), &[], body).await
    }

    async fn create(&self, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(token, "POST", "/api/v1/requests", None, &[], Some(body))
            .await
    }

    async fn token(&self, user: &str) -> String {
        let (status, body) = self
            .call(
                None,
                "POST",
                "/api/v1/dev/token",
                None,
                &[],
                Some(json!({ "user": user })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }
}

#[expect(clippy::too_many_lines, reason = "one walk through the whole API")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_responses_match_the_documented_schemas() {
    let b = start(Engine::Sqlite).await;
    let doc = fetch_doc(&b).await;
    let p = Probe {
        b: &b,
        doc,
        seen: Mutex::new(BTreeMap::new()),
    };
    let ok = |r: &(StatusCode, Value), want: StatusCode| assert_eq!(r.0, want, "{}", r.1);
    // The validator is not lenient: a request without its required fields, or with a wrong
    // state, does not pass.
    let request = validator(&p.doc, &json!({ "$ref": "#/components/schemas/Request" }));
    assert!(!request.is_valid(&json!({ "id": Uuid::new_v4() })));
    // Request bodies document that a field they do not name is refused.
    let create = validator(
        &p.doc,
        &json!({ "$ref": "#/components/schemas/CreateRequest" }),
    );
    let body = json!({ "entitlement": "aws-sandbox", "duration": "1h", "justification": "x" });
    assert!(create.is_valid(&body));
    let mut misspelt = body;
    misspelt["tikcet"] = json!("INC-1");
    assert!(!create.is_valid(&misspelt));

    // Public operations and sign-in.
    ok(
        &p.call(None, "GET", "/api/v1/openapi.json", None, &[], None)
            .await,
        StatusCode::OK,
    );
    ok(
        &p.call(None, "GET", "/api/v1/cli-config", None, &[], None)
            .await,
        StatusCode::OK,
    );
    let alice = p.token("alice").await;
    let bob = p.token("bob").await;
    let carol = p.token("carol").await;
    let oscar = p.token("oscar").await;
    let mallory = p.token("mallory").await;
    let al = Some(alice.as_str());
    let bo = Some(bob.as_str());
    let ca = Some(carol.as_str());
    let os = Some(oscar.as_str());
    for bad in [
        json!({ "user": "zed" }),
        json!({ "name": "alice" }),
        json!([]),
    ] {
        let r = p
            .call(None, "POST", "/api/v1/dev/token", None, &[], Some(bad))
            .await;
        ok(&r, StatusCode::BAD_REQUEST);
    }

    // Who am I, what may I ask for; without or with a bad token.
    ok(
        &p.call(al, "GET", "/api/v1/me", None, &[], None).await,
        StatusCode::OK,
    );
    ok(
        &p.call(ca, "GET", "/api/v1/me", None, &[], None).await,
        StatusCode::OK,
    );
    ok(
        &p.call(None, "GET", "/api/v1/me", None, &[], None).await,
        StatusCode::UNAUTHORIZED,
    );
    ok(
        &p.call(
            Some("nonsense"),
            "GET",
            "/api/v1/entitlements",
            None,
            &[],
            None,
        )
        .await,
        StatusCode::UNAUTHORIZED,
    );
    let (_, ents) = p
        .call(al, "GET", "/api/v1/entitlements", None, &[], None)
        .await;
    assert!(ents.as_array().unwrap().len() > 2, "{ents}");

    // Requests: auto-approved sandbox, pending production admin, errors.
    let sandbox =
        json!({ "entitlement": "aws-sandbox", "duration": 3600, "justification": "fix the build" });
    let (status, r) = p.create(al, sandbox.clone()).await;
    ok(&(status, r.clone()), StatusCode::CREATED);
    let sandbox_id = r["id"].as_str().unwrap().to_owned();
    ok(&p.create(al, sandbox).await, StatusCode::CONFLICT);
    let prod = json!({ "entitlement": "aws-prod-admin", "duration": "1h", "justification": "incident", "ticket": "INC-1" });
    let (_, r) = p.create(al, prod).await;
    let prod_id = r["id"].as_str().unwrap().to_owned();
    let (_, r) = p.create(al, json!({ "entitlement": "aws-prod-readonly", "duration": "2h", "justification": "audit" })).await;
    let readonly_id = r["id"].as_str().unwrap().to_owned();
    let (_, r) = p.create(al, json!({ "entitlement": "entra-sec-ops-group", "duration": "1h", "justification": "triage" })).await;
    let group_id = r["id"].as_str().unwrap().to_owned();
    ok(
        &p.create(
            al,
            json!({ "entitlement": "nope", "duration": "1h", "justification": "x" }),
        )
        .await,
        StatusCode::NOT_FOUND,
    );
    ok(
        &p.create(
            al,
            json!({ "entitlement": "aws-sandbox", "duration": "9h", "justification": "x" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    ok(
        &p.create(al, json!({ "entitlement": "aws-sandbox" })).await,
        StatusCode::BAD_REQUEST,
    );
    // A misspelt field is refused, not dropped.
    let (status, r) = p
        .create(
            al,
            json!({ "entitlement": "aws-sandbox", "duration": "1h", "justification": "x", "tikcet": "INC-1" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    assert!(r.to_string().contains("unknown field `tikcet`"), "{r}");
    ok(
        &p.create(
            Some(mallory.as_str()),
            json!({ "entitlement": "aws-sandbox", "duration": "1h", "justification": "x" }),
        )
        .await,
        StatusCode::FORBIDDEN,
    );
    // Break-glass by the on-call engineer: granted at once, reviewed afterwards.
    let (status, r) = p.create(os, json!({ "entitlement": "aws-billing-sso", "duration": "1h", "justification": "outage", "break_glass": true })).await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    let glass_id = r["id"].as_str().unwrap().to_owned();
    b.run_jobs().await;

    // Reading.
    let list = "/api/v1/requests";
    let (_, all) = p.get(al, list, &[]).await;
    assert_eq!(all.as_array().unwrap().len(), 4, "{all}");
    let (_, some) = p
        .get(
            al,
            list,
            &[
                ("state", "active,pending"),
                ("mine", "true"),
                ("limit", "2"),
            ],
        )
        .await;
    assert_eq!(some.as_array().unwrap().len(), 2, "{some}");
    ok(&p.get(ca, list, &[("state", "")]).await, StatusCode::OK);
    ok(
        &p.get(al, list, &[("state", "bogus")]).await,
        StatusCode::BAD_REQUEST,
    );
    ok(
        &p.get(al, list, &[("limit", "99999999999999999999")]).await,
        StatusCode::BAD_REQUEST,
    );
    let show = |token, id: &str| {
        let (p, id) = (&p, id.to_owned());
        async move {
            p.call(token, "GET", "/api/v1/requests/{id}", Some(&id), &[], None)
                .await
        }
    };
    let (_, r) = show(al, &sandbox_id).await;
    assert_eq!(r["state"], "active", "{r}");
    ok(
        &show(al, &Uuid::new_v4().to_string()).await,
        StatusCode::NOT_FOUND,
    );
    ok(&show(al, "not-a-uuid").await, StatusCode::NOT_FOUND);

    // Deciding.
    let approve = "/api/v1/requests/{id}/approve";
    ok(
        &p.post(al, approve, &prod_id, None).await,
        StatusCode::FORBIDDEN,
    );
    ok(
        &p.post(
            bo,
            approve,
            &prod_id,
            Some(json!({ "comment": "bad\u{1}" })),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    ok(
        &p.post(bo, approve, &prod_id, Some(json!({ "comment": "go" })))
            .await,
        StatusCode::OK,
    );
    ok(
        &p.post(bo, approve, &prod_id, Some(Value::Null)).await,
        StatusCode::CONFLICT,
    );
    ok(
        &p.post(bo, approve, &Uuid::new_v4().to_string(), None).await,
        StatusCode::NOT_FOUND,
    );
    ok(
        &p.post(
            bo,
            "/api/v1/requests/{id}/deny",
            &readonly_id,
            Some(json!({})),
        )
        .await,
        StatusCode::OK,
    );
    let cancel = "/api/v1/requests/{id}/cancel";
    ok(
        &p.post(bo, cancel, &group_id, None).await,
        StatusCode::FORBIDDEN,
    );
    // A cancellation takes no fields: a reason sent with it is refused, not dropped, and the
    // request stays as it was.
    let (status, r) = p
        .post(
            al,
            cancel,
            &group_id,
            Some(json!({ "reason": "not needed" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `reason`, there are no fields"),
        "{r}"
    );
    let (_, r) = show(al, &group_id).await;
    assert_eq!(r["state"], "pending", "{r}");
    ok(
        &p.post(al, cancel, &group_id, Some(json!({}))).await,
        StatusCode::OK,
    );
    ok(
        &p.post(al, cancel, &group_id, None).await,
        StatusCode::CONFLICT,
    );
    let review = "/api/v1/requests/{id}/review";
    ok(
        &p.post(bo, review, &sandbox_id, None).await,
        StatusCode::BAD_REQUEST,
    );
    ok(
        &p.post(bo, review, &glass_id, Some(json!({ "comment": "seen" })))
            .await,
        StatusCode::OK,
    );
    ok(
        &p.post(bo, review, &glass_id, None).await,
        StatusCode::CONFLICT,
    );
    b.run_jobs().await;

    // Using an active AWS role grant.
    for path in [
        "/api/v1/requests/{id}/credentials",
        "/api/v1/requests/{id}/console-url",
    ] {
        ok(&p.post(al, path, &sandbox_id, None).await, StatusCode::OK);
        // No field is taken: a session length asked for is refused, not silently ignored.
        let (status, r) = p
            .post(al, path, &sandbox_id, Some(json!({ "duration": 900 })))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {r}");
        assert!(r.to_string().contains("unknown field `duration`"), "{r}");
        ok(
            &p.post(bo, path, &sandbox_id, Some(json!({}))).await,
            StatusCode::FORBIDDEN,
        );
        ok(
            &p.post(al, path, &readonly_id, None).await,
            StatusCode::CONFLICT,
        );
        ok(
            &p.post(os, path, &glass_id, None).await,
            StatusCode::BAD_REQUEST,
        );
    }
    let extend = "/api/v1/requests/{id}/extend";
    ok(
        &p.post(al, extend, &sandbox_id, Some(json!({ "by": "30m" })))
            .await,
        StatusCode::CREATED,
    );
    ok(
        &p.post(al, extend, &sandbox_id, Some(json!({ "by": "forever" })))
            .await,
        StatusCode::BAD_REQUEST,
    );
    ok(
        &p.post(bo, extend, &sandbox_id, Some(json!({ "by": 600.0 })))
            .await,
        StatusCode::FORBIDDEN,
    );
    ok(
        &p.post(al, extend, &readonly_id, Some(json!({ "by": "30m" })))
            .await,
        StatusCode::CONFLICT,
    );
    ok(
        &p.post(
            al,
            extend,
            &sandbox_id,
            Some(json!({ "by": "30m", "reason": "more" })),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    let revoke = "/api/v1/requests/{id}/revoke";
    ok(
        &p.post(bo, revoke, &prod_id, None).await,
        StatusCode::FORBIDDEN,
    );
    // A reason under a key the API does not know is refused and the grant stays: it is not
    // revoked without the reason its revoker meant to record.
    let (status, r) = p
        .post(al, revoke, &sandbox_id, Some(json!({ "reason": "done" })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{r}");
    assert!(r.to_string().contains("unknown field `reason`"), "{r}");
    let (_, r) = show(al, &sandbox_id).await;
    assert_eq!(r["state"], "active", "{r}");
    ok(
        &p.post(al, revoke, &sandbox_id, Some(json!({ "comment": "done" })))
            .await,
        StatusCode::OK,
    );
    ok(
        &p.post(al, revoke, &sandbox_id, None).await,
        StatusCode::CONFLICT,
    );

    // The audit log.
    let audit = |token, query: Vec<(&'static str, String)>| {
        let p = &p;
        async move {
            let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            p.get(token, "/api/v1/audit", &q).await
        }
    };
    ok(&audit(al, vec![]).await, StatusCode::FORBIDDEN);
    ok(
        &audit(al, vec![("request_id", prod_id.clone())]).await,
        StatusCode::OK,
    );
    ok(
        &audit(al, vec![("request_id", Uuid::new_v4().to_string())]).await,
        StatusCode::NOT_FOUND,
    );
    let (_, page) = audit(ca, vec![("limit", "3".to_owned())]).await;
    let before = page["next_before"].as_i64().expect("a next page");
    let (_, page) = audit(
        ca,
        vec![
            ("before", before.to_string()),
            ("since", "2000-01-01T00:00:00Z".to_owned()),
            ("until", "9999-12-31T23:59:59Z".to_owned()),
            ("action", "request.created".to_owned()),
        ],
    )
    .await;
    assert!(!page["events"].as_array().unwrap().is_empty(), "{page}");
    ok(
        &audit(ca, vec![("since", "yesterday".to_owned())]).await,
        StatusCode::BAD_REQUEST,
    );
    ok(
        &p.call(al, "GET", "/api/v1/audit/verify", None, &[], None)
            .await,
        StatusCode::FORBIDDEN,
    );
    let (_, report) = p
        .call(ca, "GET", "/api/v1/audit/verify", None, &[], None)
        .await;
    assert_eq!(report["ok"], true, "{report}");

    // Admin: development mode has no `[aws]`, so revoking sessions stops at 400.
    let revoke_all = |token, body| {
        p.call(
            token,
            "POST",
            "/api/v1/admin/revoke-sessions",
            None,
            &[],
            Some(body),
        )
    };
    ok(
        &revoke_all(al, json!({ "entitlement": "aws-sandbox" })).await,
        StatusCode::FORBIDDEN,
    );
    ok(
        &revoke_all(ca, json!({ "entitlement": "aws-sandbox" })).await,
        StatusCode::BAD_REQUEST,
    );
    ok(
        &revoke_all(ca, json!({ "entitlement": "nope" })).await,
        StatusCode::NOT_FOUND,
    );
    ok(
        &revoke_all(ca, json!({ "entitlement": "nope", "role": "x" })).await,
        StatusCode::BAD_REQUEST,
    );

    // Every documented operation was exercised, all but one of them successfully.
    let seen = p.seen.into_inner().unwrap();
    let ids: BTreeSet<String> = p.doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), ids);
    for (id, statuses) in &seen {
        if id != "revoke_all_sessions" {
            assert!(
                statuses.iter().any(|s| (200..300).contains(s)),
                "{id}: {statuses:?}"
            );
        }
    }
}

/// The schema's duration pattern admits only what the parser accepts, and its integer bounds
/// are the parser's: a body the document calls valid never fails on its duration's form.
#[test]
fn duration_schema_agrees_with_the_parser() {
    let doc = serde_json::to_value(jit_server::http::openapi::spec(true)).unwrap();
    let v = validator(
        &doc,
        &json!({ "$ref": "#/components/schemas/DurationInput" }),
    );
    let mut admitted = 0;
    let parts = [
        "", "0d", "1d", "365d", "366d", "0h", "1h", "23h", "24h", "0m", "1m", "59m", "60m", "0s",
        "1s", "59s", "60s",
    ];
    for d in parts.iter().filter(|p| p.is_empty() || p.ends_with('d')) {
        for h in parts.iter().filter(|p| p.is_empty() || p.ends_with('h')) {
            for m in parts.iter().filter(|p| p.is_empty() || p.ends_with('m')) {
                for s in parts.iter().filter(|p| p.is_empty() || p.ends_with('s')) {
                    let text = format!("{d}{h}{m}{s}");
                    if v.is_valid(&json!(text)) {
                        admitted += 1;
                        let secs = jit_api::parse_duration(&text)
                            .unwrap_or_else(|e| panic!("`{text}` matches the schema: {e}"));
                        assert!(secs <= jit_api::duration::MAX_SECONDS, "{text}");
                    }
                }
            }
        }
    }
    // Each of d, h, m, s absent or at either in-range end, not all absent: 3^4 - 1.
    assert_eq!(admitted, 80);
    for text in ["1", "900", "9999999", "1h30m", "2d", "365d23h59m59s"] {
        assert!(v.is_valid(&json!(text)), "{text}");
    }
    for text in ["", "0", "0s", "1h 30m", "30m1h", "1x", "10000000", "-1"] {
        assert!(!v.is_valid(&json!(text)), "{text}");
    }
    let max = jit_api::duration::MAX_SECONDS;
    assert!(v.is_valid(&json!(1)) && v.is_valid(&json!(max)) && v.is_valid(&json!(900.0)));
    assert!(!v.is_valid(&json!(0)) && !v.is_valid(&json!(max + 1)) && !v.is_valid(&json!(1.5)));
    assert!(jit_api::parse_duration(&max.to_string()).is_ok());
    assert!(jit_api::parse_duration(&(max + 1).to_string()).is_err());
}

/// The comment and justification patterns refuse exactly the characters of the Basic
/// Multilingual Plane the broker refuses between two letters: control characters but tab, line
/// feed and carriage return, bidirectional controls, format characters but the joiners.
#[test]
fn text_patterns_agree_with_the_broker_rules() {
    let doc = serde_json::to_value(jit_server::http::openapi::spec(true)).unwrap();
    let comment = validator(
        &doc,
        &doc["components"]["schemas"]["DecisionBody"]["properties"]["comment"],
    );
    let justification = validator(
        &doc,
        &doc["components"]["schemas"]["CreateRequest"]["properties"]["justification"],
    );
    for c in (0u32..0x1_0000).filter_map(char::from_u32) {
        let text = format!("a{c}b");
        let broker = jit_server::domain::check_comment(Some(&text)).is_ok();
        assert_eq!(comment.is_valid(&json!(text)), broker, "U+{:04X}", c as u32);
        let broker = jit_server::domain::check_justification(&text).is_ok();
        assert_eq!(
            justification.is_valid(&json!(text)),
            broker,
            "U+{:04X}",
            c as u32
        );
    }
    let long = "x".repeat(jit_server::domain::MAX_COMMENT);
    assert!(comment.is_valid(&json!(long)));
    assert!(!comment.is_valid(&json!(format!("{long}x"))));
    assert!(jit_server::domain::check_comment(Some(&format!("{long}x"))).is_err());
}
