//! The commands: each turns parsed arguments into API calls and output.

mod aws;
mod catalog;
mod login;
mod requests;

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::CommandFactory;
use serde_json::Value;

use crate::api::Api;
use crate::args::{AuditCommand, Cli, Command};
use crate::dirs::Dirs;
use crate::error::{CliError, Result};
use crate::output::{self, Output};
use crate::session::{Settings, resolve_server};

/// What every command needs: where files live, which broker, how to print.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Config and cache directories.
    pub dirs: Dirs,
    /// `--server` / `JIT_SERVER`.
    pub server_flag: Option<String>,
    /// `--output`.
    pub output: Output,
    /// `JIT_INSECURE_HTTP=1`: allow plain http to non-loopback hosts.
    pub allow_insecure: bool,
    /// A graphical session exists, so a browser can be opened.
    pub graphical: bool,
}

impl Ctx {
    /// Builds the context from the process environment.
    pub fn from_env(server_flag: Option<String>, output: Output) -> Result<Self> {
        Ok(Self {
            dirs: Dirs::from_env()?,
            server_flag,
            output,
            allow_insecure: std::env::var("JIT_INSECURE_HTTP")
                .is_ok_and(|v| v == "1" || v == "true"),
            graphical: crate::browser::has_display(),
        })
    }

    /// The broker URL: `--server`, `JIT_SERVER`, else the one saved at login.
    pub fn server(&self) -> Result<String> {
        let settings = Settings::load(&self.dirs)?;
        resolve_server(self.server_flag.as_deref(), &settings)
    }

    /// A signed-in API client.
    pub fn api(&self) -> Result<Api> {
        Api::connect(
            &self.dirs,
            &self.server()?,
            self.allow_insecure,
            self.graphical,
        )
    }

    /// True for `--output json`.
    pub fn json(&self) -> bool {
        self.output == Output::Json
    }
}

/// Writes to stdout; a closed pipe (`jit status | head`) is not an error.
pub fn emit(text: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// The broker's JSON answer on stdout, exactly as it was sent.
pub fn emit_json(raw: &str) {
    let mut text = raw.trim_end().to_owned();
    text.push('\n');
    emit(&text);
}

/// JSON the CLI made itself (for commands without an API object), pretty.
pub fn emit_value(value: &Value) {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    emit(&text);
}

/// Runs a parsed command line; the exit code on success.
pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    // Completions need nothing from the environment.
    if let Command::Completions(args) = &cli.command {
        let mut cmd = Cli::command();
        let mut buf = Vec::new();
        clap_complete::generate(args.shell, &mut cmd, "jit", &mut buf);
        emit(&String::from_utf8_lossy(&buf));
        return Ok(ExitCode::SUCCESS);
    }
    let ctx = Ctx::from_env(cli.server, cli.output)?;
    match cli.command {
        Command::CredentialProcess(args) => aws::credential_process(&ctx, &args.entitlement),
        Command::Exec(args) => aws::exec(&ctx, &args),
        Command::Console(args) => aws::console(&ctx, &args),
        Command::Login(args) => login::login(&ctx, &args),
        Command::Logout => login::logout(&ctx),
        Command::Whoami => login::whoami(&ctx),
        Command::Entitlements => entitlements(&ctx),
        Command::Request(args) => requests::request(&ctx, &args),
        Command::Status(args) => requests::status(&ctx, &args),
        Command::Show(args) => requests::show(&ctx, &args.id),
        Command::Approve(args) => requests::decide(&ctx, &args, requests::Decide::Approve),
        Command::Deny(args) => requests::decide(&ctx, &args, requests::Decide::Deny),
        Command::Cancel(args) => requests::end(&ctx, &args.id, requests::End::Cancel),
        Command::Revoke(args) => requests::end(&ctx, &args.id, requests::End::Revoke),
        Command::Extend(args) => requests::extend(&ctx, &args),
        Command::Audit(AuditCommand::Verify { full }) => audit_verify(&ctx, full),
        Command::Completions(_) => Ok(ExitCode::SUCCESS),
    }
}

fn entitlements(ctx: &Ctx) -> Result<ExitCode> {
    let mut api = ctx.api()?;
    let list = api.get::<Vec<jit_api::Entitlement>>("/entitlements", &[])?;
    if ctx.json() {
        emit_json(&list.raw);
    } else {
        emit(&output::entitlements(&list.value));
    }
    Ok(ExitCode::SUCCESS)
}

fn audit_verify(ctx: &Ctx, full: bool) -> Result<ExitCode> {
    let mut api = ctx.api()?;
    let query: &[(&str, &str)] = if full { &[("full", "true")] } else { &[] };
    let report = api.get::<jit_api::VerifyReport>("/audit/verify", query)?;
    if ctx.json() {
        emit_json(&report.raw);
    } else {
        emit(&output::verify_report(&report.value));
    }
    if report.value.ok {
        return Ok(ExitCode::SUCCESS);
    }
    let at = report.value.first_bad_seq.map_or_else(
        || "the audit chain is broken".to_owned(),
        |s| format!("the audit chain is broken at seq {s}"),
    );
    let msg = match &report.value.problem {
        Some(p) => format!("{at} ({p})"),
        None => at,
    };
    Err(CliError::new(msg).hint("investigate with `jit-server audit verify` against the database"))
}

/// The terminal of the person running `jit`, to tell and to ask: stdin and stderr when both
/// are one; otherwise the controlling terminal (`/dev/tty`), which is still theirs when a
/// program runs `jit` with its output captured (the AWS CLI runs `credential_process` so).
pub enum Console {
    /// Stdin and stderr.
    Std,
    /// The controlling terminal.
    Tty(std::fs::File),
}

impl Console {
    /// The terminal to ask at; `None` without one, or when `JIT_TERMINAL_PROMPT=0` (for
    /// scripts that must never be asked, as `GIT_TERMINAL_PROMPT=0` is for git).
    pub fn open() -> Option<Self> {
        if std::env::var_os("JIT_TERMINAL_PROMPT").is_some_and(|v| v == "0") {
            return None;
        }
        if io::stdin().is_terminal() && io::stderr().is_terminal() {
            return Some(Self::Std);
        }
        // Fails (ENXIO) for a process without a controlling terminal: cron, CI, services.
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .ok()
            .map(Self::Tty)
    }

    /// Writes `text` and a line break.
    pub fn say(&mut self, text: &str) {
        self.write(&format!("{text}\n"));
    }

    fn write(&mut self, text: &str) {
        let _ = match self {
            Self::Std => io::stderr().write_all(text.as_bytes()),
            Self::Tty(tty) => tty.write_all(text.as_bytes()),
        };
    }

    /// Reads one line after `question`; `None` when the answer is empty or cannot be read.
    pub fn ask(&mut self, question: &str) -> Option<String> {
        self.write(question);
        let mut line = String::new();
        match self {
            Self::Std => {
                let _ = io::stderr().flush();
                io::stdin().read_line(&mut line).ok()?;
            }
            // A terminal in canonical mode hands over one line per read, so nothing past the
            // answer is lost with the reader.
            Self::Tty(tty) => {
                io::BufReader::new(&*tty).read_line(&mut line).ok()?;
            }
        }
        let line = line.trim().to_owned();
        (!line.is_empty()).then_some(line)
    }
}

/// Reads one line from the person at the terminal ([`Console`]) after `question`; `None`
/// without a terminal, or when the answer is empty.
pub fn prompt(question: &str) -> Option<String> {
    Console::open()?.ask(question)
}
