//! `aws_role`: STS sessions minted on demand, console federation, the
//! per-person deny that ends a grant's sessions at its removal, and "revoke
//! all sessions" of a role.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use aws_sdk_sts::types::Tag;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::OnceCell;
use url::Url;

use super::deny::{self, Lifetimes, Merged, PolicyLocks, Who};
use super::iam::Iam;
use super::validate::{
    MAX_CHAINED_SECONDS, RoleArn, parse_role_arn, session_name, tag_value, validate_duration,
    validate_session_policy, validate_tag_key, validate_tag_value,
};
use super::{CallError, Class, Shared, call, http_error, retry, retry_after};
use crate::config::AwsConfig;
use crate::policy::catalog::{Entitlement, Target};
use crate::providers::{
    AwsCredentials, GrantProvider, GrantRecord, GrantSpec, ProviderError, Pruned, SessionsEnded,
};

/// Name of the inline role policy that denies sessions issued before a time
/// (the name the AWS console's "Revoke active sessions" uses).
pub const REVOKE_POLICY_NAME: &str = "AWSRevokeOlderSessions";

/// Name of the broker's inline role policy that denies the sessions of
/// people whose grants ended ([`deny`]).
pub const SESSIONS_POLICY_NAME: &str = "JitRevokedSessions";

/// Session tag carrying the request id.
const TAG_REQUEST: &str = "jit:request-id";
/// Session tag carrying the requester's email.
const TAG_REQUESTER: &str = "jit:requester";

/// STS `AssumeRole` sessions for `aws_role` entitlements.
///
/// Nothing exists upstream between mints: `grant` only checks the target
/// and `revoke` has nothing to remove; `end_sessions` denies the grantee's
/// sessions issued so far in the role's [`SESSIONS_POLICY_NAME`] policy.
pub struct AwsRole {
    shared: Shared,
    sts: aws_sdk_sts::Client,
    iam: Iam,
    federation_url: String,
    console_destination: String,
    issuer: String,
    temporary_base: OnceCell<bool>,
    /// One read-modify-write of a role's policy at a time in this broker.
    policy_locks: PolicyLocks,
    /// Roles' maximum session durations.
    lifetimes: Lifetimes,
    /// Per `role|source identity`: the issue time (AWS's clock) of the last
    /// session this broker minted, and the cutoff of the last deny it wrote.
    sessions: Mutex<HashMap<String, Sessions>>,
}

/// What this broker knows of one person's sessions of one role.
#[derive(Debug, Clone, Copy, Default)]
struct Sessions {
    last_issued: Option<OffsetDateTime>,
    denied_before: Option<OffsetDateTime>,
}

impl fmt::Debug for AwsRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsRole")
            .field("endpoint_url", &self.shared.endpoint_url)
            .field("federation_url", &self.federation_url)
            .finish_non_exhaustive()
    }
}

/// The role of an `aws_role` entitlement, or why not.
fn target<'a>(spec: &'a GrantSpec<'_>) -> Result<(&'a str, Option<&'a str>), ProviderError> {
    match &spec.entitlement.target {
        Target::AwsRole {
            role_arn,
            session_policy,
            ..
        } => Ok((role_arn, session_policy.as_deref())),
        _ => Err(ProviderError::Permanent(format!(
            "entitlement `{}` is not an aws_role entitlement",
            spec.entitlement.id
        ))),
    }
}

/// Checks everything about the target that can be checked without AWS.
fn check_target(role_arn: &str, policy: Option<&str>) -> Result<(), ProviderError> {
    parse_role_arn(role_arn).map_err(ProviderError::Permanent)?;
    if let Some(policy) = policy {
        validate_session_policy(policy).map_err(ProviderError::Permanent)?;
    }
    Ok(())
}

/// The session tags of a mint.
fn session_tags(spec: &GrantSpec<'_>) -> Result<Vec<Tag>, ProviderError> {
    [
        (TAG_REQUEST, spec.request_id.to_string()),
        (TAG_REQUESTER, tag_value(&spec.grantee.email)),
    ]
    .into_iter()
    .map(|(key, value)| {
        validate_tag_key(key).map_err(ProviderError::Permanent)?;
        validate_tag_value(&value).map_err(ProviderError::Permanent)?;
        Tag::builder()
            .key(key)
            .value(value)
            .build()
            .map_err(|e| ProviderError::Permanent(format!("session tag `{key}`: {e}")))
    })
    .collect()
}

impl AwsRole {
    pub(super) fn new(shared: Shared, cfg: &AwsConfig, issuer: &str) -> Self {
        let mut conf = aws_sdk_sts::config::Builder::from(&shared.sdk);
        conf.set_endpoint_url(shared.endpoint_url.clone());
        Self {
            sts: aws_sdk_sts::Client::from_conf(conf.build()),
            iam: Iam::new(shared.clone()),
            federation_url: cfg.federation_url.clone(),
            console_destination: cfg.console_url.clone(),
            issuer: issuer.to_owned(),
            temporary_base: OnceCell::new(),
            policy_locks: PolicyLocks::default(),
            lifetimes: Lifetimes::default(),
            sessions: Mutex::default(),
            shared,
        }
    }

    fn sessions_key(role_arn: &str, identity: &str) -> String {
        format!("{role_arn}|{identity}")
    }

    fn sessions(&self, role_arn: &str, identity: &str) -> Sessions {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&Self::sessions_key(role_arn, identity))
            .copied()
            .unwrap_or_default()
    }

    fn update_sessions(&self, role_arn: &str, identity: &str, f: impl FnOnce(&mut Sessions)) {
        let mut map = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > 100_000 {
            map.clear();
        }
        f(map
            .entry(Self::sessions_key(role_arn, identity))
            .or_default());
    }

    /// The longest session of the role: how long after its cutoff a deny
    /// statement still matters.
    async fn lifetime(
        &self,
        arn: &RoleArn<'_>,
        role_arn: &str,
    ) -> Result<time::Duration, ProviderError> {
        if let Some(fixed) = self.shared.tuning.session_lifetime {
            return Ok(time::Duration::try_from(fixed).unwrap_or(time::Duration::HOUR));
        }
        if let Some(d) = self.lifetimes.get(role_arn) {
            return Ok(d);
        }
        let d = self.iam.max_session_duration(arn).await?;
        let d = time::Duration::try_from(d).unwrap_or(time::Duration::hours(12));
        self.lifetimes.put(role_arn, d);
        Ok(d)
    }

    /// Writes a merged policy: put, or delete when it holds nothing.
    async fn write(&self, arn: &RoleArn<'_>, merged: &Merged) -> Result<(), CallError> {
        match &merged.document {
            Some(document) => {
                self.iam
                    .put_role_policy(arn, SESSIONS_POLICY_NAME, document)
                    .await
            }
            None => self.iam.delete_role_policy(arn, SESSIONS_POLICY_NAME).await,
        }
    }

    /// Denies `identity`'s sessions of the role issued before now (the
    /// deny of [`deny`], merged into [`SESSIONS_POLICY_NAME`]); falls back to
    /// every session of the role when the policy would not fit.
    async fn deny_sessions(
        &self,
        role_arn: &str,
        identity: &str,
    ) -> Result<SessionsEnded, ProviderError> {
        let arn = parse_role_arn(role_arn).map_err(ProviderError::Permanent)?;
        let lock = self.policy_locks.get(role_arn);
        let _turn = lock.lock().await;
        let lifetime = self.lifetime(&arn, role_arn).await?;
        let now = OffsetDateTime::now_utc();
        // Every session minted so far, by AWS's clock too.
        let mut cutoff = deny::cutoff_after(now);
        if let Some(issued) = self.sessions(role_arn, identity).last_issued {
            cutoff = cutoff.max(deny::cutoff_after(issued + time::Duration::MILLISECOND));
        }
        let existing = self.iam.get_role_policy(&arn, SESSIONS_POLICY_NAME).await?;
        let bad = |e: String| {
            ProviderError::Permanent(format!(
                "role `{role_arn}`, inline policy `{SESSIONS_POLICY_NAME}`: {e}"
            ))
        };
        let (mut merged, mut everyone) = deny::merge_within_budget(
            existing.as_deref(),
            Who::SourceIdentity(identity),
            cutoff,
            now,
            lifetime,
        )
        .map_err(bad)?;
        match self.write(&arn, &merged).await {
            Ok(()) => {}
            // The role's other inline policies leave less room than the
            // budget: IAM counts them all together.
            Err(e) if e.is("LimitExceeded") && !everyone => {
                merged = deny::merge(
                    existing.as_deref(),
                    Some((Who::Everyone, cutoff)),
                    now,
                    lifetime,
                )
                .map_err(bad)?;
                everyone = true;
                self.write(&arn, &merged).await?;
            }
            Err(e) => return Err(e.into()),
        }
        self.update_sessions(role_arn, identity, |s| {
            s.denied_before = Some(s.denied_before.map_or(cutoff, |d| d.max(cutoff)));
        });
        // A deny of every session issued up to this very second covers this
        // grantee's already: theirs is not written.
        let covered = !everyone
            && !merged
                .document
                .as_deref()
                .is_some_and(|d| d.contains(&Who::SourceIdentity(identity).sid()));
        let everyone = everyone || covered;
        let issued_before = deny::stamp(cutoff);
        if everyone {
            tracing::warn!(
                aws.role_arn = role_arn,
                aws.source_identity = identity,
                aws.revoked_before = %issued_before,
                "the role's inline policy is full: denied every session of the role issued before the cutoff"
            );
        } else {
            tracing::info!(
                aws.role_arn = role_arn,
                aws.source_identity = identity,
                aws.revoked_before = %issued_before,
                "denied the sessions of the grantee"
            );
        }
        let mut details = serde_json::json!({
            "policy": SESSIONS_POLICY_NAME,
            "role_arn": role_arn,
            "source_identity": identity,
            "issued_before": issued_before,
            "scope": if everyone { "role" } else { "user" },
            "statements": merged.denies,
            "pruned": merged.pruned,
        });
        if covered {
            details["fallback"] = serde_json::json!(
                "an earlier deny of every session of the role issued before the cutoff covers \
                 this grantee's"
            );
        } else if everyone {
            details["fallback"] = serde_json::json!(format!(
                "the role's inline policies would exceed {} characters: every session of the \
                 role issued before the cutoff is denied, not only this grantee's",
                deny::POLICY_BUDGET
            ));
        }
        Ok(SessionsEnded {
            details,
            prune_at: merged.next_expiry,
        })
    }

    /// Drops the statements of [`SESSIONS_POLICY_NAME`] whose sessions
    /// have all expired (the policy goes when none is left).
    async fn prune(&self, role_arn: &str) -> Result<Option<Pruned>, ProviderError> {
        let arn = parse_role_arn(role_arn).map_err(ProviderError::Permanent)?;
        let lock = self.policy_locks.get(role_arn);
        let _turn = lock.lock().await;
        let Some(existing) = self.iam.get_role_policy(&arn, SESSIONS_POLICY_NAME).await? else {
            return Ok(None);
        };
        let lifetime = self.lifetime(&arn, role_arn).await?;
        let merged = deny::merge(Some(&existing), None, OffsetDateTime::now_utc(), lifetime)
            .map_err(|e| {
                ProviderError::Permanent(format!(
                    "role `{role_arn}`, inline policy `{SESSIONS_POLICY_NAME}`: {e}"
                ))
            })?;
        if merged.changed {
            self.write(&arn, &merged).await?;
            tracing::info!(
                aws.role_arn = role_arn,
                pruned = merged.pruned,
                remaining = merged.denies,
                "pruned expired session denies"
            );
        }
        Ok(Some(Pruned {
            pruned: merged.pruned,
            remaining: merged.denies,
            next: merged.next_expiry,
        }))
    }

    /// True when the broker runs on temporary credentials (cached once the
    /// credentials could be loaded).
    async fn chained(&self) -> bool {
        self.temporary_base
            .get_or_try_init(|| async { self.shared.base_is_temporary().await.ok_or(()) })
            .await
            .copied()
            .unwrap_or(false)
    }

    /// `AssumeRole` for the grantee; returns the credentials and the session
    /// length actually asked for.
    async fn assume(
        &self,
        spec: &GrantSpec<'_>,
        session_seconds: u64,
    ) -> Result<(AwsCredentials, u64), ProviderError> {
        let (role_arn, policy) = target(spec)?;
        check_target(role_arn, policy)?;
        validate_duration(session_seconds).map_err(ProviderError::Permanent)?;
        let seconds = if self.chained().await && session_seconds > MAX_CHAINED_SECONDS {
            tracing::debug!(
                requested = session_seconds,
                "broker runs on role credentials: sts session capped at one hour"
            );
            MAX_CHAINED_SECONDS
        } else {
            session_seconds
        };
        let name = session_name(&spec.grantee.email);
        let tags = session_tags(spec)?;
        // A deny this broker wrote a moment ago covers sessions issued up to
        // its cutoff (the next whole second): a new grant's first session
        // waits for it to pass rather than be denied.
        if let Some(before) = self.sessions(role_arn, &name).denied_before {
            let wait = before - OffsetDateTime::now_utc();
            if wait.is_positive() && wait <= time::Duration::seconds(2) {
                tokio::time::sleep(
                    std::time::Duration::try_from(wait).unwrap_or_default()
                        + std::time::Duration::from_millis(5),
                )
                .await;
            }
        }
        let duration = i32::try_from(seconds).map_err(|_| {
            ProviderError::Permanent(format!("session duration {seconds}s is too long"))
        })?;
        let out = call(&self.shared.tuning, "sts AssumeRole", || {
            self.sts
                .assume_role()
                .role_arn(role_arn)
                .role_session_name(&name)
                .source_identity(&name)
                .duration_seconds(duration)
                .set_tags(Some(tags.clone()))
                .set_policy(policy.map(str::to_owned))
                .send()
        })
        .await
        .map_err(|mut e| {
            if e.is("AccessDenied") {
                e.message.push_str(
                    " (the role's trust policy must allow the broker sts:AssumeRole, \
                     sts:TagSession and sts:SetSourceIdentity)",
                );
            }
            ProviderError::from(e)
        })?;
        let Some(c) = out.credentials() else {
            return Err(ProviderError::Transient(
                "sts AssumeRole: the answer carries no credentials".to_owned(),
            ));
        };
        let expires = OffsetDateTime::from_unix_timestamp(c.expiration().secs()).map_err(|e| {
            ProviderError::Transient(format!("sts AssumeRole: bad expiration: {e}"))
        })?;
        let expiration = expires.format(&Rfc3339).map_err(|e| {
            ProviderError::Transient(format!("sts AssumeRole: bad expiration: {e}"))
        })?;
        // The session's issue time by AWS's clock: a later deny's cutoff
        // must not be earlier, whatever the broker's clock says.
        let issued = expires - time::Duration::seconds(i64::from(duration));
        self.update_sessions(role_arn, &name, |s| {
            s.last_issued = Some(s.last_issued.map_or(issued, |l| l.max(issued)));
        });
        tracing::info!(
            request.id = %spec.request_id,
            user.id = %spec.grantee.key,
            aws.role_arn = role_arn,
            aws.session_name = %name,
            aws.access_key_id = c.access_key_id(),
            grant.session_expires_at = %expiration,
            "minted sts session"
        );
        Ok((
            AwsCredentials {
                access_key_id: c.access_key_id().to_owned(),
                secret_access_key: c.secret_access_key().to_owned(),
                session_token: c.session_token().to_owned(),
                expiration,
            },
            seconds,
        ))
    }

    /// Exchanges credentials for a federation sign-in token.
    async fn signin_token(
        &self,
        credentials: &AwsCredentials,
        session_seconds: Option<u64>,
    ) -> Result<String, CallError> {
        let op = "aws federation getSigninToken";
        let session = serde_json::json!({
            "sessionId": credentials.access_key_id,
            "sessionKey": credentials.secret_access_key,
            "sessionToken": credentials.session_token,
        })
        .to_string();
        let mut query = vec![("Action", "getSigninToken".to_owned())];
        if let Some(seconds) = session_seconds {
            query.push(("SessionDuration", seconds.to_string()));
        }
        query.push(("Session", session));
        let permanent = |message: String| CallError {
            class: Class::Permanent,
            code: None,
            message,
            retry_after: None,
        };
        let (http, url, query) = (&self.shared.http, self.federation_url.as_str(), &query);
        retry(&self.shared.tuning, op, move || async move {
            let response = http
                .get(url)
                .query(query)
                .send()
                .await
                .map_err(|e| http_error(op, e))?;
            let status = response.status();
            if !status.is_success() {
                let retryable = status.is_server_error() || status.as_u16() == 429;
                return Err(CallError {
                    class: if retryable {
                        Class::Retry
                    } else {
                        Class::Permanent
                    },
                    code: None,
                    message: format!(
                        "{op}: the federation endpoint answered http {}",
                        status.as_u16()
                    ),
                    retry_after: retry_after(response.headers()),
                });
            }
            let body: serde_json::Value = response.json().await.map_err(|e| http_error(op, e))?;
            body.get("SigninToken")
                .and_then(serde_json::Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| permanent(format!("{op}: the answer has no `SigninToken`")))
        })
        .await
    }

    /// Denies every session of `role_arn` issued before `before`: writes the
    /// inline role policy [`REVOKE_POLICY_NAME`] with the documented
    /// `aws:TokenIssueTime` condition (`iam:PutRolePolicy`).
    ///
    /// This cuts **every** holder of the role, not just one grantee; sessions
    /// minted afterwards are unaffected. The time never moves backwards: if
    /// the role already denies sessions up to a later time, that time stays.
    /// The role must be in the account of the broker's credentials.
    pub async fn revoke_all_sessions(
        &self,
        role_arn: &str,
        before: OffsetDateTime,
    ) -> Result<(), ProviderError> {
        let arn = parse_role_arn(role_arn).map_err(ProviderError::Permanent)?;
        // Round up to the whole second so a session issued within the
        // current second is covered too.
        let mut cutoff = before.to_offset(time::UtcOffset::UTC);
        if cutoff.nanosecond() > 0 {
            cutoff = cutoff.replace_nanosecond(0).unwrap_or(cutoff) + time::Duration::SECOND;
        }
        if let Some(existing) = self.revoked_before(role_arn).await? {
            cutoff = cutoff.max(existing);
        }
        let document = revoke_policy(cutoff)?;
        self.iam
            .put_role_policy(&arn, REVOKE_POLICY_NAME, &document)
            .await?;
        tracing::warn!(
            aws.role_arn = role_arn,
            aws.revoked_before = %cutoff.format(&Rfc3339).unwrap_or_default(),
            "revoked all sessions of role"
        );
        Ok(())
    }

    /// The time before which sessions of `role_arn` are denied by
    /// [`REVOKE_POLICY_NAME`], if the role has that policy.
    pub async fn revoked_before(
        &self,
        role_arn: &str,
    ) -> Result<Option<OffsetDateTime>, ProviderError> {
        let arn = parse_role_arn(role_arn).map_err(ProviderError::Permanent)?;
        let Some(document) = self.iam.get_role_policy(&arn, REVOKE_POLICY_NAME).await? else {
            return Ok(None);
        };
        Ok(revoke_time(&document))
    }
}

/// The deny-older-sessions policy document for `cutoff`.
fn revoke_policy(cutoff: OffsetDateTime) -> Result<String, ProviderError> {
    let stamp = cutoff
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .map_err(|e| ProviderError::Permanent(format!("cannot format `{cutoff}`: {e}")))?;
    Ok(serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Deny",
            "Action": ["*"],
            "Resource": ["*"],
            "Condition": { "DateLessThan": { "aws:TokenIssueTime": stamp } }
        }]
    })
    .to_string())
}

/// The `aws:TokenIssueTime` cutoff of a policy document.
fn revoke_time(document: &str) -> Option<OffsetDateTime> {
    let value: serde_json::Value = serde_json::from_str(document).ok()?;
    let statements = match value.get("Statement")? {
        serde_json::Value::Array(list) => list.clone(),
        one => vec![one.clone()],
    };
    statements
        .iter()
        .filter_map(|s| s.pointer("/Condition/DateLessThan/aws:TokenIssueTime"))
        .filter_map(serde_json::Value::as_str)
        .filter_map(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .max()
}

#[async_trait]
impl GrantProvider for AwsRole {
    async fn grant(&self, spec: &GrantSpec<'_>) -> Result<GrantRecord, ProviderError> {
        let (role_arn, policy) = target(spec)?;
        check_target(role_arn, policy)?;
        Ok(GrantRecord {
            reference: None,
            details: serde_json::json!({
                "role_arn": role_arn,
                "session_name": session_name(&spec.grantee.email),
            }),
        })
    }

    async fn revoke(&self, spec: &GrantSpec<'_>) -> Result<(), ProviderError> {
        // Nothing to remove: the sessions are ended by `end_sessions`.
        let (role_arn, policy) = target(spec)?;
        check_target(role_arn, policy)
    }

    async fn end_sessions(
        &self,
        spec: &GrantSpec<'_>,
    ) -> Result<Option<SessionsEnded>, ProviderError> {
        let (role_arn, _) = target(spec)?;
        let identity = session_name(&spec.grantee.email);
        self.deny_sessions(role_arn, &identity).await.map(Some)
    }

    async fn prune_denies(
        &self,
        entitlement: &Entitlement,
    ) -> Result<Option<Pruned>, ProviderError> {
        match &entitlement.target {
            Target::AwsRole { role_arn, .. } => self.prune(role_arn).await,
            _ => Ok(None),
        }
    }

    async fn mint_credentials(
        &self,
        spec: &GrantSpec<'_>,
        session_seconds: u64,
    ) -> Result<AwsCredentials, ProviderError> {
        self.assume(spec, session_seconds).await.map(|(c, _)| c)
    }

    async fn console_url(
        &self,
        spec: &GrantSpec<'_>,
        session_seconds: u64,
    ) -> Result<String, ProviderError> {
        let (credentials, seconds) = self.assume(spec, session_seconds).await?;
        // The federation endpoint refuses SessionDuration for credentials
        // from role chaining; the console session then ends with them.
        let duration = if self.chained().await {
            None
        } else {
            Some(seconds)
        };
        let token = self.signin_token(&credentials, duration).await?;
        let mut url = Url::parse(&self.federation_url).map_err(|e| {
            ProviderError::Permanent(format!("`aws.federation_url` is not a URL: {e}"))
        })?;
        url.query_pairs_mut()
            .clear()
            .append_pair("Action", "login")
            .append_pair("Issuer", &self.issuer)
            .append_pair("Destination", &self.console_destination)
            .append_pair("SigninToken", &token);
        tracing::info!(
            request.id = %spec.request_id,
            user.id = %spec.grantee.key,
            aws.access_key_id = %credentials.access_key_id,
            "issued console sign-in url"
        );
        Ok(url.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_policy_round_trips() {
        let t = time::macros::datetime!(2026-05-07 23:47:00 UTC);
        let doc = revoke_policy(t).unwrap();
        assert!(
            doc.contains(r#""aws:TokenIssueTime":"2026-05-07T23:47:00Z""#),
            "{doc}"
        );
        assert!(doc.contains(r#""Effect":"Deny""#), "{doc}");
        assert_eq!(revoke_time(&doc), Some(t));
        // The documented single-statement shape is read too.
        let single = r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"*","Resource":"*",
            "Condition":{"DateLessThan":{"aws:TokenIssueTime":"2014-05-07T23:47:00Z"}}}}"#;
        assert_eq!(
            revoke_time(single),
            Some(time::macros::datetime!(2014-05-07 23:47:00 UTC))
        );
        assert_eq!(revoke_time("{}"), None);
        assert_eq!(revoke_time("not json"), None);
    }
}
