//! `jit-server`: serve | migrate | audit verify | audit export | report access | policy check.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jit_server::config::{Config, DEV_DATABASE_URL, DatabaseConfig};
use jit_server::policy::PolicySet;
use jit_server::server;
use jit_server::store::Store;
use jit_server::store::audit;
use jit_server::store::export::{ExportFormat, export};
use jit_server::store::report;

/// The jit broker: just-in-time privileged access for AWS and Entra ID.
#[derive(Parser)]
#[command(
    name = "jit-server",
    version,
    about,
    after_help = "Examples:\n  jit-server serve --dev                 try jit locally: SQLite, demo users, simulated grants\n  jit-server serve --config jit.toml     run the broker\n  jit-server audit verify                recompute the audit hash chain from the database\n  jit-server policy check policies       validate entitlements and Cedar policies"
)]
struct Cli {
    /// Configuration file (TOML). Every key can be overridden by `JIT_SECTION__KEY`.
    #[arg(long, global = true, env = "JIT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker: web UI, JSON API and scheduler.
    Serve {
        /// Development mode: no setup, embedded SQLite, demo sign-in, simulated grants; loopback only.
        #[arg(long)]
        dev: bool,
    },
    /// Apply database migrations as the owner of the tables (`database.migrate_url`, default
    /// `database.url`) and grant `database.app_role` what `serve` needs. `serve` applies them
    /// itself unless `database.app_role` is set.
    Migrate,
    /// Audit log commands.
    Audit {
        /// The development database (`jit-dev.db`, the one `serve --dev` uses) unless
        /// `database.url` is set.
        #[arg(long, global = true)]
        dev: bool,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Reports for auditors.
    Report {
        /// The development database (`jit-dev.db`, the one `serve --dev` uses) unless
        /// `database.url` is set.
        #[arg(long, global = true)]
        dev: bool,
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Policy commands.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain straight from the database; names the first bad sequence number,
    /// and the events this machine's broker holds in its spool (`audit.spool`) while the audit
    /// store fails.
    Verify {
        /// Start at this sequence number (trusting the row before it).
        #[arg(long)]
        from: Option<i64>,
    },
    /// Export audit events to stdout.
    Export {
        /// jsonl, csv or ocsf.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Start at this sequence number.
        #[arg(long, default_value_t = 1)]
        from: i64,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// The access review: who held which entitlement in the period, when and how long, why,
    /// approved by whom, break-glass and its review, credentials and console sign-ins; then
    /// the unreviewed break-glass uses and the reconciliation findings. From the audit log:
    /// one grant row per `grant.activated` event (its `seq`).
    Access {
        /// Start of the period: a day (`2026-11-01`, midnight UTC) or RFC 3339.
        #[arg(long)]
        from: String,
        /// End of the period, not included (default: now).
        #[arg(long)]
        to: Option<String>,
        /// csv (RFC 4180) or jsonl.
        #[arg(long, default_value = "csv")]
        format: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate entitlements.toml and the Cedar policies against the schema.
    Check {
        /// Policy directory (default: `policy.dir` from the configuration).
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { dev } => {
            server::serve(cli.config.as_deref(), dev).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let config = Config::load(cli.config.as_deref())?;
            let store = Store::connect(config.database.migrate_url(), 1).await?;
            let applied = store.migrate().await?;
            if applied.is_empty() {
                println!("database is up to date");
            } else {
                for m in applied {
                    println!("applied {m}");
                }
            }
            if let Some(role) = &config.database.app_role {
                store.grant_app_role(role).await?;
                println!("role `{role}` may do what `jit-server serve` needs, and no more");
            }
            store.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { dev, command } => {
            let mut config = Config::load(cli.config.as_deref())?;
            if dev {
                config.database.use_dev_database();
            }
            let store = open_existing(&config.database, dev).await?;
            match command {
                AuditCommand::Verify { from } => {
                    let chain = verify(&store, from).await?;
                    let held = held_events(&config.audit_spool());
                    Ok(if chain == ExitCode::SUCCESS {
                        held
                    } else {
                        chain
                    })
                }
                AuditCommand::Export { format, from } => {
                    let format: ExportFormat =
                        format
                            .parse()
                            .map_err(|e: jit_server::store::export::UnknownFormat| {
                                anyhow::anyhow!("{e}")
                            })?;
                    let mut out = Stdout::new(std::io::BufWriter::new(std::io::stdout().lock()));
                    let result = export(&store, format, from, &mut out)
                        .await
                        .map_err(anyhow::Error::from)
                        .and_then(|n| Ok(std::io::Write::flush(&mut out).map(|()| n)?));
                    match result {
                        // The reader went away (`… | head`): what it read is all it wanted.
                        Err(_) if out.closed => Ok(ExitCode::SUCCESS),
                        Err(e) => Err(e),
                        Ok(n) => {
                            eprintln!("exported {n} events");
                            Ok(ExitCode::SUCCESS)
                        }
                    }
                }
            }
        }
        Command::Report {
            dev,
            command: ReportCommand::Access { from, to, format },
        } => report_access(cli.config.as_deref(), dev, &from, to.as_deref(), &format).await,
        Command::Policy {
            command: PolicyCommand::Check { dir },
        } => {
            let dir = match dir {
                Some(d) => d,
                None => Config::load(cli.config.as_deref())?.policy.dir,
            };
            match PolicySet::load(&dir) {
                Ok(p) => {
                    println!(
                        "{}: {} entitlements, policies valid (hash {})",
                        dir.display(),
                        p.catalog.len(),
                        &p.hash[..16]
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    eprintln!("{} error(s)", errors.len());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// `jit-server report access`: the access review of a period, to stdout.
async fn report_access(
    config: Option<&std::path::Path>,
    dev: bool,
    from: &str,
    to: Option<&str>,
    format: &str,
) -> anyhow::Result<ExitCode> {
    let format: report::Format = format.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let from = report::parse_time(from).map_err(|e| anyhow::anyhow!("`--from`: {e}"))?;
    let to = match to {
        Some(to) => report::parse_time(to).map_err(|e| anyhow::anyhow!("`--to`: {e}"))?,
        None => jit_server::clock::to_ms(time::OffsetDateTime::now_utc()),
    };
    if to <= from {
        anyhow::bail!("`--to` must be after `--from`");
    }
    let mut config = Config::load(config)?;
    if dev {
        config.database.use_dev_database();
    }
    let store = open_existing(&config.database, dev).await?;
    let rows = report::access(&store, from, to).await?;
    let mut out = Stdout::new(std::io::BufWriter::new(std::io::stdout().lock()));
    match report::write(&rows, format, &mut out) {
        // The reader went away (`… | head`).
        Err(_) if out.closed => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
        Ok(n) => {
            eprintln!("{n} rows");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Opens the database the audit commands read, and says on stderr which one. A SQLite file
/// that does not exist is an error, not a new empty database (the development broker's is
/// `jit-dev.db`: `--dev`).
async fn open_existing(database: &DatabaseConfig, dev: bool) -> anyhow::Result<Store> {
    let url = &database.url;
    if let Some(file) = jit_server::store::sqlite_file(url)
        && !file.exists()
    {
        let hint = if dev {
            "the development broker creates it (`jit-server serve --dev`)"
        } else if jit_server::store::sqlite_file(DEV_DATABASE_URL).is_some_and(|f| f.exists()) {
            "the development broker's is `jit-dev.db`: add `--dev`"
        } else {
            "set `database.url` (or `JIT_DATABASE__URL`) to the broker's database"
        };
        anyhow::bail!("no database at `{}`: {hint}", file.display());
    }
    eprintln!("database: {}", shown_url(url));
    let store = Store::connect(url, database.max_connections).await?;
    store.check_migrations().await?;
    Ok(store)
}

/// A database URL without its password.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Standard output that notices when its reader went away (`jit-server audit export | head`):
/// the export then ends quietly instead of reporting a broken pipe.
struct Stdout<W> {
    inner: W,
    closed: bool,
}

impl<W> Stdout<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            closed: false,
        }
    }

    fn seen(&mut self, e: std::io::Error) -> std::io::Error {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            self.closed = true;
        }
        e
    }
}

impl<W: std::io::Write> std::io::Write for Stdout<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).map_err(|e| self.seen(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().map_err(|e| self.seen(e))
    }
}

/// The events a broker on this machine holds in its spool (`audit.spool`)
/// because the audit store failed, not in the chain yet: named one by one.
/// Exit 2 when the spool's own hash link is broken.
fn held_events(spool: &std::path::Path) -> ExitCode {
    match jit_server::store::held::read(spool) {
        Ok(contents) => {
            let events: Vec<_> = contents
                .waiting
                .iter()
                .flat_map(|h| h.events.iter().map(move |e| (h, e)))
                .collect();
            if !events.is_empty() {
                println!(
                    "held: {} events not in the chain yet (the audit store failed when they \
                     happened; the broker chains them, in order, once it works again), in `{}`:",
                    events.len(),
                    spool.display()
                );
                for (h, e) in events {
                    println!(
                        "  held {} at {}: {} by {}{}{}",
                        h.n,
                        jit_server::service::requests::fmt_ms(e.at),
                        e.action,
                        e.actor,
                        e.request_id
                            .as_deref()
                            .map(|r| format!(", request {r}"))
                            .unwrap_or_default(),
                        e.entitlement
                            .as_deref()
                            .map(|x| format!(", entitlement {x}"))
                            .unwrap_or_default(),
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("held events: {e}");
            ExitCode::from(2)
        }
    }
}

/// `jit-server audit verify`: exit 0 when the chain verifies, 2 when it does not.
async fn verify(store: &Store, from: Option<i64>) -> anyhow::Result<ExitCode> {
    let report = audit::verify(store, from).await?;
    if report.pending > 0 {
        // Not an error: a broker chains them moments after they are written.
        eprintln!(
            "note: {} more events are written but not chained yet, so not \
                 verified; a running broker chains them within a second",
            report.pending
        );
    }
    if report.ok {
        println!(
            "audit chain ok: {} events verified{}{}",
            report.checked,
            report
                .last_seq
                .map(|s| format!(", last seq {s}"))
                .unwrap_or_default(),
            report
                .rows
                .map(|n| format!(" ({n} rows in the table)"))
                .unwrap_or_default()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        let at = report
            .first_bad_seq
            .map(|seq| format!("first bad seq {seq}: "))
            .unwrap_or_default();
        eprintln!(
            "audit chain broken: {at}{}",
            report.problem.unwrap_or_default()
        );
        Ok(ExitCode::from(2))
    }
}
