//! Wiring: configuration → store, policies, providers, auth → HTTP + scheduler.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rand::RngCore;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::http::{self, AuthMode, Web};
use crate::policy::{Kind, PolicySet};
use crate::providers::Providers;
use crate::service::App;
use crate::store::Store;

/// A broker ready to serve.
pub struct Broker {
    /// Use-cases (for tests and the scheduler).
    pub app: App,
    /// HTTP state.
    pub web: Web,
}

/// Loads the policy set the configuration names (the bundled one in development
/// mode when the directory does not exist).
pub fn load_policies(config: &Config, dev: bool) -> anyhow::Result<PolicySet> {
    let dir = &config.policy.dir;
    let result = if dev && !dir.exists() {
        PolicySet::bundled()
    } else {
        PolicySet::load(dir)
    };
    result.map_err(|errors| anyhow::anyhow!("invalid policies:\n  {}", errors.join("\n  ")))
}

/// Builds a broker from configuration, with the given auth mode and providers.
pub async fn build(
    config: Config,
    dev: bool,
    auth: AuthMode,
    providers: Providers,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Broker> {
    let policy = Arc::new(load_policies(&config, dev)?);
    if !dev {
        // Outside development mode nothing may be simulated. A bundle is checked through its
        // members, each an entitlement of the catalog too.
        if let Some((e, section)) = policy.catalog.iter().find_map(|e| {
            let section = match e.kind {
                Kind::AwsRole | Kind::AwsIdentityCenter => "aws",
                Kind::EntraRole | Kind::EntraGroup => "entra",
                Kind::AzureRole => "azure",
                Kind::Bundle => return None,
            };
            providers.get(e.kind).simulated().then_some((e, section))
        }) {
            bail!(
                "config: `{section}`: entitlement `{}` of kind `{}` needs the `[{section}]` section",
                e.id,
                e.kind.as_str()
            );
        }
    }
    let store = Store::connect(&config.database.url, config.database.max_connections)
        .await
        .with_context(|| "cannot open the database (`database.url`)")?;
    prepare_database(&store, config.database.app_role.as_deref()).await?;
    store
        .share_changes()
        .await
        .context("cannot listen for request changes on the database")?;
    // PostgreSQL: chain the audit events a stopped broker left written but not
    // chained; the store keeps chaining from here on.
    crate::store::audit::caught_up(&store)
        .await
        .context("cannot chain the pending audit events")?;
    let key = match &config.server.session_key {
        Some(k) => crate::config::session_key_bytes(&k.expose())
            .map_err(|e| anyhow::anyhow!("config: `server.session_key`: {e}"))?,
        None if dev => {
            let mut k = vec![0u8; 64];
            rand::rng().fill_bytes(&mut k);
            k
        }
        None => bail!(
            "config: `server.session_key`: required outside development mode (64+ random bytes, base64)"
        ),
    };
    let auth = http::auth::Auth::new(
        auth,
        key,
        &config.server.public_url,
        config.server.session_idle_timeout.secs(),
        config.server.session_absolute_timeout.secs(),
    );
    let spool_path = config.audit_spool();
    let spool = crate::store::held::Spool::open(&spool_path)
        .map_err(|e| anyhow::anyhow!("config: `audit.spool`: {e}"))?;
    if !spool.waiting().is_empty() {
        tracing::error!(
            audit.spool = %spool_path.display(),
            held = spool.waiting_events(),
            "audit events held while the audit store failed wait to be chained"
        );
    }
    // Boxed: opening the sinks and the signer is a large future, and `build` is awaited in many places.
    let checkpoints = Box::pin(crate::checkpoint::writer::Checkpointer::from_config(
        &config,
    ))
    .await?;
    let config_notify = config.notify.clone();
    let wake = store.job_wake().clone();
    let app = App {
        store,
        policy,
        providers,
        clock,
        config: Arc::new(config),
        dev,
        wake,
        target_locks: Arc::default(),
        notifier: Arc::new(
            crate::notify::Notifier::from_config(&config_notify)
                .map_err(|e| anyhow::anyhow!("config: `notify`: {e}"))?,
        ),
        audit_verified: Arc::default(),
        spool,
        checkpoints,
    };
    app.record_policy_hash()
        .await
        .context("cannot record the policy hash")?;
    let web = Web {
        app: app.clone(),
        auth: Arc::new(auth),
    };
    Ok(Broker { app, web })
}

/// With `database.app_role` (PostgreSQL), checks that the broker connects as that role and
/// that every migration is applied, and runs no DDL; otherwise applies what is missing. Either
/// way a migration that was edited after it was applied stops the start, named.
async fn prepare_database(store: &Store, app_role: Option<&str>) -> anyhow::Result<()> {
    if let Some(role) = app_role {
        store
            .check_app_role(role)
            .await
            .context("config: `database.app_role`")?;
        store.check_migrations().await?;
        return Ok(());
    }
    store.migrate().await.context("database migration failed")?;
    if store.backend() == crate::store::Backend::Postgres {
        tracing::warn!(
            "the broker connects as the owner of its tables, who can switch the audit log's \
             triggers off: set `database.app_role` and run `jit-server migrate` as the owner \
             (docs/deploy.md, \"PostgreSQL roles\")"
        );
    }
    Ok(())
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "text" {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    };
}

/// `jit-server serve`.
pub async fn serve(config_path: Option<&Path>, dev: bool) -> anyhow::Result<()> {
    let mut config = Config::load(config_path)?;
    init_logging(&config.server.log_format);
    // `aws-sm:` secrets, read before anything uses them (a start without them fails here).
    crate::secrets::resolve(&config).await?;
    let addr: SocketAddr = config.bind_addr()?;
    if dev {
        if !addr.ip().is_loopback() {
            bail!(
                "development mode only listens on loopback: `server.bind` is `{addr}`; use 127.0.0.1 (dev mode must never be reachable from other machines)"
            );
        }
        config.database.use_dev_database();
    } else if config.oidc.is_none() {
        bail!(
            "config: `oidc`: required outside development mode (try `jit-server serve --dev` to explore jit locally)"
        );
    }
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on `{addr}` (`server.bind`)"))?;
    let local = listener.local_addr()?;
    if dev {
        let public = url::Url::parse(&config.server.public_url).ok();
        let loopback = public
            .as_ref()
            .and_then(url::Url::host_str)
            .is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]");
        if !loopback {
            bail!("development mode: `server.public_url` must be a loopback URL");
        }
        config.server.public_url = format!("http://{local}");
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (providers, graph) = crate::providers::from_config(&config, clock.clone()).await?;
    let auth = if dev {
        AuthMode::Dev
    } else {
        let oidc = config
            .oidc
            .as_ref()
            .context("config: `oidc`: required outside development mode")?;
        let redirect = format!(
            "{}/auth/callback",
            config.server.public_url.trim_end_matches('/')
        );
        let groups = graph.map(|g| g as Arc<dyn crate::identity::GroupResolver>);
        AuthMode::Oidc(Arc::new(
            crate::identity::Identity::discover(oidc, &redirect, clock.clone(), groups).await?,
        ))
    };
    let tick = config.scheduler.tick.duration();
    let secrets = crate::secrets::spawn_refresh(&config, config.secrets.refresh_every.duration());
    let broker = build(config, dev, auth, providers, clock).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    crate::metrics::spawn_upkeep();
    let scheduler = tokio::spawn(crate::scheduler::run(
        broker.app.clone(),
        tick,
        stop_rx.clone(),
    ));
    // Signed audit checkpoints, and the last one at shutdown, after the scheduler's work.
    let checkpoints = broker
        .app
        .checkpoints
        .clone()
        .map(|c| tokio::spawn(c.run(broker.app.clone(), stop_rx)));
    let router = http::router(broker.web.clone());
    let changes = broker.app.store.changes().clone();
    tracing::info!(address = %local, dev, "jit-server listening");
    eprintln!(
        "jit-server listening on http://{local}{}",
        if dev { " (development mode)" } else { "" }
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Long polls answer now rather than hold the shutdown up.
            changes.end_waits();
        })
        .await
        .context("server failed")?;
    let _ = stop_tx.send(true);
    let _ = scheduler.await;
    if let Some(checkpoints) = checkpoints {
        let _ = checkpoints.await;
    }
    if let Some(secrets) = secrets {
        secrets.abort();
    }
    broker.app.store.close().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
