//! A small Microsoft Graph v1.0 client: app-only token (cached, single-flight),
//! explicit timeouts, bounded retries on 429/503/504 honouring `Retry-After`,
//! a write rate limit, `@odata.nextLink` paging and typed Graph errors.

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;
use tokio::sync::Mutex;

use super::limiter::TokenBucket;
use super::token::{CachedToken, Credential, GRAPH_SCOPE, TokenErrorBody, TokenResponse};
use crate::clock::{Clock, SystemClock};
use crate::config::EntraConfig;

/// Most pages followed for one listing (a loop guard, not a product limit).
const MAX_PAGES: usize = 1000;

/// A failed Graph or token call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GraphError {
    /// Graph answered with its error body `{"error": {"code", "message"}}`.
    #[error("graph: {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Graph's `error.code`, the value to branch on.
        code: String,
        /// Graph's `error.message`.
        message: String,
        /// `Retry-After`, when Graph sent one.
        retry_after: Option<Duration>,
    },
    /// The token endpoint refused (`invalid_client`, …).
    #[error("graph token: {error}: {description}")]
    Token {
        /// HTTP status.
        status: u16,
        /// OAuth `error`.
        error: String,
        /// First line of `error_description` (the `AADSTS…` text).
        description: String,
    },
    /// No answer: connection refused, timeout, broken body.
    #[error("graph: {0}")]
    Transport(String),
    /// An answer that is not what the documented shape says.
    #[error("graph: unexpected response: {0}")]
    Decode(String),
    /// The `[entra]` configuration cannot work.
    #[error("graph: {0}")]
    Config(String),
}

/// Graph error codes that a later retry can get past.
const TRANSIENT_CODES: &[&str] = &[
    // PIM refuses removal within five minutes of the assignment.
    "ActiveDurationTooShort",
    // Another request for the same assignment is still being processed.
    "PendingRoleAssignmentRequest",
    "Directory_ConcurrencyViolation",
    "UnknownError",
];

impl GraphError {
    /// Graph's error code, if Graph sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            Self::Token { error, .. } => Some(error),
            _ => None,
        }
    }

    /// HTTP status, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Token { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { status, code, .. } => {
                *status == 429 || *status >= 500 || TRANSIENT_CODES.contains(&code.as_str())
            }
            Self::Token { status, error, .. } => {
                *status == 429 || *status >= 500 || error == "temporarily_unavailable"
            }
            Self::Transport(_) | Self::Decode(_) => true,
            Self::Config(_) => false,
        }
    }
}

/// Timeouts, retry bounds, pacing. The defaults suit production.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Tries per call, the first included (429/503/504 and connect failures).
    pub max_attempts: u32,
    /// First backoff when Graph sends no `Retry-After`; doubles per attempt.
    pub base_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this ends the call (the caller retries later).
    pub max_retry_after: Duration,
    /// Sustained writes per second (Graph's identity write quota is 3,000 per
    /// 150 s per app and tenant, i.e. 20/s).
    pub writes_per_second: f64,
    /// Writes allowed in a burst.
    pub write_burst: u32,
    /// Pause between checks of a PIM request still being provisioned.
    pub poll_interval: Duration,
    /// Checks of a pending PIM request before giving up for now.
    pub max_polls: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_attempts: 5,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_mins(2),
            writes_per_second: 10.0,
            write_burst: 20,
            poll_interval: Duration::from_secs(2),
            max_polls: 15,
        }
    }
}

/// The broker's Microsoft Graph client; share one per process (`Arc`).
pub struct GraphClient {
    http: reqwest::Client,
    graph_url: String,
    token_url: String,
    client_id: String,
    credential: Credential,
    token: Mutex<Option<CachedToken>>,
    writes: TokenBucket,
    clock: Arc<dyn Clock>,
    tuning: Tuning,
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClient")
            .field("graph_url", &self.graph_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    /// A client for `[entra]` with default tuning and the system clock.
    pub fn new(config: &EntraConfig) -> Result<Self, GraphError> {
        Self::with_options(config, Tuning::default(), Arc::new(SystemClock))
    }

    /// A client with explicit tuning and clock (tests).
    pub fn with_options(
        config: &EntraConfig,
        tuning: Tuning,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, GraphError> {
        let credential = Credential::from_config(config)?;
        let login = config.login_url.trim_end_matches('/');
        let token_url = format!("{login}/{}/oauth2/v2.0/token", config.tenant_id);
        url::Url::parse(&token_url)
            .map_err(|e| GraphError::Config(format!("`entra.login_url`: not a URL: {e}")))?;
        let graph_url = config.graph_url.trim_end_matches('/').to_owned();
        url::Url::parse(&graph_url)
            .map_err(|e| GraphError::Config(format!("`entra.graph_url`: not a URL: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(tuning.connect_timeout)
            .timeout(tuning.request_timeout)
            .user_agent(concat!("jit-broker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GraphError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            graph_url,
            token_url,
            client_id: config.client_id.clone(),
            credential,
            token: Mutex::new(None),
            writes: TokenBucket::new(tuning.writes_per_second, tuning.write_burst),
            clock,
            tuning,
        })
    }

    /// The tuning in force.
    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// The broker's clock.
    pub(crate) fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// Ids of the groups `oid` is a member of, directly or transitively (the
    /// group-overage fallback when a token carries no `groups` claim).
    pub async fn user_groups(&self, oid: &str) -> Result<Vec<String>, GraphError> {
        #[derive(Deserialize)]
        struct Group {
            id: String,
        }
        let path = format!(
            "/users/{}/transitiveMemberOf/microsoft.graph.group?$select=id,displayName&$top=999&$count=true",
            encode(oid)
        );
        // OData cast needs `ConsistencyLevel: eventual` and `$count` (documented),
        // resent on every page.
        let groups: Vec<Group> = self
            .get_pages(&path, &[("ConsistencyLevel", "eventual")])
            .await?;
        Ok(groups.into_iter().map(|g| g.id).collect())
    }

    /// `GET` a path under the Graph base URL (or an absolute Graph URL).
    pub(crate) async fn get(&self, path: &str) -> Result<Value, GraphError> {
        self.call(Method::GET, path, None, &[]).await
    }

    /// `POST` a JSON body to a path under the Graph base URL.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value, GraphError> {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    /// Every item of a collection, following `@odata.nextLink`.
    pub(crate) async fn get_pages<T: DeserializeOwned>(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Vec<T>, GraphError> {
        #[derive(Deserialize)]
        struct Page<T> {
            value: Vec<T>,
            #[serde(rename = "@odata.nextLink")]
            next: Option<String>,
        }
        let mut items = Vec::new();
        let mut next = Some(path.to_owned());
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(GraphError::Decode(format!(
                    "more than {MAX_PAGES} pages at `{path}`"
                )));
            }
            let page: Page<T> =
                serde_json::from_value(self.call(Method::GET, &url, None, headers).await?)
                    .map_err(|e| GraphError::Decode(format!("`{path}`: {e}")))?;
            items.extend(page.value);
            next = page.next;
        }
        Ok(items)
    }

    /// One Graph call with a bearer token; a token Graph rejects is renewed once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, GraphError> {
        let url = self.resolve(path)?;
        let mut renewed = false;
        loop {
            let token = self.token().await?;
            let response = self
                .send(method == Method::POST, method == Method::GET, || {
                    let mut request = self
                        .http
                        .request(method.clone(), &url)
                        .bearer_auth(&token)
                        .header("Accept", "application/json");
                    for (name, value) in headers {
                        request = request.header(*name, *value);
                    }
                    if let Some(body) = body {
                        request = request.json(body);
                    }
                    request
                })
                .await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !renewed {
                tracing::warn!(graph.path = %path, "graph refused the token; renewing it");
                *self.token.lock().await = None;
                renewed = true;
                continue;
            }
            if !status.is_success() {
                return Err(api_error(response).await);
            }
            let bytes = response
                .bytes()
                .await
                .map_err(|e| GraphError::Transport(e.to_string()))?;
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes)
                .map_err(|e| GraphError::Decode(format!("`{path}`: {e}")));
        }
    }

    /// An absolute URL under the Graph base; refuses foreign hosts (the
    /// bearer token must only ever go to Graph).
    fn resolve(&self, path: &str) -> Result<String, GraphError> {
        if path.starts_with('/') {
            return Ok(format!("{}{path}", self.graph_url));
        }
        if path.starts_with(&format!("{}/", self.graph_url)) {
            return Ok(path.to_owned());
        }
        // A nextLink may name the same host under another version prefix.
        let base = url::Url::parse(&self.graph_url)
            .map_err(|e| GraphError::Config(format!("`entra.graph_url`: {e}")))?;
        let link = url::Url::parse(path)
            .map_err(|_| GraphError::Decode(format!("`{path}` is not a URL")))?;
        if link.origin() == base.origin() {
            Ok(path.to_owned())
        } else {
            Err(GraphError::Decode(format!(
                "link `{path}` leaves the Graph host"
            )))
        }
    }

    /// The cached token, or a new one. The lock is held while fetching, so
    /// concurrent callers wait for one token request (single-flight).
    async fn token(&self) -> Result<String, GraphError> {
        let mut cached = self.token.lock().await;
        let now = self.clock.now();
        if let Some(token) = cached.as_ref().filter(|t| t.fresh(now)) {
            return Ok(token.value().to_owned());
        }
        let fresh = self.fetch_token().await?;
        let value = fresh.value().to_owned();
        *cached = Some(fresh);
        Ok(value)
    }

    async fn fetch_token(&self) -> Result<CachedToken, GraphError> {
        let now = self.clock.now();
        let auth = self
            .credential
            .form_fields(&self.client_id, &self.token_url, now)?;
        let response = self
            .send(false, true, || {
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", &self.client_id),
                    ("scope", GRAPH_SCOPE),
                ];
                form.extend(auth.iter().map(|(k, v)| (*k, v.expose_secret())));
                self.http.post(&self.token_url).form(&form)
            })
            .await?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| GraphError::Transport(e.to_string()))?;
        if !status.is_success() {
            let body: Option<TokenErrorBody> = serde_json::from_slice(&bytes).ok();
            return Err(GraphError::Token {
                status: status.as_u16(),
                error: body
                    .as_ref()
                    .map_or_else(|| format!("HTTP {}", status.as_u16()), |b| b.error.clone()),
                description: body
                    .and_then(|b| b.error_description)
                    .and_then(|d| d.lines().next().map(str::to_owned))
                    .unwrap_or_default(),
            });
        }
        let token: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|e| GraphError::Decode(format!("token response: {e}")))?;
        tracing::debug!(graph.expires_in = token.expires_in, "graph token issued");
        Ok(CachedToken::new(
            token.access_token,
            token.expires_in,
            self.clock.now(),
        ))
    }

    /// Sends with bounded retries: 429, 503 and 504 (after `Retry-After` or an
    /// exponential backoff), and connection failures; timeouts only for
    /// idempotent calls. Writes pass the rate limiter on every attempt.
    async fn send(
        &self,
        write: bool,
        idempotent: bool,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, GraphError> {
        let attempts = self.tuning.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if write {
                self.writes.acquire().await;
            }
            match build().send().await {
                Ok(response) => {
                    let status = response.status();
                    if !matches!(status.as_u16(), 429 | 503 | 504) {
                        return Ok(response);
                    }
                    let hinted = retry_after(response.headers());
                    let wait = hinted.unwrap_or_else(|| self.backoff(attempt));
                    if attempt >= attempts || wait > self.tuning.max_retry_after {
                        return Err(api_error(response).await);
                    }
                    tracing::warn!(
                        http.status = status.as_u16(),
                        graph.attempt = attempt,
                        graph.wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        graph.retry_after = hinted.is_some(),
                        "graph throttled or unavailable; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    let retry = e.is_connect() || (idempotent && e.is_timeout());
                    if !retry || attempt >= attempts {
                        return Err(GraphError::Transport(transport_text(&e)));
                    }
                    let wait = self.backoff(attempt);
                    tracing::warn!(graph.attempt = attempt, error = %transport_text(&e), "graph unreachable; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// `base × 2^(attempt-1)`, capped, with up to 25 % jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .tuning
            .base_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.tuning.max_backoff);
        let jitter = rand::random_range(0.0..0.25);
        exp + exp.mul_f64(jitter)
    }
}

/// `Retry-After` in seconds (Graph's form).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn transport_text(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // The URL names tenant/object ids only; tokens travel in headers.
    match e.url() {
        Some(url) => format!(
            "{kind}: `{}{}`",
            url.origin().ascii_serialization(),
            url.path()
        ),
        None => kind.to_owned(),
    }
}

/// Graph's `{"error": {"code", "message"}}`, or the status when the body is not that.
async fn api_error(response: reqwest::Response) -> GraphError {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        code: String,
        #[serde(default)]
        message: String,
    }
    let status = response.status();
    let hinted = retry_after(response.headers());
    let bytes = response.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<Body>(&bytes) {
        Ok(body) => GraphError::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
            retry_after: hinted,
        },
        Err(_) => GraphError::Api {
            status: status.as_u16(),
            code: format!("HTTP{}", status.as_u16()),
            message: status
                .canonical_reason()
                .unwrap_or("unexpected status")
                .to_lowercase(),
            retry_after: hinted,
        },
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (path
/// segments and `OData` query values).
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// An `OData` string literal: single quotes doubled.
pub(crate) fn odata_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_values() {
        assert_eq!(
            encode("principalId eq 'a-b'"),
            "principalId%20eq%20%27a-b%27"
        );
        assert_eq!(odata_literal("o'k"), "'o''k'");
    }

    #[test]
    fn classifies_errors() {
        let api = |status, code: &str| GraphError::Api {
            status,
            code: code.to_owned(),
            message: "m".to_owned(),
            retry_after: None,
        };
        assert!(api(400, "ActiveDurationTooShort").is_transient());
        assert!(api(429, "TooManyRequests").is_transient());
        assert!(!api(400, "RoleAssignmentExists").is_transient());
        assert!(!api(403, "Authorization_RequestDenied").is_transient());
        assert_eq!(
            api(400, "RoleAssignmentExists").to_string(),
            "graph: RoleAssignmentExists: m"
        );
    }
}
