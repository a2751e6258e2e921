//! A fake of Azure Resource Manager's PIM endpoints for Azure resource roles,
//! for tests. Microsoft ships no emulator, so this implements only the calls
//! the broker makes, with the shapes of the 2020-10-01 `Microsoft.Authorization`
//! spec (`RoleAssignmentScheduleRequest.json`, `RoleAssignmentScheduleInstance.json`
//! and their examples in `Azure/azure-rest-api-specs`) and what
//! `../shared/reference/azure-pim-arm.md` collects about ARM's behaviour.
//!
//! It is one cloud with the Graph fake: tokens come from the Graph fake's login
//! endpoint (`[azure]` reuses `[entra]`'s tenant and app), the clock is the
//! Graph fake's. It enforces what ARM enforces, and records every breach as a
//! violation a test can assert never happened:
//!
//! - the path (`{scope}/providers/Microsoft.Authorization/…` with a scope of one
//!   of the documented forms) and `api-version=2020-10-01`;
//! - a bearer token whose `aud` is the ARM resource (`https://management.azure.com`
//!   or `https://management.core.windows.net`, with or without the trailing
//!   slash), else 401 `InvalidAuthenticationTokenAudience`;
//! - request bodies field by field (names, GUIDs, ISO 8601 durations, role
//!   definition ids valid at the scope, the `condition` version);
//! - a GUID request name used once (reuse: 409);
//! - PIM's rules: `RoleAssignmentExists`, `RoleAssignmentDoesNotExist`, the
//!   five-minute floor on removal (`ActiveDurationTooShort`), policy rules
//!   (`RoleAssignmentRequestPolicyValidationFailed`), `AuthorizationFailed`
//!   where the broker holds no write;
//! - eventual consistency: a request is `Accepted` until it has been read a
//!   set number of times, and only then does its effect show in the instances.
//!
//! Tests script 429 (with `Retry-After` and ARM's rate-limit header), any ARM
//! error, requests that end in another status, PIM policy and the places of
//! subscriptions in management groups.

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
use jit_server::config::AzureConfig;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::graph_fake::{Fault, Login, Recorded};

mod checks;
mod pim;
pub mod scope;
mod selftest;

pub use scope::Scope;

/// The only api-version the fake serves: the stable one of the PIM schedule resources.
pub const API_VERSION: &str = "2020-10-01";
/// Audiences ARM accepts (`aud`, compared exactly), as its
/// `InvalidAuthenticationTokenAudience` message lists them
/// (Azure-Samples/active-directory-dotnetcore-daemon-v2#145, 2022; in 2016 only
/// the two with the trailing slash, AzureAD/azure-activedirectory-library-for-python#60).
pub const ARM_AUDIENCES: [&str; 4] = [
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
    "https://management.azure.com/",
    "https://management.azure.com",
];
/// Built-in role definitions (their GUIDs are the same in every tenant).
pub const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
/// Contributor.
pub const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
/// Reader.
pub const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
/// User Access Administrator.
pub const USER_ACCESS_ADMINISTRATOR: &str = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9";
/// Key Vault Administrator.
pub const KEY_VAULT_ADMINISTRATOR: &str = "00482a5a-887f-4fb3-b363-3b7fe8e74483";

/// An active role assignment (a schedule and its one instance).
#[derive(Debug, Clone)]
pub struct RoleAssignment {
    /// Schedule GUID (`…/roleAssignmentSchedules/{id}`).
    pub schedule: String,
    /// Instance GUID.
    pub instance: String,
    /// Where.
    pub scope: Scope,
    /// Role definition GUID, lowercase.
    pub role: String,
    /// `principalId`, lowercase.
    pub principal: String,
    /// Start.
    pub start: OffsetDateTime,
    /// End; `None` = permanent.
    pub end: Option<OffsetDateTime>,
    /// `Assigned` or `Activated`.
    pub assignment_type: String,
    /// `Direct`, `Group` or `Inherited`.
    pub member_type: String,
    /// ABAC condition.
    pub condition: Option<String>,
    /// When PIM made it (the five-minute removal floor counts from here).
    pub created: OffsetDateTime,
}

impl RoleAssignment {
    /// A direct, administrator-made assignment to seed (made an hour ago).
    pub fn new(scope: Scope, role: &str, principal: &str, end: Option<OffsetDateTime>) -> Self {
        Self {
            schedule: uuid::Uuid::new_v4().to_string(),
            instance: uuid::Uuid::new_v4().to_string(),
            scope,
            role: role.to_ascii_lowercase(),
            principal: principal.to_ascii_lowercase(),
            start: OffsetDateTime::UNIX_EPOCH,
            end,
            assignment_type: "Assigned".to_owned(),
            member_type: "Direct".to_owned(),
            condition: None,
            created: OffsetDateTime::UNIX_EPOCH,
        }
    }

    /// The schedule's full id, as instances name it.
    pub fn schedule_id(&self) -> String {
        format!(
            "{}/providers/Microsoft.Authorization/roleAssignmentSchedules/{}",
            self.scope.id(),
            self.schedule
        )
    }
}

/// What a request does once provisioned.
#[derive(Debug, Clone)]
enum Effect {
    Create(Box<RoleAssignment>),
    SetEnd(String, Option<OffsetDateTime>),
    Remove(String),
}

struct StoredRequest {
    object: Value,
    /// The body it was created with (a reused name with another body is a broker bug).
    body: Value,
    reads_left: u32,
    effect: Option<Effect>,
    final_status: String,
}

/// PIM role settings for active assignments (`Expiration_Admin_Assignment`,
/// `Enablement_Admin_Assignment`), the same for every role and scope.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `maximumDuration`, seconds; `None` = no limit.
    pub max_duration: Option<i64>,
    /// `isExpirationRequired` off.
    pub permanent_allowed: bool,
    /// `Justification` in `enabledRules`.
    pub require_justification: bool,
    /// `Ticketing` in `enabledRules`.
    pub require_ticket: bool,
}

struct ArmState {
    base: String,
    broker_oid: String,
    recorded: Vec<Recorded>,
    violations: Vec<String>,
    faults: Vec<Fault>,
    requests: HashMap<String, StoredRequest>,
    assignments: Vec<RoleAssignment>,
    roles: HashMap<String, String>,
    scope_names: HashMap<String, String>,
    mg_of: HashMap<String, String>,
    pending_reads: u32,
    final_status: Option<String>,
    policy: Policy,
    min_active: time::Duration,
    no_write: HashSet<String>,
    page_size: usize,
    lost_answers: u32,
}

/// The running fake; stops when dropped.
pub struct ArmFake {
    /// `http://127.0.0.1:PORT`, the `arm_url`.
    pub base: String,
    login: Login,
    state: Arc<Mutex<ArmState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ArmFake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<ArmState>>,
    login: Login,
}

fn lock(state: &Arc<Mutex<ArmState>>) -> MutexGuard<'_, ArmState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ArmFake {
    /// Starts a fake on a free loopback port; tokens come from `login` (the Graph fake's).
    pub async fn start(login: Login) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let broker_oid = uuid::Uuid::new_v4().to_string();
        let roles = [
            (OWNER, "Owner"),
            (CONTRIBUTOR, "Contributor"),
            (READER, "Reader"),
            (USER_ACCESS_ADMINISTRATOR, "User Access Administrator"),
            (KEY_VAULT_ADMINISTRATOR, "Key Vault Administrator"),
        ]
        .into_iter()
        .map(|(id, name)| (id.to_owned(), name.to_owned()))
        .collect();
        let state = Arc::new(Mutex::new(ArmState {
            base: base.clone(),
            broker_oid,
            recorded: Vec::new(),
            violations: Vec::new(),
            faults: Vec::new(),
            requests: HashMap::new(),
            assignments: Vec::new(),
            roles,
            scope_names: HashMap::new(),
            mg_of: HashMap::new(),
            pending_reads: 1,
            final_status: None,
            policy: Policy {
                permanent_allowed: true,
                ..Policy::default()
            },
            min_active: time::Duration::minutes(5),
            no_write: HashSet::new(),
            page_size: 100,
            lost_answers: 0,
        }));
        let shared = Shared {
            state: state.clone(),
            login: login.clone(),
        };
        let app = Router::new().fallback(handle).with_state(shared);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base,
            login,
            state,
            server,
        }
    }

    /// `[azure]` for the broker: this fake, and `[entra]`'s tenant and app.
    pub fn config(&self) -> AzureConfig {
        AzureConfig {
            arm_url: self.base.clone(),
            ..AzureConfig::default()
        }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).recorded.clone()
    }

    /// `PUT` bodies' `properties` with this `requestType`.
    pub fn puts(&self, request_type: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "PUT")
            .map(|r| r.body["properties"].clone())
            .filter(|p| p["requestType"] == request_type)
            .collect()
    }

    /// Checks the broker sent nothing ARM would refuse.
    pub fn assert_no_violations(&self) {
        let v = lock(&self.state).violations.clone();
        assert!(v.is_empty(), "the ARM fake saw invalid requests: {v:#?}");
    }

    /// Rule violations seen.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }

    /// Scripts a failure (the ARM error body; 429 also gets ARM's rate-limit header).
    pub fn inject(&self, fault: Fault) {
        lock(&self.state).faults.push(fault);
    }

    /// 429 `SubscriptionRequestsThrottled` with `Retry-After: seconds` on
    /// `times` requests of `method` whose path contains `path_contains`.
    pub fn throttle(&self, method: Method, path_contains: &str, seconds: u64, times: u32) {
        self.inject(
            Fault::graph(
                method,
                path_contains,
                429,
                "SubscriptionRequestsThrottled",
                &format!(
                    "Number of 'write' requests for subscription actor exceeded. Please try again after '{seconds}' seconds after additional tokens are available."
                ),
                times,
            )
            .retry_after(Some(seconds)),
        );
    }

    /// Moves the cloud's clock (shared with the Graph fake).
    pub fn advance(&self, by: time::Duration) {
        self.login.advance(by);
    }

    /// New requests stay `Accepted` for this many reads before their effect shows.
    pub fn set_pending_reads(&self, reads: u32) {
        lock(&self.state).pending_reads = reads;
    }

    /// New requests end in this status instead (`Failed`, `Denied`, `PendingApproval`…).
    pub fn set_final_status(&self, status: Option<&str>) {
        lock(&self.state).final_status = status.map(str::to_owned);
    }

    /// PIM role settings for active assignments.
    pub fn set_policy(&self, policy: Policy) {
        lock(&self.state).policy = policy;
    }

    /// The broker holds no `roleAssignmentScheduleRequests/write` at `scope`.
    pub fn deny_write(&self, scope: &Scope) {
        lock(&self.state)
            .no_write
            .insert(scope.id().to_ascii_lowercase());
    }

    /// Display name of a scope (`expandedProperties.scope.displayName`).
    pub fn name_scope(&self, scope: &Scope, name: &str) {
        lock(&self.state)
            .scope_names
            .insert(scope.id().to_ascii_lowercase(), name.to_owned());
    }

    /// Puts a subscription in a management group.
    pub fn place_subscription(&self, subscription: &str, management_group: &str) {
        lock(&self.state).mg_of.insert(
            subscription.to_ascii_lowercase(),
            management_group.to_owned(),
        );
    }

    /// The next `times` request PUTs are carried out, but answered with 503
    /// (a front door that timed out after the work was done).
    pub fn lose_answers(&self, times: u32) {
        lock(&self.state).lost_answers = times;
    }

    /// Items per page of every listing.
    pub fn set_page_size(&self, size: usize) {
        lock(&self.state).page_size = size.max(1);
    }

    /// Active assignments now.
    pub fn assignments(&self) -> Vec<RoleAssignment> {
        let now = self.login.now();
        let mut s = lock(&self.state);
        s.expire(now);
        s.assignments.clone()
    }

    /// Adds an assignment made outside the broker, an hour old.
    pub fn seed(&self, mut assignment: RoleAssignment) -> RoleAssignment {
        let now = self.login.now();
        assignment.created = now - time::Duration::hours(1);
        assignment.start = now - time::Duration::hours(1);
        lock(&self.state).assignments.push(assignment.clone());
        assignment
    }
}

impl ArmState {
    /// PIM's schedule ends assignments at their end.
    fn expire(&mut self, now: OffsetDateTime) {
        self.assignments.retain(|a| a.end.is_none_or(|e| e > now));
    }

    fn mg_of(&self, subscription: &str) -> Option<String> {
        self.mg_of.get(&subscription.to_ascii_lowercase()).cloned()
    }

    fn expanded(&self, scope: &Scope, role: &str, principal: &str) -> Value {
        let scope_id = scope.id();
        json!({
            "scope": {
                "id": scope_id,
                "displayName": self.scope_names.get(&scope_id.to_ascii_lowercase()).cloned()
                    .unwrap_or_else(|| match scope {
                        Scope::ManagementGroup(mg) => mg.clone(),
                        Scope::Subscription(sub) => sub.clone(),
                        Scope::ResourceGroup(_, rg) => rg.clone(),
                    }),
                "type": scope.kind(),
            },
            "roleDefinition": {
                "id": scope.role_definition_id(role),
                "displayName": self.roles.get(role).cloned().unwrap_or_default(),
                "type": "BuiltInRole",
            },
            "principal": { "id": principal, "displayName": principal, "type": "User" },
        })
    }
}

// ---------------------------------------------------------------------------
// Responses

/// ARM's `CloudError` body.
pub(crate) fn arm_error(status: u16, code: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers build the message in place"
)]
fn violation(s: &mut ArmState, status: u16, code: &str, problem: String) -> Response {
    s.violations.push(problem.clone());
    arm_error(status, code, &problem)
}

// ---------------------------------------------------------------------------
// Dispatch

/// The collections of `Microsoft.Authorization` the fake serves.
const REQUESTS: &str = "roleassignmentschedulerequests";
const INSTANCES: &str = "roleassignmentscheduleinstances";
const PROVIDER: &str = "/providers/microsoft.authorization/";

async fn handle(
    State(shared): State<Shared>,
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
    let parsed = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    let now = shared.login.now();
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| (t.to_owned(), shared.login.token(t)));
    let mut s = lock(&shared.state);
    s.recorded
        .push(Recorded::new(&method, &path, &query, &parsed, &headers));
    if let Some(fault) = Fault::take(&mut s.faults, &method, &path) {
        let mut response = arm_error(fault.status, &fault.code, &fault.message);
        if let Some(seconds) = fault.retry_after {
            response
                .headers_mut()
                .insert("retry-after", seconds.to_string().parse().unwrap());
        }
        if fault.status == 429 {
            response.headers_mut().insert(
                "x-ms-ratelimit-remaining-subscription-writes",
                "0".parse().unwrap(),
            );
        }
        return response;
    }
    // Authentication first, as ARM's front door does.
    match token {
        None => {
            return violation(
                &mut s,
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.".into(),
            );
        }
        Some((_, None)) => {
            return violation(
                &mut s,
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid.".into(),
            );
        }
        Some((_, Some((_, audience)))) if !ARM_AUDIENCES.contains(&audience.as_str()) => {
            return violation(
                &mut s,
                401,
                "InvalidAuthenticationTokenAudience",
                format!(
                    "The access token has been obtained for wrong audience or resource '{audience}'. It should exactly match with one of the allowed audiences '{}'.",
                    ARM_AUDIENCES.join("','")
                ),
            );
        }
        Some((_, Some((expires, _)))) if expires <= now => {
            // Not a violation: tokens expire; the broker must renew and retry.
            return arm_error(
                401,
                "ExpiredAuthenticationToken",
                "The access token expiry UTC time is earlier than current UTC time.",
            );
        }
        Some(_) => {}
    }
    let api_versions: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "api-version")
        .map(|(_, v)| v.as_str())
        .collect();
    match api_versions.as_slice() {
        [] => {
            return violation(
                &mut s,
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests."
                    .into(),
            );
        }
        [API_VERSION] => {}
        other => {
            return violation(
                &mut s,
                400,
                "InvalidApiVersionParameter",
                format!(
                    "The api-version '{}' is invalid. The supported versions for PIM schedule requests are '{API_VERSION}'.",
                    other.join(",")
                ),
            );
        }
    }
    let lower = path.to_ascii_lowercase();
    let Some(at) = lower.rfind(PROVIDER) else {
        return violation(
            &mut s,
            404,
            "InvalidResourceType",
            format!("no `Microsoft.Authorization` resource in `{path}`"),
        );
    };
    let Some(scope) = Scope::parse(&path[..at]) else {
        return violation(
            &mut s,
            400,
            "InvalidScope",
            format!(
                "`{}` is not a management group, subscription or resource group scope",
                &path[..at]
            ),
        );
    };
    let rest: Vec<&str> = path[at + PROVIDER.len()..].split('/').collect();
    let collection = rest[0].to_ascii_lowercase();
    s.expire(now);
    match (method.clone(), collection.as_str(), &rest[1..]) {
        (Method::PUT, REQUESTS, [name]) => {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !content_type.starts_with("application/json") {
                return violation(
                    &mut s,
                    415,
                    "UnsupportedMediaType",
                    format!("content type `{content_type}` is not application/json"),
                );
            }
            let response = pim::create(&mut s, &scope, name, &parsed, now);
            if response.status() == StatusCode::CREATED && s.lost_answers > 0 {
                s.lost_answers -= 1;
                return arm_error(
                    503,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable.",
                );
            }
            response
        }
        (Method::GET, REQUESTS, [name]) => pim::get_request(&mut s, &scope, name, now),
        (Method::POST, REQUESTS, [name, cancel]) if cancel.eq_ignore_ascii_case("cancel") => {
            pim::cancel(&mut s, name)
        }
        (Method::GET, INSTANCES, []) => pim::list_instances(&mut s, &scope, &path, &query),
        _ => violation(
            &mut s,
            400,
            "BadRequest",
            format!("the fake does not serve `{method} {path}`"),
        ),
    }
}
