//! Shared set-up of the benchmarks: fresh databases on SQLite and PostgreSQL.
//!
//! PostgreSQL runs only when `JIT_BENCH_PG_URL` names a role that may create
//! databases (e.g. `postgres://jit@127.0.0.1:55432/postgres`); each run makes
//! its own database and drops it at the end.

#![allow(
    dead_code,
    reason = "each benchmark binary uses a different part of this module"
)]

use std::sync::Arc;

use jit_server::clock::SystemClock;
use jit_server::config::Config;
use jit_server::http::{self, AuthMode};
use jit_server::providers::Providers;
use jit_server::server::{Broker, build};
use jit_server::service::App;
use jit_server::store::Store;

pub mod chain;
pub mod issuer;

/// The environment variable naming the PostgreSQL server to benchmark on.
pub const PG_ENV: &str = "JIT_BENCH_PG_URL";

/// Which database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on `JIT_BENCH_PG_URL`.
    Postgres,
}

impl Engine {
    /// Lowercase name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// The engines to run on: SQLite always, PostgreSQL when `JIT_BENCH_PG_URL`
/// is set (otherwise one line says it is skipped); `JIT_BENCH_ENGINES=sqlite`
/// or `=postgres` keeps one of them.
pub fn engines() -> Vec<Engine> {
    let mut engines = if std::env::var(PG_ENV).is_ok_and(|v| !v.is_empty()) {
        vec![Engine::Sqlite, Engine::Postgres]
    } else {
        println!(
            "skipping PostgreSQL: {PG_ENV} is not set (e.g. postgres://jit@127.0.0.1:55432/postgres)"
        );
        vec![Engine::Sqlite]
    };
    if let Ok(only) = std::env::var("JIT_BENCH_ENGINES") {
        engines.retain(|e| only.split(',').any(|o| o.trim() == e.name()));
    }
    engines
}

/// A fresh, migrated database; dropped (PostgreSQL) or deleted (SQLite) by [`FreshDb::remove`].
pub struct FreshDb {
    /// Connection URL.
    pub url: String,
    /// The connected, migrated store.
    pub store: Store,
    admin_url: Option<String>,
    name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

/// Creates an empty database on `engine` and applies the migrations.
pub async fn fresh_db(engine: Engine, max_connections: u32) -> FreshDb {
    let (url, admin_url, name, dir) = match engine {
        Engine::Sqlite => {
            let dir = tempfile::tempdir().expect("temporary directory");
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            (url, None, None, Some(dir))
        }
        Engine::Postgres => {
            let admin = std::env::var(PG_ENV).expect("JIT_BENCH_PG_URL");
            let name = format!("jit_bench_{}", uuid::Uuid::new_v4().simple());
            let store = Store::connect(&admin, 1)
                .await
                .expect("connect to JIT_BENCH_PG_URL");
            jit_server::store::query_built(format!("CREATE DATABASE {name}"))
                .execute(&store)
                .await
                .expect("create the benchmark database");
            store.close().await;
            let base = admin
                .split_once('?')
                .map_or(admin.as_str(), |(b, _)| b)
                .rsplit_once('/')
                .expect("JIT_BENCH_PG_URL has a /database part")
                .0
                .to_owned();
            (format!("{base}/{name}"), Some(admin), Some(name), None)
        }
    };
    let store = Store::connect(&url, max_connections)
        .await
        .expect("connect to the benchmark database");
    store.migrate().await.expect("migrate");
    FreshDb {
        url,
        store,
        admin_url,
        name,
        _dir: dir,
    }
}

impl FreshDb {
    /// Closes the pool and drops the database.
    pub async fn remove(self) {
        self.store.close().await;
        if let (Some(admin), Some(name)) = (&self.admin_url, &self.name)
            && let Ok(store) = Store::connect(admin, 1).await
        {
            let _ = jit_server::store::query_built(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            ))
            .execute(&store)
            .await;
            store.close().await;
        }
    }
}

/// The machine's CPU time counters (`/proc/stat`, all CPUs; Linux only).
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    total: u64,
    idle: u64,
    steal: u64,
}

impl CpuTimes {
    /// Now; `None` where `/proc/stat` is missing.
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // cpu user nice system idle iowait irq softirq steal …
        let f: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        Some(Self {
            total: f.iter().take(8).sum(),
            idle: f.get(3)? + f.get(4)?,
            steal: *f.get(7)?,
        })
    }

    /// Since `earlier`: the share of all CPUs' time that was busy and the
    /// share the hypervisor gave to other guests (steal), in percent.
    pub fn since(self, earlier: Self) -> (f64, f64) {
        let total = self.total.saturating_sub(earlier.total).max(1);
        let idle = self.idle.saturating_sub(earlier.idle);
        let steal = self.steal.saturating_sub(earlier.steal);
        #[expect(clippy::cast_precision_loss, reason = "clock ticks far below 2^52")]
        let pct = |n: u64| 100.0 * n as f64 / total as f64;
        (pct(total.saturating_sub(idle)), pct(steal))
    }
}

/// One line about the machine, printed before results.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} CPU(s) {model}, load average {load}")
}

/// The value of the environment variable `name`, or `default` when it is unset or unreadable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The start of a plain benchmark binary: false for `--list` (`cargo bench` passes `--bench`;
/// these harnesses have no options of their own), else installs the TLS provider and the
/// broker's log on stderr, filtered as `JIT_LOG` says (none by default).
pub fn start_up() -> bool {
    if std::env::args().any(|a| a == "--list") {
        return false;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if let Ok(filter) = std::env::var("JIT_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    true
}

/// The `q` quantiles (0.5 for the median, 1.0 for the maximum) of `v`, in milliseconds, by the
/// nearest-rank method; NaN each when `v` is empty.
pub fn quantiles_ms<const N: usize>(mut v: Vec<std::time::Duration>, q: [f64; N]) -> [f64; N] {
    if v.is_empty() {
        return [f64::NAN; N];
    }
    v.sort_unstable();
    q.map(|q| v[nearest_rank(v.len(), q) - 1].as_secs_f64() * 1000.0)
}

/// The rank (1-based, ⌈`len` · `q`⌉ kept within 1..=`len`) of the `q` quantile of `len` values
/// by the nearest-rank method, as [`quantiles_ms`] picks it.
pub fn nearest_rank(len: usize, q: f64) -> usize {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a vector of at most millions"
    )]
    let rank = (len as f64 * q).ceil() as usize;
    rank.clamp(1, len.max(1))
}

/// A broker over the simulated providers on loopback for `url`'s database, signing in through
/// a stand-in OpenID provider: the app, the server task, the API's base URL and the issuer
/// (keep it alive while the broker runs).
pub async fn serve_simulated(
    url: &str,
) -> (App, tokio::task::JoinHandle<()>, String, issuer::Issuer) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let mut config = Config::default();
    config.database.url = url.to_owned();
    config.server.public_url = format!("http://{addr}");
    config.policy.dir =
        std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies"));
    let issuer = issuer::Issuer::start().await;
    config.oidc = Some(issuer.config());
    let auth = AuthMode::Oidc(Arc::new(issuer.identity(&config.server.public_url).await));
    let (app, server) = serve_broker(config, auth, Providers::simulated(), listener).await;
    (app, server, format!("http://{addr}/api/v1"), issuer)
}

/// Builds the broker of `config` over `providers` in development mode (for the simulated
/// providers only: API calls still go through `auth`) and serves its API on `listener`: the
/// app and the server task.
pub async fn serve_broker(
    config: Config,
    auth: AuthMode,
    providers: Providers,
    listener: tokio::net::TcpListener,
) -> (App, tokio::task::JoinHandle<()>) {
    let Broker { app, web } = build(config, true, auth, providers, Arc::new(SystemClock))
        .await
        .expect("build the broker");
    let router = http::router(web);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (app, server)
}
