//! One Cedar decision, as the broker makes it: the bundled example policies
//! and catalog, a user seen before (their entities come from the policy set's
//! cache), the inputs built natively. Target: ≤ 10 µs per decision
//! (docs/performance.md).
//!
//! - `request`: may alice ask for an entitlement (`request`, context of ten facts);
//! - `approve`: may an approver decide on a request (the request and its requester added);
//! - `broker`: is the user an auditor;
//! - `requestable`: everything `GET /api/v1/entitlements` decides for one call (each catalog
//!   entry, plus break-glass where the catalog allows it);
//! - `listing`: the same call answered from the policy set's per-user cache
//!   (`PolicySet::listing`), as the broker does while no policy reads the time;
//! - `approvable`: the entitlements a user might approve, by partial evaluation, once per list;
//! - `first_sight`: a user not seen before (the cache is bypassed by a new key each time).
//!
//! `cargo bench -p jit-server --bench policy`

#![expect(clippy::expect_used, reason = "a benchmark aborts on set-up failure")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jit_server::domain::User;
use jit_server::policy::{PolicySet, RequestFacts, RequestResource, act};

fn user(name: &str, groups: &[&str]) -> User {
    User {
        key: format!("bench/{name}"),
        oid: None,
        name: name.to_owned(),
        email: format!("{name}@example.com"),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        roles: vec![],
        mfa: true,
        auth_time: Some(1_780_000_000),
        acrs: vec![],
    }
}

fn decisions(c: &mut Criterion) {
    let policy = PolicySet::bundled().expect("bundled policies");
    let alice = user("alice", &["grp-jit-requesters", "grp-oncall", "grp-dev"]);
    let bob = user("bob", &["grp-jit-approvers", "grp-jit-requesters"]);
    let auditor = user("carol", &["grp-jit-auditors"]);
    let ent = policy.catalog.get("aws-sandbox").expect("aws-sandbox");
    let now = 1_780_000_100;
    let facts = RequestFacts {
        duration_seconds: 3600,
        justification: "rotate the deploy key",
        ticket: Some("INC-1234"),
        extension: false,
        break_glass: false,
        now,
        start_at: None,
    };
    let mut group = c.benchmark_group("decision");
    group.bench_function("request", |b| {
        b.iter(|| {
            black_box(policy.authorize_entitlement::<act::Request>(black_box(&alice), ent, &facts))
                .expect("allowed")
        });
    });
    let resource = RequestResource {
        id: "0190b7a2-0000-7000-8000-000000000001",
        requester_key: &alice.key,
        requester_email: &alice.email,
        entitlement: ent,
        duration_seconds: 3600,
        break_glass: false,
    };
    group.bench_function("approve", |b| {
        b.iter(|| {
            black_box(policy.authorize_request(black_box(&bob), &resource, now)).expect("allowed")
        });
    });
    group.bench_function("broker", |b| {
        b.iter(|| {
            black_box(policy.authorize_broker::<act::Audit>(black_box(&auditor))).expect("allowed")
        });
    });
    let requestable = |who| {
        policy
            .catalog
            .iter()
            .filter(|e| {
                policy
                    .authorize_entitlement::<act::Request>(black_box(who), e, &facts)
                    .is_ok()
            })
            .map(|e| {
                (
                    e.id.clone(),
                    e.break_glass
                        && policy
                            .authorize_entitlement::<act::BreakGlass>(who, e, &facts)
                            .is_ok(),
                )
            })
            .collect::<Vec<_>>()
    };
    group.bench_function("requestable", |b| {
        b.iter(|| black_box(requestable(&alice)));
    });
    group.bench_function("listing", |b| {
        b.iter(|| black_box(policy.listing(black_box(&alice), || requestable(&alice).into())));
    });
    group.bench_function("approvable", |b| {
        b.iter(|| black_box(policy.approvable(black_box(&bob), now)).expect("decided"));
    });
    let mut n = 0u64;
    group.bench_function("first_sight", |b| {
        b.iter(|| {
            n += 1;
            let mut u = alice.clone();
            u.key = format!("bench/alice-{n}");
            black_box(policy.authorize_entitlement::<act::Request>(&u, ent, &facts))
                .expect("allowed")
        });
    });
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
