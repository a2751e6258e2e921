//! The grant protocol PIM documents for Entra roles, PIM for Groups and Azure
//! roles alike: an administrator assignment, which PIM refuses while one exists
//! (`RoleAssignmentExists`); then the existing one is extended instead, or kept
//! when it lasts long enough. Each provider supplies its own calls.

use std::future::Future;

use super::ApiError;
use crate::policy::azure::is_guid;
use crate::providers::{GrantRecord, GrantSpec, ProviderError};

/// How an assignment attempt ended.
pub(crate) enum Assign {
    /// PIM already holds an assignment of the principal to the target.
    Exists(ApiError),
    /// Anything else.
    Failed(ProviderError),
}

/// The grantee's Entra object id: PIM's `principalId`, a GUID.
pub(crate) fn principal<'s>(spec: &'s GrantSpec<'_>) -> Result<&'s str, ProviderError> {
    let email = &spec.grantee.email;
    let oid = spec
        .grantee
        .oid
        .as_deref()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| {
            ProviderError::Permanent(format!(
                "`{email}` has no Entra object id (oid), so PIM cannot assign them"
            ))
        })?;
    if is_guid(oid) {
        Ok(oid)
    } else {
        Err(ProviderError::Permanent(format!(
            "`{email}` has the object id `{oid}`, which is not a GUID: PIM assigns Entra object ids only"
        )))
    }
}

/// A grant: `extend` when another live grant holds the object already,
/// otherwise `assign`, and `extend` when PIM says it exists after all (an
/// earlier attempt made it, or someone outside the broker did).
pub(crate) async fn assign_or_extend(
    spec: &GrantSpec<'_>,
    assign: impl Future<Output = Result<GrantRecord, Assign>>,
    extend: impl Future<Output = Result<GrantRecord, ProviderError>>,
) -> Result<GrantRecord, ProviderError> {
    if spec.overlapping {
        return extend.await;
    }
    match assign.await {
        Err(Assign::Exists(e)) => {
            tracing::info!(request.id = %spec.request_id, upstream.code = ?e.code(), "assignment exists; extending it");
            extend.await
        }
        Err(Assign::Failed(e)) => Err(e),
        Ok(record) => Ok(record),
    }
}

/// The assignment is gone (expired, removed early) or was never made: assign
/// afresh. PIM insisting it exists while listing nothing is final.
pub(crate) async fn assign_afresh(
    assign: impl Future<Output = Result<GrantRecord, Assign>>,
    target: &str,
    principal: &str,
) -> Result<GrantRecord, ProviderError> {
    match assign.await {
        Ok(record) => Ok(record),
        Err(Assign::Exists(e)) => Err(ProviderError::Permanent(format!(
            "{e} (yet no active assignment of {target} is listed for `{principal}`)"
        ))),
        Err(Assign::Failed(e)) => Err(e),
    }
}

/// A grant ends on an assignment that never expires, which the broker did not
/// make: it stays (it is standing access, reported by reconciliation), and the
/// log says so.
pub(crate) fn leave_standing(spec: &GrantSpec<'_>, target: &str, principal: &str) {
    tracing::warn!(
        request.id = %spec.request_id,
        principal,
        "the grant ended, but {target} is held by a permanent assignment the broker did not make: it is left in place (standing access; reconciliation reports it)"
    );
}
