//! Blocking HTTP with timeouts, bounded retries and one-line errors.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::RETRY_AFTER;

use crate::error::{CliError, Result};

/// Connect timeout of every call.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request timeout of every call.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per call, the first included.
const MAX_ATTEMPTS: u32 = 3;
/// Longest `Retry-After` honoured before giving up.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// When a failed call may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Safe to repeat (GET, minting credentials): retry on connection
    /// failures, timeouts, 429, 502, 503, 504.
    Idempotent,
    /// Must not run twice: retry only when the server cannot have acted
    /// (connection refused, 429, 503).
    Once,
}

/// A blocking HTTP client with the CLI's timeouts and user agent.
#[derive(Debug, Clone)]
pub struct Http {
    client: Client,
}

impl Http {
    /// Builds the client (connect 5 s, request 30 s).
    pub fn new() -> Result<Self> {
        let client = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("jit/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::new(format!("cannot set up HTTP: {}", root_cause(&e))))?;
        Ok(Self { client })
    }

    /// The underlying client, to build requests.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends the request `build` makes, retrying per `retry` with backoff and
    /// honouring `Retry-After`. Returns the final response whatever its status.
    pub fn send(
        &self,
        retry: Retry,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<Response> {
        let mut attempt = 1;
        loop {
            let outcome = build(&self.client).send();
            let wait = backoff(attempt);
            match outcome {
                Ok(resp) => {
                    let status = resp.status();
                    if attempt < MAX_ATTEMPTS && retryable_status(status, retry) {
                        let wait = retry_after(&resp).unwrap_or(wait);
                        if wait <= MAX_RETRY_AFTER {
                            std::thread::sleep(wait);
                            attempt += 1;
                            continue;
                        }
                    }
                    return Ok(resp);
                }
                Err(err) => {
                    let again =
                        err.is_connect() || (retry == Retry::Idempotent && err.is_timeout());
                    if attempt < MAX_ATTEMPTS && again {
                        std::thread::sleep(wait);
                        attempt += 1;
                        continue;
                    }
                    return Err(transport_error(&err));
                }
            }
        }
    }
}

fn retryable_status(status: StatusCode, retry: Retry) -> bool {
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => true,
        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => retry == Retry::Idempotent,
        _ => false,
    }
}

/// 250 ms, 500 ms, 1 s, …
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64 << attempt.saturating_sub(1).min(6))
}

/// `Retry-After` in seconds (the HTTP-date form is rare from APIs; ignored).
fn retry_after(resp: &Response) -> Option<Duration> {
    parse_retry_after(resp.headers().get(RETRY_AFTER)?.to_str().ok()?)
}

fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A transport failure as one line with a next step.
pub fn transport_error(err: &reqwest::Error) -> CliError {
    let target = err.url().map_or_else(String::new, |u| {
        let mut u = u.clone();
        u.set_query(None);
        u.set_fragment(None);
        format!(" `{u}`")
    });
    if err.is_timeout() {
        CliError::new(format!(
            "no answer from{target} within {}s",
            REQUEST_TIMEOUT.as_secs()
        ))
        .hint("try again; check your network or VPN")
    } else if err.is_connect() {
        CliError::new(format!("cannot connect to{target}: {}", root_cause(err)))
            .hint("check the server URL (`--server`, `JIT_SERVER`) and your network")
    } else {
        CliError::new(format!("request to{target} failed: {}", root_cause(err)))
            .hint("try again; check your network or VPN")
    }
}

/// The innermost cause of an error, which is the readable part.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Refuses to send tokens in clear text: `https` anywhere, `http` only to
/// loopback (or anywhere with `JIT_INSECURE_HTTP=1`).
pub fn check_secure_url(url: &str, allow_insecure: bool) -> Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        CliError::new(format!("invalid URL `{url}`: {e}"))
            .hint("give a full URL such as `https://jit.example.com`")
    })?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if allow_insecure || is_loopback(&parsed) => Ok(parsed),
        "http" => Err(CliError::new(format!(
            "refusing to send credentials over plain http to `{url}`"
        ))
        .hint("use an https URL (or set `JIT_INSECURE_HTTP=1` for a test setup)")),
        other => Err(
            CliError::new(format!("unsupported URL scheme `{other}` in `{url}`"))
                .hint("use an https URL"),
        ),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn which_statuses_are_retried() {
        assert!(retryable_status(
            StatusCode::SERVICE_UNAVAILABLE,
            Retry::Once
        ));
        assert!(retryable_status(StatusCode::TOO_MANY_REQUESTS, Retry::Once));
        assert!(!retryable_status(StatusCode::BAD_GATEWAY, Retry::Once));
        assert!(retryable_status(StatusCode::BAD_GATEWAY, Retry::Idempotent));
        assert!(!retryable_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            Retry::Idempotent
        ));
        assert!(!retryable_status(
            StatusCode::UNAUTHORIZED,
            Retry::Idempotent
        ));
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_secure_url("https://jit.example.com", false).is_ok());
        assert!(check_secure_url("http://127.0.0.1:8080", false).is_ok());
        assert!(check_secure_url("http://localhost:8080", false).is_ok());
        assert!(check_secure_url("http://[::1]:8080", false).is_ok());
        let err = check_secure_url("http://jit.example.com", false).unwrap_err();
        assert!(err.line().contains("plain http"), "{}", err.line());
        assert!(check_secure_url("http://jit.example.com", true).is_ok());
        assert!(check_secure_url("ftp://x", false).is_err());
        assert!(check_secure_url("jit.example.com", false).is_err());
    }

    #[test]
    fn connection_refused_is_one_line_with_a_hint() {
        // A port that was free a moment ago: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let http = Http::new().unwrap();
        let url = format!("http://127.0.0.1:{port}/api/v1/me?x=1");
        let err = http.send(Retry::Once, |c| c.get(&url)).unwrap_err();
        let line = err.line();
        assert!(
            line.starts_with(&format!(
                "error: cannot connect to `http://127.0.0.1:{port}/api/v1/me`"
            )),
            "{line}"
        );
        assert!(line.contains("--server"), "{line}");
        assert!(!line.contains('\n'));
    }
}
