//! The judgement PIM reconciliation makes for each active instance of a managed
//! target, the same for Entra roles, PIM for Groups and Azure roles: PIM's own
//! schedule ends assignments, reconciliation checks that it did, removes
//! time-bound, administrator-made, direct assignments that no live grant
//! explains, and reports the rest, which it cannot tell were meant to be
//! temporary (a permanent assignment of a managed role is standing access the
//! broker exists to prevent).

use std::collections::HashMap;
use std::future::Future;

use time::OffsetDateTime;

use super::pim_time;
use crate::providers::{LiveGrant, ProviderError, ReconcileReport};

/// An assignment may outlast its grants by this much (clock skew, rounding up
/// to whole seconds) before it is reported.
const END_TOLERANCE: time::Duration = time::Duration::minutes(5);

/// Justification of removals made by reconciliation.
pub(crate) const RECONCILE_JUSTIFICATION: &str =
    "jit reconciliation: no live grant explains this assignment";

/// What to do with one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A live grant explains it.
    Keep,
    /// Report it (the reason follows the instance's description), do not remove it.
    Report(String),
    /// Remove it.
    Remove,
}

/// One target's live grants, by principal.
pub(crate) struct Drift<'a> {
    grants: &'a [&'a LiveGrant],
    /// Latest end of the live grants per principal (object id, lowercase).
    due: HashMap<String, OffsetDateTime>,
}

impl<'a> Drift<'a> {
    /// The grants of one target (`what` in words); grantees without an object
    /// id go to `report.missing` at once.
    pub(crate) fn new(
        grants: &'a [&'a LiveGrant],
        what: &str,
        report: &mut ReconcileReport,
    ) -> Self {
        let mut due: HashMap<String, OffsetDateTime> = HashMap::new();
        for grant in grants {
            match grant.grantee.oid.as_deref().filter(|o| !o.is_empty()) {
                Some(oid) => {
                    let end = due.entry(oid.to_ascii_lowercase()).or_insert(grant.ends_at);
                    *end = (*end).max(grant.ends_at);
                }
                None => report.missing.push(format!(
                    "request `{}`: {what} for `{}` cannot exist: they have no Entra object id",
                    grant.request_id, grant.grantee.email
                )),
            }
        }
        Self { grants, due }
    }

    /// The verdict on an instance of `principal`: held `direct`ly or not,
    /// `assigned` by an administrator or activated, ending at `end` (`None`: never).
    pub(crate) fn judge(
        &self,
        principal: &str,
        direct: bool,
        assigned: bool,
        end: Option<OffsetDateTime>,
    ) -> Verdict {
        if !direct {
            return Verdict::Report("held through a group, not removed".to_owned());
        }
        if let Some(until) = self.due.get(&principal.to_ascii_lowercase()) {
            return if end.is_none_or(|end| end > *until + END_TOLERANCE) {
                Verdict::Report(format!(
                    "lasts beyond its grants, which end {}",
                    pim_time(*until)
                ))
            } else {
                Verdict::Keep
            };
        }
        if !assigned {
            return Verdict::Report(
                "activated by the principal from a PIM eligibility, not removed".to_owned(),
            );
        }
        if end.is_none() {
            return Verdict::Report(
                "a permanent assignment the broker did not make (standing access), not removed"
                    .to_owned(),
            );
        }
        Verdict::Remove
    }

    /// Live grants whose principal holds no instance (`holds`) go to `report.missing`.
    pub(crate) fn missing(
        &self,
        holds: impl Fn(&str) -> bool,
        what: &str,
        report: &mut ReconcileReport,
    ) {
        for grant in self.grants {
            let Some(oid) = grant.grantee.oid.as_deref().filter(|o| !o.is_empty()) else {
                continue;
            };
            if !holds(oid) {
                report.missing.push(format!(
                    "request `{}`: {what} for `{oid}` is not active in PIM",
                    grant.request_id
                ));
            }
        }
    }
}

/// The instance's description, for the report.
pub(crate) fn describe_instance(
    what: &str,
    principal: &str,
    instance: &str,
    end: Option<OffsetDateTime>,
) -> String {
    format!(
        "{what} for `{principal}` (instance `{instance}`, ends {})",
        end.map_or_else(|| "never".to_owned(), pim_time)
    )
}

/// Carries out a verdict on the instance `what`: reports it, or removes it
/// with `remove` (only awaited then) and reports how that went.
pub(crate) async fn act(
    verdict: Verdict,
    what: String,
    remove: impl Future<Output = Result<(), ProviderError>>,
    report: &mut ReconcileReport,
) {
    match verdict {
        Verdict::Keep => {}
        Verdict::Report(why) => report.unexplained.push(format!("{what}: {why}")),
        Verdict::Remove => match remove.await {
            Ok(()) => {
                tracing::warn!(upstream.instance = %what, "removed a PIM assignment no live grant explains");
                report.removed.push(what);
            }
            Err(e) => report.unexplained.push(format!(
                "{what}: no live grant explains it and removal failed: {e}"
            )),
        },
    }
}
