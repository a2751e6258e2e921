//! The REST client the Microsoft providers share (Graph and Azure Resource
//! Manager): an app-only token for the service's resource (cached until shortly
//! before expiry, single-flight), explicit timeouts, bounded retries on
//! 429/503/504 honouring `Retry-After`, a write rate limit, `nextLink` paging and
//! typed errors from the `{"error": {"code", "message"}}` body both services send.

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
use super::token::{CachedToken, Credential, TokenErrorBody, TokenResponse};
use crate::clock::Clock;
use crate::config::AppCredentials;

/// Most pages followed for one listing (a loop guard, not a product limit).
const MAX_PAGES: usize = 1000;

/// Which Microsoft service a client talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Microsoft Graph.
    Graph,
    /// Azure Resource Manager.
    Arm,
}

impl Service {
    /// The prefix of its errors and log fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Graph => "graph",
            Self::Arm => "arm",
        }
    }

    /// The scope of the app-only token: the resource URI and `/.default`
    /// (the app's granted permissions or roles).
    fn token_scope(self) -> &'static str {
        match self {
            Self::Graph => "https://graph.microsoft.com/.default",
            Self::Arm => "https://management.azure.com/.default",
        }
    }

    /// Where a collection page names the next one: Graph's `OData` annotation,
    /// ARM's `nextLink` (`x-ms-pageable` in the ARM specs).
    fn next_link(self) -> &'static str {
        match self {
            Self::Graph => "@odata.nextLink",
            Self::Arm => "nextLink",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed service or token call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApiError {
    /// The service answered with its error body `{"error": {"code", "message"}}`.
    #[error("{service}: {code}: {message}")]
    Api {
        /// Which service.
        service: Service,
        /// HTTP status.
        status: u16,
        /// The service's `error.code`, the value to branch on.
        code: String,
        /// The service's `error.message`.
        message: String,
        /// `Retry-After`, when the service sent one.
        retry_after: Option<Duration>,
    },
    /// The token endpoint refused (`invalid_client`, …).
    #[error("{service} token: {error}: {description}")]
    Token {
        /// The service the token was for.
        service: Service,
        /// HTTP status.
        status: u16,
        /// OAuth `error`.
        error: String,
        /// First line of `error_description` (the `AADSTS…` text).
        description: String,
    },
    /// No answer: connection refused, timeout, broken body.
    #[error("{service}: {message}")]
    Transport {
        /// Which service.
        service: Service,
        /// What happened (no secrets: URLs without query, no headers).
        message: String,
    },
    /// An answer that is not what the documented shape says.
    #[error("{service}: unexpected response: {message}")]
    Decode {
        /// Which service.
        service: Service,
        /// What did not fit.
        message: String,
    },
    /// The configuration cannot work.
    #[error("{service}: {message}")]
    Config {
        /// Which service.
        service: Service,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// Error codes that a later retry can get past.
const TRANSIENT_CODES: &[&str] = &[
    // PIM refuses removal within five minutes of the assignment.
    "ActiveDurationTooShort",
    // Another request for the same assignment is still being processed.
    "PendingRoleAssignmentRequest",
    "Directory_ConcurrencyViolation",
    "UnknownError",
    // ARM: the principal is not replicated yet (Terraform retries it, ≥ 10 s).
    "SubjectNotFound",
];

impl ApiError {
    /// The service's error code, if it sent one.
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
            Self::Transport { .. } | Self::Decode { .. } => true,
            Self::Config { .. } => false,
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
    /// First backoff when the service sends no `Retry-After`; doubles per attempt.
    pub base_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this ends the call (the caller retries later).
    pub max_retry_after: Duration,
    /// Sustained writes per second (Graph's identity write quota is 3,000 per
    /// 150 s per app and tenant, i.e. 20/s; ARM refills 10 writes a second per
    /// subscription and principal).
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

/// One service's client; share one per process (`Arc`).
pub struct RestClient {
    service: Service,
    http: reqwest::Client,
    base_url: String,
    token_url: String,
    client_id: String,
    credential: Credential,
    token: Mutex<Option<CachedToken>>,
    writes: TokenBucket,
    clock: Arc<dyn Clock>,
    tuning: Tuning,
}

impl fmt::Debug for RestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestClient")
            .field("service", &self.service)
            .field("base_url", &self.base_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl RestClient {
    /// A client of `service` at `base_url` (`base_key` names it in errors),
    /// signing in as `app`.
    pub fn new(
        service: Service,
        app: &AppCredentials,
        base_url: &str,
        base_key: &str,
        tuning: Tuning,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ApiError> {
        let config = |message: String| ApiError::Config { service, message };
        let credential = Credential::from_config(app, service)?;
        let login = app.login_url.trim_end_matches('/');
        let token_url = format!("{login}/{}/oauth2/v2.0/token", app.tenant_id);
        url::Url::parse(&token_url)
            .map_err(|e| config(format!("`{}.login_url`: not a URL: {e}", app.section)))?;
        let base_url = base_url.trim_end_matches('/').to_owned();
        url::Url::parse(&base_url).map_err(|e| config(format!("`{base_key}`: not a URL: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(tuning.connect_timeout)
            .timeout(tuning.request_timeout)
            .user_agent(concat!("jit-broker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            service,
            http,
            base_url,
            token_url,
            client_id: app.client_id.clone(),
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

    /// The service.
    pub fn service(&self) -> Service {
        self.service
    }

    /// The broker's clock.
    pub(crate) fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// An error about an answer that does not fit the documented shape.
    pub(crate) fn decode_error(&self, message: String) -> ApiError {
        ApiError::Decode {
            service: self.service,
            message,
        }
    }

    /// Every item of a collection, following the service's next-page links.
    pub(crate) async fn get_pages<T: DeserializeOwned>(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Vec<T>, ApiError> {
        #[derive(Deserialize)]
        struct Page<T> {
            value: Vec<T>,
        }
        let mut items = Vec::new();
        let mut next = Some(path.to_owned());
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(self.decode_error(format!("more than {MAX_PAGES} pages at `{path}`")));
            }
            let mut page = self.call(Method::GET, &url, None, headers).await?;
            next = page
                .get_mut(self.service.next_link())
                .and_then(|v| v.as_str().map(str::to_owned));
            let page: Page<T> = serde_json::from_value(page)
                .map_err(|e| self.decode_error(format!("`{path}`: {e}")))?;
            items.extend(page.value);
        }
        Ok(items)
    }

    /// One call with a bearer token; a token the service rejects is renewed once.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, ApiError> {
        let url = self.resolve(path)?;
        let mut renewed = false;
        loop {
            let token = self.token().await?;
            let response = self
                .send(method != Method::GET, method == Method::GET, || {
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
                tracing::warn!(service = %self.service, upstream.path = %path, "the service refused the token; renewing it");
                *self.token.lock().await = None;
                renewed = true;
                continue;
            }
            if !status.is_success() {
                return Err(self.api_error(response).await);
            }
            let bytes = response.bytes().await.map_err(|e| ApiError::Transport {
                service: self.service,
                message: e.to_string(),
            })?;
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes)
                .map_err(|e| self.decode_error(format!("`{path}`: {e}")));
        }
    }

    /// An absolute URL under the base; refuses foreign hosts (the bearer
    /// token must only ever go to its service).
    fn resolve(&self, path: &str) -> Result<String, ApiError> {
        if path.starts_with('/') {
            return Ok(format!("{}{path}", self.base_url));
        }
        if path.starts_with(&format!("{}/", self.base_url)) {
            return Ok(path.to_owned());
        }
        // A next link may name the same host under another prefix.
        let base = url::Url::parse(&self.base_url).map_err(|e| ApiError::Config {
            service: self.service,
            message: format!("base URL: {e}"),
        })?;
        let link = url::Url::parse(path)
            .map_err(|_| self.decode_error(format!("`{path}` is not a URL")))?;
        if link.origin() == base.origin() {
            Ok(path.to_owned())
        } else {
            Err(self.decode_error(format!("link `{path}` leaves the {} host", self.service)))
        }
    }

    /// The cached token, or a new one. The lock is held while fetching, so
    /// concurrent callers wait for one token request (single-flight).
    async fn token(&self) -> Result<String, ApiError> {
        let mut cached = self.token.lock().await;
        let now = self.clock.now();
        if let Some(token) = cached.as_ref().filter(|t| t.fresh(now)) {
            return Ok(token.value().to_owned());
        }
        let fresh = match self.fetch_token().await {
            // A client secret from Secrets Manager may have been rotated: re-read it once.
            Err(ApiError::Token { status, error, .. })
                if (status == 401 || error == "invalid_client")
                    && self.credential.refresh().await =>
            {
                tracing::info!(service = %self.service, "token endpoint refused the client secret; re-read, asking again");
                self.fetch_token().await?
            }
            other => other?,
        };
        let value = fresh.value().to_owned();
        *cached = Some(fresh);
        Ok(value)
    }

    async fn fetch_token(&self) -> Result<CachedToken, ApiError> {
        let now = self.clock.now();
        let auth = self
            .credential
            .form_fields(&self.client_id, &self.token_url, now)?;
        let response = self
            .send(false, true, || {
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", &self.client_id),
                    ("scope", self.service.token_scope()),
                ];
                form.extend(auth.iter().map(|(k, v)| (*k, v.expose_secret())));
                self.http.post(&self.token_url).form(&form)
            })
            .await?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| ApiError::Transport {
            service: self.service,
            message: e.to_string(),
        })?;
        if !status.is_success() {
            let body: Option<TokenErrorBody> = serde_json::from_slice(&bytes).ok();
            return Err(ApiError::Token {
                service: self.service,
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
            .map_err(|e| self.decode_error(format!("token response: {e}")))?;
        tracing::debug!(service = %self.service, token.expires_in = token.expires_in, "token issued");
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
    ) -> Result<reqwest::Response, ApiError> {
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
                        return Err(self.api_error(response).await);
                    }
                    tracing::warn!(
                        service = %self.service,
                        http.status = status.as_u16(),
                        upstream.attempt = attempt,
                        upstream.wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        upstream.retry_after = hinted.is_some(),
                        "throttled or unavailable; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    let retry = e.is_connect() || (idempotent && e.is_timeout());
                    if !retry || attempt >= attempts {
                        return Err(ApiError::Transport {
                            service: self.service,
                            message: transport_text(&e),
                        });
                    }
                    let wait = self.backoff(attempt);
                    tracing::warn!(service = %self.service, upstream.attempt = attempt, error = %transport_text(&e), "unreachable; retrying");
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

    /// `{"error": {"code", "message"}}`, or the status when the body is not that.
    async fn api_error(&self, response: reqwest::Response) -> ApiError {
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
        let (code, message) = match serde_json::from_slice::<Body>(&bytes) {
            Ok(body) => (body.error.code, body.error.message),
            Err(_) => (
                format!("HTTP{}", status.as_u16()),
                status
                    .canonical_reason()
                    .unwrap_or("unexpected status")
                    .to_lowercase(),
            ),
        };
        ApiError::Api {
            service: self.service,
            status: status.as_u16(),
            code,
            message,
            retry_after: hinted,
        }
    }
}

/// `Retry-After` in seconds (the form Graph and ARM send).
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
        let api = |status, code: &str| ApiError::Api {
            service: Service::Graph,
            status,
            code: code.to_owned(),
            message: "m".to_owned(),
            retry_after: None,
        };
        assert!(api(400, "ActiveDurationTooShort").is_transient());
        assert!(api(429, "TooManyRequests").is_transient());
        assert!(api(404, "SubjectNotFound").is_transient());
        assert!(!api(400, "RoleAssignmentExists").is_transient());
        assert!(!api(403, "Authorization_RequestDenied").is_transient());
        assert_eq!(
            api(400, "RoleAssignmentExists").to_string(),
            "graph: RoleAssignmentExists: m"
        );
        let arm = ApiError::Api {
            service: Service::Arm,
            status: 403,
            code: "AuthorizationFailed".to_owned(),
            message: "m".to_owned(),
            retry_after: None,
        };
        assert_eq!(arm.to_string(), "arm: AuthorizationFailed: m");
    }
}
