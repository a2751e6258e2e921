//! Saved settings (the server URL) and which broker a command talks to.

use serde::{Deserialize, Serialize};

use crate::dirs::{Dirs, file_error, read_optional, write_private};
use crate::error::{CliError, Result};

/// Non-secret settings saved by `jit login` (`config.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The broker URL last signed in to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

impl Settings {
    /// Loads the settings; missing file = defaults.
    pub fn load(dirs: &Dirs) -> Result<Self> {
        let path = dirs.settings_file();
        match read_optional(&path).map_err(|e| file_error("read", &path, &e))? {
            None => Ok(Self::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CliError::new(format!("`{}` is not valid: {e}", path.display()))
                    .hint("delete it and run `jit login --server URL`")
            }),
        }
    }

    /// Saves the settings (0600).
    pub fn save(&self, dirs: &Dirs) -> Result<()> {
        let path = dirs.settings_file();
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| CliError::new(format!("cannot encode settings: {e}")))?;
        write_private(&path, &bytes).map_err(|e| file_error("write", &path, &e))
    }
}

/// Normalises a broker URL: trims spaces and trailing slashes.
pub fn normalize_server(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

/// Picks the broker URL: `--server`/`JIT_SERVER` first, then the one saved at login.
pub fn resolve_server(flag: Option<&str>, settings: &Settings) -> Result<String> {
    flag.map(normalize_server)
        .filter(|s| !s.is_empty())
        .or_else(|| settings.server.as_deref().map(normalize_server))
        .ok_or_else(|| {
            CliError::new("no jit server configured")
                .hint("run `jit login --server https://jit.example.com` or set `JIT_SERVER`")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_resolution_order() {
        let saved = Settings {
            server: Some("https://saved.example/".into()),
        };
        assert_eq!(
            resolve_server(Some("https://flag.example/"), &saved).unwrap(),
            "https://flag.example"
        );
        assert_eq!(
            resolve_server(None, &saved).unwrap(),
            "https://saved.example"
        );
        assert_eq!(
            resolve_server(Some(" / "), &saved).unwrap(),
            "https://saved.example",
            "an empty flag counts as none"
        );
        let err = resolve_server(None, &Settings::default()).unwrap_err();
        assert!(err.line().contains("jit login --server"), "{}", err.line());
    }

    #[test]
    fn settings_round_trip_and_a_bad_file_says_what_to_do() {
        let root = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            config: root.path().join("config"),
            cache: root.path().join("cache"),
        };
        assert_eq!(Settings::load(&dirs).unwrap(), Settings::default());
        let saved = Settings {
            server: Some("https://jit.example.com".into()),
        };
        saved.save(&dirs).unwrap();
        assert_eq!(Settings::load(&dirs).unwrap(), saved);
        std::fs::write(dirs.settings_file(), b"{").unwrap();
        let line = Settings::load(&dirs).unwrap_err().line();
        assert!(
            line.contains("is not valid") && line.ends_with("jit login --server URL`"),
            "{line}"
        );
    }
}
