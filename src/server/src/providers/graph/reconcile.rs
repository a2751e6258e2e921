//! Drift reconciliation for PIM: active instances of managed targets against
//! the broker's live grants ([`drift`] judges each instance).

use std::collections::BTreeMap;

use super::pim::{Pim, PimTarget};
use crate::policy::catalog::Entitlement;
use crate::providers::microsoft::drift::{self, Drift, RECONCILE_JUSTIFICATION};
use crate::providers::{LiveGrant, ProviderError, ReconcileReport};

impl Pim {
    /// Removes time-bound, administrator-made, direct assignments that no live
    /// grant explains; reports the rest (permanent, self-activated, inherited,
    /// over-long) and live grants whose assignment is missing.
    pub(crate) async fn reconcile(
        &self,
        managed: &[Entitlement],
        live: &[LiveGrant],
    ) -> Result<ReconcileReport, ProviderError> {
        let mut targets: BTreeMap<PimTarget, Vec<&str>> = BTreeMap::new();
        for entitlement in managed.iter().filter(|e| e.kind == self.kind) {
            targets
                .entry(PimTarget::of(self.kind, entitlement)?)
                .or_default()
                .push(entitlement.id.as_str());
        }
        let mut report = ReconcileReport::default();
        for (target, ids) in &targets {
            let grants: Vec<&LiveGrant> = live
                .iter()
                .filter(|g| ids.contains(&g.entitlement.as_str()))
                .collect();
            let described = target.describe();
            let drift = Drift::new(&grants, &described, &mut report);
            let instances = self.instances(target, None).await?;
            for instance in &instances {
                let end = instance.end()?;
                let what =
                    drift::describe_instance(&described, &instance.principal_id, &instance.id, end);
                let verdict = drift.judge(
                    &instance.principal_id,
                    instance.direct(),
                    instance.assigned(),
                    end,
                );
                let remove = self.remove(target, &instance.principal_id, RECONCILE_JUSTIFICATION);
                drift::act(verdict, what, remove, &mut report).await;
            }
            drift.missing(
                |oid| {
                    instances
                        .iter()
                        .any(|i| i.principal_id.eq_ignore_ascii_case(oid))
                },
                &described,
                &mut report,
            );
        }
        Ok(report)
    }
}
