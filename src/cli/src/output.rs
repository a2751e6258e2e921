//! Human output: aligned tables, key/value blocks, relative times.

use std::fmt::Write as _;

use jit_api::{Approval, Decision, Entitlement, Me, Request, RequestState, VerifyReport};
use time::OffsetDateTime;
use time::macros::format_description;

/// `--output`: how results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Aligned, human-readable text.
    #[default]
    Table,
    /// The API's JSON, verbatim.
    Json,
}

/// Renders rows under a header, columns padded to the widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(width(cell));
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if i + 1 < cols {
                text.push_str(&" ".repeat(widths[i].saturating_sub(width(cell))));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `key: value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let _ = writeln!(out, "{k}:{}  {v}", " ".repeat(w - width(k)));
    }
    out
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// The last 8 characters of a request id (accepted back, see
/// `commands::requests::resolve_id`).
///
/// Not the first 8: request ids are `UUIDv7`, whose leading characters are a
/// timestamp, so requests filed within the same minute share them. The end
/// of a `UUIDv7` is random.
pub fn short_id(id: &uuid::Uuid) -> String {
    let text = id.simple().to_string();
    text[text.len() - 8..].to_owned()
}

/// `1h5m`-style span between two instants (never negative).
pub fn span(secs: i64) -> String {
    let secs = secs.max(0).unsigned_abs();
    if secs < 60 {
        return format!("{secs}s");
    }
    // Drop seconds once above a minute: "42m", "1h5m", "2d3h".
    let minutes = secs / 60;
    if minutes < 60 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 24 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    let days = hours / 24;
    let h = hours % 24;
    if h == 0 {
        format!("{days}d")
    } else {
        format!("{days}d{h}h")
    }
}

/// "3h ago" for something that happened at `at`; "just now" within the second, and for a
/// time a little ahead of this machine's clock (the broker's clock is not ours).
pub fn ago(at: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (now - at).whole_seconds();
    if secs < 1 {
        "just now".to_owned()
    } else {
        format!("{} ago", span(secs))
    }
}

/// `2026-11-29 08:17:03 UTC`.
pub fn timestamp(at: OffsetDateTime) -> String {
    let fmt = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    at.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| at.to_string())
}

/// Time left on an active grant, `-` otherwise.
pub fn time_left(req: &Request, now: OffsetDateTime) -> String {
    match (req.state, req.expires_at) {
        (RequestState::Active, Some(exp)) if exp > now => {
            format!("{} left", span((exp - now).whole_seconds()))
        }
        (RequestState::Active, Some(_)) => "expiring".to_owned(),
        _ => "-".to_owned(),
    }
}

/// "1/2 approvals" style progress of a request.
pub fn approvals_progress(req: &Request) -> String {
    let got = req
        .approvals
        .iter()
        .filter(|a| a.decision == Decision::Approve)
        .count();
    if req.approvals_required == 0 {
        "auto-approved".to_owned()
    } else {
        format!("{got}/{} approvals", req.approvals_required)
    }
}

/// `jit show`'s approvals: [`jit_api::approvals_words`] ("auto-approved", "none: break-glass",
/// "0 of 2"), with who approved when anyone did ("1 of 2: bob@example.com").
pub fn approvals_detail(req: &Request) -> String {
    let approvers: Vec<&str> = req
        .approvals
        .iter()
        .filter(|a| a.decision == Decision::Approve)
        .map(|a| a.approver.as_str())
        .collect();
    let words = jit_api::approvals_words(req.approvals_required, req.break_glass, approvers.len());
    if req.approvals_required == 0 || approvers.is_empty() {
        words
    } else {
        format!("{words}: {}", approvers.join(", "))
    }
}

/// One line describing where a request stands, for progress output.
pub fn state_line(req: &Request, now: OffsetDateTime) -> String {
    let id = short_id(&req.id);
    let ent = &req.entitlement;
    match req.state {
        RequestState::Pending => format!("{id} `{ent}`: pending, {}", approvals_progress(req)),
        RequestState::Approved => format!("{id} `{ent}`: approved, granting access"),
        RequestState::Scheduled => match req.start_at {
            Some(start) => format!("{id} `{ent}`: scheduled, starts {}", timestamp(start)),
            None => format!("{id} `{ent}`: scheduled"),
        },
        RequestState::Active => match req.expires_at {
            Some(exp) => format!(
                "{id} `{ent}`: active until {} ({})",
                timestamp(exp),
                time_left(req, now)
            ),
            None => format!("{id} `{ent}`: active"),
        },
        other => format!("{id} `{ent}`: {other}"),
    }
}

/// `jit status`: active grants first, then the requests.
pub fn status(requests: &[Request], now: OffsetDateTime, limit: Option<usize>) -> String {
    let mut out = String::new();
    let mut active: Vec<&Request> = requests
        .iter()
        .filter(|r| r.state == RequestState::Active)
        .collect();
    active.sort_by_key(|r| r.expires_at);
    if active.is_empty() {
        out.push_str("No active grants.\n");
    } else {
        out.push_str("Active grants\n");
        let rows: Vec<Vec<String>> = active
            .iter()
            .map(|r| {
                vec![
                    r.entitlement.clone(),
                    short_id(&r.id),
                    r.expires_at.map_or_else(|| "-".to_owned(), timestamp),
                    time_left(r, now),
                    r.target.clone(),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["ENTITLEMENT", "ID", "EXPIRES", "LEFT", "GRANTS"],
            &rows,
        )));
    }
    let mut all: Vec<&Request> = requests.iter().collect();
    all.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    let total = all.len();
    if let Some(limit) = limit {
        all.truncate(limit);
    }
    out.push('\n');
    if all.is_empty() {
        out.push_str("No requests yet: see `jit entitlements`, then `jit request ENTITLEMENT --duration 1h --reason TEXT`.\n");
        return out;
    }
    out.push_str("My requests\n");
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|r| {
            vec![
                short_id(&r.id),
                r.entitlement.clone(),
                r.state.to_string(),
                r.duration.clone(),
                ago(r.created_at, now),
                detail(r, now),
            ]
        })
        .collect();
    out.push_str(&indent(&table(
        &[
            "ID",
            "ENTITLEMENT",
            "STATE",
            "DURATION",
            "CREATED",
            "DETAIL",
        ],
        &rows,
    )));
    if total > all.len() {
        let _ = writeln!(
            out,
            "  … {} older requests not shown (`jit status --all`)",
            total - all.len()
        );
    }
    out
}

fn detail(r: &Request, now: OffsetDateTime) -> String {
    match r.state {
        RequestState::Pending => approvals_progress(r),
        RequestState::Active => time_left(r, now),
        RequestState::Scheduled => r
            .start_at
            .map(|start| format!("starts {}", timestamp(start)))
            .unwrap_or_default(),
        RequestState::Failed => r.failure_reason.clone().unwrap_or_default(),
        RequestState::Denied => r
            .approvals
            .iter()
            .find(|a| a.decision == Decision::Deny)
            .map(|a| format!("by {}", a.approver))
            .unwrap_or_default(),
        _ => String::new(),
    }
    .chars()
    .take(60)
    .collect()
}

fn indent(text: &str) -> String {
    let mut out = String::new();
    for l in text.lines() {
        let _ = writeln!(out, "  {l}");
    }
    out
}

/// `jit show`: the request and its timeline.
pub fn request_detail(
    req: &Request,
    events: &[jit_api::AuditEvent],
    now: OffsetDateTime,
) -> String {
    let mut pairs = vec![
        ("Request", req.id.to_string()),
        ("Entitlement", req.entitlement.clone()),
    ];
    if !req.target.is_empty() {
        pairs.push(("Grants", req.target.clone()));
    }
    pairs.extend([
        ("Requester", req.requester.clone()),
        ("State", req.state.to_string()),
        ("Duration", req.duration.clone()),
        ("Reason", req.justification.clone()),
    ]);
    if let Some(t) = &req.ticket {
        pairs.push(("Ticket", t.clone()));
    }
    pairs.push(("Approvals", approvals_detail(req)));
    if let Some(start) = req.start_at {
        pairs.push(("Starts", timestamp(start)));
    }
    if req.state == RequestState::Active {
        pairs.push(("Time left", time_left(req, now)));
    }
    if req.break_glass {
        pairs.push(("Break-glass", "yes (reviewed afterwards)".to_owned()));
    }
    if req.simulated {
        pairs.push((
            "Simulated",
            "yes (development mode: nothing granted in the cloud)".to_owned(),
        ));
    }
    if let Some(ext) = &req.extends {
        pairs.push(("Extends", ext.to_string()));
    }
    if let Some(reason) = &req.failure_reason {
        pairs.push(("Failure", reason.clone()));
    }
    let mut out = key_values(&pairs);
    out.push_str("\nTimeline\n");
    let rows: Vec<Vec<String>> = if events.is_empty() {
        timeline(req)
            .into_iter()
            .map(|(at, what)| vec![timestamp(at), what])
            .collect()
    } else {
        let mut events: Vec<&jit_api::AuditEvent> = events.iter().collect();
        events.sort_by_key(|e| e.seq);
        events
            .iter()
            .map(|e| vec![timestamp(e.at), event_text(e)])
            .collect()
    };
    for row in rows {
        let _ = writeln!(out, "  {}  {}", row[0], row[1]);
    }
    out
}

/// One audit event of a request's timeline: what, who, and the comment or
/// reason given with it (an approval's comment, an extension's reason).
pub fn event_text(e: &jit_api::AuditEvent) -> String {
    let mut text = format!("{} by {}", e.action, e.actor);
    let said = ["comment", "justification", "reason"]
        .iter()
        .find_map(|k| e.data.get(k).and_then(serde_json::Value::as_str))
        .map(str::trim)
        .filter(|c| !c.is_empty());
    if let Some(said) = said {
        let _ = write!(text, ": \"{said}\"");
    }
    text
}

/// The timeline built from the request itself: filed, decisions, active, end.
pub fn timeline(req: &Request) -> Vec<(OffsetDateTime, String)> {
    let mut items = vec![(req.created_at, format!("requested by {}", req.requester))];
    for a in &req.approvals {
        items.push((a.at, decision_text(a)));
    }
    if let Some(at) = req.activated_at {
        items.push((at, "access granted".to_owned()));
    }
    if let Some(exp) = req.expires_at {
        let label = match req.state {
            RequestState::Active => "access ends",
            RequestState::Expired => "access ended",
            _ => "was due to end",
        };
        items.push((exp, label.to_owned()));
    }
    items.sort_by_key(|(at, _)| *at);
    if req.state.is_terminal() && req.state != RequestState::Expired {
        let last = items.last().map_or(req.created_at, |(at, _)| *at);
        items.push((last, format!("now {}", req.state)));
    }
    items
}

fn decision_text(a: &Approval) -> String {
    let verb = match a.decision {
        Decision::Approve => "approved",
        Decision::Deny => "denied",
    };
    match &a.comment {
        Some(c) if !c.trim().is_empty() => format!("{verb} by {}: \"{}\"", a.approver, c.trim()),
        _ => format!("{verb} by {}", a.approver),
    }
}

/// `jit entitlements`.
pub fn entitlements(list: &[Entitlement]) -> String {
    if list.is_empty() {
        return "No entitlements you may request.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.title.clone(),
                e.kind.clone(),
                e.max_duration.clone(),
                if e.approvals_required == 0 {
                    "auto-approved".to_owned()
                } else {
                    e.approvals_required.to_string()
                },
                step_up(e),
                e.target.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "TITLE",
            "KIND",
            "MAX DURATION",
            "APPROVALS",
            "STEP-UP",
            "GRANTS",
        ],
        &rows,
    )
}

/// What requesting needs of the sign-in: `mfa`, an authentication context, both, or `no`.
fn step_up(e: &Entitlement) -> String {
    match (e.require_mfa, &e.auth_context) {
        (false, None) => "no".to_owned(),
        (true, None) => "mfa".to_owned(),
        (false, Some(context)) => context.clone(),
        (true, Some(context)) => format!("mfa, {context}"),
    }
}

/// `jit whoami`.
pub fn me(me: &Me, server: &str) -> String {
    let mut pairs = vec![
        ("Name", me.name.clone()),
        ("Email", me.email.clone()),
        ("Id", me.id.clone()),
        (
            "Groups",
            if me.groups.is_empty() {
                "-".to_owned()
            } else {
                me.groups.join(", ")
            },
        ),
    ];
    if !me.roles.is_empty() {
        pairs.push(("Roles", me.roles.join(", ")));
    }
    let mut flags = Vec::new();
    if me.admin {
        flags.push("admin");
    }
    if me.auditor {
        flags.push("auditor");
    }
    if !flags.is_empty() {
        pairs.push(("Privileges", flags.join(", ")));
    }
    pairs.push(("Server", server.to_owned()));
    key_values(&pairs)
}

/// `jit audit verify`, table form.
pub fn verify_report(r: &VerifyReport) -> String {
    let mut out = verify_chain(r);
    if let Some(c) = &r.checkpoints {
        match &c.newest {
            Some(cp) => {
                let _ = writeln!(
                    out,
                    "  signed checkpoint {} covers seq 1 to {} (signed {} by {}, key {})",
                    cp.number,
                    cp.seq,
                    cp.at
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                    cp.broker_id,
                    cp.key_id
                );
            }
            None => {
                let _ = writeln!(out, "  no signed checkpoint covers the chain yet");
            }
        }
        if c.not_covered > 0 {
            let _ = writeln!(
                out,
                "  {} events after it verified as a chain only, not yet covered by a checkpoint",
                c.not_covered
            );
        }
        if let Some(n) = c.disproved_by {
            let _ = writeln!(out, "  disproved by checkpoint {n}");
        }
    }
    if r.pending > 0 {
        let _ = writeln!(out, "  {} more events written, not chained yet", r.pending);
    }
    if r.held > 0 {
        let _ = writeln!(
            out,
            "  {} events held by the broker while the audit store fails, not in the chain yet",
            r.held
        );
    }
    out
}

fn verify_chain(r: &VerifyReport) -> String {
    if r.ok {
        let last = r
            .last_seq
            .map_or_else(String::new, |s| format!(" (last seq {s})"));
        format!("audit chain ok: {} events checked{last}\n", r.checked)
    } else {
        let mut out = format!("audit chain BROKEN after {} events checked\n", r.checked);
        if let Some(seq) = r.first_bad_seq {
            let _ = writeln!(out, "  first bad seq: {seq}");
        }
        if let Some(p) = &r.problem {
            let _ = writeln!(out, "  problem:       {p}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;
    use time::format_description::well_known::Rfc3339;

    use super::*;

    fn at(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &Rfc3339).unwrap()
    }

    fn request(state: RequestState) -> Request {
        Request {
            id: "01a226a8-aece-7068-948f-b7f20b7c6f2e".parse().unwrap(),
            entitlement: "aws-prod-admin".into(),
            requester: "alice@example.com".into(),
            state,
            duration: "1h".into(),
            duration_seconds: 3600,
            justification: "INC-1 fix the database".into(),
            ticket: Some("INC-1".into()),
            created_at: at("2026-11-29T08:00:00Z"),
            pending_until: None,
            start_at: None,
            activated_at: None,
            expires_at: None,
            approvals: vec![],
            approvals_required: 1,
            break_glass: false,
            extends: None,
            simulated: false,
            failure_reason: None,
            kind: "aws_role".into(),
            target: "role arn:aws:iam::111111111111:role/JitAdmin".into(),
        }
    }

    #[test]
    fn tables_are_aligned() {
        let out = table(
            &["ID", "TITLE", "N"],
            &[
                vec!["a".into(), "long title here".into(), "1".into()],
                vec!["bbbbbb".into(), "t".into(), "22".into()],
            ],
        );
        assert_eq!(
            out,
            "ID      TITLE            N\n\
             a       long title here  1\n\
             bbbbbb  t                22\n"
        );
    }

    #[test]
    fn tables_count_characters_not_bytes() {
        let out = table(
            &["T", "X"],
            &[
                vec!["prod — admin".into(), "1".into()],
                vec!["x".into(), "2".into()],
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[1].chars().position(|c| c == '1'),
            lines[2].chars().position(|c| c == '2')
        );
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(59), "59s");
        assert_eq!(span(60), "1m");
        assert_eq!(span(3599), "59m");
        assert_eq!(span(3600), "1h");
        assert_eq!(span(3900), "1h5m");
        assert_eq!(span(90_000), "1d1h");
        assert_eq!(span(-5), "0s");
        let now = at("2026-11-29T08:00:00Z");
        assert_eq!(ago(now - Duration::hours(3), now), "3h ago");
        assert_eq!(ago(now - Duration::seconds(1), now), "1s ago");
        // Filed a moment ago by a broker whose clock runs ahead: not "in 0s".
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now + Duration::seconds(2), now), "just now");
    }

    #[test]
    fn entitlement_table() {
        let out = entitlements(&[
            Entitlement {
                id: "aws-prod-admin".into(),
                title: "AWS production — administrator".into(),
                kind: "aws_role".into(),
                max_duration: "4h".into(),
                approvals_required: 1,
                require_mfa: true,
                auth_context: None,
                require_ticket: false,
                break_glass: false,
                target: "role arn:aws:iam::111111111111:role/JitAdmin".into(),
                members: vec![],
            },
            Entitlement {
                id: "dev".into(),
                title: "Dev".into(),
                kind: "aws_identity_center".into(),
                max_duration: "8h".into(),
                approvals_required: 0,
                require_mfa: false,
                auth_context: None,
                require_ticket: false,
                break_glass: false,
                target: "Reader at management group mg-dev".into(),
                members: vec![],
            },
            Entitlement {
                id: "entra-admin".into(),
                title: "Entra admin".into(),
                kind: "entra_role".into(),
                max_duration: "1h".into(),
                approvals_required: 1,
                require_mfa: false,
                auth_context: Some("c1".into()),
                require_ticket: false,
                break_glass: false,
                target: "User Administrator in the directory".into(),
                members: vec![],
            },
            Entitlement {
                id: "oncall".into(),
                title: "On-call kit".into(),
                kind: "bundle".into(),
                max_duration: "2h".into(),
                approvals_required: 1,
                require_mfa: false,
                auth_context: None,
                require_ticket: false,
                break_glass: false,
                target: "sandbox (role arn:aws:iam::2:role/S) + ops (member of group g)".into(),
                members: vec!["sandbox".into(), "ops".into()],
            },
        ]);
        assert_eq!(
            out,
            "ID              TITLE                           KIND                 MAX DURATION  APPROVALS      STEP-UP  GRANTS\n\
             aws-prod-admin  AWS production — administrator  aws_role             4h            1              mfa      role arn:aws:iam::111111111111:role/JitAdmin\n\
             dev             Dev                             aws_identity_center  8h            auto-approved  no       Reader at management group mg-dev\n\
             entra-admin     Entra admin                     entra_role           1h            1              c1       User Administrator in the directory\n\
             oncall          On-call kit                     bundle               2h            1              no       sandbox (role arn:aws:iam::2:role/S) + ops (member of group g)\n"
        );
    }

    #[test]
    fn status_lists_active_grants_with_time_left() {
        let now = at("2026-11-29T09:00:00Z");
        let mut active = request(RequestState::Active);
        active.activated_at = Some(at("2026-11-29T08:30:00Z"));
        active.expires_at = Some(at("2026-11-29T09:30:00Z"));
        let mut pending = request(RequestState::Pending);
        pending.id = "01a226a8-aece-7068-948f-b7f21b7c6f2e".parse().unwrap();
        pending.created_at = at("2026-11-29T08:55:00Z");
        let out = status(&[active, pending], now, Some(20));
        assert!(out.starts_with("Active grants\n"), "{out}");
        assert!(
            out.contains(
                "aws-prod-admin  0b7c6f2e  2026-11-29 09:30:00 UTC  30m left  role arn:aws:iam::111111111111:role/JitAdmin"
            ),
            "{out}"
        );
        assert!(
            out.contains("1b7c6f2e  aws-prod-admin  pending  1h        5m ago   0/1 approvals"),
            "{out}"
        );
        let empty = status(&[], now, None);
        assert!(empty.contains("No active grants."), "{empty}");
        assert!(empty.contains("jit request"), "{empty}");
    }

    #[test]
    fn approvals_name_the_approvers_once() {
        let now = at("2026-11-29T09:00:00Z");
        let mut req = request(RequestState::Active);
        req.approvals_required = 2;
        for who in ["bob@example.com", "dave@example.com"] {
            req.approvals.push(Approval {
                approver: who.into(),
                decision: Decision::Approve,
                comment: None,
                at: at("2026-11-29T08:05:00Z"),
            });
        }
        let out = request_detail(&req, &[], now);
        assert!(
            out.contains("Approvals:    2 of 2: bob@example.com, dave@example.com\n"),
            "{out}"
        );
        req.approvals.clear();
        req.approvals_required = 0;
        let out = request_detail(&req, &[], now);
        assert!(out.contains("Approvals:    auto-approved\n"), "{out}");
        req.approvals_required = 1;
        let out = request_detail(&req, &[], now);
        assert!(out.contains("Approvals:    0 of 1\n"), "{out}");
    }

    #[test]
    fn timeline_orders_decisions() {
        let mut req = request(RequestState::Denied);
        req.approvals.push(Approval {
            approver: "bob@example.com".into(),
            decision: Decision::Deny,
            comment: Some("not during the freeze".into()),
            at: at("2026-11-29T08:05:00Z"),
        });
        let items = timeline(&req);
        let texts: Vec<&str> = items.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "requested by alice@example.com",
                "denied by bob@example.com: \"not during the freeze\"",
                "now denied"
            ]
        );
        let out = request_detail(&req, &[], at("2026-11-29T09:00:00Z"));
        assert!(out.contains("State:        denied"), "{out}");
        assert!(
            out.contains("Grants:       role arn:aws:iam::111111111111:role/JitAdmin"),
            "{out}"
        );
        assert!(
            out.contains("2026-11-29 08:05:00 UTC  denied by bob@example.com"),
            "{out}"
        );
    }

    #[test]
    fn audit_timeline_shows_what_was_said() {
        let req = request(RequestState::Active);
        let event =
            |seq: i64, actor: &str, action: &str, data: serde_json::Value| jit_api::AuditEvent {
                seq,
                at: at("2026-11-29T08:05:00Z"),
                actor: actor.into(),
                action: action.into(),
                request_id: Some(req.id),
                entitlement: Some(req.entitlement.clone()),
                data,
                prev_hash: String::new(),
                hash: String::new(),
                pending: false,
            };
        let events = [
            event(
                2,
                "bob@example.com",
                "request.approval",
                serde_json::json!({ "comment": "ok for INC-1", "approvals": 1 }),
            ),
            event(
                3,
                "system",
                "grant.activated",
                serde_json::json!({ "comment": null, "reason": "  " }),
            ),
        ];
        let out = request_detail(&req, &events, at("2026-11-29T09:00:00Z"));
        assert!(
            out.contains("08:05:00 UTC  request.approval by bob@example.com: \"ok for INC-1\"\n"),
            "{out}"
        );
        assert!(
            out.contains("08:05:00 UTC  grant.activated by system\n"),
            "{out}"
        );
    }

    #[test]
    fn verify_report_names_the_bad_seq() {
        let bad = VerifyReport {
            ok: false,
            checked: 10,
            last_seq: Some(10),
            first_bad_seq: Some(7),
            problem: Some("hash mismatch".into()),
            pending: 0,
            rows: None,
            held: 0,
            checkpoints: None,
            recomputed_from: None,
        };
        let out = verify_report(&bad);
        assert!(out.contains("first bad seq: 7"), "{out}");
        let good = VerifyReport {
            ok: true,
            checked: 3,
            last_seq: Some(3),
            first_bad_seq: None,
            problem: None,
            pending: 0,
            rows: Some(3),
            held: 0,
            checkpoints: None,
            recomputed_from: None,
        };
        assert_eq!(
            verify_report(&good),
            "audit chain ok: 3 events checked (last seq 3)\n"
        );
        let covered = VerifyReport {
            checkpoints: Some(jit_api::CheckpointReport {
                checked: 4,
                newest: Some(jit_api::CheckpointInfo {
                    number: 4,
                    seq: 2,
                    head_hash: "ab".repeat(32),
                    event_count: 2,
                    at: at("2026-12-04T10:00:00Z"),
                    broker_id: "jit-1".into(),
                    key_id: "0123456789abcdef0123456789abcdef".into(),
                }),
                not_covered: 1,
                disproved_by: None,
            }),
            ..good.clone()
        };
        let text = verify_report(&covered);
        assert!(
            text.contains(
                "signed checkpoint 4 covers seq 1 to 2 (signed 2026-12-04T10:00:00Z by jit-1"
            ) && text.contains("1 events after it verified as a chain only, not yet covered"),
            "{text}"
        );
        let waiting = VerifyReport { pending: 2, ..good };
        assert!(
            verify_report(&waiting).ends_with("2 more events written, not chained yet\n"),
            "{}",
            verify_report(&waiting)
        );
        let held = VerifyReport { held: 1, ..waiting };
        assert!(
            verify_report(&held).ends_with(
                "1 events held by the broker while the audit store fails, not in the chain yet\n"
            ),
            "{}",
            verify_report(&held)
        );
    }
}
