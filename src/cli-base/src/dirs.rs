//! Where the CLI keeps its files, and how it writes them (0600 files in 0700 directories).

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};

/// The CLI's directories: tokens and settings in `config`, cached AWS
/// credentials in `cache`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// `$JIT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/jit`, else `~/.config/jit`.
    pub config: PathBuf,
    /// `$JIT_CACHE_DIR`, else `$XDG_CACHE_HOME/jit`, else `~/.cache/jit`.
    pub cache: PathBuf,
}

impl Dirs {
    /// Resolves the directories from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::resolve(|name| std::env::var_os(name))
    }

    /// Resolves the directories with `var` standing in for the environment.
    pub fn resolve(var: impl Fn(&str) -> Option<OsString>) -> Result<Self> {
        let non_empty = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = non_empty("HOME");
        let pick = |own: &str, xdg: &str, fallback: &str| -> Result<PathBuf> {
            if let Some(dir) = non_empty(own) {
                return Ok(dir);
            }
            if let Some(dir) = non_empty(xdg) {
                return Ok(dir.join("jit"));
            }
            home.as_ref()
                .map(|h| h.join(fallback).join("jit"))
                .ok_or_else(|| {
                    CliError::new(format!("cannot find a directory for jit's files: `{own}`, `{xdg}` and `HOME` are unset"))
                        .hint(format!("set `{own}`"))
                })
        };
        Ok(Self {
            config: pick("JIT_CONFIG_DIR", "XDG_CONFIG_HOME", ".config")?,
            cache: pick("JIT_CACHE_DIR", "XDG_CACHE_HOME", ".cache")?,
        })
    }

    /// The saved settings (server URL).
    pub fn settings_file(&self) -> PathBuf {
        self.config.join("config.json")
    }

    /// The cached sign-in tokens.
    pub fn tokens_file(&self) -> PathBuf {
        self.config.join("tokens.json")
    }

    /// The directory of cached AWS credentials.
    pub fn credentials_dir(&self) -> PathBuf {
        self.cache.join("credentials")
    }
}

/// Creates `dir` (and missing parents) private to the user: mode 0700.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir)?;
        // The directory may have existed with looser bits; it is ours, tighten it.
        let meta = fs::metadata(dir)?;
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        builder.create(dir)
    }
}

/// Writes `bytes` to `path` atomically: a fresh file created with mode 0600
/// next to it, then renamed over it. Readers never see a half-written file.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("file has no parent directory"))?;
    ensure_private_dir(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("file has no name"))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = open_private(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn open_private(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Reads a file, `None` when it does not exist.
pub fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a file; a missing file is fine.
pub fn remove_optional(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Maps an IO error on one of jit's files to a user-facing error.
pub fn file_error(action: &str, path: &Path, err: &io::Error) -> CliError {
    CliError::new(format!("cannot {action} `{}`: {err}", path.display()))
        .hint("check the permissions of jit's config and cache directories")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn jit_variables_win() {
        let dirs = Dirs::resolve(env(&[
            ("JIT_CONFIG_DIR", "/c"),
            ("JIT_CACHE_DIR", "/k"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/home/u"),
        ]))
        .unwrap();
        assert_eq!(dirs.config, PathBuf::from("/c"));
        assert_eq!(dirs.cache, PathBuf::from("/k"));
    }

    #[test]
    fn xdg_then_home() {
        let dirs = Dirs::resolve(env(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/home/u")])).unwrap();
        assert_eq!(dirs.config, PathBuf::from("/x/jit"));
        assert_eq!(dirs.cache, PathBuf::from("/home/u/.cache/jit"));
        let dirs = Dirs::resolve(env(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "")])).unwrap();
        assert_eq!(dirs.config, PathBuf::from("/home/u/.config/jit"));
        assert_eq!(dirs.cache, PathBuf::from("/home/u/.cache/jit"));
    }

    #[test]
    fn no_home_is_an_error_naming_the_variable() {
        let err = Dirs::resolve(env(&[])).unwrap_err();
        assert!(err.line().contains("JIT_CONFIG_DIR"), "{}", err.line());
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_0600_in_0700_dirs() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        let file = dir.join("secret.json");
        write_private(&file, b"{}").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // Overwriting keeps the mode and replaces the content.
        write_private(&file, b"{\"x\":1}").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(fs::read(&file).unwrap(), b"{\"x\":1}");
        // A pre-existing loose directory is tightened.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        write_private(&file, b"{}").unwrap();
        assert_eq!(mode(&dir), 0o700);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("secret.json")]);
    }
}
