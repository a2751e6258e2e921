//! `jit login`, `jit logout`, `jit whoami`.

use std::process::ExitCode;

use jit_api::{CliConfig, Me};
use serde_json::json;

use super::{Ctx, emit, emit_json, emit_value, prompt};
use crate::api::{self, now_unix};
use crate::args::LoginArgs;
use crate::credcache;
use crate::error::{CliError, Result};
use crate::http::{Http, check_secure_url};
use crate::oauth::{self, TokenResponse};
use crate::output;
use crate::session::{Session, Settings};

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
    let endpoints = oauth::endpoints(http, cfg, ctx.allow_insecure)?;
    let auth = oauth::start_device(http, &endpoints, &cfg.client_id, &cfg.scopes)?;
    eprintln!(
        "To sign in, open {} and enter the code {}",
        auth.verification_uri, auth.user_code
    );
    let open_url = auth
        .verification_uri_complete
        .as_deref()
        .unwrap_or(&auth.verification_uri);
    if let Some(complete) = &auth.verification_uri_complete {
        eprintln!("(or open {complete})");
    }
    if !args.no_browser && crate::browser::open(open_url, ctx.graphical) {
        eprintln!(
            "A browser window was opened; check that it shows the code {}.",
            auth.user_code
        );
    }
    eprintln!(
        "Waiting for the sign-in to finish (the code is valid for {})…",
        output::span(i64::try_from(auth.expires_in).unwrap_or(i64::MAX))
    );
    let tokens = oauth::poll_device(
        http,
        &endpoints,
        &cfg.client_id,
        &auth,
        &mut std::thread::sleep,
    )?;
    Ok(session_from(
        server,
        tokens,
        Some(endpoints.token),
        Some(cfg.client_id.clone()),
        cfg.scopes.clone(),
        None,
    ))
}

/// A session from a token answer.
pub fn session_from(
    server: &str,
    tokens: TokenResponse,
    token_endpoint: Option<String>,
    client_id: Option<String>,
    scopes: Vec<String>,
    dev_user: Option<String>,
) -> Session {
    Session {
        server: server.to_owned(),
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        expires_at: tokens
            .expires_in
            .map(|s| now_unix().saturating_add_unsigned(s)),
        token_endpoint,
        client_id,
        scopes,
        dev_user,
    }
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
