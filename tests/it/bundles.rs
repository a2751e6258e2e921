//! Bundles (issue 24 item 2, SPEC §10): a `[[bundle]]` of entitlements is one request, one
//! justification, one approval by the strictest rule of its members, granted all or nothing
//! and ended together. Development mode (simulated grants) over the JSON API, and the real
//! providers: an `aws_role` on moto and an `entra_group` on the Graph fake. Both engines.

use std::sync::Arc;
use std::time::Duration;

use jit_api::{CreateRequest, Decision, DurationInput, RequestState};
use jit_server::clock::SystemClock;
use jit_server::config::Config;
use jit_server::domain::User;
use jit_server::http::AuthMode;
use jit_server::providers::Providers;
use jit_server::providers::aws::AwsProviders;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::broker_aws::{Moto, audit_fault_broker, broker_credentials, events, policy_dir, tuning};
use crate::graph_fake::{Fault, GraphFake};
use crate::revocation::mint_as_the_store_fails;
use crate::sessions::{deny_for, role_policy};
use crate::support::server::{
    ENGINES, Engine, TestBroker, each_engine, fresh_db, start, start_with,
};

/// The example catalog's bundle: `aws-sandbox` (2h, auto-approved) and
/// `entra-sec-ops-group` (8h, one approval).
const BUNDLE: &str = "oncall-sandbox";
const MEMBERS: [&str; 2] = ["aws-sandbox", "entra-sec-ops-group"];

/// The `data` of the audit events of `action`, oldest first.
async fn data_of(b: &TestBroker, action: &str) -> Vec<Value> {
    events(b, action)
        .await
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect()
}

each_engine!(
    a_bundle_is_one_request_approved_once_and_granted_and_ended_together,
    |engine| async move {
        let b = start(engine).await;
        let oscar = b.login("oscar").await;
        let alice = b.login("alice").await;
        let bob = b.login("bob").await;

        // Listed with its members and the strictest rule of them.
        let (status, list) = oscar.get("/entitlements").await;
        assert_eq!(status, StatusCode::OK);
        let listed = list
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == BUNDLE)
            .unwrap_or_else(|| panic!("{list}"));
        assert_eq!(listed["kind"], "bundle");
        assert_eq!(listed["members"], json!(MEMBERS));
        assert_eq!(listed["max_duration"], "2h");
        assert_eq!(listed["approvals_required"], 1);
        assert_eq!(listed["break_glass"], false);

        // Longer than its shortest member allows.
        let (status, body) = oscar
            .post(
                "/requests",
                json!({"bundle": BUNDLE, "duration": "3h", "justification": "on call"}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            body["error"]["message"],
            "duration 3h is above the maximum of 2h for `oncall-sandbox`"
        );

        let (status, body) = oscar
            .post(
                "/requests",
                json!({"bundle": BUNDLE, "duration": "1h", "justification": "on call tonight"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let r: jit_api::Request = serde_json::from_value(body).unwrap();
        assert_eq!(r.entitlement, BUNDLE);
        assert_eq!(r.kind, "bundle");
        assert_eq!(
            r.state,
            RequestState::Pending,
            "aws-sandbox alone is auto-approved"
        );
        assert_eq!(r.approvals_required, 1);
        assert!(
            r.target.contains("aws-sandbox (role ") && r.target.contains("entra-sec-ops-group ("),
            "{}",
            r.target
        );

        // One grant of the same access at a time: a member is refused while the bundle is open.
        let (status, body) = oscar
            .post(
                "/requests",
                json!({"entitlement": "aws-sandbox", "duration": "1h", "justification": "x"}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("`aws-sandbox` grants some of what `oncall-sandbox` grants, and you already have a request for `oncall-sandbox` that is pending"),
            "{body}"
        );

        // Alice may approve sandbox requests but not the group's: not the bundle's either
        // (nor see it).
        let (status, body) = alice.approve(r.id).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, body) = bob.approve(r.id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        b.run_jobs().await;
        let r = oscar.show(r.id).await;
        assert_eq!(r.state, RequestState::Active, "{r:?}");
        assert!(r.simulated);

        // Its page offers its AWS role's credentials; the request form lists the bundle
        // with what each member grants.
        let cookie = b.browser_login("oscar").await;
        let (status, page) = b.page(&cookie, &format!("/requests/{}", r.id)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("id=\"get-credentials\""), "{page}");
        assert!(page.contains("(bundle)"), "{page}");
        let (_, form) = b.page(&cookie, "/requests/new").await;
        assert!(form.contains("value=\"oncall-sandbox\""), "{form}");
        assert!(
            form.contains("aws-sandbox (role arn:aws:iam::222222222222:role/JitSandbox) + entra-sec-ops-group (member of group "),
            "{form}"
        );

        // Credentials come from its AWS role.
        let (status, body) = oscar
            .post(&format!("/requests/{}/credentials", r.id), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body["AccessKeyId"]
                .as_str()
                .unwrap()
                .starts_with("ASIASIMULATED")
        );

        // An extension acts on all of it.
        let end = r.expires_at.unwrap();
        let (status, body) = oscar
            .post(
                &format!("/requests/{}/extend", r.id),
                json!({"by": "30m", "justification": "still on it"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let ext: jit_api::Request = serde_json::from_value(body).unwrap();
        assert_eq!(ext.state, RequestState::Pending);
        let (status, body) = bob.approve(ext.id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        b.run_jobs().await;
        let ext = oscar.show(ext.id).await;
        assert_eq!(ext.state, RequestState::Active, "{ext:?}");
        assert_eq!(ext.expires_at.unwrap(), end + time::Duration::minutes(30));

        // Revoking the first request ends its extension too: the bundle is removed once.
        let (status, body) = oscar
            .post(&format!("/requests/{}/revoke", r.id), json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(oscar.show(ext.id).await.state, RequestState::Revoked);
        b.run_jobs().await;
        assert_eq!(oscar.show(r.id).await.state, RequestState::Revoked);
        assert!(events(&b, "grant.removal_skipped").await.is_empty());
        assert_eq!(
            b.audit_actions(Some(ext.id)).await[3..],
            ["grant.activated", "grant.revoked", "grant.removed"]
        );
        assert_eq!(
            b.audit_actions(Some(r.id)).await,
            [
                "request.created",
                "request.approval",
                "request.approved",
                "grant.activated",
                "credentials.minted",
                "grant.revoked",
                "grant.removed"
            ]
        );
        // Every event of the bundle names it and each member.
        let created = data_of(&b, "request.created").await;
        assert_eq!(created[0]["members"], json!(MEMBERS));
        let activated = data_of(&b, "grant.activated").await;
        assert_eq!(activated[0]["members"], json!(MEMBERS));
        let granted: Vec<&str> = activated[0]["details"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["entitlement"].as_str().unwrap())
            .collect();
        assert_eq!(granted, MEMBERS);
        for e in events(&b, "grant.removed").await {
            assert_eq!(e.entitlement.as_deref(), Some(BUNDLE));
            let data: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(data["members"], json!(MEMBERS));
        }
        b.run_jobs().await;
    }
);

each_engine!(
    bundle_or_entitlement_exactly_one_and_known,
    |engine| async move {
        let b = start(engine).await;
        let oscar = b.login("oscar").await;
        for (body, status, message) in [
            (
                json!({"entitlement": "aws-sandbox", "bundle": BUNDLE, "duration": "1h", "justification": "x"}),
                StatusCode::BAD_REQUEST,
                "give either `entitlement` or `bundle`, not both",
            ),
            (
                json!({"duration": "1h", "justification": "x"}),
                StatusCode::BAD_REQUEST,
                "`entitlement` or `bundle` is required",
            ),
            (
                json!({"bundle": "nosuch", "duration": "1h", "justification": "x"}),
                StatusCode::NOT_FOUND,
                "unknown bundle `nosuch`",
            ),
            (
                json!({"bundle": "aws-sandbox", "duration": "1h", "justification": "x"}),
                StatusCode::BAD_REQUEST,
                "`aws-sandbox` is an entitlement, not a bundle: send it as `entitlement`",
            ),
        ] {
            let (got, answer) = oscar.post("/requests", body.clone()).await;
            assert_eq!(got, status, "{body} → {answer}");
            assert_eq!(answer["error"]["message"], message, "{body}");
        }
        // Nothing was filed.
        assert!(events(&b, "request.created").await.is_empty());
        // A bundle's id is also accepted as `entitlement` (the catalog's ids are shared).
        let r = oscar.request(BUNDLE, "1h").await;
        assert_eq!(r.entitlement, BUNDLE);
        assert_eq!(r.kind, "bundle");
    }
);

/// A broker with the real AWS providers (moto) and the Entra ones (the Graph fake), whose
/// `aws-sandbox` is a fresh moto role.
struct RealBroker {
    b: TestBroker,
    moto: Moto,
    fake: GraphFake,
    /// `aws-sandbox`'s role (ARN, name).
    role: (String, String),
    _policies: tempfile::TempDir,
}

/// The real AWS providers on `moto` and Entra ones on the Graph `fake` (its `[entra]` in
/// `config`); Azure simulated.
async fn real_providers(moto: &Moto, fake: &GraphFake, config: &mut Config) -> Providers {
    config.entra = Some(fake.config());
    let (providers, _) = jit_server::providers::from_config(config, Arc::new(SystemClock))
        .await
        .unwrap();
    let aws = AwsProviders::with_credentials(
        &moto.config(&moto.url),
        "http://127.0.0.1",
        broker_credentials(),
        tuning(),
    )
    .await;
    aws.install(providers)
}

async fn real_broker(engine: Engine) -> RealBroker {
    crate::support::init();
    let moto = Moto::connect().await;
    let role = moto.role().await;
    let policies = policy_dir(|t| t.replace("arn:aws:iam::222222222222:role/JitSandbox", &role.0));
    let fake = GraphFake::start().await;
    let providers = real_providers(&moto, &fake, &mut Config::default()).await;
    let entra = fake.config();
    let dir = policies.path().to_owned();
    let b = start_with(engine, providers, |c| {
        c.entra = Some(entra);
        c.policy.dir = dir;
    })
    .await;
    RealBroker {
        b,
        moto,
        fake,
        role,
        _policies: policies,
    }
}

impl RealBroker {
    /// A signed-in user with an Entra object id (PIM needs one).
    fn user(&self, name: &str, groups: &[&str]) -> User {
        let oid = Uuid::new_v4().to_string();
        User {
            key: format!("{}/{oid}", self.fake.tenant),
            oid: Some(oid),
            name: name.to_owned(),
            email: format!(
                "{name}-{}@example.com",
                &Uuid::new_v4().simple().to_string()[..8]
            ),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            roles: vec![],
            mfa: true,
            auth_time: Some(time::OffsetDateTime::now_utc().unix_timestamp()),
            acrs: vec![],
        }
    }

    /// Files the bundle as `user`, has `approver` approve it and runs the activation.
    async fn granted(&self, user: &User, approver: &User) -> Uuid {
        let view = self
            .b
            .app
            .create_request(
                user,
                &CreateRequest {
                    entitlement: String::new(),
                    bundle: Some(BUNDLE.to_owned()),
                    duration: DurationInput::Text("1h".to_owned()),
                    justification: "on call".to_owned(),
                    ticket: None,
                    break_glass: false,
                    start_at: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(view.row.state, RequestState::Pending);
        self.b
            .app
            .decide(approver, view.row.id, Decision::Approve, Some("ok"))
            .await
            .unwrap();
        self.b.run_jobs().await;
        view.row.id
    }

    async fn state(&self, id: Uuid) -> RequestState {
        self.b.app.view(id).await.unwrap().row.state
    }

    /// Whether the role's session policy denies `user`'s sessions.
    async fn denied(&self, user: &User) -> bool {
        role_policy(&self.moto.url, &self.role.1)
            .await
            .is_some_and(|(p, _)| deny_for(&p, "aws:SourceIdentity", &user.email).is_some())
    }
}

each_engine!(
    a_bundle_of_an_aws_role_and_an_entra_group_is_granted_and_revoked_together,
    |engine| async move {
        let env = real_broker(engine).await;
        let alice = env.user("alice", &["grp-jit-requesters"]);
        let bob = env.user("bob", &["grp-jit-approvers"]);
        let id = env.granted(&alice, &bob).await;
        assert_eq!(env.state(id).await, RequestState::Active);
        let view = env.b.app.view(id).await.unwrap();
        assert!(!view.row.simulated, "real providers made it");

        // The group membership exists in PIM, for alice.
        let instances = env.fake.instances();
        assert_eq!(instances.len(), 1, "{instances:?}");
        assert_eq!(instances[0].kind, "group");
        // The role's credentials work, as alice.
        let creds = env.b.app.mint_credentials(&alice, id).await.unwrap();
        assert_eq!(
            env.moto.caller_arn(&creds).await,
            format!(
                "arn:aws:sts::{}:assumed-role/{}/{}",
                crate::broker_aws::ACCOUNT,
                env.role.1,
                alice.email
            )
        );
        assert!(!env.denied(&alice).await);

        // One revocation ends both: the membership is removed, the role's sessions denied.
        // PIM refuses a removal in the assignment's first five minutes: the broker keeps
        // trying (every member again: each removal is idempotent) until PIM lets go.
        env.b.app.revoke(&alice, id, Some("done")).await.unwrap();
        env.b.run_jobs().await;
        assert_eq!(env.state(id).await, RequestState::Revoked);
        assert!(env.denied(&alice).await, "the role's sessions are ended");
        assert_eq!(env.fake.instances().len(), 1, "PIM still holds it");
        env.fake
            .advance(time::Duration::minutes(5) + time::Duration::seconds(1));
        env.b.advance(Duration::from_mins(5)).await;
        assert!(
            env.fake.instances().is_empty(),
            "{:?}",
            env.fake.instances()
        );
        let err = env.b.app.mint_credentials(&alice, id).await.unwrap_err();
        assert_eq!(err.to_string(), "request is revoked, not active");
        let removed = env.b.audit_actions(Some(id)).await;
        assert_eq!(removed.last().map(String::as_str), Some("grant.removed"));
        env.fake.assert_no_violations();
    }
);

each_engine!(
    a_failing_member_rolls_the_other_back_and_fails_the_bundle_with_both_reasons,
    |engine| async move {
        let env = real_broker(engine).await;
        let alice = env.user("alice", &["grp-jit-requesters"]);
        let bob = env.user("bob", &["grp-jit-approvers"]);
        env.fake.inject(Fault::graph(
            Method::POST,
            "assignmentScheduleRequests",
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
            1,
        ));
        let id = env.granted(&alice, &bob).await;
        let view = env.b.app.view(id).await.unwrap();
        assert_eq!(view.row.state, RequestState::Failed);
        assert_eq!(
            view.row.failure_reason.as_deref(),
            Some(
                "bundle `oncall-sandbox`: `entra-sec-ops-group`: graph: Authorization_RequestDenied: \
                 Insufficient privileges to complete the operation.; `aws-sandbox`: granted, then rolled back"
            )
        );
        // Nothing is left: no membership, and the role's sessions of alice are denied.
        assert!(env.fake.instances().is_empty());
        assert!(env.denied(&alice).await, "the AWS grant is rolled back");
        assert!(env.b.app.mint_credentials(&alice, id).await.is_err());
        // Final: not tried again.
        let posts = env.fake.requests_to("POST", "ScheduleRequests").len();
        env.b.advance(Duration::from_mins(30)).await;
        assert_eq!(
            env.fake.requests_to("POST", "ScheduleRequests").len(),
            posts
        );
        let failed = data_of(&env.b, "grant.failed").await;
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0]["members"], json!(MEMBERS));
        // Whatever a roll-back could not remove is removed afterwards (here: nothing was left).
        assert_eq!(
            env.b.audit_actions(Some(id)).await,
            [
                "request.created",
                "request.approval",
                "request.approved",
                "grant.failed",
                "grant.removed"
            ]
        );
        // The roll-back's deny does not stay: that removal denied alice's sessions again (the
        // same statement of the role's policy) and queued its pruning for when they have all
        // expired, as every removal does.
        let removed = data_of(&env.b, "grant.removed").await;
        let sessions = &removed[0]["sessions"]["aws-sandbox"];
        assert_eq!(
            sessions["source_identity"],
            alice.email.as_str(),
            "{removed:?}"
        );
        let prunes: Vec<(String, i64)> = jit_server::store::query(
            "SELECT payload, due_at FROM jobs WHERE kind = 'prune_denies' AND done_at IS NULL",
        )
        .fetch_all(&env.b.app.store)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.try_get("payload").unwrap(), r.try_get("due_at").unwrap()))
        .collect();
        assert_eq!(prunes.len(), 1, "{prunes:?}");
        assert_eq!(
            prunes[0].0,
            json!({ "entitlement": "aws-sandbox" }).to_string()
        );
        let cutoff = time::OffsetDateTime::parse(
            sessions["issued_before"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let cutoff_ms = i64::try_from(cutoff.unix_timestamp_nanos() / 1_000_000).unwrap();
        assert!(
            prunes[0].1 >= cutoff_ms + 3_540_000,
            "due once the role's hour-long sessions have expired: {prunes:?}, {sessions}"
        );
        env.fake.assert_no_violations();
    }
);

each_engine!(
    a_bundles_events_held_while_the_audit_store_fails_name_its_members,
    |engine| async move {
        let env = audit_fault_broker(engine).await;
        let b = &env.b;
        let fault = env.audit.as_ref().unwrap();
        let oscar = b.login("oscar").await;
        let bob = b.login("bob").await;
        let (status, body) = oscar
            .post(
                "/requests",
                json!({"bundle": BUNDLE, "duration": "1h", "justification": "on call"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
        let (status, body) = bob.approve(id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        b.run_jobs().await;
        assert_eq!(oscar.show(id).await.state, RequestState::Active);

        // The store fails while STS answers: the session is withdrawn, its record held.
        let (status, body) = mint_as_the_store_fails(&env, &oscar, id).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        // A revocation meanwhile: its events and its removal's are held too.
        let (status, body) = oscar.revoke(id, "done").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        b.run_jobs().await;

        // Chained once the store works again: each names the bundle's members, as the events
        // written at once do.
        fault.heal().await;
        b.run_jobs().await;
        for action in ["credentials.withdrawn", "grant.revoked", "grant.removed"] {
            let data = data_of(b, action).await;
            assert_eq!(data.len(), 1, "{action}: {data:?}");
            assert!(data[0]["held"]["n"].is_u64(), "{action} was held: {data:?}");
            assert_eq!(data[0]["members"], json!(MEMBERS), "{action}: {data:?}");
        }
        b.audit_actions(None).await;
    }
);

/// The example catalog without its `azure_role` entitlements.
fn without_azure(catalog: &str) -> String {
    let mut out = String::new();
    let mut block = String::new();
    for line in catalog.lines() {
        if line.starts_with("[[") {
            if !block.contains("kind = \"azure_role\"") {
                out.push_str(&block);
            }
            block.clear();
        }
        block.push_str(line);
        block.push('\n');
    }
    if !block.contains("kind = \"azure_role\"") {
        out.push_str(&block);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_development_mode_a_missing_section_is_named_and_a_bundle_needs_none_of_its_own() {
    crate::support::init();
    let moto = Moto::connect().await;
    let fake = GraphFake::start().await;
    let mut config = Config::default();
    let providers = real_providers(&moto, &fake, &mut config).await;
    let db = fresh_db(Engine::Sqlite).await;
    let build = |policies: &tempfile::TempDir| {
        let mut config = config.clone();
        config.policy.dir = policies.path().to_owned();
        config.database.url.clone_from(&db.url);
        jit_server::server::build(
            config,
            false,
            AuthMode::Dev,
            providers.clone(),
            Arc::new(SystemClock),
        )
    };
    // AWS and Entra are set up, Azure is not: its first entitlement is named.
    let example = policy_dir(|t| t);
    let err = build(&example).await.err().expect("the broker started");
    assert_eq!(
        format!("{err:#}"),
        "config: `azure`: entitlement `azure-platform-reader` of kind `azure_role` needs the \
         `[azure]` section"
    );
    // Without them the bundle (an AWS role and an Entra group) asks for no section: the
    // next check stops the broker.
    let no_azure = policy_dir(|t| without_azure(&t));
    let err = build(&no_azure).await.err().expect("the broker started");
    let err = format!("{err:#}");
    assert!(err.starts_with("config: `server.session_key`: "), "{err}");
}
