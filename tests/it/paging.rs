//! Lists a page at a time (SPEC §10 paging): `GET /api/v1/requests` and
//! `GET /api/v1/audit` take `after` and `limit` and say where the next page
//! starts; nothing is capped out of sight. On SQLite and PostgreSQL.

use std::collections::HashSet;

use jit_api::{Request, RequestState};
use jit_server::domain::{UnixMs, User};
use jit_server::store::requests::{self, RequestRow};
use jit_server::store::users;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::server::{Caller, ENGINES, Engine, TestBroker, each_engine, start};

/// Open requests of other people in the fixture.
const OPEN: usize = 5_000;

pub(crate) fn requester(i: usize) -> User {
    User {
        key: format!("test/req-{i}"),
        oid: None,
        name: format!("Requester {i}"),
        email: format!("req-{i}@example.com"),
        groups: vec!["grp-jit-requesters".to_owned()],
        roles: vec![],
        mfa: true,
        auth_time: None,
        acrs: vec![],
    }
}

pub(crate) fn pending(who: &User, entitlement: &str, kind: &str, created_at: i64) -> RequestRow {
    let id = Uuid::now_v7();
    RequestRow {
        id,
        entitlement: entitlement.to_owned(),
        kind: kind.to_owned(),
        requester_key: who.key.clone(),
        requester_email: who.email.clone(),
        state: RequestState::Pending,
        duration_secs: 3600,
        justification: "paging fixture".to_owned(),
        ticket: Some("INC-1".to_owned()),
        approvals_required: 1,
        break_glass: false,
        extends_id: None,
        root_id: id,
        target_key: format!("fixture:{entitlement}"),
        simulated: true,
        created_at: UnixMs::from_millis(created_at),
        pending_until: Some(UnixMs::from_millis(created_at + 86_400_000)),
        start_at: None,
        decided_at: None,
        activated_at: None,
        expires_at: None,
        ended_at: None,
        failure_reason: None,
        provider_ref: None,
        deprovisioned_at: None,
        reviewed_by: None,
        reviewed_at: None,
    }
}

/// `OPEN` pending requests by 1,000 requesters over the whole catalog,
/// three at a time sharing a millisecond (the cursor's tie-break on the id);
/// returns them with their entitlements.
async fn fixture(b: &TestBroker) -> Vec<(Uuid, String)> {
    let catalog: Vec<(String, String)> = b
        .app
        .policy
        .catalog
        .iter()
        .map(|e| (e.id.clone(), e.kind.as_str().to_owned()))
        .collect();
    let now = jit_server::clock::to_ms(b.app.now());
    let mut tx = b.app.store.begin().await.unwrap();
    let mut out = Vec::with_capacity(OPEN);
    for u in 0..OPEN.div_ceil(catalog.len()).max(1_000) {
        users::upsert(&mut tx, &requester(u), now).await.unwrap();
    }
    for i in 0..OPEN {
        let who = requester(i % 1_000);
        let (ent, kind) = &catalog[(i / 1_000) % catalog.len()];
        let at = now - 10_000_000 + i64::try_from(i / 3).unwrap();
        let row = pending(&who, ent, kind, at);
        requests::insert(&mut tx, &row).await.unwrap();
        out.push((row.id, ent.clone()));
    }
    tx.commit().await.unwrap();
    out
}

/// `rel="next"` URL of a response's `Link` header, relative to `/api/v1`.
fn next_of(res: &reqwest::Response) -> Option<String> {
    let link = res.headers().get("link")?.to_str().unwrap().to_owned();
    let url = link
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
        .unwrap_or_else(|| panic!("malformed Link `{link}`"));
    Some(url.strip_prefix("/api/v1").unwrap().to_owned())
}

async fn raw_get(b: &TestBroker, who: &Caller, path: &str) -> reqwest::Response {
    b.http
        .get(format!("{}/api/v1{path}", b.url))
        .bearer_auth(&who.token)
        .send()
        .await
        .unwrap()
}

/// Every page of `path`, following `Link: rel="next"`; the sizes of the pages.
async fn all_pages(b: &TestBroker, who: &Caller, path: &str) -> (Vec<Request>, Vec<usize>) {
    let mut path = Some(path.to_owned());
    let mut all = Vec::new();
    let mut sizes = Vec::new();
    while let Some(p) = path {
        let res = raw_get(b, who, &p).await;
        assert_eq!(res.status(), StatusCode::OK, "{p}");
        path = next_of(&res);
        let page: Vec<Request> = res.json().await.unwrap();
        sizes.push(page.len());
        all.extend(page);
        assert!(sizes.len() <= OPEN, "the pages never end");
    }
    (all, sizes)
}

each_engine!(
    an_approver_pages_through_every_open_request_exactly_once,
    |engine| async move {
        let b = start(engine).await;
        let oscar = b.login("oscar").await;
        let own = oscar.request("aws-prod-readonly", "1h").await;
        assert_eq!(own.state, RequestState::Pending);
        let others = fixture(&b).await;

        // bob approves everything: 500 a page, each full until the last,
        // each request once.
        let bob = b.login("bob").await;
        let (seen, sizes) = all_pages(&b, &bob, "/requests?state=pending&limit=500").await;
        let ids: Vec<Uuid> = seen.iter().map(|r| r.id).collect();
        let unique: HashSet<Uuid> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "a request was listed twice");
        let mut want: HashSet<Uuid> = others.iter().map(|(id, _)| *id).collect();
        want.insert(own.id);
        assert!(
            unique == want,
            "{engine:?}: {} listed, {} wanted",
            unique.len(),
            want.len()
        );
        assert_eq!(sizes.len(), (OPEN + 1).div_ceil(500));
        assert!(
            sizes[..sizes.len() - 1].iter().all(|n| *n == 500),
            "{sizes:?}"
        );
        assert!(
            seen.windows(2).all(|w| w[0].created_at >= w[1].created_at),
            "newest first"
        );

        // alice may approve only others' sandbox requests: narrowed in SQL,
        // then decided exactly, pages still full.
        let alice = b.login("alice").await;
        let (seen, sizes) = all_pages(&b, &alice, "/requests?state=pending&limit=100").await;
        let got: HashSet<Uuid> = seen.iter().map(|r| r.id).collect();
        let sandbox: HashSet<Uuid> = others
            .iter()
            .filter(|(_, e)| e == "aws-sandbox")
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(got.len(), seen.len());
        let extra: Vec<_> = got.difference(&sandbox).collect();
        let missing: Vec<_> = sandbox.difference(&got).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{engine:?}: {} extra (first {:?}), {} missing (first {:?})",
            extra.len(),
            extra.first(),
            missing.len(),
            missing.first()
        );
        assert!(
            sizes[..sizes.len() - 1].iter().all(|n| *n == 100),
            "{sizes:?}"
        );

        // A requester sees none of others' requests, and no next page.
        let res = raw_get(&b, &oscar, "/requests?state=pending").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(next_of(&res), None);
        let mine: Vec<Request> = res.json().await.unwrap();
        assert_eq!(
            mine.iter().map(|r| r.id).collect::<Vec<_>>(),
            [own.id],
            "{engine:?}"
        );

        // mine=true pages the same way.
        let (all_mine, _) = all_pages(&b, &oscar, "/requests?mine=true&limit=1").await;
        assert_eq!(all_mine.len(), 1);

        // A cursor that is not one is refused, naming it.
        let (status, body) = bob.get("/requests?after=yesterday").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`yesterday`"),
            "{body}"
        );
    }
);

each_engine!(
    an_auditor_pages_through_the_audit_log,
    |engine| async move {
        let b = start(engine).await;
        let oscar = b.login("oscar").await;
        for ent in ["aws-sandbox", "aws-prod-readonly", "azure-platform-reader"] {
            let (status, body) = oscar
            .post(
                "/requests",
                json!({"entitlement": ent, "duration": "1h", "justification": "paging", "ticket": "INC-2"}),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        b.run_jobs().await;
        let carol = b.login("carol").await;
        let (status, whole) = carol.get("/audit?limit=1000").await;
        assert_eq!(status, StatusCode::OK, "{whole}");
        assert!(whole.get("next").is_none(), "{whole}");
        let whole: Vec<Value> = whole["events"].as_array().unwrap().clone();
        assert!(whole.len() >= 4, "{whole:?}");

        // Two at a time, by the Link header and by `next`: the same events, in order.
        let mut path = Some("/audit?limit=2".to_owned());
        let mut by_link = Vec::new();
        while let Some(p) = path {
            let res = raw_get(&b, &carol, &p).await;
            assert_eq!(res.status(), StatusCode::OK, "{p}");
            path = next_of(&res);
            let page: Value = res.json().await.unwrap();
            let events = page["events"].as_array().unwrap();
            assert!(!events.is_empty(), "an empty page at {p}");
            assert_eq!(path.is_some(), page.get("next").is_some(), "{page}");
            assert_eq!(
                page.get("next")
                    .map(|n| n.as_str().unwrap().parse::<i64>().unwrap()),
                page.get("next_before").map(|n| n.as_i64().unwrap())
            );
            by_link.extend(events.iter().cloned());
        }
        // An event may be pending in one read (PostgreSQL: committed, not chained yet; no
        // hashes) and chained in the next, at the place it was listed at.
        let chained = |events: &[Value]| -> Vec<Value> {
            events
                .iter()
                .map(|e| json!([e["seq"], e["at"], e["actor"], e["action"], e["data"]]))
                .collect()
        };
        assert_eq!(chained(&by_link), chained(&whole));

        let mut after: Option<String> = None;
        let mut by_next = Vec::new();
        loop {
            let path = match &after {
                None => "/audit?limit=3&action=request.".to_owned(),
                Some(a) => format!("/audit?limit=3&action=request.&after={a}"),
            };
            let (status, page) = carol.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            by_next.extend(page["events"].as_array().unwrap().iter().cloned());
            match page.get("next") {
                Some(n) => after = Some(n.as_str().unwrap().to_owned()),
                None => break,
            }
        }
        let requests_only: Vec<Value> = whole
            .iter()
            .filter(|e| e["action"].as_str().unwrap().starts_with("request."))
            .cloned()
            .collect();
        assert_eq!(chained(&by_next), chained(&requests_only));

        let (status, body) = carol.get("/audit?after=last-tuesday").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`last-tuesday`"),
            "{body}"
        );
    }
);
