//! A scriptable reverse proxy in front of a real peer (moto): passes
//! requests through, records them, and injects faults on demand
//! ("the next 2 `CreateAccountAssignment` answer 400 `ConflictException`",
//! "`DescribeAccountAssignmentCreationStatus` says `IN_PROGRESS` 3 times",
//! "`AssumeRole` hangs past the client's timeout").
//!
//! Operations are named by the `X-Amz-Target` suffix (JSON protocols) or the
//! `Action` form field (Query protocols: STS, IAM).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

/// What to do instead of (or on top of) passing a request through.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this, without asking the peer.
    Respond {
        /// HTTP status.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// Body.
        body: String,
    },
    /// Wait this long, then answer 504 without asking the peer (the client
    /// should have given up long before).
    Hang(Duration),
    /// Pass through, then wait this long before answering (a slow answer:
    /// the peer has read or written already).
    Delay(Duration),
    /// Pass through, then set `Status` (and `FailureReason`) in the JSON
    /// answer's status object (`AccountAssignmentCreationStatus`…).
    SetStatus {
        /// `IN_PROGRESS`, `FAILED`, `SUCCEEDED`.
        status: String,
        /// Failure text, for `FAILED`.
        failure_reason: Option<String>,
    },
}

impl Fault {
    /// A JSON-protocol (sso-admin, identitystore) error.
    pub fn json_error(status: u16, code: &str, message: &str) -> Self {
        Self::Respond {
            status,
            headers: vec![
                ("content-type".into(), "application/x-amz-json-1.1".into()),
                ("x-amzn-errortype".into(), code.into()),
            ],
            body: serde_json::json!({ "__type": code, "message": message }).to_string(),
        }
    }

    /// A Query-protocol (STS, IAM) error.
    pub fn query_error(status: u16, code: &str, message: &str) -> Self {
        Self::Respond {
            status,
            headers: vec![("content-type".into(), "text/xml".into())],
            body: format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>\
                 <Message>{message}</Message></Error><RequestId>x</RequestId></ErrorResponse>"
            ),
        }
    }

    /// `IN_PROGRESS` in place of the real status.
    pub fn in_progress() -> Self {
        Self::SetStatus {
            status: "IN_PROGRESS".into(),
            failure_reason: None,
        }
    }

    /// `FAILED` with a reason in place of the real status.
    pub fn failed(reason: &str) -> Self {
        Self::SetStatus {
            status: "FAILED".into(),
            failure_reason: Some(reason.into()),
        }
    }
}

/// One request that went through the proxy.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Operation name.
    pub operation: String,
    /// Method and path with query (`GET /api/v1/requests/…?wait=active`).
    pub target: String,
    /// Request body as text.
    pub body: String,
    /// Whether a fault was applied.
    pub faulted: bool,
    /// The `Authorization` header (`SigV4` credential scope and signature).
    pub authorization: Option<String>,
}

impl Recorded {
    /// Form fields of a Query-protocol body.
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.body.as_bytes())
            .into_owned()
            .collect()
    }

    /// One form field.
    pub fn field(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

struct Rule {
    operation: String,
    remaining: usize,
    fault: Fault,
}

struct Inner {
    upstream: String,
    client: reqwest::Client,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Recorded>>,
    /// (what the client says, what the peer says), replaced both ways.
    rewrites: Mutex<Vec<(String, String)>>,
}

/// The running proxy; stops when dropped.
pub struct FaultProxy {
    /// Base URL to point clients at.
    pub url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `upstream`.
    pub async fn start(upstream: &str) -> Self {
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            rewrites: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, inner, task }
    }

    /// The next `times` requests for `operation` get `fault`. Rules for the
    /// same operation apply in the order they were added.
    pub fn script(&self, operation: &str, times: usize, fault: Fault) {
        self.inner.rules.lock().unwrap().push(Rule {
            operation: operation.to_owned(),
            remaining: times,
            fault,
        });
    }

    /// Replaces `client` by `peer` in the bodies passed through, and back in
    /// the answers (for what the peer spells differently: moto names
    /// permission sets `arn:aws:sso:::instance/…/ps-…`, AWS
    /// `arn:aws:sso:::permissionSet/…/ps-…`). What was recorded is what the
    /// client sent.
    pub fn rewrite(&self, client: &str, peer: &str) {
        self.inner
            .rewrites
            .lock()
            .unwrap()
            .push((client.to_owned(), peer.to_owned()));
    }

    /// Every request for `operation` so far.
    pub fn requests(&self, operation: &str) -> Vec<Recorded> {
        self.inner
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.operation == operation)
            .cloned()
            .collect()
    }

    /// How many requests for `operation` came in.
    pub fn count(&self, operation: &str) -> usize {
        self.requests(operation).len()
    }

    /// Every request so far.
    pub fn all(&self) -> Vec<Recorded> {
        self.inner.log.lock().unwrap().clone()
    }
}

fn operation(headers: &HeaderMap, body: &[u8]) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.rsplit('.').next().unwrap_or(target).to_owned();
    }
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn handle(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let op = operation(&parts.headers, &body);
    let fault = {
        let mut rules = inner.rules.lock().unwrap();
        let fault = rules
            .iter_mut()
            .find(|r| r.operation == op && r.remaining > 0)
            .map(|r| {
                r.remaining -= 1;
                r.fault.clone()
            });
        rules.retain(|r| r.remaining > 0);
        fault
    };
    inner.log.lock().unwrap().push(Recorded {
        operation: op,
        target: format!("{} {}", parts.method, parts.uri),
        body: String::from_utf8_lossy(&body).into_owned(),
        faulted: fault.is_some(),
        authorization: parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    match fault {
        Some(Fault::Respond {
            status,
            headers,
            body,
        }) => {
            let mut response = Response::builder().status(status);
            for (k, v) in headers {
                response = response.header(k, v);
            }
            response.body(Body::from(body)).unwrap()
        }
        Some(Fault::Hang(wait)) => {
            tokio::time::sleep(wait).await;
            Response::builder()
                .status(StatusCode::GATEWAY_TIMEOUT)
                .body(Body::empty())
                .unwrap()
        }
        Some(Fault::Delay(wait)) => {
            let (code, headers, upstream) = forward(&inner, &parts, body).await;
            tokio::time::sleep(wait).await;
            respond(code, &headers, upstream)
        }
        Some(Fault::SetStatus {
            status,
            failure_reason,
        }) => {
            let (code, headers, upstream) = forward(&inner, &parts, body).await;
            let mut json: serde_json::Value = serde_json::from_slice(&upstream).unwrap();
            if let Some(map) = json.as_object_mut() {
                for value in map.values_mut() {
                    if let Some(obj) = value.as_object_mut().filter(|o| o.contains_key("Status")) {
                        obj.insert("Status".into(), status.clone().into());
                        if let Some(reason) = &failure_reason {
                            obj.insert("FailureReason".into(), reason.clone().into());
                        }
                    }
                }
            }
            respond(code, &headers, Bytes::from(json.to_string()))
        }
        None => {
            let (code, headers, upstream) = forward(&inner, &parts, body).await;
            respond(code, &headers, upstream)
        }
    }
}

async fn forward(
    inner: &Inner,
    parts: &axum::http::request::Parts,
    body: Bytes,
) -> (u16, HeaderMap, Bytes) {
    let rewrites = inner.rewrites.lock().unwrap().clone();
    let swap = |bytes: &[u8], to_peer: bool| -> Bytes {
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        for (client, peer) in &rewrites {
            text = if to_peer {
                text.replace(client.as_str(), peer)
            } else {
                text.replace(peer.as_str(), client)
            };
        }
        Bytes::from(text)
    };
    let body = if rewrites.is_empty() {
        body
    } else {
        swap(&body, true)
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", axum::http::uri::PathAndQuery::as_str);
    let mut request = inner
        .client
        .request(parts.method.clone(), format!("{}{path}", inner.upstream))
        .body(body);
    for (k, v) in &parts.headers {
        if !matches!(k.as_str(), "host" | "content-length" | "connection") {
            request = request.header(k, v);
        }
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let bytes = if rewrites.is_empty() {
        bytes
    } else {
        swap(&bytes, false)
    };
    (status, headers, bytes)
}

fn respond(status: u16, headers: &HeaderMap, body: Bytes) -> Response {
    let mut response = Response::builder().status(status);
    for (k, v) in headers {
        if !matches!(
            k.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            response = response.header(k, v.clone());
        }
    }
    response.body(Body::from(body)).unwrap()
}
