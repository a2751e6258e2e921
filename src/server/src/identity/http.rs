//! The HTTP client every identity call goes through: reqwest 0.13 with timeouts, no redirects
//! followed, bounded response bodies, and bounded retries for idempotent GETs.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use openidconnect::{AsyncHttpClient, HttpRequest, HttpResponse, http};
use reqwest::header::{ACCEPT, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, redirect};
use thiserror::Error;
use url::Url;

/// Whole-request timeout of every identity call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP + TLS connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body read (discovery, JWKS, token responses are a few KiB).
const MAX_BODY: usize = 1024 * 1024;
/// Attempts of an idempotent GET (the first one included).
const GET_ATTEMPTS: u32 = 3;
/// First backoff; doubled after each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest `Retry-After` honoured; a longer one fails the call instead of stalling it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// A failed identity HTTP call; never carries request bodies or tokens.
#[derive(Debug, Error)]
pub enum HttpError {
    /// Connect, TLS, timeout or protocol failure.
    #[error("request to `{url}` failed: {message}")]
    Transport {
        /// The URL without its query.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The body is larger than [`MAX_BODY`].
    #[error("response from `{url}` is larger than {MAX_BODY} bytes")]
    TooLarge {
        /// The URL without its query.
        url: String,
    },
    /// A GET answered with an unexpected status.
    #[error("`{url}` answered {status}")]
    Status {
        /// The URL without its query.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The request could not be built.
    #[error("invalid request: {0}")]
    Request(String),
}

/// The identity HTTP client (cheap to clone).
#[derive(Debug, Clone)]
pub struct IdpHttp {
    client: reqwest::Client,
}

impl IdpHttp {
    /// A client with timeouts and redirects disabled.
    pub fn new() -> Result<Self, HttpError> {
        let client = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("jit-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpError::Request(e.to_string()))?;
        Ok(Self { client })
    }

    /// Sends one request and reads the response, body capped at [`MAX_BODY`].
    async fn send(&self, request: reqwest::Request) -> Result<HttpResponse, HttpError> {
        let url = shown_url(request.url());
        let mut response = self
            .client
            .execute(request)
            .await
            .map_err(|e| transport(&url, e))?;
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY as u64)
        {
            return Err(HttpError::TooLarge { url });
        }
        let mut builder = http::Response::builder()
            .status(response.status())
            .version(response.version());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport(&url, e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(HttpError::TooLarge { url });
            }
            body.extend_from_slice(&chunk);
        }
        builder
            .body(body)
            .map_err(|e| HttpError::Request(e.to_string()))
    }

    /// GETs a JSON document, retrying transport errors, 429 and 5xx with backoff (honouring a
    /// short `Retry-After`).
    pub async fn get_json(&self, url: &Url) -> Result<serde_json::Value, HttpError> {
        let shown = shown_url(url);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let request = self
                .client
                .get(url.clone())
                .header(ACCEPT, HeaderValue::from_static("application/json"))
                .build()
                .map_err(|e| HttpError::Request(e.to_string()))?;
            let result = self.send(request).await;
            let wait = match &result {
                Ok(response) if response.status() == StatusCode::OK => {
                    return serde_json::from_slice(response.body()).map_err(|e| {
                        HttpError::Transport {
                            url: shown.clone(),
                            message: format!("response is not JSON: {e}"),
                        }
                    });
                }
                Ok(response) if is_retryable(response.status()) => {
                    retry_after(response).unwrap_or(backoff)
                }
                Ok(response) => {
                    return Err(HttpError::Status {
                        url: shown,
                        status: response.status().as_u16(),
                    });
                }
                Err(HttpError::Transport { .. }) => backoff,
                Err(_) => return result.map(|_| serde_json::Value::Null),
            };
            if attempt >= GET_ATTEMPTS || wait > MAX_RETRY_AFTER {
                return match result {
                    Ok(response) => Err(HttpError::Status {
                        url: shown,
                        status: response.status().as_u16(),
                    }),
                    Err(e) => Err(e),
                };
            }
            tracing::warn!(url = %shown, attempt, wait_ms = wait.as_millis(), "identity provider call failed, retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
            backoff = backoff.saturating_mul(2);
        }
    }
}

fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

fn retry_after(response: &HttpResponse) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn transport(url: &str, e: reqwest::Error) -> HttpError {
    let message = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        // without the URL: reqwest would print it with its query
        e.without_url().to_string()
    };
    HttpError::Transport {
        url: url.to_owned(),
        message,
    }
}

/// A URL for messages: scheme, host, port and path only (queries may carry secrets).
fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.to_string()
}

impl<'c> AsyncHttpClient<'c> for IdpHttp {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    /// One attempt, no retry: the token endpoint is not idempotent (a code is single use).
    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)
                .map_err(|e| HttpError::Request(e.to_string()))?;
            self.send(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_drop_queries_and_credentials() {
        let url = Url::parse("https://u:p@idp.example/token?code=secret#x").unwrap();
        assert_eq!(shown_url(&url), "https://idp.example/token");
    }
}
