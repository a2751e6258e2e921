//! The `jit` binary end to end: a real `jit-server` in production mode
//! (`OpenID` sign-in against the test provider, AWS against moto), users
//! signed in through the device flow with their own config and cache
//! directories, and the AWS CLI calling `jit credential-process`.

pub(crate) mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use jit_api::{Request, RequestState};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use harness::{
    ACCOUNT, Broker, Federation, Out, Peers, Roles, SIGNIN_TOKEN, StderrLog, User, mode,
};

/// One test's world: peers, roles in moto, the federation stand-in, a broker.
struct World {
    peers: Peers,
    broker: Broker,
    federation: Federation,
    admin_role: String,
    sandbox_role: String,
    stderr_log: StderrLog,
    _home: tempfile::TempDir,
}

impl World {
    fn start() -> Self {
        let peers = Peers::from_env();
        // Build (if needed) before anything is timed.
        harness::jit_bin();
        let home = tempfile::tempdir().unwrap();
        let (admin_arn, admin_role) = peers.create_role(home.path(), "admin");
        let (sandbox_arn, sandbox_role) = peers.create_role(home.path(), "sandbox");
        let federation = Federation::start();
        let broker = Broker::start(
            &peers,
            &Roles {
                admin_arn,
                sandbox_arn,
            },
            &federation.url,
        );
        Self {
            peers,
            broker,
            federation,
            admin_role,
            sandbox_role,
            stderr_log: StderrLog::default(),
            _home: home,
        }
    }

    /// A user signed in through the device flow.
    fn signed_in(&self, login: &str) -> User {
        let user = User::new(login, &self.stderr_log);
        let out = user.login(&self.broker.url, &self.peers.idp).ok();
        assert!(
            out.stdout
                .starts_with(&format!("Signed in to {} as ", self.broker.url))
                && out.stdout.contains(&format!("<{login}@example.com>")),
            "{out:#?}"
        );
        assert!(
            out.stderr.contains("enter the code"),
            "the code goes to stderr: {out:#?}"
        );
        user
    }

    /// Panics if any `jit` run or the server log shows one of `secrets`.
    fn assert_no_secret_leaked(&self, secrets: &[String]) {
        assert!(secrets.len() >= 4, "collected too few secrets to check");
        let stderr = self.stderr_log.lock().unwrap().clone();
        assert!(!stderr.is_empty());
        let server_log = self.broker.log();
        for secret in secrets.iter().filter(|s| s.len() >= 16) {
            for text in &stderr {
                assert!(
                    !text.contains(secret.as_str()),
                    "a secret reached jit's stderr: {text}"
                );
            }
            assert!(
                !server_log.contains(secret.as_str()),
                "a secret reached the server log"
            );
        }
    }
}

fn request(out: &Out) -> Request {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not a request ({e}): {out:#?}"))
}

/// Polls `jit -o json show ID` as `user` until `state`.
fn wait_for_state(user: &User, id: &str, state: RequestState) -> Request {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = request(&user.jit(&["-o", "json", "show", id]).ok());
        if req.state == state {
            return req;
        }
        assert!(
            Instant::now() < deadline,
            "request {id} is still {} (want {state})",
            req.state
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The credential JSON `jit credential-process` printed.
fn credentials(out: &Out) -> Value {
    let creds = out.json();
    assert_eq!(creds["Version"], 1, "{out:#?}");
    for key in [
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ] {
        assert!(
            creds[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key} missing: {out:#?}"
        );
    }
    assert_eq!(out.stdout.lines().count(), 1, "one line: {out:#?}");
    creds
}

fn secrets_of(creds: &Value) -> [String; 2] {
    [
        creds["SecretAccessKey"].as_str().unwrap().to_owned(),
        creds["SessionToken"].as_str().unwrap().to_owned(),
    ]
}

fn token_secrets(user: &User) -> Vec<String> {
    let tokens = user.tokens();
    ["access_token", "refresh_token"]
        .iter()
        .filter_map(|k| tokens[k].as_str().map(str::to_owned))
        .collect()
}

/// Asserts the private file modes of a user's directories.
fn assert_private(user: &User) {
    assert_eq!(mode(&user.config), 0o700, "config dir");
    assert_eq!(mode(&user.config.join("tokens.json")), 0o600, "tokens.json");
    for file in user.cache_files() {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
        assert_eq!(mode(file.parent().unwrap()), 0o700, "credentials dir");
    }
}

fn assumed_role_arn(role: &str, login: &str) -> String {
    format!("arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{login}@example.com")
}

/// `aws sts get-caller-identity` with a profile whose `credential_process`
/// is `jit credential-process ENT`, run in `user`'s environment.
fn aws_with_credential_process(world: &World, user: &User, entitlement: &str) -> Out {
    let bin = harness::jit_bin().display().to_string();
    let bin = if bin.contains(' ') {
        format!("\"{bin}\"")
    } else {
        bin
    };
    let config = user.home.join("aws-config");
    std::fs::write(
        &config,
        format!(
            "[profile e2e]\nregion = us-east-1\ncredential_process = {bin} credential-process {entitlement}\n"
        ),
    )
    .unwrap();
    let mut cmd = world.peers.aws(&user.home);
    cmd.env("AWS_CONFIG_FILE", &config)
        .env("JIT_CONFIG_DIR", &user.config)
        .env("JIT_CACHE_DIR", &user.cache)
        .env("JIT_TERMINAL_PROMPT", "0")
        .args(["sts", "get-caller-identity", "--profile", "e2e"])
        .args(["--endpoint-url", &world.peers.moto, "--output", "json"]);
    user.record(harness::Running::spawn(cmd, "aws sts get-caller-identity").wait())
}

/// A hit prints the cache file byte for byte, in each form `jit` answers itself and in one
/// it hands to `jit-client` (an option after the entitlement), and leaves the cache as is.
fn assert_hits_print_the_file(world: &World, user: &User, entitlement: &str, file: &Path) {
    let server = world.broker.url.as_str();
    let server_eq = format!("--server={server}");
    for args in [
        &["credential-process", entitlement][..],
        &["--server", server, "credential-process", entitlement],
        &[&server_eq, "credential-process", entitlement],
        &["credential-process", entitlement, "--server", server],
    ] {
        let hit = user.command(args).output().unwrap();
        assert!(hit.status.success(), "{args:?}: {hit:?}");
        assert_eq!(hit.stdout, std::fs::read(file).unwrap(), "{args:?}");
        assert!(hit.stderr.is_empty(), "{args:?}: {hit:?}");
    }
    assert_eq!(user.cache_files(), [file]);
}

/// A bundle from the command line: listed by `jit entitlements` with what each member grants,
/// requested by its id as an entitlement is, approved once, granted as one.
#[test]
fn the_cli_requests_a_bundle_as_one_entitlement() {
    let world = World::start();
    let alice = world.signed_in("alice");
    let bob = world.signed_in("bob");
    let ents = alice.jit(&["entitlements"]).ok();
    let row = ents
        .stdout
        .lines()
        .find(|l| l.starts_with("e2e-kit "))
        .unwrap_or_else(|| panic!("{ents:#?}"));
    assert!(
        row.contains(" bundle ")
            && row.contains(&format!(
                ":role/{}) + e2e-team (role arn:aws:iam::",
                world.sandbox_role
            ))
            && row.contains("e2e-sandbox (role arn:aws:iam::")
            && row.ends_with(&format!(":role/{})", world.admin_role)),
        "{row}"
    );
    let json = alice.jit(&["-o", "json", "entitlements"]).ok().json();
    let kit = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "e2e-kit")
        .unwrap();
    assert_eq!(
        kit["members"],
        serde_json::json!(["e2e-sandbox", "e2e-team"])
    );
    assert_eq!(kit["approvals_required"], 1);

    let filed = request(
        &alice
            .jit(&[
                "-o",
                "json",
                "request",
                "e2e-kit",
                "--duration",
                "1h",
                "--reason",
                "on call",
            ])
            .ok(),
    );
    assert_eq!(filed.kind, "bundle");
    assert_eq!(filed.state, RequestState::Pending);
    // A member is refused while the bundle is open, naming it.
    alice
        .jit(&[
            "request",
            "e2e-sandbox",
            "--duration",
            "1h",
            "--reason",
            "x",
        ])
        .fails(1, "`e2e-sandbox` grants some of what `e2e-kit` grants");
    bob.jit(&["approve", &filed.id.to_string(), "--comment", "ok"])
        .ok();
    let granted = wait_for_state(&alice, &filed.id.to_string(), RequestState::Active);
    assert_eq!(granted.entitlement, "e2e-kit");
}

/// Rewrites the `Expiration` of a cached credential file.
fn set_expiration(file: &Path, at: OffsetDateTime) {
    let mut creds: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    creds["Expiration"] = Value::String(at.format(&Rfc3339).unwrap());
    let mut text = serde_json::to_string(&creds).unwrap();
    text.push('\n');
    std::fs::write(file, text).unwrap();
}

/// Sign-in (device flow) for a requester, an approver and an auditor; a
/// request waited for and approved by id; the grant used by the AWS CLI
/// (`credential_process`), `jit exec` and `jit console`; deny, cancel,
/// self-approval, extend, revoke, audit verify; JSON output, one-line errors,
/// no secrets on stderr.
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one story from sign-in to audit, told in order"
)]
fn the_cli_takes_a_request_from_sign_in_to_aws_and_back() {
    let world = World::start();
    let url = world.broker.url.clone();
    let alice = world.signed_in("alice");
    let bob = world.signed_in("bob");
    let carol = world.signed_in("carol");
    assert_private(&alice);

    // Who am I, what may I ask for.
    let who = alice.jit(&["whoami"]).ok();
    for want in [
        "Alice Admin",
        "alice@example.com",
        "grp-prod-admins",
        url.as_str(),
    ] {
        assert!(who.stdout.contains(want), "{want}: {who:#?}");
    }
    let me = alice.jit(&["--output", "json", "whoami"]).ok().json();
    assert_eq!(me["email"], "alice@example.com");
    let ents = alice.jit(&["entitlements"]).ok();
    assert!(
        ents.stdout.contains("e2e-admin") && ents.stdout.contains("aws_role"),
        "{ents:#?}"
    );
    let ents = alice.jit(&["-o", "json", "entitlements"]).ok().json();
    let ids: Vec<&str> = ents
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"e2e-admin") && ids.contains(&"e2e-sandbox"),
        "{ids:?}"
    );

    // Errors are one line with a non-zero exit.
    alice
        .jit(&["request", "e2e-nope", "--duration", "1h", "--reason", "x"])
        .fails(1, "`e2e-nope`");
    alice
        .jit(&["credential-process", "e2e-admin"])
        .fails(1, "no active grant for `e2e-admin`");

    // Alice waits for her request; Bob approves it by the id she shows him.
    let waiting = alice.spawn(&[
        "-o",
        "json",
        "request",
        "e2e-admin",
        "--duration",
        "1h",
        "--reason",
        "INC-4711: fix replication",
        "--ticket",
        "INC-4711",
        "--wait",
    ]);
    let first = waiting.next_line(Duration::from_secs(30)).unwrap();
    assert!(
        first.contains("`e2e-admin`: pending, 0/1 approvals"),
        "{first}"
    );
    let short = first.split_whitespace().next().unwrap().to_owned();
    assert_eq!(short.len(), 8, "{first}");
    // Nobody approves their own request.
    alice.jit(&["approve", &short]).fails(1, "error: ");
    let approved = bob
        .jit(&["approve", &short, "--comment", "ok for INC-4711"])
        .ok();
    assert!(
        approved.stdout.starts_with(&format!(
            "Approved request {short} (`e2e-admin` for alice@example.com)"
        )),
        "{approved:#?}"
    );
    let done = alice.record(waiting.wait()).ok();
    let grant = request(&done);
    assert_eq!(grant.state, RequestState::Active);
    assert!(grant.id.to_string().ends_with(&short), "{short}");
    assert!(!grant.simulated);
    let left = grant.expires_at.unwrap() - OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::minutes(55) && left <= time::Duration::hours(1),
        "{left}"
    );
    let id = grant.id.to_string();

    // Status and show, as table and as JSON.
    let status = alice.jit(&["status"]).ok();
    assert!(
        status.stdout.starts_with("Active grants") && status.stdout.contains(&short),
        "{status:#?}"
    );
    let listed = alice.jit(&["-o", "json", "status"]).ok().json();
    let listed = listed.get("requests").cloned().unwrap_or(listed);
    let mine: Vec<Request> = serde_json::from_value(listed).unwrap();
    assert!(
        mine.iter()
            .any(|r| r.id == grant.id && r.state == RequestState::Active)
    );
    let shown = alice.jit(&["show", &short]).ok();
    for want in [
        "e2e-admin",
        "bob@example.com",
        "ok for INC-4711",
        "INC-4711",
    ] {
        assert!(shown.stdout.contains(want), "{want}: {shown:#?}");
    }
    let audited = carol.jit(&["show", &id]).ok();
    assert!(audited.stdout.contains("bob@example.com"), "{audited:#?}");

    // The AWS CLI gets the role's credentials through credential_process.
    let aws = aws_with_credential_process(&world, &alice, "e2e-admin").ok();
    assert_eq!(
        aws.json()["Arn"],
        assumed_role_arn(&world.admin_role, "alice"),
        "{aws:#?}"
    );
    let creds = credentials(&alice.jit(&["credential-process", "e2e-admin"]).ok());
    let cache = alice.cache_files();
    assert_eq!(cache.len(), 1, "{cache:?}");
    assert_eq!(
        serde_json::from_slice::<Value>(&std::fs::read(&cache[0]).unwrap()).unwrap(),
        creds
    );
    let key = creds["AccessKeyId"].as_str().unwrap().to_owned();
    assert!(key.starts_with("ASIA"), "{key}");

    // jit exec: the command's own exit code, with the variables set.
    let exec = alice.jit(&[
        "exec",
        "e2e-admin",
        "--",
        "sh",
        "-c",
        r#"printf '%s %s %s %s\n' "$AWS_ACCESS_KEY_ID" "$AWS_REGION" "${AWS_SECRET_ACCESS_KEY:+secret}" "${AWS_SESSION_TOKEN:+token}"; exit 7"#,
    ]);
    assert_eq!(exec.code, 7, "{exec:#?}");
    assert_eq!(exec.stdout, format!("{key} us-east-1 secret token\n"));
    let aws_bin = world.peers.venv_bin.join("aws").display().to_string();
    let exec = alice
        .jit(&[
            "exec",
            "e2e-admin",
            "--region",
            "eu-west-1",
            "--",
            &aws_bin,
            "sts",
            "get-caller-identity",
            "--endpoint-url",
            &world.peers.moto,
            "--output",
            "json",
        ])
        .ok();
    assert_eq!(
        exec.json()["Arn"],
        assumed_role_arn(&world.admin_role, "alice")
    );
    alice
        .jit(&["exec", "e2e-admin", "--", "jit-e2e-no-such-command"])
        .fails(127, "`jit-e2e-no-such-command`");

    // The console: a federation sign-in URL, printed.
    let console = alice.jit(&["console", "e2e-admin", "--print"]).ok();
    let link = url::Url::parse(console.stdout.trim()).unwrap();
    assert_eq!(
        link.as_str().split('?').next(),
        Some(world.federation.url.as_str())
    );
    let query: std::collections::HashMap<String, String> =
        link.query_pairs().into_owned().collect();
    assert_eq!(query["Action"], "login");
    assert_eq!(query["SigninToken"], SIGNIN_TOKEN);
    assert_eq!(query["Issuer"], url);
    assert!(
        world
            .federation
            .calls
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );

    // A denied wait ends with exit 2 and says who denied it.
    let waiting = alice.spawn(&[
        "request",
        "e2e-team",
        "--duration",
        "30m",
        "--reason",
        "try the team role",
        "--wait",
    ]);
    let first = waiting.next_line(Duration::from_secs(30)).unwrap();
    let team_short = first.split_whitespace().next().unwrap().to_owned();
    let denied = bob
        .jit(&["deny", &team_short, "--comment", "use the admin grant"])
        .ok();
    assert!(denied.stdout.starts_with("Denied request"), "{denied:#?}");
    let out = alice.record(waiting.wait());
    assert_eq!(out.code, 2, "{out:#?}");
    let last = out.stderr.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with(&format!("error: request {team_short} for `e2e-team` was denied by bob@example.com (\"use the admin grant\")")),
        "{out:#?}"
    );

    // Cancel a pending request; cancelling it again is an error.
    let pending = request(
        &alice
            .jit(&[
                "-o",
                "json",
                "request",
                "e2e-team",
                "--duration",
                "30m",
                "--reason",
                "again",
            ])
            .ok(),
    );
    assert_eq!(pending.state, RequestState::Pending);
    let pid = pending.id.to_string();
    let cancelled = alice.jit(&["cancel", &pid[pid.len() - 8..]]).ok();
    assert!(cancelled.stdout.contains("now cancelled"), "{cancelled:#?}");
    alice.jit(&["cancel", &pid]).fails(1, "error: ");

    // Bob may ask for the team role but not approve it himself.
    let his = request(
        &bob.jit(&[
            "-o",
            "json",
            "request",
            "e2e-team",
            "--duration",
            "30m",
            "--reason",
            "bob's own",
        ])
        .ok(),
    );
    bob.jit(&["approve", &his.id.to_string()])
        .fails(1, "error: ");
    assert_eq!(
        request(&bob.jit(&["-o", "json", "show", &his.id.to_string()]).ok()).state,
        RequestState::Pending
    );
    bob.jit(&["cancel", &his.id.to_string()]).ok();

    // Extend: a new request that continues the grant once approved.
    let ext = request(
        &alice
            .jit(&[
                "-o",
                "json",
                "extend",
                &short,
                "--by",
                "30m",
                "--reason",
                "need more time",
            ])
            .ok(),
    );
    assert_eq!(ext.extends, Some(grant.id));
    assert_eq!(ext.state, RequestState::Pending);
    let ext_id = ext.id.to_string();
    bob.jit(&["approve", &ext_id]).ok();
    let ext = wait_for_state(&alice, &ext_id, RequestState::Active);
    assert_eq!(
        ext.expires_at.unwrap(),
        grant.expires_at.unwrap() + time::Duration::minutes(30)
    );

    // Revoke ends the grant and its extension now; no new credentials come after that.
    let revoked = alice.jit(&["revoke", &id]).ok();
    assert!(revoked.stdout.contains("now revoked"), "{revoked:#?}");
    assert_eq!(
        request(&alice.jit(&["-o", "json", "show", &ext_id]).ok()).state,
        RequestState::Revoked
    );
    std::fs::remove_file(&cache[0]).unwrap();
    alice
        .jit(&["credential-process", "e2e-admin"])
        .fails(1, "no active grant for `e2e-admin`");

    // The auditor verifies the chain; others may not.
    let verified = carol.jit(&["audit", "verify"]).ok();
    assert!(
        verified.stdout.starts_with("audit chain ok: "),
        "{verified:#?}"
    );
    let report = carol.jit(&["-o", "json", "audit", "verify"]).ok().json();
    assert_eq!(report["ok"], true);
    assert!(report["checked"].as_u64().unwrap() >= 10, "{report}");
    // in steps from the second check on; --full from the first row
    assert!(report["recomputed_from"].as_i64().unwrap() > 1, "{report}");
    let full = carol
        .jit(&["-o", "json", "audit", "verify", "--full"])
        .ok()
        .json();
    assert!(full["ok"] == true && full["recomputed_from"] == 1, "{full}");
    bob.jit(&["audit", "verify"]).fails(1, "error: ");

    // Secrets never reach stderr (nor the server log).
    let mut secrets = secrets_of(&creds).to_vec();
    for user in [&alice, &bob, &carol] {
        secrets.extend(token_secrets(user));
    }
    world.assert_no_secret_leaked(&secrets);

    // Logout forgets the tokens; commands then say how to sign in.
    alice.jit(&["logout"]).ok();
    assert!(!alice.config.join("tokens.json").exists());
    alice.jit(&["whoami"]).fails(1, "jit login");
}

/// Token renewal against the provider; the credential cache: 0600, served
/// without the broker while fresh, renewed by the broker within five minutes
/// of its expiry.
#[test]
fn cached_credentials_are_served_without_the_broker_and_renewed_near_expiry() {
    let mut world = World::start();
    let alice = world.signed_in("alice");
    let mut secrets = token_secrets(&alice);

    // An expired access token is renewed with the refresh token first…
    let tokens_file = alice.config.join("tokens.json");
    let mut tokens = alice.tokens();
    let first_token = tokens["access_token"].clone();
    tokens["expires_at"] = Value::from(OffsetDateTime::now_utc().unix_timestamp() - 10);
    std::fs::write(&tokens_file, tokens.to_string()).unwrap();
    let me = alice.jit(&["-o", "json", "whoami"]).ok().json();
    assert_eq!(me["email"], "alice@example.com");
    let tokens = alice.tokens();
    assert_ne!(tokens["access_token"], first_token, "renewed");
    assert!(tokens["expires_at"].as_i64().unwrap() > OffsetDateTime::now_utc().unix_timestamp());
    assert_eq!(mode(&tokens_file), 0o600);
    secrets.extend(token_secrets(&alice));
    // …and one the broker refuses is renewed once, then the call is made again.
    let mut tokens = alice.tokens();
    tokens["access_token"] = Value::from("not-a-token");
    std::fs::write(&tokens_file, tokens.to_string()).unwrap();
    alice.jit(&["whoami"]).ok();
    assert_ne!(alice.tokens()["access_token"], "not-a-token");
    secrets.extend(token_secrets(&alice));

    // Granted at once (no approval needed).
    let grant = request(
        &alice
            .jit(&[
                "-o",
                "json",
                "request",
                "e2e-sandbox",
                "--duration",
                "1h",
                "--reason",
                "cache test",
                "--wait",
            ])
            .ok(),
    );
    assert_eq!(grant.state, RequestState::Active);

    // A miss: `jit` hands it to `jit-client`, which mints and caches.
    let first = alice.jit(&["credential-process", "e2e-sandbox"]).ok();
    let creds = credentials(&first);
    let files = alice.cache_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = files[0].clone();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first.stdout);
    assert_private(&alice);
    assert_hits_print_the_file(&world, &alice, "e2e-sandbox", &file);
    let aws = aws_with_credential_process(&world, &alice, "e2e-sandbox").ok();
    assert_eq!(
        aws.json()["Arn"],
        assumed_role_arn(&world.sandbox_role, "alice")
    );

    // Within five minutes of its expiry the cache is renewed by the broker.
    set_expiration(
        &file,
        OffsetDateTime::now_utc() + time::Duration::minutes(4),
    );
    let renewed = alice.jit(&["credential-process", "e2e-sandbox"]).ok();
    let fresh = credentials(&renewed);
    assert_ne!(fresh["AccessKeyId"], creds["AccessKeyId"], "a new session");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), renewed.stdout);
    assert_hits_print_the_file(&world, &alice, "e2e-sandbox", &file);
    assert_eq!(mode(&file), 0o600);
    let expires = OffsetDateTime::parse(fresh["Expiration"].as_str().unwrap(), &Rfc3339).unwrap();
    assert!(expires - OffsetDateTime::now_utc() > time::Duration::minutes(5));

    // With the broker gone, a fresh cache entry is still served, byte for byte.
    world.broker.stop();
    alice.jit(&["status"]).fails(1, "error: ");
    let offline = alice.jit(&["credential-process", "e2e-sandbox"]).ok();
    assert_eq!(offline.stdout, renewed.stdout);
    assert!(offline.stderr.is_empty(), "{offline:#?}");
    let exec = alice.jit(&["exec", "e2e-sandbox", "--", "sh", "-c", "exit 3"]);
    assert_eq!(exec.code, 3, "{exec:#?}");
    // …but not one that is about to expire.
    set_expiration(
        &file,
        OffsetDateTime::now_utc() + time::Duration::minutes(4),
    );
    alice
        .jit(&["credential-process", "e2e-sandbox"])
        .fails(1, "error: ");

    // Back up: the broker mints again.
    world.broker.restart();
    let again = credentials(&alice.jit(&["credential-process", "e2e-sandbox"]).ok());
    assert_ne!(again["AccessKeyId"], fresh["AccessKeyId"]);

    for c in [&creds, &fresh, &again] {
        secrets.extend(secrets_of(c));
    }
    world.assert_no_secret_leaked(&secrets);
}

/// Step-up over the API: `jit request` for an entitlement behind an authentication context
/// meets the broker's RFC 9470 challenge, says why, signs in again through the device flow
/// asking for the context, and retries once: the request is filed. A sign-in as someone else is
/// refused, and so is a provider that does not grant the context.
#[test]
fn jit_request_meets_the_step_up_challenge_signs_in_again_and_succeeds() {
    let world = World::start();
    let idp = world.peers.idp.clone();
    let alice = world.signed_in("alice");
    let plain = alice.tokens()["access_token"].as_str().unwrap().to_owned();
    let args = [
        "-o",
        "json",
        "request",
        "e2e-context",
        "--duration",
        "30m",
        "--reason",
        "INC-77: rotate the deploy key",
    ];

    // Bob's sign-in cannot stand in for alice's.
    let out = alice.sign_in_at_the_provider(alice.spawn(&args), &idp, "bob+mfa");
    ends_in_error(
        &out,
        "error: that sign-in was as bob@example.com, not as alice@example.com who is signed in to jit",
    );
    assert_eq!(
        alice.tokens()["access_token"],
        plain.as_str(),
        "bob's tokens were kept"
    );
    // Alice, whose sign-ins carry MFA: the provider grants `c1`, the request goes through.
    let out = alice.sign_in_at_the_provider(alice.spawn(&args), &idp, "alice");
    let out = out.ok();
    assert!(
        out.stderr
            .contains("`POST /requests` needs authentication context `c1`"),
        "{out:#?}"
    );
    let filed = request(&out);
    assert_eq!(filed.entitlement, "e2e-context");
    assert!(
        matches!(filed.state, RequestState::Approved | RequestState::Active),
        "{filed:?}"
    );
    // The new tokens are kept, with the context: the next call needs no new sign-in.
    let stepped = alice.tokens()["access_token"].as_str().unwrap().to_owned();
    assert_ne!(stepped, plain);
    let claims = jwt_claims(&stepped);
    assert_eq!(claims["acrs"], serde_json::json!(["c1"]), "{claims}");
    let shown = alice
        .jit(&["-o", "json", "show", &filed.id.to_string()])
        .ok();
    assert!(shown.stderr.is_empty(), "{shown:#?}");

    // Bob's sign-in without MFA does not get `c1`: one try, then a clear error.
    let bob = world.signed_in("bob");
    let out = bob.sign_in_at_the_provider(
        bob.spawn(&[
            "request",
            "e2e-context",
            "--duration",
            "30m",
            "--reason",
            "x",
        ]),
        &idp,
        "bob",
    );
    ends_in_error(
        &out,
        "the identity provider did not give the sign-in authentication context `c1`",
    );

    let mut secrets = token_secrets(&alice);
    secrets.extend(token_secrets(&bob));
    secrets.push(plain);
    world.assert_no_secret_leaked(&secrets);
}

/// The claims of a JWT, unverified (the test reads what the provider put in).
fn jwt_claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// A command that signed in again on the way failed: exit 1, nothing on stdout, and its last
/// stderr line is the one-line error containing `needle`.
#[track_caller]
fn ends_in_error(out: &Out, needle: &str) {
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    let last = out.stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains(needle),
        "{needle:?}: {out:#?}"
    );
}
