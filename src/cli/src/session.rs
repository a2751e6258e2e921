//! Saved settings (the server URL) and the cached sign-in tokens.

use std::fmt;

pub use jit_cli_base::settings::{Settings, normalize_server, resolve_server};
use serde::{Deserialize, Serialize};

use crate::dirs::{Dirs, file_error, read_optional, remove_optional, write_private};
use crate::error::{CliError, Result};
use crate::oauth::TokenResponse;

/// Refresh the access token when it expires within this many seconds.
pub const REFRESH_MARGIN_SECS: i64 = 60;

/// Signed-in tokens for one broker (`tokens.json`, 0600).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The broker these tokens are for.
    pub server: String,
    /// Bearer access token for the broker API.
    pub access_token: String,
    /// Refresh token, when the identity provider gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Access token expiry, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Where to refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    /// Public client id used at sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Scopes asked at sign-in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// The demo user, for development-mode sign-ins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_user: Option<String>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("server", &self.server)
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .field("token_endpoint", &self.token_endpoint)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("dev_user", &self.dev_user)
            .finish()
    }
}

/// What to do with the cached access token before a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// Still good for more than the margin (or of unknown lifetime).
    Fresh,
    /// Expired or about to: refresh it first.
    Refresh,
    /// Expired or about to, and no way to refresh: sign in again.
    SignInAgain,
}

impl Session {
    /// Whether the token can be used as is, must be refreshed, or is dead.
    pub fn token_state(&self, now_unix: i64) -> TokenState {
        let Some(expires_at) = self.expires_at else {
            return TokenState::Fresh;
        };
        if expires_at - now_unix > REFRESH_MARGIN_SECS {
            TokenState::Fresh
        } else if self.can_refresh() {
            TokenState::Refresh
        } else {
            TokenState::SignInAgain
        }
    }

    /// True when a refresh token and a token endpoint are known.
    pub fn can_refresh(&self) -> bool {
        self.refresh_token.is_some() && self.token_endpoint.is_some() && self.client_id.is_some()
    }

    /// The command that signs in again to this broker.
    pub fn login_hint(&self) -> String {
        login_hint(&self.server, self.dev_user.as_deref())
    }

    /// Loads the tokens; `None` when not signed in.
    pub fn load(dirs: &Dirs) -> Result<Option<Self>> {
        let path = dirs.tokens_file();
        match read_optional(&path).map_err(|e| file_error("read", &path, &e))? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|_| {
                CliError::new(format!(
                    "the saved sign-in in `{}` is not readable",
                    path.display()
                ))
                .hint("run `jit login`")
            }),
        }
    }

    /// Loads the tokens for `server`, or says how to sign in.
    pub fn load_for(dirs: &Dirs, server: &str) -> Result<Self> {
        match Self::load(dirs)? {
            Some(session) if session.server == server => Ok(session),
            Some(_) | None => Err(CliError::new(format!("not signed in to `{server}`"))
                .hint(format!("run `{}`", login_hint(server, None)))),
        }
    }

    /// Saves the tokens (0600).
    pub fn save(&self, dirs: &Dirs) -> Result<()> {
        let path = dirs.tokens_file();
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| CliError::new(format!("cannot encode the sign-in: {e}")))?;
        write_private(&path, &bytes).map_err(|e| file_error("write", &path, &e))
    }

    /// Deletes the saved tokens; true when there were any.
    pub fn remove(dirs: &Dirs) -> Result<bool> {
        let path = dirs.tokens_file();
        remove_optional(&path).map_err(|e| file_error("remove", &path, &e))
    }
}

/// A session from a token answer.
pub fn session_from(
    server: &str,
    tokens: TokenResponse,
    token_endpoint: Option<String>,
    client_id: Option<String>,
    scopes: Vec<String>,
    dev_user: Option<String>,
) -> Session {
    Session {
        server: server.to_owned(),
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        expires_at: tokens
            .expires_in
            .map(|s| crate::api::now_unix().saturating_add_unsigned(s)),
        token_endpoint,
        client_id,
        scopes,
        dev_user,
    }
}

/// `jit login --server URL [--user NAME]`.
pub fn login_hint(server: &str, dev_user: Option<&str>) -> String {
    match dev_user {
        Some(user) => format!("jit login --server {server} --user {user}"),
        None => format!("jit login --server {server}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::tempdir;

    fn session(expires_at: Option<i64>, refresh: bool) -> Session {
        Session {
            server: "http://127.0.0.1:8080".into(),
            access_token: "at".into(),
            refresh_token: refresh.then(|| "rt".to_owned()),
            expires_at,
            token_endpoint: Some("http://idp/token".into()),
            client_id: Some("jit-cli".into()),
            scopes: vec!["openid".into()],
            dev_user: None,
        }
    }

    #[test]
    fn token_refresh_decision() {
        let now = 1_000_000;
        assert_eq!(
            session(Some(now + 3600), true).token_state(now),
            TokenState::Fresh
        );
        assert_eq!(
            session(Some(now + 61), true).token_state(now),
            TokenState::Fresh
        );
        // Within 60 s of expiry: refresh.
        assert_eq!(
            session(Some(now + 60), true).token_state(now),
            TokenState::Refresh
        );
        assert_eq!(
            session(Some(now + 5), true).token_state(now),
            TokenState::Refresh
        );
        assert_eq!(
            session(Some(now - 100), true).token_state(now),
            TokenState::Refresh
        );
        // No refresh token: sign in again.
        assert_eq!(
            session(Some(now - 1), false).token_state(now),
            TokenState::SignInAgain
        );
        assert_eq!(
            session(Some(now + 30), false).token_state(now),
            TokenState::SignInAgain
        );
        // Unknown lifetime: use it; a 401 triggers the refresh.
        assert_eq!(session(None, true).token_state(now), TokenState::Fresh);
    }

    #[test]
    fn debug_redacts_tokens() {
        let text = format!("{:?}", session(Some(1), true));
        assert!(!text.contains("\"at\""), "{text}");
        assert!(!text.contains("\"rt\""), "{text}");
    }

    #[test]
    fn save_load_and_server_mismatch() {
        let root = tempdir();
        let dirs = Dirs {
            config: root.join("config"),
            cache: root.join("cache"),
        };
        assert!(Session::load(&dirs).unwrap().is_none());
        let s = session(Some(42), true);
        s.save(&dirs).unwrap();
        assert_eq!(
            Session::load_for(&dirs, "http://127.0.0.1:8080").unwrap(),
            s
        );
        let err = Session::load_for(&dirs, "https://other").unwrap_err();
        assert_eq!(
            err.line(),
            "error: not signed in to `https://other`: run `jit login --server https://other`"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dirs.tokens_file())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(Session::remove(&dirs).unwrap());
        assert!(!Session::remove(&dirs).unwrap());
        std::fs::remove_dir_all(root).unwrap();
    }
}
