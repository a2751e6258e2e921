//! The `jit` command-line client: a typed client of the broker's JSON API
//! (`/api/v1`), sign-in (device flow or development mode), an on-disk AWS
//! credential cache, and the commands the `jit` binary runs.
//!
//! It depends on `jit-api` and client-side crates only: never on the server.

pub mod api;
pub mod args;
pub mod browser;
pub mod commands;
pub mod credcache;
pub mod dirs;
pub mod error;
pub mod http;
pub mod oauth;
pub mod output;
pub mod session;

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

pub use error::{CliError, EXIT_ERROR, EXIT_NOT_GRANTED};

/// Runs `jit` with the process arguments; prints errors as one line on stderr.
pub fn run() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_exit(&err),
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
fn usage_exit(err: &clap::Error) -> ExitCode {
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
            eprintln!("{}", usage_error(&err.render().to_string()).line());
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Folds clap's multi-line usage error into one line:
/// ``error: … (tip: …): see `jit X --help` ``.
pub fn usage_error(rendered: &str) -> CliError {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let mut message = first
        .strip_prefix("error:")
        .unwrap_or(first)
        .trim()
        .to_owned();
    let mut command = "jit".to_owned();
    let mut details = Vec::new();
    let mut tips = Vec::new();
    for line in lines {
        if let Some(tip) = line.strip_prefix("tip:") {
            tips.push(tip.trim().to_owned());
        } else if let Some(usage) = line.strip_prefix("Usage:") {
            command = usage
                .split_whitespace()
                .take_while(|w| {
                    !w.starts_with('-') && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                })
                .collect::<Vec<_>>()
                .join(" ");
        } else if !line.starts_with("For more information") {
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

    fn clap_line(args: &[&str]) -> String {
        let err = args::Cli::try_parse_from(args).unwrap_err();
        usage_error(&err.render().to_string()).line()
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

        let line = clap_line(&["jit", "audit", "verify", "--bogus"]);
        assert!(line.ends_with("see `jit audit verify --help`"), "{line}");
    }
}
