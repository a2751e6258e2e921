//! A fake of Microsoft Graph and its token endpoint, for tests. It is a fake, not
//! an emulator: Microsoft ships no emulator, so this implements only the calls the
//! broker makes, with the request and response shapes of Microsoft's documentation
//! (client-credentials token endpoint, PIM `roleAssignmentScheduleRequests` and
//! `…ScheduleInstances`, PIM for Groups `assignmentScheduleRequests` and
//! `assignmentScheduleInstances`, `transitiveMemberOf` with paging).
//!
//! It is strict on purpose: every request body is checked field by field (required
//! fields, allowed values, ISO 8601 durations, GUIDs, no unknown properties), every
//! Graph call must carry a bearer token its own token endpoint issued (else 401),
//! and a violation is answered with 400 and a Graph error body *and* recorded, so a
//! test can assert that none happened. Every request is recorded (method, path,
//! query, body). Tests script it: 429 with `Retry-After`, 503, any Graph error code,
//! requests that stay `PendingProvisioning`, PIM policy rules, and its own clock
//! (PIM's five-minute removal floor, schedule expiry).

#![expect(
    clippy::too_many_lines,
    reason = "a test harness: failures panic loudly; request checks read top to bottom"
)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jit_server::config::{EntraConfig, Secret};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// The scope the broker must ask for.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// `aud` of the tokens issued for [`GRAPH_SCOPE`] (Graph accepts this one).
pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
/// The Azure Resource Manager scopes the login endpoint also serves (the ARM fake's tokens).
pub const ARM_SCOPES: [&str; 2] = [
    "https://management.azure.com/.default",
    "https://management.core.windows.net//.default",
];
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const ROLE_REQUESTS: &str = "/v1.0/roleManagement/directory/roleAssignmentScheduleRequests";
const ROLE_INSTANCES: &str = "/v1.0/roleManagement/directory/roleAssignmentScheduleInstances";
const GROUP_REQUESTS: &str =
    "/v1.0/identityGovernance/privilegedAccess/group/assignmentScheduleRequests";
const GROUP_INSTANCES: &str =
    "/v1.0/identityGovernance/privilegedAccess/group/assignmentScheduleInstances";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Decoded query pairs.
    pub query: Vec<(String, String)>,
    /// JSON body, or the form fields as a JSON object; `Null` when empty.
    pub body: Value,
    /// Headers, lowercase names.
    pub headers: HashMap<String, String>,
}

impl Recorded {
    /// A request as received.
    pub(crate) fn new(
        method: &Method,
        path: &str,
        query: &[(String, String)],
        body: &Value,
        headers: &HeaderMap,
    ) -> Self {
        Self {
            method: method.to_string(),
            path: path.to_owned(),
            query: query.to_vec(),
            body: body.clone(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
        }
    }
}

/// A scripted failure, answered instead of the real handling.
#[derive(Debug, Clone)]
pub struct Fault {
    pub(crate) method: Method,
    pub(crate) path_contains: String,
    pub(crate) status: u16,
    pub(crate) retry_after: Option<u64>,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) times: u32,
}

impl Fault {
    /// 429 `TooManyRequests`, optionally with `Retry-After` seconds.
    pub fn throttle(
        method: Method,
        path_contains: &str,
        retry_after: Option<u64>,
        times: u32,
    ) -> Self {
        Self::graph(
            method,
            path_contains,
            429,
            "TooManyRequests",
            "Too many requests.",
            times,
        )
        .retry_after(retry_after)
    }

    /// 503 `ServiceUnavailable`.
    pub fn unavailable(
        method: Method,
        path_contains: &str,
        retry_after: Option<u64>,
        times: u32,
    ) -> Self {
        Self::graph(
            method,
            path_contains,
            503,
            "ServiceUnavailable",
            "The service is temporarily unavailable.",
            times,
        )
        .retry_after(retry_after)
    }

    /// Any Graph error body.
    pub fn graph(
        method: Method,
        path_contains: &str,
        status: u16,
        code: &str,
        message: &str,
        times: u32,
    ) -> Self {
        Self {
            method,
            path_contains: path_contains.to_owned(),
            status,
            retry_after: None,
            code: code.to_owned(),
            message: message.to_owned(),
            times,
        }
    }

    /// The first scripted failure for this request, used up once.
    pub(crate) fn take(faults: &mut [Self], method: &Method, path: &str) -> Option<Self> {
        let fault = faults
            .iter_mut()
            .find(|f| f.times > 0 && f.method == *method && path.contains(&f.path_contains))?;
        fault.times -= 1;
        Some(fault.clone())
    }

    pub(crate) fn retry_after(mut self, seconds: Option<u64>) -> Self {
        self.retry_after = seconds;
        self
    }
}

/// An active PIM assignment the fake holds.
#[derive(Debug, Clone)]
pub struct FakeInstance {
    /// Instance id (= `targetScheduleId` of the request that made it).
    pub id: String,
    /// `role` or `group`.
    pub kind: &'static str,
    /// `principalId`.
    pub principal: String,
    /// Role definition id or group id.
    pub object: String,
    /// Directory scope or access id.
    pub scope: String,
    /// Start.
    pub start: OffsetDateTime,
    /// End; `None` = permanent.
    pub end: Option<OffsetDateTime>,
    /// `Assigned` or `Activated`.
    pub assignment_type: String,
    /// `Direct`, `Group`, `Inherited`.
    pub member_type: String,
    /// When PIM made it (the five-minute removal floor counts from here).
    pub created: OffsetDateTime,
}

struct PendingRequest {
    object: Value,
    polls_left: u32,
    instance: Option<FakeInstance>,
}

struct FakeState {
    base: String,
    tenant: String,
    client_id: String,
    secret: String,
    certificate: Option<(String, String)>,
    token_lifetime: i64,
    /// Issued access tokens: expiry and audience (`aud`).
    tokens: HashMap<String, (OffsetDateTime, String)>,
    used_jti: HashSet<String>,
    offset: time::Duration,
    recorded: Vec<Recorded>,
    violations: Vec<String>,
    faults: Vec<Fault>,
    instances: Vec<FakeInstance>,
    requests: HashMap<String, PendingRequest>,
    pending_polls: u32,
    final_status: Option<String>,
    max_duration: Option<i64>,
    require_ticket: bool,
    min_active: time::Duration,
    user_groups: HashMap<String, Vec<(String, String)>>,
    page_size: usize,
}

impl FakeState {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.offset
    }

    fn expire(&mut self) {
        let now = self.now();
        self.instances.retain(|i| i.end.is_none_or(|e| e > now));
    }
}

/// The running fake; stops when dropped.
pub struct GraphFake {
    /// `http://127.0.0.1:PORT` (login base); Graph is under `/v1.0`.
    pub base: String,
    /// Tenant id it serves.
    pub tenant: String,
    /// The one app it knows.
    pub client_id: String,
    state: Arc<Mutex<FakeState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for GraphFake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Shared = Arc<Mutex<FakeState>>;

pub(crate) mod checks;
mod pim;
mod selftest;
mod token;

use pim::{cancel, create, get_request, list_instances, member_of};
use token::token;

fn lock(state: &Shared) -> MutexGuard<'_, FakeState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl GraphFake {
    /// Starts a fake on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let tenant = uuid::Uuid::new_v4().to_string();
        let client_id = uuid::Uuid::new_v4().to_string();
        let state = Arc::new(Mutex::new(FakeState {
            base: base.clone(),
            tenant: tenant.clone(),
            client_id: client_id.clone(),
            secret: format!("fake-secret-{}", uuid::Uuid::new_v4().simple()),
            certificate: None,
            token_lifetime: 3599,
            tokens: HashMap::new(),
            used_jti: HashSet::new(),
            offset: time::Duration::ZERO,
            recorded: Vec::new(),
            violations: Vec::new(),
            faults: Vec::new(),
            instances: Vec::new(),
            requests: HashMap::new(),
            pending_polls: 0,
            final_status: None,
            max_duration: None,
            require_ticket: false,
            min_active: time::Duration::minutes(5),
            user_groups: HashMap::new(),
            page_size: 100,
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base,
            tenant,
            client_id,
            state,
            server,
        }
    }

    /// `[entra]` for the broker with the client secret.
    pub fn config(&self) -> EntraConfig {
        EntraConfig {
            tenant_id: self.tenant.clone(),
            client_id: self.client_id.clone(),
            client_secret: Some(Secret::new(lock(&self.state).secret.clone())),
            certificate_key: None,
            certificate: None,
            graph_url: format!("{}/v1.0", self.base),
            login_url: self.base.clone(),
        }
    }

    /// The client secret the token endpoint accepts now.
    pub fn secret(&self) -> String {
        lock(&self.state).secret.clone()
    }

    /// Rotates the client secret: from now on only the new one (returned) is accepted.
    pub fn rotate_secret(&self) -> String {
        let new = format!("fake-secret-{}", uuid::Uuid::new_v4().simple());
        lock(&self.state).secret.clone_from(&new);
        new
    }

    /// Accepts `private_key_jwt` assertions signed by the key of this certificate.
    pub fn trust_certificate(&self, public_key_pem: &str, certificate_der: &[u8]) {
        let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(certificate_der));
        lock(&self.state).certificate = Some((public_key_pem.to_owned(), thumbprint));
    }

    /// The login endpoint and clock, for the ARM fake.
    pub fn login(&self) -> Login {
        Login {
            state: self.state.clone(),
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).recorded.clone()
    }

    /// Requests whose path contains `part`, with `method`.
    pub fn requests_to(&self, method: &str, part: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.contains(part))
            .collect()
    }

    /// Number of token requests.
    pub fn token_requests(&self) -> usize {
        self.requests_to("POST", "/oauth2/v2.0/token").len()
    }

    /// Checks the broker broke no documented rule.
    pub fn assert_no_violations(&self) {
        let v = lock(&self.state).violations.clone();
        assert!(v.is_empty(), "the fake saw invalid requests: {v:#?}");
    }

    /// Rule violations seen.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }

    /// Scripts a failure.
    pub fn inject(&self, fault: Fault) {
        lock(&self.state).faults.push(fault);
    }

    /// Moves the fake's clock.
    pub fn advance(&self, by: time::Duration) {
        lock(&self.state).offset += by;
    }

    /// The fake's now.
    pub fn now(&self) -> OffsetDateTime {
        lock(&self.state).now()
    }

    /// Lifetime of the tokens it issues.
    pub fn set_token_lifetime(&self, seconds: i64) {
        lock(&self.state).token_lifetime = seconds;
    }

    /// New requests stay `PendingProvisioning` for `polls` GETs.
    pub fn set_pending_polls(&self, polls: u32) {
        lock(&self.state).pending_polls = polls;
    }

    /// New requests end in this status (`Failed`, `Denied`, `PendingApproval`).
    pub fn set_final_status(&self, status: Option<&str>) {
        lock(&self.state).final_status = status.map(str::to_owned);
    }

    /// PIM policy: longest assignment (`ExpirationRule`).
    pub fn set_max_duration(&self, seconds: Option<i64>) {
        lock(&self.state).max_duration = seconds;
    }

    /// PIM policy: ticket required (`TicketingRule`).
    pub fn set_require_ticket(&self, on: bool) {
        lock(&self.state).require_ticket = on;
    }

    /// Items per page of every listing.
    pub fn set_page_size(&self, size: usize) {
        lock(&self.state).page_size = size.max(1);
    }

    /// Groups `oid` is a transitive member of: `(id, displayName)`.
    pub fn set_user_groups(&self, oid: &str, groups: Vec<(String, String)>) {
        lock(&self.state).user_groups.insert(oid.to_owned(), groups);
    }

    /// Active instances now.
    pub fn instances(&self) -> Vec<FakeInstance> {
        let mut s = lock(&self.state);
        s.expire();
        s.instances.clone()
    }

    /// Adds an assignment made outside the broker, an hour old.
    pub fn seed_instance(&self, mut instance: FakeInstance) -> String {
        let mut s = lock(&self.state);
        let now = s.now();
        if instance.id.is_empty() {
            instance.id = instance_id(instance.kind, &instance.object, &instance.scope);
        }
        instance.created = now - time::Duration::hours(1);
        instance.start = now - time::Duration::hours(1);
        let id = instance.id.clone();
        s.instances.push(instance);
        id
    }
}

/// A role instance to seed.
pub fn role_instance(
    principal: &str,
    role: &str,
    end: Option<OffsetDateTime>,
    assignment_type: &str,
    member_type: &str,
) -> FakeInstance {
    FakeInstance {
        id: String::new(),
        kind: "role",
        principal: principal.to_owned(),
        object: role.to_owned(),
        scope: "/".to_owned(),
        start: OffsetDateTime::now_utc(),
        end,
        assignment_type: assignment_type.to_owned(),
        member_type: member_type.to_owned(),
        created: OffsetDateTime::now_utc(),
    }
}

/// A group instance to seed.
pub fn group_instance(
    principal: &str,
    group: &str,
    access: &str,
    end: Option<OffsetDateTime>,
) -> FakeInstance {
    FakeInstance {
        id: String::new(),
        kind: "group",
        principal: principal.to_owned(),
        object: group.to_owned(),
        scope: access.to_owned(),
        start: OffsetDateTime::now_utc(),
        end,
        assignment_type: "Assigned".to_owned(),
        member_type: "Direct".to_owned(),
        created: OffsetDateTime::now_utc(),
    }
}

fn instance_id(kind: &str, object: &str, access: &str) -> String {
    let guid = uuid::Uuid::new_v4();
    if kind == "group" {
        format!("{object}_{access}_{guid}")
    } else {
        format!("{}-1", URL_SAFE_NO_PAD.encode(guid.as_bytes()))
    }
}

// ---------------------------------------------------------------------------
// Responses

fn graph_error(status: u16, code: &str, message: &str) -> Response {
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": fmt_time(OffsetDateTime::now_utc()),
                "request-id": uuid::Uuid::new_v4().to_string(),
                "client-request-id": uuid::Uuid::new_v4().to_string(),
            }
        }
    });
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn token_error(status: u16, error: &str, aadsts: u32, description: &str) -> Response {
    let trace = uuid::Uuid::new_v4();
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{aadsts}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {trace}\r\nTimestamp: {}", fmt_time(OffsetDateTime::now_utc())),
        "error_codes": [aadsts],
        "timestamp": fmt_time(OffsetDateTime::now_utc()),
        "trace_id": trace.to_string(),
        "correlation_id": trace.to_string(),
        "error_uri": format!("https://login.microsoftonline.com/error?code={aadsts}"),
    });
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

/// Graph's timestamp style: seven fractional digits.
pub(crate) fn fmt_time(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 100
    )
}

// ---------------------------------------------------------------------------
// Dispatch

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let parsed = if body.is_empty() {
        Value::Null
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        Value::Object(
            url::form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect(),
        )
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    let mut s = lock(&state);
    s.recorded
        .push(Recorded::new(&method, &path, &query, &parsed, &headers));
    if let Some(fault) = Fault::take(&mut s.faults, &method, &path) {
        let mut response = graph_error(fault.status, &fault.code, &fault.message);
        if let Some(seconds) = fault.retry_after {
            response
                .headers_mut()
                .insert("retry-after", seconds.to_string().parse().unwrap());
        }
        return response;
    }
    let token_path = format!("/{}/oauth2/v2.0/token", s.tenant);
    if method == Method::POST && path.ends_with("/oauth2/v2.0/token") {
        if path != token_path {
            return token_error(400, "invalid_request", 90002, "Tenant not found.");
        }
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            return violation(
                &mut s,
                400,
                "token request is not application/x-www-form-urlencoded".into(),
            );
        }
        return token(&mut s, &parsed);
    }
    if !path.starts_with("/v1.0/") {
        return graph_error(
            404,
            "Request_ResourceNotFound",
            &format!("no route `{path}`"),
        );
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bearer.is_empty() {
        return graph_error(401, "InvalidAuthenticationToken", "Access token is empty.");
    }
    let now = s.now();
    match s.tokens.get(bearer).cloned() {
        Some((expires, audience)) if expires > now && audience == GRAPH_AUDIENCE => {}
        Some((expires, audience)) if expires > now => {
            return violation_with(
                &mut s,
                401,
                "InvalidAuthenticationToken",
                format!("Access token validation failure. Invalid audience `{audience}`."),
            );
        }
        Some(_) => {
            return graph_error(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            );
        }
        None => {
            return graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            );
        }
    }
    if method == Method::POST && !content_type.starts_with("application/json") {
        return violation(
            &mut s,
            415,
            format!("`{path}`: content type `{content_type}` is not application/json"),
        );
    }
    s.expire();
    let route = |base: &str| path.strip_prefix(base).map(str::to_owned);
    match method {
        Method::POST if path == ROLE_REQUESTS => create(&mut s, "role", &parsed),
        Method::POST if path == GROUP_REQUESTS => create(&mut s, "group", &parsed),
        Method::GET if path == ROLE_INSTANCES => list_instances(&mut s, "role", &path, &query),
        Method::GET if path == GROUP_INSTANCES => list_instances(&mut s, "group", &path, &query),
        Method::GET
            if path.starts_with("/v1.0/users/")
                && path.ends_with("/transitiveMemberOf/microsoft.graph.group") =>
        {
            member_of(&mut s, &path, &query, &headers)
        }
        _ => {
            let rest = route(&format!("{ROLE_REQUESTS}/"))
                .or_else(|| route(&format!("{GROUP_REQUESTS}/")));
            match (method, rest) {
                (Method::GET, Some(id)) if !id.contains('/') => get_request(&mut s, &id),
                (Method::POST, Some(rest)) if rest.ends_with("/cancel") => {
                    let id = rest.trim_end_matches("/cancel").to_owned();
                    cancel(&mut s, &id)
                }
                _ => graph_error(
                    400,
                    "BadRequest",
                    &format!("Resource not found for the segment in `{path}`."),
                ),
            }
        }
    }
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers build the message in place"
)]
fn violation(s: &mut FakeState, status: u16, problem: String) -> Response {
    s.violations.push(problem.clone());
    graph_error(status, "BadRequest", &problem)
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers build the message in place"
)]
fn violation_with(s: &mut FakeState, status: u16, code: &str, problem: String) -> Response {
    s.violations.push(problem.clone());
    graph_error(status, code, &problem)
}

/// The login side of the fake, as a resource server other than Graph (the
/// ARM fake) sees it: one Microsoft cloud, one clock, one token issuer.
#[derive(Clone)]
pub struct Login {
    state: Shared,
}

impl Login {
    /// The cloud's now (moved by [`GraphFake::advance`] and [`Login::advance`]).
    pub fn now(&self) -> OffsetDateTime {
        lock(&self.state).now()
    }

    /// Moves the cloud's clock.
    pub fn advance(&self, by: time::Duration) {
        lock(&self.state).offset += by;
    }

    /// Expiry and audience of an access token the login endpoint issued.
    pub fn token(&self, bearer: &str) -> Option<(OffsetDateTime, String)> {
        lock(&self.state).tokens.get(bearer).cloned()
    }

    /// Token requests so far, as `(scope, …)` form bodies.
    pub fn token_requests(&self) -> Vec<Value> {
        lock(&self.state)
            .recorded
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/oauth2/v2.0/token"))
            .map(|r| r.body.clone())
            .collect()
    }
}
