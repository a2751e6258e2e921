//! The `jit` binary as a user (or the AWS CLI) runs it, with isolated config
//! and cache directories and no broker: what must work offline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jit::credcache::{self, ProcessCredentials};
use jit::dirs::Dirs;
use jit::session::{Session, Settings};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::tempdir;

/// A closed loopback port: nothing answers there.
fn dead_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

struct Env {
    root: PathBuf,
    dirs: Dirs,
}

impl Env {
    fn new(tag: &str) -> Self {
        let root = tempdir(tag);
        let dirs = Dirs {
            config: root.join("config"),
            cache: root.join("cache"),
        };
        Self { root, dirs }
    }

    fn jit(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        self.program(Path::new(env!("CARGO_BIN_EXE_jit")), args)
    }

    /// `program ARGS…` in this environment.
    fn program(&self, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("HOME", &self.root)
            .env("JIT_CONFIG_DIR", &self.dirs.config)
            .env("JIT_CACHE_DIR", &self.dirs.cache)
            .env_remove("JIT_SERVER")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        cmd
    }

    fn save_server(&self, server: &str) {
        Settings {
            server: Some(server.to_owned()),
        }
        .save(&self.dirs)
        .unwrap();
    }

    fn cache(&self, server: &str, entitlement: &str, left: Duration) -> ProcessCredentials {
        let creds = ProcessCredentials {
            version: 1,
            access_key_id: "ASIACACHEDKEY0000001".into(),
            secret_access_key: "cached-secret-key".into(),
            session_token: "cached-session-token".into(),
            expiration: (OffsetDateTime::now_utc() + left).format(&Rfc3339).unwrap(),
        };
        credcache::store(
            &credcache::cache_path(&self.dirs.cache, server, entitlement),
            &creds,
        )
        .unwrap();
        creds
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_one_error_line(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "stderr must be one line: {err:?}");
    assert!(err.starts_with("error: "), "{err:?}");
    err.trim_end().to_owned()
}

#[test]
fn the_client_does_not_depend_on_server_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "jit",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo tree failed: {}", stderr(&out));
    let tree = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.contains(&"jit-api"), "unexpected tree:\n{tree}");
    let forbidden: Vec<&&str> = names
        .iter()
        .filter(|n| {
            n.starts_with("sqlx")
                || n.starts_with("aws-sdk-")
                || n.starts_with("cedar-policy")
                || n.starts_with("askama")
                || **n == "jit-server"
        })
        .collect();
    assert!(
        forbidden.is_empty(),
        "the CLI must not depend on {forbidden:?}"
    );
}

#[test]
fn credential_process_serves_a_fresh_cache_without_the_server() {
    let env = Env::new("cp-hit");
    let server = dead_server();
    env.save_server(&server);
    let creds = env.cache(&server, "prod-admin", Duration::minutes(45));
    let out = env.jit(&["credential-process", "prod-admin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "nothing on stderr: {}", stderr(&out));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["Version"], 1);
    assert_eq!(printed["AccessKeyId"], "ASIACACHEDKEY0000001");
    assert_eq!(printed["SecretAccessKey"], "cached-secret-key");
    assert_eq!(printed["SessionToken"], "cached-session-token");
    assert_eq!(printed["Expiration"], creds.expiration.as_str());
    let file = credcache::cache_path(&env.dirs.cache, &server, "prod-admin");
    assert_eq!(
        out.stdout,
        std::fs::read(&file).unwrap(),
        "the file, byte for byte"
    );

    // `--server` / `JIT_SERVER` select the cache entry too.
    let other = dead_server();
    env.cache(&other, "prod-admin", Duration::minutes(45));
    let other_file =
        std::fs::read(credcache::cache_path(&env.dirs.cache, &other, "prod-admin")).unwrap();
    let out = env
        .command(&["credential-process", "prod-admin"])
        .env("JIT_SERVER", &other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, other_file);
    for args in [
        &["--server", &other, "credential-process", "prod-admin"][..],
        &[
            &format!("--server={other}/"),
            "credential-process",
            "prod-admin",
        ],
        // Not a form `jit` answers itself: `jit-client` does, from the same file.
        &["credential-process", "prod-admin", "--server", &other],
    ] {
        let out = env.jit(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert_eq!(out.stdout, other_file, "{args:?}");
    }
}

/// `jit` is a small program of its own: it answers a fresh cache entry without
/// `jit-client` (copied alone into an empty directory here), links no HTTP client, TLS or
/// argument parser, and hands everything else to `jit-client` beside it.
#[test]
fn jit_answers_a_cache_hit_alone_and_hands_the_rest_to_jit_client() {
    let front = std::fs::read(env!("CARGO_BIN_EXE_jit")).unwrap();
    for name in [
        "rustls",
        "aws_lc",
        "reqwest",
        "hyper",
        "tokio",
        "clap_builder",
    ] {
        assert!(
            !front.windows(name.len()).any(|w| w == name.as_bytes()),
            "the jit program links {name}"
        );
    }
    let env = Env::new("front");
    let server = dead_server();
    env.save_server(&server);
    env.cache(&server, "prod-admin", Duration::minutes(45));
    let file = std::fs::read(credcache::cache_path(
        &env.dirs.cache,
        &server,
        "prod-admin",
    ))
    .unwrap();
    let alone = env.root.join("bin");
    std::fs::create_dir(&alone).unwrap();
    let jit = alone.join("jit");
    std::fs::copy(env!("CARGO_BIN_EXE_jit"), &jit).unwrap();
    let run = |args: &[&str]| env.program(&jit, args).output().unwrap();
    let out = run(&["credential-process", "prod-admin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, file);
    assert!(out.stderr.is_empty(), "{}", stderr(&out));

    let client = alone.join("jit-client").display().to_string();
    for args in [&["credential-process", "prod-read"][..], &["--version"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let line = assert_one_error_line(&out);
        assert!(
            line.starts_with(&format!("error: cannot run `{client}`: ")),
            "{line}"
        );
        assert!(line.contains("install `jit-client` beside `jit`"), "{line}");
    }

    // With `jit-client` beside it (the build directory), help and usage still say `jit`.
    let out = env.jit(&["--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Usage: jit [OPTIONS] <COMMAND>"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn credential_process_does_not_serve_a_cache_about_to_expire() {
    let env = Env::new("cp-stale");
    let server = dead_server();
    env.save_server(&server);
    env.cache(&server, "prod-admin", Duration::minutes(4));
    let out = env.jit(&["credential-process", "prod-admin"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "stale credentials must not be printed"
    );
    let line = assert_one_error_line(&out);
    assert_eq!(
        line,
        format!("error: not signed in to `{server}`: run `jit login --server {server}`")
    );
    assert!(!line.contains("cached-secret-key") && !line.contains("cached-session-token"));
}

#[test]
fn credential_process_with_a_signed_in_session_but_no_broker_says_what_to_do() {
    let env = Env::new("cp-down");
    let server = dead_server();
    env.save_server(&server);
    Session {
        server: server.clone(),
        access_token: "access-token-value".into(),
        refresh_token: None,
        expires_at: None,
        token_endpoint: None,
        client_id: None,
        scopes: vec![],
        dev_user: Some("alice".into()),
    }
    .save(&env.dirs)
    .unwrap();
    let out = env.jit(&["credential-process", "prod-admin"]);
    assert_eq!(out.status.code(), Some(1));
    let line = assert_one_error_line(&out);
    assert!(
        line.starts_with(&format!(
            "error: cannot connect to `{server}/api/v1/requests`"
        )),
        "{line}"
    );
    assert!(!line.contains("access-token-value"));
}

#[test]
fn exec_sets_aws_variables_and_passes_the_exit_code() {
    let env = Env::new("exec");
    let server = dead_server();
    env.save_server(&server);
    env.cache(&server, "prod-admin", Duration::minutes(45));
    let out = env
        .command(&[
            "exec",
            "prod-admin",
            "--region",
            "eu-west-1",
            "--",
            "sh",
            "-c",
            "echo \"$AWS_ACCESS_KEY_ID $AWS_SECRET_ACCESS_KEY $AWS_SESSION_TOKEN $AWS_REGION $AWS_DEFAULT_REGION\"; exit 7",
        ])
        .env("AWS_SECURITY_TOKEN", "stale")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ASIACACHEDKEY0000001 cached-secret-key cached-session-token eu-west-1 eu-west-1"
    );
    // Region from the environment, else us-east-1.
    let region = |set: Option<&str>| {
        let mut cmd = env.command(&["exec", "prod-admin", "--", "sh", "-c", "echo $AWS_REGION"]);
        cmd.env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION");
        if let Some(r) = set {
            cmd.env("AWS_DEFAULT_REGION", r);
        }
        String::from_utf8(cmd.output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(region(None), "us-east-1");
    assert_eq!(region(Some("ap-south-1")), "ap-south-1");

    let out = env.jit(&["exec", "prod-admin", "--", "/nonexistent/tool"]);
    assert_eq!(out.status.code(), Some(127));
    let line = assert_one_error_line(&out);
    assert!(line.contains("cannot run `/nonexistent/tool`"), "{line}");
}

#[test]
fn logout_removes_tokens_and_cached_credentials() {
    let env = Env::new("logout");
    let server = dead_server();
    env.save_server(&server);
    env.cache(&server, "prod-admin", Duration::minutes(45));
    Session {
        server: server.clone(),
        access_token: "t".into(),
        refresh_token: None,
        expires_at: None,
        token_endpoint: None,
        client_id: None,
        scopes: vec![],
        dev_user: None,
    }
    .save(&env.dirs)
    .unwrap();
    let out = env.jit(&["logout"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("Signed out of {server}")));
    assert!(!env.dirs.tokens_file().exists());
    assert!(is_empty_dir(&env.dirs.credentials_dir()));
    // Not signed in any more: commands say how to sign in.
    let out = env.jit(&["whoami"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        assert_one_error_line(&out),
        format!("error: not signed in to `{server}`: run `jit login --server {server}`")
    );
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

#[test]
fn no_server_configured_says_how_to_set_one() {
    let env = Env::new("noserver");
    let out = env.jit(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        assert_one_error_line(&out),
        "error: no jit server configured: run `jit login --server https://jit.example.com` or set `JIT_SERVER`"
    );
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let env = Env::new("insecure");
    let out = env.jit(&["login", "--server", "http://jit.example.com"]);
    assert_eq!(out.status.code(), Some(1));
    let line = assert_one_error_line(&out);
    assert!(line.contains("plain http"), "{line}");
}

#[test]
fn usage_errors_are_one_line_and_exit_1() {
    let env = Env::new("usage");
    let out = env.jit(&[
        "request",
        "prod-admin",
        "--duration",
        "soon",
        "--reason",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line = assert_one_error_line(&out);
    assert!(line.contains("invalid duration `soon`"), "{line}");
    assert!(line.ends_with("see `jit request --help`"), "{line}");

    let out = env.jit(&["request", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Examples:") && help.contains("--wait"),
        "{help}"
    );
}

#[test]
fn completions_for_each_shell() {
    let env = Env::new("completions");
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef jit"),
        ("fish", "complete -c jit"),
    ] {
        let out = env.jit(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell} script lacks `{marker}`");
        assert!(
            text.contains("credential-process"),
            "{shell} script lacks subcommands"
        );
    }
}
