//! `azure_role`: Azure RBAC roles on management groups, subscriptions and
//! resource groups as time-bound *active* PIM assignments, through Azure
//! Resource Manager (`Microsoft.Authorization`, api-version 2020-10-01, the only
//! stable version of the PIM schedule resources: `specs: stable/2020-10-01`).
//!
//! The broker's app needs, at each scope of the catalog (or above it),
//! `Microsoft.Authorization/roleAssignments/write`: User Access Administrator or
//! Owner (REST reference, "Use Azure PIM to manage active access with the REST
//! API"). Reads need `roleAssignments/read`, which every built-in role has. PIM
//! role settings for *active assignments* apply to what the broker sends
//! (`Expiration_Admin_Assignment`, `Enablement_Admin_Assignment`): a grant
//! longer than PIM allows, or without a justification or ticket PIM requires,
//! fails with ARM's reason. docs/deploy.md says how to set them.

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::microsoft::{ApiError, RestClient, Service, Tuning};
use super::{GrantProvider, GrantRecord, GrantSpec, LiveGrant, ProviderError, ReconcileReport};
use crate::clock::Clock;
use crate::config::{AppCredentials, AzureConfig};
use crate::policy::catalog::Entitlement;

mod names;
mod pim;
mod reconcile;

pub use names::AzureNames;

/// The api-version of every call: the stable one of the PIM schedule resources
/// (`specs: Authorization/readme.md`; 2022-04-01 is stable for `roleAssignments`
/// only, later ones are previews).
pub const API_VERSION: &str = "2020-10-01";

/// The broker's Azure Resource Manager client; share one per process (`Arc`).
#[derive(Debug)]
pub struct ArmClient {
    rest: RestClient,
}

impl ArmClient {
    /// A client for `[azure]`, signing in as `app` (`[azure]`'s or `[entra]`'s).
    pub fn new(
        azure: &AzureConfig,
        app: &AppCredentials,
        tuning: Tuning,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            rest: RestClient::new(
                Service::Arm,
                app,
                &azure.arm_url,
                "azure.arm_url",
                tuning,
                clock,
            )?,
        })
    }

    /// The tuning in force.
    pub fn tuning(&self) -> &Tuning {
        self.rest.tuning()
    }

    /// `GET` a path under the ARM base URL.
    async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.rest.call(Method::GET, path, None, &[]).await
    }

    /// `PUT` a JSON body.
    async fn put(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.rest.call(Method::PUT, path, Some(body), &[]).await
    }

    /// `POST` without a body.
    async fn post(&self, path: &str) -> Result<Value, ApiError> {
        self.rest.call(Method::POST, path, None, &[]).await
    }

    /// Every item of a collection, following `nextLink`.
    async fn get_pages<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ApiError> {
        self.rest.get_pages(path, &[]).await
    }
}

/// The `azure_role` provider.
pub struct AzureRole {
    pim: pim::Pim,
}

impl AzureRole {
    /// The provider over a shared client; it teaches `names` what ARM calls things.
    pub fn new(client: Arc<ArmClient>, names: Arc<AzureNames>) -> Self {
        Self {
            pim: pim::Pim { client, names },
        }
    }
}

#[async_trait]
impl GrantProvider for AzureRole {
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
