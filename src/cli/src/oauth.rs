//! Sign-in: OAuth 2.0 device authorization grant (RFC 8628), refresh tokens,
//! and the development-mode demo sign-in of `jit-server serve --dev`.

use std::time::{Duration, Instant};

use jit_api::CliConfig;
use reqwest::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{CliError, Result};
use crate::http::{Http, Retry, check_secure_url};

/// `grant_type` of the device flow's token requests.
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Polling interval when the identity provider gives none (RFC 8628 §3.2).
pub const DEFAULT_INTERVAL_SECS: u64 = 5;

/// The identity provider's endpoints the CLI talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// RFC 8628 device authorization endpoint.
    pub device_authorization: String,
    /// Token endpoint.
    pub token: String,
}

#[derive(Deserialize)]
struct Discovery {
    #[serde(default)]
    device_authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
}

/// The endpoints from `cli-config`, completed from the issuer's
/// `/.well-known/openid-configuration` when one is missing.
pub fn endpoints(http: &Http, cfg: &CliConfig, allow_insecure: bool) -> Result<Endpoints> {
    let (device, token) = match (&cfg.device_authorization_endpoint, &cfg.token_endpoint) {
        (Some(d), Some(t)) => (d.clone(), t.clone()),
        (d, t) => {
            let url = format!(
                "{}/.well-known/openid-configuration",
                cfg.issuer.trim_end_matches('/')
            );
            check_secure_url(&url, allow_insecure)?;
            let resp = http.send(Retry::Idempotent, |c| c.get(&url))?;
            if !resp.status().is_success() {
                return Err(CliError::new(format!(
                    "the identity provider's discovery document `{url}` answered HTTP {}",
                    resp.status().as_u16()
                ))
                .hint("check `oidc.issuer` in the broker's configuration"));
            }
            let doc: Discovery = resp.json().map_err(|e| {
                CliError::new(format!("cannot read the discovery document `{url}`: {e}"))
                    .hint("check `oidc.issuer` in the broker's configuration")
            })?;
            let device =
                d.clone()
                    .or(doc.device_authorization_endpoint)
                    .ok_or_else(|| {
                        CliError::new(format!(
                    "the identity provider `{}` offers no device authorization endpoint",
                    cfg.issuer
                ))
                .hint("enable the device code flow for the CLI's client in the identity provider")
                    })?;
            let token = t.clone().or(doc.token_endpoint).ok_or_else(|| {
                CliError::new(format!(
                    "the identity provider `{}` names no token endpoint",
                    cfg.issuer
                ))
                .hint("check `oidc.issuer` in the broker's configuration")
            })?;
            (device, token)
        }
    };
    check_secure_url(&device, allow_insecure)?;
    check_secure_url(&token, allow_insecure)?;
    Ok(Endpoints {
        device_authorization: device,
        token,
    })
}

/// The device authorization response (RFC 8628 §3.2).
#[derive(Clone, Deserialize)]
pub struct DeviceAuthorization {
    /// Secret code the CLI polls with.
    pub device_code: String,
    /// Code the user types.
    pub user_code: String,
    /// Where the user types it (`verification_url` is Google's older name).
    #[serde(alias = "verification_url")]
    pub verification_uri: String,
    /// The same page with the code filled in.
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    /// Lifetime of the codes.
    #[serde(deserialize_with = "lenient_u64")]
    pub expires_in: u64,
    /// Seconds between polls.
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub interval: Option<u64>,
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// A token endpoint's success answer.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// Bearer token for the broker API.
    pub access_token: String,
    /// Usually `Bearer`.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Lifetime in seconds.
    #[serde(default, deserialize_with = "lenient_opt_u64")]
    pub expires_in: Option<u64>,
    /// Refresh token (with `offline_access`).
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Asks the identity provider for a device code and user code; `extra` adds parameters
/// (`claims`, `max_age` for a step-up).
pub fn start_device(
    http: &Http,
    endpoints: &Endpoints,
    client_id: &str,
    scopes: &[String],
    extra: &[(&str, String)],
) -> Result<DeviceAuthorization> {
    let scope = scopes.join(" ");
    let url = &endpoints.device_authorization;
    let mut form = vec![("client_id", client_id), ("scope", scope.as_str())];
    form.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
    let resp = http.send(Retry::Once, |c| c.post(url).form(&form))?;
    let status = resp.status();
    let body = resp.bytes().map_err(|e| crate::http::transport_error(&e))?;
    if !status.is_success() {
        return Err(idp_error(
            "the identity provider refused to start the sign-in",
            status,
            &body,
        )
        .or_hint("check the CLI client id and scopes in the broker's `oidc` configuration"));
    }
    serde_json::from_slice(&body).map_err(|e| {
        CliError::new(format!(
            "unreadable device authorization answer from `{url}`: {e}"
        ))
        .hint("check that the identity provider supports RFC 8628")
    })
}

/// What one poll of the token endpoint said.
#[derive(Debug)]
pub enum Poll {
    /// Signed in.
    Tokens(TokenResponse),
    /// The user has not finished yet.
    Pending,
    /// Poll less often: add 5 s to the interval.
    SlowDown,
    /// The flow is over without tokens.
    Failed(CliError),
}

/// Reads a device-flow token answer.
pub fn classify_poll(status: StatusCode, body: &[u8]) -> Poll {
    if status.is_success() {
        return match serde_json::from_slice::<TokenResponse>(body) {
            Ok(tokens) => Poll::Tokens(tokens),
            Err(e) => Poll::Failed(CliError::new(format!(
                "unreadable token answer from the identity provider: {e}"
            ))),
        };
    }
    let Ok(err) = serde_json::from_slice::<OAuthErrorBody>(body) else {
        return Poll::Failed(idp_error("sign-in failed", status, body));
    };
    match err.error.as_str() {
        "authorization_pending" => Poll::Pending,
        "slow_down" => Poll::SlowDown,
        "expired_token" | "code_expired" => Poll::Failed(
            CliError::new("the sign-in code expired before it was used")
                .hint("run `jit login` again and finish within the time shown"),
        ),
        "access_denied" | "authorization_declined" => Poll::Failed(
            CliError::new("the sign-in was declined").hint("run `jit login` again and approve it"),
        ),
        _ => Poll::Failed(idp_error("sign-in failed", status, body).hint("run `jit login` again")),
    }
}

/// Polls the token endpoint until the user finished (or gave up).
/// `sleep` is called between polls (tests pass a short one).
pub fn poll_device(
    http: &Http,
    endpoints: &Endpoints,
    client_id: &str,
    auth: &DeviceAuthorization,
    sleep: &mut dyn FnMut(Duration),
) -> Result<TokenResponse> {
    let mut interval = auth.interval.unwrap_or(DEFAULT_INTERVAL_SECS).max(1);
    let deadline = Instant::now() + Duration::from_secs(auth.expires_in.max(1));
    loop {
        sleep(Duration::from_secs(interval));
        if Instant::now() > deadline {
            return Err(CliError::new("the sign-in code expired before it was used")
                .hint("run `jit login` again and finish within the time shown"));
        }
        let resp = http.send(Retry::Once, |c| {
            c.post(&endpoints.token).form(&[
                ("grant_type", DEVICE_GRANT),
                ("device_code", auth.device_code.as_str()),
                ("client_id", client_id),
            ])
        })?;
        let status = resp.status();
        let body = resp.bytes().map_err(|e| crate::http::transport_error(&e))?;
        match classify_poll(status, &body) {
            Poll::Tokens(tokens) => return Ok(tokens),
            Poll::Pending => {}
            Poll::SlowDown => interval += 5,
            Poll::Failed(err) => return Err(err),
        }
    }
}

/// A device sign-in from start to end: the code on stderr (and the page opened by `open` when
/// it can), then polling until the user finished. `step_up` asks for what the broker's
/// challenge wants (`claims`, `max_age`). The tokens, and the endpoints used.
pub fn device_sign_in(
    http: &Http,
    cfg: &CliConfig,
    allow_insecure: bool,
    open: &dyn Fn(&str) -> bool,
    step_up: Option<&crate::step_up::Challenge>,
) -> Result<(TokenResponse, Endpoints)> {
    let endpoints = endpoints(http, cfg, allow_insecure)?;
    let extra = step_up
        .map(crate::step_up::Challenge::params)
        .unwrap_or_default();
    let auth = start_device(http, &endpoints, &cfg.client_id, &cfg.scopes, &extra)?;
    eprintln!(
        "To sign in, open {} and enter the code {}",
        auth.verification_uri, auth.user_code
    );
    let open_url = auth
        .verification_uri_complete
        .as_deref()
        .unwrap_or(&auth.verification_uri);
    if let Some(complete) = &auth.verification_uri_complete {
        eprintln!("(or open {complete})");
    }
    if open(open_url) {
        eprintln!(
            "A browser window was opened; check that it shows the code {}.",
            auth.user_code
        );
    }
    eprintln!(
        "Waiting for the sign-in to finish (the code is valid for {})…",
        crate::output::span(i64::try_from(auth.expires_in).unwrap_or(i64::MAX))
    );
    let tokens = poll_device(
        http,
        &endpoints,
        &cfg.client_id,
        &auth,
        &mut std::thread::sleep,
    )?;
    Ok((tokens, endpoints))
}

/// Trades a refresh token for new tokens (`grant_type=refresh_token`).
pub fn refresh(
    http: &Http,
    token_endpoint: &str,
    client_id: &str,
    refresh_token: &str,
) -> Result<TokenResponse> {
    let resp = http.send(Retry::Once, |c| {
        c.post(token_endpoint).form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ])
    })?;
    let status = resp.status();
    let body = resp.bytes().map_err(|e| crate::http::transport_error(&e))?;
    if status.is_success() {
        serde_json::from_slice(&body).map_err(|e| {
            CliError::new(format!(
                "unreadable token answer from the identity provider: {e}"
            ))
        })
    } else {
        Err(idp_error(
            "your sign-in could not be renewed",
            status,
            &body,
        ))
    }
}

/// Signs in as a demo user on a development broker (`POST /api/v1/dev/token`).
pub fn dev_token(http: &Http, server: &str, user: &str) -> Result<TokenResponse> {
    let url = format!("{server}/api/v1/dev/token");
    let body = serde_json::json!({ "user": user });
    let resp = http.send(Retry::Once, |c| c.post(&url).json(&body))?;
    let status = resp.status();
    let bytes = resp.bytes().map_err(|e| crate::http::transport_error(&e))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<jit_api::ErrorBody>(&bytes).map_or_else(
            |_| {
                format!(
                    "development sign-in as `{user}` failed: HTTP {}",
                    status.as_u16()
                )
            },
            |b| {
                format!(
                    "development sign-in as `{user}` failed: {}",
                    b.error.message
                )
            },
        );
        return Err(CliError::new(message).hint("pick one of the demo users the broker lists"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| CliError::new(format!("unreadable answer from `{url}`: {e}")))
}

/// An identity provider error as one line: its `error` code and description.
fn idp_error(what: &str, status: StatusCode, body: &[u8]) -> CliError {
    match serde_json::from_slice::<OAuthErrorBody>(body) {
        Ok(err) => {
            let mut msg = format!("{what}: `{}`", err.error);
            if let Some(desc) = err.error_description.filter(|d| !d.trim().is_empty()) {
                msg.push_str(" (");
                msg.push_str(desc.trim());
                msg.push(')');
            }
            CliError::new(msg)
        }
        Err(_) => CliError::new(format!("{what}: HTTP {}", status.as_u16())),
    }
}

/// Accepts `900` and `"900"` (older Azure AD endpoints send strings).
fn lenient_u64<'de, D: Deserializer<'de>>(de: D) -> std::result::Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrText {
        Num(u64),
        Text(String),
    }
    match NumOrText::deserialize(de)? {
        NumOrText::Num(n) => Ok(n),
        NumOrText::Text(t) => t.trim().parse().map_err(serde::de::Error::custom),
    }
}

fn lenient_opt_u64<'de, D: Deserializer<'de>>(de: D) -> std::result::Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "lenient_u64")] u64);
    Ok(Option::<Wrap>::deserialize(de)?.map(|w| w.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(status: u16, body: &str) -> Poll {
        classify_poll(StatusCode::from_u16(status).unwrap(), body.as_bytes())
    }

    #[test]
    fn poll_answers_are_classified() {
        assert!(matches!(
            poll(400, r#"{"error":"authorization_pending"}"#),
            Poll::Pending
        ));
        assert!(matches!(
            poll(400, r#"{"error":"slow_down"}"#),
            Poll::SlowDown
        ));
        let Poll::Failed(err) = poll(400, r#"{"error":"expired_token"}"#) else {
            panic!("expired_token must end the flow");
        };
        assert!(err.line().contains("expired"), "{}", err.line());
        let Poll::Failed(err) = poll(400, r#"{"error":"access_denied"}"#) else {
            panic!("access_denied must end the flow");
        };
        assert_eq!(
            err.line(),
            "error: the sign-in was declined: run `jit login` again and approve it"
        );
        let Poll::Failed(err) = poll(
            400,
            r#"{"error":"invalid_client","error_description":"no such client"}"#,
        ) else {
            panic!("other errors end the flow");
        };
        assert!(
            err.line().contains("`invalid_client` (no such client)"),
            "{}",
            err.line()
        );
        let Poll::Failed(err) = poll(502, "<html>bad gateway</html>") else {
            panic!("non-JSON errors end the flow");
        };
        assert!(err.line().contains("HTTP 502"), "{}", err.line());
        match poll(
            200,
            r#"{"access_token":"a","token_type":"Bearer","expires_in":"3600","refresh_token":"r"}"#,
        ) {
            Poll::Tokens(t) => {
                assert_eq!(t.access_token, "a");
                assert_eq!(t.expires_in, Some(3600));
                assert_eq!(t.refresh_token.as_deref(), Some("r"));
            }
            other => panic!("expected tokens, got {other:?}"),
        }
    }

    #[test]
    fn device_authorization_is_read_leniently() {
        let auth: DeviceAuthorization = serde_json::from_str(
            r#"{"device_code":"d","user_code":"ABCD-EFGH","verification_url":"https://idp/device","expires_in":"900"}"#,
        )
        .unwrap();
        assert_eq!(auth.verification_uri, "https://idp/device");
        assert_eq!(auth.expires_in, 900);
        assert_eq!(auth.interval, None);
        assert!(!format!("{auth:?}").contains("\"d\""));
    }

    #[test]
    fn token_debug_hides_tokens() {
        let t = TokenResponse {
            access_token: "secret-at".into(),
            token_type: None,
            expires_in: None,
            refresh_token: Some("secret-rt".into()),
        };
        let text = format!("{t:?}");
        assert!(
            !text.contains("secret-at") && !text.contains("secret-rt"),
            "{text}"
        );
    }
}
