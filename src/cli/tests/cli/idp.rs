//! Sign-in against the real `OpenID` provider (`oidc-provider`, started by
//! `scripts/test`): device authorization grant with discovery, refresh, and
//! a declined sign-in. The "browser" is `approve_device.sh` (curl).

use std::process::Command;

use jit::http::Http;
use jit::oauth::{self, DeviceAuthorization, Endpoints};
use jit_api::CliConfig;

use crate::peer_env;

fn config(issuer: &str) -> CliConfig {
    CliConfig {
        issuer: issuer.to_owned(),
        client_id: "jit-cli".into(),
        scopes: ["openid", "email", "profile", "groups", "offline_access"]
            .map(String::from)
            .to_vec(),
        // Left out so the CLI discovers them from the issuer.
        device_authorization_endpoint: None,
        token_endpoint: None,
        dev: false,
    }
}

fn start(issuer: &str) -> (Http, Endpoints, DeviceAuthorization) {
    let http = Http::new().unwrap();
    let cfg = config(issuer);
    let endpoints = oauth::endpoints(&http, &cfg, false).unwrap();
    assert_eq!(endpoints.token, format!("{issuer}/token"));
    let auth = oauth::start_device(&http, &endpoints, &cfg.client_id, &cfg.scopes, &[]).unwrap();
    assert!(!auth.user_code.is_empty());
    assert!(
        auth.verification_uri.starts_with(issuer),
        "{}",
        auth.verification_uri
    );
    (http, endpoints, auth)
}

/// Runs the browser half in the background, as the user would while the CLI polls.
fn browser(
    issuer: &str,
    auth: &DeviceAuthorization,
    login: &str,
    action: &str,
) -> std::thread::JoinHandle<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli/approve_device.sh");
    let page = auth
        .verification_uri_complete
        .clone()
        .expect("oidc-provider sends verification_uri_complete");
    let args = [
        issuer.to_owned(),
        page,
        auth.user_code.clone(),
        login.to_owned(),
        action.to_owned(),
    ];
    std::thread::spawn(move || {
        let out = Command::new("bash")
            .arg(script)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "browser step failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
}

#[test]
fn device_flow_signs_in_and_the_refresh_token_renews_it() {
    let issuer = peer_env("JIT_TEST_IDP_URL")
        .trim_end_matches('/')
        .to_owned();
    let (http, endpoints, auth) = start(&issuer);
    let approver = browser(&issuer, &auth, "alice", "confirm");
    let mut polls = 0;
    let tokens = oauth::poll_device(&http, &endpoints, "jit-cli", &auth, &mut |d| {
        polls += 1;
        std::thread::sleep(d);
    })
    .unwrap();
    approver.join().unwrap();
    assert!(polls >= 1);
    assert_eq!(
        tokens.access_token.split('.').count(),
        3,
        "the access token is a JWT"
    );
    assert!(tokens.expires_in.is_some_and(|s| s > 60));
    let refresh_token = tokens
        .refresh_token
        .clone()
        .expect("offline_access gives a refresh token");

    let renewed = oauth::refresh(&http, &endpoints.token, "jit-cli", &refresh_token).unwrap();
    assert_eq!(renewed.access_token.split('.').count(), 3);
    assert_ne!(renewed.access_token, tokens.access_token);

    let err =
        oauth::refresh(&http, &endpoints.token, "jit-cli", "not-a-refresh-token").unwrap_err();
    assert!(
        err.line().contains("could not be renewed: `invalid_grant`"),
        "{}",
        err.line()
    );
}

#[test]
fn a_declined_device_sign_in_ends_the_flow() {
    let issuer = peer_env("JIT_TEST_IDP_URL")
        .trim_end_matches('/')
        .to_owned();
    let (http, endpoints, auth) = start(&issuer);
    let browser = browser(&issuer, &auth, "mallory", "abort");
    let err = oauth::poll_device(&http, &endpoints, "jit-cli", &auth, &mut std::thread::sleep)
        .unwrap_err();
    browser.join().unwrap();
    assert_eq!(
        err.line(),
        "error: the sign-in was declined: run `jit login` again and approve it"
    );
}

#[test]
fn an_unknown_client_is_reported_in_one_line() {
    let issuer = peer_env("JIT_TEST_IDP_URL")
        .trim_end_matches('/')
        .to_owned();
    let http = Http::new().unwrap();
    let cfg = config(&issuer);
    let endpoints = oauth::endpoints(&http, &cfg, false).unwrap();
    let err =
        oauth::start_device(&http, &endpoints, "no-such-client", &cfg.scopes, &[]).unwrap_err();
    let line = err.line();
    assert!(
        line.starts_with(
            "error: the identity provider refused to start the sign-in: `invalid_client`"
        ),
        "{line}"
    );
    assert!(!line.contains('\n'));
}
