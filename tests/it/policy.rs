//! The policy corpus in `policies/tests/{allow,deny}`: every case is decided
//! by the real Cedar policies, and the determining policy ids are checked.

use std::path::Path;

use jit_server::domain::User;
use jit_server::policy::{Action, PolicySet, RequestFacts, RequestResource};
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
            };
            policy.authorize_entitlement(&u, action, ent, &facts)
        }
        Action::Approve => {
            let r = case.request.as_ref().expect("request");
            let ent = policy.catalog.get(&r.entitlement).expect("entitlement");
            policy.authorize_request(
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
        }
        Action::Admin | Action::Audit => policy.authorize_broker(&u, action),
    };
    match result {
        Ok(a) => (true, a.policies),
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
