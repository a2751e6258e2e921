//! Browser sign-in against the real provider: two users, callback attacks, step-up, logout.

use super::browser::*;
use super::*;

#[tokio::test]
async fn two_users_sign_in_through_the_browser_flow() {
    init();
    let (identity, redirect) = fixture_identity(Arc::new(SystemClock), None).await;
    let mut keys = BTreeSet::new();
    for (login, name, groups, roles, mfa) in [
        (
            "alice",
            "Alice Admin",
            vec!["grp-jit-requesters", "grp-prod-admins"],
            vec!["jit.admin"],
            true,
        ),
        (
            "bob",
            "Bob Approver",
            vec!["grp-jit-approvers"],
            vec![],
            false,
        ),
    ] {
        let (url, state) = identity.oidc.begin("/requests/42", None);
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["client_id"], "jit-web");
        assert_eq!(q["redirect_uri"], redirect);
        assert!(
            q["scope"].split(' ').any(|s| s == "openid"),
            "{}",
            q["scope"]
        );
        assert!(!q.contains_key("prompt"));
        assert!(q["state"].len() >= 16 && q["nonce"].len() >= 16);

        let walk = Browser::new().sign_in(&url, &redirect, login).await;
        assert!(walk.login_form);
        let (code, returned_state) = callback(&walk.end);
        let sign_in = identity
            .oidc
            .complete(&state, &code, &returned_state)
            .await
            .unwrap_or_else(|e| panic!("{login}: {}", e.reason()));
        let user = &sign_in.user;
        assert_eq!(user.key, format!("{TENANT}/{}", oid_for(login)));
        assert_eq!(user.oid.as_deref(), Some(oid_for(login).as_str()));
        assert_eq!(user.name, name);
        assert_eq!(user.email, format!("{login}@example.com"));
        assert_eq!(user.groups, groups);
        assert_eq!(user.roles, roles);
        assert_eq!(user.mfa, mfa, "{login}");
        let now = SystemClock.now().unix_timestamp();
        let auth_time = user.auth_time.expect("auth_time");
        assert!(
            (now - auth_time).abs() < 120,
            "auth_time {auth_time} now {now}"
        );
        assert_eq!(sign_in.return_to, "/requests/42");
        assert!(sign_in.expires_at > now);
        assert_eq!(payload_of(&sign_in.id_token.expose())["aud"], "jit-web");
        keys.insert(user.key.clone());
    }
    assert_eq!(keys.len(), 2);
}

#[tokio::test]
async fn callback_attacks_are_refused() {
    init();
    let (identity, redirect) = fixture_identity(Arc::new(SystemClock), None).await;
    let refused = |result: Result<_, AuthError>, expect: &str| {
        let e = result
            .err()
            .unwrap_or_else(|| panic!("accepted, expected {expect}"));
        assert_eq!(e.kind(), AuthErrorKind::SignInFailed, "{}", e.reason());
        assert_eq!(e.status(), 401);
        assert!(
            e.reason().contains(expect),
            "reason {:?}, expected {expect:?}",
            e.reason()
        );
        assert_eq!(e.to_string(), "sign-in failed, please sign in again");
    };

    // state mismatch, then the right state still works: the state check is what refused it
    let mut browser = Browser::new();
    let (url, state) = identity.oidc.begin("/", None);
    let walk = browser.sign_in(&url, &redirect, "mallory").await;
    let (code, returned) = callback(&walk.end);
    refused(
        identity.oidc.complete(&state, &code, "forged-state").await,
        "state",
    );
    refused(identity.oidc.complete(&state, &code, "").await, "state");
    let first = identity
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap();
    assert_eq!(first.user.key, format!("{TENANT}/{}", oid_for("mallory")));

    // replayed code and login state: refused here, and by the provider at another broker
    refused(
        identity.oidc.complete(&state, &code, &returned).await,
        "already used",
    );
    let (other_broker, _) = fixture_identity(Arc::new(SystemClock), None).await;
    refused(
        other_broker.oidc.complete(&state, &code, &returned).await,
        "refused the code",
    );

    // nonce replay: the same authorization request again (SSO answers at once with a new code)
    let again = browser.sign_in(&url, &redirect, "mallory").await;
    assert!(!again.login_form);
    let (code2, returned2) = callback(&again.end);
    assert_ne!(code2, code);
    refused(
        identity.oidc.complete(&state, &code2, &returned2).await,
        "already used",
    );

    // nonce mismatch
    let (url, state) = identity.oidc.begin("/", None);
    let walk = Browser::new().sign_in(&url, &redirect, "bob").await;
    let (code, returned) = callback(&walk.end);
    let forged = tweak(&state, "nonce", json!("another-nonce-0123456789abcdef"));
    refused(
        identity.oidc.complete(&forged, &code, &returned).await,
        "nonce",
    );

    // wrong and missing PKCE verifier
    for verifier in [
        json!("a-verifier-that-is-long-enough-but-not-the-one-0123456789"),
        json!(""),
    ] {
        let (url, state) = identity.oidc.begin("/", None);
        let walk = Browser::new().sign_in(&url, &redirect, "bob").await;
        let (code, returned) = callback(&walk.end);
        let forged = tweak(&state, "pkce_verifier", verifier);
        refused(
            identity.oidc.complete(&forged, &code, &returned).await,
            "refused the code",
        );
    }

    // a login state older than its lifetime
    let (url, state) = identity.oidc.begin("/", None);
    let walk = Browser::new().sign_in(&url, &redirect, "bob").await;
    let (code, returned) = callback(&walk.end);
    let expired = tweak(&state, "issued_at", json!(state.issued_at() - 11 * 60));
    refused(
        identity.oidc.complete(&expired, &code, &returned).await,
        "old",
    );

    // login CSRF: bob's callback delivered into alice's pending sign-in
    let (_, alice_state) = identity.oidc.begin("/", None);
    let (url, _) = identity.oidc.begin("/", None);
    let walk = Browser::new().sign_in(&url, &redirect, "bob").await;
    let (code, returned) = callback(&walk.end);
    refused(
        identity.oidc.complete(&alice_state, &code, &returned).await,
        "state",
    );

    // an empty code
    let (_, state) = identity.oidc.begin("/", None);
    let returned = serde_json::to_value(&state).unwrap()["csrf_state"]
        .as_str()
        .unwrap()
        .to_owned();
    refused(identity.oidc.complete(&state, "", &returned).await, "code");

    // the provider answered with an error instead of a code
    let e = AuthError::from_callback("access_denied", Some("the user cancelled"));
    assert_eq!(e.kind(), AuthErrorKind::SignInFailed);
    assert!(e.reason().contains("access_denied"));

    // open redirects after sign-in
    let (_, state) = identity.oidc.begin("https://evil.example/", None);
    assert_eq!(state.return_to(), "/");
}

#[tokio::test]
async fn step_up_forces_a_fresh_sign_in_with_mfa() {
    init();
    let clock = ManualClock::new();
    let (identity, redirect) = fixture_identity(Arc::new(clock.clone()), None).await;
    let mut browser = Browser::new();

    let (url, state) = identity.oidc.begin("/", None);
    let walk = browser.sign_in(&url, &redirect, "bob").await;
    let (code, returned) = callback(&walk.end);
    let plain = identity
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap();
    assert!(!plain.user.mfa);

    // step-up: prompt=login + max_age; the provider asks for credentials again despite the session
    let (url, state) = identity
        .oidc
        .begin("/requests/7", Some(Duration::from_mins(5)));
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["prompt"], "login");
    assert_eq!(q["max_age"], "300");
    assert!(state.is_step_up());
    let walk = browser.sign_in(&url, &redirect, "bob+mfa").await;
    assert!(
        walk.login_form,
        "prompt=login must show the login form again"
    );
    let (code, returned) = callback(&walk.end);
    let stepped = identity
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason()));
    assert_eq!(stepped.user.key, plain.user.key);
    assert!(stepped.user.mfa);
    assert!(stepped.user.auth_time.unwrap() >= state.issued_at() - 60);

    // without step-up the session is reused silently (so the form above came from prompt=login)
    let (url, _) = identity.oidc.begin("/", None);
    assert!(!browser.sign_in(&url, &redirect, "bob").await.login_form);

    // a provider that ignores prompt=login: the old auth_time is refused
    clock.advance(time::Duration::minutes(5));
    let (url, state) = identity.oidc.begin("/", None);
    let state = tweak(&tweak(&state, "max_age", json!(300)), "fresh", json!(true));
    let walk = browser.sign_in(&url, &redirect, "bob").await;
    assert!(!walk.login_form);
    let (code, returned) = callback(&walk.end);
    let e = identity
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), AuthErrorKind::SignInFailed);
    assert!(e.reason().contains("step-up"), "{}", e.reason());
}

#[tokio::test]
async fn logout_url_and_cli_config_come_from_discovery() {
    init();
    let issuer = idp();
    let (identity, redirect) = fixture_identity(Arc::new(SystemClock), None).await;

    let cli = identity.cli_config().unwrap();
    assert_eq!(cli.issuer, issuer);
    assert_eq!(cli.client_id, "jit-cli");
    assert!(cli.scopes.iter().any(|s| s == "access"));
    assert_eq!(
        cli.device_authorization_endpoint.as_deref(),
        Some(format!("{issuer}/device/auth").as_str())
    );
    assert_eq!(
        cli.token_endpoint.as_deref(),
        Some(format!("{issuer}/token").as_str())
    );
    assert!(!cli.dev);
    let mut no_cli = config(&issuer);
    no_cli.cli_client_id = None;
    assert!(jit_server::identity::cli_config(&no_cli, identity.discovery()).is_none());
    assert_eq!(identity.tenant(), Some(TENANT));

    // RP-initiated logout at the provider, back to the broker
    let mut browser = Browser::new();
    let (url, state) = identity.oidc.begin("/", None);
    let walk = browser.sign_in(&url, &redirect, "bob").await;
    let (code, returned) = callback(&walk.end);
    let sign_in = identity
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap();
    let back = redirect.replace("/auth/callback", "/");
    let logout = identity
        .oidc
        .end_session_url(Some(&sign_in.id_token.expose()), Some(&back))
        .unwrap();
    assert!(
        logout
            .as_str()
            .starts_with(&format!("{issuer}/session/end?")),
        "{logout}"
    );
    let page = browser.request(&logout, None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let xsrf = field_of(&page.body, "xsrf");
    let confirm = Url::parse(&format!("{issuer}/session/end/confirm")).unwrap();
    let done = browser
        .request(
            &confirm,
            Some(&[("xsrf", xsrf.as_str()), ("logout", "yes")]),
        )
        .await;
    let location = done.location.expect("logout redirects");
    assert!(location.as_str().starts_with(&back), "{location}");
    // signed out: the next sign-in asks for credentials again
    let (url, _) = identity.oidc.begin("/", None);
    assert!(browser.sign_in(&url, &redirect, "bob").await.login_form);
}

#[tokio::test]
async fn discovery_failures_name_the_issuer_key() {
    init();
    let issuer = idp();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // the provider names itself without the trailing slash
    let e = Identity::discover(
        &config(&format!("{issuer}/")),
        &redirect_uri(),
        clock.clone(),
        None,
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("oidc.issuer") && e.contains("issuer"), "{e}");
    // nobody listens
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = Identity::discover(
        &config(&format!("http://127.0.0.1:{port}")),
        &redirect_uri(),
        clock.clone(),
        None,
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("oidc.issuer"), "{e}");
    // the tenant of an Entra issuer must match `tenant_id`
    let mut entra = config(&format!(
        "https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"
    ));
    entra.tenant_id = Some(TENANT.to_owned());
    let e = Identity::discover(&entra, &redirect_uri(), clock, None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("oidc.tenant_id"), "{e}");
}

/// Entra's step-up: the authentication context is asked for with the `claims` parameter and
/// comes back in `acrs` only when the sign-in satisfied it (the fixture's contexts demand MFA,
/// as a Conditional Access policy would); a sign-in without it is refused. The CLI asks for it
/// on the device flow, for its access token.
#[tokio::test]
async fn an_authentication_context_is_asked_for_and_must_come_back_in_acrs() {
    use jit_server::identity::oidc::Require;
    init();
    let (identity, redirect) = fixture_identity(Arc::new(SystemClock), None).await;
    let require = Require {
        fresh_login: false,
        max_age: Some(Duration::from_hours(1)),
        auth_context: Some("c1".to_owned()),
    };
    let (url, state) = identity.oidc.begin_with("/requests/new?resume=1", &require);
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    let claims: Value = serde_json::from_str(&q["claims"]).unwrap();
    assert_eq!(
        claims,
        json!({"id_token": {"acrs": {"essential": true, "value": "c1"}}})
    );
    assert_eq!(q["max_age"], "3600");
    assert!(!q.contains_key("prompt"), "{url}");
    assert!(state.is_step_up());

    // Bob without a second factor: the provider leaves `c1` out, the broker refuses the sign-in.
    let mut browser = Browser::new();
    let walk = browser.sign_in(&url, &redirect, "bob").await;
    let (code, returned) = callback(&walk.end);
    let e = identity
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), AuthErrorKind::SignInFailed);
    assert!(
        e.reason().contains("authentication context `c1`"),
        "{}",
        e.reason()
    );

    // Asked again, the provider wants the login once more (his session lacks MFA); with it, `c1`.
    let (url, state) = identity.oidc.begin_with("/requests/new?resume=1", &require);
    let walk = browser.sign_in(&url, &redirect, "bob+mfa").await;
    assert!(
        walk.login_form,
        "the provider did not ask for the login again"
    );
    let (code, returned) = callback(&walk.end);
    let stepped = identity
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason()));
    assert_eq!(stepped.user.acrs, ["c1"]);
    assert_eq!(stepped.return_to, "/requests/new?resume=1");
    // Not asked, not given; an unknown context is not given either.
    let (url, state) = identity.oidc.begin("/", None);
    let walk = browser.sign_in(&url, &redirect, "bob").await;
    let (code, returned) = callback(&walk.end);
    let plain = identity
        .oidc
        .complete(&state, &code, &returned)
        .await
        .unwrap();
    assert!(plain.user.acrs.is_empty(), "{:?}", plain.user.acrs);

    // The device flow, as `jit` signs in again: the context for the access token.
    let claims = json!({"access_token": {"acrs": {"essential": true, "value": "c1"}},
                        "id_token": {"acrs": {"essential": true, "value": "c1"}}})
    .to_string();
    let tokens = device_tokens_with(
        "alice",
        "openid profile access",
        &[("claims", claims.as_str()), ("max_age", "3600")],
    )
    .await;
    let access = access_token(&tokens);
    assert_eq!(payload_of(&access)["acrs"], json!(["c1"]));
    let user = identity.bearer.validate(&access).await.unwrap();
    assert_eq!(user.acrs, ["c1"]);
    let plain = device_tokens("alice", "openid profile access", None).await;
    assert!(payload_of(&access_token(&plain)).get("acrs").is_none());
}
