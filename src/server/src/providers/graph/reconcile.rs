//! Drift reconciliation for PIM: active instances of managed targets against
//! the broker's live grants. PIM's own schedule ends assignments; this is what
//! checks that it did.

use std::collections::{BTreeMap, HashMap};

use time::OffsetDateTime;

use super::pim::{Pim, PimTarget, graph_time};
use crate::policy::catalog::Entitlement;
use crate::providers::{LiveGrant, ProviderError, ReconcileReport};

/// An assignment may outlast its grants by this much (clock skew, rounding up
/// to whole seconds) before it is reported.
const END_TOLERANCE: time::Duration = time::Duration::minutes(5);

/// Justification of removals made by reconciliation.
const RECONCILE_JUSTIFICATION: &str = "jit reconciliation: no live grant explains this assignment";

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
            // Latest end of the live grants per principal.
            let mut due: HashMap<String, OffsetDateTime> = HashMap::new();
            for grant in &grants {
                match grant.grantee.oid.as_deref().filter(|o| !o.is_empty()) {
                    Some(oid) => {
                        let end = due.entry(oid.to_ascii_lowercase()).or_insert(grant.ends_at);
                        *end = (*end).max(grant.ends_at);
                    }
                    None => report.missing.push(format!(
                        "request `{}`: {} for `{}` cannot exist: they have no Entra object id",
                        grant.request_id,
                        target.describe(),
                        grant.grantee.email
                    )),
                }
            }
            let instances = self.instances(target, None).await?;
            for instance in &instances {
                let end = instance.end()?;
                let what = format!(
                    "{} for `{}` (instance `{}`, ends {})",
                    target.describe(),
                    instance.principal_id,
                    instance.id,
                    end.map_or_else(|| "never".to_owned(), graph_time)
                );
                if !instance.direct() {
                    report
                        .unexplained
                        .push(format!("{what}: held through a group, not removed"));
                    continue;
                }
                if let Some(until) = due.get(&instance.principal_id.to_ascii_lowercase()) {
                    if end.is_none_or(|end| end > *until + END_TOLERANCE) {
                        report.unexplained.push(format!(
                            "{what}: lasts beyond its grants, which end {}",
                            graph_time(*until)
                        ));
                    }
                    continue;
                }
                if !instance.assigned() {
                    report.unexplained.push(format!(
                        "{what}: activated by the principal from a PIM eligibility, not removed"
                    ));
                    continue;
                }
                if end.is_none() {
                    report.unexplained.push(format!(
                        "{what}: a permanent assignment the broker did not make, not removed"
                    ));
                    continue;
                }
                match self
                    .remove(target, &instance.principal_id, RECONCILE_JUSTIFICATION)
                    .await
                {
                    Ok(()) => {
                        tracing::warn!(graph.instance = %instance.id, "removed a PIM assignment no live grant explains");
                        report.removed.push(what);
                    }
                    Err(e) => report.unexplained.push(format!(
                        "{what}: no live grant explains it and removal failed: {e}"
                    )),
                }
            }
            for grant in &grants {
                let Some(oid) = grant.grantee.oid.as_deref().filter(|o| !o.is_empty()) else {
                    continue;
                };
                if !instances
                    .iter()
                    .any(|i| i.principal_id.eq_ignore_ascii_case(oid))
                {
                    report.missing.push(format!(
                        "request `{}`: {} for `{oid}` is not active in PIM",
                        grant.request_id,
                        target.describe()
                    ));
                }
            }
        }
        Ok(report)
    }
}
