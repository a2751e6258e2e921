//! ARM scopes and role definition ids, as the fake parses them.
//!
//! Scope forms (`rest: privileged-role-assignment-rest-sample`, scope table):
//! `/providers/Microsoft.Management/managementGroups/{id}`, `/subscriptions/{id}`
//! (also `/providers/Microsoft.Subscription/subscriptions/{id}`, the form of the
//! spec examples), `/subscriptions/{id}/resourceGroups/{name}`. Segment names
//! are case-insensitive, as everywhere in ARM.

use crate::graph_fake::checks::is_guid;

/// One scope the fake serves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A management group (its id, not a GUID in general).
    ManagementGroup(String),
    /// A subscription (GUID, lowercase).
    Subscription(String),
    /// A resource group: subscription (lowercase) and name (as written).
    ResourceGroup(String, String),
}

/// ARM's rule for management group ids and resource group names: 1 to 90
/// letters, digits, `-`, `_`, `.`, `(`, `)`, not ending with `.`.
fn is_arm_name(name: &str) -> bool {
    (1..=90).contains(&name.len())
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
}

impl Scope {
    /// The scope of a request path (the part before `/providers/Microsoft.Authorization/`).
    pub fn parse(path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        match lower.as_slice() {
            ["providers", "microsoft.management", "managementgroups", _] => {
                let id = segments[3];
                is_arm_name(id).then(|| Self::ManagementGroup(id.to_owned()))
            }
            ["subscriptions", sub]
            | ["providers", "microsoft.subscription", "subscriptions", sub] => {
                is_guid(sub).then(|| Self::Subscription((*sub).to_owned()))
            }
            ["subscriptions", sub, "resourcegroups", _] => {
                let name = segments[3];
                (is_guid(sub) && is_arm_name(name))
                    .then(|| Self::ResourceGroup((*sub).to_owned(), name.to_owned()))
            }
            _ => None,
        }
    }

    /// The form ARM answers with.
    pub fn id(&self) -> String {
        match self {
            Self::ManagementGroup(mg) => {
                format!("/providers/Microsoft.Management/managementGroups/{mg}")
            }
            Self::Subscription(sub) => format!("/subscriptions/{sub}"),
            Self::ResourceGroup(sub, rg) => format!("/subscriptions/{sub}/resourceGroups/{rg}"),
        }
    }

    /// `expandedProperties.scope.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ManagementGroup(_) => "managementgroup",
            Self::Subscription(_) => "subscription",
            Self::ResourceGroup(..) => "resourcegroup",
        }
    }

    /// Same scope (names compare case-insensitively).
    pub fn same(&self, other: &Self) -> bool {
        self.id().eq_ignore_ascii_case(&other.id())
    }

    /// The subscription this scope is in.
    pub fn subscription(&self) -> Option<&str> {
        match self {
            Self::ManagementGroup(_) => None,
            Self::Subscription(sub) | Self::ResourceGroup(sub, _) => Some(sub),
        }
    }

    /// This scope and those above it; `mg_of` places subscriptions in management groups.
    pub fn with_ancestors(&self, mg_of: impl Fn(&str) -> Option<String>) -> Vec<Self> {
        let mut out = vec![self.clone()];
        if let Self::ResourceGroup(sub, _) = self {
            out.push(Self::Subscription(sub.clone()));
        }
        if let Some(mg) = self.subscription().and_then(&mg_of) {
            out.push(Self::ManagementGroup(mg));
        }
        out
    }

    /// A role definition id as ARM accepts it at this scope, reduced to its
    /// GUID. The broker writes the subscription-qualified form at subscription
    /// and resource group scope (every Microsoft sample) and the tenant form at
    /// management group scope (Terraform's management group example); the fake
    /// also takes the tenant form anywhere and the management-group-qualified
    /// form at its own group. Another subscription's or group's id is refused.
    pub fn role_definition(&self, id: &str) -> Result<String, String> {
        const TAIL: &str = "/providers/microsoft.authorization/roledefinitions/";
        let lower = id.to_ascii_lowercase();
        let Some(at) = lower.rfind(TAIL) else {
            return Err(format!(
                "`roleDefinitionId` `{id}` does not end with `/providers/Microsoft.Authorization/roleDefinitions/{{guid}}`"
            ));
        };
        let guid = &lower[at + TAIL.len()..];
        if !is_guid(guid) {
            return Err(format!(
                "`roleDefinitionId` `{id}` does not end with a GUID"
            ));
        }
        let prefix = &lower[..at];
        let valid = prefix.is_empty()
            || match self {
                Self::ManagementGroup(mg) => {
                    prefix
                        == format!(
                            "/providers/microsoft.management/managementgroups/{}",
                            mg.to_ascii_lowercase()
                        )
                }
                Self::Subscription(sub) | Self::ResourceGroup(sub, _) => {
                    prefix == format!("/subscriptions/{sub}")
                }
            };
        if valid {
            Ok(guid.to_owned())
        } else {
            Err(format!(
                "The role definition ID '{id}' is not valid at scope '{}'.",
                self.id()
            ))
        }
    }

    /// The role definition id ARM echoes at this scope.
    pub fn role_definition_id(&self, guid: &str) -> String {
        match self.subscription() {
            Some(sub) => {
                format!(
                    "/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
                )
            }
            None => format!("/providers/Microsoft.Authorization/roleDefinitions/{guid}"),
        }
    }
}
