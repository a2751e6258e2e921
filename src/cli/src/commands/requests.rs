//! `jit request`, `status`, `show`, `approve`, `deny`, `cancel`, `revoke`, `extend`.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use jit_api::{
    AuditPage, CreateRequest, DecisionBody, DurationInput, ExtendBody, Request, RequestState,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Ctx, emit, emit_json};
use crate::api::{Api, Fetched};
use crate::args::{DecideArgs, ExtendArgs, RequestArgs, StatusArgs};
use crate::error::{CliError, EXIT_NOT_GRANTED, Result};
use crate::http::Retry;
use crate::output::{self, short_id};

/// The least time between two reads of a request while waiting, should the
/// broker answer at once (one older than the long poll).
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long one long poll may last: under the CLI's 30 s request timeout.
const WAIT_PER_CALL: &str = "25s";
/// Requests shown by `jit status` without `--all`.
const STATUS_LIMIT: usize = 20;

pub(super) fn request(ctx: &Ctx, args: &RequestArgs) -> Result<ExitCode> {
    let mut api = ctx.api()?;
    let body = CreateRequest {
        entitlement: args.entitlement.clone(),
        bundle: None,
        duration: DurationInput::Text(args.duration.clone()),
        justification: args.reason.clone(),
        ticket: args.ticket.clone(),
        break_glass: args.break_glass,
        start_at: args.start_at,
    };
    let created = file(&mut api, &body)?;
    finish(ctx, &mut api, created, args.wait)
}

/// `POST /requests`; a refusal says what to change: the nearest entitlement name for an
/// unknown one, `--ticket` for a missing or malformed ticket.
pub(super) fn file(api: &mut Api, body: &CreateRequest) -> Result<Fetched<Request>> {
    api.post::<Request>("/requests", body, Retry::Once)
        .map_err(|err| {
            if err.message().starts_with("unknown entitlement") {
                super::catalog::unknown_from_broker(api, &body.entitlement, err)
            } else if err.message().starts_with("ticket ") {
                err.or_hint("add `--ticket ID`")
            } else {
                err
            }
        })
}

pub(super) fn extend(ctx: &Ctx, args: &ExtendArgs) -> Result<ExitCode> {
    let mut api = ctx.api()?;
    let id = resolve_id(&mut api, &args.id)?;
    let body = ExtendBody {
        by: DurationInput::Text(args.by.clone()),
        justification: args.reason.clone(),
    };
    let created = api.post::<Request>(&format!("/requests/{id}/extend"), &body, Retry::Once)?;
    finish(ctx, &mut api, created, args.wait)
}

/// Prints a freshly filed request, after waiting for it when asked.
fn finish(ctx: &Ctx, api: &mut Api, created: Fetched<Request>, wait: bool) -> Result<ExitCode> {
    let last = if wait {
        wait_until_settled(api, created)?
    } else {
        created
    };
    if ctx.json() {
        emit_json(&last.raw);
    } else {
        emit(&summary(&last.value, OffsetDateTime::now_utc()));
    }
    if wait
        && !matches!(
            last.value.state,
            RequestState::Active | RequestState::Scheduled
        )
    {
        return Err(not_granted(&last.value));
    }
    Ok(ExitCode::SUCCESS)
}

/// True once waiting is over: access is active, scheduled (approved for later), or will never
/// come.
pub fn settled(state: RequestState) -> bool {
    matches!(state, RequestState::Active | RequestState::Scheduled) || state.is_terminal()
}

/// Waits for the request until [`settled`], showing progress on stderr.
pub(super) fn wait_until_settled(
    api: &mut Api,
    first: Fetched<Request>,
) -> Result<Fetched<Request>> {
    let id = first.value.id;
    let mut progress = Progress::new();
    progress.show(&output::state_line(&first.value, OffsetDateTime::now_utc()));
    let last = wait_for(api, first, |r| {
        progress.show(&output::state_line(r, OffsetDateTime::now_utc()));
    })
    .map_err(|e| {
        progress.clear();
        CliError::new(format!("stopped waiting: {}", e.message())).hint(format!(
            "the request goes on; follow it with `jit show {}`",
            short_id(&id)
        ))
    })?;
    progress.clear();
    Ok(last)
}

/// Waits until the request `first` is [`settled`] and returns it as it is then, calling
/// `seen` with each answer on the way. Each call is a long poll
/// (`GET /requests/{id}?wait=…&timeout=25s`) that the broker answers as soon as the request
/// settles, so access is used the moment it is granted; an answer that comes back sooner
/// than [`POLL_EVERY`] with nothing changed (a broker without the long poll) is followed by
/// a pause, so waiting never turns into a busy loop.
pub fn wait_for(
    api: &mut Api,
    first: Fetched<Request>,
    mut seen: impl FnMut(&Request),
) -> Result<Fetched<Request>> {
    let id = first.value.id;
    let path = format!("/requests/{id}");
    let states = RequestState::ALL
        .into_iter()
        .filter(|s| settled(*s))
        .map(RequestState::as_str)
        .collect::<Vec<_>>()
        .join(",");
    let query = [("wait", states.as_str()), ("timeout", WAIT_PER_CALL)];
    let mut last = first;
    while !settled(last.value.state) {
        let asked = Instant::now();
        let next = api.get::<Request>(&path, &query)?;
        seen(&next.value);
        if next.value.state == last.value.state
            && let Some(rest) = POLL_EVERY.checked_sub(asked.elapsed())
        {
            std::thread::sleep(rest);
        }
        last = next;
    }
    Ok(last)
}

/// A spinner on a terminal, plain lines when the state changes otherwise.
enum Progress {
    Spinner(ProgressBar),
    Lines(String),
}

impl Progress {
    fn new() -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            Self::Spinner(bar)
        } else {
            Self::Lines(String::new())
        }
    }

    fn show(&mut self, line: &str) {
        match self {
            Self::Spinner(bar) => bar.set_message(line.to_owned()),
            Self::Lines(last) => {
                // Progress text without the countdown, so a line appears only on change.
                let key = line.split(" (").next().unwrap_or(line).to_owned();
                if *last != key {
                    eprintln!("{line}");
                    *last = key;
                }
            }
        }
    }

    fn clear(&mut self) {
        if let Self::Spinner(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// The error (exit 2) for a request that ended without access.
pub fn not_granted(req: &Request) -> CliError {
    let id = short_id(&req.id);
    let ent = &req.entitlement;
    let err = match req.state {
        RequestState::Denied => {
            let by = req
                .approvals
                .iter()
                .rev()
                .find(|a| a.decision == jit_api::Decision::Deny);
            let mut msg = format!("request {id} for `{ent}` was denied");
            if let Some(a) = by {
                let _ = write!(msg, " by {}", a.approver);
                if let Some(c) = a.comment.as_deref().filter(|c| !c.trim().is_empty()) {
                    let _ = write!(msg, " (\"{}\")", c.trim());
                }
            }
            CliError::new(msg)
                .hint("talk to the approver, or file a new request with a clearer reason")
        }
        RequestState::TimedOut => CliError::new(format!(
            "request {id} for `{ent}` timed out waiting for approval"
        ))
        .hint(format!(
            "ask an approver to look at it, then file it again with `jit request {ent} …`"
        )),
        RequestState::Failed => {
            let why = req.failure_reason.as_deref().unwrap_or("no reason given");
            CliError::new(format!("request {id} for `{ent}` failed: {why}"))
                .hint("tell the jit administrators; the grant could not be made")
        }
        RequestState::Cancelled => CliError::new(format!("request {id} for `{ent}` was cancelled")),
        RequestState::Revoked => CliError::new(format!("request {id} for `{ent}` was revoked")),
        RequestState::Expired => {
            CliError::new(format!("request {id} for `{ent}` has already expired"))
                .hint(format!("file a new one with `jit request {ent} …`"))
        }
        other => CliError::new(format!("request {id} for `{ent}` is {other}")),
    };
    err.with_exit(EXIT_NOT_GRANTED)
}

/// What `jit request` prints for a request.
pub fn summary(req: &Request, now: OffsetDateTime) -> String {
    let id = short_id(&req.id);
    let ent = &req.entitlement;
    let what = match req.extends {
        Some(of) => format!(
            "Extension {id} of {} for `{ent}` (+{})",
            short_id(&of),
            req.duration
        ),
        None => format!("Request {id} for `{ent}` ({})", req.duration),
    };
    let mut out = match req.state {
        RequestState::Pending => format!(
            "{what} is pending: {}.\nFollow it with `jit show {id}`.\n",
            output::approvals_progress(req)
        ),
        RequestState::Approved => format!(
            "{what} is approved; access is being granted.\nFollow it with `jit show {id}`.\n"
        ),
        RequestState::Scheduled => format!(
            "{what} is scheduled: access starts at {}.\nCancel it before then with `jit cancel {id}`.\n",
            req.start_at.map_or_else(String::new, output::timestamp)
        ),
        RequestState::Active => {
            let until = req.expires_at.map_or_else(String::new, |e| {
                format!(
                    " until {} ({})",
                    output::timestamp(e),
                    output::time_left(req, now)
                )
            });
            let mut s = format!("{what} is active{until}.\n");
            if req.kind == "aws_role" {
                let _ = writeln!(
                    s,
                    "Use it with `jit exec {ent} -- CMD`, `jit console {ent}`, or `credential_process = jit credential-process {ent}`."
                );
            }
            s
        }
        other => format!("{what} is {other}.\n"),
    };
    if req.break_glass {
        out.push_str("Break-glass: everyone has been notified and the access will be reviewed.\n");
    }
    if req.simulated {
        out.push_str("Simulated: development mode, nothing was granted in the cloud.\n");
    }
    out
}

pub(super) fn status(ctx: &Ctx, args: &StatusArgs) -> Result<ExitCode> {
    let mut api = ctx.api()?;
    let list = list_requests(&mut api, &[("mine", "true")])?;
    if ctx.json() {
        emit_json(&list.raw);
    } else {
        let limit = (!args.all).then_some(
            args.limit
                .map_or(STATUS_LIMIT, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        );
        emit(&output::status(
            &list.value,
            OffsetDateTime::now_utc(),
            limit,
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Requests a page of `GET /requests` asks for when the caller sets no `limit` (the most the
/// broker gives).
const PAGE: &str = "500";

/// `GET /requests` with filters, every page (following `next`); accepts a bare array or
/// `{"requests": […]}`. `raw` is all of them as one JSON array.
pub fn list_requests(api: &mut Api, query: &[(&str, &str)]) -> Result<Fetched<Vec<Request>>> {
    let unexpected = |e: &dyn std::fmt::Display| {
        CliError::new(format!("unexpected request list from the broker: {e}"))
            .hint("check that jit and the broker are compatible versions")
    };
    let mut query = query.to_vec();
    if !query.iter().any(|(k, _)| *k == "limit") {
        query.push(("limit", PAGE));
    }
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut q = query.clone();
        if let Some(a) = &after {
            q.push(("after", a));
        }
        let page = api.get_page("/requests", &q)?;
        let body: Value = serde_json::from_str(&page.body).map_err(|e| unexpected(&e))?;
        match body {
            Value::Object(mut map) => match map.remove("requests") {
                Some(Value::Array(list)) => items.extend(list),
                _ => return Err(unexpected(&"no `requests` in it")),
            },
            Value::Array(list) => items.extend(list),
            _ => return Err(unexpected(&"not a list")),
        }
        // A broker naming the same page again would never end.
        match page.next {
            Some(next) if after.as_ref() != Some(&next) => after = Some(next),
            _ => break,
        }
    }
    let all = Value::Array(items);
    let raw = all.to_string();
    let value = serde_json::from_value(all).map_err(|e| unexpected(&e))?;
    Ok(Fetched { value, raw })
}

/// The audit trail of request `id`, every page of it (following `next`). It is richer than
/// the request's own timeline; when the broker does not give it, none (the caller shows that
/// timeline instead).
fn request_events(api: &mut Api, id: &str) -> Vec<jit_api::AuditEvent> {
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("request_id", id), ("limit", "1000")];
        if let Some(a) = &after {
            query.push(("after", a));
        }
        let Some(page) = api.get_optional::<AuditPage>("/audit", &query) else {
            return events;
        };
        events.extend(page.events);
        match page.next {
            Some(next) if after.as_ref() != Some(&next) => after = Some(next),
            _ => return events,
        }
    }
}

pub(super) fn show(ctx: &Ctx, id_text: &str) -> Result<ExitCode> {
    let mut api = ctx.api()?;
    let id = resolve_id(&mut api, id_text)?;
    let req = api.get::<Request>(&format!("/requests/{id}"), &[])?;
    if ctx.json() {
        emit_json(&req.raw);
        return Ok(ExitCode::SUCCESS);
    }
    let events = request_events(&mut api, &id.to_string());
    emit(&output::request_detail(
        &req.value,
        &events,
        OffsetDateTime::now_utc(),
    ));
    Ok(ExitCode::SUCCESS)
}

/// Approve or deny.
#[derive(Debug, Clone, Copy)]
pub enum Decide {
    /// `POST …/approve`.
    Approve,
    /// `POST …/deny`.
    Deny,
}

pub(super) fn decide(ctx: &Ctx, args: &DecideArgs, decision: Decide) -> Result<ExitCode> {
    let mut api = ctx.api()?;
    let id = resolve_id(&mut api, &args.id)?;
    let (path, verb) = match decision {
        Decide::Approve => ("approve", "Approved"),
        Decide::Deny => ("deny", "Denied"),
    };
    let body = DecisionBody {
        comment: args.comment.clone(),
    };
    let raw = api.post_maybe_empty(&format!("/requests/{id}/{path}"), &body)?;
    after_action(ctx, &mut api, id, raw, verb)
}

/// Cancel or revoke.
#[derive(Debug, Clone, Copy)]
pub enum End {
    /// `POST …/cancel`.
    Cancel,
    /// `POST …/revoke`.
    Revoke,
}

pub(super) fn end(ctx: &Ctx, id_text: &str, how: End) -> Result<ExitCode> {
    let mut api = ctx.api()?;
    let id = resolve_id(&mut api, id_text)?;
    let (path, verb) = match how {
        End::Cancel => ("cancel", "Cancelled"),
        End::Revoke => ("revoke", "Revoked"),
    };
    let raw = api.post_maybe_empty(&format!("/requests/{id}/{path}"), &json!({}))?;
    after_action(ctx, &mut api, id, raw, verb)
}

/// Prints the request an action returned (fetching it when the answer was empty).
fn after_action(ctx: &Ctx, api: &mut Api, id: Uuid, raw: String, verb: &str) -> Result<ExitCode> {
    let req = match serde_json::from_str::<Request>(&raw) {
        Ok(value) => Fetched { value, raw },
        Err(_) => api.get::<Request>(&format!("/requests/{id}"), &[])?,
    };
    if ctx.json() {
        emit_json(&req.raw);
    } else {
        let r = &req.value;
        emit(&format!(
            "{verb} request {} (`{}` for {}): now {}.\n",
            short_id(&r.id),
            r.entitlement,
            r.requester,
            r.state
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Turns a full id, or a unique end or beginning of one (at least 4 hex
/// digits; `jit status` shows the last 8), into a request id.
pub fn resolve_id(api: &mut Api, text: &str) -> Result<Uuid> {
    let text = text.trim();
    if let Ok(id) = Uuid::parse_str(text) {
        return Ok(id);
    }
    let fragment = text.to_ascii_lowercase();
    if fragment.len() < 4 || !fragment.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(CliError::new(format!("`{text}` is not a request id"))
            .hint("use the id (or the 8 characters) shown by `jit status`"));
    }
    let list = list_requests(api, &[])?;
    pick_by_fragment(&list.value, &fragment, text)
}

/// The one request whose id ends (as shown by [`short_id`]) or starts with
/// `fragment`.
pub fn pick_by_fragment(requests: &[Request], fragment: &str, shown: &str) -> Result<Uuid> {
    let mut matches: Vec<Uuid> = requests
        .iter()
        .map(|r| r.id)
        .filter(|id| {
            let text = id.to_string();
            text.ends_with(fragment) || text.starts_with(fragment)
        })
        .collect();
    matches.sort();
    matches.dedup();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(CliError::new(format!(
            "no request you can see has an id ending or starting with `{shown}`"
        ))
        .hint("check the id with `jit status`")),
        many => Err(
            CliError::new(format!("`{shown}` matches {} requests", many.len()))
                .hint("give more characters of the id"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use time::format_description::well_known::Rfc3339;

    use super::*;

    fn req(id: &str, state: RequestState) -> Request {
        Request {
            id: id.parse().unwrap(),
            entitlement: "aws-prod-admin".into(),
            requester: "alice@example.com".into(),
            state,
            duration: "1h".into(),
            duration_seconds: 3600,
            justification: "x".into(),
            ticket: None,
            created_at: OffsetDateTime::parse("2026-11-29T08:00:00Z", &Rfc3339).unwrap(),
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
            target: String::new(),
        }
    }

    #[test]
    fn settled_states() {
        assert!(!settled(RequestState::Pending));
        assert!(!settled(RequestState::Approved));
        assert!(settled(RequestState::Active));
        for s in [
            RequestState::Denied,
            RequestState::TimedOut,
            RequestState::Failed,
            RequestState::Cancelled,
            RequestState::Revoked,
            RequestState::Expired,
        ] {
            assert!(settled(s), "{s}");
            assert_eq!(
                not_granted(&req("01a226a8-aece-7068-948f-b7f20b7c6f2e", s)).exit_code(),
                2
            );
        }
    }

    #[test]
    fn denial_names_the_approver_and_comment() {
        let mut r = req("01a226a8-aece-7068-948f-b7f20b7c6f2e", RequestState::Denied);
        r.approvals.push(jit_api::Approval {
            approver: "bob@example.com".into(),
            decision: jit_api::Decision::Deny,
            comment: Some("use read-only".into()),
            at: r.created_at,
        });
        assert_eq!(
            not_granted(&r).line(),
            "error: request 0b7c6f2e for `aws-prod-admin` was denied by bob@example.com (\"use read-only\"): \
             talk to the approver, or file a new request with a clearer reason"
        );
        let mut f = req("01a226a8-aece-7068-948f-b7f20b7c6f2e", RequestState::Failed);
        f.failure_reason = Some("AccessDenied on sts:AssumeRole".into());
        assert!(
            not_granted(&f)
                .line()
                .contains("failed: AccessDenied on sts:AssumeRole")
        );
    }

    #[test]
    fn short_ids_resolve_uniquely() {
        // UUIDv7 ids filed within a minute share their first 8 characters.
        let list = vec![
            req(
                "01a226a8-aece-7068-948f-b7f20b7c6f2e",
                RequestState::Pending,
            ),
            req("01a226a8-aed0-7000-8333-44445555b7c6", RequestState::Active),
        ];
        assert_ne!(short_id(&list[0].id), short_id(&list[1].id));
        assert_eq!(short_id(&list[0].id), "0b7c6f2e");
        let pick = |fragment: &str| pick_by_fragment(&list, fragment, fragment);
        assert_eq!(
            pick("0b7c6f2e").unwrap().to_string(),
            "01a226a8-aece-7068-948f-b7f20b7c6f2e"
        );
        assert_eq!(pick("6f2e").unwrap(), list[0].id);
        assert_eq!(pick("01a226a8-aed").unwrap(), list[1].id);
        for ambiguous in ["01a226a8", "01a2"] {
            assert!(
                pick(ambiguous)
                    .unwrap_err()
                    .line()
                    .contains("matches 2 requests"),
                "{ambiguous}"
            );
        }
        assert!(pick("ffff").unwrap_err().line().contains("jit status"));
    }

    #[test]
    fn summaries() {
        let now = OffsetDateTime::parse("2026-11-29T08:10:00Z", &Rfc3339).unwrap();
        let pending = req(
            "01a226a8-aece-7068-948f-b7f20b7c6f2e",
            RequestState::Pending,
        );
        assert_eq!(
            summary(&pending, now),
            "Request 0b7c6f2e for `aws-prod-admin` (1h) is pending: 0/1 approvals.\nFollow it with `jit show 0b7c6f2e`.\n"
        );
        let mut active = req("01a226a8-aece-7068-948f-b7f20b7c6f2e", RequestState::Active);
        active.expires_at = Some(now + time::Duration::minutes(50));
        let text = summary(&active, now);
        assert!(
            text.contains("is active until 2026-11-29 09:00:00 UTC (50m left)"),
            "{text}"
        );
        assert!(text.contains("jit exec aws-prod-admin -- CMD"), "{text}");
    }
}
