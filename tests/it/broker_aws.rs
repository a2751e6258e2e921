//! AWS grants through the JSON API of a broker with the real AWS providers,
//! against moto (through the fault proxy), on SQLite and PostgreSQL:
//! `aws_role` credentials, `aws_identity_center` assignments that follow the
//! grant (extension included), failed grants, "revoke all sessions"; no
//! secret in the audit table or the logs.
//!
//! Every test works in its own corner of the shared moto server (its own
//! roles and permission sets); the demo users' Identity Store users
//! (`alice@example.com`…) are shared and created once.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_identitystore::types::{AlternateIdentifier, Email, Name, UniqueAttribute};
use jit_api::RequestState;
use jit_server::config::AwsConfig;
use jit_server::http::AuthMode;
use jit_server::providers::Providers;
use jit_server::providers::aws::{AwsProviders, REVOKE_POLICY_NAME, Tuning};
use jit_server::store::{Store, query_built};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::fault_proxy::{Fault, FaultProxy};
use crate::support::audit_fault::AuditFault;
use crate::support::peer_env;
use crate::support::server::{Engine, TestBroker, start_on, start_with};

/// The account moto answers for.
pub(crate) const ACCOUNT: &str = "123456789012";

/// Random lowercase hex.
pub(crate) fn random_hex(n: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(n);
    s
}

/// The shared moto server and its Identity Center instance.
pub(crate) struct Moto {
    /// Base URL.
    pub url: String,
    /// `arn:aws:sso:::instance/ssoins-…`.
    pub instance_arn: String,
    /// `d-…`.
    pub store_id: String,
    /// sso-admin straight to moto.
    pub sso: aws_sdk_ssoadmin::Client,
    /// identitystore straight to moto.
    pub ids: aws_sdk_identitystore::Client,
}

/// Made-up broker credentials: moto checks no signature, the secret is
/// only there to be looked for in logs.
pub(crate) fn broker_credentials() -> Credentials {
    Credentials::new(
        format!("AKIA{}", random_hex(16).to_uppercase()),
        random_hex(40),
        None,
        None,
        "jit-test",
    )
}

async fn sdk_config(endpoint: &str, credentials: Credentials) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .load()
        .await
}

impl Moto {
    /// Connects to `JIT_TEST_MOTO_URL` and finds its instance.
    pub(crate) async fn connect() -> Self {
        crate::support::init();
        let url = peer_env("JIT_TEST_MOTO_URL");
        let direct = sdk_config(&url, broker_credentials()).await;
        let sso = aws_sdk_ssoadmin::Client::new(&direct);
        let ids = aws_sdk_identitystore::Client::new(&direct);
        let instances = sso.list_instances().send().await.unwrap();
        let instance = &instances.instances()[0];
        Self {
            url,
            instance_arn: instance.instance_arn().unwrap().to_owned(),
            store_id: instance.identity_store_id().unwrap().to_owned(),
            sso,
            ids,
        }
    }

    /// `[aws]` for a broker talking to `endpoint` (moto or a proxy in front of it).
    pub(crate) fn config(&self, endpoint: &str) -> AwsConfig {
        AwsConfig {
            region: "us-east-1".to_owned(),
            endpoint_url: Some(endpoint.to_owned()),
            identity_center_instance_arn: Some(self.instance_arn.clone()),
            identity_store_id: Some(self.store_id.clone()),
            federation_url: "https://signin.aws.amazon.com/federation".to_owned(),
            console_url: "https://console.aws.amazon.com/".to_owned(),
        }
    }

    /// A permission set ARN of this instance no other test uses (moto does
    /// not check that permission sets exist).
    pub(crate) fn permission_set(&self) -> String {
        let instance_id = self.instance_arn.rsplit('/').next().unwrap();
        format!(
            "arn:aws:sso:::permissionSet/{instance_id}/ps-{}",
            random_hex(16)
        )
    }

    /// The Identity Store user whose user name is `email`, created when missing.
    pub(crate) async fn user(&self, email: &str) -> String {
        if let Some(id) = self.user_id(email).await {
            return id;
        }
        let created = self
            .ids
            .create_user()
            .identity_store_id(&self.store_id)
            .user_name(email)
            .display_name(email)
            .name(
                Name::builder()
                    .given_name("Demo")
                    .family_name("User")
                    .build(),
            )
            .emails(Email::builder().value(email).primary(true).build())
            .send()
            .await;
        match created {
            Ok(out) => out.user_id().to_owned(),
            // Another test made it at the same moment.
            Err(_) => self
                .user_id(email)
                .await
                .unwrap_or_else(|| panic!("cannot create identity store user `{email}`")),
        }
    }

    async fn user_id(&self, email: &str) -> Option<String> {
        let id = UniqueAttribute::builder()
            .attribute_path("userName")
            .attribute_value(email.to_owned().into())
            .build()
            .unwrap();
        self.ids
            .get_user_id()
            .identity_store_id(&self.store_id)
            .alternate_identifier(AlternateIdentifier::UniqueAttribute(id))
            .send()
            .await
            .ok()
            .map(|o| o.user_id().to_owned())
    }

    /// Principal ids of every assignment of `permission_set` on the account,
    /// sorted, duplicates kept (moto stores a repeated create twice).
    pub(crate) async fn assigned(&self, permission_set: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .sso
                .list_account_assignments()
                .instance_arn(&self.instance_arn)
                .account_id(ACCOUNT)
                .permission_set_arn(permission_set)
                .set_next_token(token.clone())
                .send()
                .await
                .unwrap();
            out.extend(
                page.account_assignments()
                    .iter()
                    .map(|a| a.principal_id().unwrap().to_owned()),
            );
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        out.sort();
        out
    }

    /// An IAM call straight to moto (Query protocol; moto checks no signature).
    pub(crate) async fn iam(&self, params: &[(&str, &str)]) -> (u16, String) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().copied())
            .append_pair("Version", "2010-05-08")
            .finish();
        let response = reqwest::Client::new()
            .post(format!("{}/", self.url))
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/iam/aws4_request, \
                 SignedHeaders=host, Signature=00",
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// A new IAM role: (ARN, name).
    pub(crate) async fn role(&self) -> (String, String) {
        let name = format!("jit-broker-{}", random_hex(10));
        let (status, body) = self
            .iam(&[
                ("Action", "CreateRole"),
                ("RoleName", &name),
                (
                    "AssumeRolePolicyDocument",
                    r#"{"Version":"2012-10-17","Statement":[]}"#,
                ),
            ])
            .await;
        assert_eq!(status, 200, "{body}");
        (format!("arn:aws:iam::{ACCOUNT}:role/{name}"), name)
    }

    /// The ARN `GetCallerIdentity` returns for minted credentials.
    pub(crate) async fn caller_arn(&self, c: &jit_api::Credentials) -> String {
        let creds = Credentials::new(
            &c.access_key_id,
            &c.secret_access_key,
            Some(c.session_token.clone()),
            None,
            "minted",
        );
        aws_sdk_sts::Client::new(&sdk_config(&self.url, creds).await)
            .get_caller_identity()
            .send()
            .await
            .unwrap()
            .arn()
            .unwrap()
            .to_owned()
    }
}

/// Fast AWS limits for tests.
pub(crate) fn tuning() -> Tuning {
    Tuning {
        attempt_timeout: Duration::from_secs(10),
        operation_timeout: Duration::from_secs(12),
        connect_timeout: Duration::from_secs(2),
        max_attempts: 4,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        poll_initial: Duration::from_millis(10),
        poll_max: Duration::from_millis(50),
        poll_deadline: Duration::from_secs(10),
        max_in_flight: 15,
        session_lifetime: None,
    }
}

/// A copy of the bundled policy directory whose `entitlements.toml` is `edit`ed.
pub(crate) fn policy_dir(edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let text = std::fs::read_to_string(src.join("entitlements.toml")).unwrap();
    std::fs::write(dir.path().join("entitlements.toml"), edit(text)).unwrap();
    dir
}

/// Every row of the tables that could carry a secret, as one text.
pub(crate) async fn database_text(store: &Store) -> String {
    // Every audit event in the chain first (PostgreSQL chains them after commit).
    jit_server::store::audit::caught_up(store).await.unwrap();
    let mut text = String::new();
    for (table, columns) in [
        (
            "audit_events",
            "actor, action, request_id, entitlement, data, prev_hash, hash",
        ),
        ("jobs", "kind, request_id, payload, last_error"),
        (
            "requests",
            "id, entitlement, requester_email, justification, failure_reason, provider_ref",
        ),
    ] {
        let rows = query_built(format!("SELECT {columns} FROM {table}"))
            .fetch_all(store)
            .await
            .unwrap();
        for row in rows {
            for i in 0..columns.split(',').count() {
                let v: Option<String> = row.try_get_at(i).unwrap();
                text.push_str(v.as_deref().unwrap_or(""));
                text.push('\n');
            }
        }
    }
    text
}

/// Fails when any of `secrets` appears in `text`; `what` names the text.
pub(crate) fn assert_no_secrets(text: &str, secrets: &[String], what: &str) {
    for secret in secrets {
        assert!(secret.len() >= 16, "too short to search for: {secret:?}");
        assert!(
            !text.contains(secret.as_str()),
            "a secret ({}…) appears in {what}",
            &secret[..4]
        );
    }
}

/// Log lines (JSON, every level) written on this thread while the guard lives.
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || Logs(writer.clone()))
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

/// A broker with the real AWS providers (through a fault proxy to moto) and
/// a policy directory whose AWS entitlements point at `roles` and `ps`.
pub(crate) struct AwsBroker {
    pub(crate) b: TestBroker,
    pub(crate) moto: Moto,
    pub(crate) proxy: FaultProxy,
    pub(crate) broker_secret: String,
    /// `aws-prod-admin`'s role (ARN, name).
    pub(crate) admin_role: (String, String),
    /// `aws-sandbox`'s role (ARN, name).
    pub(crate) sandbox_role: (String, String),
    /// `aws-billing-sso`'s permission set.
    pub(crate) ps: String,
    pub(crate) policies: tempfile::TempDir,
    /// The switch of a failing audit store, when asked for.
    pub(crate) audit: Option<AuditFault>,
}

/// What [`aws_broker_with`] sets up beyond the defaults.
#[derive(Default)]
pub(crate) struct Options {
    /// AWS limits ([`tuning`] when `None`).
    pub(crate) tuning: Option<Tuning>,
    /// `aws-billing-sso`'s permission set (a new unused ARN when `None`).
    pub(crate) ps: Option<String>,
    /// Cedar policies added to the bundled ones.
    pub(crate) cedar: &'static str,
    /// The broker runs on a database whose audit writes can be made to fail.
    pub(crate) audit_fault: bool,
}

async fn aws_broker(engine: Engine) -> AwsBroker {
    aws_broker_with(engine, Options::default()).await
}

/// [`aws_broker`] on a database whose audit writes can be made to fail
/// ([`AwsBroker::audit`]).
pub(crate) async fn audit_fault_broker(engine: Engine) -> AwsBroker {
    aws_broker_with(
        engine,
        Options {
            audit_fault: true,
            ..Options::default()
        },
    )
    .await
}

/// [`aws_broker`] with `options`.
pub(crate) async fn aws_broker_with(engine: Engine, options: Options) -> AwsBroker {
    let Options {
        tuning: aws_tuning,
        ps,
        cedar,
        audit_fault,
    } = options;
    let moto = Moto::connect().await;
    let proxy = FaultProxy::start(&moto.url).await;
    let admin_role = moto.role().await;
    let sandbox_role = moto.role().await;
    let ps = ps.unwrap_or_else(|| moto.permission_set());
    let policies = policy_dir(|text| {
        text.replace("arn:aws:iam::111111111111:role/JitAdmin", &admin_role.0)
            .replace("arn:aws:iam::222222222222:role/JitSandbox", &sandbox_role.0)
            .replace(
                "arn:aws:sso:::permissionSet/ssoins-1111111111111111/ps-1111111111111111",
                &ps,
            )
            .replace(
                "account_id = \"111111111111\"",
                &format!("account_id = \"{ACCOUNT}\""),
            )
    });
    if !cedar.is_empty() {
        std::fs::write(policies.path().join("extra.cedar"), cedar).unwrap();
    }
    let credentials = broker_credentials();
    let broker_secret = credentials.secret_access_key().to_owned();
    let aws = AwsProviders::with_credentials(
        &moto.config(&proxy.url),
        "http://127.0.0.1",
        credentials,
        aws_tuning.unwrap_or_else(tuning),
    )
    .await;
    let mut providers = aws.install(Providers::simulated());
    providers.session_revoker = Some(aws.role.clone());
    let dir = policies.path().to_owned();
    let (b, audit) = if audit_fault {
        let (fault, db) = AuditFault::new(engine).await;
        let (url, role) = (fault.broker_url.clone(), fault.role.clone());
        let b = start_on(db, AuthMode::Dev, providers, |c| {
            c.policy.dir = dir;
            c.database.url = url;
            c.database.app_role = role;
        })
        .await;
        (b, Some(fault))
    } else {
        (
            start_with(engine, providers, |c| c.policy.dir = dir).await,
            None,
        )
    };
    AwsBroker {
        b,
        moto,
        proxy,
        broker_secret,
        admin_role,
        sandbox_role,
        ps,
        policies,
        audit,
    }
}

/// The audit events of one action, oldest first.
pub(crate) async fn events(b: &TestBroker, action: &str) -> Vec<jit_server::store::audit::Event> {
    let mut e = jit_server::store::audit::list(
        &b.app.store,
        &jit_server::store::audit::Filter {
            action: Some(action.to_owned()),
            limit: 1000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    e.reverse();
    e
}

#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
async fn aws_role_credentials(engine: Engine) {
    let (logs, guard) = capture_logs();
    let env = aws_broker(engine).await;
    let b = &env.b;
    let alice = b.login("alice").await;
    let bob = b.login("bob").await;
    let mallory = b.login("mallory").await;
    let carol = b.login("carol").await;

    let r = alice.request("aws-sandbox", "1h").await;
    assert_eq!(r.state, RequestState::Approved, "auto-approved: {r:?}");
    b.run_jobs().await;
    let r = alice.show(r.id).await;
    assert_eq!(r.state, RequestState::Active, "{r:?}");
    assert!(!r.simulated, "a real provider made it");

    let (status, body) = alice
        .post(&format!("/requests/{}/credentials", r.id), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for field in [
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ] {
        assert!(body[field].is_string(), "{field} missing");
    }
    let creds: jit_api::Credentials = serde_json::from_value(body).unwrap();
    assert!(creds.access_key_id.starts_with("ASIA"), "{creds:?}");
    assert_eq!(
        env.moto.caller_arn(&creds).await,
        format!(
            "arn:aws:sts::{ACCOUNT}:assumed-role/{}/alice@example.com",
            env.sandbox_role.1
        )
    );
    let assumed = env.proxy.requests("AssumeRole");
    assert_eq!(assumed.len(), 1);
    assert_eq!(
        assumed[0].field("RoleArn").as_deref(),
        Some(env.sandbox_role.0.as_str())
    );

    // Only the owner gets credentials or a console: others are refused
    // before anything reaches AWS.
    for (who, caller, expected) in [
        ("bob (may see it)", &bob, StatusCode::FORBIDDEN),
        ("carol (admin)", &carol, StatusCode::FORBIDDEN),
        ("mallory (may not see it)", &mallory, StatusCode::NOT_FOUND),
    ] {
        for what in ["credentials", "console-url"] {
            let (status, body) = caller
                .post(&format!("/requests/{}/{what}", r.id), json!({}))
                .await;
            assert_eq!(status, expected, "{who} {what}: {body}");
            assert!(body["error"]["message"].is_string(), "{body}");
        }
    }
    assert_eq!(
        env.proxy.count("AssumeRole"),
        1,
        "no further session minted"
    );

    let minted = events(b, "credentials.minted").await;
    assert_eq!(minted.len(), 1);
    assert_eq!(minted[0].actor, "alice@example.com");
    assert_eq!(minted[0].request_id, Some(r.id.to_string()));
    let data: Value = serde_json::from_str(&minted[0].data).unwrap();
    assert_eq!(data["access_key_id"], creds.access_key_id.as_str());
    assert!(events(b, "console.signin").await.is_empty());

    // After revocation the owner gets nothing either.
    let (status, body) = alice
        .post(&format!("/requests/{}/revoke", r.id), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = alice
        .post(&format!("/requests/{}/credentials", r.id), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    b.run_jobs().await;

    let secrets = [
        creds.secret_access_key.clone(),
        creds.session_token.clone(),
        env.broker_secret.clone(),
        alice.token.clone(),
        bob.token.clone(),
    ];
    let db = database_text(&b.app.store).await;
    assert!(db.contains(&creds.access_key_id), "the key id is audited");
    assert_no_secrets(&db, &secrets, "the database");
    assert_eq!(
        b.audit_actions(Some(r.id)).await,
        [
            "request.created",
            "request.auto_approved",
            "grant.activated",
            "credentials.minted",
            "grant.revoked",
            "grant.removed"
        ]
    );
    drop(guard);
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("minted sts session") && logs.contains(&creds.access_key_id),
        "the logs saw the work: {logs}"
    );
    assert_no_secrets(&logs, &secrets, "the logs");
}

#[tokio::test(flavor = "current_thread")]
async fn aws_role_credentials_sqlite() {
    aws_role_credentials(Engine::Sqlite).await;
}

#[tokio::test(flavor = "current_thread")]
async fn aws_role_credentials_postgres() {
    aws_role_credentials(Engine::Postgres).await;
}

async fn identity_center_follows_the_grant(engine: Engine) {
    let env = aws_broker(engine).await;
    let b = &env.b;
    let alice_id = env.moto.user("alice@example.com").await;
    let alice = b.login("alice").await;
    let bob = b.login("bob").await;

    let r = alice.request("aws-billing-sso", "1h").await;
    assert_eq!(r.state, RequestState::Pending);
    b.run_jobs().await;
    assert_eq!(env.moto.assigned(&env.ps).await, Vec::<String>::new());
    let (status, body) = bob.approve(r.id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    b.run_jobs().await;
    let r = alice.show(r.id).await;
    assert_eq!(r.state, RequestState::Active, "{r:?}");
    assert_eq!(
        env.moto.assigned(&env.ps).await,
        std::slice::from_ref(&alice_id)
    );
    let first_end = r.expires_at.unwrap();

    // An extension (approved again) continues the window; the assignment stays.
    let (status, body) = alice
        .post(
            &format!("/requests/{}/extend", r.id),
            json!({ "by": "1h", "justification": "still on it" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ext: jit_api::Request = serde_json::from_value(body).unwrap();
    assert_eq!(ext.state, RequestState::Pending);
    let (status, body) = bob.approve(ext.id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    b.run_jobs().await;
    let ext = alice.show(ext.id).await;
    assert_eq!(ext.state, RequestState::Active, "{ext:?}");
    assert_eq!(
        ext.expires_at.unwrap(),
        first_end + time::Duration::hours(1)
    );
    assert_eq!(
        env.moto.assigned(&env.ps).await,
        std::slice::from_ref(&alice_id),
        "one assignment for both grants"
    );
    assert_eq!(env.proxy.count("CreateAccountAssignment"), 1);

    // The first grant ends: the extension still needs the assignment.
    b.advance(Duration::from_mins(61)).await;
    assert_eq!(alice.show(r.id).await.state, RequestState::Expired);
    assert_eq!(alice.show(ext.id).await.state, RequestState::Active);
    assert_eq!(
        env.moto.assigned(&env.ps).await,
        std::slice::from_ref(&alice_id)
    );
    assert_eq!(env.proxy.count("DeleteAccountAssignment"), 0);
    let skipped = events(b, "grant.removal_skipped").await;
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].request_id, Some(r.id.to_string()));

    // The last grant ends: the assignment goes.
    b.advance(Duration::from_hours(1)).await;
    assert_eq!(alice.show(ext.id).await.state, RequestState::Expired);
    assert_eq!(env.moto.assigned(&env.ps).await, Vec::<String>::new());
    assert_eq!(env.proxy.count("DeleteAccountAssignment"), 1);
    assert_eq!(
        b.audit_actions(Some(ext.id)).await,
        [
            "request.extension_requested",
            "request.approval",
            "request.approved",
            "grant.activated",
            "grant.expired",
            "grant.removed"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_center_follows_the_grant_sqlite() {
    identity_center_follows_the_grant(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_center_follows_the_grant_postgres() {
    identity_center_follows_the_grant(Engine::Postgres).await;
}

async fn a_failed_assignment_fails_the_grant(engine: Engine) {
    let env = aws_broker(engine).await;
    let b = &env.b;
    env.moto.user("alice@example.com").await;
    let alice = b.login("alice").await;
    let bob = b.login("bob").await;
    env.proxy.script(
        "CreateAccountAssignment",
        1,
        Fault::failed("Received a 404 status error: Not supported account 123456789012"),
    );
    let r = alice.request("aws-billing-sso", "1h").await;
    bob.approve(r.id).await;
    b.run_jobs().await;
    let (status, body) = alice.get(&format!("/requests/{}", r.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "failed", "{body}");
    let reason = body["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("Identity Center could not create the assignment")
            && reason.contains("alice@example.com")
            && reason.contains("Not supported account 123456789012"),
        "{reason}"
    );
    assert_eq!(
        env.proxy.count("CreateAccountAssignment"),
        1,
        "a final failure is not retried"
    );
    // No credentials or second attempt for a failed grant.
    let (status, _) = alice
        .post(&format!("/requests/{}/credentials", r.id), json!({}))
        .await;
    assert!(status.is_client_error());
    b.advance(Duration::from_mins(10)).await;
    assert_eq!(env.proxy.count("CreateAccountAssignment"), 1);
    let failed = events(b, "grant.failed").await;
    assert_eq!(failed.len(), 1);
    assert!(failed[0].data.contains("Not supported account"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_assignment_fails_the_grant_sqlite() {
    a_failed_assignment_fails_the_grant(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_assignment_fails_the_grant_postgres() {
    a_failed_assignment_fails_the_grant(Engine::Postgres).await;
}

/// The `aws:TokenIssueTime` cutoff of the "revoke all sessions" policy on `role`, from moto.
async fn revoked_before(moto: &Moto, role: &str) -> Option<String> {
    let (doc, _) = crate::sessions::inline_policy(&moto.url, role, REVOKE_POLICY_NAME).await?;
    let statement = &doc["Statement"][0];
    assert_eq!(statement["Effect"], "Deny");
    Some(
        statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

async fn revoke_all_sessions(engine: Engine) {
    let env = aws_broker(engine).await;
    let b = &env.b;
    let carol = b.login("carol").await;
    let bob = b.login("bob").await;
    let role = &env.admin_role.1;
    assert_eq!(revoked_before(&env.moto, role).await, None);

    let (status, body) = bob
        .post(
            "/admin/revoke-sessions",
            json!({ "entitlement": "aws-prod-admin" }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(revoked_before(&env.moto, role).await, None);
    assert_eq!(env.proxy.count("PutRolePolicy"), 0);

    let (status, body) = carol
        .post(
            "/admin/revoke-sessions",
            json!({ "entitlement": "aws-prod-admin" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role_arn"], env.admin_role.0.as_str());
    let before = time::OffsetDateTime::parse(
        body["issued_before"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let cutoff = revoked_before(&env.moto, role).await.unwrap();
    let cutoff =
        time::OffsetDateTime::parse(&cutoff, &time::format_description::well_known::Rfc3339)
            .unwrap();
    // Rounded up to the whole second that covers every session issued before.
    assert!(
        cutoff >= before && cutoff - before <= time::Duration::seconds(1),
        "{cutoff} vs {before}"
    );
    let audited = events(b, "admin.sessions_revoked").await;
    assert_eq!(audited.len(), 1, "bob's refusal changed nothing");
    assert_eq!(audited[0].actor, "carol@example.com");
    assert_eq!(audited[0].entitlement.as_deref(), Some("aws-prod-admin"));
    assert!(audited[0].data.contains(&env.admin_role.0));

    // Not for a kind without STS sessions, not for an unknown entitlement.
    let (status, _) = carol
        .post(
            "/admin/revoke-sessions",
            json!({ "entitlement": "aws-billing-sso" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = carol
        .post("/admin/revoke-sessions", json!({ "entitlement": "nope" }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(env.proxy.count("PutRolePolicy"), 1);
    b.audit_actions(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_all_sessions_sqlite() {
    revoke_all_sessions(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_all_sessions_postgres() {
    revoke_all_sessions(Engine::Postgres).await;
}

/// A cloud's refusal (STS `AccessDenied`, naming the role and the broker's own principal)
/// reaches the caller as `502 upstream_error` with a fixed message; what STS said is in the
/// broker's log, not in the body (issue 23 item 7).
async fn an_upstream_refusal_is_logged_not_shown(engine: Engine) {
    let (logs, guard) = capture_logs();
    let env = aws_broker(engine).await;
    let b = &env.b;
    let alice = b.login("alice").await;
    let r = alice.request("aws-sandbox", "1h").await;
    b.run_jobs().await;
    assert_eq!(alice.show(r.id).await.state, RequestState::Active);
    let said = "User: arn:aws:iam::123456789012:user/jit-broker-internal is not authorized \
                to perform: sts:AssumeRole on resource: arn:aws:iam::123456789012:role/hidden";
    env.proxy.script(
        "AssumeRole",
        10,
        Fault::Respond {
            status: 403,
            headers: vec![("content-type".into(), "text/xml".into())],
            body: format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>\
                 <Type>Sender</Type><Code>AccessDenied</Code><Message>{said}</Message></Error>\
                 <RequestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</RequestId></ErrorResponse>"
            ),
        },
    );
    let (status, body) = alice
        .post(&format!("/requests/{}/credentials", r.id), json!({}))
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");
    assert_eq!(
        body["error"]["message"],
        "could not mint credentials: the cloud refused or did not answer (the broker logged \
         what it said)"
    );
    drop(guard);
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("jit-broker-internal") && logs.contains("upstream failure"),
        "the log has what STS said: {logs}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_upstream_refusal_is_logged_not_shown_sqlite() {
    an_upstream_refusal_is_logged_not_shown(Engine::Sqlite).await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_upstream_refusal_is_logged_not_shown_postgres() {
    an_upstream_refusal_is_logged_not_shown(Engine::Postgres).await;
}
