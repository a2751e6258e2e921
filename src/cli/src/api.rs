//! The broker's JSON API (`/api/v1`) with the signed-in user's bearer token.

use jit_api::ErrorCode;
use reqwest::Method;
use reqwest::StatusCode;
use reqwest::header::{LINK, WWW_AUTHENTICATE};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::dirs::Dirs;
use crate::error::{CliError, Result};
use crate::http::{Http, Retry, check_secure_url};
use crate::oauth;
use crate::session::{Session, TokenState};
use crate::step_up::Challenge;

/// An API answer: its typed form and the JSON text exactly as sent (for `--output json`).
#[derive(Debug, Clone)]
pub struct Fetched<T> {
    /// Typed.
    pub value: T,
    /// Verbatim body.
    pub raw: String,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page {
    /// Verbatim body.
    pub body: String,
    /// Where the next page starts (its `after`), when more follow.
    pub next: Option<String>,
}

/// The `after` of the `rel="next"` URL in a `Link` header (RFC 8288): only the cursor is
/// taken, so a list is followed on the same broker with the same query.
pub fn next_after(link: &str) -> Option<String> {
    link.split(',').find_map(|entry| {
        let (target, params) = entry.trim().split_once('>')?;
        let next = params.split(';').any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=")
                .is_some_and(|r| r.trim_matches('"').split(' ').any(|r| r == "next"))
        });
        let (_, query) = target.strip_prefix('<')?.split_once('?')?;
        next.then(|| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "after")
                .map(|(_, v)| v.into_owned())
        })
        .flatten()
    })
}

/// A signed-in client of one broker.
#[derive(Debug)]
pub struct Api {
    http: Http,
    server: String,
    session: Session,
    dirs: Dirs,
    allow_insecure: bool,
    /// A browser can be opened for a sign-in the broker asks for (step-up).
    graphical: bool,
}

/// Fetches `GET /api/v1/cli-config` (no sign-in needed).
pub fn cli_config(http: &Http, server: &str) -> Result<jit_api::CliConfig> {
    let url = format!("{server}/api/v1/cli-config");
    let resp = http.send(Retry::Idempotent, |c| c.get(&url))?;
    let status = resp.status();
    let body = resp.bytes().map_err(|e| crate::http::transport_error(&e))?;
    if !status.is_success() {
        return Err(
            api_error(status, &body).or_hint(format!("check that `{server}` is a jit broker"))
        );
    }
    serde_json::from_slice(&body).map_err(|_| {
        CliError::new(format!("`{server}` did not answer like a jit broker"))
            .hint("check the server URL (`--server`, `JIT_SERVER`)")
    })
}

impl Api {
    /// A client for `server` with the saved sign-in (refreshed when due). `graphical`: a
    /// browser may be opened when the broker asks for a new sign-in (step-up).
    pub fn connect(
        dirs: &Dirs,
        server: &str,
        allow_insecure: bool,
        graphical: bool,
    ) -> Result<Self> {
        check_secure_url(server, allow_insecure)?;
        let session = Session::load_for(dirs, server)?;
        Ok(Self {
            http: Http::new()?,
            server: server.to_owned(),
            session,
            dirs: dirs.clone(),
            allow_insecure,
            graphical,
        })
    }

    /// The broker URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// `GET /api/v1{path}` with query parameters.
    pub fn get<T: DeserializeOwned>(
        &mut self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Fetched<T>> {
        let (raw, _) = self.call(&Method::GET, path, query, None, Retry::Idempotent)?;
        typed(raw)
    }

    /// `GET /api/v1{path}` of a list, one page: its body and, when more follow, the `after` of
    /// the next page (from the `Link: <…>; rel="next"` header).
    pub fn get_page(&mut self, path: &str, query: &[(&str, &str)]) -> Result<Page> {
        let (body, link) = self.call(&Method::GET, path, query, None, Retry::Idempotent)?;
        Ok(Page {
            next: link.as_deref().and_then(next_after),
            body,
        })
    }

    /// `GET` that yields `None` on any non-success status (optional extras).
    pub fn get_optional<T: DeserializeOwned>(
        &mut self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Option<T> {
        let (raw, _) = self
            .call(&Method::GET, path, query, None, Retry::Idempotent)
            .ok()?;
        serde_json::from_str(&raw).ok()
    }

    /// `POST /api/v1{path}` with a JSON body.
    pub fn post<T: DeserializeOwned>(
        &mut self,
        path: &str,
        body: &impl Serialize,
        retry: Retry,
    ) -> Result<Fetched<T>> {
        let body = serde_json::to_value(body)
            .map_err(|e| CliError::new(format!("cannot encode the request: {e}")))?;
        let (raw, _) = self.call(&Method::POST, path, &[], Some(&body), retry)?;
        typed(raw)
    }

    /// `POST` whose answer may be empty (`204`); the body text, maybe empty.
    pub fn post_maybe_empty(&mut self, path: &str, body: &impl Serialize) -> Result<String> {
        let body = serde_json::to_value(body)
            .map_err(|e| CliError::new(format!("cannot encode the request: {e}")))?;
        Ok(self
            .call(&Method::POST, path, &[], Some(&body), Retry::Once)?
            .0)
    }

    /// The body of a successful answer, and its `Link` header.
    fn call(
        &mut self,
        method: &Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<(String, Option<String>)> {
        let url = format!("{}/api/v1{path}", self.server);
        let mut refreshed = self.ensure_fresh_token()?;
        let mut stepped_up = false;
        loop {
            let token = self.session.access_token.clone();
            let resp = self.http.send(retry, |c| {
                let mut req = c.request(method.clone(), &url).bearer_auth(&token);
                if !query.is_empty() {
                    req = req.query(query);
                }
                if let Some(body) = body {
                    req = req.json(body);
                }
                req
            })?;
            let status = resp.status();
            let challenge = (status == StatusCode::UNAUTHORIZED)
                .then(|| resp.headers().get(WWW_AUTHENTICATE)?.to_str().ok())
                .flatten()
                .and_then(Challenge::parse);
            let link = resp
                .headers()
                .get(LINK)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = resp.bytes().map_err(|e| crate::http::transport_error(&e))?;
            if let Some(challenge) = challenge {
                // The broker wants a stronger or more recent sign-in: one, then the call again
                // (it was refused, so it did nothing).
                if stepped_up {
                    return Err(api_error(status, &bytes).hint(format!(
                        "the identity provider did not give the sign-in {challenge}; ask your administrators what it takes"
                    )));
                }
                eprintln!(
                    "`{} {path}` needs {challenge}: signing in again.",
                    method.as_str()
                );
                self.step_up(&challenge)?;
                stepped_up = true;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && !refreshed && self.session.can_refresh() {
                // The token may have been revoked or the clocks disagree: renew once.
                self.refresh()?;
                refreshed = true;
                continue;
            }
            if !status.is_success() {
                let mut err = api_error(status, &bytes);
                if status == StatusCode::UNAUTHORIZED {
                    err = err.hint(format!("run `{}`", self.session.login_hint()));
                } else if status == StatusCode::NOT_FOUND && path.starts_with("/requests/") {
                    err = err.or_hint("check the id with `jit status`");
                }
                return Err(err);
            }
            let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                CliError::new(format!(
                    "the broker sent an unreadable answer to `{} {path}`",
                    method.as_str()
                ))
                .hint("check that jit and the broker are compatible versions")
            })?;
            return Ok((text, link));
        }
    }

    /// Refreshes the access token when it is about to expire; true when it did.
    fn ensure_fresh_token(&mut self) -> Result<bool> {
        match self.session.token_state(now_unix()) {
            TokenState::Fresh => Ok(false),
            TokenState::Refresh => self.refresh().map(|()| true),
            TokenState::SignInAgain => Err(CliError::new("your sign-in has expired")
                .hint(format!("run `{}`", self.session.login_hint()))),
        }
    }

    /// Signs in again through the device flow as `challenge` asks, as the same user, and keeps
    /// the new tokens.
    fn step_up(&mut self, challenge: &Challenge) -> Result<()> {
        let again = || format!("run `{}`", self.session.login_hint());
        if self.session.dev_user.is_some() {
            return Err(CliError::new(format!(
                "the broker asks for {challenge}, which development sign-ins cannot give"
            ))
            .hint(again()));
        }
        let cfg = cli_config(&self.http, &self.server)?;
        let before = self.user_id(&self.session.access_token)?;
        let graphical = self.graphical;
        let open = |url: &str| crate::browser::open(url, graphical);
        let (tokens, endpoints) = oauth::device_sign_in(
            &self.http,
            &cfg,
            self.allow_insecure,
            &open,
            Some(challenge),
        )?;
        let session = crate::session::session_from(
            &self.server,
            tokens,
            Some(endpoints.token),
            Some(cfg.client_id.clone()),
            cfg.scopes.clone(),
            None,
        );
        let after = self.user_id(&session.access_token)?;
        if after.id != before.id {
            return Err(CliError::new(format!(
                "that sign-in was as {}, not as {} who is signed in to jit",
                after.email, before.email
            ))
            .hint(again()));
        }
        self.session = session;
        self.session.save(&self.dirs)
    }

    /// Whoever `token` is for (`GET /api/v1/me`).
    fn user_id(&self, token: &str) -> Result<jit_api::Me> {
        let url = format!("{}/api/v1/me", self.server);
        let resp = self
            .http
            .send(Retry::Idempotent, |c| c.get(&url).bearer_auth(token))?;
        let status = resp.status();
        let bytes = resp.bytes().map_err(|e| crate::http::transport_error(&e))?;
        if !status.is_success() {
            return Err(
                api_error(status, &bytes).hint(format!("run `{}`", self.session.login_hint()))
            );
        }
        serde_json::from_slice::<jit_api::Me>(&bytes)
            .map_err(|e| CliError::new(format!("unexpected answer from the broker: {e}")))
    }

    fn refresh(&mut self) -> Result<()> {
        let (Some(endpoint), Some(client_id), Some(refresh_token)) = (
            self.session.token_endpoint.clone(),
            self.session.client_id.clone(),
            self.session.refresh_token.clone(),
        ) else {
            return Err(CliError::new("your sign-in has expired")
                .hint(format!("run `{}`", self.session.login_hint())));
        };
        let tokens = oauth::refresh(&self.http, &endpoint, &client_id, &refresh_token)
            .map_err(|e| e.hint(format!("run `{}`", self.session.login_hint())))?;
        self.session.access_token = tokens.access_token;
        self.session.expires_at = tokens
            .expires_in
            .map(|s| now_unix().saturating_add_unsigned(s));
        if let Some(rt) = tokens.refresh_token {
            self.session.refresh_token = Some(rt);
        }
        self.session.save(&self.dirs)
    }
}

/// Seconds since the epoch.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn typed<T: DeserializeOwned>(raw: String) -> Result<Fetched<T>> {
    let value = serde_json::from_str(&raw).map_err(|e| {
        CliError::new(format!("unexpected answer from the broker: {e}"))
            .hint("check that jit and the broker are compatible versions")
    })?;
    Ok(Fetched { value, raw })
}

/// An API error body (`{"error": {"code", "message"}}`) as one line with a next step.
pub fn api_error(status: StatusCode, body: &[u8]) -> CliError {
    let detail = serde_json::from_slice::<jit_api::ErrorBody>(body)
        .ok()
        .map(|b| b.error);
    let message = detail.as_ref().map_or_else(
        || {
            format!(
                "the broker answered HTTP {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_owned()
        },
        |d| d.message.clone(),
    );
    // The code says what went wrong; without one (not a broker's body, or a code from a newer
    // broker) the status does.
    let code = detail
        .as_ref()
        .map(|d| d.code)
        .filter(|c| *c != ErrorCode::Unknown)
        .unwrap_or(match status {
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
            s if s.is_server_error() => ErrorCode::Internal,
            _ => ErrorCode::Unknown,
        });
    // Brokers say "run `jit login`" in their 401 message; the hint says it once, with the
    // server and user to sign in with.
    let message = match code {
        ErrorCode::Unauthorized => message
            .strip_suffix(": run `jit login`")
            .map_or(message.clone(), str::to_owned),
        _ => message,
    };
    let err = CliError::new(message);
    match code {
        ErrorCode::Unauthorized | ErrorCode::StepUpRequired => err.hint("run `jit login`"),
        _ if status == StatusCode::TOO_MANY_REQUESTS => err.hint("wait a moment and try again"),
        c if c.is_transient() => {
            err.hint("try again later; if it persists, tell the broker's operators")
        }
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_gives_its_cursor() {
        assert_eq!(
            next_after(
                r#"</api/v1/requests?after=1764.0190f0a3-aaaa&limit=500&mine=true>; rel="next""#
            )
            .as_deref(),
            Some("1764.0190f0a3-aaaa")
        );
        assert_eq!(
            next_after(r#"</x?after=a%2Bb>; rel="prev", </x?limit=2&after=c>; rel="next""#)
                .as_deref(),
            Some("c")
        );
        assert_eq!(next_after(r#"</x?after=a>; rel="prev""#), None);
        assert_eq!(next_after(r#"</x?limit=2>; rel="next""#), None);
        assert_eq!(next_after("garbage"), None);
    }

    #[test]
    fn error_body_message_is_printed() {
        let body =
            br#"{"error":{"code":"forbidden","message":"you may not approve your own request"}}"#;
        let err = api_error(StatusCode::FORBIDDEN, body);
        assert_eq!(err.line(), "error: you may not approve your own request");
    }

    #[test]
    fn unauthorized_says_to_log_in() {
        let body = br#"{"error":{"code":"unauthorized","message":"token expired"}}"#;
        assert_eq!(
            api_error(StatusCode::UNAUTHORIZED, body).line(),
            "error: token expired: run `jit login`"
        );
    }

    #[test]
    fn the_brokers_own_login_advice_is_not_repeated() {
        let body = br#"{"error":{"code":"unauthorized","message":"invalid or expired token: run `jit login`"}}"#;
        assert_eq!(
            api_error(StatusCode::UNAUTHORIZED, body).line(),
            "error: invalid or expired token: run `jit login`"
        );
        assert_eq!(
            api_error(StatusCode::UNAUTHORIZED, body)
                .hint("run `jit login --server http://127.0.0.1:8080 --user alice`")
                .line(),
            "error: invalid or expired token: run `jit login --server http://127.0.0.1:8080 --user alice`"
        );
    }

    #[test]
    fn the_code_decides_the_hint() {
        // An upstream failure the broker reports as 502: worth trying again later.
        let body = br#"{"error":{"code":"upstream_error","message":"could not mint credentials: the cloud refused or did not answer (the broker logged what it said)"}}"#;
        assert!(
            api_error(StatusCode::BAD_GATEWAY, body)
                .line()
                .ends_with("(the broker logged what it said): try again later; if it persists, tell the broker's operators"),
        );
        // A conflict is nothing to try again.
        let body = br#"{"error":{"code":"conflict","message":"request `x` is not pending"}}"#;
        assert_eq!(
            api_error(StatusCode::CONFLICT, body).line(),
            "error: request `x` is not pending"
        );
        // A code this client does not know: the status decides.
        let body = br#"{"error":{"code":"teapot","message":"short and stout"}}"#;
        assert_eq!(
            api_error(StatusCode::UNAUTHORIZED, body).line(),
            "error: short and stout: run `jit login`"
        );
    }

    #[test]
    fn non_json_errors_name_the_status() {
        let err = api_error(StatusCode::BAD_GATEWAY, b"<html>oops</html>");
        assert!(
            err.line()
                .starts_with("error: the broker answered HTTP 502 Bad Gateway: try again later"),
            "{}",
            err.line()
        );
        let err = api_error(StatusCode::NOT_FOUND, b"");
        assert_eq!(err.line(), "error: the broker answered HTTP 404 Not Found");
    }
}
