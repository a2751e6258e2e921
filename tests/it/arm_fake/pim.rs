//! The fake's `roleAssignmentScheduleRequests` and `roleAssignmentScheduleInstances`.

#![expect(
    clippy::too_many_lines,
    reason = "a test harness: request checks read top to bottom"
)]

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::checks::check_request;
use super::scope::Scope;
use super::{ArmState, Effect, RoleAssignment, StoredRequest, arm_error, violation};
use crate::graph_fake::checks::is_guid;
use crate::graph_fake::fmt_time;

/// What ARM answers for a reused request name (observed for
/// `roleEligibilityScheduleRequests`, Azure/azure-quickstart-templates#12838;
/// the status and code are this fake's choice, the broker goes by the status).
const NAME_REUSED: &str = "RoleAssignmentRequestExists";

pub(super) fn create(
    s: &mut ArmState,
    scope: &Scope,
    name: &str,
    body: &Value,
    now: OffsetDateTime,
) -> Response {
    if !is_guid(name) {
        return violation(
            s,
            400,
            "InvalidRoleAssignmentScheduleRequestName",
            format!("request name `{name}` is not a GUID"),
        );
    }
    let key = name.to_ascii_lowercase();
    if let Some(earlier) = s.requests.get(&key) {
        if earlier.body != *body {
            s.violations.push(format!(
                "request name `{name}` reused for a different request"
            ));
        }
        return arm_error(
            409,
            NAME_REUSED,
            &format!("A role assignment request with Id: {name} already exists"),
        );
    }
    let c = match check_request(scope, body) {
        Ok(c) => c,
        Err(problem) => return violation(s, 400, "InvalidRequest", problem),
    };
    if !s.roles.contains_key(&c.role) {
        // A catalog may name a role that does not exist: not a broker bug.
        return arm_error(
            400,
            "RoleDefinitionDoesNotExist",
            &format!(
                "The specified role definition with ID '{}' does not exist.",
                c.role
            ),
        );
    }
    if s.no_write.contains(&scope.id().to_ascii_lowercase()) {
        return arm_error(
            403,
            "AuthorizationFailed",
            &format!(
                "The client '{}' with object id '{}' does not have authorization to perform action 'Microsoft.Authorization/roleAssignmentScheduleRequests/write' over scope '{}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                s.broker_oid,
                s.broker_oid,
                scope.id()
            ),
        );
    }
    let start = c.start.map_or(now, |t| t.max(now));
    let end = match (c.duration, c.end) {
        (Some(d), _) => Some(start + time::Duration::seconds(d)),
        (None, Some(e)) => Some(e),
        (None, None) => None,
    };
    let existing = s.assignments.iter().position(|a| {
        a.scope.same(scope)
            && a.role == c.role
            && a.principal == c.principal
            && a.member_type == "Direct"
            && a.assignment_type == "Assigned"
    });
    let effect = match c.request_type.as_str() {
        "AdminAssign" => {
            if !c.expiration {
                return violation(
                    s,
                    400,
                    "InvalidRequest",
                    "`AdminAssign` without `scheduleInfo.expiration` (the broker always sends one)"
                        .into(),
                );
            }
            if let Some(response) = policy_check(s, &c, start, end) {
                return response;
            }
            if existing.is_some() {
                return arm_error(
                    400,
                    "RoleAssignmentExists",
                    "The Role assignment already exists.",
                );
            }
            Effect::Create(Box::new(RoleAssignment {
                schedule: uuid::Uuid::new_v4().to_string(),
                instance: uuid::Uuid::new_v4().to_string(),
                scope: scope.clone(),
                role: c.role.clone(),
                principal: c.principal.clone(),
                start,
                end,
                assignment_type: "Assigned".to_owned(),
                member_type: "Direct".to_owned(),
                condition: c.condition.clone(),
                created: now,
            }))
        }
        "AdminExtend" => {
            let Some(target) = c.target_schedule.as_deref() else {
                return violation(
                    s,
                    400,
                    "InvalidRequest",
                    "`AdminExtend` needs `targetRoleAssignmentScheduleId`".into(),
                );
            };
            let Some(p) = existing else {
                return arm_error(
                    400,
                    "RoleAssignmentDoesNotExist",
                    "The Role assignment does not exist.",
                );
            };
            let a = &s.assignments[p];
            let names_it = target.eq_ignore_ascii_case(&a.schedule_id())
                || target.eq_ignore_ascii_case(&a.schedule);
            if !names_it {
                return violation(
                    s,
                    400,
                    "InvalidRequest",
                    format!(
                        "`targetRoleAssignmentScheduleId` `{target}` is not the schedule of the assignment (`{}`)",
                        a.schedule_id()
                    ),
                );
            }
            if !c.expiration || c.permanent {
                return violation(
                    s,
                    400,
                    "InvalidRequest",
                    "`AdminExtend` needs a new end in `scheduleInfo.expiration`".into(),
                );
            }
            if let Some(response) = policy_check(s, &c, now, end) {
                return response;
            }
            Effect::SetEnd(a.schedule.clone(), end)
        }
        "AdminRemove" => {
            let Some(p) = existing else {
                return arm_error(
                    400,
                    "RoleAssignmentDoesNotExist",
                    "The Role assignment does not exist.",
                );
            };
            if now - s.assignments[p].created < s.min_active {
                return arm_error(
                    400,
                    "ActiveDurationTooShort",
                    "The Active duration is too short. Miniumum Required is 5 minutes.",
                );
            }
            Effect::Remove(s.assignments[p].schedule.clone())
        }
        other => {
            return violation(
                s,
                400,
                "InvalidRequest",
                format!(
                    "the fake implements AdminAssign, AdminExtend and AdminRemove, not `{other}`"
                ),
            );
        }
    };
    let done = if c.request_type == "AdminRemove" {
        "Revoked"
    } else {
        "Provisioned"
    };
    let (final_status, effect) = match &s.final_status {
        Some(status) => (status.clone(), None),
        None => (done.to_owned(), Some(effect)),
    };
    let target_schedule = match &effect {
        Some(Effect::Create(a)) => Some(a.schedule_id()),
        Some(Effect::SetEnd(..) | Effect::Remove(_)) => {
            existing.map(|p| s.assignments[p].schedule_id())
        }
        None => None,
    };
    let status = if s.pending_reads > 0 {
        "Accepted"
    } else {
        final_status.as_str()
    };
    let object = request_object(
        s,
        scope,
        name,
        &c,
        body,
        status,
        start,
        end,
        target_schedule.as_deref(),
        now,
    );
    let mut stored = StoredRequest {
        object: object.clone(),
        body: body.clone(),
        reads_left: s.pending_reads,
        effect,
        final_status,
    };
    if stored.reads_left == 0 {
        apply(s, &mut stored);
    }
    s.requests.insert(key, stored);
    (StatusCode::CREATED, axum::Json(object)).into_response()
}

/// PIM's `Expiration_Admin_Assignment` and `Enablement_Admin_Assignment` rules.
fn policy_check(
    s: &ArmState,
    c: &super::checks::Checked,
    start: OffsetDateTime,
    end: Option<OffsetDateTime>,
) -> Option<Response> {
    let p = &s.policy;
    let mut rules = Vec::new();
    let too_long = match (end, p.max_duration) {
        (None, _) => !p.permanent_allowed,
        (Some(end), Some(max)) => end - start > time::Duration::seconds(max),
        (Some(_), None) => false,
    };
    if too_long {
        rules.push("\"ExpirationRule\"");
    }
    if p.require_justification && !c.justification {
        rules.push("\"JustificationRule\"");
    }
    if p.require_ticket && !c.ticket {
        rules.push("\"TicketingRule\"");
    }
    (!rules.is_empty()).then(|| {
        arm_error(
            400,
            "RoleAssignmentRequestPolicyValidationFailed",
            &format!("The following policy rules failed: [{}]", rules.join(",")),
        )
    })
}

/// Carries out a provisioned request.
fn apply(s: &mut ArmState, request: &mut StoredRequest) {
    request.object["properties"]["status"] = json!(request.final_status);
    match request.effect.take() {
        Some(Effect::Create(a)) => s.assignments.push(*a),
        Some(Effect::SetEnd(schedule, end)) => {
            if let Some(a) = s.assignments.iter_mut().find(|a| a.schedule == schedule) {
                a.end = end;
            }
        }
        Some(Effect::Remove(schedule)) => s.assignments.retain(|a| a.schedule != schedule),
        None => {}
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the parts of one response object"
)]
fn request_object(
    s: &ArmState,
    scope: &Scope,
    name: &str,
    c: &super::checks::Checked,
    body: &Value,
    status: &str,
    start: OffsetDateTime,
    end: Option<OffsetDateTime>,
    target_schedule: Option<&str>,
    now: OffsetDateTime,
) -> Value {
    let p = &body["properties"];
    let expiration = &p["scheduleInfo"]["expiration"];
    let ticket = &p["ticketInfo"];
    json!({
        "id": format!("{}/providers/Microsoft.Authorization/RoleAssignmentScheduleRequests/{name}", scope.id()),
        "name": name,
        "type": "Microsoft.Authorization/RoleAssignmentScheduleRequests",
        "properties": {
            "scope": scope.id(),
            "roleDefinitionId": scope.role_definition_id(&c.role),
            "principalId": c.principal,
            "principalType": "User",
            "requestType": c.request_type,
            "status": status,
            "approvalId": null,
            "targetRoleAssignmentScheduleId": target_schedule,
            "targetRoleAssignmentScheduleInstanceId": null,
            "scheduleInfo": {
                "startDateTime": fmt_time(start),
                "expiration": {
                    "type": expiration.get("type").cloned().unwrap_or(Value::Null),
                    "endDateTime": end.filter(|_| expiration["type"] == "AfterDateTime").map(fmt_time),
                    "duration": expiration.get("duration").cloned().unwrap_or(Value::Null),
                },
            },
            "linkedRoleEligibilityScheduleId": null,
            "justification": p.get("justification").cloned().unwrap_or(Value::Null),
            "ticketInfo": {
                "ticketNumber": ticket.get("ticketNumber").cloned().unwrap_or(Value::Null),
                "ticketSystem": ticket.get("ticketSystem").cloned().unwrap_or(Value::Null),
            },
            "condition": c.condition,
            "conditionVersion": c.condition.as_ref().map(|_| "2.0"),
            "createdOn": fmt_time(now),
            "requestorId": s.broker_oid,
            "expandedProperties": s.expanded(scope, &c.role, &c.principal),
        }
    })
}

pub(super) fn get_request(
    s: &mut ArmState,
    scope: &Scope,
    name: &str,
    now: OffsetDateTime,
) -> Response {
    let key = name.to_ascii_lowercase();
    let Some(mut request) = s.requests.remove(&key) else {
        return arm_error(
            404,
            "RoleAssignmentScheduleRequestNotFound",
            &format!("The role assignment schedule request '{name}' is not found."),
        );
    };
    let at = request.object["properties"]["scope"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !at.eq_ignore_ascii_case(&scope.id()) {
        s.requests.insert(key, request);
        return violation(
            s,
            404,
            "RoleAssignmentScheduleRequestNotFound",
            format!("request `{name}` was made at `{at}`, not `{}`", scope.id()),
        );
    }
    if request.reads_left > 0 {
        request.reads_left -= 1;
        if request.reads_left == 0 {
            apply(s, &mut request);
            s.expire(now);
        }
    }
    let object = request.object.clone();
    s.requests.insert(key, request);
    axum::Json(object).into_response()
}

pub(super) fn cancel(s: &mut ArmState, name: &str) -> Response {
    let Some(request) = s.requests.get_mut(&name.to_ascii_lowercase()) else {
        return arm_error(
            404,
            "RoleAssignmentScheduleRequestNotFound",
            &format!("The role assignment schedule request '{name}' is not found."),
        );
    };
    request.object["properties"]["status"] = json!("Canceled");
    request.effect = None;
    request.reads_left = 0;
    StatusCode::OK.into_response()
}

/// One clause of the documented `$filter` forms.
enum Clause {
    AtScope,
    Principal(String),
    Role(String),
}

fn parse_filter(filter: &str) -> Option<Vec<Clause>> {
    filter
        .split(" and ")
        .map(|clause| {
            let clause = clause.trim();
            if clause == "atScope()" {
                return Some(Clause::AtScope);
            }
            if let Some(inner) = clause
                .strip_prefix("assignedTo('")
                .and_then(|r| r.strip_suffix("')"))
            {
                return Some(Clause::Principal(inner.to_ascii_lowercase()));
            }
            let (name, value) = clause.split_once(" eq ")?;
            let value = value.trim().strip_prefix('\'')?.strip_suffix('\'')?;
            match name.trim() {
                "principalId" => Some(Clause::Principal(value.to_ascii_lowercase())),
                "roleDefinitionId" => Some(Clause::Role(value.to_ascii_lowercase())),
                _ => None,
            }
        })
        .collect()
}

pub(super) fn list_instances(
    s: &mut ArmState,
    scope: &Scope,
    path: &str,
    query: &[(String, String)],
) -> Response {
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let clauses = match get("$filter") {
        None => Vec::new(),
        Some(filter) => match parse_filter(&filter) {
            Some(c) => c,
            None => {
                return violation(
                    s,
                    400,
                    "BadRequest",
                    format!("The filter '{filter}' is not supported."),
                );
            }
        },
    };
    let above = scope.with_ancestors(|sub| s.mg_of(sub));
    let at_or_above = |a: &RoleAssignment| above.iter().any(|x| x.same(&a.scope));
    let below = |a: &RoleAssignment| match (scope, &a.scope) {
        (Scope::Subscription(sub), Scope::ResourceGroup(s2, _)) => sub.eq_ignore_ascii_case(s2),
        (Scope::ManagementGroup(mg), other) => other
            .subscription()
            .and_then(|sub| s.mg_of(sub))
            .is_some_and(|m| m.eq_ignore_ascii_case(mg)),
        _ => false,
    };
    let at_scope_only = clauses.iter().any(|c| matches!(c, Clause::AtScope));
    let items: Vec<Value> = s
        .assignments
        .iter()
        .filter(|a| at_or_above(a) || (!at_scope_only && below(a)))
        .filter(|a| {
            clauses.iter().all(|c| match c {
                Clause::AtScope => true,
                Clause::Principal(p) => &a.principal == p,
                Clause::Role(r) => r.ends_with(&format!("/{}", a.role)) || *r == a.role,
            })
        })
        .map(|a| instance_object(s, a))
        .collect();
    let skip: usize = get("$skiptoken").and_then(|v| v.parse().ok()).unwrap_or(0);
    let chunk: Vec<Value> = items.iter().skip(skip).take(s.page_size).cloned().collect();
    let mut body = json!({ "value": chunk });
    if skip + s.page_size < items.len() {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in query.iter().filter(|(k, _)| k != "$skiptoken") {
            next.append_pair(k, v);
        }
        next.append_pair("$skiptoken", &(skip + s.page_size).to_string());
        body["nextLink"] = json!(format!("{}{path}?{}", s.base, next.finish()));
    }
    axum::Json(body).into_response()
}

fn instance_object(s: &ArmState, a: &RoleAssignment) -> Value {
    let scope_id = a.scope.id();
    let sub = a.scope.subscription().unwrap_or_default();
    json!({
        "properties": {
            "scope": scope_id,
            "roleDefinitionId": a.scope.role_definition_id(&a.role),
            "principalId": a.principal,
            "principalType": "User",
            "roleAssignmentScheduleId": a.schedule_id(),
            "originRoleAssignmentId": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleAssignments/{}", a.instance),
            "status": "Provisioned",
            "startDateTime": fmt_time(a.start),
            "endDateTime": a.end.map(fmt_time),
            "linkedRoleEligibilityScheduleId": null,
            "linkedRoleEligibilityScheduleInstanceId": null,
            "assignmentType": a.assignment_type,
            "memberType": a.member_type,
            "createdOn": fmt_time(a.created),
            "condition": a.condition,
            "conditionVersion": a.condition.as_ref().map(|_| "2.0"),
            "expandedProperties": s.expanded(&a.scope, &a.role, &a.principal),
        },
        "name": a.instance,
        "id": format!("{scope_id}/providers/Microsoft.Authorization/RoleAssignmentScheduleInstances/{}", a.instance),
        "type": "Microsoft.Authorization/RoleAssignmentScheduleInstances",
    })
}
