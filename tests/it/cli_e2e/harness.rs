//! The pieces of the CLI end-to-end tests: the `jit` binary (built when
//! missing or stale), a real `jit-server` process in production mode, users
//! with their own config and cache directories who sign in through the test
//! identity provider's device flow, the AWS CLI, an IAM role in moto, and a
//! stand-in for the AWS federation endpoint.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use serde_json::Value;

use crate::support::peer_env;
use crate::support::server::{free_port, server_bin};

/// The moto account.
pub const ACCOUNT: &str = "123456789012";
/// What the federation stand-in hands out.
pub const SIGNIN_TOKEN: &str = "e2e-signin-token";
/// How long any one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Newest modification time under `path` (files only, recursively).
fn newest(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| newest(&e.path()))
        .max()
}

/// The `jit` binary next to the `jit-server` this test binary was built
/// with (same target directory and profile, so `CARGO_TARGET_DIR` and
/// `--release` are honoured), with `jit-client` beside it. `scripts/test` builds
/// them with the workspace; when `jit` is missing or older than the CLI's sources
/// (e.g. `cargo test -p jit-server --test it` alone), both are built here once per
/// test run.
pub fn jit_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let server = server_bin();
        let dir = server.parent().unwrap();
        let bin = dir.join(format!("jit{}", std::env::consts::EXE_SUFFIX));
        let root = repo_root();
        let sources = [
            root.join("src/cli/src"),
            root.join("src/cli/Cargo.toml"),
            root.join("src/cli-base/src"),
            root.join("src/cli-base/Cargo.toml"),
            root.join("src/api/src"),
            root.join("src/api/Cargo.toml"),
            root.join("Cargo.lock"),
        ]
        .iter()
        .filter_map(|p| newest(p))
        .max();
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        let stale = match (built, sources) {
            (Some(b), Some(s)) => b < s,
            (None, _) => true,
            (Some(_), None) => false,
        };
        if stale {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(&root)
                .args(["build", "-p", "jit", "--bins"]);
            match dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => {}
                Some("release") => {
                    cmd.arg("--release");
                }
                Some(profile) => {
                    cmd.args(["--profile", profile]);
                }
            }
            eprintln!("building the jit binary: {cmd:?}");
            let status = cmd.status().unwrap();
            assert!(status.success(), "`cargo build -p jit` failed: {status}");
        }
        assert!(bin.is_file(), "no jit binary at {}", bin.display());
        bin
    })
}

/// What a finished command left.
#[derive(Debug, Clone)]
pub struct Out {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Out {
    /// Panics unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        self
    }

    /// Stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Asserts the shape of every `jit` error: exit `code`, exactly one line
    /// on stderr starting with `error: ` and containing `needle`, nothing on
    /// stdout.
    #[track_caller]
    pub fn fails(&self, code: i32, needle: &str) -> &Self {
        assert_eq!(self.code, code, "exit code: {self:#?}");
        let err = self.stderr.trim_end();
        assert_eq!(err.lines().count(), 1, "one line on stderr: {self:#?}");
        assert!(err.starts_with("error: "), "{self:#?}");
        assert!(err.contains(needle), "expected {needle:?}: {self:#?}");
        assert!(self.stdout.is_empty(), "nothing on stdout: {self:#?}");
        self
    }
}

/// A running child with its output read in the background; stderr also
/// arrives line by line.
pub struct Running {
    child: Child,
    what: String,
    lines: Receiver<String>,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl Running {
    /// Spawns `cmd` with piped output.
    pub fn spawn(mut cmd: Command, what: &str) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let mut out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                all.push_str(&line);
                all.push('\n');
                let _ = tx.send(line);
            }
            all
        });
        Self {
            child,
            what: what.to_owned(),
            lines,
            stdout,
            stderr,
        }
    }

    /// The next stderr line, waiting at most `timeout`; `None` at its end.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                panic!("{}: no output within {timeout:?}", self.what)
            }
        }
    }

    /// Waits for the exit (killing it after the command timeout).
    pub fn wait(mut self) -> Out {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr.join().unwrap_or_default();
                panic!(
                    "{} did not finish within {COMMAND_TIMEOUT:?}; stderr: {stderr}",
                    self.what
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Out {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout.join().unwrap_or_default(),
            stderr: self.stderr.join().unwrap_or_default(),
        }
    }
}

/// The peers `scripts/test` starts.
#[derive(Debug, Clone)]
pub struct Peers {
    /// The `OpenID` provider (issuer).
    pub idp: String,
    /// The moto server.
    pub moto: String,
    /// The Python venv's `bin` directory (`aws`, `python`).
    pub venv_bin: PathBuf,
}

impl Peers {
    /// Reads the peer variables (fails loudly without `scripts/test`).
    pub fn from_env() -> Self {
        Self {
            idp: peer_env("JIT_TEST_IDP_URL")
                .trim_end_matches('/')
                .to_owned(),
            moto: peer_env("JIT_TEST_MOTO_URL")
                .trim_end_matches('/')
                .to_owned(),
            venv_bin: PathBuf::from(peer_env("JIT_TEST_PEERS")).join("venv/bin"),
        }
    }

    /// The AWS CLI (v1) with a clean environment: no credentials, no config
    /// file unless the caller adds one.
    pub fn aws(&self, home: &Path) -> Command {
        let mut cmd = Command::new(self.venv_bin.join("aws"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("AWS_CONFIG_FILE", home.join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                home.join("no-aws-credentials"),
            )
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        cmd
    }

    /// Creates an IAM role in moto with the AWS CLI; returns (arn, name).
    pub fn create_role(&self, home: &Path, tag: &str) -> (String, String) {
        let name = format!(
            "jit-e2e-{tag}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let mut cmd = self.aws(home);
        cmd.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .args(["iam", "create-role", "--role-name", &name])
            .args([
                "--assume-role-policy-document",
                &format!(
                    r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":["sts:AssumeRole","sts:TagSession","sts:SetSourceIdentity"]}}]}}"#
                ),
            ])
            .args(["--endpoint-url", &self.moto, "--output", "json"]);
        let out = Running::spawn(cmd, "aws iam create-role").wait().ok();
        let arn = out.json()["Role"]["Arn"].as_str().unwrap().to_owned();
        assert_eq!(arn, format!("arn:aws:iam::{ACCOUNT}:role/{name}"));
        (arn, name)
    }
}

/// A stand-in for `https://signin.aws.amazon.com/federation` (no emulator
/// exists): answers `getSigninToken` with [`SIGNIN_TOKEN`] and counts calls.
pub struct Federation {
    /// `http://127.0.0.1:PORT/federation`.
    pub url: String,
    /// `getSigninToken` calls with a session seen so far.
    pub calls: Arc<AtomicUsize>,
}

impl Federation {
    /// Listens on a free port until the test process ends.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/federation", listener.local_addr().unwrap());
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let counter = counter.clone();
                std::thread::spawn(move || answer_federation(stream, &counter));
            }
        });
        Self { url, calls }
    }
}

fn answer_federation(mut stream: TcpStream, calls: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 256 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let line = head.lines().next().unwrap_or_default();
    let (status, body) = if line.starts_with("GET /federation?")
        && line.contains("Action=getSigninToken")
        && line.contains("Session=")
    {
        calls.fetch_add(1, Ordering::SeqCst);
        ("200 OK", format!(r#"{{"SigninToken":"{SIGNIN_TOKEN}"}}"#))
    } else {
        ("400 Bad Request", "unexpected request".to_owned())
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Entitlements of the generated policy directory.
pub struct Roles {
    /// Role of `e2e-admin` (one approval) and `e2e-team` (one approval;
    /// approvers may ask for it too).
    pub admin_arn: String,
    /// Role of `e2e-sandbox` (granted at once).
    pub sandbox_arn: String,
}

/// Writes a policy directory of our own: the repository's schema, a catalog
/// of `aws_role` entitlements on the given moto roles, and a few policies.
fn write_policies(dir: &Path, roles: &Roles) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(
        repo_root().join("policies/schema.cedarschema"),
        dir.join("schema.cedarschema"),
    )
    .unwrap();
    let catalog = format!(
        r#"[[entitlement]]
id = "e2e-admin"
title = "End-to-end — administrator"
kind = "aws_role"
role_arn = "{admin}"
max_duration = "4h"
approvals_required = 1
pending_ttl = "1h"
max_extensions = 2

[[entitlement]]
id = "e2e-team"
title = "End-to-end — team role"
kind = "aws_role"
role_arn = "{admin}"
max_duration = "2h"
approvals_required = 1

[[entitlement]]
id = "e2e-context"
title = "End-to-end — behind an authentication context"
kind = "aws_role"
role_arn = "{sandbox}"
max_duration = "2h"
approvals_required = 0
auth_context = "c1"

[[entitlement]]
id = "e2e-sandbox"
title = "End-to-end — sandbox"
kind = "aws_role"
role_arn = "{sandbox}"
max_duration = "2h"
approvals_required = 0

[[bundle]]
id = "e2e-kit"
title = "End-to-end — sandbox and team"
entitlements = ["e2e-sandbox", "e2e-team"]
"#,
        admin = roles.admin_arn,
        sandbox = roles.sandbox_arn
    );
    std::fs::write(dir.join("entitlements.toml"), catalog).unwrap();
    let cedar = r#"@id("requesters-request")
permit (principal in Group::"grp-jit-requesters", action == Action::"request", resource);

@id("approvers-request-team")
// Lets an approver file a request, so the self-approval rule can be seen.
permit (
  principal in Group::"grp-jit-approvers",
  action == Action::"request",
  resource
)
when { resource == Entitlement::"e2e-team" || resource == Entitlement::"e2e-context" };

@id("approvers-approve")
permit (principal in Group::"grp-jit-approvers", action == Action::"approve", resource);

@id("auto-approve-sandbox")
permit (principal, action == Action::"auto_approve", resource)
when { resource.approvals_required == 0 && context.duration_seconds <= 7200 };

@id("auditors-read")
permit (principal in Group::"grp-jit-auditors", action == Action::"audit", resource == Broker::"jit");
"#;
    std::fs::write(dir.join("e2e.cedar"), cedar).unwrap();
}

/// A real `jit-server serve --config FILE` in production mode: `OpenID`
/// sign-in against the test provider, AWS against moto, `SQLite`.
pub struct Broker {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Writes the configuration and policies and starts the server.
    pub fn start(peers: &Peers, roles: &Roles, federation_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let policies = dir.path().join("policies");
        write_policies(&policies, roles);
        let mut key = Vec::new();
        for _ in 0..4 {
            key.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        let config = format!(
            r#"[server]
bind = "127.0.0.1:{port}"
public_url = "{url}"
session_key = "{key}"
log_format = "text"

[database]
url = "sqlite://{db}"

[oidc]
issuer = "{idp}"
client_id = "jit-web"
client_secret = "jit-web-secret"
scopes = ["openid", "profile", "email", "groups"]
api_audience = "api://jit-broker"
cli_client_id = "jit-cli"
cli_scopes = ["openid", "profile", "email", "groups", "offline_access", "access"]
required_scope = "access"
tenant_id = "11111111-2222-3333-4444-555555555555"

[aws]
region = "us-east-1"
endpoint_url = "{moto}"
federation_url = "{federation_url}"

[policy]
dir = "{policies}"

[scheduler]
tick = "1s"
"#,
            db = dir.path().join("jit.db").display(),
            idp = peers.idp,
            moto = peers.moto,
            policies = policies.display(),
        );
        let config_path = dir.path().join("jit.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut broker = Self {
            url,
            port,
            config: config_path,
            log: dir.path().join("server.log"),
            child: None,
            _dir: dir,
        };
        broker.restart();
        broker
    }

    /// (Re)starts the process with the same configuration and database.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let home = self.config.parent().unwrap();
        let mut child = Command::new(server_bin())
            .args(["serve", "--config"])
            .arg(&self.config)
            .current_dir(home)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", home.join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                home.join("no-aws-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("jit-server exited with {status}:\n{}", self.log());
            }
            if http_status(self.port, "/readyz") == Some(200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "jit-server not ready within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child = Some(child);
    }

    /// Stops the process (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The status of a plain `GET` to the loopback `port`, or `None`.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    let text = String::from_utf8_lossy(&head[..n]);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Every stderr text any `jit` process printed in a test, to check for secrets.
pub type StderrLog = Arc<Mutex<Vec<String>>>;

/// One person at a terminal: the `jit` binary with their own home, config
/// and cache directories.
pub struct User {
    /// The identity provider login (`alice`, `bob`, `carol`).
    pub login: String,
    /// `$HOME`.
    pub home: PathBuf,
    /// `JIT_CONFIG_DIR`.
    pub config: PathBuf,
    /// `JIT_CACHE_DIR`.
    pub cache: PathBuf,
    stderr_log: StderrLog,
    _dir: tempfile::TempDir,
}

impl User {
    /// A user with fresh, empty directories.
    pub fn new(login: &str, stderr_log: &StderrLog) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_path_buf();
        Self {
            login: login.to_owned(),
            config: home.join("config"),
            cache: home.join("cache"),
            home,
            stderr_log: stderr_log.clone(),
            _dir: dir,
        }
    }

    /// The environment `jit` runs with (and passes on to `credential_process`). It never asks
    /// at the controlling terminal (`JIT_TERMINAL_PROMPT=0`): tests run from a developer's
    /// terminal must not wait for an answer there.
    pub fn env(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("JIT_CONFIG_DIR", &self.config)
            .env("JIT_CACHE_DIR", &self.cache)
            .env("JIT_TERMINAL_PROMPT", "0");
    }

    /// `jit ARGS…` as a command.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(jit_bin());
        self.env(&mut cmd);
        cmd.args(args);
        cmd
    }

    /// Starts `jit ARGS…` in the background.
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::spawn(
            self.command(args),
            &format!("{}: jit {}", self.login, args.join(" ")),
        )
    }

    /// Runs `jit ARGS…` to the end.
    pub fn jit(&self, args: &[&str]) -> Out {
        self.record(self.spawn(args).wait())
    }

    /// Collects the stderr of a finished `jit` for the secret check.
    pub fn record(&self, out: Out) -> Out {
        self.stderr_log.lock().unwrap().push(out.stderr.clone());
        out
    }

    /// `jit login --server URL --no-browser`, with the browser half (the
    /// provider's device page and sign-in) done by `approve_device.sh`.
    pub fn login(&self, server: &str, issuer: &str) -> Out {
        let running = self.spawn(&["login", "--server", server, "--no-browser"]);
        self.sign_in_at_the_provider(running, issuer, &self.login)
    }

    /// The browser half of a device sign-in `running` (a `jit login`, or any command the
    /// broker asked to sign in again) started: reads the code and page from its stderr, signs
    /// in there as `login` with `approve_device.sh`, and waits for the command. Its stderr
    /// lines before the code are in the result's `stderr` too.
    pub fn sign_in_at_the_provider(&self, running: Running, issuer: &str, login: &str) -> Out {
        let (mut code, mut page) = (None, None);
        while code.is_none() || page.is_none() {
            let Some(line) = running.next_line(Duration::from_secs(30)) else {
                let what = running.what.clone();
                panic!("{what} ended before a sign-in: {:#?}", running.wait());
            };
            if let Some((_, c)) = line.split_once(" and enter the code ") {
                code = Some(c.trim().to_owned());
            }
            if let Some(url) = line.strip_prefix("(or open ") {
                page = Some(url.trim_end_matches(')').to_owned());
            }
        }
        let (code, page) = (code.unwrap(), page.unwrap());
        assert!(page.starts_with(issuer), "{page}");
        assert!(page.contains(&code), "{page} should carry {code}");
        let script = repo_root().join("src/cli/tests/cli/approve_device.sh");
        let mut browser = Command::new("bash");
        browser
            .arg(script)
            .args([issuer, &page, &code, login, "confirm"]);
        Running::spawn(browser, "approve_device.sh").wait().ok();
        self.record(running.wait())
    }

    /// The tokens `jit login` saved.
    pub fn tokens(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.config.join("tokens.json")).unwrap()).unwrap()
    }

    /// The cached credential files.
    pub fn cache_files(&self) -> Vec<PathBuf> {
        let Ok(dir) = std::fs::read_dir(self.cache.join("credentials")) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = dir.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        files
    }
}

/// Unix permission bits of `path`.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
