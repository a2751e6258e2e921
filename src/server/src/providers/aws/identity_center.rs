//! `aws_identity_center`: account assignments of a permission set on an
//! account for the grantee's Identity Store user.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_identitystore::types::{AlternateIdentifier, UniqueAttribute};
use aws_sdk_ssoadmin::types::{
    AccountAssignmentOperationStatus, PrincipalType, StatusValues, TargetType,
};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::deny::{Lifetimes, PolicyLocks};
use super::validate::{validate_account_id, validate_instance_arn, validate_permission_set_arn};
use super::{CallError, Shared, call};
use crate::config::AwsConfig;
use crate::policy::catalog::{Entitlement, Kind, Target};
use crate::providers::{
    GrantProvider, GrantRecord, GrantSpec, LiveGrant, ProviderError, Pruned, ReconcileReport,
    SessionsEnded,
};

mod sessions;

/// Identity Center account assignments for `aws_identity_center` entitlements.
pub struct AwsIdentityCenter {
    shared: Shared,
    sso: aws_sdk_ssoadmin::Client,
    ids: aws_sdk_identitystore::Client,
    instance_arn: Option<String>,
    identity_store_id: Option<String>,
    /// Assignment operations in flight on the instance.
    permits: Semaphore,
    /// `account|permission set|principal` being created now; reconcile leaves them alone.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// One read-modify-write of a permission set's inline policy at a time.
    policy_locks: PolicyLocks,
    /// Permission sets' session durations.
    lifetimes: Lifetimes,
}

impl fmt::Debug for AwsIdentityCenter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsIdentityCenter")
            .field("instance_arn", &self.instance_arn)
            .field("identity_store_id", &self.identity_store_id)
            .finish_non_exhaustive()
    }
}

/// Which assignment operation to poll.
#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Delete,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Delete => "delete",
        }
    }
}

/// An asynchronous operation's status and failure reason, as last read
/// (`None`: not known yet).
type Status = Option<(StatusValues, Option<String>)>;

/// How an asynchronous operation ended, as [`AwsIdentityCenter::follow`] saw it.
#[derive(Debug)]
enum Followed {
    Succeeded,
    /// With Identity Center's reason, when it gave one.
    Failed(Option<String>),
    /// Still in progress at the deadline, or no request id to follow.
    Pending,
}

/// One assignment: account, permission set, principal.
#[derive(Debug, Clone)]
struct Assignment<'a> {
    account: &'a str,
    permission_set: &'a str,
    principal_type: PrincipalType,
    principal: &'a str,
}

impl Assignment<'_> {
    fn key(&self) -> String {
        format!(
            "{}|{}|{}",
            self.account, self.permission_set, self.principal
        )
    }

    fn describe(&self, who: &str) -> String {
        format!(
            "permission set `{}` on account {} for {} `{who}`",
            self.permission_set,
            self.account,
            self.principal_type.as_str()
        )
    }
}

/// Where one reconciliation looks.
#[derive(Debug, Clone, Copy)]
struct Scope<'a> {
    instance: &'a str,
    store: &'a str,
    account: &'a str,
    permission_set: &'a str,
}

/// Removes a key from the in-flight set when the operation ends, however it ends.
struct InFlight {
    set: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// The account and permission set of an `aws_identity_center` entitlement.
fn target(e: &Entitlement) -> Result<(&str, &str), ProviderError> {
    match &e.target {
        Target::AwsIdentityCenter {
            account_id,
            permission_set_arn,
            ..
        } => {
            validate_account_id(account_id).map_err(ProviderError::Permanent)?;
            validate_permission_set_arn(permission_set_arn).map_err(ProviderError::Permanent)?;
            Ok((account_id, permission_set_arn))
        }
        _ => Err(ProviderError::Permanent(format!(
            "entitlement `{}` is not an aws_identity_center entitlement",
            e.id
        ))),
    }
}

impl AwsIdentityCenter {
    pub(super) fn new(shared: &Shared, cfg: &AwsConfig) -> Self {
        let mut sso = aws_sdk_ssoadmin::config::Builder::from(&shared.sdk);
        sso.set_endpoint_url(shared.endpoint_url.clone());
        let mut ids = aws_sdk_identitystore::config::Builder::from(&shared.sdk);
        ids.set_endpoint_url(shared.endpoint_url.clone());
        Self {
            sso: aws_sdk_ssoadmin::Client::from_conf(sso.build()),
            ids: aws_sdk_identitystore::Client::from_conf(ids.build()),
            instance_arn: cfg.identity_center_instance_arn.clone(),
            identity_store_id: cfg.identity_store_id.clone(),
            permits: Semaphore::new(shared.tuning.max_in_flight.max(1)),
            in_flight: Arc::default(),
            policy_locks: PolicyLocks::default(),
            lifetimes: Lifetimes::default(),
            shared: shared.clone(),
        }
    }

    /// Instance ARN and identity store id, or why not.
    fn instance(&self) -> Result<(&str, &str), ProviderError> {
        let instance = self.instance_arn.as_deref().ok_or_else(|| {
            ProviderError::Permanent(
                "`aws.identity_center_instance_arn` is not configured".to_owned(),
            )
        })?;
        validate_instance_arn(instance).map_err(ProviderError::Permanent)?;
        let store = self.identity_store_id.as_deref().ok_or_else(|| {
            ProviderError::Permanent("`aws.identity_store_id` is not configured".to_owned())
        })?;
        Ok((instance, store))
    }

    /// The Identity Store user id for `email`: by user name, then by email.
    async fn user_id(&self, store: &str, email: &str) -> Result<Option<String>, ProviderError> {
        for path in ["userName", "emails.value"] {
            let id = UniqueAttribute::builder()
                .attribute_path(path)
                .attribute_value(email.to_owned().into())
                .build()
                .map_err(|e| ProviderError::Permanent(format!("identitystore GetUserId: {e}")))?;
            let id = AlternateIdentifier::UniqueAttribute(id);
            match call(&self.shared.tuning, "identitystore GetUserId", || {
                self.ids
                    .get_user_id()
                    .identity_store_id(store)
                    .alternate_identifier(id.clone())
                    .send()
            })
            .await
            {
                Ok(out) => return Ok(Some(out.user_id().to_owned())),
                Err(e) if e.is("ResourceNotFoundException") => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// The user id, or a permanent error naming the user.
    async fn require_user_id(&self, store: &str, email: &str) -> Result<String, ProviderError> {
        self.user_id(store, email).await?.ok_or_else(|| {
            ProviderError::Permanent(format!(
                "no Identity Center user with user name or email `{email}` in identity store `{store}`"
            ))
        })
    }

    /// A user's name for reports; the id when it cannot be found.
    async fn user_name(&self, store: &str, user_id: &str) -> String {
        let out = call(&self.shared.tuning, "identitystore DescribeUser", || {
            self.ids
                .describe_user()
                .identity_store_id(store)
                .user_id(user_id)
                .send()
        })
        .await;
        match out {
            Ok(out) => out
                .user_name()
                .map_or_else(|| user_id.to_owned(), str::to_owned),
            Err(_) => user_id.to_owned(),
        }
    }

    /// Every assignment of a permission set on an account: (principal type, id).
    async fn list(
        &self,
        instance: &str,
        account: &str,
        permission_set: &str,
    ) -> Result<Vec<(PrincipalType, String)>, CallError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = call(
                &self.shared.tuning,
                "sso-admin ListAccountAssignments",
                || {
                    self.sso
                        .list_account_assignments()
                        .instance_arn(instance)
                        .account_id(account)
                        .permission_set_arn(permission_set)
                        .set_next_token(token.clone())
                        .send()
                },
            )
            .await?;
            all.extend(
                out.account_assignments().iter().filter_map(|a| {
                    Some((a.principal_type()?.clone(), a.principal_id()?.to_owned()))
                }),
            );
            token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if token.is_none() {
                return Ok(all);
            }
        }
    }

    /// Creates an assignment and waits until Identity Center says it exists.
    async fn create(
        &self,
        instance: &str,
        a: &Assignment<'_>,
        who: &str,
    ) -> Result<String, ProviderError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ProviderError::Transient(format!("assignment queue closed: {e}")))?;
        let key = a.key();
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone());
        let _guard = InFlight {
            set: self.in_flight.clone(),
            key,
        };
        let out = call(
            &self.shared.tuning,
            "sso-admin CreateAccountAssignment",
            || {
                self.sso
                    .create_account_assignment()
                    .instance_arn(instance)
                    .target_id(a.account)
                    .target_type(TargetType::AwsAccount)
                    .permission_set_arn(a.permission_set)
                    .principal_type(a.principal_type.clone())
                    .principal_id(a.principal)
                    .send()
            },
        )
        .await?;
        self.settle(
            Op::Create,
            instance,
            out.account_assignment_creation_status(),
            a,
            who,
        )
        .await
    }

    /// Deletes an assignment and waits until Identity Center says it is gone.
    async fn delete(
        &self,
        instance: &str,
        a: &Assignment<'_>,
        who: &str,
    ) -> Result<(), ProviderError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ProviderError::Transient(format!("assignment queue closed: {e}")))?;
        let out = match call(
            &self.shared.tuning,
            "sso-admin DeleteAccountAssignment",
            || {
                self.sso
                    .delete_account_assignment()
                    .instance_arn(instance)
                    .target_id(a.account)
                    .target_type(TargetType::AwsAccount)
                    .permission_set_arn(a.permission_set)
                    .principal_type(a.principal_type.clone())
                    .principal_id(a.principal)
                    .send()
            },
        )
        .await
        {
            Ok(out) => out,
            Err(e) if e.is("ResourceNotFoundException") => {
                tracing::info!(aws.principal_id = a.principal, "assignment already gone");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.settle(
            Op::Delete,
            instance,
            out.account_assignment_deletion_status(),
            a,
            who,
        )
        .await
        .map(|_| ())
    }

    /// Follows an operation to its end; returns its request id.
    async fn settle(
        &self,
        op: Op,
        instance: &str,
        status: Option<&AccountAssignmentOperationStatus>,
        a: &Assignment<'_>,
        who: &str,
    ) -> Result<String, ProviderError> {
        let request_id = status
            .and_then(AccountAssignmentOperationStatus::request_id)
            .unwrap_or_default()
            .to_owned();
        let status = status.and_then(|s| {
            s.status()
                .cloned()
                .map(|v| (v, s.failure_reason().map(str::to_owned)))
        });
        let followed = self
            .follow(status, &request_id, || {
                self.describe(op, instance, &request_id)
            })
            .await?;
        match followed {
            Followed::Succeeded => {
                tracing::info!(
                    aws.request_id = %request_id,
                    aws.account_id = a.account,
                    aws.permission_set_arn = a.permission_set,
                    aws.principal_id = a.principal,
                    "account assignment {} succeeded",
                    op.verb()
                );
                Ok(request_id)
            }
            Followed::Failed(reason) => Err(ProviderError::Permanent(format!(
                "Identity Center could not {} the assignment of {}: {}",
                op.verb(),
                a.describe(who),
                reason.as_deref().unwrap_or("no reason given")
            ))),
            Followed::Pending if request_id.is_empty() => Err(ProviderError::Transient(format!(
                "sso-admin: the {} answer carries no request id to follow",
                op.verb()
            ))),
            Followed::Pending => Err(ProviderError::Transient(format!(
                "account assignment {} `{request_id}` still in progress after {}s",
                op.verb(),
                self.shared.tuning.poll_deadline.as_secs()
            ))),
        }
    }

    /// Follows an asynchronous operation from its first `status`: asks
    /// `describe` again, with growing waits, until the operation ends or
    /// [`super::Tuning::poll_deadline`] would pass. `Pending` at once when
    /// there is no `request_id` to ask about.
    async fn follow<F, Fut>(
        &self,
        mut status: Status,
        request_id: &str,
        describe: F,
    ) -> Result<Followed, CallError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Status, CallError>>,
    {
        let deadline = Instant::now() + self.shared.tuning.poll_deadline;
        let mut wait = self.shared.tuning.poll_initial;
        loop {
            match status {
                Some((StatusValues::Succeeded, _)) => return Ok(Followed::Succeeded),
                Some((StatusValues::Failed, reason)) => return Ok(Followed::Failed(reason)),
                _ => {}
            }
            if request_id.is_empty() || Instant::now() + wait > deadline {
                return Ok(Followed::Pending);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2)
                .min(self.shared.tuning.poll_max)
                .max(Duration::from_millis(1));
            status = match describe().await {
                Ok(s) => s,
                // Not visible yet (eventual consistency): keep polling.
                Err(e) if e.is("ResourceNotFoundException") => None,
                Err(e) => return Err(e),
            };
        }
    }

    /// Who should hold an assignment: Identity Store user id → live grants.
    /// The flag is set when a lookup failed (then nothing may be removed).
    #[expect(
        clippy::too_many_arguments,
        reason = "one pass of reconcile_target, split for length"
    )]
    async fn holders<'g>(
        &self,
        store: &str,
        account: &str,
        names: &[&str],
        label: &str,
        live: &'g [LiveGrant],
        ids: &mut HashMap<String, Option<String>>,
        report: &mut ReconcileReport,
    ) -> (HashMap<String, Vec<&'g LiveGrant>>, bool) {
        let grants: Vec<&LiveGrant> = live
            .iter()
            .filter(|g| names.contains(&g.entitlement.as_str()))
            .collect();
        let mut expected: HashMap<String, Vec<&LiveGrant>> = HashMap::new();
        let mut lookup_failed = false;
        for g in &grants {
            let email = g.grantee.email.as_str();
            let id = match ids.get(email) {
                Some(id) => id.clone(),
                None => match self.user_id(store, email).await {
                    Ok(id) => {
                        ids.insert(email.to_owned(), id.clone());
                        id
                    }
                    Err(e) => {
                        lookup_failed = true;
                        report.unexplained.push(format!(
                            "{label}: cannot look up `{email}` ({e}); nothing removed on account {account}"
                        ));
                        continue;
                    }
                },
            };
            match id {
                Some(id) => expected.entry(id).or_default().push(g),
                None => report.missing.push(format!(
                    "{label}: grant `{}` of `{email}`: no Identity Center user with that user name or email",
                    g.request_id
                )),
            }
        }
        (expected, lookup_failed)
    }

    /// Reconciles the assignments of one (account, permission set).
    async fn reconcile_target(
        &self,
        scope: &Scope<'_>,
        entitlements: &[&Entitlement],
        live: &[LiveGrant],
        ids: &mut HashMap<String, Option<String>>,
        report: &mut ReconcileReport,
    ) {
        let Scope {
            instance,
            store,
            account,
            permission_set,
        } = *scope;
        let names: Vec<&str> = entitlements.iter().map(|e| e.id.as_str()).collect();
        let label = format!("entitlement `{}`", names.join("`, `"));
        let (expected, lookup_failed) = self
            .holders(store, account, &names, &label, live, ids, report)
            .await;
        let listed = match self.list(instance, account, permission_set).await {
            Ok(l) => l,
            Err(e) => {
                report.unexplained.push(format!(
                    "{label}: cannot list assignments of `{permission_set}` on account {account}: {}",
                    e.message
                ));
                return;
            }
        };
        let mut present = HashSet::new();
        for (principal_type, principal) in &listed {
            let a = Assignment {
                account,
                permission_set,
                principal_type: principal_type.clone(),
                principal,
            };
            if *principal_type != PrincipalType::User {
                report.unexplained.push(format!(
                    "{label}: assignment of {} was not made by the broker",
                    a.describe(principal)
                ));
                continue;
            }
            present.insert(principal.as_str());
            let in_flight = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&a.key());
            if expected.contains_key(principal) || in_flight || lookup_failed {
                continue;
            }
            let who = self.user_name(store, principal).await;
            match self.delete(instance, &a, &who).await {
                Ok(()) => {
                    tracing::warn!(
                        aws.account_id = account,
                        aws.permission_set_arn = permission_set,
                        aws.principal_id = %principal,
                        "removed an assignment no live grant explains"
                    );
                    report.removed.push(format!(
                        "{label}: removed assignment of {} (principal `{principal}`): no live grant",
                        a.describe(&who)
                    ));
                }
                Err(e) => report.unexplained.push(format!(
                    "{label}: assignment of {} (principal `{principal}`) has no live grant and could not be removed: {e}",
                    a.describe(&who)
                )),
            }
        }
        for (principal, grants) in &expected {
            if present.contains(principal.as_str()) {
                continue;
            }
            for g in grants {
                report.missing.push(format!(
                    "{label}: grant `{}` of `{}`: no assignment of `{permission_set}` on account {account}",
                    g.request_id, g.grantee.email
                ));
            }
        }
    }

    async fn describe(
        &self,
        op: Op,
        instance: &str,
        request_id: &str,
    ) -> Result<Status, CallError> {
        let status = match op {
            Op::Create => {
                call(
                    &self.shared.tuning,
                    "sso-admin DescribeAccountAssignmentCreationStatus",
                    || {
                        self.sso
                            .describe_account_assignment_creation_status()
                            .instance_arn(instance)
                            .account_assignment_creation_request_id(request_id)
                            .send()
                    },
                )
                .await?
                .account_assignment_creation_status
            }
            Op::Delete => {
                call(
                    &self.shared.tuning,
                    "sso-admin DescribeAccountAssignmentDeletionStatus",
                    || {
                        self.sso
                            .describe_account_assignment_deletion_status()
                            .instance_arn(instance)
                            .account_assignment_deletion_request_id(request_id)
                            .send()
                    },
                )
                .await?
                .account_assignment_deletion_status
            }
        };
        Ok(status.and_then(|s| s.status.map(|v| (v, s.failure_reason))))
    }
}

#[async_trait]
impl GrantProvider for AwsIdentityCenter {
    async fn grant(&self, spec: &GrantSpec<'_>) -> Result<GrantRecord, ProviderError> {
        let (instance, store) = self.instance()?;
        let (account, permission_set) = target(spec.entitlement)?;
        let email = &spec.grantee.email;
        let principal = self.require_user_id(store, email).await?;
        let a = Assignment {
            account,
            permission_set,
            principal_type: PrincipalType::User,
            principal: &principal,
        };
        let details = serde_json::json!({
            "account_id": account,
            "permission_set_arn": permission_set,
            "principal_id": principal,
        });
        if spec.overlapping {
            // Another live grant holds this assignment: do not make a second one.
            let listed = self.list(instance, account, permission_set).await?;
            if listed
                .iter()
                .any(|(t, id)| *t == PrincipalType::User && *id == principal)
            {
                tracing::info!(
                    request.id = %spec.request_id,
                    aws.principal_id = %principal,
                    "assignment already exists for an overlapping grant"
                );
                return Ok(GrantRecord {
                    reference: None,
                    details,
                });
            }
            tracing::warn!(
                request.id = %spec.request_id,
                aws.principal_id = %principal,
                "overlapping grant but the assignment is missing: creating it"
            );
        }
        let request_id = self.create(instance, &a, email).await?;
        Ok(GrantRecord {
            reference: Some(request_id),
            details,
        })
    }

    async fn revoke(&self, spec: &GrantSpec<'_>) -> Result<(), ProviderError> {
        let (instance, store) = self.instance()?;
        let (account, permission_set) = target(spec.entitlement)?;
        let email = &spec.grantee.email;
        let Some(principal) = self.user_id(store, email).await? else {
            // Deleting a user deletes their assignments with it.
            tracing::warn!(request.id = %spec.request_id, "grantee no longer in the identity store");
            return Ok(());
        };
        let a = Assignment {
            account,
            permission_set,
            principal_type: PrincipalType::User,
            principal: &principal,
        };
        self.delete(instance, &a, email).await
    }

    async fn end_sessions(
        &self,
        spec: &GrantSpec<'_>,
    ) -> Result<Option<SessionsEnded>, ProviderError> {
        self.deny_sessions(spec).await
    }

    async fn prune_denies(
        &self,
        entitlement: &Entitlement,
    ) -> Result<Option<Pruned>, ProviderError> {
        self.prune(entitlement).await
    }

    async fn reconcile(
        &self,
        managed: &[Entitlement],
        live: &[LiveGrant],
    ) -> Result<ReconcileReport, ProviderError> {
        let mut report = ReconcileReport::default();
        // Entitlements sharing an (account, permission set) share assignments.
        let mut targets: BTreeMap<(&str, &str), Vec<&Entitlement>> = BTreeMap::new();
        for e in managed.iter().filter(|e| e.kind == Kind::AwsIdentityCenter) {
            match target(e) {
                Ok(t) => targets.entry(t).or_default().push(e),
                Err(err) => report
                    .unexplained
                    .push(format!("entitlement `{}`: {err}", e.id)),
            }
        }
        if targets.is_empty() {
            return Ok(report);
        }
        let (instance, store) = self.instance()?;
        let mut ids: HashMap<String, Option<String>> = HashMap::new();
        for ((account, permission_set), entitlements) in targets {
            let scope = Scope {
                instance,
                store,
                account,
                permission_set,
            };
            self.reconcile_target(&scope, &entitlements, live, &mut ids, &mut report)
                .await;
        }
        Ok(report)
    }
}
