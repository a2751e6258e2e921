//! Command-line arguments.

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

use crate::output::Output;

const MAIN_EXAMPLES: &str = "\
Examples:
  jit login --server https://jit.example.com
  jit entitlements
  jit request aws-prod-admin --duration 1h --reason \"INC-4711: fix replication\" --wait
  jit exec aws-prod-admin -- aws sts get-caller-identity
  jit status --output json

In ~/.aws/config:
  [profile prod-admin]
  credential_process = jit credential-process aws-prod-admin";

/// Just-in-time privileged access from the terminal.
#[derive(Debug, Parser)]
#[command(name = "jit", version, propagate_version = true, after_help = MAIN_EXAMPLES)]
pub struct Cli {
    /// Broker URL (default: the one saved by `jit login`).
    #[arg(long, global = true, env = "JIT_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// How to print results.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sign in to the broker (device code flow, or a demo user in development mode).
    #[command(after_help = "\
Examples:
  jit login --server https://jit.example.com
  jit login --server https://jit.example.com --no-browser
  jit login --server http://127.0.0.1:8080 --user alice      (jit-server serve --dev)")]
    Login(LoginArgs),
    /// Forget the saved sign-in and cached credentials.
    #[command(after_help = "Example:\n  jit logout")]
    Logout,
    /// Show who the broker thinks you are.
    #[command(after_help = "Examples:\n  jit whoami\n  jit whoami --output json")]
    Whoami,
    /// List what you may request, with limits.
    #[command(
        after_help = "Examples:\n  jit entitlements\n  jit entitlements -o json | jq -r '.[].id'"
    )]
    Entitlements,
    /// Ask for an entitlement for a while.
    #[command(after_help = "\
Examples:
  jit request aws-prod-admin --duration 1h --reason \"INC-4711: fix replication\" --wait
  jit request entra-user-admin --duration 30m --reason \"unlock a locked-out user\" --ticket INC-4711
  jit request aws-prod-admin --duration 1h --reason \"outage\" --break-glass

Exit codes with --wait: 0 when access is active; 2 when the request was denied,
timed out, failed, was cancelled, revoked or expired; 1 on other errors.")]
    Request(RequestArgs),
    /// Show my requests and active grants.
    #[command(
        after_help = "Examples:\n  jit status\n  jit status --limit 50\n  jit status --all\n  jit status -o json"
    )]
    Status(StatusArgs),
    /// Show one request and its timeline.
    #[command(
        after_help = "Examples:\n  jit show 0b7c6f2e\n  jit show 01a226a8-aece-7068-948f-b7f20b7c6f2e -o json"
    )]
    Show(IdArg),
    /// Approve someone's request.
    #[command(
        after_help = "Examples:\n  jit approve 0b7c6f2e\n  jit approve 0b7c6f2e --comment \"ok for the incident\""
    )]
    Approve(DecideArgs),
    /// Deny someone's request.
    #[command(after_help = "Example:\n  jit deny 0b7c6f2e --comment \"use the read-only role\"")]
    Deny(DecideArgs),
    /// Withdraw my pending request.
    #[command(after_help = "Example:\n  jit cancel 0b7c6f2e")]
    Cancel(IdArg),
    /// End an active grant now, with its extensions (the whole access).
    #[command(after_help = "Example:\n  jit revoke 0b7c6f2e")]
    Revoke(IdArg),
    /// Ask for more time on an active grant (a new approval).
    #[command(
        after_help = "Examples:\n  jit extend 0b7c6f2e --by 30m\n  jit extend 0b7c6f2e --by 1h --reason \"still rolling back\" --wait"
    )]
    Extend(ExtendArgs),
    /// Print AWS credentials for an active grant (for `credential_process`).
    #[command(after_help = "\
In ~/.aws/config:
  [profile prod-admin]
  credential_process = jit credential-process aws-prod-admin

Credentials are cached on disk (0600) and re-minted when less than 5 minutes remain.
Without an active grant, jit asks at your terminal for a reason, files the request and waits
for it (also under the AWS CLI, which captures its output); without a terminal, or with
JIT_TERMINAL_PROMPT=0, it fails naming the command to run.

Example:
  jit credential-process aws-prod-admin")]
    CredentialProcess(EntitlementArg),
    /// Run a command with AWS credentials of an active grant in its environment.
    #[command(after_help = "\
Examples:
  jit exec aws-prod-admin -- aws sts get-caller-identity
  jit exec aws-prod-admin --region eu-west-1 -- terraform plan")]
    Exec(ExecArgs),
    /// Open the AWS console for an active grant (or print the sign-in URL).
    #[command(
        after_help = "Examples:\n  jit console aws-prod-admin\n  jit console aws-prod-admin --print"
    )]
    Console(ConsoleArgs),
    /// Audit log operations.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a shell completion script.
    #[command(after_help = "\
Examples:
  jit completions bash > ~/.local/share/bash-completion/completions/jit
  jit completions zsh > \"${fpath[1]}/_jit\"
  jit completions fish > ~/.config/fish/completions/jit.fish")]
    Completions(CompletionsArgs),
}

/// `jit login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Demo user to sign in as, when the broker runs in development mode.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Do not try to open a browser; just print the URL and code.
    #[arg(long)]
    pub no_browser: bool,
}

/// `jit request`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// Entitlement id (see `jit entitlements`).
    #[arg(value_name = "ENTITLEMENT")]
    pub entitlement: String,
    /// How long, e.g. `30m`, `1h`, `1h30m`.
    #[arg(long, short = 'd', value_parser = parse_duration_arg)]
    pub duration: String,
    /// Why you need it (shown to approvers and kept in the audit log).
    #[arg(long, short = 'r', visible_alias = "justification")]
    pub reason: String,
    /// Ticket or incident reference.
    #[arg(long, short = 't', value_name = "ID")]
    pub ticket: Option<String>,
    /// Emergency access: granted at once, everyone is notified, reviewed afterwards.
    #[arg(long)]
    pub break_glass: bool,
    /// Scheduled access: start at this time (RFC 3339, e.g. `2026-12-24T09:00:00Z`), at most
    /// 7 days ahead unless the entitlement allows more; approved in advance, it ends
    /// `--duration` after it starts.
    #[arg(long, value_name = "TIME", value_parser = parse_start_arg)]
    pub start_at: Option<time::OffsetDateTime>,
    /// Wait until the request is active or scheduled (or ends without access).
    #[arg(long, short = 'w')]
    pub wait: bool,
}

/// `jit status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show every request, not just the 20 most recent.
    #[arg(long, conflicts_with = "limit")]
    pub all: bool,
    /// Show the N most recent requests (default 20); active grants are always shown.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
}

/// A request id argument.
#[derive(Debug, Args)]
pub struct IdArg {
    /// Request id, or the 8 characters `jit status` shows (any unique end or beginning of the id).
    #[arg(value_name = "ID")]
    pub id: String,
}

/// `jit approve|deny`.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// Request id, or the 8 characters `jit status` shows.
    #[arg(value_name = "ID")]
    pub id: String,
    /// A note for the requester.
    #[arg(long, short = 'c')]
    pub comment: Option<String>,
}

/// `jit extend`.
#[derive(Debug, Args)]
pub struct ExtendArgs {
    /// Request id of the active grant, or the 8 characters `jit status` shows.
    #[arg(value_name = "ID")]
    pub id: String,
    /// How much longer, e.g. `30m`.
    #[arg(long, value_parser = parse_duration_arg)]
    pub by: String,
    /// Why (defaults to the original reason).
    #[arg(long, short = 'r', visible_alias = "justification")]
    pub reason: Option<String>,
    /// Wait until the extension is active (or ends without access).
    #[arg(long, short = 'w')]
    pub wait: bool,
}

/// An entitlement argument.
#[derive(Debug, Args)]
pub struct EntitlementArg {
    /// Entitlement id with an active grant.
    #[arg(value_name = "ENTITLEMENT")]
    pub entitlement: String,
}

/// `jit exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Entitlement id with an active grant.
    #[arg(value_name = "ENTITLEMENT")]
    pub entitlement: String,
    /// AWS region for the command (default: `AWS_REGION`, `AWS_DEFAULT_REGION`, else us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `jit console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Entitlement id with an active grant.
    #[arg(value_name = "ENTITLEMENT")]
    pub entitlement: String,
    /// Print the sign-in URL instead of opening a browser.
    #[arg(long)]
    pub print: bool,
}

/// `jit audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Ask the broker to verify the audit hash chain.
    #[command(after_help = "\
Examples:
  jit audit verify
  jit audit verify --full
  jit audit verify -o json

The broker checks in steps: from the newest event it verified before on (the first check after
it starts reads everything). --full recomputes every event, and also finds an older event edited
since the last check. Exits 1 when the chain is broken, naming the first bad sequence number.")]
    Verify {
        /// Recompute the whole chain, not only what was added since the broker's last check.
        #[arg(long)]
        full: bool,
    },
}

/// `jit completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to generate for.
    #[arg(value_enum)]
    pub shell: Shell,
}

fn parse_start_arg(text: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(
        |_| format!("invalid time `{text}`: give a date and time like `2026-12-24T09:00:00Z`"),
    )
}

fn parse_duration_arg(text: &str) -> Result<String, String> {
    jit_api::parse_duration(text)
        .map(|_| text.trim().to_owned())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use clap::CommandFactory;
    use jit_cli_base::front::credential_process_args;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("jit").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn request_with_everything() {
        let cli = parse(&[
            "request",
            "aws-prod-admin",
            "--duration",
            "1h30m",
            "--reason",
            "INC-1",
            "--ticket",
            "INC-1",
            "--break-glass",
            "--wait",
            "-o",
            "json",
            "--server",
            "https://jit.example.com",
        ])
        .unwrap();
        assert_eq!(cli.output, Output::Json);
        assert_eq!(cli.server.as_deref(), Some("https://jit.example.com"));
        let Command::Request(r) = cli.command else {
            panic!("not a request")
        };
        assert_eq!(r.entitlement, "aws-prod-admin");
        assert_eq!(r.duration, "1h30m");
        assert_eq!(r.reason, "INC-1");
        assert_eq!(r.ticket.as_deref(), Some("INC-1"));
        assert!(r.break_glass && r.wait);
    }

    #[test]
    fn request_needs_duration_and_reason() {
        assert!(parse(&["request", "x", "--reason", "r"]).is_err());
        assert!(parse(&["request", "x", "--duration", "1h"]).is_err());
        let err = parse(&["request", "x", "--duration", "soon", "--reason", "r"]).unwrap_err();
        assert!(err.to_string().contains("invalid duration `soon`"), "{err}");
    }

    #[test]
    fn output_defaults_to_table_and_rejects_others() {
        assert_eq!(parse(&["status"]).unwrap().output, Output::Table);
        assert!(parse(&["status", "--output", "yaml"]).is_err());
    }

    #[test]
    fn exec_takes_the_command_after_double_dash() {
        let cli = parse(&[
            "exec",
            "prod",
            "--region",
            "eu-west-1",
            "--",
            "aws",
            "s3",
            "ls",
            "--recursive",
        ])
        .unwrap();
        let Command::Exec(e) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(e.entitlement, "prod");
        assert_eq!(e.region.as_deref(), Some("eu-west-1"));
        assert_eq!(e.command, vec!["aws", "s3", "ls", "--recursive"]);
        assert!(parse(&["exec", "prod"]).is_err(), "a command is required");
    }

    #[test]
    fn decisions_and_extend() {
        let cli = parse(&["approve", "0b7c6f2e", "--comment", "ok"]).unwrap();
        let Command::Approve(d) = cli.command else {
            panic!("not approve")
        };
        assert_eq!(
            (d.id.as_str(), d.comment.as_deref()),
            ("0b7c6f2e", Some("ok"))
        );
        let cli = parse(&["extend", "0b7c6f2e", "--by", "30m"]).unwrap();
        let Command::Extend(e) = cli.command else {
            panic!("not extend")
        };
        assert_eq!(e.by, "30m");
        assert!(parse(&["extend", "0b7c6f2e"]).is_err());
    }

    #[test]
    fn login_completions_audit() {
        let cli = parse(&[
            "login",
            "--server",
            "http://127.0.0.1:8080",
            "--user",
            "alice",
            "--no-browser",
        ])
        .unwrap();
        let Command::Login(l) = cli.command else {
            panic!("not login")
        };
        assert_eq!(l.user.as_deref(), Some("alice"));
        assert!(l.no_browser);
        assert!(matches!(
            parse(&["audit", "verify"]).unwrap().command,
            Command::Audit(AuditCommand::Verify { full: false })
        ));
        assert!(matches!(
            parse(&["audit", "verify", "--full"]).unwrap().command,
            Command::Audit(AuditCommand::Verify { full: true })
        ));
        for shell in ["bash", "zsh", "fish"] {
            assert!(parse(&["completions", shell]).is_ok(), "{shell}");
        }
        assert!(parse(&["completions", "tcsh"]).is_err());
    }

    fn argv(words: &[&str]) -> Vec<OsString> {
        std::iter::once("jit")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// `jit` answers these command lines itself on a cache hit (`jit_cli_base::front`):
    /// it must read them as `jit-client` (clap) does.
    #[test]
    fn the_credential_process_shortcut_reads_what_clap_reads() {
        let accepted: &[&[&str]] = &[
            &["credential-process", "prod-admin"],
            &["credential-process", "help"],
            &["credential-process", "credential-process"],
            &["credential-process", "x y"],
            &["credential-process", "d\u{e9}j\u{e0}-vu"],
            &[
                "--server",
                "https://b.example",
                "credential-process",
                "prod",
            ],
            &["--server=https://b.example/", "credential-process", "prod"],
            &[
                "--server",
                "http://127.0.0.1:8080",
                "credential-process",
                "a=b",
            ],
        ];
        for words in accepted {
            let argv = argv(words);
            let (server, entitlement) = credential_process_args(&argv)
                .unwrap_or_else(|| panic!("{words:?} should take the shortcut"));
            let cli = Cli::try_parse_from(&argv).unwrap();
            let Command::CredentialProcess(arg) = cli.command else {
                panic!("clap reads {words:?} as another command")
            };
            assert_eq!(arg.entitlement, entitlement, "{words:?}");
            // Without `--server`, clap takes `JIT_SERVER` and so does the shortcut's caller.
            let expected = server
                .map(str::to_owned)
                .or_else(|| std::env::var("JIT_SERVER").ok());
            assert_eq!(cli.server, expected, "{words:?}");
        }

        let refused: &[&[&str]] = &[
            &[],
            &["--version"],
            &["--help"],
            &["credential-process"],
            &["credential-process", "--help"],
            &["credential-process", "-h"],
            &["credential-process", "prod", "--help"],
            &["credential-process", "prod", "extra"],
            &[
                "credential-process",
                "prod",
                "--server",
                "https://b.example",
            ],
            &["credential-process", "--", "prod"],
            &["credential-process", ""],
            &["credential-process", "-"],
            &["credential-proces", "prod"],
            &["help", "credential-process"],
            &["--server", "credential-process", "prod"],
            &["--server", "-x", "credential-process", "prod"],
            &["--server=", "credential-process", "prod"],
            &["--server=-x", "credential-process", "prod"],
            &["--server", "", "credential-process", "prod"],
            &[
                "--server",
                "a",
                "--server",
                "b",
                "credential-process",
                "prod",
            ],
            &["-o", "json", "credential-process", "prod"],
            &["--output=table", "credential-process", "prod"],
        ];
        for words in refused {
            assert_eq!(credential_process_args(&argv(words)), None, "{words:?}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let mut odd = argv(&["credential-process"]);
            odd.push(OsString::from_vec(vec![b'p', 0xff]));
            assert_eq!(credential_process_args(&odd), None);
        }
    }

    #[test]
    fn every_subcommand_has_examples_in_help() {
        let mut cmd = Cli::command();
        for sub in cmd.get_subcommands_mut() {
            let name = sub.get_name().to_owned();
            if name == "audit" {
                continue;
            }
            let help = sub.render_long_help().to_string();
            assert!(
                help.contains("jit "),
                "`jit {name} --help` has no example:\n{help}"
            );
        }
    }

    /// The examples name entitlements of the example catalog (`policies/entitlements.toml`),
    /// so a newcomer can run them against `jit-server serve --dev` as they are.
    #[test]
    fn examples_name_entitlements_of_the_example_catalog() {
        let catalog = include_str!("../../../policies/entitlements.toml");
        let mut cmd = Cli::command();
        let mut helps = vec![cmd.render_long_help().to_string()];
        for sub in cmd.get_subcommands_mut() {
            helps.push(sub.render_long_help().to_string());
        }
        let mut named = 0;
        for help in &helps {
            for line in help.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                for pair in words.windows(3) {
                    if pair[0] == "jit"
                        && ["request", "exec", "console", "credential-process"].contains(&pair[1])
                    {
                        named += 1;
                        assert!(
                            catalog.contains(&format!("id = \"{}\"", pair[2])),
                            "`{}` in the help is not in the example catalog: {line}",
                            pair[2]
                        );
                    }
                }
            }
        }
        assert!(named >= 6, "{named}");
    }
}
