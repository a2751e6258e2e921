//! In-process brokers on 127.0.0.1:0 for API tests, on SQLite or PostgreSQL,
//! with a manual clock; and the real `jit-server` binary for process tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jit_api::Request;
use jit_server::clock::ManualClock;
use jit_server::config::Config;
use jit_server::http::{self, AuthMode};
use jit_server::providers::Providers;
use jit_server::server::{Broker, build};
use jit_server::service::App;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The audit trail of a request that was approved, activated and ran to its end.
pub const EXPIRED_GRANT_TRAIL: [&str; 7] = [
    "request.created",
    "request.approval",
    "request.approved",
    "grant.activated",
    "grant.expiring_soon",
    "grant.expired",
    "grant.removed",
];

/// Which database engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database in the harness cluster.
    Postgres,
}

/// Both engines.
pub const ENGINES: [Engine; 2] = [Engine::Sqlite, Engine::Postgres];

/// Runs a test body, `|engine| async move { … }`, once per engine (the caller
/// imports `ENGINES` and `Engine`).
macro_rules! each_engine {
    ($name:ident, $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            for engine in ENGINES {
                let f: fn(Engine) -> _ = $body;
                f(engine).await;
            }
        }
    };
}
pub(crate) use each_engine;

/// A fresh database URL for `engine`; the guard removes it.
pub struct FreshDb {
    /// Connection URL.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl FreshDb {
    /// The same PostgreSQL database again, for a second broker sharing it
    /// (SQLite databases are not shared between brokers).
    pub fn shared(&self) -> Self {
        assert!(
            self.url.starts_with("postgres"),
            "only a PostgreSQL database is shared"
        );
        Self {
            url: self.url.clone(),
            _dir: None,
        }
    }
}

/// Creates a fresh, empty database.
pub async fn fresh_db(engine: Engine) -> FreshDb {
    match engine {
        Engine::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            FreshDb {
                url: format!("sqlite://{}", dir.path().join("jit.db").display()),
                _dir: Some(dir),
            }
        }
        Engine::Postgres => {
            let admin = super::peer_env("JIT_TEST_PG_URL");
            let name = format!("t_{}", uuid::Uuid::new_v4().simple());
            let store = jit_server::store::Store::connect(&admin, 1).await.unwrap();
            jit_server::store::query_built(format!("CREATE DATABASE {name}"))
                .execute(&store)
                .await
                .unwrap();
            store.close().await;
            let base = admin.rsplit_once('/').unwrap().0;
            FreshDb {
                url: format!("{base}/{name}"),
                _dir: None,
            }
        }
    }
}

/// A running in-process broker and a client for it.
pub struct TestBroker {
    /// Base URL.
    pub url: String,
    /// Use-cases, for driving the scheduler by hand.
    pub app: App,
    /// The clock tests move.
    pub clock: ManualClock,
    /// HTTP client.
    pub http: reqwest::Client,
    /// The broker's audit spool (`audit.spool`), in a directory of its own.
    pub spool: PathBuf,
    _spool_dir: tempfile::TempDir,
    _db: FreshDb,
    _server: tokio::task::JoinHandle<()>,
}

/// Starts a development-mode broker (demo users, simulated grants) on `engine`.
pub async fn start(engine: Engine) -> TestBroker {
    start_with(engine, Providers::simulated(), |_| {}).await
}

/// Starts a broker with custom providers and configuration tweaks.
pub async fn start_with(
    engine: Engine,
    providers: Providers,
    tweak: impl FnOnce(&mut Config),
) -> TestBroker {
    start_with_auth(engine, AuthMode::Dev, providers, tweak).await
}

/// Starts a broker with a given sign-in mode (e.g. OpenID Connect against the test IdP).
pub async fn start_with_auth(
    engine: Engine,
    auth: AuthMode,
    providers: Providers,
    tweak: impl FnOnce(&mut Config),
) -> TestBroker {
    start_on(fresh_db(engine).await, auth, providers, tweak).await
}

/// Starts a broker on a database the test prepared (the configuration's URL is the
/// database's unless `tweak` changes it).
pub async fn start_on(
    db: FreshDb,
    auth: AuthMode,
    providers: Providers,
    tweak: impl FnOnce(&mut Config),
) -> TestBroker {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = Config::default();
    config.database.url = db.url.clone();
    config.database.max_connections = 20;
    config.server.public_url = format!("http://{addr}");
    config.policy.dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies"));
    let spool_dir = tempfile::tempdir().unwrap();
    config.audit.spool = Some(spool_dir.path().join("audit-spool"));
    tweak(&mut config);
    let spool = config.audit_spool();
    let clock = ManualClock::new();
    let Broker { app, web } = build(config, true, auth, providers, Arc::new(clock.clone()))
        .await
        .unwrap();
    let router = http::router(web);
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    TestBroker {
        url: format!("http://{addr}"),
        app,
        clock,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        spool,
        _spool_dir: spool_dir,
        _db: db,
        _server: server,
    }
}

/// An API caller signed in as a demo user.
#[derive(Clone)]
pub struct Caller {
    /// Bearer token.
    pub token: String,
    base: String,
    http: reqwest::Client,
}

impl TestBroker {
    /// Signs in a demo user through `/api/v1/dev/token`.
    pub async fn login(&self, user: &str) -> Caller {
        let res: Value = self
            .http
            .post(format!("{}/api/v1/dev/token", self.url))
            .json(&json!({ "user": user }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Caller {
            token: res["access_token"].as_str().unwrap().to_owned(),
            base: self.url.clone(),
            http: self.http.clone(),
        }
    }

    /// Runs due scheduler jobs until none are left.
    pub async fn run_jobs(&self) {
        for _ in 0..20 {
            if jit_server::scheduler::run_due(&self.app).await.unwrap() == 0 {
                return;
            }
        }
    }

    /// Moves time and runs what became due.
    pub async fn advance(&self, by: Duration) {
        self.clock.advance(time::Duration::try_from(by).unwrap());
        self.run_jobs().await;
    }

    /// Verifies the audit chain and returns the actions in order.
    pub async fn audit_actions(&self, request: Option<uuid::Uuid>) -> Vec<String> {
        let report = jit_server::store::audit::verify(&self.app.store, None)
            .await
            .unwrap();
        assert!(report.ok, "audit chain broken: {report:?}");
        let events = if let Some(id) = request {
            jit_server::store::audit::for_request(&self.app.store, id)
                .await
                .unwrap()
        } else {
            let mut e = jit_server::store::audit::list(
                &self.app.store,
                &jit_server::store::audit::Filter {
                    limit: 10_000,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            e.reverse();
            e
        };
        events.into_iter().map(|e| e.action).collect()
    }
}

impl TestBroker {
    /// Signs in a demo user through the development sign-in form, as a browser would; returns
    /// the `Cookie` header value of the session.
    pub async fn browser_login(&self, user: &str) -> String {
        let session = |res: &reqwest::Response| -> String {
            let set = res.headers()[reqwest::header::SET_COOKIE].to_str().unwrap();
            set.split(';').next().unwrap().to_owned()
        };
        // The sign-in answers with a redirect that sets the cookie: do not follow it.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let login = http
            .get(format!("{}/login", self.url))
            .send()
            .await
            .unwrap();
        let cookie = session(&login);
        let body = login.text().await.unwrap();
        let csrf = body
            .split(r#"name="csrf" value=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_owned();
        let signed_in = http
            .post(format!("{}/login/dev", self.url))
            .header(reqwest::header::COOKIE, cookie)
            .header(reqwest::header::ORIGIN, &self.url)
            .form(&[("user", user), ("csrf", &csrf)])
            .send()
            .await
            .unwrap();
        assert!(
            signed_in.status().is_redirection() || signed_in.status().is_success(),
            "dev sign-in of {user}: {}",
            signed_in.status()
        );
        session(&signed_in)
    }

    /// GETs a web page with a session cookie from [`TestBroker::browser_login`].
    pub async fn page(&self, cookie: &str, path: &str) -> (StatusCode, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.url))
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await
            .unwrap();
        (res.status(), res.text().await.unwrap())
    }
}

impl Caller {
    /// GET returning status and JSON.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .get(format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// POST JSON returning status and JSON.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let res = self
            .http
            .post(format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Files a request; panics unless 201.
    pub async fn request(&self, entitlement: &str, duration: &str) -> Request {
        let (status, body) = self
            .post(
                "/requests",
                json!({ "entitlement": entitlement, "duration": duration, "justification": "integration test" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        serde_json::from_value(body).unwrap()
    }

    /// Reads a request.
    pub async fn show(&self, id: uuid::Uuid) -> Request {
        let (status, body) = self.get(&format!("/requests/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body).unwrap()
    }

    /// Approves; returns status and body.
    pub async fn approve(&self, id: uuid::Uuid) -> (StatusCode, Value) {
        self.post(
            &format!("/requests/{id}/approve"),
            json!({ "comment": "ok" }),
        )
        .await
    }

    /// Revokes with `comment`; returns status and body.
    pub async fn revoke(&self, id: uuid::Uuid, comment: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/requests/{id}/revoke"),
            json!({ "comment": comment }),
        )
        .await
    }

    /// Files an extension of `id` by `by`; the extension's id.
    pub async fn extend(&self, id: uuid::Uuid, by: &str) -> uuid::Uuid {
        let (status, ext) = self
            .post(&format!("/requests/{id}/extend"), json!({ "by": by }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{ext}");
        ext["id"].as_str().unwrap().parse().unwrap()
    }
}

/// The built `jit-server` binary.
pub fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jit-server"))
}

/// Runs `cmd` to its end: exit code (-1 for a signal), stdout, stderr.
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd` to its end and checks that it succeeded (failing with its stderr); its output.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A `jit-server` child process.
pub struct ServerProcess {
    /// The child.
    pub child: Child,
    /// Base URL.
    pub url: String,
}

impl ServerProcess {
    /// Starts `jit-server serve --dev` on a free port with the given environment.
    pub fn start_dev(dir: &std::path::Path, db_url: &str) -> Self {
        Self::start_dev_with(dir, db_url, &[])
    }

    /// Like [`ServerProcess::start_dev`], with more environment (later entries win).
    pub fn start_dev_with(dir: &std::path::Path, db_url: &str, env: &[(&str, &str)]) -> Self {
        let mut env = env.to_vec();
        env.insert(0, ("JIT_DATABASE__URL", db_url));
        Self::spawn_dev(dir, free_port(), &env)
    }

    /// `jit-server serve --dev` in `dir` on the database it picks itself (`jit-dev.db` there).
    pub fn start_dev_in(dir: &std::path::Path) -> Self {
        Self::spawn_dev(dir, free_port(), &[])
    }

    /// [`ServerProcess::start_dev`] on a given port (a broker started again where it was).
    pub fn start_dev_on(dir: &std::path::Path, db_url: &str, port: u16) -> Self {
        Self::spawn_dev(dir, port, &[("JIT_DATABASE__URL", db_url)])
    }

    fn spawn_dev(dir: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(server_bin())
            .args(["serve", "--dev"])
            .current_dir(dir)
            .env("JIT_SERVER__BIND", format!("127.0.0.1:{port}"))
            .env_remove("JIT_DATABASE__URL")
            .env(
                "JIT_POLICY__DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies"),
            )
            .env("JIT_SCHEDULER__TICK", "1s")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if ready(port) {
                return Self { child, url };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).ok();
                panic!("jit-server exited with {status}: {err}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("jit-server did not start");
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET /readyz` answers 200 (the listener is bound before migrations run,
/// so a TCP connect alone does not mean ready).
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
