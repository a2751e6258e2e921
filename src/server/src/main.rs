//! `jit-server`: serve | migrate | audit verify | audit keygen | audit export | report access |
//! policy check.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jit_server::checkpoint::keys;
use jit_server::checkpoint::sink::{Sink, SinkSpec};
use jit_server::checkpoint::{PublicKey, Signer as _};
use jit_server::config::{Config, DEV_DATABASE_URL, DatabaseConfig};
use jit_server::policy::PolicySet;
use jit_server::server;
use jit_server::store::Store;
use jit_server::store::audit;
use jit_server::store::audit::export::{ExportFormat, export};
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
    ///
    /// With signed checkpoints (`--checkpoints`, or `audit.checkpoint_sinks` in the
    /// configuration), also check each checkpoint's signature and chain, and that the database
    /// still holds what each one signed: names the checkpoint that disproves it. With `--export`,
    /// verify an export instead, with no database.
    #[command(after_help = "Examples:
  jit-server audit verify
  jit-server audit verify --checkpoints s3://jit-audit/prod --public-key checkpoint.pub
  jit-server audit verify --checkpoints file:///var/lib/jit/checkpoints --public-key kms:alias/jit-audit
  jit-server audit verify --export audit.jsonl --public-key checkpoint.pub")]
    Verify {
        /// Start at this sequence number (trusting the row before it; not with checkpoints).
        #[arg(long)]
        from: Option<i64>,
        /// The sink to read signed checkpoints from: `s3://bucket/prefix` or `file:///dir`
        /// (default: the first of `audit.checkpoint_sinks`).
        #[arg(long, value_name = "SINK")]
        checkpoints: Option<String>,
        /// A public key to verify checkpoints with: a PEM file or `kms:<key>`. Give it again for
        /// keys used before a rotation (default: `audit.public_key`, else the signing key's).
        #[arg(long = "public-key", value_name = "KEY")]
        public_key: Vec<String>,
        /// Verify this JSON Lines export (`audit export --format jsonl`, checkpoints included)
        /// instead of the database.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
    },
    /// Write a new Ed25519 key pair for signing checkpoints (`audit.signing_key = "file:…"`)
    /// and print its public key.
    Keygen {
        /// The private key file (PKCS#8 PEM, mode 0600); the public key goes to `FILE.pub`.
        #[arg(long, value_name = "FILE", default_value = "jit-checkpoint.key")]
        out: PathBuf,
    },
    /// Export audit events to stdout; JSON Lines and OCSF also carry the signed checkpoints,
    /// as records of their own after the events.
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
        Command::Migrate => migrate(cli.config.as_deref()).await,
        Command::Audit {
            command: AuditCommand::Keygen { out },
            ..
        } => keygen(&out),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    from,
                    checkpoints,
                    public_key,
                    export: Some(file),
                },
            ..
        } => {
            if from.is_some() || checkpoints.is_some() {
                anyhow::bail!(
                    "`--export` reads everything from the file: no `--from` or `--checkpoints`"
                );
            }
            let config = Config::load(cli.config.as_deref())?;
            let keys = public_keys(&public_key, &config).await?;
            let report = jit_server::checkpoint::verify::against_export(&file, &keys)?;
            Ok(print_report(
                &report,
                Some(&file.display().to_string()),
                true,
            ))
        }
        Command::Audit { dev, command } => {
            let (config, store) = open_configured(cli.config.as_deref(), dev).await?;
            match command {
                AuditCommand::Keygen { .. } => unreachable!("handled above"),
                AuditCommand::Verify {
                    from,
                    checkpoints,
                    public_key,
                    ..
                } => {
                    let chain = verify(&store, &config, from, checkpoints, &public_key).await?;
                    let held = held_events(&config.audit_spool());
                    Ok(if chain == ExitCode::SUCCESS {
                        held
                    } else {
                        chain
                    })
                }
                AuditCommand::Export { format, from } => {
                    export_to_stdout(&store, &format, from).await
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
    let (_, store) = open_configured(config, dev).await?;
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

/// `jit-server audit export`: the events from `from` on to stdout in `format`.
async fn export_to_stdout(store: &Store, format: &str, from: i64) -> anyhow::Result<ExitCode> {
    let format: ExportFormat = format
        .parse()
        .map_err(|e: jit_server::store::audit::export::UnknownFormat| anyhow::anyhow!("{e}"))?;
    let mut out = Stdout::new(std::io::BufWriter::new(std::io::stdout().lock()));
    let result = export(store, format, from, &mut out)
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

/// The configuration (with `--dev`, on the development database unless `database.url` is set)
/// and the existing database it names ([`open_existing`]).
async fn open_configured(
    config: Option<&std::path::Path>,
    dev: bool,
) -> anyhow::Result<(Config, Store)> {
    let mut config = Config::load(config)?;
    if dev {
        config.database.use_dev_database();
    }
    let store = open_existing(&config.database, dev).await?;
    Ok((config, store))
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
    let store = Store::connect_within(url, database.max_connections, COMMAND_DB_WAIT).await?;
    store.check_migrations().await?;
    Ok(store)
}

/// How long a command run by hand waits for PostgreSQL to answer.
const COMMAND_DB_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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

/// `jit-server migrate`: as the owner, then the application role's grants.
async fn migrate(config: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let store = Store::connect_within(config.database.migrate_url(), 1, COMMAND_DB_WAIT).await?;
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

/// `jit-server audit verify`: exit 0 when the chain verifies (and no checkpoint disproves
/// it), 2 when it does not.
async fn verify(
    store: &Store,
    config: &Config,
    from: Option<i64>,
    sink: Option<String>,
    keys: &[String],
) -> anyhow::Result<ExitCode> {
    let sink = sink.or_else(|| {
        from.is_none()
            .then(|| config.audit.checkpoint_sinks.first().cloned())
            .flatten()
    });
    let Some(sink) = sink else {
        return Ok(print_report(
            &audit::verify(store, from).await?,
            None,
            false,
        ));
    };
    if from.is_some() {
        anyhow::bail!(
            "`--from` and `--checkpoints` do not go together: checkpoints are held against the whole chain"
        );
    }
    let keys = public_keys(keys, config).await?;
    let spec = SinkSpec::parse(&sink).map_err(|e| anyhow::anyhow!("--checkpoints: {e}"))?;
    let sink = Sink::open(&spec, config.aws.as_ref(), 1).await?;
    let cps = sink
        .list()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read checkpoints from `{spec}`: {e}"))?;
    let report = jit_server::checkpoint::verify::against(store, &cps, &keys).await?;
    Ok(print_report(&report, Some(&spec.to_string()), false))
}

/// The public keys to verify checkpoints with: `--public-key` (each a PEM file or `kms:…`),
/// else `audit.public_key`, else the signing key's.
async fn public_keys(given: &[String], config: &Config) -> anyhow::Result<Vec<PublicKey>> {
    let aws = config.aws.as_ref();
    let mut keys = Vec::new();
    for raw in given {
        keys.push(
            keys::load_public_key(raw, aws)
                .await
                .map_err(|e| anyhow::anyhow!("--public-key: {e}"))?,
        );
    }
    if keys.is_empty() {
        if let Some(raw) = &config.audit.public_key {
            keys.push(
                keys::load_public_key(raw, aws)
                    .await
                    .map_err(|e| anyhow::anyhow!("config: `audit.public_key`: {e}"))?,
            );
        } else if let Some(raw) = &config.audit.signing_key {
            let signer = keys::load_signer(raw, aws)
                .await
                .map_err(|e| anyhow::anyhow!("config: `audit.signing_key`: {e}"))?;
            keys.push(signer.public_key().clone());
        }
    }
    if keys.is_empty() {
        anyhow::bail!(
            "no public key to verify checkpoints with: give `--public-key FILE` (or `kms:<key>`)"
        );
    }
    Ok(keys)
}

/// Prints a report: the summary on stdout when it holds, the problem on stderr when not.
fn print_report(
    report: &jit_api::VerifyReport,
    source: Option<&str>,
    from_export: bool,
) -> ExitCode {
    if report.pending > 0 {
        // Not an error: a broker chains them moments after they are written.
        eprintln!(
            "note: {} more events are written but not chained yet, so not \
                 verified; a running broker chains them within a second",
            report.pending
        );
    }
    let mut lines = Vec::new();
    if let Some(c) = &report.checkpoints {
        let from = source.map(|s| format!(" from {s}")).unwrap_or_default();
        lines.push(match &c.newest {
            Some(cp) => format!(
                "checkpoints{from}: {} verified; the newest, {} (signed {} by {}, key {}), covers seq 1 to {}",
                c.checked,
                cp.number,
                cp.at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                cp.broker_id,
                cp.key_id,
                cp.seq
            ),
            None => format!("checkpoints{from}: none covers the chain"),
        });
        if c.not_covered > 0 {
            lines.push(format!(
                "not yet covered: {} events after the newest checkpoint, verified as a chain only",
                c.not_covered
            ));
        }
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
                .filter(|_| !from_export)
                .map(|n| format!(" ({n} rows in the table)"))
                .unwrap_or_default()
        );
        for line in lines {
            println!("{line}");
        }
        ExitCode::SUCCESS
    } else {
        let at = report
            .first_bad_seq
            .map(|seq| format!("first bad seq {seq}: "))
            .unwrap_or_default();
        eprintln!(
            "audit chain broken: {at}{}",
            report.problem.as_deref().unwrap_or_default()
        );
        for line in lines {
            eprintln!("{line}");
        }
        ExitCode::from(2)
    }
}

/// `jit-server audit keygen`: a new key pair; refuses to overwrite.
fn keygen(out: &std::path::Path) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let (signer, private_pem) = keys::generate()?;
    let public_path = PathBuf::from(format!("{}.pub", out.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut private = options
        .open(out)
        .map_err(|e| anyhow::anyhow!("cannot create `{}`: {e}", out.display()))?;
    private.write_all(private_pem.as_bytes())?;
    private.sync_all()?;
    let public_pem = signer.public_key().to_pem();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&public_path)
        .and_then(|mut f| f.write_all(public_pem.as_bytes()))
        .map_err(|e| anyhow::anyhow!("cannot create `{}`: {e}", public_path.display()))?;
    eprintln!(
        "wrote the private key to {} (keep it off the database host; `audit.signing_key = \"file:{}\"`) \
         and the public key to {} (key id {}):",
        out.display(),
        out.display(),
        public_path.display(),
        signer.public_key().key_id()
    );
    print!("{public_pem}");
    Ok(ExitCode::SUCCESS)
}
