//! The policy corpus in `policies/tests/{allow,deny}`: every case is decided
//! by the real Cedar policies, and the determining policy ids are checked.

use std::path::Path;

use jit_server::domain::User;
use jit_server::policy::{Action, PolicySet, RequestFacts, RequestResource, act};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    principal: Principal,
    action: String,
    #[serde(default)]
    entitlement: Option<String>,
    #[serde(default)]
    request: Option<Req>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    ticket: Option<String>,
    #[serde(default)]
    extension: bool,
    expect_policies: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Principal {
    name: String,
    groups: Vec<String>,
    #[serde(default)]
    mfa: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Req {
    requester: String,
    entitlement: String,
    duration: String,
    #[serde(default)]
    break_glass: bool,
}

fn user(p: &Principal) -> User {
    User {
        key: format!("test/{}", p.name),
        oid: None,
        name: p.name.clone(),
        email: format!("{}@example.com", p.name),
        groups: p.groups.clone(),
        roles: vec![],
        mfa: p.mfa,
        auth_time: Some(time::OffsetDateTime::now_utc().unix_timestamp()),
        acrs: vec![],
    }
}

fn decide(policy: &PolicySet, case: &Case) -> (bool, Vec<String>) {
    let u = user(&case.principal);
    let action =
        Action::parse(&case.action).unwrap_or_else(|| panic!("unknown action `{}`", case.action));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let result = match action {
        Action::Request | Action::AutoApprove | Action::BreakGlass => {
            let ent = policy
                .catalog
                .get(case.entitlement.as_deref().unwrap())
                .expect("entitlement");
            let facts = RequestFacts {
                duration_seconds: jit_api::parse_duration(case.duration.as_deref().unwrap_or("1h"))
                    .unwrap(),
                justification: "policy corpus",
                ticket: case.ticket.as_deref(),
                extension: case.extension,
                break_glass: action == Action::BreakGlass,
                now,
                start_at: None,
            };
            match action {
                Action::Request => policy
                    .authorize_entitlement::<act::Request>(&u, ent, &facts)
                    .map(|a| a.policies().to_vec()),
                Action::AutoApprove => policy
                    .authorize_entitlement::<act::AutoApprove>(&u, ent, &facts)
                    .map(|a| a.policies().to_vec()),
                _ => policy
                    .authorize_entitlement::<act::BreakGlass>(&u, ent, &facts)
                    .map(|a| a.policies().to_vec()),
            }
        }
        Action::Approve => {
            let r = case.request.as_ref().expect("request");
            let ent = policy.catalog.get(&r.entitlement).expect("entitlement");
            policy
                .authorize_request(
                    &u,
                    &RequestResource {
                        id: "00000000-0000-0000-0000-000000000001",
                        requester_key: &format!("test/{}", r.requester),
                        requester_email: &format!("{}@example.com", r.requester),
                        entitlement: ent,
                        duration_seconds: jit_api::parse_duration(&r.duration).unwrap(),
                        break_glass: r.break_glass,
                    },
                    now,
                )
                .map(|a| a.policies().to_vec())
        }
        Action::Admin => policy
            .authorize_broker::<act::Admin>(&u)
            .map(|a| a.policies().to_vec()),
        Action::Audit => policy
            .authorize_broker::<act::Audit>(&u)
            .map(|a| a.policies().to_vec()),
    };
    match result {
        Ok(policies) => (true, policies),
        Err(d) => {
            assert!(d.errors.is_empty(), "evaluation errors: {:?}", d.errors);
            (false, d.policies)
        }
    }
}

#[test]
fn corpus() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies"));
    let policy = PolicySet::load(root).unwrap();
    let mut count = 0;
    let mut failures = Vec::new();
    for (dir, want) in [("allow", true), ("deny", false)] {
        let mut files: Vec<_> = std::fs::read_dir(root.join("tests").join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for path in files {
            let case: Case = toml::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let (allowed, mut policies) = decide(&policy, &case);
            policies.sort();
            let mut expected = case.expect_policies.clone();
            expected.sort();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            println!(
                "{dir}/{name}: {} by {policies:?}",
                if allowed { "allow" } else { "deny" }
            );
            if allowed != want || policies != expected {
                failures.push(format!(
                    "{dir}/{name}: got {allowed} by {policies:?}, want {want} by {expected:?}"
                ));
            }
            count += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "policy corpus failures:\n{}",
        failures.join("\n")
    );
    assert!(count >= 20, "the corpus has only {count} cases");
}

#[test]
fn bundled_policies_equal_the_policies_directory() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies"));
    let dir = PolicySet::load(root).unwrap();
    let bundled = PolicySet::bundled().unwrap();
    assert_eq!(
        dir.hash, bundled.hash,
        "serve --dev must run the example policies as shipped"
    );
}

fn someone(name: &str, groups: &[&str]) -> User {
    user(&Principal {
        name: name.to_owned(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        mfa: true,
    })
}

/// `approvable` narrows lists in SQL: it must hold every entitlement whose
/// requests the exact decision allows, whoever asked, for how long, and with
/// or without break-glass; its `unconditional` ones must be allowed for all of
/// them (lists take those without a decision per row); and it must narrow (a sandbox-only approver is
/// told only the sandbox, a requester nothing).
#[test]
fn approvable_holds_every_entitlement_the_exact_decision_allows() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies"));
    let policy = PolicySet::load(root).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let principals = [
        someone("approver", &["grp-jit-approvers"]),
        someone("oncall-approver", &["grp-jit-approvers", "grp-oncall"]),
        someone("prod-admin", &["grp-prod-admins"]),
        someone("requester", &["grp-jit-requesters"]),
        someone("auditor", &["grp-jit-auditors"]),
        someone("nobody", &[]),
    ];
    let requesters = [
        someone("alice", &["grp-jit-requesters"]),
        principals[2].clone(),
    ];
    let mut allowed_somewhere = 0;
    let mut unconditional_somewhere = 0;
    for p in &principals {
        let jit_server::policy::Approvable {
            entitlements: approvable,
            unconditional,
        } = policy.approvable(p, now).unwrap();
        assert!(
            unconditional.iter().all(|e| approvable.contains(e)),
            "{}: {unconditional:?} not within {approvable:?}",
            p.name
        );
        unconditional_somewhere += unconditional.len();
        for ent in policy.catalog.iter() {
            for r in &requesters {
                for duration_seconds in [60, 3600, 86_400 * 30] {
                    for break_glass in [false, true] {
                        let exact = policy.authorize_request(
                            p,
                            &RequestResource {
                                id: "00000000-0000-0000-0000-000000000002",
                                requester_key: &r.key,
                                requester_email: &r.email,
                                entitlement: ent,
                                duration_seconds,
                                break_glass,
                            },
                            now,
                        );
                        // Lists skip the exact decision on these: it must allow every
                        // request but the user's own.
                        if unconditional.contains(&ent.id) && r.key != p.key {
                            assert!(
                                exact.is_ok(),
                                "{} may not approve {} of {} ({duration_seconds} s, break-glass \
                                 {break_glass}) but unconditional says {unconditional:?}",
                                p.name,
                                ent.id,
                                r.name
                            );
                        }
                        if exact.is_ok() {
                            allowed_somewhere += 1;
                            assert!(
                                approvable.contains(&ent.id),
                                "{} may approve {} but approvable says {approvable:?}",
                                p.name,
                                ent.id
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(allowed_somewhere > 0);
    assert!(unconditional_somewhere > 0, "the test shows nothing");
    assert_eq!(
        policy.approvable(&principals[2], now).unwrap().entitlements,
        vec!["aws-sandbox".to_owned()]
    );
    assert!(
        policy
            .approvable(&principals[3], now)
            .unwrap()
            .entitlements
            .is_empty()
    );
    assert_eq!(
        policy
            .approvable(&principals[0], now)
            .unwrap()
            .entitlements
            .len(),
        policy.catalog.iter().count()
    );
}

/// The user's entities are cached per policy set, but a user whose groups or
/// attributes changed is decided on what they are now.
#[test]
fn a_cached_user_is_decided_on_their_current_groups() {
    let policy = PolicySet::bundled().unwrap();
    let mut u = someone("dana", &["grp-jit-auditors"]);
    assert!(policy.authorize_broker::<act::Audit>(&u).is_ok());
    assert!(policy.authorize_broker::<act::Admin>(&u).is_err());
    u.groups = vec!["grp-jit-requesters".to_owned()];
    assert!(policy.authorize_broker::<act::Audit>(&u).is_err());
    u.groups = vec!["grp-jit-admins".to_owned()];
    let admin = policy.authorize_broker::<act::Admin>(&u).unwrap();
    assert!(admin.is_for(&u));
    assert_eq!(admin.resource(), "jit");
    assert_eq!(admin.policies(), ["admins-administer"]);
}

/// The bundled policy files and one more.
fn bundled_with(name: &str, text: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = jit_server::policy::BUNDLED
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    files.push((name.to_owned(), text.to_owned()));
    files
}

/// Requests are made at run time: a policy naming one cannot be narrowed by
/// entitlement and is refused at load, with the file named.
#[test]
fn a_policy_naming_a_request_is_refused() {
    let files = bundled_with(
        "extra.cedar",
        "@id(\"one-request\")\npermit (principal, action == Action::\"approve\", resource == Request::\"r1\");\n",
    );
    let errors = PolicySet::from_files(&files, "test").unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("extra.cedar") && e.contains("cannot name a request")),
        "{errors:?}"
    );
}

/// What a user may request is decided once per user and policy set while no
/// policy reads the time; a change of the user's groups or MFA decides again,
/// and a policy that reads the time turns the cache off.
#[test]
fn the_listing_is_kept_per_user_unless_a_policy_reads_the_time() {
    use std::cell::Cell;
    use std::sync::Arc;

    let runs = Cell::new(0);
    let compute = |what: &str| {
        runs.set(runs.get() + 1);
        Arc::from(vec![(what.to_owned(), false)])
    };
    let policy = PolicySet::bundled().unwrap();
    let mut u = someone("erin", &["grp-jit-requesters"]);
    assert_eq!(policy.listing(&u, || compute("a"))[0].0, "a");
    assert_eq!(
        policy.listing(&u, || compute("b"))[0].0,
        "a",
        "kept for the same user"
    );
    assert_eq!(runs.get(), 1);
    u.groups.push("grp-prod-admins".to_owned());
    assert_eq!(policy.listing(&u, || compute("c"))[0].0, "c", "new groups");
    u.mfa = !u.mfa;
    assert_eq!(policy.listing(&u, || compute("d"))[0].0, "d", "MFA changed");
    assert_eq!(runs.get(), 3);
    let other = someone("frank", &["grp-jit-requesters"]);
    assert_eq!(policy.listing(&other, || compute("e"))[0].0, "e");

    let files = bundled_with(
        "hours.cedar",
        "@id(\"office-hours\")\nforbid (principal, action == Action::\"request\", resource)\n\
         when { context.hour_utc < 6 };\n",
    );
    let timed = PolicySet::from_files(&files, "test").unwrap();
    runs.set(0);
    timed.listing(&u, || compute("f"));
    assert_eq!(timed.listing(&u, || compute("g"))[0].0, "g");
    assert_eq!(runs.get(), 2, "decided on every call");
}
