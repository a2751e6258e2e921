//! Microsoft Graph: the Entra PIM grant providers ([`EntraRole`], [`EntraGroup`])
//! and the client they share ([`GraphClient`]), which also resolves a user's
//! groups when a token overflows its `groups` claim.
//!
//! Application permissions the broker's app needs (admin consent):
//! `RoleAssignmentSchedule.ReadWrite.Directory` (`entra_role`: assign, extend,
//! remove, list instances), `PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup`
//! (`entra_group`), and `User.Read.All` or `GroupMember.Read.All` (group overage).
//! PIM role settings decide the rest: the longest active assignment
//! (`ExpirationRule`), whether a justification or ticket is required, and PIM's
//! own approval, which must be off for roles the broker grants (the broker
//! approves; a request PIM holds for approval is cancelled and the grant fails).

use std::sync::Arc;

use async_trait::async_trait;

use super::{GrantProvider, GrantRecord, GrantSpec, LiveGrant, ProviderError, ReconcileReport};
use crate::policy::catalog::{Entitlement, Kind};

mod client;
mod pim;
mod reconcile;

pub use client::{GraphClient, GraphError};
pub use pim::TICKET_SYSTEM;

pub use super::microsoft::Tuning;

/// `entra_role`: PIM active assignments of a directory role.
pub struct EntraRole {
    pim: pim::Pim,
}

impl EntraRole {
    /// The provider over a shared client.
    pub fn new(client: Arc<GraphClient>) -> Self {
        Self {
            pim: pim::Pim {
                client,
                kind: Kind::EntraRole,
            },
        }
    }
}

/// `entra_group`: PIM for Groups active membership or ownership.
pub struct EntraGroup {
    pim: pim::Pim,
}

impl EntraGroup {
    /// The provider over a shared client.
    pub fn new(client: Arc<GraphClient>) -> Self {
        Self {
            pim: pim::Pim {
                client,
                kind: Kind::EntraGroup,
            },
        }
    }
}

#[async_trait]
impl GrantProvider for EntraRole {
    async fn grant(&self, spec: &GrantSpec<'_>) -> Result<GrantRecord, ProviderError> {
        self.pim.grant(spec).await
    }

    async fn revoke(&self, spec: &GrantSpec<'_>) -> Result<(), ProviderError> {
        self.pim.revoke(spec).await
    }

    async fn reconcile(
        &self,
        managed: &[Entitlement],
        live: &[LiveGrant],
    ) -> Result<ReconcileReport, ProviderError> {
        self.pim.reconcile(managed, live).await
    }
}

#[async_trait]
impl GrantProvider for EntraGroup {
    async fn grant(&self, spec: &GrantSpec<'_>) -> Result<GrantRecord, ProviderError> {
        self.pim.grant(spec).await
    }

    async fn revoke(&self, spec: &GrantSpec<'_>) -> Result<(), ProviderError> {
        self.pim.revoke(spec).await
    }

    async fn reconcile(
        &self,
        managed: &[Entitlement],
        live: &[LiveGrant],
    ) -> Result<ReconcileReport, ProviderError> {
        self.pim.reconcile(managed, live).await
    }
}

#[async_trait::async_trait]
impl crate::identity::GroupResolver for GraphClient {
    async fn user_groups(
        &self,
        oid: &str,
    ) -> Result<Vec<String>, crate::identity::GroupLookupError> {
        GraphClient::user_groups(self, oid)
            .await
            .map_err(|e| crate::identity::GroupLookupError(e.to_string()))
    }
}
