//! `aws-sm:` secret references against AWS Secrets Manager as moto serves it (server mode):
//! a client secret is read before the broker uses it, re-read when the token endpoint (the
//! Graph fake, which accepts only its current secret) refuses it after a rotation, and re-read
//! every `secrets.refresh_every`; a reference that cannot be read stops `serve`, naming the
//! key and the reference and never a value.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use jit_server::clock::ManualClock;
use jit_server::config::Config;
use jit_server::providers::graph::{GraphClient, Tuning};
use serde_json::json;

use crate::graph_fake::GraphFake;
use crate::support::peer_env;
use crate::support::server::{run, server_bin};

const ACCESS_KEY: &str = "AKIAJITTEST";
const SECRET_KEY: &str = "jit-test-secret";

async fn secrets_manager() -> aws_sdk_secretsmanager::Client {
    let url = peer_env("JIT_TEST_MOTO_URL");
    let sdk = crate::aws::sdk_config(
        &url,
        Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"),
    )
    .await;
    aws_sdk_secretsmanager::Client::new(&sdk)
}

/// A new secret holding `{"client_secret": value, "other": …}`; its name.
async fn create(sm: &aws_sdk_secretsmanager::Client, value: &str) -> String {
    let name = format!("jit-it/{}", uuid::Uuid::new_v4().simple());
    sm.create_secret()
        .name(&name)
        .secret_string(json!({"client_secret": value, "other": "unrelated"}).to_string())
        .send()
        .await
        .unwrap();
    name
}

async fn put(sm: &aws_sdk_secretsmanager::Client, name: &str, value: &str) {
    sm.put_secret_value()
        .secret_id(name)
        .secret_string(json!({"client_secret": value, "other": "unrelated"}).to_string())
        .send()
        .await
        .unwrap();
}

fn entra_toml(fake: &GraphFake, reference: &str) -> String {
    let entra = fake.config();
    format!(
        "[entra]\ntenant_id = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{reference}\"\ngraph_url = \"{}\"\nlogin_url = \"{}\"\n",
        entra.tenant_id, entra.client_id, entra.graph_url, entra.login_url
    )
}

fn token_requests(fake: &GraphFake) -> usize {
    fake.requests_to("POST", "/oauth2/v2.0/token").len()
}

#[tokio::test]
async fn a_client_secret_from_secrets_manager_is_re_read_after_rotation() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let fake = GraphFake::start().await;
    let sm = secrets_manager().await;
    let name = create(&sm, &fake.secret()).await;
    let config =
        Config::from_toml_str(&entra_toml(&fake, &format!("aws-sm:{name}#client_secret"))).unwrap();
    let secret = config
        .entra
        .as_ref()
        .unwrap()
        .client_secret
        .clone()
        .unwrap();
    assert!(secret.expose().is_empty(), "nothing is read at load");
    assert_eq!(
        secret.reference().unwrap().to_string(),
        format!("aws-sm:{name}#client_secret")
    );
    jit_server::secrets::resolve_with(&config.secrets(), &sm)
        .await
        .unwrap();
    assert_eq!(&*secret.expose(), fake.secret(), "read at start");

    let clock = Arc::new(ManualClock::new());
    let client = GraphClient::with_options(
        config.entra.as_ref().unwrap(),
        Tuning {
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            ..Tuning::default()
        },
        clock.clone(),
    )
    .unwrap();
    let user = uuid::Uuid::new_v4().to_string();
    fake.set_user_groups(&user, vec![]);
    client.user_groups(&user).await.unwrap();
    assert_eq!(token_requests(&fake), 1);

    // The app's secret is rotated: Entra accepts only the new one, Secrets Manager holds it.
    let rotated = fake.rotate_secret();
    put(&sm, &name, &rotated).await;
    clock.advance(time::Duration::hours(2));
    client.user_groups(&user).await.unwrap();
    let tokens = fake.requests_to("POST", "/oauth2/v2.0/token");
    let sent: Vec<String> = tokens
        .iter()
        .map(|r| r.body["client_secret"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent.len(), 3, "refused once, then accepted: {}", sent.len());
    assert_ne!(sent[1], rotated, "the old secret was tried first");
    assert_eq!(sent[2], rotated, "the re-read secret was sent next");
    assert_eq!(&*secret.expose(), rotated);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());

    // A refusal that a re-read does not cure is the error it was (no loop).
    fake.rotate_secret();
    clock.advance(time::Duration::hours(2));
    let e = client.user_groups(&user).await.unwrap_err().to_string();
    assert!(e.contains("invalid_client"), "{e}");
    assert!(!e.contains(&rotated), "{e}");
    assert_eq!(token_requests(&fake), 4);
}

#[tokio::test]
async fn secrets_are_re_read_every_refresh_interval() {
    let sm = secrets_manager().await;
    let name = create(&sm, "first-value").await;
    let config = Config::from_toml_str(&format!(
        "[notify.teams]\nwebhook_url = \"aws-sm:{name}#client_secret\"\n[secrets]\nrefresh_every = \"1s\"\n"
    ))
    .unwrap();
    assert_eq!(config.secrets.refresh_every.secs(), 1, "parsed at load");
    jit_server::secrets::resolve_with(&config.secrets(), &sm)
        .await
        .unwrap();
    let secret = config.notify.teams.as_ref().unwrap().webhook_url.clone();
    assert_eq!(&*secret.expose(), "first-value");
    let task = jit_server::secrets::spawn_refresh(&config, Duration::from_millis(200)).unwrap();
    put(&sm, &name, "second-value").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while &*secret.expose() != "second-value" {
        assert!(Instant::now() < deadline, "not re-read within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
}

#[tokio::test]
async fn serve_stops_when_a_reference_cannot_be_read() {
    let sm = secrets_manager().await;
    let present = create(&sm, "hunter2-never-shown").await;
    let missing = format!("jit-it/missing-{}", uuid::Uuid::new_v4().simple());
    let dir = std::env::temp_dir().join(format!("jit-sm-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let moto = peer_env("JIT_TEST_MOTO_URL");
    for (reference, key, why) in [
        (
            format!("aws-sm:{missing}"),
            "oidc.client_secret",
            "ResourceNotFoundException",
        ),
        (
            format!("aws-sm:{present}#absent"),
            "oidc.client_secret",
            "the secret has no key `absent`",
        ),
    ] {
        let path = dir.join("jit.toml");
        std::fs::write(
            &path,
            format!(
                "[server]\nbind = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:1\"\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{moto}\"\n[oidc]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"jit\"\nclient_secret = \"{reference}\"\napi_audience = \"jit\"\nallow_any_tenant = true\n"
            ),
        )
        .unwrap();
        let (code, _, stderr) = run(Command::new(server_bin())
            .args(["--config", path.to_str().unwrap(), "serve"])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env_remove("AWS_PROFILE"));
        assert_ne!(code, 0, "{stderr}");
        assert!(stderr.contains(key), "{stderr}");
        assert!(stderr.contains(&reference), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
        assert!(!stderr.contains("listening"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
