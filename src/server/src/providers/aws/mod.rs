//! AWS grant providers: STS role sessions ([`AwsRole`]) and IAM Identity
//! Center account assignments ([`AwsIdentityCenter`]).
//!
//! Both share one SDK configuration built from `[aws]`: the default
//! credential chain, the region, explicit timeouts, and an endpoint override
//! taken only from `aws.endpoint_url` (never from `AWS_ENDPOINT_URL*`). SDK
//! retries are off: every call goes through [`call`], which retries
//! throttling, conflicts, 5xx and timeouts with exponential backoff and
//! jitter, a bounded number of times.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use rand::Rng;

use super::{ProviderError, Providers};
use crate::config::AwsConfig;
use crate::policy::catalog::Kind;

pub mod deny;
mod iam;
mod identity_center;
mod role;
pub mod validate;

pub use identity_center::AwsIdentityCenter;
pub use role::{AwsRole, REVOKE_POLICY_NAME, SESSIONS_POLICY_NAME};
pub use validate::sts_session_seconds;

/// Timeouts, retry and polling limits of the AWS providers.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Longest single HTTP attempt.
    pub attempt_timeout: Duration,
    /// Longest SDK operation (SDK retries are off, so about one attempt).
    pub operation_timeout: Duration,
    /// Longest TCP/TLS connect.
    pub connect_timeout: Duration,
    /// Attempts per call, first one included.
    pub max_attempts: u32,
    /// First backoff delay; doubles on each retry.
    pub backoff_base: Duration,
    /// Longest backoff delay (also caps an honoured `Retry-After`).
    pub backoff_max: Duration,
    /// First wait before polling an Identity Center operation again.
    pub poll_initial: Duration,
    /// Longest wait between two polls.
    pub poll_max: Duration,
    /// Give up polling (transient failure) after this long.
    pub poll_deadline: Duration,
    /// Identity Center assignment operations in flight per instance.
    pub max_in_flight: usize,
    /// The longest session of a role or permission set, for pruning the
    /// broker's deny statements; `None` (the default) asks AWS (the role's
    /// `MaxSessionDuration`, the permission set's `SessionDuration`). Tests
    /// set a short one.
    pub session_lifetime: Option<Duration>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_attempts: 5,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            poll_initial: Duration::from_millis(500),
            poll_max: Duration::from_secs(5),
            poll_deadline: Duration::from_mins(5),
            max_in_flight: 15,
            session_lifetime: None,
        }
    }
}

impl Tuning {
    /// Backoff before retry number `retry` (0 = first retry): equal jitter
    /// over `base * 2^retry`, capped, and at least a `Retry-After` hint.
    fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(2u32.saturating_pow(retry.min(20)))
            .min(self.backoff_max);
        let half = exp / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let jitter = Duration::from_millis(rand::rng().random_range(0..=jitter_ms));
        let delay = half + jitter;
        match retry_after {
            Some(hint) => delay.max(hint.min(self.backoff_max)),
            None => delay,
        }
    }
}

/// Everything both providers share.
#[derive(Clone)]
struct Shared {
    sdk: SdkConfig,
    credentials: SharedCredentialsProvider,
    endpoint_url: Option<String>,
    http: reqwest::Client,
    tuning: Tuning,
}

impl Shared {
    /// Whether the broker's own credentials are temporary (role credentials):
    /// then `AssumeRole` is role chaining, capped at one hour, and the
    /// federation endpoint refuses `SessionDuration`.
    async fn base_is_temporary(&self) -> Option<bool> {
        match self.credentials.provide_credentials().await {
            Ok(c) => Some(c.session_token().is_some()),
            Err(e) => {
                tracing::warn!(error = %DisplayErrorContext(&e), "cannot load aws credentials");
                None
            }
        }
    }
}

/// The two AWS providers, built from one `[aws]` section.
pub struct AwsProviders {
    /// `aws_role`.
    pub role: Arc<AwsRole>,
    /// `aws_identity_center`.
    pub identity_center: Arc<AwsIdentityCenter>,
}

impl AwsProviders {
    /// Builds both providers with the default credential chain.
    ///
    /// `issuer` is the broker's public URL, sent as `Issuer` in console
    /// sign-in URLs (AWS links back to it when the console session ends).
    pub async fn from_config(cfg: &AwsConfig, issuer: &str) -> Self {
        Self::build(cfg, issuer, None, Tuning::default()).await
    }

    /// Builds both providers with fixed credentials and limits (tests, or a
    /// broker that gets its keys from elsewhere).
    pub async fn with_credentials(
        cfg: &AwsConfig,
        issuer: &str,
        credentials: Credentials,
        tuning: Tuning,
    ) -> Self {
        Self::build(cfg, issuer, Some(credentials), tuning).await
    }

    async fn build(
        cfg: &AwsConfig,
        issuer: &str,
        credentials: Option<Credentials>,
        tuning: Tuning,
    ) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(tuning.connect_timeout)
            .read_timeout(tuning.attempt_timeout)
            .operation_attempt_timeout(tuning.attempt_timeout)
            .operation_timeout(tuning.operation_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(cfg.region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let sdk = loader.load().await;
        let credentials = sdk.credentials_provider().unwrap_or_else(|| {
            SharedCredentialsProvider::new(Credentials::new("", "", None, None, "none"))
        });
        let http = reqwest::Client::builder()
            .connect_timeout(tuning.connect_timeout)
            .timeout(tuning.attempt_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let shared = Shared {
            sdk,
            credentials,
            endpoint_url: cfg.endpoint_url.clone(),
            http,
            tuning,
        };
        Self {
            role: Arc::new(AwsRole::new(shared.clone(), cfg, issuer)),
            identity_center: Arc::new(AwsIdentityCenter::new(&shared, cfg)),
        }
    }

    /// Puts both into `providers` for their kinds.
    #[must_use]
    pub fn install(&self, providers: Providers) -> Providers {
        providers
            .with(Kind::AwsRole, self.role.clone())
            .with(Kind::AwsIdentityCenter, self.identity_center.clone())
    }
}

/// How a failed call should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Try again now (with backoff): throttling, conflict, 5xx, timeout.
    Retry,
    /// Not now, maybe later (the broker's own credentials expired…).
    Transient,
    /// Final.
    Permanent,
}

/// A failed AWS call, classified.
#[derive(Debug, Clone)]
struct CallError {
    class: Class,
    code: Option<String>,
    message: String,
    retry_after: Option<Duration>,
}

impl CallError {
    fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

impl From<CallError> for ProviderError {
    fn from(e: CallError) -> Self {
        match e.class {
            Class::Permanent => Self::Permanent(e.message),
            Class::Retry | Class::Transient => Self::Transient(e.message),
        }
    }
}

/// Error codes worth retrying at once.
const RETRY_CODES: &[&str] = &[
    "ConflictException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "InternalServerException",
    "InternalFailure",
    "ServiceFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
    "IDPCommunicationError",
];

/// Error codes that may pass later but not by retrying now.
const TRANSIENT_CODES: &[&str] = &["ExpiredToken", "ExpiredTokenException"];

fn classify<E>(op: &str, err: &SdkError<E, HttpResponse>) -> CallError
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    let retry_after = err
        .raw_response()
        .and_then(|r| r.headers().get("retry-after"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let status = err.raw_response().map(|r| r.status().as_u16());
    let (class, code, message) = match err {
        SdkError::TimeoutError(_) => (Class::Retry, None, format!("{op}: timed out")),
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            (Class::Retry, None, format!("{op}: timed out"))
        }
        SdkError::DispatchFailure(_) => (
            Class::Retry,
            None,
            format!("{op}: cannot reach aws: {}", DisplayErrorContext(err)),
        ),
        SdkError::ResponseError(_) => (
            if status.is_some_and(|s| s >= 500) {
                Class::Retry
            } else {
                Class::Permanent
            },
            None,
            format!("{op}: unreadable response: {}", DisplayErrorContext(err)),
        ),
        SdkError::ServiceError(_) => {
            let code = err.code().map(str::to_owned);
            let text = err.message().unwrap_or("no message");
            let class = match code.as_deref() {
                Some(c) if RETRY_CODES.contains(&c) => Class::Retry,
                Some(c) if TRANSIENT_CODES.contains(&c) => Class::Transient,
                _ if status.is_some_and(|s| s >= 500 || s == 429) => Class::Retry,
                _ => Class::Permanent,
            };
            let message = match (&code, status) {
                (Some(c), _) => format!("{op}: {c}: {text}"),
                (None, Some(s)) => format!("{op}: http {s}: {text}"),
                (None, None) => format!("{op}: {text}"),
            };
            (class, code, message)
        }
        _ => (
            Class::Permanent,
            None,
            format!("{op}: {}", DisplayErrorContext(err)),
        ),
    };
    CallError {
        class,
        code,
        message,
        retry_after,
    }
}

/// Runs one AWS SDK call, retrying what is worth retrying with backoff.
async fn call<T, E, F, Fut>(tuning: &Tuning, op: &'static str, mut f: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + StdError + 'static,
{
    retry(tuning, op, || {
        let fut = f();
        async move { fut.await.map_err(|e| classify(op, &e)) }
    })
    .await
}

/// Runs `f` until it succeeds, fails for good, or has used its attempts.
async fn retry<T, F, Fut>(tuning: &Tuning, op: &'static str, mut f: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let attempts = tuning.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(mut err) => {
                if err.class != Class::Retry {
                    return Err(err);
                }
                if attempt >= attempts {
                    err.message = format!("{} (gave up after {attempt} attempts)", err.message);
                    return Err(err);
                }
                let delay = tuning.backoff(attempt - 1, err.retry_after);
                tracing::warn!(
                    aws.operation = op,
                    attempt,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error = %err.message,
                    "aws call failed, retrying"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// A plain HTTP failure (federation endpoint), without the URL: the
/// federation URL carries the session's secret key.
fn http_error(op: &str, e: reqwest::Error) -> CallError {
    let e = e.without_url();
    let retry = e.is_timeout() || e.is_connect() || e.is_request() || e.is_body();
    let mut message = format!("{op}: {e}");
    let mut source = StdError::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    CallError {
        class: if retry {
            Class::Retry
        } else {
            Class::Permanent
        },
        code: None,
        message,
        retry_after: None,
    }
}

/// A `Retry-After` header in seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let t = Tuning {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..Tuning::default()
        };
        for _ in 0..50 {
            let d0 = t.backoff(0, None);
            assert!(
                d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100),
                "{d0:?}"
            );
            let d2 = t.backoff(2, None);
            assert!(
                d2 >= Duration::from_millis(200) && d2 <= Duration::from_millis(400),
                "{d2:?}"
            );
            let d9 = t.backoff(9, None);
            assert!(
                d9 >= Duration::from_millis(500) && d9 <= Duration::from_secs(1),
                "{d9:?}"
            );
            assert!(t.backoff(u32::MAX, None) <= Duration::from_secs(1));
            // Retry-After raises the delay, but never past the cap.
            assert!(t.backoff(0, Some(Duration::from_millis(700))) >= Duration::from_millis(700));
            assert!(t.backoff(0, Some(Duration::from_hours(1))) <= Duration::from_secs(1));
        }
    }
}
