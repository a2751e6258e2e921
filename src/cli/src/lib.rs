//! The `jit` command-line client: a typed client of the broker's JSON API
//! (`/api/v1`), sign-in (device flow or development mode), an on-disk AWS
//! credential cache, and the commands the `jit` binary runs.
//!
//! It depends on `jit-api`, `jit-cli-base` (errors, files, settings and the credential
//! cache, shared with the small `jit` program) and client-side crates only: never on the
//! server. This is the `jit-client` program; `jit` runs it for every command but a
//! `credential-process` cache hit.

pub mod api;
pub mod args;
pub mod browser;
pub mod commands;
pub mod http;
pub mod oauth;
pub mod output;
pub mod session;
pub mod step_up;

pub use jit_cli_base::{credcache, dirs, error};

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

pub use error::{CliError, EXIT_ERROR, EXIT_NOT_GRANTED};

/// Runs `jit-client` (what `jit` runs) with the process arguments; prints errors as one
/// line on stderr.
pub fn run() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match args::Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(err) => return usage_exit(&err, &command_path(&argv)),
    };
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}", err.line());
            err.exit()
        }
    }
}

/// Help and version go to stdout with exit 0; usage errors become one line.
fn usage_exit(err: &clap::Error, command: &str) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            ExitCode::from(EXIT_ERROR)
        }
        _ => {
            eprintln!("{}", usage_error(&err.render().to_string(), command).line());
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// The subcommand path the arguments name, e.g. `jit audit verify`.
pub fn command_path(argv: &[std::ffi::OsString]) -> String {
    let mut cmd = <args::Cli as clap::CommandFactory>::command();
    let mut path = vec!["jit".to_owned()];
    for arg in argv.iter().skip(1) {
        let Some(arg) = arg.to_str() else { break };
        if arg == "--" {
            break;
        }
        let Some(sub) = cmd.find_subcommand(arg).cloned() else {
            continue;
        };
        path.push(sub.get_name().to_owned());
        cmd = sub;
    }
    path.join(" ")
}

/// Folds clap's multi-line usage error into one line:
/// ``error: … (tip: …): see `jit X --help` ``.
pub fn usage_error(rendered: &str, command: &str) -> CliError {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let mut message = first
        .strip_prefix("error:")
        .unwrap_or(first)
        .trim()
        .to_owned();
    let mut details = Vec::new();
    let mut tips = Vec::new();
    for line in lines {
        if let Some(tip) = line.strip_prefix("tip:") {
            tips.push(tip.trim().to_owned());
        } else if !line.starts_with("Usage:") && !line.starts_with("For more information") {
            details.push(line.to_owned());
        }
    }
    if !details.is_empty() {
        let sep = if message.ends_with(':') { " " } else { ": " };
        let _ = write!(message, "{sep}{}", details.join(", "));
    }
    for tip in tips {
        let _ = write!(message, " (tip: {tip})");
    }
    CliError::new(message).hint(format!("see `{command} --help`"))
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::PathBuf;

    /// A fresh directory under the system temp dir.
    pub(crate) fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "jit-cli-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn clap_line(words: &[&str]) -> String {
        let err = args::Cli::try_parse_from(words).unwrap_err();
        let argv: Vec<std::ffi::OsString> = words.iter().map(Into::into).collect();
        usage_error(&err.render().to_string(), &command_path(&argv)).line()
    }

    #[test]
    fn usage_errors_are_one_line_with_a_next_step() {
        let line = clap_line(&["jit", "request", "prod", "--reason", "x"]);
        assert!(!line.contains('\n'));
        assert!(
            line.starts_with("error: the following required arguments were not provided"),
            "{line}"
        );
        assert!(line.ends_with("see `jit request --help`"), "{line}");

        let line = clap_line(&["jit", "stauts"]);
        assert!(
            line.contains("(tip: ") && line.contains("'status'"),
            "{line}"
        );
        assert!(line.ends_with("see `jit --help`"), "{line}");

        let line = clap_line(&["jit", "-o", "json", "request", "x", "-d", "soon", "-r", "y"]);
        assert!(line.contains("invalid duration `soon`"), "{line}");
        assert!(line.ends_with("see `jit request --help`"), "{line}");

        let line = clap_line(&["jit", "audit", "verify", "--bogus"]);
        assert!(line.ends_with("see `jit audit verify --help`"), "{line}");
    }
}
