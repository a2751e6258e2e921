//! The broker's Microsoft Graph v1.0 client: the shared [`RestClient`] at the
//! Graph base URL, and the group-overage lookup.

use std::sync::Arc;

use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::clock::{Clock, SystemClock};
use crate::config::EntraConfig;
use crate::providers::microsoft::{ApiError, RestClient, Service, Tuning, encode};

/// A failed Graph or token call.
pub type GraphError = ApiError;

/// The broker's Microsoft Graph client; share one per process (`Arc`).
#[derive(Debug)]
pub struct GraphClient {
    rest: RestClient,
}

impl GraphClient {
    /// A client for `[entra]` with default tuning and the system clock.
    pub fn new(config: &EntraConfig) -> Result<Self, GraphError> {
        Self::with_options(config, Tuning::default(), Arc::new(SystemClock))
    }

    /// A client with explicit tuning and clock (tests).
    pub fn with_options(
        config: &EntraConfig,
        tuning: Tuning,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, GraphError> {
        Ok(Self {
            rest: RestClient::new(
                Service::Graph,
                &config.app(),
                &config.graph_url,
                "entra.graph_url",
                tuning,
                clock,
            )?,
        })
    }

    /// The tuning in force.
    pub fn tuning(&self) -> &Tuning {
        self.rest.tuning()
    }

    /// The broker's clock.
    pub(crate) fn now(&self) -> time::OffsetDateTime {
        self.rest.now()
    }

    /// An error about an answer that does not fit the documented shape.
    pub(crate) fn decode_error(&self, message: String) -> GraphError {
        self.rest.decode_error(message)
    }

    /// Ids of the groups `oid` is a member of, directly or transitively (the
    /// group-overage fallback when a token carries no `groups` claim).
    pub async fn user_groups(&self, oid: &str) -> Result<Vec<String>, GraphError> {
        #[derive(Deserialize)]
        struct Group {
            id: String,
        }
        let path = format!(
            "/users/{}/transitiveMemberOf/microsoft.graph.group?$select=id,displayName&$top=999&$count=true",
            encode(oid)
        );
        // OData cast needs `ConsistencyLevel: eventual` and `$count` (documented),
        // resent on every page.
        let groups: Vec<Group> = self
            .get_pages(&path, &[("ConsistencyLevel", "eventual")])
            .await?;
        Ok(groups.into_iter().map(|g| g.id).collect())
    }

    /// `GET` a path under the Graph base URL (or an absolute Graph URL).
    pub(crate) async fn get(&self, path: &str) -> Result<Value, GraphError> {
        self.rest.call(Method::GET, path, None, &[]).await
    }

    /// `POST` a JSON body to a path under the Graph base URL.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value, GraphError> {
        self.rest.call(Method::POST, path, Some(body), &[]).await
    }

    /// Every item of a collection, following `@odata.nextLink`.
    pub(crate) async fn get_pages<T: DeserializeOwned>(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Vec<T>, GraphError> {
        self.rest.get_pages(path, headers).await
    }
}
