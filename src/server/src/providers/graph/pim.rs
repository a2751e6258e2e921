//! PIM for Entra roles (`roleAssignmentScheduleRequests`) and PIM for Groups
//! (`privilegedAccess/group/assignmentScheduleRequests`): one engine, two targets.
//!
//! A grant is an `adminAssign` with an `afterDuration` expiration from now to the
//! grant's end; PIM's own schedule removes it at the end and the reconciler checks
//! that it did. An overlapping grant (or Graph answering `RoleAssignmentExists`)
//! extends the existing assignment with `adminExtend` ("for administrators to
//! extend expiring assignments") when it ends earlier than the new grant, and
//! leaves it alone when it already lasts long enough. An early revoke is an
//! `adminRemove`; PIM refuses it in the first five minutes (`ActiveDurationTooShort`),
//! which surfaces as a transient error the scheduler retries.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::client::{GraphClient, GraphError};
use crate::policy::catalog::{Entitlement, Kind, Target};
use crate::providers::microsoft::flow::{self, Assign};
use crate::providers::microsoft::{
    Held, encode, iso_duration, odata_literal, pim_time, seconds_until,
};
use crate::providers::{GrantRecord, GrantSpec, ProviderError};

/// `ticketInfo.ticketSystem` sent with a requester's ticket reference.
pub const TICKET_SYSTEM: &str = "jit";

const ROLE_REQUESTS: &str = "/roleManagement/directory/roleAssignmentScheduleRequests";
const ROLE_INSTANCES: &str = "/roleManagement/directory/roleAssignmentScheduleInstances";
const GROUP_REQUESTS: &str =
    "/identityGovernance/privilegedAccess/group/assignmentScheduleRequests";
const GROUP_INSTANCES: &str =
    "/identityGovernance/privilegedAccess/group/assignmentScheduleInstances";

/// The PIM object an entitlement points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum PimTarget {
    /// A directory role at a directory scope.
    Role { role: String, scope: String },
    /// Membership or ownership of a PIM-governed group.
    Group { group: String, access: String },
}

impl PimTarget {
    /// The target of `entitlement`, which must be of `kind`.
    pub(crate) fn of(kind: Kind, entitlement: &Entitlement) -> Result<Self, ProviderError> {
        match (&entitlement.target, kind) {
            (
                Target::EntraRole {
                    role_definition_id,
                    directory_scope_id,
                },
                Kind::EntraRole,
            ) => Ok(Self::Role {
                role: role_definition_id.clone(),
                scope: directory_scope_id.clone(),
            }),
            (
                Target::EntraGroup {
                    group_id,
                    access_id,
                },
                Kind::EntraGroup,
            ) => Ok(Self::Group {
                group: group_id.clone(),
                access: access_id.clone(),
            }),
            _ => Err(ProviderError::Permanent(format!(
                "entitlement `{}` is not of kind `{}`",
                entitlement.id,
                kind.as_str()
            ))),
        }
    }

    fn requests(&self) -> &'static str {
        match self {
            Self::Role { .. } => ROLE_REQUESTS,
            Self::Group { .. } => GROUP_REQUESTS,
        }
    }

    /// A request body with the documented property names.
    pub(crate) fn body(
        &self,
        action: &str,
        principal: &str,
        justification: &str,
        schedule: Option<Value>,
        ticket: Option<&str>,
    ) -> Value {
        let mut body = Map::new();
        body.insert("action".into(), action.into());
        match self {
            Self::Role { role, scope } => {
                body.insert("principalId".into(), principal.into());
                body.insert("roleDefinitionId".into(), role.as_str().into());
                body.insert("directoryScopeId".into(), scope.as_str().into());
            }
            Self::Group { group, access } => {
                body.insert("accessId".into(), access.as_str().into());
                body.insert("principalId".into(), principal.into());
                body.insert("groupId".into(), group.as_str().into());
            }
        }
        if !justification.trim().is_empty() {
            body.insert("justification".into(), justification.into());
        }
        if let Some(schedule) = schedule {
            body.insert("scheduleInfo".into(), schedule);
        }
        if let Some(ticket) = ticket.filter(|t| !t.trim().is_empty()) {
            body.insert(
                "ticketInfo".into(),
                json!({ "ticketNumber": ticket, "ticketSystem": TICKET_SYSTEM }),
            );
        }
        Value::Object(body)
    }

    /// Instances listing, for one principal or (reconciliation) for everyone.
    pub(crate) fn instances_path(&self, principal: Option<&str>) -> String {
        let filter = match (self, principal) {
            (Self::Role { role, .. }, Some(p)) => format!(
                "principalId eq {} and roleDefinitionId eq {}",
                odata_literal(p),
                odata_literal(role)
            ),
            (Self::Role { role, .. }, None) => {
                format!("roleDefinitionId eq {}", odata_literal(role))
            }
            (Self::Group { group, .. }, Some(p)) => format!(
                "groupId eq {} and principalId eq {}",
                odata_literal(group),
                odata_literal(p)
            ),
            (Self::Group { group, .. }, None) => format!("groupId eq {}", odata_literal(group)),
        };
        let base = match self {
            Self::Role { .. } => ROLE_INSTANCES,
            Self::Group { .. } => GROUP_INSTANCES,
        };
        format!("{base}?$filter={}", encode(&filter))
    }

    /// The instance is of this exact target (scope, access).
    pub(crate) fn owns(&self, instance: &Instance) -> bool {
        match self {
            Self::Role { scope, .. } => instance.directory_scope_id.as_deref() == Some(scope),
            Self::Group { access, .. } => instance
                .access_id
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case(access)),
        }
    }

    /// For messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Role { role, scope } => format!("role `{role}` at scope `{scope}`"),
            Self::Group { group, access } => format!("`{access}` of group `{group}`"),
        }
    }
}

/// An active assignment (`…ScheduleInstance`), the fields the broker reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Instance {
    pub(crate) id: String,
    pub(crate) principal_id: String,
    #[serde(default)]
    pub(crate) directory_scope_id: Option<String>,
    #[serde(default)]
    pub(crate) access_id: Option<String>,
    #[serde(default)]
    pub(crate) end_date_time: Option<String>,
    #[serde(default)]
    pub(crate) assignment_type: Option<String>,
    #[serde(default)]
    pub(crate) member_type: Option<String>,
}

impl Instance {
    /// End of the assignment; `None` = no expiry.
    pub(crate) fn end(&self) -> Result<Option<OffsetDateTime>, GraphError> {
        self.end_date_time
            .as_deref()
            .map(|t| {
                OffsetDateTime::parse(t, &Rfc3339).map_err(|e| GraphError::Decode {
                    service: crate::providers::microsoft::Service::Graph,
                    message: format!("instance `{}` endDateTime `{t}`: {e}", self.id),
                })
            })
            .transpose()
    }

    /// Held directly (not through a group).
    pub(crate) fn direct(&self) -> bool {
        self.member_type
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case("direct"))
    }

    /// Made by an administrator (`Assigned`), not a principal's own activation.
    pub(crate) fn assigned(&self) -> bool {
        self.assignment_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case("assigned"))
    }
}

/// A schedule request as Graph returns it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleRequest {
    id: String,
    status: String,
    #[serde(default)]
    target_schedule_id: Option<String>,
}

enum Phase {
    Done,
    Pending,
    Approval,
    Failed,
}

fn phase(status: &str) -> Phase {
    match status.to_ascii_lowercase().as_str() {
        "provisioned" | "granted" | "revoked" => Phase::Done,
        "pendingapproval" | "pendingadmindecision" => Phase::Approval,
        "failed" | "denied" | "canceled" | "cancelled" => Phase::Failed,
        // PendingProvisioning, PendingScheduleCreation, ScheduleCreated, …
        _ => Phase::Pending,
    }
}

/// The shared engine behind [`super::EntraRole`] and [`super::EntraGroup`].
pub(crate) struct Pim {
    pub(crate) client: Arc<GraphClient>,
    pub(crate) kind: Kind,
}

impl Pim {
    /// `scheduleInfo` from now (whole seconds) to `end`.
    fn schedule(&self, end: OffsetDateTime) -> Result<Value, ProviderError> {
        let (start, seconds) = seconds_until(self.client.now(), end).ok_or_else(|| {
            ProviderError::Permanent(format!(
                "the grant window ended at {} before the grant could be made",
                pim_time(end)
            ))
        })?;
        Ok(json!({
            "startDateTime": pim_time(start),
            "expiration": { "type": "afterDuration", "duration": iso_duration(seconds) },
        }))
    }

    /// Makes the assignment exist until `spec.ends_at`.
    pub(crate) async fn grant(&self, spec: &GrantSpec<'_>) -> Result<GrantRecord, ProviderError> {
        let target = PimTarget::of(self.kind, spec.entitlement)?;
        let principal = flow::principal(spec)?;
        flow::assign_or_extend(
            spec,
            Box::pin(self.assign(spec, &target, principal)),
            Box::pin(self.extend_or_assign(spec, &target, principal)),
        )
        .await
    }

    async fn assign(
        &self,
        spec: &GrantSpec<'_>,
        target: &PimTarget,
        principal: &str,
    ) -> Result<GrantRecord, Assign> {
        let body = target.body(
            "adminAssign",
            principal,
            spec.justification,
            Some(self.schedule(spec.ends_at).map_err(Assign::Failed)?),
            spec.ticket,
        );
        match self.client.post(target.requests(), &body).await {
            Ok(v) => self
                .settle(target, "adminAssign", v)
                .await
                .map(|r| record("adminAssign", &r, principal))
                .map_err(Assign::Failed),
            Err(e) if e.code() == Some("RoleAssignmentExists") => Err(Assign::Exists(e)),
            Err(e) => Err(Assign::Failed(e.into())),
        }
    }

    /// The principal already holds (or should hold) the assignment: extend it
    /// to `spec.ends_at` if it ends earlier, assign it if it is gone.
    async fn extend_or_assign(
        &self,
        spec: &GrantSpec<'_>,
        target: &PimTarget,
        principal: &str,
    ) -> Result<GrantRecord, ProviderError> {
        let instances = self.held_by(target, principal).await?;
        let held = held(&instances)?;
        if held == Held::Not {
            let assign = self.assign(spec, target, principal);
            return flow::assign_afresh(assign, &target.describe(), principal).await;
        }
        let covered_until = held.covers(spec.ends_at);
        if let Some(until) = covered_until {
            return Ok(GrantRecord {
                reference: instances.first().map(|i| i.id.clone()),
                details: json!({
                    "graph": { "action": "none", "covered_until": until },
                    "principal_id": principal,
                }),
            });
        }
        let body = target.body(
            "adminExtend",
            principal,
            spec.justification,
            Some(self.schedule(spec.ends_at)?),
            spec.ticket,
        );
        let v = self.client.post(target.requests(), &body).await?;
        let r = self.settle(target, "adminExtend", v).await?;
        Ok(record("adminExtend", &r, principal))
    }

    /// Removes the assignment; one that is already gone counts as removed.
    /// A permanent one is left alone: the broker only ever assigns until a
    /// time, so a grant that found one adopted standing access it did not
    /// make (reconciliation reports it as a finding).
    pub(crate) async fn revoke(&self, spec: &GrantSpec<'_>) -> Result<(), ProviderError> {
        let target = PimTarget::of(self.kind, spec.entitlement)?;
        let principal = flow::principal(spec)?;
        if held(&self.held_by(&target, principal).await?)? == Held::Forever {
            flow::leave_standing(spec, &target.describe(), principal);
            return Ok(());
        }
        let justification = format!("jit: access of request {} ended", spec.request_id);
        self.remove(&target, principal, &justification).await
    }

    pub(crate) async fn remove(
        &self,
        target: &PimTarget,
        principal: &str,
        justification: &str,
    ) -> Result<(), ProviderError> {
        let body = target.body("adminRemove", principal, justification, None, None);
        match self.client.post(target.requests(), &body).await {
            Ok(v) => self.settle(target, "adminRemove", v).await.map(|_| ()),
            Err(e) if e.code() == Some("RoleAssignmentDoesNotExist") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The principal's direct, administrator-made instances of `target`.
    async fn held_by(
        &self,
        target: &PimTarget,
        principal: &str,
    ) -> Result<Vec<Instance>, ProviderError> {
        let mut listed = self.instances(target, Some(principal)).await?;
        listed.retain(|i| i.direct() && i.assigned());
        Ok(listed)
    }

    /// Active instances of `target`, direct and of the exact scope/access.
    pub(crate) async fn instances(
        &self,
        target: &PimTarget,
        principal: Option<&str>,
    ) -> Result<Vec<Instance>, ProviderError> {
        let all: Vec<Instance> = self
            .client
            .get_pages(&target.instances_path(principal), &[])
            .await?;
        Ok(all.into_iter().filter(|i| target.owns(i)).collect())
    }

    /// Follows a request to a final status, polling a bounded number of times.
    async fn settle(
        &self,
        target: &PimTarget,
        action: &str,
        response: Value,
    ) -> Result<ScheduleRequest, ProviderError> {
        let mut request: ScheduleRequest = serde_json::from_value(response)
            .map_err(|e| self.client.decode_error(format!("schedule request: {e}")))?;
        let mut polls = 0;
        loop {
            match phase(&request.status) {
                Phase::Done => return Ok(request),
                Phase::Failed => {
                    return Err(ProviderError::Permanent(format!(
                        "graph: {}: PIM did not carry out `{action}` of {} (request `{}`)",
                        request.status,
                        target.describe(),
                        request.id
                    )));
                }
                Phase::Approval => {
                    let cancel = format!("{}/{}/cancel", target.requests(), encode(&request.id));
                    if let Err(e) = self.client.post(&cancel, &json!({})).await {
                        tracing::warn!(graph.request = %request.id, error = %e, "cannot cancel a PIM request waiting for approval");
                    }
                    return Err(ProviderError::Permanent(format!(
                        "graph: {}: PIM wants its own approval for {} (request `{}`, cancelled); the broker approves requests itself, so turn PIM approval off for it",
                        request.status,
                        target.describe(),
                        request.id
                    )));
                }
                Phase::Pending => {
                    let max = self.client.tuning().max_polls;
                    if polls >= max {
                        return Err(ProviderError::Transient(format!(
                            "graph: request `{}` for {} is still `{}` after {polls} checks",
                            request.id,
                            target.describe(),
                            request.status
                        )));
                    }
                    polls += 1;
                    tokio::time::sleep(self.client.tuning().poll_interval).await;
                    let path = format!("{}/{}", target.requests(), encode(&request.id));
                    match self.client.get(&path).await {
                        Ok(v) => {
                            request = serde_json::from_value(v).map_err(|e| {
                                self.client.decode_error(format!("schedule request: {e}"))
                            })?;
                        }
                        // Not readable yet (replication): check again.
                        Err(e) if e.status() == Some(404) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
}

/// Only direct, administrator-made instances count: a principal's own
/// activation of a PIM eligibility can end whenever they deactivate it.
fn held(instances: &[Instance]) -> Result<Held, ProviderError> {
    let ends = instances
        .iter()
        .map(Instance::end)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Held::of(ends))
}

fn record(action: &str, request: &ScheduleRequest, principal: &str) -> GrantRecord {
    GrantRecord {
        reference: Some(request.id.clone()),
        details: json!({
            "graph": {
                "action": action,
                "request_id": request.id,
                "status": request.status,
                "target_schedule_id": request.target_schedule_id,
            },
            "principal_id": principal,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_odata() {
        let t = PimTarget::Role {
            role: "r".into(),
            scope: "/".into(),
        };
        assert_eq!(
            t.instances_path(Some("p")),
            "/roleManagement/directory/roleAssignmentScheduleInstances?$filter=principalId%20eq%20%27p%27%20and%20roleDefinitionId%20eq%20%27r%27"
        );
    }
}
