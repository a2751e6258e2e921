//! The IAM calls the broker makes (`GetRole`, `GetRolePolicy`,
//! `PutRolePolicy`, `DeleteRolePolicy`), through `aws-sdk-iam`.
//!
//! IAM is a global service with one endpoint per partition, so a role in
//! another partition than the broker's region needs a client of its own:
//! one client per partition, made on first use from the shared SDK
//! configuration (credentials, timeouts, retries off: [`super::call`]
//! retries) and the endpoint override, if any.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::validate::RoleArn;
use super::{CallError, Class, Shared, call};

/// IAM clients by partition.
pub(super) struct Iam {
    shared: Shared,
    clients: Mutex<HashMap<String, aws_sdk_iam::Client>>,
}

/// The partition of an AWS region name.
fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The region to sign IAM calls of `partition` for: the broker's own when
/// it is in that partition, else the partition's home region.
fn region_for(partition: &str, configured: &str) -> Option<String> {
    if partition_of(configured) == partition {
        return Some(configured.to_owned());
    }
    match partition {
        "aws" => Some("us-east-1".to_owned()),
        "aws-us-gov" => Some("us-gov-west-1".to_owned()),
        "aws-cn" => Some("cn-north-1".to_owned()),
        _ => None,
    }
}

impl Iam {
    pub(super) fn new(shared: Shared) -> Self {
        Self {
            shared,
            clients: Mutex::default(),
        }
    }

    /// The client for `partition`, or why there is none.
    fn client(&self, op: &str, partition: &str) -> Result<aws_sdk_iam::Client, CallError> {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = clients.get(partition) {
            return Ok(c.clone());
        }
        let configured = self
            .shared
            .sdk
            .region()
            .map_or("us-east-1", aws_config::Region::as_ref);
        let region = region_for(partition, configured).ok_or_else(|| CallError {
            class: Class::Permanent,
            code: None,
            message: format!("{op}: no known IAM endpoint for partition `{partition}`"),
            retry_after: None,
        })?;
        let mut conf = aws_sdk_iam::config::Builder::from(&self.shared.sdk)
            .region(aws_config::Region::new(region));
        conf.set_endpoint_url(self.shared.endpoint_url.clone());
        let client = aws_sdk_iam::Client::from_conf(conf.build());
        clients.insert(partition.to_owned(), client.clone());
        Ok(client)
    }

    /// `GetRole`: the role's maximum session duration.
    pub(super) async fn max_session_duration(
        &self,
        role: &RoleArn<'_>,
    ) -> Result<Duration, CallError> {
        let op = "iam GetRole";
        let client = self.client(op, role.partition)?;
        let out = call(&self.shared.tuning, op, || {
            client.get_role().role_name(role.name).send()
        })
        .await?;
        let seconds = out
            .role()
            .and_then(aws_sdk_iam::types::Role::max_session_duration)
            .and_then(|s| u64::try_from(s).ok())
            // IAM's default when a role does not say.
            .unwrap_or(3600);
        Ok(Duration::from_secs(seconds))
    }

    /// `GetRolePolicy`: the inline policy `name` of the role, decoded; `None`
    /// when the role has no such policy.
    pub(super) async fn get_role_policy(
        &self,
        role: &RoleArn<'_>,
        name: &str,
    ) -> Result<Option<String>, CallError> {
        let op = "iam GetRolePolicy";
        let client = self.client(op, role.partition)?;
        let out = call(&self.shared.tuning, op, || {
            client
                .get_role_policy()
                .role_name(role.name)
                .policy_name(name)
                .send()
        })
        .await;
        match out {
            Ok(out) => Ok(Some(decode_document(out.policy_document()))),
            // The policy, or the role, is missing: PutRolePolicy reports the
            // latter clearly.
            Err(e) if e.is("NoSuchEntity") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PutRolePolicy`: writes the inline policy `name` of the role.
    pub(super) async fn put_role_policy(
        &self,
        role: &RoleArn<'_>,
        name: &str,
        document: &str,
    ) -> Result<(), CallError> {
        let op = "iam PutRolePolicy";
        let client = self.client(op, role.partition)?;
        call(&self.shared.tuning, op, || {
            client
                .put_role_policy()
                .role_name(role.name)
                .policy_name(name)
                .policy_document(document)
                .send()
        })
        .await?;
        Ok(())
    }

    /// `DeleteRolePolicy`: removes the inline policy `name`; a policy that is
    /// not there is removed already.
    pub(super) async fn delete_role_policy(
        &self,
        role: &RoleArn<'_>,
        name: &str,
    ) -> Result<(), CallError> {
        let op = "iam DeleteRolePolicy";
        let client = self.client(op, role.partition)?;
        match call(&self.shared.tuning, op, || {
            client
                .delete_role_policy()
                .role_name(role.name)
                .policy_name(name)
                .send()
        })
        .await
        {
            Err(e) if !e.is("NoSuchEntity") => Err(e),
            _ => Ok(()),
        }
    }
}

/// IAM returns policy documents URL-encoded (RFC 3986); a document that is
/// JSON already is returned as it is.
fn decode_document(document: &str) -> String {
    if document.trim_start().starts_with('{') {
        return document.to_owned();
    }
    percent_encoding::percent_decode_str(document)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_decoded_once() {
        let json = r#"{"Version":"2012-10-17","Statement":[{"Sid":"a+b"}]}"#;
        let encoded: String =
            percent_encoding::utf8_percent_encode(json, percent_encoding::NON_ALPHANUMERIC)
                .collect();
        assert_eq!(decode_document(&encoded), json);
        // A `+` is a plus, not a space (RFC 3986, not form encoding).
        assert_eq!(
            decode_document("%7B%22a%22%3A%22x+y%22%7D"),
            r#"{"a":"x+y"}"#
        );
        assert_eq!(decode_document(json), json);
    }

    #[test]
    fn partitions_have_a_region_to_sign_for() {
        assert_eq!(region_for("aws", "eu-west-1").as_deref(), Some("eu-west-1"));
        assert_eq!(
            region_for("aws", "cn-north-1").as_deref(),
            Some("us-east-1")
        );
        assert_eq!(
            region_for("aws-cn", "us-east-1").as_deref(),
            Some("cn-north-1")
        );
        assert_eq!(
            region_for("aws-us-gov", "us-gov-east-1").as_deref(),
            Some("us-gov-east-1")
        );
        assert_eq!(region_for("aws-iso", "us-east-1"), None);
    }
}
