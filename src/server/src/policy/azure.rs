//! Azure resource scopes and role definition ids, as the catalog takes them for
//! `azure_role` entitlements and as the broker writes them to Azure Resource
//! Manager.
//!
//! Scope forms (REST reference, "Use Azure PIM to manage active access with the
//! REST API", scope table): `/providers/Microsoft.Management/managementGroups/{id}`,
//! `/subscriptions/{id}`, `/subscriptions/{id}/resourceGroups/{name}`. Role
//! definition ids: the broker writes the subscription-qualified form
//! (`/subscriptions/{id}/providers/Microsoft.Authorization/roleDefinitions/{guid}`)
//! at subscription and resource group scope, as every Microsoft sample does, and
//! the tenant form (`/providers/Microsoft.Authorization/roleDefinitions/{guid}`) at
//! management group scope, as Terraform's management group example does. Whether
//! ARM also takes the management-group-qualified form is unconfirmed, so the
//! catalog's id is reduced to its GUID and written in the confirmed form.

use std::fmt;

/// Where an `azure_role` is granted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AzureScope {
    /// A management group, by id.
    ManagementGroup(String),
    /// A subscription, by id (a GUID, lowercase).
    Subscription(String),
    /// A resource group of a subscription.
    ResourceGroup {
        /// Subscription id (lowercase).
        subscription: String,
        /// Resource group name.
        name: String,
    },
}

const ROLE_DEFINITIONS: &str = "/providers/Microsoft.Authorization/roleDefinitions/";

/// `8-4-4-4-12` hex digits.
pub fn is_guid(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok_and(|_| s.len() == 36)
}

/// ARM's rule for management group ids and resource group names: 1 to 90
/// letters, digits, `-`, `_`, `.`, `(` and `)`, not ending with `.`.
fn is_arm_name(name: &str) -> bool {
    (1..=90).contains(&name.chars().count())
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
}

impl AzureScope {
    /// Parses one of the three forms; segment names are case-insensitive (as
    /// in ARM) and written back in their documented case.
    pub fn parse(value: &str) -> Result<Self, String> {
        let expected = "is not `/providers/Microsoft.Management/managementGroups/{id}`, `/subscriptions/{id}` or `/subscriptions/{id}/resourceGroups/{name}`";
        let segments: Vec<&str> = value
            .strip_prefix('/')
            .map(|rest| rest.split('/').collect())
            .unwrap_or_default();
        let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        let scope = match lower.as_slice() {
            ["providers", "microsoft.management", "managementgroups", _] => {
                let id = segments[3];
                if !is_arm_name(id) {
                    return Err(format!(
                        "management group id `{id}` must be 1-90 letters, digits, `-`, `_`, `.`, `(` or `)`, not ending with `.`"
                    ));
                }
                Self::ManagementGroup(id.to_owned())
            }
            ["subscriptions", sub] => {
                if !is_guid(sub) {
                    return Err(format!("subscription id `{}` is not a GUID", segments[1]));
                }
                Self::Subscription((*sub).to_owned())
            }
            ["subscriptions", sub, "resourcegroups", _] => {
                if !is_guid(sub) {
                    return Err(format!("subscription id `{}` is not a GUID", segments[1]));
                }
                let name = segments[3];
                if !is_arm_name(name) {
                    return Err(format!(
                        "resource group name `{name}` must be 1-90 letters, digits, `-`, `_`, `.`, `(` or `)`, not ending with `.`"
                    ));
                }
                Self::ResourceGroup {
                    subscription: (*sub).to_owned(),
                    name: name.to_owned(),
                }
            }
            _ => return Err(format!("`{value}` {expected}")),
        };
        Ok(scope)
    }

    /// The scope as ARM writes it.
    pub fn id(&self) -> String {
        match self {
            Self::ManagementGroup(mg) => {
                format!("/providers/Microsoft.Management/managementGroups/{mg}")
            }
            Self::Subscription(sub) => format!("/subscriptions/{sub}"),
            Self::ResourceGroup { subscription, name } => {
                format!("/subscriptions/{subscription}/resourceGroups/{name}")
            }
        }
    }

    /// The subscription the scope lies in (none for a management group).
    pub fn subscription(&self) -> Option<&str> {
        match self {
            Self::ManagementGroup(_) => None,
            Self::Subscription(sub)
            | Self::ResourceGroup {
                subscription: sub, ..
            } => Some(sub),
        }
    }

    /// Same scope as an id ARM answered with (case-insensitive).
    pub fn is(&self, id: &str) -> bool {
        let id = id.trim_end_matches('/');
        self.id().eq_ignore_ascii_case(id)
            // The form of the spec examples; answers carry `/subscriptions/{id}`.
            || matches!(self, Self::Subscription(sub)
                if id.eq_ignore_ascii_case(&format!("/providers/Microsoft.Subscription/subscriptions/{sub}")))
    }

    /// The full role definition id the broker writes at this scope.
    pub fn role_definition_id(&self, guid: &str) -> String {
        match self.subscription() {
            Some(sub) => format!("/subscriptions/{sub}{ROLE_DEFINITIONS}{guid}"),
            None => format!("{ROLE_DEFINITIONS}{guid}"),
        }
    }

    /// What kind of scope, in words.
    pub fn kind_words(&self) -> &'static str {
        match self {
            Self::ManagementGroup(_) => "management group",
            Self::Subscription(_) => "subscription",
            Self::ResourceGroup { .. } => "resource group",
        }
    }

    /// The scope in words, with ARM's display names where the broker has seen
    /// them (`name_of`): `subscription “Production” (38ab…)`,
    /// `management group mg-platform`, `resource group rg-app in subscription 38ab…`.
    pub fn describe(&self, name_of: &dyn Fn(&AzureScope) -> Option<String>) -> String {
        let named = |scope: &AzureScope, id: &str| {
            let kind = scope.kind_words();
            match name_of(scope).filter(|n| !n.trim().is_empty() && !n.eq_ignore_ascii_case(id)) {
                Some(shown) => format!("{kind} “{shown}” ({id})"),
                None => format!("{kind} {id}"),
            }
        };
        match self {
            Self::ManagementGroup(id) | Self::Subscription(id) => named(self, id),
            Self::ResourceGroup { subscription, name } => format!(
                "resource group {name} in {}",
                named(&Self::Subscription(subscription.clone()), subscription)
            ),
        }
    }
}

impl fmt::Display for AzureScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

/// A catalog's `role_definition_id`, a GUID or a full id, reduced to its GUID
/// (lowercase). A full id must be valid at `scope`: the tenant form anywhere,
/// the subscription-qualified form of the scope's own subscription, the
/// management-group-qualified form of the scope's own group.
pub fn role_definition_guid(value: &str, scope: &AzureScope) -> Result<String, String> {
    if is_guid(value) {
        return Ok(value.to_ascii_lowercase());
    }
    let lower = value.to_ascii_lowercase();
    let tail = ROLE_DEFINITIONS.to_ascii_lowercase();
    let not_an_id = || {
        format!(
            "`role_definition_id` `{value}` is neither a GUID nor `…/providers/Microsoft.Authorization/roleDefinitions/{{guid}}`"
        )
    };
    let at = lower.rfind(&tail).ok_or_else(not_an_id)?;
    let guid = &lower[at + tail.len()..];
    if !is_guid(guid) {
        return Err(not_an_id());
    }
    let prefix = &lower[..at];
    let valid = prefix.is_empty()
        || match scope {
            AzureScope::ManagementGroup(mg) => {
                prefix
                    == format!(
                        "/providers/microsoft.management/managementgroups/{}",
                        mg.to_ascii_lowercase()
                    )
            }
            AzureScope::Subscription(sub)
            | AzureScope::ResourceGroup {
                subscription: sub, ..
            } => prefix == format!("/subscriptions/{sub}"),
        };
    if valid {
        Ok(guid.to_owned())
    } else {
        Err(format!(
            "`role_definition_id` `{value}` is not valid at scope `{scope}`: use the GUID, the tenant form `{ROLE_DEFINITIONS}{guid}` or the id of the scope's own {}",
            if scope.subscription().is_some() {
                "subscription"
            } else {
                "management group"
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "38ab2ccc-3747-4567-b36b-9478f5602f0d";
    const ROLE: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";

    #[test]
    fn parses_the_three_forms() {
        let mg = AzureScope::parse("/providers/microsoft.management/MANAGEMENTGROUPS/mg-platform")
            .unwrap();
        assert_eq!(
            mg.id(),
            "/providers/Microsoft.Management/managementGroups/mg-platform"
        );
        let sub = AzureScope::parse(&format!("/Subscriptions/{}", SUB.to_uppercase())).unwrap();
        assert_eq!(sub.id(), format!("/subscriptions/{SUB}"));
        let rg =
            AzureScope::parse(&format!("/subscriptions/{SUB}/resourcegroups/rg-app(1)")).unwrap();
        assert_eq!(
            rg.id(),
            format!("/subscriptions/{SUB}/resourceGroups/rg-app(1)")
        );
        assert!(rg.is(&format!("/SUBSCRIPTIONS/{SUB}/resourceGroups/RG-APP(1)")));
        assert!(sub.is(&format!(
            "/providers/Microsoft.Subscription/subscriptions/{SUB}"
        )));
        for bad in [
            "",
            "/",
            "subscriptions/x",
            "/subscriptions/not-a-guid",
            &format!("/subscriptions/{SUB}/"),
            &format!("/subscriptions/{SUB}/resourceGroups/rg."),
            &format!("/subscriptions/{SUB}/resourceGroups/a b"),
            &format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
            ),
            "/providers/Microsoft.Management/managementGroups/",
            "/tenants/x",
        ] {
            assert!(AzureScope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn role_definitions_are_reduced_to_their_guid_and_written_per_scope() {
        let sub = AzureScope::Subscription(SUB.to_owned());
        let mg = AzureScope::ManagementGroup("mg-platform".to_owned());
        assert_eq!(
            role_definition_guid(&ROLE.to_uppercase(), &sub).unwrap(),
            ROLE
        );
        let full = format!(
            "/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{ROLE}"
        );
        assert_eq!(role_definition_guid(&full, &sub).unwrap(), ROLE);
        let rg = AzureScope::parse(&format!("/subscriptions/{SUB}/resourceGroups/rg")).unwrap();
        assert_eq!(role_definition_guid(&full, &rg).unwrap(), ROLE);
        // Another subscription's id, or a subscription's id at a management group: refused.
        let other = full.replace("38ab2ccc", "48ab2ccc");
        assert!(
            role_definition_guid(&other, &sub)
                .unwrap_err()
                .contains("not valid at scope")
        );
        assert!(role_definition_guid(&full, &mg).is_err());
        let tenant = format!("/providers/Microsoft.Authorization/roleDefinitions/{ROLE}");
        assert_eq!(role_definition_guid(&tenant, &mg).unwrap(), ROLE);
        let mg_form =
            format!("/providers/Microsoft.Management/managementGroups/MG-Platform{tenant}");
        assert_eq!(role_definition_guid(&mg_form, &mg).unwrap(), ROLE);
        assert!(role_definition_guid("Contributor", &sub).is_err());
        assert_eq!(sub.role_definition_id(ROLE), full);
        assert_eq!(mg.role_definition_id(ROLE), tenant);
        assert_eq!(rg.role_definition_id(ROLE), full);
    }

    #[test]
    fn scopes_in_words() {
        let none = |_: &AzureScope| None;
        let names = |s: &AzureScope| match s {
            AzureScope::Subscription(_) => Some("Production".to_owned()),
            AzureScope::ManagementGroup(id) => Some(id.clone()),
            AzureScope::ResourceGroup { .. } => None,
        };
        let sub = AzureScope::Subscription(SUB.to_owned());
        assert_eq!(sub.describe(&none), format!("subscription {SUB}"));
        assert_eq!(
            sub.describe(&names),
            format!("subscription “Production” ({SUB})")
        );
        let mg = AzureScope::ManagementGroup("mg-platform".to_owned());
        assert_eq!(mg.describe(&names), "management group mg-platform");
        let rg = AzureScope::parse(&format!("/subscriptions/{SUB}/resourceGroups/rg-app")).unwrap();
        assert_eq!(
            rg.describe(&none),
            format!("resource group rg-app in subscription {SUB}")
        );
        assert_eq!(
            rg.describe(&names),
            format!("resource group rg-app in subscription “Production” ({SUB})")
        );
    }
}
