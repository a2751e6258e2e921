//! Grant providers: every cloud the broker grants access in sits behind
//! [`GrantProvider`]. The scheduler calls them; handlers never do directly.

use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::policy::catalog::{Entitlement, Kind, Target};

#[cfg(feature = "aws")]
pub mod aws;
pub mod azure;
pub mod bundle;
pub mod graph;
pub mod microsoft;
pub mod simulated;

pub use crate::domain::Grantee;

/// One grant to make or remove.
#[derive(Debug, Clone)]
pub struct GrantSpec<'a> {
    /// The request the grant belongs to (its own key).
    pub request_id: Uuid,
    /// The grantee.
    pub grantee: &'a Grantee,
    /// What is granted.
    pub entitlement: &'a Entitlement,
    /// Window start.
    pub starts_at: OffsetDateTime,
    /// Window end.
    pub ends_at: OffsetDateTime,
    /// Requester's reason (PIM `justification`).
    pub justification: &'a str,
    /// Ticket reference (PIM `ticketInfo`).
    pub ticket: Option<&'a str>,
    /// Another live grant already holds the same upstream object
    /// (extend it rather than create it).
    pub overlapping: bool,
    /// Another live grant needs the same upstream object (an extension's): a failed grant
    /// of a bundle keeps what it adopted instead of rolling it back.
    pub held: bool,
}

/// Why a provider call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProviderError {
    /// Worth trying again later (throttling, 5xx, timeouts, PIM's 5-minute rule).
    #[error("{0}")]
    Transient(String),
    /// Final: the grant fails with this reason, shown to the requester.
    #[error("{0}")]
    Permanent(String),
}

/// What the provider made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantRecord {
    /// Provider's reference (assignment request id, PIM request id…), for the audit log.
    pub reference: Option<String>,
    /// Extra facts for the audit event (never secrets).
    pub details: serde_json::Value,
}

/// How a removal ended the sessions the grant had handed out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionsEnded {
    /// Facts for the audit event (what was denied, to whom, issued before
    /// when; a fallback to every session of the target is said here).
    pub details: serde_json::Value,
    /// When the deny can next be pruned (every session it targets has
    /// expired by then): the broker calls [`GrantProvider::prune_denies`].
    pub prune_at: Option<OffsetDateTime>,
}

/// What a pruning pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Deny statements dropped.
    pub pruned: usize,
    /// Deny statements left.
    pub remaining: usize,
    /// When to look again, if any are left.
    pub next: Option<OffsetDateTime>,
}

/// Temporary AWS credentials from STS; never stored by the broker.
pub type AwsCredentials = jit_api::Credentials;

/// A cloud backend that makes and removes grants.
#[async_trait]
pub trait GrantProvider: Send + Sync {
    /// Makes the access exist; returns only when the cloud says it does.
    async fn grant(&self, spec: &GrantSpec<'_>) -> Result<GrantRecord, ProviderError>;

    /// Removes the access. Called only when no other live grant needs the same object.
    async fn revoke(&self, spec: &GrantSpec<'_>) -> Result<(), ProviderError>;

    /// Ends the sessions the grant handed out before now (STS sessions,
    /// Identity Center role sessions), after [`GrantProvider::revoke`]. Called
    /// only when no other live grant explains the same person's sessions.
    /// `None`: the kind has no sessions to end, or is told not to.
    async fn end_sessions(
        &self,
        _spec: &GrantSpec<'_>,
    ) -> Result<Option<SessionsEnded>, ProviderError> {
        Ok(None)
    }

    /// Drops the deny statements of `entitlement`'s target whose sessions
    /// have all expired. `None`: nothing of the broker's is there.
    async fn prune_denies(
        &self,
        _entitlement: &Entitlement,
    ) -> Result<Option<Pruned>, ProviderError> {
        Ok(None)
    }

    /// Mints short-lived credentials (AWS STS entitlements only).
    async fn mint_credentials(
        &self,
        _spec: &GrantSpec<'_>,
        _session_seconds: u64,
    ) -> Result<AwsCredentials, ProviderError> {
        Err(ProviderError::Permanent(
            "this entitlement does not issue credentials".to_owned(),
        ))
    }

    /// A console sign-in URL for a fresh session (AWS STS entitlements only).
    async fn console_url(
        &self,
        _spec: &GrantSpec<'_>,
        _session_seconds: u64,
    ) -> Result<String, ProviderError> {
        Err(ProviderError::Permanent(
            "this entitlement has no console sign-in".to_owned(),
        ))
    }

    /// Compares what exists upstream for the `managed` entitlements of this
    /// provider's kind with the `live` grants the broker holds, removes the
    /// upstream objects that no live grant explains, and reports.
    async fn reconcile(
        &self,
        _managed: &[Entitlement],
        _live: &[LiveGrant],
    ) -> Result<ReconcileReport, ProviderError> {
        Ok(ReconcileReport::default())
    }

    /// True when grants are only recorded, not made.
    fn simulated(&self) -> bool {
        false
    }
}

/// A grant the broker holds as active, for reconciliation.
#[derive(Debug, Clone)]
pub struct LiveGrant {
    /// Request id.
    pub request_id: Uuid,
    /// Entitlement id.
    pub entitlement: String,
    /// Who holds it.
    pub grantee: Grantee,
    /// Window end.
    pub ends_at: OffsetDateTime,
}

/// What a reconciliation pass found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Upstream objects removed because no live grant explains them (human descriptions).
    pub removed: Vec<String>,
    /// Upstream objects found that could not be explained nor removed (granted out of band, …).
    pub unexplained: Vec<String>,
    /// Live grants whose upstream object is missing.
    pub missing: Vec<String>,
}

/// Ends every session of an AWS role issued before a time (the documented
/// `aws:TokenIssueTime` deny), for "revoke all sessions".
#[async_trait]
pub trait SessionRevoker: Send + Sync {
    /// Denies sessions of `role_arn` issued before `before`.
    async fn revoke_all_sessions(
        &self,
        role_arn: &str,
        before: OffsetDateTime,
    ) -> Result<(), ProviderError>;
}

#[cfg(feature = "aws")]
#[async_trait]
impl SessionRevoker for aws::AwsRole {
    async fn revoke_all_sessions(
        &self,
        role_arn: &str,
        before: OffsetDateTime,
    ) -> Result<(), ProviderError> {
        aws::AwsRole::revoke_all_sessions(self, role_arn, before).await
    }
}

/// Real providers for what the configuration sets up (`[aws]`, `[entra]`, `[azure]`);
/// simulated for the rest, which only development mode accepts. Also returns
/// the Graph client, which serves group-overage lookups at sign-in.
#[cfg_attr(
    not(feature = "aws"),
    expect(clippy::unused_async, reason = "only the AWS set-up awaits")
)]
pub async fn from_config(
    config: &crate::config::Config,
    clock: Arc<dyn crate::clock::Clock>,
) -> anyhow::Result<(Providers, Option<Arc<graph::GraphClient>>)> {
    let mut providers = Providers::simulated();
    #[cfg(feature = "aws")]
    if let Some(aws_cfg) = &config.aws {
        let aws = aws::AwsProviders::from_config(aws_cfg, &config.server.public_url).await;
        providers = aws.install(providers);
        providers.session_revoker = Some(aws.role.clone());
    }
    #[cfg(not(feature = "aws"))]
    if config.aws.is_some() {
        anyhow::bail!(
            "config: `aws`: this jit-server was built without AWS support (cargo feature `aws`)"
        );
    }
    let mut graph_client = None;
    if let Some(entra) = &config.entra {
        let client = Arc::new(
            graph::GraphClient::with_options(entra, graph::Tuning::default(), clock.clone())
                .map_err(|e| anyhow::anyhow!("config: `entra`: {e}"))?,
        );
        providers = providers
            .with(
                Kind::EntraRole,
                Arc::new(graph::EntraRole::new(client.clone())),
            )
            .with(
                Kind::EntraGroup,
                Arc::new(graph::EntraGroup::new(client.clone())),
            );
        graph_client = Some(client);
    }
    if let Some((azure, app)) = config.azure_app()? {
        let client = azure::ArmClient::new(azure, &app, graph::Tuning::default(), clock)
            .map_err(|e| anyhow::anyhow!("config: `azure`: {e}"))?;
        let names = providers.azure_names.clone();
        providers = providers.with(
            Kind::AzureRole,
            Arc::new(azure::AzureRole::new(Arc::new(client), names)),
        );
    }
    Ok((providers, graph_client))
}

/// The provider for each kind.
#[derive(Clone)]
pub struct Providers {
    aws_role: Arc<dyn GrantProvider>,
    aws_identity_center: Arc<dyn GrantProvider>,
    entra_role: Arc<dyn GrantProvider>,
    entra_group: Arc<dyn GrantProvider>,
    azure_role: Arc<dyn GrantProvider>,
    /// Bundles, over the providers above.
    bundle: Arc<dyn GrantProvider>,
    /// "Revoke all sessions" of AWS roles, when `[aws]` is configured.
    pub session_revoker: Option<Arc<dyn SessionRevoker>>,
    /// What ARM calls Azure scopes and roles, as far as the broker has seen.
    pub azure_names: Arc<azure::AzureNames>,
}

impl Providers {
    /// Every kind simulated (development mode without backends).
    pub fn simulated() -> Self {
        let sim: Arc<dyn GrantProvider> = Arc::new(simulated::Simulated);
        Self {
            aws_role: sim.clone(),
            aws_identity_center: sim.clone(),
            entra_role: sim.clone(),
            entra_group: sim.clone(),
            azure_role: sim.clone(),
            bundle: sim,
            session_revoker: None,
            azure_names: Arc::default(),
        }
        .with_bundles()
    }

    /// Bundles over the current member providers.
    fn with_bundles(mut self) -> Self {
        self.bundle = Arc::new(bundle::Bundle::new(self.clone()));
        self
    }

    /// Whether a grant of `entitlement` is only recorded (for a bundle: all its members are).
    pub fn simulates(&self, entitlement: &Entitlement) -> bool {
        entitlement
            .members()
            .iter()
            .all(|m| self.get(m.kind).simulated())
    }

    /// Replaces the provider of one member kind; bundles are then made over the new set.
    /// A bundle's provider is always the one over the member providers: `Kind::Bundle`
    /// replaces nothing.
    #[must_use]
    pub fn with(mut self, kind: Kind, provider: Arc<dyn GrantProvider>) -> Self {
        match kind {
            Kind::AwsRole => self.aws_role = provider,
            Kind::AwsIdentityCenter => self.aws_identity_center = provider,
            Kind::EntraRole => self.entra_role = provider,
            Kind::EntraGroup => self.entra_group = provider,
            Kind::AzureRole => self.azure_role = provider,
            Kind::Bundle => {}
        }
        self.with_bundles()
    }

    /// What an entitlement grants, in words: `role arn:…`, `Contributor at
    /// subscription “Production” (…)` (Azure scopes and roles by the names ARM
    /// gave the broker so far, else by id).
    pub fn describe(&self, entitlement: &Entitlement) -> String {
        match &entitlement.target {
            Target::AwsRole { role_arn, .. } => format!("role {role_arn}"),
            Target::AwsIdentityCenter {
                account_id,
                permission_set_arn,
                ..
            } => format!("permission set {permission_set_arn} in account {account_id}"),
            Target::EntraRole {
                role_definition_id,
                directory_scope_id,
            } if directory_scope_id == "/" => {
                format!("directory role {role_definition_id} in the whole directory")
            }
            Target::EntraRole {
                role_definition_id,
                directory_scope_id,
            } => format!("directory role {role_definition_id} at {directory_scope_id}"),
            Target::EntraGroup {
                group_id,
                access_id,
            } => format!("{access_id} of group {group_id}"),
            Target::AzureRole {
                scope,
                role_definition,
                condition,
            } => {
                let words = self.azure_names.describe(role_definition, scope);
                if condition.is_some() {
                    format!("{words}, under a condition")
                } else {
                    words
                }
            }
            Target::Bundle { members } => members
                .iter()
                .map(|m| format!("{} ({})", m.id, self.describe(m)))
                .collect::<Vec<_>>()
                .join(" + "),
        }
    }

    /// The provider of a kind.
    pub fn get(&self, kind: Kind) -> &dyn GrantProvider {
        match kind {
            Kind::AwsRole => self.aws_role.as_ref(),
            Kind::AwsIdentityCenter => self.aws_identity_center.as_ref(),
            Kind::EntraRole => self.entra_role.as_ref(),
            Kind::EntraGroup => self.entra_group.as_ref(),
            Kind::AzureRole => self.azure_role.as_ref(),
            Kind::Bundle => self.bundle.as_ref(),
        }
    }
}
