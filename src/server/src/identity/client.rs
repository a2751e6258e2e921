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
            // (the error to give up with, how long to wait before trying again)
            let (error, wait) = match self.send(request).await {
                Ok(response) if response.status() == StatusCode::OK => {
                    return serde_json::from_slice(response.body()).map_err(|e| {
                        HttpError::Transport {
                            url: shown.clone(),
                            message: format!("response is not JSON: {e}"),
                        }
                    });
                }
                Ok(response) => {
                    let error = HttpError::Status {
                        url: shown.clone(),
                        status: response.status().as_u16(),
                    };
                    if !is_retryable(response.status()) {
                        return Err(error);
                    }
                    (error, retry_after(&response).unwrap_or(backoff))
                }
                Err(error @ HttpError::Transport { .. }) => (error, backoff),
                Err(error) => return Err(error),
            };
            if attempt >= GET_ATTEMPTS || wait > MAX_RETRY_AFTER {
                return Err(error);
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

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A server answering `statuses` in turn (then 200 `{}`), counting requests.
    async fn server(statuses: Vec<(u16, Option<&'static str>)>) -> (Url, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let app = axum::Router::new().route(
            "/doc",
            axum::routing::get(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let (status, retry_after) = statuses.get(n).copied().unwrap_or((200, None));
                async move {
                    let mut response = axum::response::Response::new(axum::body::Body::from("{}"));
                    *response.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
                    if let Some(value) = retry_after {
                        response
                            .headers_mut()
                            .insert("retry-after", value.parse().unwrap());
                    }
                    response
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (Url::parse(&format!("http://{addr}/doc")).unwrap(), hits)
    }

    #[tokio::test]
    async fn gets_retry_429_and_5xx_honouring_retry_after() {
        let http = IdpHttp::new().unwrap();
        let (url, hits) = server(vec![(503, Some("0")), (429, Some("0"))]).await;
        assert_eq!(http.get_json(&url).await.unwrap(), serde_json::json!({}));
        assert_eq!(hits.load(Ordering::SeqCst), 3);

        // bounded: three attempts, then the last status
        let (url, hits) = server(vec![(500, None), (502, None), (503, None)]).await;
        let e = http.get_json(&url).await.unwrap_err();
        assert!(matches!(e, HttpError::Status { status: 503, .. }), "{e}");
        assert_eq!(hits.load(Ordering::SeqCst), 3);

        // not retried: client errors, and a Retry-After longer than we wait
        let (url, hits) = server(vec![(404, None)]).await;
        assert!(http.get_json(&url).await.is_err());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let (url, hits) = server(vec![(429, Some("3600"))]).await;
        assert!(http.get_json(&url).await.is_err());
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // redirects are not followed
        let (url, hits) = server(vec![(302, None)]).await;
        assert!(matches!(
            http.get_json(&url).await.unwrap_err(),
            HttpError::Status { status: 302, .. }
        ));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn shown_urls_drop_queries_and_credentials() {
        let url = Url::parse("https://u:p@idp.example/token?code=secret#x").unwrap();
        assert_eq!(shown_url(&url), "https://idp.example/token");
    }
}
