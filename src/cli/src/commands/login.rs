//! `jit login`, `jit logout`, `jit whoami`.

use std::process::ExitCode;

use jit_api::{CliConfig, Me};
use serde_json::json;

use super::{Ctx, emit, emit_json, emit_value, prompt};
use crate::api;
use crate::args::LoginArgs;
use crate::credcache;
use crate::error::{CliError, Result};
use crate::http::{Http, check_secure_url};
use crate::oauth;
use crate::output;
use crate::session::{Session, Settings, session_from};

pub(super) fn login(ctx: &Ctx, args: &LoginArgs) -> Result<ExitCode> {
    let server = ctx.server()?;
    check_secure_url(&server, ctx.allow_insecure)?;
    let http = Http::new()?;
    let cfg = api::cli_config(&http, &server)?;
    let session = if cfg.dev {
        dev_login(&http, &server, args)?
    } else {
        if args.user.is_some() {
            return Err(CliError::new(format!(
                "`{server}` is not in development mode, so `--user` does not apply"
            ))
            .hint(format!(
                "run `jit login --server {server}` to sign in with your identity provider"
            )));
        }
        device_login(ctx, &http, &server, &cfg, args)?
    };
    session.save(&ctx.dirs)?;
    Settings {
        server: Some(server.clone()),
    }
    .save(&ctx.dirs)?;
    // Credentials cached for a previous sign-in may belong to someone else.
    credcache::clear_all(&ctx.dirs.cache)?;

    let mut api = ctx.api()?;
    let me = api
        .get::<Me>("/me", &[])
        .map_err(|e| CliError::new(format!("signed in, but the broker refused the token: {}", e.message())).hint(
            "check that the broker's `oidc.api_audience` and `oidc.cli_scopes` match the CLI's sign-in",
        ))?;
    if ctx.json() {
        emit_json(&me.raw);
    } else {
        let dev = if cfg.dev { " (development mode)" } else { "" };
        emit(&format!(
            "Signed in to {server} as {} <{}>{dev}\n",
            me.value.name, me.value.email
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn dev_login(http: &Http, server: &str, args: &LoginArgs) -> Result<Session> {
    let user = match &args.user {
        Some(u) => u.trim().to_owned(),
        None => {
            prompt("This broker runs in development mode. Demo user to sign in as (e.g. alice): ")
                .ok_or_else(|| {
                CliError::new(format!(
                    "`{server}` runs in development mode and needs a demo user"
                ))
                .hint(format!("run `jit login --server {server} --user alice`"))
            })?
        }
    };
    let tokens = oauth::dev_token(http, server, &user)?;
    Ok(session_from(
        server,
        tokens,
        None,
        None,
        Vec::new(),
        Some(user),
    ))
}

fn device_login(
    ctx: &Ctx,
    http: &Http,
    server: &str,
    cfg: &CliConfig,
    args: &LoginArgs,
) -> Result<Session> {
    let open = |url: &str| !args.no_browser && crate::browser::open(url, ctx.graphical);
    let (tokens, endpoints) = oauth::device_sign_in(http, cfg, ctx.allow_insecure, &open, None)?;
    Ok(session_from(
        server,
        tokens,
        Some(endpoints.token),
        Some(cfg.client_id.clone()),
        cfg.scopes.clone(),
        None,
    ))
}

pub(super) fn logout(ctx: &Ctx) -> Result<ExitCode> {
    let previous = Session::load(&ctx.dirs).ok().flatten().map(|s| s.server);
    let had_tokens = Session::remove(&ctx.dirs)?;
    let cleared = credcache::clear_all(&ctx.dirs.cache)?;
    if ctx.json() {
        emit_value(
            &json!({ "signed_out": had_tokens, "server": previous, "cached_credentials_removed": cleared }),
        );
    } else if let Some(server) = previous.filter(|_| had_tokens) {
        emit(&format!(
            "Signed out of {server}; removed {cleared} cached credential(s)\n"
        ));
    } else {
        emit(&format!(
            "Not signed in; removed {cleared} cached credential(s)\n"
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn whoami(ctx: &Ctx) -> Result<ExitCode> {
    let mut api = ctx.api()?;
    let me = api.get::<Me>("/me", &[])?;
    if ctx.json() {
        emit_json(&me.raw);
    } else {
        emit(&output::me(&me.value, api.server()));
    }
    Ok(ExitCode::SUCCESS)
}
