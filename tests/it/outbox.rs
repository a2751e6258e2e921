//! The transactional outbox end to end: a broker with `[notify.email]` on a
//! real SMTP server (aiosmtpd) and `[notify.teams]` on a local webhook
//! receiver. Mails go to the entitlement's approvers and to the requester;
//! a mail server or webhook that is down only delays delivery, and every
//! event is delivered exactly once however often the scheduler runs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jit_server::config::{EmailConfig, Secret, TeamsConfig};
use jit_server::store::query;
use serde_json::Value;

use crate::support::server::{ENGINES, Engine, TestBroker, free_port, start_with};
use crate::support::smtp::SmtpSink;

async fn broker(engine: Engine, smtp_port: Option<u16>, teams: Option<&str>) -> TestBroker {
    let teams = teams.map(str::to_owned);
    start_with(engine, jit_server::providers::Providers::simulated(), |c| {
        c.notify.email = smtp_port.map(|port| EmailConfig {
            smtp_url: Secret::new(format!("smtp://127.0.0.1:{port}")),
            from: "jit <jit@example.com>".to_owned(),
        });
        c.notify.teams = teams.map(|url| TeamsConfig {
            webhook_url: Secret::new(url),
        });
    })
    .await
}

/// Runs the scheduler `times` times, moving the clock a minute each time.
async fn churn(b: &TestBroker, times: usize) {
    for _ in 0..times {
        b.advance(Duration::from_mins(1)).await;
    }
}

/// The `Subject` header, unfolded.
fn subject(raw: &str) -> String {
    let mut lines = raw.lines().skip_while(|l| !l.starts_with("Subject: "));
    let mut out = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("Subject: ")
        .to_owned();
    for l in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        out.push_str(l);
    }
    out
}

/// (recipient, subject) of every mail, sorted.
fn envelopes(sink: &SmtpSink) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = sink
        .mails()
        .into_iter()
        .map(|m| {
            assert_eq!(m.from, "jit@example.com");
            assert_eq!(m.to.len(), 1, "one recipient per mail: {:?}", m.to);
            (m.to[0].clone(), subject(&m.raw))
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_mail_the_approvers_and_decisions_mail_the_requester() {
    for engine in ENGINES {
        let sink = SmtpSink::start(None).await;
        let b = broker(engine, Some(sink.port), None).await;
        let alice = b.login("alice").await;
        let bob = b.login("bob").await;

        let r = alice.request("aws-prod-admin", "1h").await;
        b.run_jobs().await;
        sink.wait_for(1, Duration::from_secs(10)).await;
        assert_eq!(
            envelopes(&sink),
            [(
                "sre-leads@example.com".to_owned(),
                "[jit] alice@example.com requests aws-prod-admin for 1h".to_owned()
            )],
            "the entitlement's route, not the requester"
        );
        let mail = &sink.mails()[0].raw;
        assert!(
            mail.contains(&format!("/requests/{}", r.id)),
            "the mail links to the request: {mail}"
        );

        let (status, body) = bob.approve(r.id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        b.run_jobs().await;
        sink.wait_for(4, Duration::from_secs(10)).await;
        churn(&b, 3).await;
        let got = envelopes(&sink);
        assert_eq!(got.len(), 4, "{got:#?}");
        let to_alice: Vec<&str> = got
            .iter()
            .filter(|(to, _)| to == "alice@example.com")
            .map(|(_, s)| s.as_str())
            .collect();
        assert_eq!(to_alice.len(), 2, "approved, then active: {got:#?}");
        assert!(
            to_alice
                .iter()
                .any(|s| s.contains("approved by bob@example.com")),
            "{got:#?}"
        );
        assert!(
            got.iter().any(|(to, s)| to == "sre-leads@example.com"
                && s.contains("approved by bob@example.com")),
            "the other approvers hear who decided: {got:#?}"
        );
        assert!(
            !got.iter().any(|(to, _)| to == "bob@example.com"),
            "the actor is not told of his own decision"
        );
    }
}

/// `sent` rows of the notify jobs.
async fn notify_jobs(b: &TestBroker) -> Vec<(i64, Option<i64>, Option<String>)> {
    query("SELECT attempts, done_at, last_error FROM jobs WHERE kind = 'notify'")
        .fetch_all(&b.app.store)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.try_get("attempts").unwrap(),
                r.try_get("done_at").unwrap(),
                r.try_get("last_error").unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_server_that_is_down_delays_the_mail_which_then_arrives_once() {
    for engine in ENGINES {
        let port = free_port();
        let b = broker(engine, Some(port), None).await;
        let alice = b.login("alice").await;
        alice.request("aws-prod-admin", "1h").await;
        for _ in 0..3 {
            b.run_jobs().await;
            b.advance(Duration::from_secs(2)).await;
        }
        let jobs = notify_jobs(&b).await;
        assert_eq!(jobs.len(), 1, "one mail, one job");
        let (attempts, done, error) = &jobs[0];
        assert!(*attempts >= 2, "retried: {jobs:?}");
        assert_eq!(*done, None);
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("email delivery failed")),
            "{error:?}"
        );

        // The server comes up; the outbox delivers, once.
        let sink = crate::notify::SmtpSink::start(port, None).await;
        churn(&b, 10).await;
        let mails = sink.mails(1).await;
        assert_eq!(mails[0].meta["rcpt_tos"][0], "sre-leads@example.com");
        churn(&b, 5).await;
        assert_eq!(sink.mails(1).await.len(), 1);
        let jobs = notify_jobs(&b).await;
        assert!(jobs[0].1.is_some(), "done: {jobs:?}");
        b.audit_actions(None).await;
    }
}

/// Scripted answers: status and optional `Retry-After`.
type Script = Arc<Mutex<VecDeque<(u16, Option<&'static str>)>>>;

/// A stand-in for a Teams Workflows webhook: answers from a script (then
/// 202) and records every post with the status it got.
#[derive(Clone, Default)]
struct Receiver {
    posts: Arc<Mutex<Vec<(Value, u16)>>>,
    script: Script,
}

async fn receive(State(r): State<Receiver>, body: axum::body::Bytes) -> Response {
    let card: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, retry_after) = r.script.lock().unwrap().pop_front().unwrap_or((202, None));
    r.posts.lock().unwrap().push((card, status));
    let status = StatusCode::from_u16(status).unwrap();
    match retry_after {
        Some(secs) => (status, [("retry-after", secs)]).into_response(),
        None => status.into_response(),
    }
}

impl Receiver {
    async fn serve(&self) -> String {
        let app = axum::Router::new()
            .route(
                "/workflows/{id}/triggers/manual/paths/invoke",
                axum::routing::post(receive),
            )
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!(
            "http://{addr}/workflows/jit/triggers/manual/paths/invoke?api-version=1&sig=s3cr3t-signature-of-the-webhook"
        )
    }

    /// Cards accepted (2xx), as their text.
    fn accepted(&self) -> Vec<String> {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| (200..300).contains(s))
            .map(|(c, _)| c.to_string())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_gets_one_card_per_event_even_when_it_asks_to_wait() {
    for engine in ENGINES {
        let receiver = Receiver::default();
        // The first post is throttled for ten minutes, too long to wait
        // inline: back to the outbox.
        receiver
            .script
            .lock()
            .unwrap()
            .push_back((429, Some("600")));
        let url = receiver.serve().await;
        let b = broker(engine, None, Some(&url)).await;
        let alice = b.login("alice").await;
        let bob = b.login("bob").await;

        let r = alice.request("aws-prod-admin", "1h").await;
        b.run_jobs().await;
        assert_eq!(receiver.posts.lock().unwrap().len(), 1);
        assert!(receiver.accepted().is_empty());
        churn(&b, 9).await;
        assert_eq!(
            receiver.posts.lock().unwrap().len(),
            1,
            "Retry-After is honoured"
        );
        b.advance(Duration::from_secs(70)).await;
        let cards = receiver.accepted();
        assert_eq!(cards.len(), 1, "the new request, once");
        assert!(cards[0].contains(&r.id.to_string()), "{}", cards[0]);

        bob.approve(r.id).await;
        churn(&b, 5).await;
        let cards = receiver.accepted();
        // Approved: one card; the grant becoming active is not the channel's business.
        assert_eq!(cards.len(), 2, "{cards:#?}");
        assert!(cards[1].contains("bob@example.com"), "{}", cards[1]);
        assert_eq!(receiver.posts.lock().unwrap().len(), 3);

        // An entitlement whose route does not include Teams posts nothing.
        alice.request("aws-prod-readonly", "1h").await;
        churn(&b, 3).await;
        assert_eq!(receiver.accepted().len(), 2);
        // The webhook URL is a credential: never in the database.
        let db = crate::broker_aws::database_text(&b.app.store).await;
        assert!(!db.contains("s3cr3t-signature-of-the-webhook"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_extended_grant_tells_the_requester_once_and_the_extensions_approvers() {
    for engine in ENGINES {
        let sink = SmtpSink::start(None).await;
        let receiver = Receiver::default();
        let url = receiver.serve().await;
        let b = broker(engine, Some(sink.port), Some(&url)).await;
        let alice = b.login("alice").await;
        let bob = b.login("bob").await;
        let carol = b.login("carol").await;
        // A chain of three: a grant, its active extension, and a second extension waiting.
        let r = alice.request("aws-prod-admin", "1h").await;
        bob.approve(r.id).await;
        b.run_jobs().await;
        let live = alice.extend(r.id, "30m").await;
        bob.approve(live).await;
        b.run_jobs().await;
        assert_eq!(alice.show(live).await.state, jit_api::RequestState::Active);
        let waiting = alice.extend(live, "30m").await;
        churn(&b, 3).await;
        // Everything so far is delivered before the revocation.
        let mails = sink.mails().len();
        let cards = receiver.accepted().len();
        assert!(mails >= 8, "{:#?}", envelopes(&sink));
        churn(&b, 2).await;
        assert_eq!(sink.mails().len(), mails);

        // An admin revokes the first: one action, one notification to the requester, of the
        // request the admin named; the waiting extension's approvers hear it was withdrawn.
        let (status, body) = carol.revoke(r.id, "incident over").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        churn(&b, 3).await;
        sink.wait_for(mails + 2, Duration::from_secs(10)).await;
        churn(&b, 2).await;
        let mut new: Vec<_> = sink.mails().split_off(mails);
        new.sort_by_key(|m| m.to.clone());
        let told: Vec<(Vec<String>, String)> = new
            .iter()
            .map(|m| (m.to.clone(), subject(&m.raw)))
            .collect();
        assert_eq!(told.len(), 2, "{told:#?}");
        assert_eq!(told[0].0, ["alice@example.com"], "{told:#?}");
        assert!(
            told[0].1.contains("revoked by carol@example.com"),
            "{told:#?}"
        );
        assert!(
            new[0].raw.contains(&format!("/requests/{}", r.id)),
            "{}",
            new[0].raw
        );
        assert_eq!(told[1].0, ["sre-leads@example.com"], "{told:#?}");
        assert!(
            told[1].1.contains("cancelled by carol@example.com"),
            "{told:#?}"
        );
        assert!(
            new[1].raw.contains(&format!("/requests/{waiting}")),
            "{}",
            new[1].raw
        );
        // The channel that was asked to decide on the extension is told it was withdrawn.
        let accepted = receiver.accepted();
        assert_eq!(accepted.len(), cards + 1, "{accepted:#?}");
        assert!(accepted[cards].contains("cancelled"), "{}", accepted[cards]);
        assert!(
            accepted[cards].contains(&waiting.to_string()),
            "{}",
            accepted[cards]
        );
        // The audit log still has every link's event.
        let actions = |id| b.audit_actions(Some(id));
        assert!(actions(r.id).await.contains(&"grant.revoked".to_owned()));
        assert!(actions(live).await.contains(&"grant.revoked".to_owned()));
        assert!(
            actions(waiting)
                .await
                .contains(&"request.cancelled".to_owned())
        );
    }
}
