//! Admin actions and drift reconciliation.

use serde_json::json;

use super::grants::JobOutcome;
use super::{App, Missing, ServiceError, UpstreamCall};
use crate::domain::User;
use crate::policy::catalog::{Entitlement, Target};
use crate::policy::{Authorized, Kind, act};
use crate::providers::{LiveGrant, ProviderError};
use crate::store::audit::NewEvent;
use crate::store::jobs::{self, Job, JobKind};
use crate::store::requests::{self as store, ListFilter};
use crate::store::users;

/// Longest a reconciliation pass waits for the grants under way; new ones
/// wait meanwhile, so it is short: a pass that gives up tries again soon.
const GATE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long an ended grant's own removal job has before a reconciliation pass removes the access.
const REMOVAL_GRACE_MS: i64 = 120_000;

impl App {
    /// The proof that `user` may administer the broker, or why not.
    pub fn authorize_admin(&self, user: &User) -> Result<Authorized<act::Admin>, ServiceError> {
        self.policy
            .authorize_broker::<act::Admin>(user)
            .map_err(|_| ServiceError::Forbidden(super::Forbidden::Admin))
    }

    /// "Revoke all sessions" of an `aws_role` entitlement's role: every STS
    /// session issued before now stops working. Done by `user`, whose
    /// `admin` proof it takes.
    pub async fn revoke_all_sessions(
        &self,
        user: &User,
        admin: &Authorized<act::Admin>,
        entitlement: &str,
    ) -> Result<(String, String), ServiceError> {
        if !admin.is_for(user) {
            return Err(ServiceError::Forbidden(super::Forbidden::RevokeAll));
        }
        let ent =
            self.policy.catalog.get(entitlement).ok_or_else(|| {
                ServiceError::NotFound(Missing::Entitlement(entitlement.to_owned()))
            })?;
        let Target::AwsRole { role_arn, .. } = &ent.target else {
            return Err(ServiceError::Invalid(format!(
                "`{entitlement}` is not an AWS role entitlement"
            )));
        };
        let revoker = self.providers.session_revoker.as_ref().ok_or_else(|| {
            ServiceError::Invalid("revoking sessions needs the `[aws]` section".to_owned())
        })?;
        let before = self.now();
        revoker
            .revoke_all_sessions(role_arn, before)
            .await
            .map_err(ServiceError::upstream(UpstreamCall::RevokeSessions))?;
        let before_text = super::requests::fmt_ms(crate::clock::to_ms(before));
        self.audit_alone(NewEvent {
            actor: &user.email,
            action: "admin.sessions_revoked",
            request_id: None,
            entitlement: Some(&ent.id),
            data: json!({ "role_arn": role_arn, "issued_before": before_text }),
        })
        .await?;
        Ok((role_arn.clone(), before_text))
    }

    /// Queues one reconciliation pass per interval (one broker wins the dedupe key).
    pub async fn queue_reconcile(&self, every_ms: i64) -> Result<(), ServiceError> {
        let now = self.now_ms();
        let bucket = now / every_ms.max(1);
        let mut tx = self.store.begin().await?;
        jobs::enqueue(
            &mut tx,
            JobKind::Reconcile,
            None,
            "{}",
            now,
            Some(&format!("reconcile:{bucket}")),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// What should exist upstream: the active grants, and the ended ones
    /// whose removal job has not run yet (their ids come second).
    async fn live_grants(&self) -> Result<(Vec<LiveGrant>, Vec<String>), ServiceError> {
        let mut rows = store::list(
            &self.store,
            &ListFilter {
                states: vec![jit_api::RequestState::Active],
                limit: 1_000_000,
                ..ListFilter::default()
            },
        )
        .await?;
        // Grants that just ended keep their assignment until their own
        // removal job runs (soon); only an overdue removal is the pass's to make.
        let grace_from = self.now_ms() - REMOVAL_GRACE_MS;
        let ending = store::ended_not_removed(&self.store, grace_from).await?;
        // Their access may be gone already (a later grant's removal took it): not missing.
        let ending_ids: Vec<String> = ending.iter().map(|r| r.id.to_string()).collect();
        rows.extend(ending);
        let mut live = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(grantee) = users::grantee(&self.store, &row.requester_key).await? {
                // A bundle's grant explains each of its members' objects.
                let members: Vec<String> = match self.policy.catalog.get(&row.entitlement) {
                    Some(ent) => ent.members().iter().map(|m| m.id.clone()).collect(),
                    None => vec![row.entitlement.clone()],
                };
                for entitlement in members {
                    live.push(LiveGrant {
                        request_id: row.id,
                        entitlement,
                        grantee: grantee.clone(),
                        ends_at: row.expires_at.unwrap_or(row.created_at).to_datetime(),
                    });
                }
            }
        }
        Ok((live, ending_ids))
    }

    /// Compares each real provider's upstream objects with the live grants;
    /// removals and findings are audited.
    pub(crate) async fn reconcile(&self, job: &Job) -> Result<JobOutcome, ServiceError> {
        // No grant is half made while the pass runs: the active grants are
        // exactly what should exist upstream (an approved one that is not
        // active yet makes or adopts its assignment when its turn comes).
        let Some(gate) = self.reconcile_gate(GATE_WAIT).await? else {
            tracing::warn!("reconciliation skipped: grants kept the gate busy");
            return Ok(JobOutcome::RetryAt(
                self.now_ms() + 5_000,
                "grants kept the reconciliation gate busy".to_owned(),
            ));
        };
        let (live, ending_ids) = self.live_grants().await?;
        let managed: Vec<_> = self.policy.catalog.iter().cloned().collect();
        let mut problems = Vec::new();
        for kind in [
            Kind::AwsIdentityCenter,
            Kind::EntraRole,
            Kind::EntraGroup,
            Kind::AzureRole,
            Kind::AwsRole,
        ] {
            if let Some(problem) = self
                .reconcile_kind(kind, &managed, &live, &ending_ids)
                .await?
            {
                problems.push(problem);
            }
        }
        let mut tx = self.store.begin().await?;
        if !problems.is_empty() {
            self.audit(
                &mut tx,
                NewEvent {
                    actor: "system",
                    action: "reconcile.failed",
                    request_id: None,
                    entitlement: None,
                    data: json!({ "errors": problems }),
                },
            )
            .await?;
        }
        jobs::complete(&mut tx, job.id, self.now_ms()).await?;
        tx.commit().await?;
        drop(gate);
        Ok(JobOutcome::Done)
    }

    /// Reconciles the real provider of `kind` against the live grants of its
    /// entitlements; audits any drift it reports (leaving out assignments of
    /// grants being ended) and returns the provider's failure, if any.
    async fn reconcile_kind(
        &self,
        kind: Kind,
        managed: &[Entitlement],
        live: &[LiveGrant],
        ending_ids: &[String],
    ) -> Result<Option<String>, ServiceError> {
        let provider = self.providers.get(kind);
        if provider.simulated() {
            return Ok(None);
        }
        let of_kind: Vec<_> = managed.iter().filter(|e| e.kind == kind).cloned().collect();
        if of_kind.is_empty() {
            return Ok(None);
        }
        let live_of_kind: Vec<_> = live
            .iter()
            .filter(|g| of_kind.iter().any(|e| e.id == g.entitlement))
            .cloned()
            .collect();
        match provider.reconcile(&of_kind, &live_of_kind).await {
            Ok(mut report) => {
                // Providers name the request in each missing entry.
                report
                    .missing
                    .retain(|m| !ending_ids.iter().any(|id| m.contains(id.as_str())));
                if report.removed.is_empty()
                    && report.unexplained.is_empty()
                    && report.missing.is_empty()
                {
                    return Ok(None);
                }
                self.audit_alone(NewEvent {
                    actor: "system",
                    action: "reconcile.drift",
                    request_id: None,
                    entitlement: None,
                    data: json!({
                        "kind": kind.as_str(),
                        "removed": report.removed,
                        "unexplained": report.unexplained,
                        "missing": report.missing,
                    }),
                })
                .await?;
                Ok(None)
            }
            Err(e @ (ProviderError::Transient(_) | ProviderError::Permanent(_))) => {
                Ok(Some(format!("{}: {e}", kind.as_str())))
            }
        }
    }
}
