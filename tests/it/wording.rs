//! What people read when the broker refuses or auto-approves: the same words in the API, the
//! web pages and the audit log (issue 24). Both engines.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::server::{ENGINES, TestBroker, start};

/// The `csrf` field of a page.
fn csrf_of(page: &str) -> String {
    page.split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned()
}

/// Posts the new-request form as a browser signed in with `cookie` would; the page shown.
async fn post_request_form(
    b: &TestBroker,
    cookie: &str,
    form: &[(&str, &str)],
) -> (StatusCode, String) {
    let (_, page) = b.page(cookie, "/requests/new").await;
    let csrf = csrf_of(&page);
    let mut fields = form.to_vec();
    fields.push(("csrf", &csrf));
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/requests", b.url))
        .header(reqwest::header::COOKIE, cookie)
        .header(reqwest::header::ORIGIN, &b.url)
        .form(&fields)
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}

/// A second request for what one already has names the one that is open, in its state's
/// words (access to extend, or a request to wait for), in the API and on the page (as code,
/// not backticks, with a link to it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_request_names_the_open_one() {
    for engine in ENGINES {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let active = alice.request("aws-sandbox", "1h").await;
        b.run_jobs().await;
        let active = alice.show(active.id).await;
        let id = active.id.simple().to_string();
        let short = &id[id.len() - 8..];
        let until = active
            .expires_at
            .unwrap()
            .format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .unwrap();
        let (status, body) = alice
            .post(
                "/requests",
                json!({"entitlement": "aws-sandbox", "duration": "30m", "justification": "again"}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{engine:?}: {body}");
        assert_eq!(
            body["error"]["message"],
            format!(
                "you already have access to `aws-sandbox` until {until} (request {short}): \
                 extend it to keep it longer"
            ),
            "{engine:?}"
        );

        let pending = alice.request("aws-prod-admin", "1h").await;
        let pid = pending.id.simple().to_string();
        let (status, body) = alice
            .post(
                "/requests",
                json!({"entitlement": "aws-prod-admin", "duration": "1h", "justification": "again"}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{engine:?}: {body}");
        assert_eq!(
            body["error"]["message"],
            format!(
                "you already have a request for `aws-prod-admin` that is pending (request {}): \
                 wait for it, or cancel it",
                &pid[pid.len() - 8..]
            ),
            "{engine:?}"
        );

        let cookie = b.browser_login("alice").await;
        let (status, page) = post_request_form(
            &b,
            &cookie,
            &[
                ("entitlement", "aws-sandbox"),
                ("duration", "30m"),
                ("justification", "again"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{engine:?}: {page}");
        assert!(
            page.contains(&format!(
                "you already have access to <code>aws-sandbox</code> until {until} (request \
                 {short}): extend it to keep it longer <a href=\"/requests/{}\" \
                 id=\"open-request\">Open it</a>",
                active.id
            )),
            "{engine:?}: {page}"
        );
        assert!(!page.contains("`aws-sandbox`"), "literal backticks: {page}");
    }
}

/// A ticket error says the format with an example, in the API and on the form; the form
/// tells the format before anyone gets it wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ticket_errors_and_the_form_tell_the_format() {
    for engine in ENGINES {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        for (ticket, says) in [
            (
                None,
                "ticket is required for this entitlement, in the format `INC-9*` (like `INC-1234`)",
            ),
            (
                Some("CHG-1"),
                "ticket `CHG-1` does not match the format `INC-9*` (like `INC-1234`)",
            ),
        ] {
            let (status, body) = alice
                .post(
                    "/requests",
                    json!({"entitlement": "entra-user-admin", "duration": "1h",
                           "justification": "unlock", "ticket": ticket}),
                )
                .await;
            assert!(status.is_client_error(), "{engine:?}: {body}");
            assert_eq!(body["error"]["message"], says, "{engine:?}");
        }
        let cookie = b.browser_login("alice").await;
        let (_, page) = b.page(&cookie, "/requests/new").await;
        assert!(
            page.contains(
                "needs a ticket (format <code>INC-9*</code>, like <code>INC-1234</code>)"
            ),
            "{engine:?}: {page}"
        );
        let (_, page) = post_request_form(
            &b,
            &cookie,
            &[
                ("entitlement", "entra-user-admin"),
                ("duration", "1h"),
                ("justification", "unlock"),
                ("ticket", "CHG-1"),
            ],
        )
        .await;
        assert!(
            page.contains(
                "ticket <code>CHG-1</code> does not match the format <code>INC-9*</code> (like \
                 <code>INC-1234</code>)"
            ),
            "{engine:?}: {page}"
        );
    }
}

/// An auto-approved request needs no approval, and says so the same way in the API, on its
/// page and in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_approval_reads_the_same_everywhere() {
    for engine in ENGINES {
        let b = start(engine).await;
        let alice = b.login("alice").await;
        let r = alice.request("aws-sandbox", "1h").await;
        assert_eq!(r.approvals_required, 0, "{engine:?}");
        b.run_jobs().await;
        let (_, listed) = alice.get("/requests?mine=true").await;
        let listed = listed.get("requests").cloned().unwrap_or(listed);
        let mine = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == r.id.to_string())
            .unwrap()
            .clone();
        assert_eq!(mine["approvals_required"], 0, "{engine:?}");
        let cookie = b.browser_login("alice").await;
        let (_, page) = b.page(&cookie, &format!("/requests/{}", r.id)).await;
        assert!(
            page.contains("<dt>Approvals</dt><dd>auto-approved</dd>"),
            "{engine:?}: {page}"
        );
        let carol = b.login("carol").await;
        let (_, audit) = carol.get(&format!("/audit?request_id={}", r.id)).await;
        let created = audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "request.created")
            .unwrap()
            .clone();
        assert_eq!(created["data"]["approvals_required"], 0, "{engine:?}");
        assert!(
            audit["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == "request.auto_approved"),
            "{engine:?}: {audit}"
        );
        // A request that needs a decision still says how many.
        let p = alice.request("aws-prod-readonly", "1h").await;
        assert_eq!(p.approvals_required, 2);
        let (_, page) = b.page(&cookie, &format!("/requests/{}", p.id)).await;
        assert!(page.contains("<dt>Approvals</dt><dd>0 of 2</dd>"), "{page}");
    }
}
