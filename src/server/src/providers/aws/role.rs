//! `aws_role`: STS sessions minted on demand, console federation, and
//! "revoke all sessions" of a role.

use std::fmt;

use async_trait::async_trait;
use aws_sdk_sts::types::Tag;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::OnceCell;
use url::Url;

use super::iam::Iam;
use super::validate::{
    MAX_CHAINED_SECONDS, parse_role_arn, session_name, tag_value, validate_duration,
    validate_session_policy, validate_tag_key, validate_tag_value,
};
use super::{CallError, Class, Shared, call, http_error, retry, retry_after};
use crate::config::AwsConfig;
use crate::policy::catalog::Target;
use crate::providers::{AwsCredentials, GrantProvider, GrantRecord, GrantSpec, ProviderError};

/// Name of the inline role policy that denies sessions issued before a time
/// (the name the AWS console's "Revoke active sessions" uses).
pub const REVOKE_POLICY_NAME: &str = "AWSRevokeOlderSessions";

/// Session tag carrying the request id.
const TAG_REQUEST: &str = "jit:request-id";
/// Session tag carrying the requester's email.
const TAG_REQUESTER: &str = "jit:requester";

/// STS `AssumeRole` sessions for `aws_role` entitlements.
///
/// Nothing exists upstream between mints: `grant` only checks the target,
/// `revoke` has nothing to remove (sessions are short; see
/// [`AwsRole::revoke_all_sessions`]).
pub struct AwsRole {
    shared: Shared,
    sts: aws_sdk_sts::Client,
    iam: Iam,
    federation_url: String,
    console_destination: String,
    issuer: String,
    temporary_base: OnceCell<bool>,
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
            shared,
        }
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

    async fn revoke(&self, _spec: &GrantSpec<'_>) -> Result<(), ProviderError> {
        // STS sessions cannot be revoked one by one; they are short, and
        // `revoke_all_sessions` cuts them all when it matters.
        Ok(())
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
