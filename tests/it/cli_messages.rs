//! What `jit` says when something is missing or wrong, verbatim, against the real broker in
//! development mode; and a missing grant asked for at a terminal (a pseudo-terminal from
//! `script`) or named as the command to run elsewhere (issue 24).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli_e2e::harness::{Out, StderrLog, User, jit_bin};
use crate::support::peer_env;
use crate::support::server::{Engine, FreshDb, ServerProcess, free_port, fresh_db};

/// A user signed in to the development broker at `url` as the demo user `login`.
fn dev_user(url: &str, login: &str) -> User {
    let user = User::new(login, &StderrLog::default());
    user.jit(&["login", "--server", url, "--user", login]).ok();
    user
}

/// A development broker on a fresh SQLite database (keep the first two as long as it runs).
fn dev_broker() -> (tempfile::TempDir, FreshDb, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let db = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(fresh_db(Engine::Sqlite));
    let server = ServerProcess::start_dev(dir.path(), &db.url);
    (dir, db, server)
}

/// Stderr of a failed command: exactly `line`, exit 1, nothing on stdout.
#[track_caller]
fn says(out: &Out, line: &str) {
    assert_eq!(out.stderr, format!("{line}\n"), "{out:#?}");
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.is_empty(), "{out:#?}");
}

/// The id of `user`'s newest request for `entitlement`.
fn newest_request(user: &User, entitlement: &str) -> String {
    let listed = user.jit(&["-o", "json", "status"]).ok().json();
    let listed = listed.get("requests").cloned().unwrap_or(listed);
    listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["entitlement"] == entitlement)
        .max_by_key(|r| r["created_at"].as_str().unwrap().to_owned())
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .unwrap()
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one user's session, each message in the order she meets it"
)]
fn every_fixed_message_reads_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(fresh_db(Engine::Sqlite));
    let port = free_port();
    let server = ServerProcess::start_dev_on(dir.path(), &db.url, port);
    let url = server.url.clone();
    let alice = dev_user(&url, "alice");

    // Unknown names: the nearest one, and where the names are listed.
    says(
        &alice.jit(&["request", "aws-sandbx", "--duration", "1h", "--reason", "x"]),
        "error: unknown entitlement `aws-sandbx`: did you mean `aws-sandbox`? `jit entitlements` \
         lists what you may request",
    );
    says(
        &alice.jit(&["credential-process", "nosuch"]),
        "error: unknown entitlement `nosuch`: `jit entitlements` lists what you may request",
    );
    says(
        &alice.jit(&["exec", "aws-sandbx", "--", "true"]),
        "error: unknown entitlement `aws-sandbx`: did you mean `aws-sandbox`? `jit entitlements` \
         lists what you may request",
    );
    // A ticket: the format, and the flag that gives it.
    let request = [
        "request",
        "entra-user-admin",
        "--duration",
        "1h",
        "--reason",
        "x",
    ];
    for (ticket, line) in [
        (
            &[][..],
            "error: ticket is required for this entitlement, in the format `INC-9*` (like \
             `INC-1234`): add `--ticket ID`",
        ),
        (
            &["--ticket", "CHG-1"][..],
            "error: ticket `CHG-1` does not match the format `INC-9*` (like `INC-1234`): add \
             `--ticket ID`",
        ),
    ] {
        says(&alice.jit(&[&request[..], ticket].concat()), line);
    }
    // No grant and no terminal: the exact command to run.
    says(
        &alice.jit(&["credential-process", "aws-sandbox"]),
        "error: no active grant for `aws-sandbox`: run `jit request aws-sandbox --duration 1h \
         --reason \"…\" --wait`",
    );
    says(
        &alice.jit(&["exec", "aws-sandbox", "--", "true"]),
        "error: no active grant for `aws-sandbox`: run `jit request aws-sandbox --duration 1h \
         --reason \"…\" --wait`",
    );
    says(
        &alice.jit(&["credential-process", "entra-user-admin"]),
        "error: no active grant for `entra-user-admin`: run `jit request entra-user-admin \
         --duration 1h --reason \"…\" --ticket ID --wait`",
    );

    // Auto-approval in the same words as the request's page.
    let ents = alice.jit(&["entitlements"]).ok();
    let sandbox = ents
        .stdout
        .lines()
        .find(|l| l.starts_with("aws-sandbox "))
        .unwrap();
    assert!(sandbox.contains(" auto-approved "), "{sandbox}");
    alice
        .jit(&[
            "request",
            "aws-sandbox",
            "--duration",
            "1h",
            "--reason",
            "tour",
        ])
        .ok();
    let id = newest_request(&alice, "aws-sandbox");
    let short = &id[id.len() - 8..];
    let shown = alice.jit(&["show", short]).ok();
    assert!(
        shown.stdout.contains("\nApprovals:    auto-approved\n"),
        "{shown:#?}"
    );
    // Just filed: not "in 0s", whatever the clocks say.
    let status = alice.jit(&["status"]).ok();
    let row = status
        .stdout
        .lines()
        .find(|l| l.contains(short) && l.contains("aws-sandbox  active"))
        .unwrap();
    assert!(
        row.contains(" just now ") || row.contains("s ago "),
        "{row}"
    );
    assert!(!status.stdout.contains(" in "), "{status:#?}");
    // The one open request: access to extend, named.
    let again = alice.jit(&[
        "request",
        "aws-sandbox",
        "--duration",
        "1h",
        "--reason",
        "again",
    ]);
    assert_eq!(again.code, 1, "{again:#?}");
    assert!(
        again
            .stderr
            .starts_with("error: you already have access to `aws-sandbox` until ")
            && again.stderr.ends_with(&format!(
                " UTC (request {short}): extend it to keep it longer\n"
            )),
        "{again:#?}"
    );

    // Two approvals: who, once.
    let bob = dev_user(&url, "bob");
    let dave = dev_user(&url, "dave");
    alice
        .jit(&[
            "request",
            "aws-prod-readonly",
            "--duration",
            "1h",
            "--reason",
            "look",
        ])
        .ok();
    let two = newest_request(&alice, "aws-prod-readonly");
    bob.jit(&["approve", &two]).ok();
    dave.jit(&["approve", &two]).ok();
    let shown = alice.jit(&["show", &two]).ok();
    assert!(
        shown
            .stdout
            .contains("\nApprovals:    2 of 2: bob@example.com, dave@example.com\n"),
        "{shown:#?}"
    );

    // The help's examples are the example catalog's.
    let help = alice.jit(&["request", "--help"]).ok();
    assert!(
        help.stdout.contains(
            "jit request entra-user-admin --duration 30m --reason \"unlock a locked-out user\" \
             --ticket INC-4711"
        ),
        "{help:#?}"
    );

    // A restarted development broker forgets its tokens: sign in again, said once.
    drop(server);
    let _server = ServerProcess::start_dev_on(dir.path(), &db.url, port);
    says(
        &alice.jit(&["status"]),
        &format!("error: invalid or expired token: run `jit login --server {url} --user alice`"),
    );
}

/// `jit ARGS…` in a pseudo-terminal (`script`): what it printed so far, and its stdin.
struct Terminal {
    child: std::process::Child,
    screen: Arc<Mutex<String>>,
}

impl Terminal {
    /// `jit ARGS…` at the terminal.
    fn start(user: &User, args: &str) -> Self {
        Self::run(user, &format!("'{}' {args}", jit_bin().display()), &[])
    }

    /// The shell command `line` at the terminal, in `user`'s environment and `env`.
    fn run(user: &User, line: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new("script");
        user.env(&mut cmd);
        // At this terminal, asking is the point.
        cmd.env_remove("JIT_TERMINAL_PROMPT");
        // A terminal people use (without `TERM` the spinner stays hidden).
        cmd.env("TERM", "xterm");
        cmd.envs(env.iter().copied());
        cmd.args(["-qec", line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("`script` (util-linux) runs");
        let screen = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self { child, screen }
    }

    /// Waits until the screen shows `text`.
    #[track_caller]
    fn wait_for(&self, text: &str) {
        let start = Instant::now();
        while !self.screen.lock().unwrap().contains(text) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no {text:?} on the terminal: {}",
                self.screen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Exit code and everything shown.
    fn finish(mut self) -> (i32, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_mins(1),
                "still running: {}",
                self.screen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        drop(self.child.stdin.take());
        std::thread::sleep(Duration::from_millis(200));
        let screen = self.screen.lock().unwrap().clone();
        (status.code().unwrap_or(-1), screen)
    }
}

/// At a terminal, a missing grant is asked for: the reason typed, the request filed, its
/// approval waited for, and the credentials printed once granted. An empty reason files
/// nothing.
#[test]
fn credential_process_asks_for_a_missing_grant_at_a_terminal() {
    let (_dir, _db, server) = dev_broker();
    let alice = dev_user(&server.url, "alice");
    let bob = dev_user(&server.url, "bob");
    let dave = dev_user(&server.url, "dave");

    // Declined: nothing is filed.
    let mut term = Terminal::start(&alice, "credential-process aws-sandbox");
    term.wait_for("Reason (empty to cancel): ");
    term.type_line("");
    let (code, screen) = term.finish();
    assert_eq!(code, 1, "{screen}");
    assert!(
        screen.contains(
            "error: no active grant for `aws-sandbox`: run `jit request aws-sandbox --duration \
             1h --reason \"…\" --wait`"
        ),
        "{screen}"
    );
    let none = alice.jit(&["-o", "json", "status"]).ok().json();
    let none = none.get("requests").cloned().unwrap_or(none);
    assert_eq!(none.as_array().unwrap().len(), 0, "{none}");

    // Two approvals needed: filed from the terminal, waited for, then the credentials.
    let mut term = Terminal::start(&alice, "credential-process aws-prod-readonly");
    term.wait_for(
        "No active grant for `aws-prod-readonly` (AWS production — read only). Request it now \
         for 1h (needs 2 approvals)?",
    );
    term.wait_for("Reason (empty to cancel): ");
    term.type_line("checking replication lag");
    term.wait_for("pending");
    let id = newest_request(&alice, "aws-prod-readonly");
    bob.jit(&["approve", &id]).ok();
    dave.jit(&["approve", &id]).ok();
    let (code, screen) = term.finish();
    assert_eq!(code, 0, "{screen}");
    let short = &id[id.len() - 8..];
    assert!(
        screen.contains(&format!(
            "Request {short} for `aws-prod-readonly` (1h) is active until "
        )),
        "{screen}"
    );
    let json_line = screen
        .lines()
        .find(|l| l.trim_start().starts_with("{\"Version\":1"))
        .unwrap_or_else(|| panic!("no credentials: {screen}"));
    let creds: Value = serde_json::from_str(json_line.trim()).unwrap();
    assert!(
        creds["AccessKeyId"].as_str().unwrap().starts_with("ASIA"),
        "{creds}"
    );
    let granted = alice.jit(&["-o", "json", "show", &id]).ok().json();
    assert_eq!(granted["state"], "active");
    assert_eq!(granted["justification"], "checking replication lag");

    // Now granted, without a terminal: the credentials at once, nothing asked.
    let out = alice.jit(&["credential-process", "aws-prod-readonly"]).ok();
    assert!(out.stdout.starts_with("{\"Version\":1"), "{out:#?}");
    assert!(out.stderr.is_empty(), "{out:#?}");
}

/// The AWS CLI runs `credential_process` with its stdout and stderr captured, but the person
/// is still at the terminal: a missing grant is asked for there (`/dev/tty`), filed, and the
/// AWS CLI gets the credentials. With `JIT_TERMINAL_PROMPT=0` nothing is asked and the AWS
/// CLI shows the one line that names the command to run.
#[test]
fn credential_process_under_the_aws_cli_asks_at_the_terminal() {
    let (_dir, _db, server) = dev_broker();
    let alice = dev_user(&server.url, "alice");
    let config = alice.home.join("aws-config");
    std::fs::write(
        &config,
        format!(
            "[profile dev]\nregion = us-east-1\ncredential_process = '{}' credential-process aws-sandbox\n",
            jit_bin().display()
        ),
    )
    .unwrap();
    let aws = std::path::Path::new(&peer_env("JIT_TEST_PEERS")).join("venv/bin/aws");
    let line = format!(
        "'{}' sts get-caller-identity --profile dev --endpoint-url {} --output json",
        aws.display(),
        peer_env("JIT_TEST_MOTO_URL")
    );
    let config = config.to_str().unwrap();
    let env = [
        ("AWS_CONFIG_FILE", config),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];

    // Told not to ask: the AWS CLI fails with jit's line.
    let mut quiet = env.to_vec();
    quiet.push(("JIT_TERMINAL_PROMPT", "0"));
    let term = Terminal::run(&alice, &line, &quiet);
    let (code, screen) = term.finish();
    assert_ne!(code, 0, "{screen}");
    assert!(
        screen.contains(
            "error: no active grant for `aws-sandbox`: run `jit request aws-sandbox --duration \
             1h --reason \"…\" --wait`"
        ),
        "{screen}"
    );
    assert!(!screen.contains("Reason"), "{screen}");

    // Asked at the terminal: filed, auto-approved, and the AWS CLI signed in with it.
    let mut term = Terminal::run(&alice, &line, &env);
    term.wait_for(
        "No active grant for `aws-sandbox` (AWS sandbox — power user). Request it now for 1h \
         (auto-approved)?",
    );
    term.wait_for("Reason (empty to cancel): ");
    term.type_line("try the new bucket policy");
    let (code, screen) = term.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("\"Arn\""), "the AWS CLI answered: {screen}");
    assert!(
        screen.contains("for `aws-sandbox` (1h) is active until "),
        "{screen}"
    );
    let id = newest_request(&alice, "aws-sandbox");
    let granted = alice.jit(&["-o", "json", "show", &id]).ok().json();
    assert_eq!(granted["state"], "active");
    assert_eq!(granted["justification"], "try the new bucket policy");
}
