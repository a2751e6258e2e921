//! The real `jit-server` binary: development mode, configuration errors,
//! audit verification from the command line, durability across `kill -9`.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chaos::{audit_verify, dev_token};
use crate::support::server::{ENGINES, Engine, ServerProcess, fresh_db, run_ok, server_bin};

async fn state(http: &reqwest::Client, url: &str, token: &str, id: &str) -> String {
    let v: Value = http
        .get(format!("{url}/api/v1/requests/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["state"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn dev_mode_serves_the_banner_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(Engine::Sqlite).await;
    let server = ServerProcess::start_dev(dir.path(), &db.url);
    let http = reqwest::Client::new();
    let res = http
        .get(format!("{}/login", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let page = res.text().await.unwrap();
    assert!(page.contains("Development mode"), "banner missing");
    for user in ["alice", "bob", "carol"] {
        assert!(
            page.contains(&format!("value=\"{user}\"")),
            "{user} missing"
        );
    }
    let ready: Value = http
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    let cfg: Value = http
        .get(format!("{}/api/v1/cli-config", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cfg["dev"], true);
}

#[test]
fn dev_mode_refuses_a_public_address() {
    let out = Command::new(server_bin())
        .args(["serve", "--dev"])
        .env("JIT_SERVER__BIND", "0.0.0.0:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loopback") && err.contains("server.bind"),
        "{err}"
    );
}

#[test]
fn production_mode_needs_an_identity_provider() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(server_bin())
        .args(["serve"])
        .current_dir(dir.path())
        .env("JIT_SERVER__BIND", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`oidc`"), "{err}");
}

#[test]
fn invalid_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("jit.toml");
    for (toml, env, key) in [
        ("[server]\nbind = \"localhost-ish\"\n", None, "server.bind"),
        ("[database]\nurl = \"mysql://db\"\n", None, "database.url"),
        (
            "[server]\nsession_key = \"env:JIT_TEST_UNSET_KEY\"\n",
            None,
            "JIT_TEST_UNSET_KEY",
        ),
        (
            "[notify.email]\nsmtp_url = \"http://x\"\nfrom = \"a@b\"\n",
            None,
            "notify.email.smtp_url",
        ),
        ("", Some(("JIT_SCHEDULER__TICK", "often")), "scheduler.tick"),
        ("[server]\ntypo = 1\n", None, "typo"),
        // The key as the file spells it, not the config library's `default.entra.client_secret`.
        (
            "[entra]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = 424242\n",
            None,
            "error: config: `entra.client_secret`: expected a string: the secret itself, `env:NAME`, `file:PATH` or `aws-sm:ID[#KEY]` (the value is not shown) (in ",
        ),
        (
            "",
            Some(("JIT_DATABASE__MAX_CONNECTIONS", "many")),
            "error: config: `database.max_connections`: invalid type: found string \"many\", expected u32 (from `JIT_DATABASE__MAX_CONNECTIONS`)",
        ),
    ] {
        std::fs::write(&cfg, toml).unwrap();
        let mut cmd = Command::new(server_bin());
        cmd.args(["--config", cfg.to_str().unwrap(), "migrate"]);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{toml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{toml:?}: {err}");
        assert!(!err.contains("default."), "{toml:?}: {err}");
        assert!(!err.contains("424242"), "a secret is never quoted: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one message: {err}");
    }
}

#[test]
fn env_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("jit.toml");
    std::fs::write(&cfg, "[database]\nurl = \"mysql://wrong\"\n").unwrap();
    let db = format!("sqlite://{}", dir.path().join("env.db").display());
    run_ok(
        Command::new(server_bin())
            .args(["--config", cfg.to_str().unwrap(), "migrate"])
            .env("JIT_DATABASE__URL", &db),
    );
    assert!(dir.path().join("env.db").exists());
}

#[test]
fn policy_check_reports_file_and_line() {
    run_ok(Command::new(server_bin()).args([
        "policy",
        "check",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies"),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies"));
    for f in [
        "entitlements.toml",
        "schema.cedarschema",
        "access.cedar",
        "approvals.cedar",
        "admin.cedar",
    ] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    // An unknown entitlement and a bad schema reference.
    std::fs::write(
        dir.path().join("broken.cedar"),
        "// broken on purpose\n@id(\"ghost\")\npermit (principal, action == Action::\"request\", resource == Entitlement::\"no-such-thing\");\n",
    )
    .unwrap();
    let out = Command::new(server_bin())
        .args(["policy", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.cedar:2") && err.contains("unknown entitlement `no-such-thing`"),
        "{err}"
    );
    std::fs::write(
        dir.path().join("broken.cedar"),
        "@id(\"typo\")\npermit (principal, action == Action::\"request\", resource)\nwhen { resource.kindd == \"aws_role\" };\n",
    )
    .unwrap();
    let out = Command::new(server_bin())
        .args(["policy", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.cedar:3") && err.contains("kindd"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("broken.cedar")).unwrap();
    let text = std::fs::read_to_string(dir.path().join("entitlements.toml")).unwrap();
    std::fs::write(
        dir.path().join("entitlements.toml"),
        text.replacen("kind = \"aws_role\"", "kind = \"gcp_role\"", 1),
    )
    .unwrap();
    let out = Command::new(server_bin())
        .args(["policy", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("entitlements.toml:") && err.contains("unknown kind `gcp_role`"),
        "{err}"
    );
    // serve refuses to start on the same errors.
    let out = Command::new(server_bin())
        .args(["serve", "--dev"])
        .env("JIT_SERVER__BIND", "127.0.0.1:0")
        .env("JIT_POLICY__DIR", dir.path())
        .env(
            "JIT_DATABASE__URL",
            format!("sqlite://{}", dir.path().join("x.db").display()),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown kind `gcp_role`"));
}

/// `jit-server policy check DIR`: (passed, stderr).
fn policy_check(dir: &std::path::Path) -> (bool, String) {
    let out = Command::new(server_bin())
        .args(["policy", "check"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn policy_check_names_a_wrong_revoke_sessions() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let text = std::fs::read_to_string(dir.path().join("entitlements.toml")).unwrap();
    assert!(policy_check(dir.path()).0, "the example catalog passes");
    // `revoke_sessions` is an Identity Center key, a boolean.
    for (edit, says) in [
        (
            text.replacen(
                "kind = \"aws_role\"",
                "kind = \"aws_role\"\nrevoke_sessions = false",
                1,
            ),
            "`revoke_sessions` does not apply to kind `aws_role`",
        ),
        (
            text.replacen("revoke_sessions = true", "revoke_sessions = \"no\"", 1),
            "`revoke_sessions` must be true or false",
        ),
    ] {
        std::fs::write(dir.path().join("entitlements.toml"), edit).unwrap();
        let (passed, err) = policy_check(dir.path());
        assert!(!passed);
        assert!(
            err.contains("entitlements.toml:") && err.contains(says),
            "{err}"
        );
    }
}

/// A broker killed with a due expiry performs it after restart; the chain still verifies.
#[tokio::test(flavor = "multi_thread")]
async fn killed_broker_expires_after_restart() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let db = fresh_db(engine).await;
        let http = reqwest::Client::new();
        let mut server = ServerProcess::start_dev(dir.path(), &db.url);
        let alice = dev_token(&http, &server.url, "alice").await;
        let res: Value = http
            .post(format!("{}/api/v1/requests", server.url))
            .bearer_auth(&alice)
            .json(&json!({"entitlement": "aws-sandbox", "duration": "3s", "justification": "kill test"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = res["id"].as_str().unwrap().to_owned();
        let start = Instant::now();
        while state(&http, &server.url, &alice, &id).await != "active" {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "never became active"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.kill();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let server = ServerProcess::start_dev(dir.path(), &db.url);
        let alice = dev_token(&http, &server.url, "alice").await;
        let start = Instant::now();
        while state(&http, &server.url, &alice, &id).await != "expired" {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "expiry not performed after restart"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drop(server);
        audit_verify(&db.url);
    }
}

#[tokio::test]
async fn audit_commands_on_an_unmigrated_database_say_to_migrate() {
    for engine in ENGINES {
        let db = fresh_db(engine).await;
        if let Some(file) = jit_server::store::sqlite_file(&db.url) {
            // An empty file: a database nobody migrated (a missing one is another error).
            std::fs::write(file, b"").unwrap();
        }
        for args in [["audit", "verify"], ["audit", "export"]] {
            let out = Command::new(server_bin())
                .args(args)
                .env("JIT_DATABASE__URL", &db.url)
                .output()
                .unwrap();
            assert!(!out.status.success(), "{engine:?} {args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(&format!(
                    "not migrated ({}): run `jit-server migrate`",
                    crate::support::db::all_pending()
                )),
                "{engine:?} {args:?}: {err}"
            );
        }
    }
}

#[test]
fn example_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(Command::new(server_bin())
        .args(["--config", concat!(env!("CARGO_MANIFEST_DIR"), "/../../jit.example.toml"), "migrate"])
        .env("JIT_SESSION_KEY", "c2Vzc2lvbi1rZXktZm9yLXRlc3RzLW9ubHktbm90LWEtc2VjcmV0LWF0LWFsbC0xMjM0NTY3ODkwMTIzNDU2Nzg5MA==")
        .env("JIT_OIDC_CLIENT_SECRET", "test-client-secret")
        .env("JIT_ENTRA_CLIENT_SECRET", "test-entra-secret")
        .env("JIT_TEAMS_WEBHOOK", "http://127.0.0.1:9/webhook")
        .env("JIT_DATABASE__URL", format!("sqlite://{}", dir.path().join("e.db").display())));
}

/// The loaded policy set's hash is audited at start, and again only when it changes.
#[tokio::test(flavor = "multi_thread")]
async fn policy_changes_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(Engine::Sqlite).await;
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let src = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies"));
    for f in [
        "entitlements.toml",
        "schema.cedarschema",
        "access.cedar",
        "approvals.cedar",
        "admin.cedar",
    ] {
        std::fs::copy(src.join(f), policies.join(f)).unwrap();
    }
    let policy_dir = policies.to_str().unwrap().to_owned();
    let run = || {
        // Started means listening, which is after the policy hash was recorded.
        let mut server =
            ServerProcess::start_dev_with(dir.path(), &db.url, &[("JIT_POLICY__DIR", &policy_dir)]);
        server.kill();
    };
    let hashes = || async {
        let store = jit_server::store::Store::connect(&db.url, 1).await.unwrap();
        let events = jit_server::store::audit::list(
            &store,
            &jit_server::store::audit::Filter {
                action: Some("policy.loaded".to_owned()),
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        store.close().await;
        events.len()
    };
    run();
    assert_eq!(hashes().await, 1);
    run();
    assert_eq!(
        hashes().await,
        1,
        "an unchanged policy set is not recorded again"
    );
    let text = std::fs::read_to_string(policies.join("access.cedar")).unwrap();
    std::fs::write(
        policies.join("access.cedar"),
        text.replace(
            "context.duration_seconds <= 7200",
            "context.duration_seconds <= 3600",
        ),
    )
    .unwrap();
    run();
    assert_eq!(hashes().await, 2, "a changed policy set is recorded");
}

/// `jit-server audit export | head -n 2` (docs/deploy.md pipes the export): the reader gets
/// whole events, and the export ends quietly with exit 0 when it goes away.
#[tokio::test]
async fn audit_export_into_a_closed_pipe_ends_quietly() {
    use std::io::BufRead;
    for engine in ENGINES {
        let db = fresh_db(engine).await;
        let store = jit_server::store::Store::connect(&db.url, 1).await.unwrap();
        store.migrate().await.unwrap();
        // More than a pipe holds, so the export is still writing when the reader leaves.
        let note = "x".repeat(10_000);
        for _ in 0..100 {
            jit_server::store::audit::append_alone(
                &store,
                time::OffsetDateTime::now_utc(),
                jit_server::store::audit::NewEvent {
                    actor: "system",
                    action: "test.filler",
                    request_id: None,
                    entitlement: None,
                    data: json!({ "note": note }),
                },
            )
            .await
            .unwrap();
        }
        jit_server::store::audit::caught_up(&store).await.unwrap();
        store.close().await;
        for format in ["jsonl", "csv", "ocsf"] {
            let mut child = Command::new(server_bin())
                .args(["audit", "export", "--format", format])
                .env("JIT_DATABASE__URL", &db.url)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
            let first = lines.next().unwrap().unwrap();
            let second = lines.next().unwrap().unwrap();
            drop(lines);
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{engine:?} {format}: {err}");
            assert!(
                err.starts_with("database: ") && err.lines().count() == 1,
                "{engine:?} {format}: nothing but the database it opened: {err}"
            );
            if format == "csv" {
                assert!(first.starts_with("seq,"), "{first}");
                assert!(second.starts_with("1,"), "{second}");
            } else {
                let event: Value = serde_json::from_str(&second).unwrap();
                assert!(event.to_string().contains("test.filler"), "{second}");
            }
        }
    }
}

/// After the dev tour, the audit commands find the dev broker's database with `--dev` and say
/// which database they opened; without `--dev` they say where it is, and create nothing.
#[tokio::test]
async fn audit_commands_open_the_dev_database_with_dev() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = ServerProcess::start_dev_in(dir.path());
    let alice = dev_token(&http, &server.url, "alice").await;
    let res = http
        .post(format!("{}/api/v1/requests", server.url))
        .bearer_auth(&alice)
        .json(&json!({"entitlement": "aws-sandbox", "duration": "1h", "justification": "tour"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    drop(server);
    assert!(dir.path().join("jit-dev.db").exists());
    let run = |args: &[&str]| {
        let out = Command::new(server_bin())
            .args(args)
            .current_dir(dir.path())
            .env_remove("JIT_DATABASE__URL")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for args in [
        &["audit", "verify"][..],
        &["audit", "export"],
        &["report", "access", "--from", "2026-01-01"],
    ] {
        let (ok, _, err) = run(args);
        assert!(!ok, "{args:?}");
        assert_eq!(
            err,
            "error: no database at `jit.db`: the development broker's is `jit-dev.db`: add `--dev`\n",
            "{args:?}"
        );
        assert!(
            !dir.path().join("jit.db").exists(),
            "{args:?} created an empty database"
        );
    }
    let (ok, out, err) = run(&["audit", "verify", "--dev"]);
    assert!(ok, "{err}");
    assert_eq!(err, "database: sqlite://jit-dev.db\n");
    assert!(out.starts_with("audit chain ok: "), "{out}");
    let (ok, out, err) = run(&["audit", "export", "--dev", "--format", "jsonl"]);
    assert!(ok, "{err}");
    assert!(err.starts_with("database: sqlite://jit-dev.db\n"), "{err}");
    assert!(out.contains("\"request.created\""), "{out}");
    let (ok, out, err) = run(&["report", "access", "--dev", "--from", "2000-01-01"]);
    assert!(ok, "{err}");
    assert!(err.starts_with("database: sqlite://jit-dev.db\n"), "{err}");
    assert!(out.starts_with("section,seq,at,request_id,"), "{out}");

    // Nothing there at all: `--dev` says who creates it.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(server_bin())
        .args(["audit", "verify", "--dev"])
        .current_dir(empty.path())
        .env_remove("JIT_DATABASE__URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: no database at `jit-dev.db`: the development broker creates it (`jit-server serve --dev`)\n"
    );
    assert!(!empty.path().join("jit-dev.db").exists());
}

/// A PostgreSQL that does not answer is named with its cause, once, by the commands run by hand.
#[test]
fn an_unreachable_database_is_named_with_its_cause() {
    let port = crate::support::server::free_port();
    let url = format!("postgres://jit@127.0.0.1:{port}/jit");
    let out = Command::new(server_bin())
        .args(["audit", "verify"])
        .env("JIT_DATABASE__URL", &url)
        .env_remove("JIT_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert_eq!(
        line,
        format!(
            "error: database: cannot connect to PostgreSQL at 127.0.0.1:{port} (database `jit`): \
             error communicating with database: Connection refused (os error 111)"
        ),
        "{err}"
    );
}
