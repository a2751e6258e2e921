//! The `jit` program: a `credential-process` cache hit answered here, everything else
//! handed to `jit-client`, the full client installed beside it.
//!
//! The AWS CLI and SDKs run `jit credential-process ENT` before their calls whenever their
//! credentials are near expiry, and nearly always the cache answers. A program that links
//! the HTTP client starts with aws-lc's CPU-feature probe and thousands of relocations, and
//! one that parses its arguments with clap builds the whole command tree first: together
//! more than half again the time of `cat` of the cache file. This program links no more
//! than it needs for the cache hit and costs about what `cat` costs (docs/performance.md).
//! On a miss, or for any other command line, it replaces itself with `jit-client` and the
//! same arguments (`argv[0]` included, so messages say `jit`), which checks the cache again
//! and mints.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use crate::credcache;
use crate::dirs::Dirs;
use crate::error::CliError;

/// The full client's program name, looked for in the directory of `jit`.
pub const CLIENT: &str = "jit-client";

/// Runs `jit` with the process arguments.
pub fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if let Some(line) = credential_process_hit(&argv) {
        // As `jit-client` prints it; a closed pipe is not an error.
        let mut out = io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.flush();
        return ExitCode::SUCCESS;
    }
    let err = match client_path() {
        Ok(client) => run_client(&client, &argv),
        Err(err) => err,
    };
    eprintln!("{}", err.line());
    err.exit()
}

/// The cached `credential_process` line when `argv` is a plain `credential-process`
/// command line ([`credential_process_args`]) and the cache entry is fresh: the file as
/// it is, which `jit-client` would print too (it looks it up with the same
/// [`credcache::lookup`]). `None` otherwise, errors included: `jit-client` reports them.
pub fn credential_process_hit(argv: &[OsString]) -> Option<Vec<u8>> {
    let (flag, entitlement) = credential_process_args(argv)?;
    // As clap reads `--server`: the command line first, else `JIT_SERVER` (which clap
    // refuses when it is not UTF-8; `jit-client` says so).
    let server_flag = match flag {
        Some(flag) => Some(flag.to_owned()),
        None => match std::env::var_os("JIT_SERVER") {
            Some(value) => Some(value.into_string().ok()?),
            None => None,
        },
    };
    let dirs = Dirs::from_env().ok()?;
    credcache::lookup(&dirs, server_flag.as_deref(), entitlement)
        .ok()?
        .1
}

/// The `--server` value, if any, and the entitlement of
/// `jit [--server URL | --server=URL] credential-process ENTITLEMENT`, the forms an AWS
/// profile uses. `None` for any other command line, which `jit-client` parses with clap
/// (so `--help`, usage errors and the other flags are clap's). Every value accepted here
/// is one clap reads the same way (the `jit` crate's tests check this against its
/// parser): UTF-8, not empty, not starting with `-`.
pub fn credential_process_args(argv: &[OsString]) -> Option<(Option<&str>, &str)> {
    let words = argv.get(1..)?;
    let (server, rest) = if let [flag, value, rest @ ..] = words
        && *flag == "--server"
    {
        (Some(plain(value)?), rest)
    } else if let [flag, rest @ ..] = words
        && let Some(value) = flag.to_str().and_then(|f| f.strip_prefix("--server="))
    {
        (Some(Some(value).filter(|v| is_plain(v))?), rest)
    } else {
        (None, words)
    };
    match rest {
        [command, entitlement] if *command == "credential-process" => {
            Some((server, plain(entitlement)?))
        }
        _ => None,
    }
}

/// A UTF-8 argument that is not empty and not an option: a value clap takes as it is.
fn plain(arg: &OsString) -> Option<&str> {
    arg.to_str().filter(|text| is_plain(text))
}

fn is_plain(text: &str) -> bool {
    !text.is_empty() && !text.starts_with('-')
}

/// `jit-client` in the directory of the running `jit` (symbolic links resolved).
fn client_path() -> Result<PathBuf, CliError> {
    let exe = std::env::current_exe().map_err(|e| {
        CliError::new(format!("cannot find where `jit` is installed: {e}"))
            .hint(format!("run `{CLIENT}` instead"))
    })?;
    Ok(exe.with_file_name(format!("{CLIENT}{}", std::env::consts::EXE_SUFFIX)))
}

/// Replaces this process with `client` and the same arguments; returns only on failure.
#[cfg(unix)]
fn run_client(client: &std::path::Path, argv: &[OsString]) -> CliError {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(client);
    if let Some(arg0) = argv.first() {
        cmd.arg0(arg0);
    }
    let err = cmd.args(argv.iter().skip(1)).exec();
    client_error(client, &err)
}

/// Runs `client` with the same arguments and exits with its exit code.
#[cfg(not(unix))]
fn run_client(client: &std::path::Path, argv: &[OsString]) -> CliError {
    match Command::new(client).args(argv.iter().skip(1)).status() {
        Ok(status) => std::process::exit(status.code().unwrap_or(1)),
        Err(err) => client_error(client, &err),
    }
}

fn client_error(client: &std::path::Path, err: &io::Error) -> CliError {
    CliError::new(format!("cannot run `{}`: {err}", client.display())).hint(format!(
        "install `{CLIENT}` beside `jit` (`cargo install --path src/cli` installs both)"
    ))
}

#[cfg(test)]
mod tests {
    // What `jit` answers itself is tested against clap in the `jit` crate
    // (`args::tests::the_credential_process_shortcut_reads_what_clap_reads`).
    use super::*;

    #[test]
    fn the_client_is_looked_for_beside_jit() {
        let path = client_path().unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(path.parent(), exe.parent());
        assert_eq!(
            path.file_name().unwrap().to_string_lossy(),
            format!("jit-client{}", std::env::consts::EXE_SUFFIX)
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_missing_client_is_one_line_that_says_what_to_install() {
        let argv = ["jit", "status"].map(OsString::from);
        let err = run_client(std::path::Path::new("/nonexistent/jit-client"), &argv);
        let line = err.line();
        assert!(
            line.starts_with("error: cannot run `/nonexistent/jit-client`: "),
            "{line}"
        );
        assert!(
            line.ends_with("(`cargo install --path src/cli` installs both)"),
            "{line}"
        );
        assert_eq!(err.exit_code(), 1);
    }
}
