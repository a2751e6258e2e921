//! The web pages page their lists by the API's keyset cursors (issue 23
//! item 3): the approvals page (waiting, reviews, decided), the admin page's
//! live grants; older and newer links, no hidden cap; and the waiting badge
//! is a count. On SQLite and PostgreSQL.

use std::collections::HashSet;

use jit_api::{Decision, RequestState};
use jit_server::domain::{UnixMs, User};
use jit_server::store::requests::{self, ApprovalRow, RequestRow};
use jit_server::store::users;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::paging::{pending, requester};
use crate::support::server::{ENGINES, Engine, TestBroker, each_engine, start};

/// A request of requester `i` on `entitlement` in `state`, filed at `created_at`.
fn row(
    b: &TestBroker,
    i: usize,
    entitlement: &str,
    state: RequestState,
    created_at: i64,
) -> RequestRow {
    let kind = b.app.policy.catalog.get(entitlement).unwrap().kind.as_str();
    let mut r = pending(&requester(i), entitlement, kind, created_at);
    r.state = state;
    if state == RequestState::Active {
        r.decided_at = Some(UnixMs::from_millis(created_at));
        r.activated_at = Some(UnixMs::from_millis(created_at));
        r.expires_at = Some(UnixMs::from_millis(created_at + 86_400_000));
        r.target_key = format!("fixture:{entitlement}:{i}");
    }
    r
}

/// Writes `rows` (one requester each).
async fn insert(b: &TestBroker, rows: &[RequestRow]) {
    let now = jit_server::clock::to_ms(b.app.now());
    let mut tx = b.app.store.begin().await.unwrap();
    for r in rows {
        let i: usize = r.requester_key.rsplit('-').next().unwrap().parse().unwrap();
        users::upsert(&mut tx, &requester(i), now).await.unwrap();
        requests::insert(&mut tx, r).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// The `href` of the link whose id is `id`, unescaped; `None` without one.
fn link(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let start = html[..at].rfind("href=\"")? + "href=\"".len();
    let end = start + html[start..].find('"')?;
    Some(
        html[start..end]
            .replace("&amp;", "&")
            .replace("&#x2f;", "/")
            .replace("&#47;", "/"),
    )
}

/// The request ids linked from the part of `html` between `from` and `to`, in order.
fn ids_between(html: &str, from: &str, to: &str) -> Vec<Uuid> {
    let start = html.find(from).unwrap();
    let end = start + html[start..].find(to).unwrap();
    html[start..end]
        .split("href=\"/requests/")
        .skip(1)
        .map(|s| s[..36].parse().unwrap())
        .collect()
}

/// The badge beside *Approvals*, 0 when there is none.
fn badge(html: &str) -> u64 {
    html.split("id=\"waiting-badge\">")
        .nth(1)
        .map_or(0, |s| s.split('<').next().unwrap().parse().unwrap())
}

/// Every page of list `list` on the page at `first`, older and older, then
/// back newer and newer: the ids of each page (the same pages, both ways).
async fn walk(
    b: &TestBroker,
    cookie: &str,
    first: &str,
    list: &str,
    (from, to): (&str, &str),
) -> Vec<Vec<Uuid>> {
    let mut pages = Vec::new();
    let mut path = first.to_owned();
    loop {
        let (status, html) = b.page(cookie, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        pages.push(ids_between(&html, from, to));
        assert_eq!(
            link(&html, &format!("{list}-newest")).is_some(),
            pages.len() > 1,
            "{path}"
        );
        match link(&html, &format!("{list}-older")) {
            Some(next) => path = next,
            None => break,
        }
        assert!(pages.len() < 100, "the pages never end");
    }
    // Back, newer and newer, to the first page.
    let mut back = vec![pages.last().unwrap().clone()];
    loop {
        let (_, html) = b.page(cookie, &path).await;
        match link(&html, &format!("{list}-newer")) {
            Some(prev) => path = prev,
            None => break,
        }
        let (status, html) = b.page(cookie, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        back.push(ids_between(&html, from, to));
        assert!(back.len() <= pages.len(), "more pages back than forth");
    }
    back.reverse();
    assert_eq!(back, pages, "newer links lead back through the same pages");
    pages
}

const WAITING: (&str, &str) = ("id=\"pending-h\"", "id=\"reviews-h\"");
const DECIDED: (&str, &str) = ("id=\"decided-h\"", "</main>");
const GRANTS: (&str, &str) = ("id=\"grants-h\"", "id=\"sessions-h\"");

each_engine!(
    the_approvals_page_pages_every_list_and_the_badge_counts,
    |engine| async move {
        let b = start(engine).await;
        let now = jit_server::clock::to_ms(b.app.now());
        // 123 pending: every third on the sandbox, pairs sharing a millisecond.
        let mut rows = Vec::new();
        for i in 0..123 {
            let ent = if i % 3 == 0 {
                "aws-sandbox"
            } else {
                "aws-prod-readonly"
            };
            let at = now - 1_000_000 + i64::try_from(i / 2).unwrap();
            rows.push(row(&b, i, ent, RequestState::Pending, at));
        }
        // Two break-glass ones waiting too.
        for i in 123..125 {
            let mut r = row(&b, i, "aws-sandbox", RequestState::Pending, now - 2_000_000);
            r.break_glass = true;
            rows.push(r);
        }
        insert(&b, &rows).await;
        let all: HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
        let sandbox: HashSet<Uuid> = rows
            .iter()
            .filter(|r| r.entitlement == "aws-sandbox")
            .map(|r| r.id)
            .collect();

        // bob may decide on every one of them: three pages of 50, 50 and 25,
        // each request once, newest first; the badge says 125.
        let bob = b.browser_login("bob").await;
        let (_, html) = b.page(&bob, "/").await;
        assert_eq!(badge(&html), 125, "{engine:?}");
        assert!(html.contains("125 requests wait"), "{engine:?}");
        let pages = walk(&b, &bob, "/approvals", "pending", WAITING).await;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [50, 50, 25]);
        let seen: Vec<Uuid> = pages.concat();
        assert_eq!(seen.iter().copied().collect::<HashSet<_>>(), all);
        assert_eq!(seen.len(), all.len(), "{engine:?}: a request shown twice");

        // alice approves only the sandbox.
        let alice = b.browser_login("alice").await;
        let (_, html) = b.page(&alice, "/approvals").await;
        assert_eq!(badge(&html), 43, "{engine:?}");
        let pages = walk(&b, &alice, "/approvals", "pending", WAITING).await;
        assert_eq!(pages.concat().into_iter().collect::<HashSet<_>>(), sandbox);

        // An approver who is on call may not approve break-glass requests: the
        // count decides those request by request.
        let oncall = User {
            groups: vec!["grp-jit-approvers".to_owned(), "grp-oncall".to_owned()],
            ..requester(999)
        };
        assert_eq!(
            b.app.waiting_count(&oncall).await.unwrap(),
            123,
            "{engine:?}"
        );

        // bob decides on 60 of them: they leave his waiting list and badge and
        // page through his decisions, newest decision first.
        let mut tx = b.app.store.begin().await.unwrap();
        let decided: Vec<Uuid> = rows.iter().take(60).map(|r| r.id).collect();
        for (n, id) in decided.iter().enumerate() {
            let approval = ApprovalRow {
                approver_key: "dev/bob".to_owned(),
                approver_email: "bob@example.com".to_owned(),
                decision: Decision::Approve,
                comment: None,
                at: now - 500_000 + i64::try_from(n / 2).unwrap(),
            };
            requests::insert_approval(&mut tx, *id, &approval)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let (_, html) = b.page(&bob, "/approvals").await;
        assert_eq!(badge(&html), 65, "{engine:?}");
        let waiting = walk(&b, &bob, "/approvals", "pending", WAITING)
            .await
            .concat();
        assert_eq!(waiting.len(), 65);
        assert!(waiting.iter().all(|id| !decided.contains(id)));
        let pages = walk(&b, &bob, "/approvals", "decided", DECIDED).await;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [50, 10]);
        let shown = pages.concat();
        assert_eq!(
            shown.iter().copied().collect::<HashSet<_>>(),
            decided.iter().copied().collect::<HashSet<_>>()
        );
        assert_eq!(shown.len(), 60);

        // The other lists keep their place while one moves.
        let (_, html) = b.page(&bob, "/approvals").await;
        let older = link(&html, "pending-older").unwrap();
        let (_, html) = b.page(&bob, &older).await;
        let decided_older = link(&html, "decided-older").unwrap();
        assert!(decided_older.contains("pending_after="), "{decided_older}");
        assert!(decided_older.contains("decided_after="), "{decided_older}");

        // A cursor that is not one is refused; a query that is not one is no reason to fail.
        let (status, html) = b.page(&bob, "/approvals?pending_after=yesterday").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
        assert!(html.contains("yesterday"), "{html}");
        let (status, html) = b.page(&bob, "/approvals?%zz=%&x").await;
        assert_eq!(status, StatusCode::OK, "{html}");
    }
);

each_engine!(the_admin_page_pages_every_live_grant, |engine| async move {
    let b = start(engine).await;
    let now = jit_server::clock::to_ms(b.app.now());
    let rows: Vec<RequestRow> = (0..230)
        .map(|i| {
            let ent = if i % 2 == 0 {
                "aws-sandbox"
            } else {
                "aws-prod-readonly"
            };
            row(
                &b,
                i,
                ent,
                RequestState::Active,
                now - 1_000_000 + i64::try_from(i / 3).unwrap(),
            )
        })
        .collect();
    insert(&b, &rows).await;
    let carol = b.browser_login("carol").await;
    let pages = walk(&b, &carol, "/admin", "grants", GRANTS).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [100, 100, 30]
    );
    let seen: Vec<Uuid> = pages.concat();
    let want: HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
    assert_eq!(seen.len(), want.len(), "{engine:?}: a grant shown twice");
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), want);
});

each_engine!(
    the_home_page_pages_past_requests_and_shows_every_grant,
    |engine| async move {
        let b = start(engine).await;
        let alice = jit_server::http::auth::demo_user("alice").unwrap();
        let now = jit_server::clock::to_ms(b.app.now());
        let mut tx = b.app.store.begin().await.unwrap();
        users::upsert(&mut tx, &alice, now).await.unwrap();
        // 130 ended requests, and an active grant older than all of them.
        let mut ended = Vec::new();
        for i in 0..130 {
            let mut r = pending(&alice, "aws-sandbox", "aws_role", now - 1_000 + i);
            r.state = RequestState::Cancelled;
            r.ended_at = Some(UnixMs::from_millis(now));
            requests::insert(&mut tx, &r).await.unwrap();
            ended.push(r.id);
        }
        let mut grant = pending(&alice, "aws-prod-readonly", "aws_role", now - 5_000);
        grant.state = RequestState::Active;
        grant.activated_at = Some(UnixMs::from_millis(now - 5_000));
        grant.expires_at = Some(UnixMs::from_millis(now + 3_600_000));
        requests::insert(&mut tx, &grant).await.unwrap();
        tx.commit().await.unwrap();

        let cookie = b.browser_login("alice").await;
        let (_, html) = b.page(&cookie, "/").await;
        let mut shown = ids_between(&html, "id=\"active-h\"", "id=\"recent-h\"");
        shown.dedup();
        assert_eq!(
            shown,
            [grant.id],
            "{engine:?}: the grant is shown however old"
        );
        let pages = walk(&b, &cookie, "/", "recent", RECENT).await;
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [50, 50, 30]);
        let mut newest_first = ended.clone();
        newest_first.reverse();
        assert_eq!(pages.concat(), newest_first, "{engine:?}");
    }
);

const RECENT: (&str, &str) = ("id=\"recent-h\"", "</main>");
