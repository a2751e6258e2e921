//! Signed audit checkpoints against AWS as moto serves it (server mode): a broker that signs
//! with a KMS `ECC_NIST_P256` key whose private key never leaves KMS, and writes to an S3
//! bucket with Object Lock. The objects are locked in COMPLIANCE mode (a delete of a locked
//! version is refused; a delete marker hides nothing from `verify`), `audit verify` reads them
//! back from the bucket with the key's public key (from KMS or a PEM file) and fails with
//! another key; a bucket without Object Lock is refused as a sink, shown in `/readyz`.

use std::process::Command;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use base64::Engine as _;

use crate::checkpoints::key_files;
use crate::support::peer_env;
use crate::support::server::{Engine, ServerProcess, fresh_db, run, server_bin};

const REGION: &str = "us-east-1";

fn credentials() -> Credentials {
    Credentials::new("AKIAJITTEST", "jit-test-secret", None, None, "test")
}

/// Test clients of moto, with fixed credentials.
pub struct Moto {
    pub url: String,
    pub s3: aws_sdk_s3::Client,
    pub kms: aws_sdk_kms::Client,
}

impl Moto {
    pub async fn new() -> Self {
        let url = peer_env("JIT_TEST_MOTO_URL");
        let sdk = crate::aws::sdk_config(&url, credentials()).await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        let kms = aws_sdk_kms::Client::new(&sdk);
        Self { url, s3, kms }
    }

    /// The environment that gives a `jit-server` process `[aws]` on moto and credentials.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("JIT_AWS__REGION", REGION),
            ("JIT_AWS__ENDPOINT_URL", self.url.as_str()),
            ("AWS_ACCESS_KEY_ID", "AKIAJITTEST"),
            ("AWS_SECRET_ACCESS_KEY", "jit-test-secret"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    /// A new bucket, with Object Lock or without.
    pub async fn bucket(&self, locked: bool) -> String {
        let name = format!(
            "jit-cp-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        self.s3
            .create_bucket()
            .bucket(&name)
            .object_lock_enabled_for_bucket(locked)
            .send()
            .await
            .unwrap();
        name
    }

    /// A new KMS signing key of spec `ECC_NIST_P256`; its id.
    pub async fn signing_key(&self) -> String {
        self.kms
            .create_key()
            .key_spec(KeySpec::EccNistP256)
            .key_usage(KeyUsageType::SignVerify)
            .send()
            .await
            .unwrap()
            .key_metadata()
            .unwrap()
            .key_id()
            .to_owned()
    }

    /// The checkpoint objects' keys under `prefix`.
    pub async fn objects(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }
}

fn verify_cli(db_url: &str, env: &[(String, String)], args: &[&str]) -> (i32, String, String) {
    run(Command::new(server_bin())
        .args(["audit", "verify"])
        .args(args)
        .env("JIT_DATABASE__URL", db_url)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
}

async fn sign_in(http: &reqwest::Client, url: &str) {
    let res = http
        .post(format!("{url}/api/v1/dev/token"))
        .json(&serde_json::json!({ "user": "alice" }))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kms_signed_checkpoints_land_locked_in_s3_and_verify_from_there() {
    crate::support::init();
    let moto = Moto::new().await;
    let (bucket, unlocked) = (moto.bucket(true).await, moto.bucket(false).await);
    let key_id = moto.signing_key().await;
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(Engine::Sqlite).await;
    let sink = format!("s3://{bucket}/prod/eu");
    let mut env = moto.env();
    env.extend(
        [
            ("JIT_AUDIT__SIGNING_KEY", format!("kms:{key_id}")),
            (
                "JIT_AUDIT__CHECKPOINT_SINKS",
                format!("[\"{sink}\", \"s3://{unlocked}/x\"]"),
            ),
            ("JIT_AUDIT__CHECKPOINT_EVERY", "1s".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut server = ServerProcess::start_dev_with(dir.path(), &db.url, &env_refs);
    let http = reqwest::Client::new();
    sign_in(&http, &server.url).await;
    let mut objects = Vec::new();
    for _ in 0..100 {
        objects = moto.objects(&bucket, "prod/eu/").await;
        if !objects.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(objects, ["prod/eu/checkpoint-000000000001.json"]);

    // The bucket without Object Lock is refused, and said so in /readyz; the other sink works.
    // The sinks' status is updated as the round ends, a moment after the object landed.
    let mut ready = serde_json::Value::Null;
    for _ in 0..100 {
        ready = crate::support::get_json(&http, &format!("{}/readyz", server.url)).await;
        if ready["audit_checkpoints"]["sinks"][1]["ok"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready["status"], "ready", "{ready}");
    let sinks = ready["audit_checkpoints"]["sinks"].as_array().unwrap();
    assert_eq!(sinks[0]["ok"], true, "{ready}");
    assert_eq!(sinks[1]["ok"], false, "{ready}");
    assert!(
        sinks[1]["error"]
            .as_str()
            .unwrap()
            .contains("has no Object Lock"),
        "{ready}"
    );

    locked_and_undeletable(&moto, &bucket, &objects[0]).await;

    // More events, a clean stop: the shutdown checkpoint lands too.
    sign_in(&http, &server.url).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sign_in(&http, &server.url).await;
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(server.child.wait().unwrap().success());

    verify_with_kms_and_pem_not_another_key(&moto, &db.url, &sink, &key_id, dir.path()).await;
}

/// The object is locked in COMPLIANCE mode; a delete of its version is refused, a plain delete
/// only adds a marker.
async fn locked_and_undeletable(moto: &Moto, bucket: &str, key: &str) {
    // Locked in COMPLIANCE mode for the configured retention (read from the object's headers:
    // moto answers GetObjectRetention with the object itself).
    let head = moto
        .s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.object_lock_mode(),
        Some(&aws_sdk_s3::types::ObjectLockMode::Compliance)
    );
    let until = head.object_lock_retain_until_date().unwrap().secs();
    assert!(until > time::OffsetDateTime::now_utc().unix_timestamp() + 2000 * 86_400);
    let version = head.version_id().unwrap().to_owned();

    // A delete of the locked version is refused; a plain delete only adds a marker.
    let refused = moto
        .s3
        .delete_object()
        .bucket(bucket)
        .key(key)
        .version_id(&version)
        .send()
        .await;
    assert!(refused.is_err(), "a locked version was deleted");
    moto.s3
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
}

/// `audit verify` reads the checkpoints back from the bucket and checks them with the KMS key's
/// public key, from KMS or a PEM file, and fails with another key.
async fn verify_with_kms_and_pem_not_another_key(
    moto: &Moto,
    db_url: &str,
    sink: &str,
    key_id: &str,
    dir: &std::path::Path,
) {
    // Verify reads them back from the bucket, with the key's public key from KMS…
    let with_key = |key: &str| {
        verify_cli(
            db_url,
            &moto.env(),
            &["--checkpoints", sink, "--public-key", key],
        )
    };
    let (code, stdout, stderr) = with_key(&format!("kms:{key_id}"));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("checkpoints from {sink}: "))
            && !stdout.contains("not yet covered"),
        "{stdout}"
    );
    // …or from a PEM file exported from it…
    let der = moto
        .kms
        .get_public_key()
        .key_id(key_id)
        .send()
        .await
        .unwrap()
        .public_key()
        .unwrap()
        .as_ref()
        .to_vec();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    );
    let pem_file = dir.join("kms.pub");
    std::fs::write(&pem_file, pem).unwrap();
    let (code, stdout, stderr) = with_key(pem_file.to_str().unwrap());
    assert_eq!(code, 0, "{stdout}{stderr}");
    // …and not with another key: an Ed25519 key, nor another KMS key.
    let (_, other, _) = key_files(dir, "other");
    let another_kms = moto.signing_key().await;
    for other in [
        other.to_str().unwrap().to_owned(),
        format!("kms:{another_kms}"),
    ] {
        let (code, _, stderr) = with_key(&other);
        assert_eq!(code, 2, "{other}: {stderr}");
        assert!(
            stderr.contains("checkpoint 1: the signature does not verify with this public key"),
            "{other}: {stderr}"
        );
    }
}
