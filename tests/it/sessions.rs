//! Honest revocation at the provider: the deny statements that end the
//! sessions a grant handed out, against moto (server mode) through the
//! fault proxy. moto stores policies but evaluates no condition: these
//! tests check what is written (the conditions themselves are checked by
//! the evaluator in `providers::aws::deny`).

use std::time::Duration;

use jit_server::policy::catalog::Entitlement;
use jit_server::providers::aws::deny::POLICY_BUDGET;
use jit_server::providers::aws::{SESSIONS_POLICY_NAME, Tuning};
use jit_server::providers::{GrantProvider, Grantee, ProviderError, SessionsEnded};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::aws::{
    Env, broker_credentials, create_role, env, env_with, grantee, iam, role_entitlement, spec,
    tuning, unique_email,
};
use crate::fault_proxy::Fault;

/// The broker's policy on `role`, read straight from moto.
pub(crate) async fn role_policy(moto: &str, role: &str) -> Option<(Value, String)> {
    inline_policy(moto, role, SESSIONS_POLICY_NAME).await
}

/// The inline policy `name` of `role` (parsed, and as text), straight from moto.
pub(crate) async fn inline_policy(moto: &str, role: &str, name: &str) -> Option<(Value, String)> {
    let (status, xml) = iam(
        moto,
        &[
            ("Action", "GetRolePolicy"),
            ("RoleName", role),
            ("PolicyName", name),
        ],
    )
    .await;
    if status == 404 {
        return None;
    }
    assert_eq!(status, 200, "{xml}");
    let start = xml.find("<PolicyDocument>").unwrap() + "<PolicyDocument>".len();
    let end = xml.find("</PolicyDocument>").unwrap();
    let xml_text = xml[start..end]
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let text = percent_encoding::percent_decode_str(&xml_text)
        .decode_utf8()
        .unwrap()
        .into_owned();
    Some((serde_json::from_str(&text).unwrap(), text))
}

/// The deny statement for `identity` in a policy, if any.
pub(crate) fn deny_for<'a>(policy: &'a Value, key: &str, identity: &str) -> Option<&'a Value> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Condition"]["StringEquals"][key] == identity)
}

/// An environment whose roles and permission sets keep sessions 2 s.
async fn short_lived() -> Env {
    env_with(
        Tuning {
            session_lifetime: Some(Duration::from_secs(2)),
            ..tuning()
        },
        broker_credentials(None),
        None,
    )
    .await
}

/// Sleeps until `t` (AWS's time) has passed.
async fn sleep_until(t: OffsetDateTime) {
    tokio::time::sleep(
        std::time::Duration::try_from(t - OffsetDateTime::now_utc()).unwrap_or_default(),
    )
    .await;
}

/// A statement's `aws:TokenIssueTime` cutoff.
pub(crate) fn cutoff(statement: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
            .as_str()
            .unwrap(),
        &Rfc3339,
    )
    .unwrap()
}

/// Ends `who`'s sessions of `ent`'s role.
async fn end(env: &Env, who: &Grantee, ent: &Entitlement) -> SessionsEnded {
    env.aws
        .role
        .end_sessions(&spec(who, ent))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_removal_denies_that_grantees_sessions_and_nobody_elses() {
    let env = env().await;
    let (role_arn, role_name) = create_role(&env.moto).await;
    let ent = role_entitlement(&role_arn, None);
    let alice = grantee(&unique_email("alice"));
    let bob = grantee(&unique_email("bob"));

    let creds = env
        .aws
        .role
        .mint_credentials(&spec(&alice, &ent), 900)
        .await
        .unwrap();
    env.aws
        .role
        .mint_credentials(&spec(&bob, &ent), 900)
        .await
        .unwrap();
    let issued =
        OffsetDateTime::parse(&creds.expiration, &Rfc3339).unwrap() - time::Duration::seconds(900);
    assert!(role_policy(&env.moto, &role_name).await.is_none());

    let ended = end(&env, &alice, &ent).await;
    let (policy, _) = role_policy(&env.moto, &role_name).await.unwrap();
    let statements = policy["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "{policy}");
    let deny = deny_for(&policy, "aws:SourceIdentity", &alice.email).unwrap();
    assert_eq!(deny["Effect"], "Deny");
    assert_eq!(deny["Action"], "*");
    assert_eq!(deny["Resource"], "*");
    assert!(
        cutoff(deny) >= issued,
        "the cutoff {} is before the last session, issued {issued}",
        cutoff(deny)
    );
    assert!(cutoff(deny) <= OffsetDateTime::now_utc() + time::Duration::seconds(1));
    assert!(deny_for(&policy, "aws:SourceIdentity", &bob.email).is_none());
    assert_eq!(ended.details["scope"], "user");
    assert_eq!(ended.details["source_identity"], alice.email.as_str());
    assert_eq!(ended.details["policy"], SESSIONS_POLICY_NAME);
    // Pruned once the role's longest session (moto's default, 1 h) is over.
    assert_eq!(ended.prune_at, Some(cutoff(deny) + time::Duration::HOUR));

    // Bob's grant ends too: a second statement; alice's again: still one for her.
    end(&env, &bob, &ent).await;
    end(&env, &alice, &ent).await;
    let (policy, _) = role_policy(&env.moto, &role_name).await.unwrap();
    assert_eq!(policy["Statement"].as_array().unwrap().len(), 2, "{policy}");
    assert!(deny_for(&policy, "aws:SourceIdentity", &bob.email).is_some());
    // The role's longest session is read once.
    assert_eq!(env.proxy.count("GetRole"), 1);
    // The grant's own object: nothing to remove.
    env.aws.role.revoke(&spec(&alice, &ent)).await.unwrap();
}

#[tokio::test]
async fn denies_are_pruned_once_their_sessions_have_expired() {
    let env = short_lived().await;
    let (role_arn, role_name) = create_role(&env.moto).await;
    let ent = role_entitlement(&role_arn, None);
    let alice = grantee(&unique_email("alice"));
    let ended = end(&env, &alice, &ent).await;
    let prune_at = ended.prune_at.unwrap();
    assert!(prune_at <= OffsetDateTime::now_utc() + time::Duration::seconds(3));
    assert_eq!(env.proxy.count("GetRole"), 0, "the lifetime is given");

    // Too early: nothing goes.
    let early = env.aws.role.prune_denies(&ent).await.unwrap().unwrap();
    assert_eq!((early.pruned, early.remaining), (0, 1));
    assert_eq!(early.next, Some(prune_at));
    assert!(role_policy(&env.moto, &role_name).await.is_some());

    sleep_until(prune_at).await;
    let late = env.aws.role.prune_denies(&ent).await.unwrap().unwrap();
    assert_eq!((late.pruned, late.remaining, late.next), (1, 0, None));
    assert!(
        role_policy(&env.moto, &role_name).await.is_none(),
        "an empty policy is deleted"
    );
    assert_eq!(env.proxy.count("DeleteRolePolicy"), 1);
    assert_eq!(env.aws.role.prune_denies(&ent).await.unwrap(), None);
}

#[tokio::test]
async fn five_hundred_removals_on_one_role_stay_within_the_inline_policy_budget() {
    let env = env().await;
    let (role_arn, role_name) = create_role(&env.moto).await;
    let ent = role_entitlement(&role_arn, None);
    let mut fell_back = 0;
    for i in 0..500 {
        let who = grantee(&format!("user-{i:03}-{}", unique_email("x")));
        let ended = end(&env, &who, &ent).await;
        // What was written (moto stored it as sent; read back once at the end).
        let text = env
            .proxy
            .requests("PutRolePolicy")
            .last()
            .unwrap()
            .field("PolicyDocument")
            .unwrap();
        let policy: Value = serde_json::from_str(&text).unwrap();
        let size = text.chars().filter(|c| !c.is_whitespace()).count();
        assert!(size <= POLICY_BUDGET, "removal {i}: {size} characters");
        if ended.details["scope"] == "role" {
            assert!(
                ended.details["fallback"]
                    .as_str()
                    .unwrap()
                    .contains("every session of the role"),
                "{}",
                ended.details
            );
            if ended.details["fallback"]
                .as_str()
                .unwrap()
                .contains("would exceed")
            {
                fell_back += 1;
            }
            // One statement for everyone, issued before now.
            let list = policy["Statement"].as_array().unwrap();
            assert_eq!(list.len(), 1, "{policy}");
            assert_eq!(list[0]["Sid"], "jitAll");
            assert!(list[0]["Condition"].get("StringEquals").is_none());
        } else {
            assert!(
                deny_for(&policy, "aws:SourceIdentity", &who.email).is_some(),
                "{i} {}: {policy}",
                who.email
            );
        }
    }
    assert!((5..=20).contains(&fell_back), "{fell_back} fallbacks");
    let (_, stored) = role_policy(&env.moto, &role_name).await.unwrap();
    let last = env
        .proxy
        .requests("PutRolePolicy")
        .last()
        .unwrap()
        .field("PolicyDocument");
    assert_eq!(Some(stored), last);
}

#[tokio::test]
async fn a_role_whose_other_policies_fill_the_quota_gets_the_role_wide_deny() {
    let env = env().await;
    let (role_arn, role_name) = create_role(&env.moto).await;
    let ent = role_entitlement(&role_arn, None);
    let alice = grantee(&unique_email("alice"));
    // IAM counts every inline policy of the role together.
    env.proxy.script(
        "PutRolePolicy",
        1,
        Fault::query_error(
            409,
            "LimitExceeded",
            "Maximum policy size of 10240 bytes exceeded for role",
        ),
    );
    let ended = end(&env, &alice, &ent).await;
    assert_eq!(ended.details["scope"], "role");
    let (policy, _) = role_policy(&env.moto, &role_name).await.unwrap();
    assert_eq!(policy["Statement"][0]["Sid"], "jitAll");
    assert_eq!(env.proxy.count("PutRolePolicy"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_removals_on_one_role_lose_no_statement() {
    let env = env().await;
    let (role_arn, role_name) = create_role(&env.moto).await;
    let ent = role_entitlement(&role_arn, None);
    let people: Vec<_> = (0..20).map(|_| grantee(&unique_email("p"))).collect();
    // Slow answers: unserialised read-modify-writes would overlap.
    env.proxy.script(
        "GetRolePolicy",
        100,
        Fault::Delay(Duration::from_millis(30)),
    );
    let role = env.aws.role.clone();
    let tasks = people.iter().map(|who| {
        let (role, ent, who) = (role.clone(), ent.clone(), who.clone());
        tokio::spawn(async move { role.end_sessions(&spec(&who, &ent)).await.unwrap() })
    });
    futures_util::future::join_all(tasks).await;
    let (policy, _) = role_policy(&env.moto, &role_name).await.unwrap();
    for who in &people {
        assert!(
            deny_for(&policy, "aws:SourceIdentity", &who.email).is_some(),
            "{} lost: {policy}",
            who.email
        );
    }
}

#[tokio::test]
async fn a_missing_role_is_a_clear_error_and_statements_not_ours_are_kept() {
    let env = env().await;
    let missing = role_entitlement(
        &format!(
            "arn:aws:iam::123456789012:role/no-such-role-{}",
            crate::aws::random_hex(6)
        ),
        None,
    );
    let alice = grantee(&unique_email("alice"));
    let err = env
        .aws
        .role
        .end_sessions(&spec(&alice, &missing))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("NoSuchEntity")),
        "{err:?}"
    );
    // Someone added a statement of their own to the broker's policy: kept.
    let (role_arn, role_name) = create_role(&env.moto).await;
    let theirs = r#"{"Sid":"Theirs","Effect":"Deny","Action":"iam:*","Resource":"*"}"#;
    let (status, body) = iam(
        &env.moto,
        &[
            ("Action", "PutRolePolicy"),
            ("RoleName", &role_name),
            ("PolicyName", SESSIONS_POLICY_NAME),
            (
                "PolicyDocument",
                &format!(r#"{{"Version":"2012-10-17","Statement":[{theirs}]}}"#),
            ),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    env.aws
        .role
        .end_sessions(&spec(&alice, &role_entitlement(&role_arn, None)))
        .await
        .unwrap();
    let (policy, _) = role_policy(&env.moto, &role_name).await.unwrap();
    let list = policy["Statement"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{policy}");
    assert_eq!(list[0], serde_json::from_str::<Value>(theirs).unwrap());
    assert!(deny_for(&policy, "aws:SourceIdentity", &alice.email).is_some());
}

// ---------------------------------------------------- aws_identity_center

/// A permission set made in moto, as AWS spells it and as moto does (a
/// proxy must translate: [`crate::fault_proxy::FaultProxy::rewrite`]), with
/// the operator's own inline policy.
pub(crate) async fn real_permission_set(
    sso: &aws_sdk_ssoadmin::Client,
    instance: &str,
    session: &str,
) -> (String, String) {
    let created = sso
        .create_permission_set()
        .instance_arn(instance)
        .name(format!("jit-test-{}", crate::aws::random_hex(8)))
        .session_duration(session)
        .send()
        .await
        .unwrap();
    let moto = created
        .permission_set()
        .unwrap()
        .permission_set_arn()
        .unwrap()
        .to_owned();
    let aws = format!(
        "arn:aws:sso:::permissionSet/{}",
        moto.strip_prefix("arn:aws:sso:::instance/").unwrap()
    );
    sso.put_inline_policy_to_permission_set()
        .instance_arn(instance)
        .permission_set_arn(&moto)
        .inline_policy(OPERATOR_POLICY)
        .send()
        .await
        .unwrap();
    (aws, moto)
}

/// The operator's own statements in a permission set's inline policy.
pub(crate) const OPERATOR_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"OperatorReadOnly","Effect":"Allow","Action":["s3:Get*","s3:List*"],"Resource":"*"}]}"#;

/// A permission set's inline policy, straight from moto.
pub(crate) async fn ps_policy(
    sso: &aws_sdk_ssoadmin::Client,
    instance: &str,
    moto_arn: &str,
) -> Value {
    let out = sso
        .get_inline_policy_for_permission_set()
        .instance_arn(instance)
        .permission_set_arn(moto_arn)
        .send()
        .await
        .unwrap();
    serde_json::from_str(out.inline_policy().unwrap_or("{}")).unwrap_or_default()
}

/// The broker's deny for an Identity Store user in a permission set's policy.
pub(crate) fn user_deny<'a>(policy: &'a Value, user: &str) -> Option<&'a Value> {
    deny_for(policy, "identitystore:userId", user)
}

#[tokio::test]
async fn identity_center_removal_denies_the_users_portal_sessions() {
    let env = env().await;
    let (ps, ps_moto) = real_permission_set(&env.sso, &env.instance, "PT2H").await;
    env.proxy.rewrite(&ps, &ps_moto);
    let ent = crate::aws::ic_entitlement("ic-sessions", &ps);
    let email = unique_email("ada");
    let user = crate::aws::create_user(&env, &email, &email).await;
    let other = unique_email("ben");
    let other_id = crate::aws::create_user(&env, &other, &other).await;
    let ada = grantee(&email);
    let ic = env.aws.identity_center.clone();
    ic.grant(&spec(&ada, &ent)).await.unwrap();
    ic.revoke(&spec(&ada, &ent)).await.unwrap();
    let ended = ic.end_sessions(&spec(&ada, &ent)).await.unwrap().unwrap();

    let policy = ps_policy(&env.sso, &env.instance, &ps_moto).await;
    let list = policy["Statement"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{policy}");
    assert_eq!(
        list[0]["Sid"], "OperatorReadOnly",
        "the operator's statement stays first"
    );
    let deny = user_deny(&policy, &user).unwrap();
    assert_eq!(
        deny["Condition"]["StringEquals"]["aws:PrincipalAccount"],
        crate::aws::ACCOUNT
    );
    assert!(cutoff(deny) <= OffsetDateTime::now_utc() + time::Duration::seconds(1));
    assert!(user_deny(&policy, &other_id).is_none());
    // Provisioned to the entitlement's account.
    let provisioned = env.proxy.requests("ProvisionPermissionSet");
    assert_eq!(provisioned.len(), 1);
    let body: Value = serde_json::from_str(&provisioned[0].body).unwrap();
    assert_eq!(body["TargetId"], crate::aws::ACCOUNT);
    assert_eq!(body["TargetType"], "AWS_ACCOUNT");
    assert_eq!(body["PermissionSetArn"], ps.as_str());
    assert_eq!(ended.details["user_id"], user.as_str());
    assert_eq!(ended.details["scope"], "user");
    // Pruned after the permission set's session duration (PT2H).
    assert_eq!(
        ended.prune_at,
        Some(cutoff(deny) + time::Duration::hours(2))
    );
    let early = ic.prune_denies(&ent).await.unwrap().unwrap();
    assert_eq!((early.pruned, early.remaining), (0, 1));
    assert_eq!(
        env.proxy.count("ProvisionPermissionSet"),
        1,
        "nothing changed"
    );

    // Told not to: nothing is written.
    let quiet = jit_server::policy::catalog::Entitlement {
        target: jit_server::policy::catalog::Target::AwsIdentityCenter {
            account_id: crate::aws::ACCOUNT.to_owned(),
            permission_set_arn: ps.clone(),
            revoke_sessions: false,
        },
        ..ent.clone()
    };
    let ben = grantee(&other);
    assert_eq!(ic.end_sessions(&spec(&ben, &quiet)).await.unwrap(), None);
    assert_eq!(env.proxy.count("PutInlinePolicyToPermissionSet"), 1);
}

#[tokio::test]
async fn identity_center_denies_are_pruned_and_provisioning_is_followed() {
    let env = short_lived().await;
    let (ps, ps_moto) = real_permission_set(&env.sso, &env.instance, "PT1H").await;
    env.proxy.rewrite(&ps, &ps_moto);
    let ent = crate::aws::ic_entitlement("ic-prune", &ps);
    let email = unique_email("cy");
    let user = crate::aws::create_user(&env, &email, &email).await;
    let cy = grantee(&email);
    let ic = env.aws.identity_center.clone();
    // Identity Center provisions asynchronously: the broker follows it.
    env.proxy
        .script("ProvisionPermissionSet", 1, Fault::in_progress());
    env.proxy.script(
        "DescribePermissionSetProvisioningStatus",
        1,
        Fault::Respond {
            status: 200,
            headers: vec![("content-type".into(), "application/x-amz-json-1.1".into())],
            body: json!({ "PermissionSetProvisioningStatus": {
                "Status": "SUCCEEDED", "RequestId": "5a1f2c3d-0000-4000-8000-000000000000"
            }})
            .to_string(),
        },
    );
    let ended = ic.end_sessions(&spec(&cy, &ent)).await.unwrap().unwrap();
    assert_eq!(
        env.proxy.count("DescribePermissionSetProvisioningStatus"),
        1
    );
    assert!(user_deny(&ps_policy(&env.sso, &env.instance, &ps_moto).await, &user).is_some());

    let prune_at = ended.prune_at.unwrap();
    sleep_until(prune_at).await;
    let late = ic.prune_denies(&ent).await.unwrap().unwrap();
    assert_eq!((late.pruned, late.remaining, late.next), (1, 0, None));
    let policy = ps_policy(&env.sso, &env.instance, &ps_moto).await;
    assert_eq!(
        policy,
        serde_json::from_str::<Value>(OPERATOR_POLICY).unwrap(),
        "only the operator's statement is left"
    );
    assert_eq!(
        env.proxy.count("ProvisionPermissionSet"),
        2,
        "the pruned policy is provisioned"
    );
    // A permission set that does not exist has no sessions to end.
    let gone = crate::aws::ic_entitlement("ic-gone", &crate::aws::permission_set(&env));
    assert_eq!(ic.end_sessions(&spec(&cy, &gone)).await.unwrap(), None);
}
