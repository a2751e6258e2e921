//! `jit credential-process`, `jit exec`, `jit console`: using an active AWS grant.

use std::process::ExitCode;

use jit_api::{
    ConsoleUrl, CreateRequest, Credentials, DurationInput, Entitlement, Request, RequestState,
};
use serde_json::json;

use super::requests::{file, list_requests, not_granted, summary, wait_until_settled};
use super::{Ctx, emit, emit_json};
use crate::api::{Api, Fetched};
use crate::args::{ConsoleArgs, ExecArgs};
use crate::credcache::{self, ProcessCredentials};
use crate::error::{CliError, Result};
use crate::http::Retry;
use crate::output::short_id;

/// Region when neither `--region` nor the environment names one.
pub const DEFAULT_REGION: &str = "us-east-1";

pub(super) fn credential_process(ctx: &Ctx, entitlement: &str) -> Result<ExitCode> {
    let line = credentials_json(ctx, entitlement)?;
    emit(&String::from_utf8_lossy(&line));
    Ok(ExitCode::SUCCESS)
}

/// The `credential_process` JSON line for `entitlement`: from the cache while
/// it has more than five minutes left, else minted by the broker and cached.
///
/// `jit` itself answers a hit from the same lookup (`jit_cli_base::front`), so this
/// runs for a hit only when `jit-client` is started directly.
fn credentials_json(ctx: &Ctx, entitlement: &str) -> Result<Vec<u8>> {
    let (path, cached) = credcache::lookup(&ctx.dirs, ctx.server_flag.as_deref(), entitlement)?;
    if let Some(line) = cached {
        return Ok(line);
    }
    let mut api = ctx.api()?;
    let grant = active_grant(&mut api, entitlement)?;
    let minted = api.post::<Credentials>(
        &format!("/requests/{}/credentials", grant.id),
        &json!({}),
        Retry::Idempotent,
    )?;
    let creds = process_credentials(minted.value);
    if creds.expires().is_some() {
        credcache::store(&path, &creds)?;
    }
    Ok(creds.to_json_line())
}

/// The broker's credentials as `credential_process` prints them (Version 1).
fn process_credentials(c: Credentials) -> ProcessCredentials {
    ProcessCredentials {
        version: 1,
        access_key_id: c.access_key_id,
        secret_access_key: c.secret_access_key,
        session_token: c.session_token,
        expiration: c.expiration,
    }
}

/// My active grant for `entitlement` with the latest expiry. Without one, at a terminal: asks
/// for a reason, files the request (or waits for the one already pending) and goes on once
/// it is granted; elsewhere an error with the exact command to run.
pub fn active_grant(api: &mut Api, entitlement: &str) -> Result<Request> {
    let list = list_requests(api, &[("mine", "true"), ("state", "active")])?;
    if let Some(best) = pick_active(list.value, entitlement) {
        return Ok(best);
    }
    let catalog = super::catalog::requestable(api)?;
    let Some(ent) = catalog.iter().find(|e| e.id == entitlement) else {
        return Err(super::catalog::unknown(entitlement, &catalog));
    };
    // A request may still be waiting for approval.
    let pending = list_requests(api, &[("mine", "true"), ("state", "pending")])?
        .value
        .into_iter()
        .find(|r| r.entitlement == entitlement);
    let mut console = super::Console::open();
    let filed = match (pending, console.as_mut()) {
        (Some(p), Some(console)) => {
            console.say(&format!(
                "No active grant for `{entitlement}` yet: request {} is {}; waiting for it \
                 (Ctrl-C stops waiting, the request goes on).",
                short_id(&p.id),
                crate::output::approvals_progress(&p)
            ));
            let raw = serde_json::to_string(&p).unwrap_or_default();
            Fetched { value: p, raw }
        }
        (Some(p), None) => {
            return Err(CliError::new(format!(
                "no active grant for `{entitlement}`: request {} is still pending",
                short_id(&p.id)
            ))
            .hint(format!(
                "wait for it with `jit show {}`, or run this at a terminal to wait here",
                short_id(&p.id)
            )));
        }
        (None, Some(console)) => match ask_to_request(api, console, ent)? {
            Some(created) => created,
            None => return Err(no_grant(ent)),
        },
        (None, None) => return Err(no_grant(ent)),
    };
    // Progress is shown on stderr; at the controlling terminal one line says what happens.
    if let Some(console @ super::Console::Tty(_)) = console.as_mut() {
        console.say(&format!(
            "Waiting for request {} ({}); Ctrl-C stops waiting, the request goes on.",
            short_id(&filed.value.id),
            crate::output::approvals_progress(&filed.value)
        ));
    }
    let settled = wait_until_settled(api, filed)?;
    if settled.value.state != RequestState::Active {
        return Err(not_granted(&settled.value));
    }
    let summary = summary(&settled.value, time::OffsetDateTime::now_utc());
    if let Some(line) = summary.lines().next() {
        match console.as_mut() {
            Some(console) => console.say(line),
            None => eprintln!("{line}"),
        }
    }
    Ok(settled.value)
}

/// The duration a request filed for a missing grant asks for: an hour, or the entitlement's
/// maximum when that is shorter.
fn default_duration(ent: &Entitlement) -> String {
    match jit_api::parse_duration(&ent.max_duration) {
        Ok(max) if max < 3600 => ent.max_duration.clone(),
        _ => "1h".to_owned(),
    }
}

/// The command that files the request for a missing grant.
fn request_command(ent: &Entitlement) -> String {
    let ticket = if ent.require_ticket {
        " --ticket ID"
    } else {
        ""
    };
    format!(
        "jit request {} --duration {} --reason \"…\"{ticket} --wait",
        ent.id,
        default_duration(ent)
    )
}

/// No grant, and nobody at a terminal to ask (or the question was declined).
fn no_grant(ent: &Entitlement) -> CliError {
    CliError::new(format!("no active grant for `{}`", ent.id))
        .hint(format!("run `{}`", request_command(ent)))
}

/// Offers to file the request at the terminal: `None` when the reason is left empty.
fn ask_to_request(
    api: &mut Api,
    console: &mut super::Console,
    ent: &Entitlement,
) -> Result<Option<Fetched<Request>>> {
    let duration = default_duration(ent);
    let approval = match ent.approvals_required {
        0 => "auto-approved".to_owned(),
        1 => "needs 1 approval".to_owned(),
        n => format!("needs {n} approvals"),
    };
    console.say(&format!(
        "No active grant for `{}` ({}). Request it now for {duration} ({approval})?",
        ent.id, ent.title
    ));
    let Some(reason) = console.ask("Reason (empty to cancel): ") else {
        return Ok(None);
    };
    let ticket = if ent.require_ticket {
        let Some(ticket) = console.ask("Ticket: ") else {
            return Ok(None);
        };
        Some(ticket)
    } else {
        None
    };
    let body = CreateRequest {
        entitlement: ent.id.clone(),
        bundle: None,
        duration: DurationInput::Text(duration),
        justification: reason,
        ticket,
        break_glass: false,
        start_at: None,
    };
    file(api, &body).map(Some)
}

/// Picks the active request for `entitlement` that runs longest.
pub fn pick_active(requests: Vec<Request>, entitlement: &str) -> Option<Request> {
    requests
        .into_iter()
        .filter(|r| r.entitlement == entitlement && r.state == RequestState::Active)
        .max_by_key(|r| r.expires_at)
}

pub(super) fn exec(ctx: &Ctx, args: &ExecArgs) -> Result<ExitCode> {
    let line = credentials_json(ctx, &args.entitlement)?;
    let creds: ProcessCredentials = serde_json::from_slice(&line)
        .map_err(|e| CliError::new(format!("cannot read the credentials: {e}")))?;
    let region = args
        .region
        .clone()
        .or_else(|| non_empty_env("AWS_REGION"))
        .or_else(|| non_empty_env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| DEFAULT_REGION.to_owned());
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| CliError::new("no command given").hint("put it after `--`"))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest);
    for (key, value) in aws_env(&creds, &region) {
        cmd.env(key, value);
    }
    // A stale legacy variable could shadow the session token in old tools.
    cmd.env_remove("AWS_SECURITY_TOKEN");
    run(cmd, program)
}

/// The variables `jit exec` sets.
pub fn aws_env(creds: &ProcessCredentials, region: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", creds.access_key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY", creds.secret_access_key.clone()),
        ("AWS_SESSION_TOKEN", creds.session_token.clone()),
        ("AWS_CREDENTIAL_EXPIRATION", creds.expiration.clone()),
        ("AWS_REGION", region.to_owned()),
        ("AWS_DEFAULT_REGION", region.to_owned()),
    ]
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Replaces this process with the command (Unix), so its exit code and
/// signals are the command's own.
#[cfg(unix)]
fn run(mut cmd: std::process::Command, program: &str) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    Err(spawn_error(program, &err))
}

/// Runs the command and passes its exit code through.
#[cfg(not(unix))]
fn run(mut cmd: std::process::Command, program: &str) -> Result<ExitCode> {
    let status = cmd.status().map_err(|e| spawn_error(program, &e))?;
    let code = status.code().unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn spawn_error(program: &str, err: &std::io::Error) -> CliError {
    let (hint, exit) = match err.kind() {
        std::io::ErrorKind::NotFound => ("check that it is installed and on your PATH", 127),
        std::io::ErrorKind::PermissionDenied => ("check that it is executable", 126),
        _ => ("check the command", 1),
    };
    CliError::new(format!("cannot run `{program}`: {err}"))
        .hint(hint)
        .with_exit(exit)
}

pub(super) fn console(ctx: &Ctx, args: &ConsoleArgs) -> Result<ExitCode> {
    let mut api = ctx.api()?;
    let grant = active_grant(&mut api, &args.entitlement)?;
    let url = api.post::<ConsoleUrl>(
        &format!("/requests/{}/console-url", grant.id),
        &json!({}),
        Retry::Idempotent,
    )?;
    if ctx.json() {
        emit_json(&url.raw);
    } else if args.print || !crate::browser::open(&url.value.url, ctx.graphical) {
        emit(&format!("{}\n", url.value.url));
    } else {
        eprintln!(
            "Opened the AWS console for `{}` in your browser.",
            args.entitlement
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    use super::*;

    fn req(id: &str, ent: &str, state: RequestState, expires: Option<&str>) -> Request {
        Request {
            id: id.parse().unwrap(),
            entitlement: ent.into(),
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
            expires_at: expires.map(|e| OffsetDateTime::parse(e, &Rfc3339).unwrap()),
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
    fn picks_the_latest_expiring_active_grant_of_that_entitlement() {
        let list = vec![
            req(
                "00000000-0000-4000-8000-000000000001",
                "prod",
                RequestState::Active,
                Some("2026-11-29T09:00:00Z"),
            ),
            req(
                "00000000-0000-4000-8000-000000000002",
                "prod",
                RequestState::Active,
                Some("2026-11-29T10:00:00Z"),
            ),
            req(
                "00000000-0000-4000-8000-000000000003",
                "other",
                RequestState::Active,
                Some("2026-11-29T11:00:00Z"),
            ),
            req(
                "00000000-0000-4000-8000-000000000004",
                "prod",
                RequestState::Expired,
                Some("2026-11-29T12:00:00Z"),
            ),
        ];
        let best = pick_active(list.clone(), "prod").unwrap();
        assert_eq!(best.id.to_string(), "00000000-0000-4000-8000-000000000002");
        assert!(pick_active(list, "nope").is_none());
    }

    #[test]
    fn exec_environment() {
        let creds = ProcessCredentials {
            version: 1,
            access_key_id: "ASIAX".into(),
            secret_access_key: "sk".into(),
            session_token: "st".into(),
            expiration: "2026-11-29T09:00:00Z".into(),
        };
        let env = aws_env(&creds, "eu-west-1");
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("AWS_ACCESS_KEY_ID"), Some("ASIAX"));
        assert_eq!(get("AWS_SECRET_ACCESS_KEY"), Some("sk"));
        assert_eq!(get("AWS_SESSION_TOKEN"), Some("st"));
        assert_eq!(get("AWS_REGION"), Some("eu-west-1"));
        assert_eq!(get("AWS_DEFAULT_REGION"), Some("eu-west-1"));
    }
}
