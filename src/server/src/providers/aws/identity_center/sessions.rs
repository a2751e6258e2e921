//! Ending the role sessions a grantee opened through the access portal
//! (docs/revocation.md): deleting the assignment stops new ones, but the
//! role sessions already open last the permission set's session duration.
//! AWS's documented answer is a deny on `identitystore:userId` in the
//! permission set's inline policy, provisioned to the account
//! (`ProvisionPermissionSet`). The broker's statement also names the account
//! (`aws:PrincipalAccount`, a permission set serves many) and only sessions
//! issued before the removal (`aws:TokenIssueTime`), so a later grant works,
//! and it is pruned once the session duration has passed. The operator's own
//! statements in that policy are kept as they are (merged by `Sid`: the
//! broker's start with `jit`).

use aws_sdk_ssoadmin::types::{PermissionSetProvisioningStatus, ProvisionTargetType};
use time::OffsetDateTime;

use super::super::deny::{self, Merged, Who};
use super::super::{CallError, call};
use super::{AwsIdentityCenter, Followed, Status, target};
use crate::policy::catalog::{Entitlement, Target};
use crate::providers::{GrantSpec, ProviderError, Pruned, SessionsEnded};

/// A permission set's session duration when it does not say (AWS's default).
const DEFAULT_SESSION: time::Duration = time::Duration::HOUR;

/// `PT8H`, `PT1H30M`, `PT45M`, `PT900S`: the ISO 8601 durations a permission
/// set's `SessionDuration` is written in.
pub(super) fn iso_duration(text: &str) -> Option<time::Duration> {
    let rest = text.strip_prefix("PT")?;
    let mut total = 0i64;
    let mut number = String::new();
    for c in rest.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: i64 = number.parse().ok()?;
        number.clear();
        total += n * match c {
            'H' => 3600,
            'M' => 60,
            'S' => 1,
            _ => return None,
        };
    }
    (number.is_empty() && total > 0).then(|| time::Duration::seconds(total))
}

/// A provisioning's status and failure reason.
fn status_of(status: Option<&PermissionSetProvisioningStatus>) -> Status {
    status.and_then(|s| {
        s.status()
            .cloned()
            .map(|v| (v, s.failure_reason().map(str::to_owned)))
    })
}

/// Whether an entitlement asks for its sessions to be ended.
fn revokes_sessions(e: &Entitlement) -> bool {
    matches!(
        e.target,
        Target::AwsIdentityCenter {
            revoke_sessions: true,
            ..
        }
    )
}

impl AwsIdentityCenter {
    /// The permission set's session duration (`DescribePermissionSet`);
    /// `None` when there is no such permission set (then no role in any
    /// account, and no session).
    async fn lifetime(
        &self,
        instance: &str,
        ps: &str,
    ) -> Result<Option<time::Duration>, ProviderError> {
        if let Some(fixed) = self.shared.tuning.session_lifetime {
            return Ok(Some(
                time::Duration::try_from(fixed).unwrap_or(DEFAULT_SESSION),
            ));
        }
        if let Some(d) = self.lifetimes.get(ps) {
            return Ok(Some(d));
        }
        let out = match call(
            &self.shared.tuning,
            "sso-admin DescribePermissionSet",
            || {
                self.sso
                    .describe_permission_set()
                    .instance_arn(instance)
                    .permission_set_arn(ps)
                    .send()
            },
        )
        .await
        {
            Ok(out) => out,
            Err(e) if e.is("ResourceNotFoundException") => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let d = out
            .permission_set()
            .and_then(|p| p.session_duration())
            .and_then(iso_duration)
            .unwrap_or(DEFAULT_SESSION);
        self.lifetimes.put(ps, d);
        Ok(Some(d))
    }

    /// The permission set's inline policy (`Some(None)`: it has none;
    /// `None`: there is no such permission set).
    async fn inline_policy(
        &self,
        instance: &str,
        ps: &str,
    ) -> Result<Option<Option<String>>, CallError> {
        let out = match call(
            &self.shared.tuning,
            "sso-admin GetInlinePolicyForPermissionSet",
            || {
                self.sso
                    .get_inline_policy_for_permission_set()
                    .instance_arn(instance)
                    .permission_set_arn(ps)
                    .send()
            },
        )
        .await
        {
            Ok(out) => out,
            Err(e) if e.is("ResourceNotFoundException") => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(
            out.inline_policy()
                .filter(|p| !p.trim().is_empty())
                .map(str::to_owned),
        ))
    }

    /// Writes a merged inline policy: put, or delete when it holds nothing.
    async fn write_policy(
        &self,
        instance: &str,
        ps: &str,
        merged: &Merged,
    ) -> Result<(), CallError> {
        match &merged.document {
            Some(document) => {
                call(
                    &self.shared.tuning,
                    "sso-admin PutInlinePolicyToPermissionSet",
                    || {
                        self.sso
                            .put_inline_policy_to_permission_set()
                            .instance_arn(instance)
                            .permission_set_arn(ps)
                            .inline_policy(document)
                            .send()
                    },
                )
                .await?;
            }
            None => {
                call(
                    &self.shared.tuning,
                    "sso-admin DeleteInlinePolicyFromPermissionSet",
                    || {
                        self.sso
                            .delete_inline_policy_from_permission_set()
                            .instance_arn(instance)
                            .permission_set_arn(ps)
                            .send()
                    },
                )
                .await?;
            }
        }
        Ok(())
    }

    /// `ProvisionPermissionSet` to `account`, followed until Identity Center
    /// says it is done; returns its request id.
    async fn provision(
        &self,
        instance: &str,
        ps: &str,
        account: &str,
    ) -> Result<String, ProviderError> {
        let out = call(
            &self.shared.tuning,
            "sso-admin ProvisionPermissionSet",
            || {
                self.sso
                    .provision_permission_set()
                    .instance_arn(instance)
                    .permission_set_arn(ps)
                    .target_type(ProvisionTargetType::AwsAccount)
                    .target_id(account)
                    .send()
            },
        )
        .await?;
        let status = out.permission_set_provisioning_status();
        let request_id = status
            .and_then(PermissionSetProvisioningStatus::request_id)
            .unwrap_or_default()
            .to_owned();
        let describe = || async {
            let out = call(
                &self.shared.tuning,
                "sso-admin DescribePermissionSetProvisioningStatus",
                || {
                    self.sso
                        .describe_permission_set_provisioning_status()
                        .instance_arn(instance)
                        .provision_permission_set_request_id(&request_id)
                        .send()
                },
            )
            .await?;
            Ok(status_of(out.permission_set_provisioning_status()))
        };
        match self
            .follow(status_of(status), &request_id, describe)
            .await?
        {
            Followed::Succeeded => Ok(request_id),
            Followed::Failed(reason) => Err(ProviderError::Transient(format!(
                "Identity Center could not provision permission set `{ps}` to account {account}: {}",
                reason.as_deref().unwrap_or("no reason given")
            ))),
            Followed::Pending => Err(ProviderError::Transient(format!(
                "provisioning of permission set `{ps}` to account {account} still in progress"
            ))),
        }
    }

    /// Denies the grantee's role sessions of the permission set in the
    /// account issued before now, and provisions the policy there.
    pub(super) async fn deny_sessions(
        &self,
        spec: &GrantSpec<'_>,
    ) -> Result<Option<SessionsEnded>, ProviderError> {
        if !revokes_sessions(spec.entitlement) {
            return Ok(None);
        }
        let (instance, store) = self.instance()?;
        let (account, ps) = target(spec.entitlement)?;
        let Some(user) = self.user_id(store, &spec.grantee.email).await? else {
            // A deleted user's sessions are Identity Center's to end.
            return Ok(None);
        };
        let lock = self.policy_locks.get(ps);
        let _turn = lock.lock().await;
        let Some(lifetime) = self.lifetime(instance, ps).await? else {
            tracing::warn!(
                aws.permission_set_arn = ps,
                "no such permission set: no sessions to end"
            );
            return Ok(None);
        };
        let now = OffsetDateTime::now_utc();
        let cutoff = deny::cutoff_after(now);
        let Some(existing) = self.inline_policy(instance, ps).await? else {
            return Ok(None);
        };
        let who = Who::IdentityStoreUser {
            user: &user,
            account,
        };
        let (merged, everyone) =
            deny::merge_within_budget(existing.as_deref(), who, cutoff, now, lifetime).map_err(
                |e| ProviderError::Permanent(format!("permission set `{ps}`, inline policy: {e}")),
            )?;
        if merged.changed {
            self.write_policy(instance, ps, &merged).await?;
        }
        let provisioned = self.provision(instance, ps, account).await?;
        let issued_before = deny::stamp(cutoff);
        tracing::info!(
            aws.permission_set_arn = ps,
            aws.account_id = account,
            aws.principal_id = %user,
            aws.revoked_before = %issued_before,
            everyone,
            "denied the grantee's portal sessions"
        );
        let mut details = serde_json::json!({
            "permission_set_arn": ps,
            "account_id": account,
            "user_id": user,
            "issued_before": issued_before,
            "scope": if everyone { "permission_set" } else { "user" },
            "statements": merged.denies,
            "pruned": merged.pruned,
            "provisioning_request_id": provisioned,
        });
        if everyone {
            details["fallback"] = serde_json::json!(format!(
                "the permission set's inline policy would exceed {} characters: every session \
                 of the permission set issued before the cutoff is denied, not only this user's",
                deny::POLICY_BUDGET
            ));
        }
        Ok(Some(SessionsEnded {
            details,
            prune_at: merged.next_expiry,
        }))
    }

    /// Drops the broker's statements whose sessions have all expired, and
    /// provisions the result to the entitlement's account.
    pub(super) async fn prune(&self, e: &Entitlement) -> Result<Option<Pruned>, ProviderError> {
        if !revokes_sessions(e) {
            return Ok(None);
        }
        let (instance, _) = self.instance()?;
        let (account, ps) = target(e)?;
        let lock = self.policy_locks.get(ps);
        let _turn = lock.lock().await;
        let Some(lifetime) = self.lifetime(instance, ps).await? else {
            return Ok(None);
        };
        let Some(Some(existing)) = self.inline_policy(instance, ps).await? else {
            return Ok(None);
        };
        let merged = deny::merge(Some(&existing), None, OffsetDateTime::now_utc(), lifetime)
            .map_err(|e| ProviderError::Permanent(format!("permission set `{ps}`: {e}")))?;
        if merged.denies == 0 && merged.pruned == 0 {
            return Ok(None);
        }
        if merged.changed {
            self.write_policy(instance, ps, &merged).await?;
            self.provision(instance, ps, account).await?;
        }
        Ok(Some(Pruned {
            pruned: merged.pruned,
            remaining: merged.denies,
            next: merged.next_expiry,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_durations_read_as_iso_8601() {
        assert_eq!(iso_duration("PT1H"), Some(time::Duration::HOUR));
        assert_eq!(iso_duration("PT12H"), Some(time::Duration::hours(12)));
        assert_eq!(iso_duration("PT1H30M"), Some(time::Duration::minutes(90)));
        assert_eq!(iso_duration("PT900S"), Some(time::Duration::seconds(900)));
        for bad in ["", "P1D", "PT", "PT1", "PTxH", "1H", "PT0H"] {
            assert_eq!(iso_duration(bad), None, "{bad}");
        }
    }
}
