//! Drift reconciliation for `azure_role`: the active assignments at each
//! managed scope (`roleAssignmentScheduleInstances?$filter=atScope()`, which
//! also lists those above the scope; only the scope's own count) of the managed
//! role definitions, against the broker's live grants. PIM's own schedule ends
//! assignments; this is what checks that it did, removes time-bound ones no
//! live grant explains, and reports permanent ones: a standing Owner defeats
//! just-in-time access, and the broker never removes what it cannot tell was
//! meant to be temporary.

use std::collections::{BTreeMap, BTreeSet};

use super::pim::{AzureTarget, Instance, Pim};
use crate::policy::azure::AzureScope;
use crate::policy::catalog::Entitlement;
use crate::providers::microsoft::drift::{self, Drift, RECONCILE_JUSTIFICATION};
use crate::providers::{LiveGrant, ProviderError, ReconcileReport};

impl Pim {
    /// Removes time-bound, administrator-made, direct assignments of managed
    /// roles at managed scopes that no live grant explains; reports the rest
    /// (permanent, self-activated, through a group, over-long) and live grants
    /// whose assignment is missing.
    pub(crate) async fn reconcile(
        &self,
        managed: &[Entitlement],
        live: &[LiveGrant],
    ) -> Result<ReconcileReport, ProviderError> {
        // Scope → role → the entitlements granting it.
        let mut scopes: BTreeMap<AzureScope, BTreeMap<String, BTreeSet<&str>>> = BTreeMap::new();
        let mut targets: BTreeMap<(AzureScope, String), AzureTarget> = BTreeMap::new();
        for entitlement in managed {
            let Ok(target) = AzureTarget::of(entitlement) else {
                continue;
            };
            scopes
                .entry(target.scope.clone())
                .or_default()
                .entry(target.role.clone())
                .or_default()
                .insert(entitlement.id.as_str());
            targets
                .entry((target.scope.clone(), target.role.clone()))
                .or_insert(target);
        }
        let mut report = ReconcileReport::default();
        for (scope, roles) in &scopes {
            let instances = self.instances(scope, "atScope()").await?;
            for (role, ids) in roles {
                let target = &targets[&(scope.clone(), role.clone())];
                let grants: Vec<&LiveGrant> = live
                    .iter()
                    .filter(|g| ids.contains(g.entitlement.as_str()))
                    .collect();
                let of_role: Vec<&Instance> =
                    instances.iter().filter(|i| i.role() == *role).collect();
                self.reconcile_role(target, &of_role, &grants, &mut report)
                    .await?;
            }
        }
        Ok(report)
    }

    /// One role at one scope: its instances against its live grants.
    async fn reconcile_role(
        &self,
        target: &AzureTarget,
        instances: &[&Instance],
        grants: &[&LiveGrant],
        report: &mut ReconcileReport,
    ) -> Result<(), ProviderError> {
        let described = self.describe(target);
        let drift = Drift::new(grants, &described, report);
        for instance in instances {
            let principal = instance.properties.principal_id.to_ascii_lowercase();
            let end = instance.end()?;
            let what = drift::describe_instance(&described, &principal, &instance.name, end);
            let verdict = drift.judge(&principal, instance.direct(), instance.assigned(), end);
            let remove = self.remove_unexplained(target, &principal, RECONCILE_JUSTIFICATION);
            drift::act(verdict, what, remove, report).await;
        }
        drift.missing(
            |oid| {
                instances
                    .iter()
                    .any(|i| i.properties.principal_id.eq_ignore_ascii_case(oid))
            },
            &described,
            report,
        );
        Ok(())
    }
}
