//! AWS providers against moto (server mode), through the fault proxy.
//!
//! Every test works in its own corner of the shared moto server (its own
//! role name, identity-store users and permission set), so they run in
//! parallel without `/moto-api/reset`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_identitystore::types::{Email, Name};
use aws_sdk_ssoadmin::types::{PrincipalType, TargetType};
use jit_server::config::AwsConfig;
use jit_server::policy::catalog::{Entitlement, Kind, NotifyRoute, Target};
use jit_server::providers::aws::{AwsProviders, REVOKE_POLICY_NAME, Tuning};
use jit_server::providers::{GrantProvider, GrantSpec, Grantee, LiveGrant, ProviderError};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::fault_proxy::{Fault, FaultProxy};
use crate::support::peer_env;

pub(crate) const ACCOUNT: &str = "123456789012";
const ISSUER: &str = "https://jit.example.com";

pub(crate) fn random_hex(n: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        s.push_str(&Uuid::new_v4().simple().to_string());
    }
    s.truncate(n);
    s
}

/// Fast limits for tests.
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

/// Broker credentials made up for this test run.
pub(crate) fn broker_credentials(session_token: Option<String>) -> Credentials {
    Credentials::new(
        format!("AKIA{}", random_hex(16).to_uppercase()),
        random_hex(40),
        session_token,
        None,
        "jit-test",
    )
}

pub(crate) struct Env {
    pub(crate) moto: String,
    pub(crate) proxy: FaultProxy,
    pub(crate) aws: AwsProviders,
    pub(crate) credentials: Credentials,
    pub(crate) instance: String,
    pub(crate) store: String,
    pub(crate) sso: aws_sdk_ssoadmin::Client,
    pub(crate) ids: aws_sdk_identitystore::Client,
}

pub(crate) async fn sdk_config(endpoint: &str, credentials: Credentials) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .load()
        .await
}

pub(crate) async fn env_with(
    tuning: Tuning,
    credentials: Credentials,
    federation_url: Option<String>,
) -> Env {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let moto = peer_env("JIT_TEST_MOTO_URL");
    let proxy = FaultProxy::start(&moto).await;
    let direct = sdk_config(&moto, credentials.clone()).await;
    let sso = aws_sdk_ssoadmin::Client::new(&direct);
    let ids = aws_sdk_identitystore::Client::new(&direct);
    let instances = sso.list_instances().send().await.unwrap();
    let instance = &instances.instances()[0];
    let instance_arn = instance.instance_arn().unwrap().to_owned();
    let store = instance.identity_store_id().unwrap().to_owned();
    let cfg = AwsConfig {
        region: "us-east-1".to_owned(),
        endpoint_url: Some(proxy.url.clone()),
        identity_center_instance_arn: Some(instance_arn.clone()),
        identity_store_id: Some(store.clone()),
        federation_url: federation_url
            .unwrap_or_else(|| "https://signin.aws.amazon.com/federation".to_owned()),
        console_url: "https://console.aws.amazon.com/".to_owned(),
    };
    let aws = AwsProviders::with_credentials(&cfg, ISSUER, credentials.clone(), tuning).await;
    Env {
        moto,
        proxy,
        aws,
        credentials,
        instance: instance_arn,
        store,
        sso,
        ids,
    }
}

pub(crate) async fn env() -> Env {
    env_with(tuning(), broker_credentials(None), None).await
}

pub(crate) fn entitlement(id: &str, target: Target) -> Entitlement {
    Entitlement {
        id: id.to_owned(),
        title: id.to_owned(),
        kind: match target {
            Target::AwsRole { .. } => Kind::AwsRole,
            Target::AwsIdentityCenter { .. } => Kind::AwsIdentityCenter,
            Target::EntraRole { .. } => Kind::EntraRole,
            Target::EntraGroup { .. } => Kind::EntraGroup,
            Target::AzureRole { .. } => Kind::AzureRole,
            Target::Bundle { .. } => Kind::Bundle,
        },
        target,
        max_duration: 4 * 3600,
        approvals_required: 0,
        pending_ttl: 3600,
        max_schedule_ahead: jit_server::policy::catalog::DEFAULT_MAX_SCHEDULE_AHEAD,
        require_mfa: false,
        auth_context: None,
        approve_auth_context: None,
        require_ticket: false,
        ticket_pattern: None,
        max_extensions: 2,
        break_glass: false,
        notify: NotifyRoute::default(),
        line: 1,
    }
}

pub(crate) fn role_entitlement(role_arn: &str, session_policy: Option<&str>) -> Entitlement {
    entitlement(
        "aws-test-role",
        Target::AwsRole {
            role_arn: role_arn.to_owned(),
            session_policy: session_policy.map(str::to_owned),
            session_seconds: 3600,
        },
    )
}

pub(crate) fn grantee(email: &str) -> Grantee {
    Grantee {
        key: format!("tid/{}", Uuid::new_v4()),
        email: email.to_owned(),
        name: "Test User".to_owned(),
        oid: None,
    }
}

pub(crate) fn spec<'a>(grantee: &'a Grantee, entitlement: &'a Entitlement) -> GrantSpec<'a> {
    let now = OffsetDateTime::now_utc();
    GrantSpec {
        request_id: Uuid::now_v7(),
        grantee,
        entitlement,
        starts_at: now,
        ends_at: now + time::Duration::hours(1),
        justification: "testing",
        ticket: None,
        overlapping: false,
        held: false,
    }
}

pub(crate) fn unique_email(prefix: &str) -> String {
    format!("{prefix}-{}@example.com", random_hex(8))
}

/// An IAM call straight to moto (moto does not check signatures by default).
pub(crate) async fn iam(moto: &str, params: &[(&str, &str)]) -> (u16, String) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().copied())
        .append_pair("Version", "2010-05-08")
        .finish();
    let response = reqwest::Client::new()
        .post(format!("{moto}/"))
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

pub(crate) async fn create_role(moto: &str) -> (String, String) {
    let name = format!("jit-test-{}", random_hex(10));
    let (status, body) = iam(
        moto,
        &[
            ("Action", "CreateRole"),
            ("RoleName", &name),
            (
                "AssumeRolePolicyDocument",
                r#"{"Version":"2012-10-17","Statement":[]}"#,
            ),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    (format!("arn:aws:iam::{ACCOUNT}:role/{name}"), name)
}

/// `GetCallerIdentity` with the given credentials, straight to moto.
pub(crate) async fn caller_arn(moto: &str, c: &jit_api::Credentials) -> String {
    let creds = Credentials::new(
        &c.access_key_id,
        &c.secret_access_key,
        Some(c.session_token.clone()),
        None,
        "minted",
    );
    let sts = aws_sdk_sts::Client::new(&sdk_config(moto, creds).await);
    sts.get_caller_identity()
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned()
}

// ---------------------------------------------------------------- aws_role

#[tokio::test]
async fn minted_credentials_are_an_assumed_role_session_with_tags_and_source_identity() {
    let env = env().await;
    let (role_arn, role_name) = create_role(&env.moto).await;
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;
    let ent = role_entitlement(&role_arn, Some(policy));
    let email = unique_email("alice");
    let who = grantee(&email);
    let spec = spec(&who, &ent);

    let record = env.aws.role.grant(&spec).await.unwrap();
    assert_eq!(record.details["role_arn"], role_arn);
    assert_eq!(env.proxy.count("AssumeRole"), 0, "grant mints nothing");

    let before = OffsetDateTime::now_utc();
    let creds = env.aws.role.mint_credentials(&spec, 900).await.unwrap();
    assert!(creds.access_key_id.starts_with("ASIA"), "{creds:?}");
    assert!(!creds.secret_access_key.is_empty() && !creds.session_token.is_empty());
    let expires = OffsetDateTime::parse(
        &creds.expiration,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let lifetime = (expires - before).whole_seconds();
    assert!((880..=905).contains(&lifetime), "lifetime {lifetime}s");

    let arn = caller_arn(&env.moto, &creds).await;
    assert_eq!(
        arn,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role_name}/{email}")
    );

    let sent = env.proxy.requests("AssumeRole");
    assert_eq!(sent.len(), 1);
    let sent = &sent[0];
    assert_eq!(sent.field("RoleArn").as_deref(), Some(role_arn.as_str()));
    assert_eq!(
        sent.field("RoleSessionName").as_deref(),
        Some(email.as_str())
    );
    assert_eq!(
        sent.field("SourceIdentity").as_deref(),
        Some(email.as_str())
    );
    assert_eq!(sent.field("DurationSeconds").as_deref(), Some("900"));
    assert_eq!(sent.field("Policy").as_deref(), Some(policy));
    let tags: HashMap<String, String> = (1..=2)
        .map(|i| {
            (
                sent.field(&format!("Tags.member.{i}.Key")).unwrap(),
                sent.field(&format!("Tags.member.{i}.Value")).unwrap(),
            )
        })
        .collect();
    assert_eq!(tags["jit:request-id"], spec.request_id.to_string());
    assert_eq!(tags["jit:requester"], email);

    // Nothing to remove upstream.
    env.aws.role.revoke(&spec).await.unwrap();
}

#[tokio::test]
async fn odd_emails_give_valid_session_names_and_tags() {
    let env = env().await;
    let (role_arn, role_name) = create_role(&env.moto).await;
    let ent = role_entitlement(&role_arn, None);
    let email = format!("o'brien!{}@example.com", random_hex(4));
    let who = grantee(&email);
    let spec = spec(&who, &ent);
    let creds = env.aws.role.mint_credentials(&spec, 1800).await.unwrap();

    let sent = &env.proxy.requests("AssumeRole")[0];
    let name = sent.field("RoleSessionName").unwrap();
    assert!(name.starts_with("o_brien_"), "{name}");
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)),
        "{name}"
    );
    assert_eq!(sent.field("SourceIdentity"), Some(name.clone()));
    assert_eq!(sent.field("Policy"), None, "no session policy configured");
    assert_eq!(sent.field("DurationSeconds").as_deref(), Some("1800"));
    let requester = (1..=2)
        .find(|i| sent.field(&format!("Tags.member.{i}.Key")).as_deref() == Some("jit:requester"))
        .and_then(|i| sent.field(&format!("Tags.member.{i}.Value")))
        .unwrap();
    assert!(requester.starts_with("o_brien_") && !requester.contains(['\'', '!']));
    assert_eq!(
        caller_arn(&env.moto, &creds).await,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role_name}/{name}")
    );
}

#[tokio::test]
async fn the_broker_refuses_what_sts_would_refuse_before_calling_it() {
    let env = env().await;
    let (role_arn, _) = create_role(&env.moto).await;
    let who = grantee(&unique_email("bob"));

    let ent = role_entitlement(&role_arn, None);
    for secs in [0, 899, 43_201] {
        let err = env.aws.role.mint_credentials(&spec(&who, &ent), secs).await;
        assert!(
            matches!(&err, Err(ProviderError::Permanent(m)) if m.contains("session duration")),
            "{err:?}"
        );
    }

    let bad_arn = role_entitlement("arn:aws:iam::123456789012:user/not-a-role", None);
    let err = env.aws.role.grant(&spec(&who, &bad_arn)).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("not a role ARN")),
        "{err:?}"
    );
    assert!(
        env.aws
            .role
            .mint_credentials(&spec(&who, &bad_arn), 900)
            .await
            .is_err()
    );

    let euro = role_entitlement(&role_arn, Some(r#"{"Sid":"€"}"#));
    let err = env.aws.role.grant(&spec(&who, &euro)).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("U+20AC")),
        "{err:?}"
    );
    let long = format!(r#"{{"Sid":"{}"}}"#, "a".repeat(2100));
    let err = env
        .aws
        .role
        .mint_credentials(&spec(&who, &role_entitlement(&role_arn, Some(&long))), 900)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("2048")),
        "{err:?}"
    );

    let ic = entitlement(
        "ic",
        Target::AwsIdentityCenter {
            account_id: ACCOUNT.to_owned(),
            permission_set_arn:
                "arn:aws:sso:::permissionSet/ssoins-1111111111111111/ps-2222222222222222".to_owned(),
            revoke_sessions: true,
        },
    );
    assert!(
        env.aws
            .role
            .mint_credentials(&spec(&who, &ic), 900)
            .await
            .is_err()
    );

    // moto would have accepted all of it; none of it reached STS.
    assert_eq!(env.proxy.count("AssumeRole"), 0);
}

#[tokio::test]
async fn throttling_and_server_errors_from_sts_are_retried_then_given_up() {
    let env = env().await;
    let (role_arn, _) = create_role(&env.moto).await;
    let ent = role_entitlement(&role_arn, None);
    let who = grantee(&unique_email("carol"));

    env.proxy.script(
        "AssumeRole",
        2,
        Fault::query_error(400, "Throttling", "Rate exceeded"),
    );
    env.proxy.script(
        "AssumeRole",
        1,
        Fault::query_error(500, "InternalFailure", "oops"),
    );
    env.aws
        .role
        .mint_credentials(&spec(&who, &ent), 900)
        .await
        .unwrap();
    assert_eq!(env.proxy.count("AssumeRole"), 4);

    env.proxy.script(
        "AssumeRole",
        4,
        Fault::query_error(503, "ServiceUnavailable", "down"),
    );
    let err = env
        .aws
        .role
        .mint_credentials(&spec(&who, &ent), 900)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Transient(m) if m.contains("ServiceUnavailable") && m.contains("gave up after 4 attempts")),
        "{err:?}"
    );
    assert_eq!(env.proxy.count("AssumeRole"), 8);

    // Access denied is final at once.
    env.proxy.script(
        "AssumeRole",
        1,
        Fault::query_error(403, "AccessDenied", "not authorized"),
    );
    let err = env
        .aws
        .role
        .mint_credentials(&spec(&who, &ent), 900)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("AccessDenied") && m.contains("sts:SetSourceIdentity")),
        "{err:?}"
    );
    assert_eq!(env.proxy.count("AssumeRole"), 9);
}

#[tokio::test]
async fn role_chained_brokers_cap_sessions_at_one_hour() {
    // Temporary broker credentials (a session token): AssumeRole is role
    // chaining, which AWS caps at one hour (moto does not).
    let env = env_with(tuning(), broker_credentials(Some(random_hex(64))), None).await;
    let (role_arn, _) = create_role(&env.moto).await;
    let ent = role_entitlement(&role_arn, None);
    let who = grantee(&unique_email("dave"));
    env.aws
        .role
        .mint_credentials(&spec(&who, &ent), 7200)
        .await
        .unwrap();
    env.aws
        .role
        .mint_credentials(&spec(&who, &ent), 1200)
        .await
        .unwrap();
    let sent: Vec<String> = env
        .proxy
        .requests("AssumeRole")
        .iter()
        .map(|r| r.field("DurationSeconds").unwrap())
        .collect();
    assert_eq!(sent, ["3600", "1200"]);
}

/// A stand-in for `signin.aws.amazon.com/federation` (no emulator exists):
/// records the queries and answers as told.
struct Federation {
    url: String,
    queries: Arc<Mutex<Vec<HashMap<String, String>>>>,
    status: Arc<Mutex<u16>>,
}

async fn federation() -> Federation {
    use axum::extract::{Query, State};
    type Shared = (Arc<Mutex<Vec<HashMap<String, String>>>>, Arc<Mutex<u16>>);
    async fn handler(
        State((queries, status)): State<Shared>,
        Query(q): Query<HashMap<String, String>>,
    ) -> (axum::http::StatusCode, String) {
        queries.lock().unwrap().push(q);
        let status = *status.lock().unwrap();
        let code = axum::http::StatusCode::from_u16(status).unwrap();
        if status == 200 {
            (code, r#"{"SigninToken":"signin-token-123"}"#.to_owned())
        } else {
            (code, "Invalid credentials parameter".to_owned())
        }
    }
    let queries = Arc::new(Mutex::new(Vec::new()));
    let status = Arc::new(Mutex::new(200));
    let app = axum::Router::new()
        .route("/federation", axum::routing::get(handler))
        .with_state((queries.clone(), status.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/federation", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Federation {
        url,
        queries,
        status,
    }
}

#[tokio::test]
async fn console_url_goes_through_the_federation_endpoint() {
    let fed = federation().await;
    let env = env_with(tuning(), broker_credentials(None), Some(fed.url.clone())).await;
    let (role_arn, role_name) = create_role(&env.moto).await;
    let ent = role_entitlement(&role_arn, None);
    let email = unique_email("erin");
    let who = grantee(&email);

    let url = env
        .aws
        .role
        .console_url(&spec(&who, &ent), 1800)
        .await
        .unwrap();
    let url = url::Url::parse(&url).unwrap();
    assert_eq!(url.as_str().split('?').next(), Some(fed.url.as_str()));
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["Action"], "login");
    assert_eq!(q["Issuer"], ISSUER);
    assert_eq!(q["Destination"], "https://console.aws.amazon.com/");
    assert_eq!(q["SigninToken"], "signin-token-123");

    let asked = fed.queries.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["Action"], "getSigninToken");
    assert_eq!(asked[0]["SessionDuration"], "1800");
    let session: serde_json::Value = serde_json::from_str(&asked[0]["Session"]).unwrap();
    let minted = jit_api::Credentials {
        access_key_id: session["sessionId"].as_str().unwrap().to_owned(),
        secret_access_key: session["sessionKey"].as_str().unwrap().to_owned(),
        session_token: session["sessionToken"].as_str().unwrap().to_owned(),
        expiration: String::new(),
    };
    // The session handed to the federation endpoint is a fresh session of the role.
    assert_eq!(
        caller_arn(&env.moto, &minted).await,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role_name}/{email}")
    );
    assert_eq!(
        env.proxy.requests("AssumeRole")[0]
            .field("DurationSeconds")
            .as_deref(),
        Some("1800")
    );

    // A refusal is final and its message carries neither the URL nor secrets.
    *fed.status.lock().unwrap() = 400;
    let err = env
        .aws
        .role
        .console_url(&spec(&who, &ent), 1800)
        .await
        .unwrap_err();
    let ProviderError::Permanent(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("http 400"), "{message}");
    let asked = fed.queries.lock().unwrap().clone();
    let session: serde_json::Value = serde_json::from_str(&asked[1]["Session"]).unwrap();
    for secret in ["sessionKey", "sessionToken"] {
        assert!(
            !message.contains(session[secret].as_str().unwrap()),
            "{message}"
        );
    }
    assert!(!message.contains("Session="), "{message}");

    // Server errors are retried.
    *fed.status.lock().unwrap() = 503;
    let err = env
        .aws
        .role
        .console_url(&spec(&who, &ent), 1800)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
    assert_eq!(fed.queries.lock().unwrap().len(), 2 + 4);
}

#[tokio::test]
async fn chained_brokers_omit_the_console_session_duration() {
    let fed = federation().await;
    let env = env_with(
        tuning(),
        broker_credentials(Some(random_hex(64))),
        Some(fed.url.clone()),
    )
    .await;
    let (role_arn, _) = create_role(&env.moto).await;
    let ent = role_entitlement(&role_arn, None);
    let who = grantee(&unique_email("frank"));
    env.aws
        .role
        .console_url(&spec(&who, &ent), 1800)
        .await
        .unwrap();
    let asked = fed.queries.lock().unwrap().clone();
    assert!(
        !asked[0].contains_key("SessionDuration"),
        "{:?}",
        asked[0].keys()
    );
}

#[tokio::test]
async fn revoke_all_sessions_puts_the_token_issue_time_deny_on_the_role() {
    let env = env().await;
    let (role_arn, role_name) = create_role(&env.moto).await;
    assert_eq!(env.aws.role.revoked_before(&role_arn).await.unwrap(), None);

    let at = time::macros::datetime!(2026-05-07 23:46:59.250 UTC);
    env.aws
        .role
        .revoke_all_sessions(&role_arn, at)
        .await
        .unwrap();

    // What moto stored, read without the broker's code.
    let (doc, _) = crate::sessions::inline_policy(&env.moto, &role_name, REVOKE_POLICY_NAME)
        .await
        .unwrap();
    let statement = &doc["Statement"][0];
    assert_eq!(statement["Effect"], "Deny");
    assert_eq!(statement["Action"][0], "*");
    assert_eq!(statement["Resource"][0], "*");
    // Rounded up to the whole second: sessions of 23:46:59.xxx are covered.
    assert_eq!(
        statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
        "2026-05-07T23:47:00Z"
    );
    let put = &env.proxy.requests("PutRolePolicy")[0];
    assert_eq!(put.field("RoleName"), Some(role_name.clone()));
    assert_eq!(put.field("PolicyName").as_deref(), Some(REVOKE_POLICY_NAME));

    let revoked = time::macros::datetime!(2026-05-07 23:47:00 UTC);
    assert_eq!(
        env.aws.role.revoked_before(&role_arn).await.unwrap(),
        Some(revoked)
    );

    // An earlier time never moves the cutoff back; a later one moves it on.
    env.aws
        .role
        .revoke_all_sessions(&role_arn, revoked - time::Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(
        env.aws.role.revoked_before(&role_arn).await.unwrap(),
        Some(revoked)
    );
    let later = revoked + time::Duration::hours(2);
    env.aws
        .role
        .revoke_all_sessions(&role_arn, later)
        .await
        .unwrap();
    assert_eq!(
        env.aws.role.revoked_before(&role_arn).await.unwrap(),
        Some(later)
    );

    // A role that does not exist is a clear, final error.
    let missing = format!("arn:aws:iam::{ACCOUNT}:role/no-such-role-{}", random_hex(6));
    let err = env
        .aws
        .role
        .revoke_all_sessions(&missing, OffsetDateTime::now_utc())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("NoSuchEntity")),
        "{err:?}"
    );
    let err = env
        .aws
        .role
        .revoke_all_sessions(
            "arn:aws:iam::123456789012:user/x",
            OffsetDateTime::now_utc(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Permanent(_)));
}

#[tokio::test]
async fn iam_calls_are_signed_for_the_partition_retried_and_given_up() {
    let env = env().await;
    let (role_arn, _) = create_role(&env.moto).await;
    let later = OffsetDateTime::now_utc();
    env.aws
        .role
        .revoke_all_sessions(&role_arn, later)
        .await
        .unwrap();
    // The requests were signed for IAM (us-east-1, the aws partition's
    // region) with the broker's key.
    let key = env.credentials.access_key_id().to_owned();
    let puts = env.proxy.requests("PutRolePolicy");
    assert_eq!(puts.len(), 1);
    for put in &puts {
        let auth = put.authorization.as_deref().unwrap_or_default();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 ")
                && auth.contains(&format!("Credential={key}/"))
                && auth.contains("/us-east-1/iam/aws4_request"),
            "{auth}"
        );
    }

    // Throttling and server failures are retried, then given up.
    env.proxy.script(
        "PutRolePolicy",
        2,
        Fault::query_error(400, "Throttling", "Rate exceeded"),
    );
    env.proxy.script(
        "GetRolePolicy",
        1,
        Fault::query_error(500, "ServiceFailure", "try again"),
    );
    env.aws
        .role
        .revoke_all_sessions(&role_arn, later)
        .await
        .unwrap();
    assert_eq!(
        env.proxy.count("PutRolePolicy"),
        4,
        "two throttled, then one through"
    );
    env.proxy.script(
        "PutRolePolicy",
        4,
        Fault::query_error(400, "Throttling", "Rate exceeded"),
    );
    let err = env
        .aws
        .role
        .revoke_all_sessions(&role_arn, later)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Transient(m) if m.contains("Throttling") && m.contains("gave up after 4 attempts")),
        "{err:?}"
    );
}

/// Log lines written while `f` runs (every target, every level).
async fn capture_logs<F: std::future::Future>(f: F) -> (F::Output, String) {
    #[derive(Clone)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf(Arc::default());
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let out = f.await;
    drop(guard);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

#[tokio::test(flavor = "current_thread")]
async fn no_secret_reaches_logs_debug_output_or_errors() {
    let fed = federation().await;
    let env = env_with(tuning(), broker_credentials(None), Some(fed.url.clone())).await;
    let (role_arn, _) = create_role(&env.moto).await;
    let ent = role_entitlement(&role_arn, None);
    let who = grantee(&unique_email("grace"));

    let (results, logs) = capture_logs(Box::pin(async {
        let creds = env
            .aws
            .role
            .mint_credentials(&spec(&who, &ent), 900)
            .await
            .unwrap();
        env.aws
            .role
            .console_url(&spec(&who, &ent), 900)
            .await
            .unwrap();
        *fed.status.lock().unwrap() = 500;
        let err = env
            .aws
            .role
            .console_url(&spec(&who, &ent), 900)
            .await
            .unwrap_err();
        env.aws
            .role
            .revoke_all_sessions(&role_arn, OffsetDateTime::now_utc())
            .await
            .unwrap();
        (creds, err)
    }))
    .await;
    let (creds, err) = results;
    let mut secrets = vec![
        creds.secret_access_key.clone(),
        creds.session_token.clone(),
        env.credentials.secret_access_key().to_owned(),
    ];
    for q in fed.queries.lock().unwrap().iter() {
        let session: serde_json::Value = serde_json::from_str(&q["Session"]).unwrap();
        secrets.push(session["sessionKey"].as_str().unwrap().to_owned());
        secrets.push(session["sessionToken"].as_str().unwrap().to_owned());
    }
    // The logs did capture the work, with the access key id only.
    assert!(logs.contains("minted sts session"), "{logs}");
    assert!(logs.contains(&creds.access_key_id), "{logs}");
    assert!(logs.contains("issued console sign-in url"), "{logs}");
    assert!(logs.contains("revoked all sessions of role"), "{logs}");
    let debug = format!(
        "{creds:?} {:?} {:?} {err:?} {err}",
        env.aws.role, env.aws.identity_center
    );
    for secret in &secrets {
        assert!(secret.len() >= 16);
        assert!(!logs.contains(secret.as_str()), "a secret reached the logs");
        assert!(
            !debug.contains(secret.as_str()),
            "a secret reached debug output: {debug}"
        );
    }
    assert!(
        !logs.contains("signin-token-123"),
        "the sign-in token reached the logs"
    );
}

// ---------------------------------------------------- aws_identity_center

/// A permission set ARN of this instance that no other test uses (moto does
/// not check that permission sets exist).
pub(crate) fn permission_set(env: &Env) -> String {
    let instance_id = env.instance.rsplit('/').next().unwrap();
    format!(
        "arn:aws:sso:::permissionSet/{instance_id}/ps-{}",
        random_hex(16)
    )
}

pub(crate) fn ic_entitlement(id: &str, permission_set: &str) -> Entitlement {
    entitlement(
        id,
        Target::AwsIdentityCenter {
            account_id: ACCOUNT.to_owned(),
            permission_set_arn: permission_set.to_owned(),
            revoke_sessions: true,
        },
    )
}

pub(crate) async fn create_user(env: &Env, user_name: &str, email: &str) -> String {
    env.ids
        .create_user()
        .identity_store_id(&env.store)
        .user_name(user_name)
        .display_name(user_name)
        .name(
            Name::builder()
                .given_name("Test")
                .family_name("User")
                .build(),
        )
        .emails(Email::builder().value(email).primary(true).build())
        .send()
        .await
        .unwrap()
        .user_id()
        .to_owned()
}

/// (principal type, principal id) of every assignment, straight from moto.
pub(crate) async fn assignments(env: &Env, permission_set: &str) -> Vec<(String, String)> {
    let out = env
        .sso
        .list_account_assignments()
        .instance_arn(&env.instance)
        .account_id(ACCOUNT)
        .permission_set_arn(permission_set)
        .send()
        .await
        .unwrap();
    let mut list: Vec<(String, String)> = out
        .account_assignments()
        .iter()
        .map(|a| {
            (
                a.principal_type().unwrap().as_str().to_owned(),
                a.principal_id().unwrap().to_owned(),
            )
        })
        .collect();
    list.sort();
    list
}

pub(crate) async fn assign(
    env: &Env,
    permission_set: &str,
    principal_type: PrincipalType,
    id: &str,
) {
    env.sso
        .create_account_assignment()
        .instance_arn(&env.instance)
        .target_id(ACCOUNT)
        .target_type(TargetType::AwsAccount)
        .permission_set_arn(permission_set)
        .principal_type(principal_type)
        .principal_id(id)
        .send()
        .await
        .unwrap();
}

fn user(id: &str) -> (String, String) {
    ("USER".to_owned(), id.to_owned())
}

#[tokio::test]
async fn identity_center_grant_and_revoke_make_and_remove_the_assignment() {
    let env = env().await;
    let ps = permission_set(&env);
    let ent = ic_entitlement("ic-dev", &ps);
    let email = unique_email("heidi");
    let user_id = create_user(&env, &email, &email).await;
    let who = grantee(&email);
    let spec = spec(&who, &ent);

    let record = env.aws.identity_center.grant(&spec).await.unwrap();
    assert!(record.reference.is_some(), "{record:?}");
    assert_eq!(record.details["principal_id"], user_id);
    assert_eq!(assignments(&env, &ps).await, [user(&user_id)]);
    let create = &env.proxy.requests("CreateAccountAssignment")[0];
    let body: serde_json::Value = serde_json::from_str(&create.body).unwrap();
    assert_eq!(body["TargetType"], "AWS_ACCOUNT");
    assert_eq!(body["PrincipalType"], "USER");
    assert_eq!(body["TargetId"], ACCOUNT);
    assert_eq!(body["InstanceArn"], env.instance.as_str());

    // Deletion is followed until it is done, too.
    env.proxy
        .script("DeleteAccountAssignment", 1, Fault::in_progress());
    env.proxy.script(
        "DescribeAccountAssignmentDeletionStatus",
        2,
        Fault::in_progress(),
    );
    env.aws.identity_center.revoke(&spec).await.unwrap();
    assert_eq!(assignments(&env, &ps).await, []);
    assert_eq!(
        env.proxy.count("DescribeAccountAssignmentDeletionStatus"),
        3
    );

    // Revoking what is already gone is fine.
    env.aws.identity_center.revoke(&spec).await.unwrap();
}

#[tokio::test]
async fn identity_center_finds_users_by_email_when_the_user_name_differs() {
    let env = env().await;
    let ps = permission_set(&env);
    let ent = ic_entitlement("ic-dev", &ps);
    let email = unique_email("ivan");
    let user_id = create_user(&env, &format!("ivan-{}", random_hex(6)), &email).await;
    let who = grantee(&email);
    env.aws
        .identity_center
        .grant(&spec(&who, &ent))
        .await
        .unwrap();
    assert_eq!(assignments(&env, &ps).await, [user(&user_id)]);
    let lookups: Vec<String> = env
        .proxy
        .requests("GetUserId")
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            body["AlternateIdentifier"]["UniqueAttribute"]["AttributePath"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(lookups, ["userName", "emails.value"]);

    let nobody = grantee(&unique_email("nobody"));
    let err = env
        .aws
        .identity_center
        .grant(&spec(&nobody, &ent))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("no Identity Center user") && m.contains(&nobody.email)),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_overlapping_grant_does_not_create_a_second_assignment() {
    let env = env().await;
    let ps = permission_set(&env);
    let ent = ic_entitlement("ic-dev", &ps);
    let email = unique_email("judy");
    let user_id = create_user(&env, &email, &email).await;
    let who = grantee(&email);
    env.aws
        .identity_center
        .grant(&spec(&who, &ent))
        .await
        .unwrap();

    let mut second = spec(&who, &ent);
    second.overlapping = true;
    env.aws.identity_center.grant(&second).await.unwrap();
    assert_eq!(env.proxy.count("CreateAccountAssignment"), 1);
    assert_eq!(assignments(&env, &ps).await, [user(&user_id)]);

    // Overlapping, but the assignment vanished meanwhile: it is made again.
    env.aws.identity_center.revoke(&second).await.unwrap();
    env.aws.identity_center.grant(&second).await.unwrap();
    assert_eq!(env.proxy.count("CreateAccountAssignment"), 2);
    assert_eq!(assignments(&env, &ps).await, [user(&user_id)]);
}

#[tokio::test]
async fn identity_center_polls_until_the_creation_succeeds() {
    let env = env().await;
    let ps = permission_set(&env);
    let ent = ic_entitlement("ic-dev", &ps);
    let email = unique_email("ken");
    create_user(&env, &email, &email).await;
    let who = grantee(&email);

    env.proxy
        .script("CreateAccountAssignment", 1, Fault::in_progress());
    env.proxy.script(
        "DescribeAccountAssignmentCreationStatus",
        3,
        Fault::in_progress(),
    );
    let record = env
        .aws
        .identity_center
        .grant(&spec(&who, &ent))
        .await
        .unwrap();
    let polls = env
        .proxy
        .requests("DescribeAccountAssignmentCreationStatus");
    assert_eq!(polls.len(), 4);
    let body: serde_json::Value = serde_json::from_str(&polls[0].body).unwrap();
    assert_eq!(
        body["AccountAssignmentCreationRequestId"].as_str(),
        record.reference.as_deref()
    );
}

#[tokio::test]
async fn identity_center_retries_conflicts_throttling_and_server_errors() {
    let env = env().await;
    let ps = permission_set(&env);
    let ent = ic_entitlement("ic-dev", &ps);
    let email = unique_email("leo");
    let user_id = create_user(&env, &email, &email).await;
    let who = grantee(&email);

    let op = "CreateAccountAssignment";
    env.proxy.script(
        op,
        1,
        Fault::json_error(400, "ConflictException", "concurrent write"),
    );
    env.proxy.script(
        op,
        1,
        Fault::json_error(400, "ThrottlingException", "slow down"),
    );
    env.proxy.script(
        op,
        1,
        Fault::json_error(500, "InternalServerException", "oops"),
    );
    env.aws
        .identity_center
        .grant(&spec(&who, &ent))
        .await
        .unwrap();
    assert_eq!(env.proxy.count(op), 4);
    assert_eq!(assignments(&env, &ps).await, [user(&user_id)]);

    // Bounded: after max_attempts the grant fails for now (transient).
    env.proxy.script(
        op,
        4,
        Fault::json_error(400, "ThrottlingException", "slow down"),
    );
    let err = env
        .aws
        .identity_center
        .grant(&spec(&who, &ent))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Transient(m) if m.contains("ThrottlingException") && m.contains("4 attempts")),
        "{err:?}"
    );
    assert_eq!(env.proxy.count(op), 8);

    // Throttled lookups are retried as well.
    env.proxy.script(
        "GetUserId",
        2,
        Fault::json_error(400, "ThrottlingException", "slow down"),
    );
    env.aws
        .identity_center
        .revoke(&spec(&who, &ent))
        .await
        .unwrap();
    assert_eq!(assignments(&env, &ps).await, []);

    // A validation error is final at once.
    env.proxy.script(
        op,
        1,
        Fault::json_error(400, "ValidationException", "bad principal"),
    );
    let err = env
        .aws
        .identity_center
        .grant(&spec(&who, &ent))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("ValidationException: bad principal")),
        "{err:?}"
    );
}

#[tokio::test]
async fn identity_center_retries_timeouts() {
    let env = env_with(
        Tuning {
            attempt_timeout: Duration::from_millis(1500),
            operation_timeout: Duration::from_millis(1600),
            max_attempts: 3,
            ..tuning()
        },
        broker_credentials(None),
        None,
    )
    .await;
    let ps = permission_set(&env);
    let ent = ic_entitlement("ic-dev", &ps);
    let email = unique_email("mallory");
    let user_id = create_user(&env, &email, &email).await;
    let who = grantee(&email);

    let op = "CreateAccountAssignment";
    env.proxy.script(op, 1, Fault::Hang(Duration::from_secs(5)));
    env.aws
        .identity_center
        .grant(&spec(&who, &ent))
        .await
        .unwrap();
    assert_eq!(env.proxy.count(op), 2);
    assert_eq!(assignments(&env, &ps).await, [user(&user_id)]);

    env.proxy.script(
        "DescribeAccountAssignmentCreationStatus",
        3,
        Fault::Hang(Duration::from_secs(5)),
    );
    env.proxy.script(op, 1, Fault::in_progress());
    let err = env
        .aws
        .identity_center
        .grant(&spec(&who, &ent))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Transient(m) if m.contains("timed out") && m.contains("3 attempts")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_failed_assignment_fails_the_grant_with_the_reason_from_aws() {
    let env = env().await;
    let ps = permission_set(&env);
    let ent = ic_entitlement("ic-dev", &ps);
    let email = unique_email("niaj");
    create_user(&env, &email, &email).await;
    let who = grantee(&email);

    env.proxy
        .script("CreateAccountAssignment", 1, Fault::in_progress());
    env.proxy.script(
        "DescribeAccountAssignmentCreationStatus",
        1,
        Fault::in_progress(),
    );
    env.proxy.script(
        "DescribeAccountAssignmentCreationStatus",
        1,
        Fault::failed("Received a 404 status error: Not supported account 123456789012"),
    );
    let err = env
        .aws
        .identity_center
        .grant(&spec(&who, &ent))
        .await
        .unwrap_err();
    let ProviderError::Permanent(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.starts_with("Identity Center could not create the assignment of permission set"),
        "{message}"
    );
    assert!(message.contains(&email), "{message}");
    assert!(
        message.ends_with("Received a 404 status error: Not supported account 123456789012"),
        "{message}"
    );
}

#[tokio::test]
async fn identity_center_limits_operations_in_flight() {
    let env = env_with(
        Tuning {
            max_in_flight: 2,
            ..tuning()
        },
        broker_credentials(None),
        None,
    )
    .await;
    let ps = permission_set(&env);
    let ent = ic_entitlement("ic-dev", &ps);
    let mut people = Vec::new();
    for i in 0..6 {
        let email = unique_email(&format!("p{i}"));
        create_user(&env, &email, &email).await;
        people.push(grantee(&email));
    }
    // Each creation stays in progress for a while, so they overlap.
    env.proxy
        .script("CreateAccountAssignment", 6, Fault::in_progress());
    env.proxy.script(
        "DescribeAccountAssignmentCreationStatus",
        12,
        Fault::in_progress(),
    );
    let specs: Vec<GrantSpec<'_>> = people.iter().map(|p| spec(p, &ent)).collect();
    let started = std::time::Instant::now();
    let results =
        futures_util::future::join_all(specs.iter().map(|s| env.aws.identity_center.grant(s)))
            .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(assignments(&env, &ps).await.len(), 6);
    // Proof of the limit: the creations went out at most 2 at a time, i.e.
    // a creation request never came in while 2 others were still polling.
    let log = env.proxy.all();
    let mut open = 0usize;
    let mut peak = 0usize;
    for r in &log {
        match r.operation.as_str() {
            "CreateAccountAssignment" => {
                open += 1;
                peak = peak.max(open);
            }
            "DescribeAccountAssignmentCreationStatus" if !r.faulted => open -= 1,
            _ => {}
        }
    }
    assert_eq!(
        peak,
        2,
        "{:?}",
        log.iter().map(|r| &r.operation).collect::<Vec<_>>()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn reconcile_removes_unexplained_assignments_and_reports() {
    let env = env().await;
    let ps = permission_set(&env);
    let ent = ic_entitlement("ic-dev", &ps);
    let other_ps = permission_set(&env);
    let other = ic_entitlement("ic-other", &other_ps);

    let holder_email = unique_email("olivia");
    let holder_id = create_user(&env, &holder_email, &holder_email).await;
    let stray_email = unique_email("peggy");
    let stray_id = create_user(&env, &stray_email, &stray_email).await;
    let lost_email = unique_email("rupert");
    create_user(&env, &lost_email, &lost_email).await;
    let group_id = env
        .ids
        .create_group()
        .identity_store_id(&env.store)
        .display_name(format!("grp-{}", random_hex(8)))
        .send()
        .await
        .unwrap()
        .group_id()
        .to_owned();

    // The holder's grant made by the broker; the rest out of band.
    let holder = grantee(&holder_email);
    let holder_spec = spec(&holder, &ent);
    env.aws.identity_center.grant(&holder_spec).await.unwrap();
    assign(&env, &ps, PrincipalType::User, &stray_id).await;
    assign(&env, &ps, PrincipalType::Group, &group_id).await;

    let lost = grantee(&lost_email);
    let live = [
        LiveGrant {
            request_id: holder_spec.request_id,
            entitlement: "ic-dev".to_owned(),
            grantee: holder.clone(),
            ends_at: holder_spec.ends_at,
        },
        LiveGrant {
            request_id: Uuid::now_v7(),
            entitlement: "ic-dev".to_owned(),
            grantee: lost.clone(),
            ends_at: holder_spec.ends_at,
        },
    ];
    let role = role_entitlement("arn:aws:iam::123456789012:role/x", None);
    let report = env
        .aws
        .identity_center
        .reconcile(&[ent.clone(), other.clone(), role], &live)
        .await
        .unwrap();

    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert!(report.removed[0].contains(&stray_email), "{report:?}");
    assert!(report.removed[0].contains(&stray_id), "{report:?}");
    assert_eq!(report.unexplained.len(), 1, "{report:?}");
    assert!(
        report.unexplained[0].contains("GROUP") && report.unexplained[0].contains(&group_id),
        "{report:?}"
    );
    assert_eq!(report.missing.len(), 1, "{report:?}");
    assert!(report.missing[0].contains(&lost_email), "{report:?}");

    let mut expected = vec![("GROUP".to_owned(), group_id.clone()), user(&holder_id)];
    expected.sort();
    assert_eq!(assignments(&env, &ps).await, expected);

    // Nothing more to do on a second pass (the group stays reported).
    let report = env
        .aws
        .identity_center
        .reconcile(&[ent, other], &live[..1])
        .await
        .unwrap();
    assert!(
        report.removed.is_empty() && report.missing.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.unexplained.len(), 1, "{report:?}");
}
