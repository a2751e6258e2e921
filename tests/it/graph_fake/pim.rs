//! The fake's PIM and directory handlers.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::checks::{check_request, parse_time};
use super::{
    FakeInstance, FakeState, PendingRequest, fmt_time, graph_error, instance_id, violation,
};

pub(super) fn create(s: &mut FakeState, kind: &'static str, body: &Value) -> Response {
    let c = match check_request(kind, body) {
        Ok(c) => c,
        Err(problem) => return violation(s, 400, problem),
    };
    if !c.action.starts_with("admin") {
        return violation(
            s,
            400,
            format!(
                "the fake implements administrator actions only, not `{}`",
                c.action
            ),
        );
    }
    let now = s.now();
    let start = c.start.map_or(now, |t| t.max(now));
    let end = match (c.duration, c.end) {
        (Some(d), _) => Some(start + time::Duration::seconds(d)),
        (None, Some(e)) => Some(e),
        (None, None) => None,
    };
    let mut rules = Vec::new();
    if matches!(
        c.action.as_str(),
        "adminAssign" | "adminExtend" | "adminUpdate" | "adminRenew"
    ) {
        if let Some(max) = s.max_duration
            && end.is_none_or(|e| e - start > time::Duration::seconds(max))
        {
            rules.push("\"ExpirationRule\"");
        }
        if s.require_ticket && !c.ticket {
            rules.push("\"TicketingRule\"");
        }
    }
    if !rules.is_empty() {
        // PIM for Groups answers with the same code (observed in client issues).
        let code = "RoleAssignmentRequestPolicyValidationFailed";
        return graph_error(
            400,
            code,
            &format!("The following policy rules failed: [{}]", rules.join(",")),
        );
    }
    let position = s.instances.iter().position(|i| {
        i.kind == kind
            && i.principal == c.principal
            && i.object == c.object
            && i.scope == c.scope
            && i.member_type == "Direct"
    });
    let mut instance = None;
    let mut target_schedule = None;
    let status = match c.action.as_str() {
        "adminAssign" => {
            if position.is_some() {
                return graph_error(
                    400,
                    "RoleAssignmentExists",
                    "The Role assignment already exists.",
                );
            }
            let made = FakeInstance {
                id: instance_id(kind, &c.object, &c.scope),
                kind,
                principal: c.principal.clone(),
                object: c.object.clone(),
                scope: c.scope.clone(),
                start,
                end,
                assignment_type: "Assigned".into(),
                member_type: "Direct".into(),
                created: now,
            };
            target_schedule = Some(made.id.clone());
            instance = Some(made);
            "Provisioned"
        }
        "adminExtend" | "adminUpdate" | "adminRenew" => {
            let Some(p) = position else {
                return graph_error(
                    400,
                    "RoleAssignmentDoesNotExist",
                    "The Role assignment does not exist.",
                );
            };
            s.instances[p].end = end;
            target_schedule = Some(s.instances[p].id.clone());
            "Provisioned"
        }
        "adminRemove" => {
            let Some(p) = position else {
                return graph_error(
                    400,
                    "RoleAssignmentDoesNotExist",
                    "The Role assignment does not exist.",
                );
            };
            if now - s.instances[p].created < s.min_active {
                return graph_error(
                    400,
                    "ActiveDurationTooShort",
                    "The Active duration is too short. Miniumum Required is 5 minutes.",
                );
            }
            s.instances.remove(p);
            "Revoked"
        }
        other => return violation(s, 400, format!("the fake does not implement `{other}`")),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let scripted = s.final_status.clone();
    let polls = s.pending_polls;
    let status = match (&scripted, instance.is_some()) {
        (Some(final_status), true) => {
            instance = None;
            final_status.clone()
        }
        (None, true) if polls > 0 => "PendingProvisioning".to_owned(),
        _ => status.to_owned(),
    };
    let object = request_object(s, kind, &id, &status, body, target_schedule.as_deref());
    if status == "PendingProvisioning" {
        s.requests.insert(
            id,
            PendingRequest {
                object: object.clone(),
                polls_left: polls,
                instance,
            },
        );
    } else {
        if let Some(made) = instance {
            s.instances.push(made);
        }
        s.requests.insert(
            id,
            PendingRequest {
                object: object.clone(),
                polls_left: 0,
                instance: None,
            },
        );
    }
    (StatusCode::CREATED, axum::Json(object)).into_response()
}

fn request_object(
    s: &FakeState,
    kind: &str,
    id: &str,
    status: &str,
    body: &Value,
    target: Option<&str>,
) -> Value {
    let now = fmt_time(s.now());
    let b = |k: &str| body.get(k).cloned().unwrap_or(Value::Null);
    let schedule = body.get("scheduleInfo").map_or(Value::Null, |sch| {
        let e = &sch["expiration"];
        json!({
            "startDateTime": sch.get("startDateTime").and_then(Value::as_str).and_then(parse_time).map(|t| fmt_time(t.max(s.now()))),
            "recurrence": null,
            "expiration": {
                "type": e["type"].clone(),
                "endDateTime": e.get("endDateTime").cloned().unwrap_or(Value::Null),
                "duration": e.get("duration").cloned().unwrap_or(Value::Null),
            }
        })
    });
    let ticket = body.get("ticketInfo");
    let mut o = json!({
        "@odata.context": if kind == "role" {
            format!("{}/v1.0/$metadata#roleManagement/directory/roleAssignmentScheduleRequests/$entity", s.base)
        } else {
            format!("{}/v1.0/$metadata#identityGovernance/privilegedAccess/group/assignmentScheduleRequests/$entity", s.base)
        },
        "id": id,
        "status": status,
        "createdDateTime": now,
        "completedDateTime": now,
        "approvalId": null,
        "customData": b("customData"),
        "action": b("action"),
        "principalId": b("principalId"),
        "isValidationOnly": false,
        "targetScheduleId": target,
        "justification": b("justification"),
        "createdBy": { "application": { "displayName": null, "id": s.client_id }, "device": null, "user": null },
        "scheduleInfo": schedule,
        "ticketInfo": {
            "ticketNumber": ticket.and_then(|t| t.get("ticketNumber")).cloned().unwrap_or(Value::Null),
            "ticketSystem": ticket.and_then(|t| t.get("ticketSystem")).cloned().unwrap_or(Value::Null),
        },
    });
    let m = o.as_object_mut().unwrap();
    if kind == "role" {
        m.insert("roleDefinitionId".into(), b("roleDefinitionId"));
        m.insert("directoryScopeId".into(), b("directoryScopeId"));
        m.insert("appScopeId".into(), Value::Null);
    } else {
        m.insert("accessId".into(), b("accessId"));
        m.insert("groupId".into(), b("groupId"));
    }
    o
}

pub(super) fn get_request(s: &mut FakeState, id: &str) -> Response {
    let Some(request) = s.requests.get_mut(id) else {
        return graph_error(404, "NotFound", &format!("request `{id}` not found"));
    };
    if request.polls_left > 0 {
        request.polls_left -= 1;
        if request.polls_left == 0 {
            request.object["status"] = json!("Provisioned");
            if let Some(made) = request.instance.take() {
                s.instances.push(made);
            }
        }
    }
    let object = s.requests[id].object.clone();
    axum::Json(object).into_response()
}

pub(super) fn cancel(s: &mut FakeState, id: &str) -> Response {
    let Some(request) = s.requests.get_mut(id) else {
        return graph_error(404, "NotFound", &format!("request `{id}` not found"));
    };
    request.object["status"] = json!("Canceled");
    request.instance = None;
    request.polls_left = 0;
    StatusCode::NO_CONTENT.into_response()
}

/// `name eq 'value' [and …]`.
fn parse_filter(filter: &str) -> Option<Vec<(String, String)>> {
    filter
        .split(" and ")
        .map(|clause| {
            let (name, value) = clause.trim().split_once(" eq ")?;
            let value = value.trim().strip_prefix('\'')?.strip_suffix('\'')?;
            Some((name.trim().to_owned(), value.replace("''", "'")))
        })
        .collect()
}

fn page(s: &FakeState, path: &str, query: &[(String, String)], items: &[Value]) -> Value {
    let skip: usize = query
        .iter()
        .find(|(k, _)| k == "$skiptoken")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let top: usize = query
        .iter()
        .find(|(k, _)| k == "$top")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(100);
    let size = top.min(s.page_size);
    let chunk: Vec<Value> = items.iter().skip(skip).take(size).cloned().collect();
    let mut body = json!({ "@odata.context": format!("{}/v1.0/$metadata#directoryObjects", s.base), "value": chunk });
    if skip + size < items.len() {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in query.iter().filter(|(k, _)| k != "$skiptoken") {
            next.append_pair(k, v);
        }
        next.append_pair("$skiptoken", &(skip + size).to_string());
        body["@odata.nextLink"] = json!(format!("{}{path}?{}", s.base, next.finish()));
    }
    body
}

pub(super) fn list_instances(
    s: &mut FakeState,
    kind: &str,
    path: &str,
    query: &[(String, String)],
) -> Response {
    let Some(filter) = query
        .iter()
        .find(|(k, _)| k == "$filter")
        .map(|(_, v)| v.clone())
    else {
        if kind == "group" {
            return violation(
                s,
                400,
                "a `$filter` on `groupId` or `principalId` is required".into(),
            );
        }
        return violation(s, 400, "the broker must filter instances".into());
    };
    let Some(clauses) = parse_filter(&filter) else {
        return violation(s, 400, format!("Invalid filter clause: `{filter}`"));
    };
    let allowed: &[&str] = if kind == "role" {
        &["principalId", "roleDefinitionId", "directoryScopeId"]
    } else {
        &["principalId", "groupId", "accessId"]
    };
    if let Some((name, _)) = clauses.iter().find(|(n, _)| !allowed.contains(&n.as_str())) {
        return violation(
            s,
            400,
            format!("Invalid filter clause: property `{name}` is not filterable"),
        );
    }
    if kind == "group"
        && !clauses
            .iter()
            .any(|(n, _)| n == "groupId" || n == "principalId")
    {
        return violation(
            s,
            400,
            "a `$filter` on `groupId` or `principalId` is required".into(),
        );
    }
    let items: Vec<Value> = s
        .instances
        .iter()
        .filter(|i| i.kind == kind)
        .filter(|i| {
            clauses.iter().all(|(n, v)| match n.as_str() {
                "principalId" => &i.principal == v,
                "roleDefinitionId" | "groupId" => &i.object == v,
                _ => &i.scope == v,
            })
        })
        .map(|i| {
            let start = fmt_time(i.start);
            let end = i.end.map(fmt_time);
            if kind == "role" {
                json!({
                    "id": i.id, "principalId": i.principal, "roleDefinitionId": i.object,
                    "directoryScopeId": i.scope, "appScopeId": null,
                    "startDateTime": start, "endDateTime": end,
                    "assignmentType": i.assignment_type, "memberType": i.member_type,
                    "roleAssignmentOriginId": i.id, "roleAssignmentScheduleId": i.id,
                })
            } else {
                json!({
                    "id": i.id, "principalId": i.principal, "groupId": i.object, "accessId": i.scope,
                    "startDateTime": start, "endDateTime": end,
                    "assignmentType": i.assignment_type, "memberType": i.member_type,
                    "assignmentScheduleId": i.id,
                })
            }
        })
        .collect();
    axum::Json(page(s, path, query, &items)).into_response()
}

pub(super) fn member_of(
    s: &mut FakeState,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> Response {
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if headers
        .get("consistencylevel")
        .and_then(|v| v.to_str().ok())
        != Some("eventual")
        || get("$count") != Some("true")
    {
        return violation(
            s,
            400,
            "OData cast requires `ConsistencyLevel: eventual` and `$count=true`".into(),
        );
    }
    if !get("$select").is_some_and(|v| v.split(',').any(|f| f == "id")) {
        return violation(s, 400, "`$select` must include `id`".into());
    }
    if let Some(top) = get("$top")
        && !top.parse::<usize>().is_ok_and(|t| (1..=999).contains(&t))
    {
        return violation(s, 400, format!("`$top` `{top}` is not 1 to 999"));
    }
    let oid = path
        .trim_start_matches("/v1.0/users/")
        .trim_end_matches("/transitiveMemberOf/microsoft.graph.group")
        .to_owned();
    let Some(groups) = s.user_groups.get(&oid).cloned() else {
        return graph_error(
            404,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{oid}' does not exist or one of its queried reference-property objects are not present."
            ),
        );
    };
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(id, name)| json!({ "@odata.type": "#microsoft.graph.group", "id": id, "displayName": name }))
        .collect();
    let mut body = page(s, path, query, &items);
    if get("$skiptoken").is_none() {
        // `@odata.count` only on the first page.
        body["@odata.count"] = json!(items.len());
    }
    axum::Json(body).into_response()
}
