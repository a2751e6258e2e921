//! The on-disk cache of AWS `credential_process` output.
//!
//! One file per (server, entitlement), mode 0600, holding exactly the JSON
//! printed on stdout. A cached entry is served while its `Expiration` is more
//! than [`MIN_REMAINING_SECS`] away; this path reads one small settings file
//! and one cache file, and nothing else.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::dirs::{Dirs, file_error, read_optional, remove_optional, write_private};
use crate::error::Result;
use crate::settings::{Settings, resolve_server};

/// A cached credential is served only while it has more than this left.
pub const MIN_REMAINING_SECS: i64 = 5 * 60;

/// The JSON an AWS `credential_process` prints (Version 1).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessCredentials {
    /// Always 1.
    #[serde(rename = "Version")]
    pub version: u8,
    /// `ASIA…` key id.
    #[serde(rename = "AccessKeyId")]
    pub access_key_id: String,
    /// Secret key.
    #[serde(rename = "SecretAccessKey")]
    pub secret_access_key: String,
    /// Session token.
    #[serde(rename = "SessionToken")]
    pub session_token: String,
    /// RFC 3339 expiry.
    #[serde(rename = "Expiration")]
    pub expiration: String,
}

impl fmt::Debug for ProcessCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl ProcessCredentials {
    /// The line printed on stdout (and stored in the cache).
    pub fn to_json_line(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// The expiry, when it parses as RFC 3339.
    pub fn expires(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.expiration, &Rfc3339).ok()
    }

    /// True while the credential has more than five minutes left at `now`.
    pub fn is_fresh(&self, now: OffsetDateTime) -> bool {
        self.version == 1
            && self
                .expires()
                .is_some_and(|exp| (exp - now).whole_seconds() > MIN_REMAINING_SECS)
    }
}

/// The cache file for `entitlement` on `server` under `cache_dir/credentials`.
pub fn cache_path(cache_dir: &Path, server: &str, entitlement: &str) -> PathBuf {
    let readable: String = entitlement
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let key = fnv1a64(format!("{server}\n{entitlement}").as_bytes());
    cache_dir
        .join("credentials")
        .join(format!("{readable}-{key:016x}.json"))
}

/// The cached JSON line when the file exists, parses and is still fresh at `now`.
/// Anything else (missing, unreadable, stale) is a miss.
pub fn read_fresh(path: &Path, now: OffsetDateTime) -> Option<Vec<u8>> {
    let bytes = read_optional(path).ok()??;
    let creds: ProcessCredentials = serde_json::from_slice(&bytes).ok()?;
    creds.is_fresh(now).then_some(bytes)
}

/// The cache file of `entitlement` on the broker that `server_flag` (`--server` or
/// `JIT_SERVER`), else the saved settings, name, and its JSON line when it is fresh now.
/// Reads the settings file and the cache file only: no HTTP client, no token file.
pub fn lookup(
    dirs: &Dirs,
    server_flag: Option<&str>,
    entitlement: &str,
) -> Result<(PathBuf, Option<Vec<u8>>)> {
    let server = resolve_server(server_flag, &Settings::load(dirs)?)?;
    let path = cache_path(&dirs.cache, &server, entitlement);
    let line = read_fresh(&path, OffsetDateTime::now_utc());
    Ok((path, line))
}

/// Stores `creds` (0600, atomic replace).
pub fn store(path: &Path, creds: &ProcessCredentials) -> Result<()> {
    write_private(path, &creds.to_json_line()).map_err(|e| file_error("write", path, &e))
}

/// Deletes every cached credential; returns how many files went.
pub fn clear_all(cache_dir: &Path) -> Result<usize> {
    let dir = cache_dir.join("credentials");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(file_error("read", &dir, &e)),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry.map_err(|e| file_error("read", &dir, &e))?.path();
        if remove_optional(&path).map_err(|e| file_error("remove", &path, &e))? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// FNV-1a, 64 bit: a stable file-name key without a hashing dependency.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;

    fn creds(expiration: OffsetDateTime) -> ProcessCredentials {
        ProcessCredentials {
            version: 1,
            access_key_id: "ASIATESTKEY".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: "t0k3n".into(),
            expiration: expiration.format(&Rfc3339).unwrap(),
        }
    }

    #[test]
    fn prints_the_credential_process_shape() {
        let exp = OffsetDateTime::parse("2026-09-04T12:34:56Z", &Rfc3339).unwrap();
        let line = String::from_utf8(creds(exp).to_json_line()).unwrap();
        assert_eq!(
            line,
            "{\"Version\":1,\"AccessKeyId\":\"ASIATESTKEY\",\"SecretAccessKey\":\"s3cr3t\",\
             \"SessionToken\":\"t0k3n\",\"Expiration\":\"2026-09-04T12:34:56Z\"}\n"
        );
    }

    #[test]
    fn freshness_needs_more_than_five_minutes() {
        let now = OffsetDateTime::now_utc();
        assert!(creds(now + Duration::minutes(30)).is_fresh(now));
        assert!(creds(now + Duration::seconds(301)).is_fresh(now));
        assert!(!creds(now + Duration::seconds(300)).is_fresh(now));
        assert!(!creds(now + Duration::minutes(4)).is_fresh(now));
        assert!(!creds(now - Duration::minutes(1)).is_fresh(now));
        let mut bad = creds(now + Duration::hours(1));
        bad.expiration = "tomorrow".into();
        assert!(!bad.is_fresh(now));
    }

    #[test]
    fn cache_serves_fresh_entries_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let now = OffsetDateTime::now_utc();
        let path = cache_path(root, "http://127.0.0.1:8080", "prod-admin");
        assert!(read_fresh(&path, now).is_none(), "empty cache must miss");

        let fresh = creds(now + Duration::minutes(50));
        store(&path, &fresh).unwrap();
        assert_eq!(read_fresh(&path, now), Some(fresh.to_json_line()));

        let stale = creds(now + Duration::minutes(4));
        store(&path, &stale).unwrap();
        assert!(
            read_fresh(&path, now).is_none(),
            "entry within 5 minutes must miss"
        );

        std::fs::write(&path, b"not json").unwrap();
        assert!(read_fresh(&path, now).is_none(), "garbage must miss");

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            store(&path, &fresh).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dir_mode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dir_mode & 0o777, 0o700);
        }
        assert_eq!(clear_all(root).unwrap(), 1);
        assert!(read_fresh(&path, now).is_none());
    }

    #[test]
    fn lookup_finds_the_entry_of_the_broker_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = Dirs {
            config: tmp.path().join("config"),
            cache: tmp.path().join("cache"),
        };
        let err = lookup(&dirs, None, "prod-admin").unwrap_err();
        assert!(
            err.line().contains("no jit server configured"),
            "{}",
            err.line()
        );
        Settings {
            server: Some("https://saved.example".into()),
        }
        .save(&dirs)
        .unwrap();
        let fresh = creds(OffsetDateTime::now_utc() + Duration::minutes(50));
        let saved = cache_path(&dirs.cache, "https://saved.example", "prod-admin");
        store(&saved, &fresh).unwrap();
        assert_eq!(
            lookup(&dirs, None, "prod-admin").unwrap(),
            (saved.clone(), Some(fresh.to_json_line()))
        );
        // `--server` (or `JIT_SERVER`) wins over the saved one, trailing slash or not.
        let (other, line) = lookup(&dirs, Some("https://other.example/"), "prod-admin").unwrap();
        assert_eq!(
            other,
            cache_path(&dirs.cache, "https://other.example", "prod-admin")
        );
        assert_eq!(line, None);
        assert_eq!(lookup(&dirs, None, "prod-read").unwrap().1, None);
    }

    #[test]
    fn cache_key_separates_servers_and_entitlements() {
        let root = Path::new("/c");
        let a = cache_path(root, "https://a", "prod-admin");
        let b = cache_path(root, "https://b", "prod-admin");
        let c = cache_path(root, "https://a", "prod-read");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, cache_path(root, "https://a", "prod-admin"));
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("prod-admin-")
                && Path::new(&name).extension().is_some_and(|e| e == "json"),
            "{name}"
        );
        let odd = cache_path(root, "https://a", "../../etc/passwd");
        assert_eq!(odd.parent().unwrap(), root.join("credentials"));
    }

    #[test]
    fn debug_hides_secrets() {
        let text = format!("{:?}", creds(OffsetDateTime::now_utc()));
        assert!(
            !text.contains("s3cr3t") && !text.contains("t0k3n"),
            "{text}"
        );
    }
}
