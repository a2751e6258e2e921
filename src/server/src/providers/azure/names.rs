//! Display names of Azure scopes and role definitions, learned from what ARM
//! answers (`expandedProperties.scope.displayName` and
//! `expandedProperties.roleDefinition.displayName` of schedule requests and
//! instances, 2020-10-01 spec examples), so that pages and messages can say
//! "Contributor at subscription “Production”" instead of two GUIDs.

use std::collections::HashMap;
use std::sync::RwLock;

use serde_json::Value;

use crate::policy::azure::AzureScope;

/// Built-in roles, whose ids are the same in every tenant.
const BUILT_IN: &[(&str, &str)] = &[
    ("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "Owner"),
    ("b24988ac-6180-42a0-ab88-20f7382dd24c", "Contributor"),
    ("acdd72a7-3385-48ef-bd42-f606fba81ae7", "Reader"),
    (
        "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        "User Access Administrator",
    ),
    (
        "00482a5a-887f-4fb3-b363-3b7fe8e74483",
        "Key Vault Administrator",
    ),
];

/// Names seen so far; shared by the provider (which learns) and the pages (which read).
#[derive(Debug, Default)]
pub struct AzureNames {
    scopes: RwLock<HashMap<String, String>>,
    roles: RwLock<HashMap<String, String>>,
}

impl AzureNames {
    /// The display name of a scope, once ARM has named it.
    pub fn scope(&self, scope: &AzureScope) -> Option<String> {
        self.scopes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&scope.id().to_ascii_lowercase())
            .cloned()
    }

    /// The name of a role definition: as ARM named it, else a built-in's.
    pub fn role(&self, guid: &str) -> Option<String> {
        let guid = guid.to_ascii_lowercase();
        self.roles
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&guid)
            .cloned()
            .or_else(|| {
                BUILT_IN
                    .iter()
                    .find(|(id, _)| *id == guid)
                    .map(|(_, name)| (*name).to_owned())
            })
    }

    /// Learns from an object's `expandedProperties` (request or instance `properties`).
    pub fn learn(&self, properties: &Value) {
        let expanded = &properties["expandedProperties"];
        let text = |v: &Value| {
            v.as_str()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.len() <= 256)
                .map(str::to_owned)
        };
        if let (Some(id), Some(name)) = (
            text(&expanded["scope"]["id"]),
            text(&expanded["scope"]["displayName"]),
        ) {
            self.scopes
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(id.trim_end_matches('/').to_ascii_lowercase(), name);
        }
        if let (Some(id), Some(name)) = (
            text(&expanded["roleDefinition"]["id"]),
            text(&expanded["roleDefinition"]["displayName"]),
        ) && let Some(guid) = id.rsplit('/').next()
        {
            self.roles
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(guid.to_ascii_lowercase(), name);
        }
    }

    /// A role at a scope in words: `Contributor at subscription “Production” (38ab…)`.
    pub fn describe(&self, role: &str, scope: &AzureScope) -> String {
        let role = self.role(role).unwrap_or_else(|| format!("role {role}"));
        format!("{role} at {}", scope.describe(&|s| self.scope(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_names_from_expanded_properties() {
        let names = AzureNames::default();
        let sub = AzureScope::Subscription("38ab2ccc-3747-4567-b36b-9478f5602f0d".to_owned());
        let custom = "11111111-2222-3333-4444-555555555555";
        assert_eq!(
            names.describe(custom, &sub),
            format!("role {custom} at subscription 38ab2ccc-3747-4567-b36b-9478f5602f0d")
        );
        assert_eq!(
            names
                .role("B24988AC-6180-42A0-AB88-20F7382DD24C")
                .as_deref(),
            Some("Contributor")
        );
        names.learn(&serde_json::json!({ "expandedProperties": {
            "scope": { "id": "/subscriptions/38AB2CCC-3747-4567-B36B-9478F5602F0D", "displayName": "Pay-As-You-Go", "type": "subscription" },
            "roleDefinition": { "id": format!("/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/{custom}"), "displayName": "App Operator" },
        }}));
        assert_eq!(
            names.describe(custom, &sub),
            "App Operator at subscription “Pay-As-You-Go” (38ab2ccc-3747-4567-b36b-9478f5602f0d)"
        );
        names.learn(&serde_json::json!({}));
    }
}
