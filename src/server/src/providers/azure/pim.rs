//! PIM for Azure resources: `roleAssignmentScheduleRequests` at the entitlement's
//! scope, one fresh GUID name per request (the spec: "The name must be unique and
//! different for each role assignment").
//!
//! - Grant: `AdminAssign` with `scheduleInfo` from now for the grant's duration
//!   (`AfterDuration`, ISO 8601). The spec defines only `201` and no long-running
//!   operation; a request that is not yet `Provisioned` is read again (`GET` of
//!   the same name, bounded polls) and the grant is active only once ARM says
//!   `Provisioned`.
//! - Overlap and extension: ARM answers `RoleAssignmentExists` to a second
//!   `AdminAssign` (`rest: includes/privileged-role-common-errors`), so a grant
//!   the principal already holds is extended with `AdminExtend` ("for
//!   administrators to extend expiring assignments"; an enum value of the
//!   2020-10-01 spec, whose `targetRoleAssignmentScheduleId` is "the role
//!   assignment schedule id being updated"; body as `EasyPIM`'s
//!   `Update-PIMAzureResourceActiveAssignment` sends it: the schedule id and an
//!   `AfterDateTime` expiration) when it ends earlier than the new grant, and left
//!   alone when it already lasts long enough.
//! - Removal: `AdminRemove`. ARM refuses it for about five minutes after the
//!   assignment (`ActiveDurationTooShort`, observed by Terraform, which retries
//!   it): a transient error the scheduler retries. `RoleAssignmentDoesNotExist`
//!   means it is gone already.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::{API_VERSION, ArmClient, AzureNames};
use crate::policy::azure::AzureScope;
use crate::policy::catalog::{Entitlement, Target};
use crate::providers::graph::TICKET_SYSTEM;
use crate::providers::microsoft::flow::{self, Assign};
use crate::providers::microsoft::{
    ApiError, Held, Tuning, encode, iso_duration, pim_time, seconds_until,
};
use crate::providers::{GrantRecord, GrantSpec, ProviderError};

/// What an `azure_role` entitlement grants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct AzureTarget {
    pub(crate) scope: AzureScope,
    /// Role definition GUID, lowercase.
    pub(crate) role: String,
    pub(crate) condition: Option<String>,
}

impl AzureTarget {
    pub(crate) fn of(entitlement: &Entitlement) -> Result<Self, ProviderError> {
        match &entitlement.target {
            Target::AzureRole {
                scope,
                role_definition,
                condition,
            } => Ok(Self {
                scope: scope.clone(),
                role: role_definition.clone(),
                condition: condition.clone(),
            }),
            _ => Err(ProviderError::Permanent(format!(
                "entitlement `{}` is not of kind `azure_role`",
                entitlement.id
            ))),
        }
    }

    fn request_path(&self, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.Authorization/roleAssignmentScheduleRequests/{name}?api-version={API_VERSION}",
            self.scope.id()
        )
    }

    fn cancel_path(&self, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.Authorization/roleAssignmentScheduleRequests/{name}/cancel?api-version={API_VERSION}",
            self.scope.id()
        )
    }

    /// A request body with the spec's (camelCase) property names.
    fn body(
        &self,
        request_type: &str,
        principal: &str,
        say: &Say<'_>,
        extra: Map<String, Value>,
    ) -> Value {
        let mut p = Map::new();
        p.insert("principalId".into(), principal.into());
        p.insert(
            "roleDefinitionId".into(),
            self.scope.role_definition_id(&self.role).into(),
        );
        p.insert("requestType".into(), request_type.into());
        if !say.justification.trim().is_empty() {
            p.insert("justification".into(), say.justification.into());
        }
        if let Some(ticket) = say.ticket.filter(|t| !t.trim().is_empty()) {
            p.insert(
                "ticketInfo".into(),
                json!({ "ticketNumber": ticket, "ticketSystem": TICKET_SYSTEM }),
            );
        }
        // The spec: "Currently accepted value is '2.0'" (its examples show 1.0).
        if let Some(condition) = &self.condition
            && request_type != "AdminRemove"
        {
            p.insert("condition".into(), condition.as_str().into());
            p.insert("conditionVersion".into(), "2.0".into());
        }
        p.extend(extra);
        json!({ "properties": p })
    }
}

/// Instances at, above and below `scope` that `filter` selects (the documented
/// forms: `principalId eq '…'`, `atScope()`).
fn instances_path(scope: &AzureScope, filter: &str) -> String {
    format!(
        "{}/providers/Microsoft.Authorization/roleAssignmentScheduleInstances?api-version={API_VERSION}&$filter={}",
        scope.id(),
        encode(filter)
    )
}

/// What a request says besides its target.
struct Say<'a> {
    justification: &'a str,
    ticket: Option<&'a str>,
}

/// An object of an ARM collection: its `name` and `properties`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Instance {
    #[serde(default)]
    pub(crate) name: String,
    pub(crate) properties: InstanceProperties,
}

/// The fields of a `roleAssignmentScheduleInstance` the broker reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstanceProperties {
    pub(crate) scope: String,
    pub(crate) role_definition_id: String,
    pub(crate) principal_id: String,
    #[serde(default)]
    pub(crate) role_assignment_schedule_id: Option<String>,
    #[serde(default)]
    pub(crate) end_date_time: Option<String>,
    #[serde(default)]
    pub(crate) assignment_type: Option<String>,
    #[serde(default)]
    pub(crate) member_type: Option<String>,
}

impl Instance {
    /// The role definition GUID (ARM echoes ids in another form than sent:
    /// compare by the trailing GUID).
    pub(crate) fn role(&self) -> String {
        self.properties
            .role_definition_id
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    }

    /// End; `None` = no expiry (a permanent assignment).
    pub(crate) fn end(&self) -> Result<Option<OffsetDateTime>, ProviderError> {
        self.properties
            .end_date_time
            .as_deref()
            .map(|t| {
                OffsetDateTime::parse(t, &Rfc3339).map_err(|e| {
                    ProviderError::Transient(format!(
                        "arm: unexpected response: instance `{}` endDateTime `{t}`: {e}",
                        self.name
                    ))
                })
            })
            .transpose()
    }

    /// Held directly (not through a group, not inherited from above).
    pub(crate) fn direct(&self) -> bool {
        self.properties
            .member_type
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case("direct"))
    }

    /// Made by an administrator (`Assigned`), not the principal's own activation.
    pub(crate) fn assigned(&self) -> bool {
        self.properties
            .assignment_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case("assigned"))
    }
}

/// A schedule request as ARM returns it.
#[derive(Debug, Clone, Deserialize)]
struct Request {
    name: String,
    properties: RequestProperties,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestProperties {
    status: String,
    #[serde(default)]
    request_type: Option<String>,
    #[serde(default)]
    principal_id: Option<String>,
    #[serde(default)]
    role_definition_id: Option<String>,
    #[serde(default)]
    target_role_assignment_schedule_id: Option<String>,
}

enum Phase {
    Done,
    Pending,
    Approval,
    Failed,
}

/// The spec lists 22 statuses without meanings; read as the reference suggests:
/// `Provisioned` is done (`Revoked` too, for a removal), approval waits on a
/// human, the failures are final, anything else is still in progress.
fn phase(request_type: &str, status: &str) -> Phase {
    match status.to_ascii_lowercase().as_str() {
        "provisioned" | "schedulecreated" => Phase::Done,
        "revoked" if request_type == "AdminRemove" => Phase::Done,
        "pendingapproval" | "pendingadmindecision" => Phase::Approval,
        "denied"
        | "admindenied"
        | "failed"
        | "failedasresourceislocked"
        | "timedout"
        | "invalid"
        | "canceled"
        | "cancelled"
        | "revoked" => Phase::Failed,
        _ => Phase::Pending,
    }
}

/// ARM's error as the requester reads it, with what to do where the broker knows.
pub(crate) fn reason(e: &ApiError, scope: &AzureScope) -> ProviderError {
    let hint = match e.code() {
        Some("AuthorizationFailed") => Some(format!(
            "the broker's app needs User Access Administrator or Owner at `{scope}`"
        )),
        Some("RoleAssignmentRequestPolicyValidationFailed") => Some(
            "PIM role settings for active assignments of this role refuse the request: see docs/deploy.md"
                .to_owned(),
        ),
        Some("RoleDefinitionDoesNotExist") => {
            Some("check the entitlement's `role_definition_id`".to_owned())
        }
        Some("InvalidAuthenticationTokenAudience" | "InvalidAuthenticationToken") => {
            Some("check `[azure]` `login_url` and the app's tenant".to_owned())
        }
        _ => None,
    };
    let transient = e.is_transient();
    let text = match hint {
        Some(hint) => format!("{e} ({hint})"),
        None => e.to_string(),
    };
    if transient {
        ProviderError::Transient(text)
    } else {
        ProviderError::Permanent(text)
    }
}

/// The engine behind [`super::AzureRole`].
pub(crate) struct Pim {
    pub(crate) client: Arc<ArmClient>,
    pub(crate) names: Arc<AzureNames>,
}

impl Pim {
    /// The target in words, with the names ARM gave so far.
    pub(crate) fn describe(&self, target: &AzureTarget) -> String {
        self.names.describe(&target.role, &target.scope)
    }

    /// Makes the assignment exist until `spec.ends_at`.
    pub(crate) async fn grant(&self, spec: &GrantSpec<'_>) -> Result<GrantRecord, ProviderError> {
        let target = AzureTarget::of(spec.entitlement)?;
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
        target: &AzureTarget,
        principal: &str,
    ) -> Result<GrantRecord, Assign> {
        let (start, seconds) =
            seconds_until(self.client.rest.now(), spec.ends_at).ok_or_else(|| {
                Assign::Failed(ProviderError::Permanent(format!(
                    "the grant window ended at {} before the grant could be made",
                    pim_time(spec.ends_at)
                )))
            })?;
        let mut extra = Map::new();
        extra.insert(
            "scheduleInfo".into(),
            json!({
                "startDateTime": pim_time(start),
                "expiration": { "type": "AfterDuration", "duration": iso_duration(seconds) },
            }),
        );
        let say = Say {
            justification: spec.justification,
            ticket: spec.ticket,
        };
        let body = target.body("AdminAssign", principal, &say, extra);
        match self.submit(target, &body).await {
            Ok((name, v)) => self
                .settle(target, "AdminAssign", &name, v)
                .await
                .map(|r| self.record(target, &r, principal))
                .map_err(Assign::Failed),
            Err(e) if e.code() == Some("RoleAssignmentExists") => Err(Assign::Exists(e)),
            Err(e) => Err(Assign::Failed(reason(&e, &target.scope))),
        }
    }

    /// The principal already holds (or should hold) the assignment: extend it
    /// to `spec.ends_at` if it ends earlier, assign it if it is gone.
    async fn extend_or_assign(
        &self,
        spec: &GrantSpec<'_>,
        target: &AzureTarget,
        principal: &str,
    ) -> Result<GrantRecord, ProviderError> {
        let held = self.held_by(target, principal).await?;
        let mut ends = Vec::with_capacity(held.len());
        for instance in &held {
            ends.push((instance.end()?, instance));
        }
        let state = Held::of(ends.iter().map(|(end, _)| *end));
        if state == Held::Not {
            let assign = self.assign(spec, target, principal);
            return flow::assign_afresh(assign, &self.describe(target), principal).await;
        }
        let latest = ends
            .iter()
            .max_by_key(|(end, _)| end.map_or(OffsetDateTime::UNIX_EPOCH, |e| e))
            .map(|(_, i)| *i);
        if let Some(until) = state.covers(spec.ends_at) {
            return Ok(GrantRecord {
                reference: latest.and_then(|i| i.properties.role_assignment_schedule_id.clone()),
                details: json!({
                    "arm": { "request_type": "none", "covered_until": until, "scope": target.scope.id() },
                    "principal_id": principal,
                }),
            });
        }
        let schedule = latest
            .and_then(|i| i.properties.role_assignment_schedule_id.clone())
            .ok_or_else(|| {
                ProviderError::Transient(format!(
                    "arm: unexpected response: the assignment of {} for `{principal}` names no `roleAssignmentScheduleId`",
                    self.describe(target)
                ))
            })?;
        let end = whole_second_end(spec.ends_at);
        let mut extra = Map::new();
        extra.insert("targetRoleAssignmentScheduleId".into(), schedule.into());
        extra.insert(
            "scheduleInfo".into(),
            json!({ "expiration": { "type": "AfterDateTime", "endDateTime": pim_time(end) } }),
        );
        let say = Say {
            justification: spec.justification,
            ticket: spec.ticket,
        };
        let body = target.body("AdminExtend", principal, &say, extra);
        let (name, v) = self
            .submit(target, &body)
            .await
            .map_err(|e| reason(&e, &target.scope))?;
        let r = self.settle(target, "AdminExtend", &name, v).await?;
        Ok(self.record(target, &r, principal))
    }

    /// The principal's direct, administrator-made assignments of `target`.
    async fn held_by(
        &self,
        target: &AzureTarget,
        principal: &str,
    ) -> Result<Vec<Instance>, ProviderError> {
        Ok(self
            .instances(&target.scope, &format!("principalId eq '{principal}'"))
            .await?
            .into_iter()
            .filter(|i| {
                i.role() == target.role
                    && i.properties.principal_id.eq_ignore_ascii_case(principal)
                    && i.direct()
                    && i.assigned()
            })
            .collect())
    }

    /// Removes the assignment; one that is already gone counts as removed.
    /// A permanent one is left alone: the broker only ever assigns until a
    /// time, so a grant that found one adopted standing access it did not
    /// make (reconciliation reports it as a finding).
    pub(crate) async fn revoke(&self, spec: &GrantSpec<'_>) -> Result<(), ProviderError> {
        let target = AzureTarget::of(spec.entitlement)?;
        let principal = flow::principal(spec)?;
        let held = self.held_by(&target, principal).await?;
        let mut ends = Vec::with_capacity(held.len());
        for instance in &held {
            ends.push(instance.end()?);
        }
        if Held::of(ends) == Held::Forever {
            flow::leave_standing(spec, &self.describe(&target), principal);
            return Ok(());
        }
        let justification = format!("jit: access of request {} ended", spec.request_id);
        let say = Say {
            justification: &justification,
            ticket: spec.ticket,
        };
        self.remove(&target, principal, &say).await
    }

    async fn remove(
        &self,
        target: &AzureTarget,
        principal: &str,
        say: &Say<'_>,
    ) -> Result<(), ProviderError> {
        let body = target.body("AdminRemove", principal, say, Map::new());
        match self.submit(target, &body).await {
            Ok((name, v)) => self
                .settle(target, "AdminRemove", &name, v)
                .await
                .map(|_| ()),
            Err(e) if e.code() == Some("RoleAssignmentDoesNotExist") => Ok(()),
            Err(e) => Err(reason(&e, &target.scope)),
        }
    }

    /// Removal by reconciliation (no grant, no ticket).
    pub(crate) async fn remove_unexplained(
        &self,
        target: &AzureTarget,
        principal: &str,
        justification: &str,
    ) -> Result<(), ProviderError> {
        let say = Say {
            justification,
            ticket: None,
        };
        self.remove(target, principal, &say).await
    }

    /// Instances that `filter` selects at exactly `scope` (listings also
    /// return what lies above and below it).
    pub(crate) async fn instances(
        &self,
        scope: &AzureScope,
        filter: &str,
    ) -> Result<Vec<Instance>, ProviderError> {
        let raw: Vec<Value> = self
            .client
            .get_pages(&instances_path(scope, filter))
            .await
            .map_err(|e| reason(&e, scope))?;
        let mut out = Vec::with_capacity(raw.len());
        for value in raw {
            self.names.learn(&value["properties"]);
            let instance: Instance = serde_json::from_value(value).map_err(|e| {
                ProviderError::Transient(format!("arm: unexpected response: instance: {e}"))
            })?;
            if scope.is(&instance.properties.scope) {
                out.push(instance);
            }
        }
        Ok(out)
    }

    /// PUTs a request under a fresh name. A 409 means the name is taken: only
    /// an earlier attempt of this very call can have taken it (a retry after a
    /// 503 the first attempt got past), so the request under that name is read
    /// and followed, if it is this one.
    async fn submit(
        &self,
        target: &AzureTarget,
        body: &Value,
    ) -> Result<(String, Value), ApiError> {
        let name = Uuid::new_v4().to_string();
        let path = target.request_path(&name);
        match self.client.put(&path, body).await {
            Ok(v) => Ok((name, v)),
            Err(e) if e.status() == Some(409) => {
                let v = self.client.get(&path).await?;
                let sent = &body["properties"];
                let got = &v["properties"];
                let same = |k: &str| {
                    sent[k].as_str().zip(got[k].as_str()).is_some_and(|(a, b)| {
                        a.rsplit('/')
                            .next()
                            .unwrap_or(a)
                            .eq_ignore_ascii_case(b.rsplit('/').next().unwrap_or(b))
                    })
                };
                if same("principalId") && same("roleDefinitionId") && same("requestType") {
                    Ok((name, v))
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Follows a request to a final status, reading it again a bounded number of times.
    async fn settle(
        &self,
        target: &AzureTarget,
        request_type: &str,
        name: &str,
        mut response: Value,
    ) -> Result<Request, ProviderError> {
        let mut polls = 0;
        loop {
            self.names.learn(&response["properties"]);
            let request: Request = serde_json::from_value(response).map_err(|e| {
                ProviderError::Transient(format!("arm: unexpected response: schedule request: {e}"))
            })?;
            let status = request.properties.status.clone();
            match phase(request_type, &status) {
                Phase::Done => return Ok(request),
                Phase::Failed => {
                    return Err(ProviderError::Permanent(format!(
                        "arm: {status}: PIM did not carry out `{request_type}` of {} (request `{name}`)",
                        self.describe(target)
                    )));
                }
                Phase::Approval => {
                    if let Err(e) = self.client.post(&target.cancel_path(name)).await {
                        tracing::warn!(arm.request = %name, error = %e, "cannot cancel a PIM request waiting for approval");
                    }
                    return Err(ProviderError::Permanent(format!(
                        "arm: {status}: PIM wants its own approval for {} (request `{name}`, cancelled); the broker approves requests itself, so turn PIM approval off for it",
                        self.describe(target)
                    )));
                }
                Phase::Pending => {
                    let max = self.client.tuning().max_polls;
                    if polls >= max {
                        return Err(ProviderError::Transient(format!(
                            "arm: request `{name}` for {} is still `{status}` after {polls} checks",
                            self.describe(target)
                        )));
                    }
                    polls += 1;
                    tokio::time::sleep(poll_wait(self.client.tuning(), polls)).await;
                    response = match self.client.get(&target.request_path(name)).await {
                        Ok(v) => v,
                        // Not readable yet (replication): check again.
                        Err(e) if e.status() == Some(404) => json!({
                            "name": name,
                            "properties": { "status": status },
                        }),
                        Err(e) => return Err(reason(&e, &target.scope)),
                    };
                }
            }
        }
    }

    fn record(&self, target: &AzureTarget, r: &Request, principal: &str) -> GrantRecord {
        GrantRecord {
            reference: Some(r.name.clone()),
            details: json!({
                "arm": {
                    "request_type": r.properties.request_type,
                    "request": r.name,
                    "status": r.properties.status,
                    "target_schedule_id": r.properties.target_role_assignment_schedule_id,
                    "scope": target.scope.id(),
                    "scope_name": self.names.scope(&target.scope),
                    "role_definition_id": r.properties.role_definition_id,
                    "role_name": self.names.role(&target.role),
                },
                "principal_id": r.properties.principal_id.as_deref().unwrap_or(principal),
            }),
        }
    }
}

/// The pause before the `n`th read of a pending request: `poll_interval`,
/// doubling, at most `max_backoff` (ARM gives no hint; PIM provisions "within
/// seconds", Terraform reads every 10 s at the least).
fn poll_wait(tuning: &Tuning, n: u32) -> std::time::Duration {
    tuning
        .poll_interval
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(tuning.max_backoff.max(tuning.poll_interval))
}

/// `end` rounded up to a whole second (PIM covers the whole window).
fn whole_second_end(end: OffsetDateTime) -> OffsetDateTime {
    let floor = end.replace_nanosecond(0).unwrap_or(end);
    if floor == end {
        end
    } else {
        floor + time::Duration::seconds(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_per_request_type() {
        assert!(matches!(phase("AdminAssign", "Provisioned"), Phase::Done));
        assert!(matches!(phase("AdminAssign", "Revoked"), Phase::Failed));
        assert!(matches!(phase("AdminRemove", "Revoked"), Phase::Done));
        assert!(matches!(phase("AdminAssign", "Accepted"), Phase::Pending));
        assert!(matches!(
            phase("AdminAssign", "PendingProvisioning"),
            Phase::Pending
        ));
        assert!(matches!(
            phase("AdminAssign", "PendingApproval"),
            Phase::Approval
        ));
        assert!(matches!(
            phase("AdminAssign", "FailedAsResourceIsLocked"),
            Phase::Failed
        ));
        let t = OffsetDateTime::from_unix_timestamp(100).unwrap();
        assert_eq!(whole_second_end(t), t);
        assert_eq!(
            whole_second_end(t + time::Duration::milliseconds(1)),
            t + time::Duration::seconds(1)
        );
    }

    #[test]
    fn polls_back_off_to_a_bound() {
        let tuning = Tuning::default();
        let waits: Vec<u64> = (1..=6).map(|n| poll_wait(&tuning, n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn paths_and_bodies_follow_the_spec() {
        let target = AzureTarget {
            scope: AzureScope::parse("/providers/Microsoft.Management/managementGroups/mg-1")
                .unwrap(),
            role: "acdd72a7-3385-48ef-bd42-f606fba81ae7".to_owned(),
            condition: Some("@Resource[x] StringEquals 'y'".to_owned()),
        };
        assert_eq!(
            instances_path(&target.scope, "atScope()"),
            "/providers/Microsoft.Management/managementGroups/mg-1/providers/Microsoft.Authorization/roleAssignmentScheduleInstances?api-version=2020-10-01&$filter=atScope%28%29"
        );
        let say = Say {
            justification: "why",
            ticket: Some("INC-1"),
        };
        let b = target.body("AdminAssign", "p", &say, Map::new());
        assert_eq!(
            b["properties"]["roleDefinitionId"],
            "/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"
        );
        assert_eq!(b["properties"]["conditionVersion"], "2.0");
        assert_eq!(b["properties"]["ticketInfo"]["ticketSystem"], TICKET_SYSTEM);
        let b = target.body("AdminRemove", "p", &say, Map::new());
        assert!(b["properties"].get("condition").is_none());
    }
}
