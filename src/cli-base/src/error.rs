//! The one error type of the CLI: a message, what to do next, and an exit code.

use std::fmt;
use std::process::ExitCode;

/// Exit code for a failed command.
pub const EXIT_ERROR: u8 = 1;
/// Exit code of `request --wait` when the request ended without access
/// (denied, timed out, failed, cancelled, revoked or expired).
pub const EXIT_NOT_GRANTED: u8 = 2;

/// An error as the user sees it: one line on stderr and a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    message: String,
    hint: Option<String>,
    exit: u8,
}

impl CliError {
    /// An error with exit code 1 and no hint.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
            exit: EXIT_ERROR,
        }
    }

    /// Adds what to do next, e.g. "run `jit login`".
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a hint only when none is set yet.
    #[must_use]
    pub fn or_hint(self, hint: impl Into<String>) -> Self {
        if self.hint.is_some() {
            self
        } else {
            self.hint(hint)
        }
    }

    /// Replaces the exit code.
    #[must_use]
    pub fn with_exit(mut self, exit: u8) -> Self {
        self.exit = exit;
        self
    }

    /// The message without the hint.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The hint, when there is one.
    pub fn hint_text(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        self.exit
    }

    /// The process exit code as an [`ExitCode`].
    pub fn exit(&self) -> ExitCode {
        ExitCode::from(self.exit)
    }

    /// The single stderr line: `error: <message>: <hint>`.
    pub fn line(&self) -> String {
        let mut out = format!("error: {}", one_line(&self.message));
        if let Some(hint) = &self.hint {
            out.push_str(": ");
            out.push_str(&one_line(hint));
        }
        out
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())
    }
}

impl std::error::Error for CliError {}

/// Folds any whitespace run (newlines included) into one space and drops a
/// trailing period, so a message always fits the one-line error format.
pub fn one_line(text: &str) -> String {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    folded.trim_end_matches('.').to_owned()
}

/// Shorthand for results of CLI operations.
pub type Result<T, E = CliError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_message_and_hint_on_one_line() {
        let err = CliError::new("not signed in").hint("run `jit login`");
        assert_eq!(err.line(), "error: not signed in: run `jit login`");
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn folds_newlines_and_trailing_period() {
        let err = CliError::new("the broker said:\n  something  broke.\n");
        assert_eq!(err.line(), "error: the broker said: something broke");
        assert!(!err.line().contains('\n'));
    }

    #[test]
    fn or_hint_keeps_the_first_hint() {
        let err = CliError::new("x").hint("first").or_hint("second");
        assert_eq!(err.hint_text(), Some("first"));
        let err = CliError::new("x").or_hint("second");
        assert_eq!(err.hint_text(), Some("second"));
    }

    #[test]
    fn exit_code_can_be_changed() {
        let err = CliError::new("denied").with_exit(EXIT_NOT_GRANTED);
        assert_eq!(err.exit_code(), 2);
    }
}
