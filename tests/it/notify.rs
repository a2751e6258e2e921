//! Notifications against real peers: an aiosmtpd sink (`tests/peers/smtp_sink.py`)
//! for email, and a local webhook receiver for Teams (which has no emulator).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jit_api::{Approval, Decision, Request, RequestState};
use jit_server::config::{EmailConfig, Secret, TeamsConfig};
use jit_server::notify::{
    Channel, Mailer, Notification, NotificationKind, Notifier, NotifyError, Teams, fan_out,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::support::peer_env;

// ---------------------------------------------------------------- fixtures

fn request() -> Request {
    let now = time::OffsetDateTime::now_utc();
    Request {
        id: Uuid::now_v7(),
        entitlement: "aws-prod-admin".to_owned(),
        requester: "alice@example.com".to_owned(),
        state: RequestState::Pending,
        duration: "1h".to_owned(),
        duration_seconds: 3600,
        justification: "INC-1234 hotfix for the payment outage".to_owned(),
        ticket: Some("INC-1234".to_owned()),
        created_at: now,
        pending_until: Some(now + time::Duration::hours(1)),
        start_at: None,
        activated_at: None,
        expires_at: None,
        approvals: vec![],
        approvals_required: 1,
        break_glass: false,
        extends: None,
        simulated: false,
        failure_reason: None,
        kind: "aws_role".to_owned(),
        target: "role arn:aws:iam::111111111111:role/JitAdmin".to_owned(),
    }
}

fn notification(kind: NotificationKind, recipients: &[&str]) -> Notification {
    let request = request();
    Notification {
        kind,
        link: Notification::link_for("https://jit.example.com", request.id),
        request,
        entitlement_title: "AWS production — administrator".to_owned(),
        actor: None,
        comment: None,
        recipients: recipients.iter().map(|&r| r.to_owned()).collect(),
        teams: true,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mailer(url: &str) -> Mailer {
    Mailer::new(&EmailConfig {
        smtp_url: Secret::new(url),
        from: "jit <jit@example.com>".to_owned(),
    })
    .unwrap()
}

// ---------------------------------------------------------------- SMTP sink

/// The Python interpreter with aiosmtpd: `JIT_TEST_PYTHON`, else `$JIT_TEST_PEERS/venv/bin/python`.
fn python() -> PathBuf {
    std::env::var_os("JIT_TEST_PYTHON").map_or_else(
        || PathBuf::from(peer_env("JIT_TEST_PEERS")).join("venv/bin/python"),
        PathBuf::from,
    )
}

/// `tests/peers/smtp_sink.py` (aiosmtpd) on a loopback port, killed on drop.
/// Every message lands in `dir` as `NNNNN.eml` + `NNNNN.json` (envelope).
pub(crate) struct SmtpSink {
    child: Child,
    /// Its port.
    pub port: u16,
    /// Where messages land.
    pub dir: PathBuf,
}

impl SmtpSink {
    /// Starts the sink on `port`, with `auth` = `user:pass` to require AUTH.
    pub(crate) async fn start(port: u16, auth: Option<&str>) -> Self {
        let dir = std::env::temp_dir().join(format!("jit-smtp-{}", Uuid::new_v4()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/smtp_sink.py");
        let mut cmd = Command::new(python());
        cmd.arg(&script)
            .args(["--port", &port.to_string(), "--dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(auth) = auth {
            cmd.args(["--auth", auth]);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} {}: {e}",
                python().display(),
                script.display()
            )
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.starts_with("SMTP READY") {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(ready, Ok(true)),
            "smtp sink did not start on port {port}"
        );
        Self { child, port, dir }
    }

    /// Waits until `n` messages arrived (and a little longer, to catch extras).
    pub(crate) async fn mails(&self, n: usize) -> Vec<Mail> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mails = self.read();
            if mails.len() >= n || Instant::now() > deadline {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let mails = self.read();
                assert_eq!(
                    mails.len(),
                    n,
                    "expected {n} messages in {}",
                    self.dir.display()
                );
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn read(&self) -> Vec<Mail> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|json| {
                let meta: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
                let raw =
                    String::from_utf8(std::fs::read(json.with_extension("eml")).unwrap()).unwrap();
                Mail::parse(raw, meta)
            })
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One stored message, parsed just enough for the assertions.
#[derive(Debug)]
pub(crate) struct Mail {
    /// Envelope: `mail_from`, `rcpt_tos`, `auth`.
    pub meta: Value,
    /// Raw RFC 5322 text.
    pub raw: String,
    /// Top-level headers, unfolded, in order.
    pub headers: Vec<(String, String)>,
    /// Decoded MIME parts: (content type, text).
    pub parts: Vec<(String, String)>,
}

impl Mail {
    fn parse(raw: String, meta: Value) -> Self {
        let raw_crlf = raw.replace("\r\n", "\n");
        let (head, body) = raw_crlf.split_once("\n\n").unwrap();
        let headers = parse_headers(head);
        let content_type = header(&headers, "content-type").unwrap_or_default();
        let parts = if content_type.starts_with("multipart/") {
            let boundary = content_type
                .split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
                .unwrap()
                .trim_matches('"')
                .to_owned();
            body.split(&format!("--{boundary}"))
                .skip(1)
                .filter(|p| !p.starts_with("--"))
                .map(|part| {
                    let part = part.trim_start_matches('\n');
                    let (h, b) = part.split_once("\n\n").unwrap();
                    let h = parse_headers(h);
                    let ct = header(&h, "content-type").unwrap_or_default();
                    let cte = header(&h, "content-transfer-encoding").unwrap_or_default();
                    (ct, decode(b, &cte))
                })
                .collect()
        } else {
            vec![]
        };
        Self {
            meta,
            raw,
            headers,
            parts,
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        header(&self.headers, name)
    }

    fn part(&self, content_type: &str) -> &str {
        self.parts
            .iter()
            .find(|(ct, _)| ct.starts_with(content_type))
            .map_or_else(
                || panic!("no {content_type} part in {:#?}", self.parts),
                |(_, text)| text.as_str(),
            )
    }

    fn rcpt_tos(&self) -> Vec<String> {
        self.meta["rcpt_tos"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }
}

fn parse_headers(head: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            out.last_mut().unwrap().1.push_str(line);
        } else {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {line:?}"));
            out.push((name.to_owned(), value.trim().to_owned()));
        }
    }
    out
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

fn decode(body: &str, encoding: &str) -> String {
    let body = body.trim_end_matches('\n');
    match encoding.to_ascii_lowercase().as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .unwrap(),
            )
            .unwrap()
        }
        "quoted-printable" => {
            let mut out = Vec::new();
            let bytes = body.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'=' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
                    b'=' => {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                        out.push(u8::from_str_radix(hex, 16).unwrap());
                        i += 3;
                    }
                    b => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            String::from_utf8(out).unwrap()
        }
        _ => body.to_owned(),
    }
}

// ---------------------------------------------------------------- email tests

#[tokio::test]
async fn email_reaches_a_real_smtp_server_as_multipart() {
    let sink = SmtpSink::start(free_port(), None).await;
    let notifier = Notifier::new(
        Some(mailer(&format!("smtp://127.0.0.1:{}", sink.port))),
        None,
    );
    let n = notification(
        NotificationKind::NewRequest,
        &["bob@example.com", "carol@example.com"],
    );
    let channels = notifier.channels(&n);
    assert_eq!(
        channels,
        [
            Channel::Email("bob@example.com".to_owned()),
            Channel::Email("carol@example.com".to_owned())
        ],
        "no Teams channel without a Teams configuration"
    );
    for channel in &channels {
        notifier.deliver(channel, &n).await.unwrap();
    }
    let mails = sink.mails(2).await;
    let mut seen = vec![];
    for mail in &mails {
        let to = mail.rcpt_tos();
        assert_eq!(to.len(), 1, "one recipient per message: {to:?}");
        seen.push(to[0].clone());
        assert_eq!(mail.meta["mail_from"], "jit@example.com");
        assert_eq!(mail.header("From").unwrap(), "jit <jit@example.com>");
        assert_eq!(mail.header("To").unwrap(), to[0]);
        assert_eq!(
            mail.header("Subject").unwrap(),
            "[jit] alice@example.com requests aws-prod-admin for 1h"
        );
        let date = mail.header("Date").unwrap();
        time::OffsetDateTime::parse(&date, &time::format_description::well_known::Rfc2822)
            .unwrap_or_else(|e| panic!("Date `{date}`: {e}"));
        let id = mail.header("Message-ID").unwrap();
        assert!(id.starts_with('<') && id.ends_with("@example.com>"), "{id}");
        assert_eq!(
            mail.header("References").unwrap(),
            format!("<request-{}@example.com>", n.request.id)
        );
        assert_eq!(mail.header("MIME-Version").unwrap(), "1.0");
        assert_eq!(mail.header("Auto-Submitted").unwrap(), "auto-generated");
        assert!(
            mail.header("Content-Type")
                .unwrap()
                .starts_with("multipart/alternative"),
            "{:?}",
            mail.header("Content-Type")
        );
        assert_eq!(mail.parts.len(), 2);
        let text = mail.part("text/plain");
        let html = mail.part("text/html");
        for body in [text, html] {
            assert!(body.contains(&n.link), "link missing: {body}");
            for fact in [
                "AWS production — administrator (aws-prod-admin)",
                "alice@example.com",
                "1h",
                "INC-1234 hotfix for the payment outage",
                "INC-1234",
                "pending",
            ] {
                assert!(body.contains(fact), "`{fact}` missing: {body}");
            }
        }
        assert!(
            text.contains("Review request: https://jit.example.com/requests/"),
            "{text}"
        );
        assert!(html.contains(&format!("<a href=\"{}\"", n.link)), "{html}");
    }
    seen.sort();
    assert_eq!(seen, ["bob@example.com", "carol@example.com"]);
}

#[tokio::test]
async fn header_injection_adds_no_header_and_no_recipient() {
    let sink = SmtpSink::start(free_port(), None).await;
    let notifier = Notifier::new(
        Some(mailer(&format!("smtp://127.0.0.1:{}", sink.port))),
        None,
    );
    let evil = "x\r\nBcc: evil@example.com";
    let mut n = notification(NotificationKind::Denied, &["bob@example.com"]);
    n.request.state = RequestState::Denied;
    n.request.requester = evil.to_owned();
    n.request.justification = format!("{evil}\r\n\r\nbody");
    n.request.ticket = Some(evil.to_owned());
    n.actor = Some(evil.to_owned());
    n.comment = Some(evil.to_owned());
    n.entitlement_title = evil.to_owned();
    notifier
        .deliver(&Channel::Email("bob@example.com".to_owned()), &n)
        .await
        .unwrap();
    let mails = sink.mails(1).await;
    let mail = &mails[0];
    assert_eq!(mail.rcpt_tos(), ["bob@example.com"]);
    assert!(
        !mail
            .headers
            .iter()
            .any(|(h, _)| h.eq_ignore_ascii_case("bcc")),
        "{:#?}",
        mail.headers
    );
    let names: Vec<&str> = mail.headers.iter().map(|(h, _)| h.as_str()).collect();
    for name in &names {
        assert!(
            [
                "From",
                "To",
                "Subject",
                "Message-ID",
                "References",
                "Auto-Submitted",
                "MIME-Version",
                "Date",
                "Content-Type",
            ]
            .contains(name),
            "unexpected header `{name}` in {names:?}"
        );
    }
    assert_eq!(
        mail.header("Subject").unwrap(),
        "[jit] x Bcc: evil@example.com's request for aws-prod-admin was denied by x Bcc: evil@example.com"
    );
    // The user text is still there, in the bodies, where it is harmless.
    assert!(mail.part("text/plain").contains("Bcc: evil@example.com"));
    let head = mail.raw.split("\r\n\r\n").next().unwrap();
    assert!(!head.contains("\nBcc"), "{head}");
    // Nothing else was sent: evil@example.com got no message of its own.
    assert_eq!(sink.read().len(), 1);
}

#[tokio::test]
async fn smtp_auth_comes_from_the_url_and_a_refusal_is_permanent() {
    let sink = SmtpSink::start(free_port(), Some("jit:s3cret")).await;
    let n = notification(NotificationKind::GrantActive, &["alice@example.com"]);
    let good = Notifier::new(
        Some(mailer(&format!(
            "smtp://jit:s3cret@127.0.0.1:{}",
            sink.port
        ))),
        None,
    );
    good.deliver(&Channel::Email("alice@example.com".to_owned()), &n)
        .await
        .unwrap();
    let mails = sink.mails(1).await;
    assert_eq!(mails[0].meta["auth"], "jit");
    assert_eq!(
        mails[0].header("Subject").unwrap(),
        "[jit] Your access to aws-prod-admin is active"
    );

    let bad = Notifier::new(
        Some(mailer(&format!(
            "smtp://jit:hunter2@127.0.0.1:{}",
            sink.port
        ))),
        None,
    );
    let e = bad
        .deliver(&Channel::Email("alice@example.com".to_owned()), &n)
        .await
        .unwrap_err();
    assert!(matches!(e, NotifyError::Permanent { .. }), "{e:?}");
    assert!(e.to_string().contains("535"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[tokio::test]
async fn smtp_down_is_transient_and_the_same_delivery_succeeds_later() {
    let port = free_port();
    let notifier = Notifier::new(
        Some(mailer(&format!("smtp://jit:hunter2@127.0.0.1:{port}"))),
        None,
    );
    let n = notification(NotificationKind::NewRequest, &["bob@example.com"]);
    let channel = fan_out(&n).remove(0);
    let e = notifier.deliver(&channel, &n).await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(!e.to_string().contains("hunter2"), "{e}");

    // The outbox stores the job as JSON and retries it later.
    let stored = serde_json::to_string(&n).unwrap();
    let again: Notification = serde_json::from_str(&stored).unwrap();
    let sink = SmtpSink::start(port, Some("jit:hunter2")).await;
    notifier.deliver(&channel, &again).await.unwrap();
    let mails = sink.mails(1).await;
    assert_eq!(mails[0].rcpt_tos(), ["bob@example.com"]);
}

#[tokio::test]
async fn tls_required_never_falls_back_to_plain_text() {
    // The sink offers no STARTTLS: a `tls=required` mailer must refuse to send.
    let sink = SmtpSink::start(free_port(), None).await;
    let notifier = Notifier::new(
        Some(mailer(&format!(
            "smtp://127.0.0.1:{}?tls=required",
            sink.port
        ))),
        None,
    );
    let n = notification(NotificationKind::NewRequest, &["bob@example.com"]);
    let e = notifier
        .deliver(&Channel::Email("bob@example.com".to_owned()), &n)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("email delivery failed"), "{e}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.read().is_empty(), "a message went out in plain text");
}

#[tokio::test]
async fn an_invalid_recipient_is_permanent_and_sends_nothing() {
    let sink = SmtpSink::start(free_port(), None).await;
    let notifier = Notifier::new(
        Some(mailer(&format!("smtp://127.0.0.1:{}", sink.port))),
        None,
    );
    let n = notification(NotificationKind::NewRequest, &["bob@example.com"]);
    let e = notifier
        .deliver(&Channel::Email("not an address".to_owned()), &n)
        .await
        .unwrap_err();
    assert!(matches!(e, NotifyError::Permanent { .. }), "{e:?}");
    assert!(sink.read().is_empty());
}

// ---------------------------------------------------------------- Teams receiver

/// A stand-in for a Teams Workflows webhook: records every post and answers
/// from a script (default 202 Accepted).
#[derive(Clone, Default)]
struct Receiver {
    posts: Arc<Mutex<Vec<Post>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

/// A scripted answer: status and `Retry-After`.
type Reply = (StatusCode, Option<&'static str>);

#[derive(Debug, Clone)]
struct Post {
    query: Option<String>,
    content_type: Option<String>,
    bytes: usize,
    body: Value,
    at: Instant,
}

const SIG: &str = "s1gn4ture-that-must-stay-secret";

impl Receiver {
    fn with(script: &[Reply]) -> Self {
        let r = Self::default();
        r.script.lock().unwrap().extend(script.iter().copied());
        r
    }

    async fn serve(&self) -> (SocketAddr, Teams) {
        let app = axum::Router::new()
            .route(
                "/workflows/{id}/triggers/manual/paths/invoke",
                axum::routing::post(receive),
            )
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let teams = Teams::new(&TeamsConfig {
            webhook_url: Secret::new(format!(
                "http://{addr}/workflows/abc123/triggers/manual/paths/invoke?api-version=2016-06-01&sig={SIG}"
            )),
        })
        .unwrap()
        .with_retry(3, Duration::from_millis(50), Duration::from_secs(5));
        (addr, teams)
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }
}

async fn receive(
    State(r): State<Receiver>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.posts.lock().unwrap().push(Post {
        query,
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        bytes: body.len(),
        body: parsed,
        at: Instant::now(),
    });
    let next = r.script.lock().unwrap().pop_front();
    match next {
        Some((status, Some(retry_after))) => {
            (status, [("retry-after", retry_after)], "").into_response()
        }
        Some((status, None)) => (status, "").into_response(),
        None => StatusCode::ACCEPTED.into_response(),
    }
}

/// Checks the envelope and card as the Teams reference documents them;
/// returns the card's facts as (title, value).
fn check_card(post: &Post, link: &str) -> (String, Vec<(String, String)>) {
    assert_eq!(post.content_type.as_deref(), Some("application/json"));
    assert!(
        post.query
            .as_deref()
            .is_some_and(|q| q.contains(&format!("sig={SIG}"))),
        "{:?}",
        post.query
    );
    assert!(post.bytes <= 28 * 1024, "{} bytes", post.bytes);
    let v = &post.body;
    assert_eq!(v["type"], "message", "{v:#}");
    let attachments = v["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 1);
    assert_eq!(
        attachments[0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachments[0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    let version: Vec<u32> = card["version"]
        .as_str()
        .unwrap()
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(version >= vec![1, 4], "{version:?}");
    let body = card["body"].as_array().unwrap();
    let headline = body.iter().find(|b| b["type"] == "TextBlock").unwrap()["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let factset = body.iter().find(|b| b["type"] == "FactSet").unwrap();
    let facts: Vec<(String, String)> = factset["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["title"].as_str().unwrap().to_owned(),
                f["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let actions = card["actions"].as_array().unwrap();
    assert!(
        actions.iter().all(|a| a["type"] == "Action.OpenUrl"),
        "only links, nothing that approves: {actions:#?}"
    );
    assert!(actions.iter().any(|a| a["url"] == link), "{actions:#?}");
    let text = v.to_string();
    assert!(!text.contains("Action.Submit") && !text.contains("Action.Execute"));
    (headline, facts)
}

fn fact<'a>(facts: &'a [(String, String)], title: &str) -> &'a str {
    facts.iter().find(|(t, _)| t == title).map_or_else(
        || panic!("no `{title}` fact in {facts:?}"),
        |(_, v)| v.as_str(),
    )
}

// ---------------------------------------------------------------- Teams tests

#[tokio::test]
async fn teams_gets_a_review_card_then_a_decision_card() {
    let receiver = Receiver::default();
    let (_, teams) = receiver.serve().await;
    let notifier = Notifier::new(None, Some(teams));

    let n = notification(NotificationKind::NewRequest, &[]);
    assert_eq!(notifier.channels(&n), [Channel::Teams]);
    notifier.deliver(&Channel::Teams, &n).await.unwrap();

    let mut decided = n.clone();
    decided.kind = NotificationKind::Approved;
    decided.request.state = RequestState::Approved;
    decided.actor = Some("bob@example.com".to_owned());
    decided.comment = Some("go ahead".to_owned());
    decided.request.approvals.push(Approval {
        approver: "bob@example.com".to_owned(),
        decision: Decision::Approve,
        comment: Some("go ahead".to_owned()),
        at: time::OffsetDateTime::now_utc(),
    });
    notifier.deliver(&Channel::Teams, &decided).await.unwrap();

    let posts = receiver.posts();
    assert_eq!(posts.len(), 2);
    let (headline, facts) = check_card(&posts[0], &n.link);
    assert_eq!(headline, "alice@example.com requests aws-prod-admin for 1h");
    assert_eq!(
        fact(&facts, "Entitlement"),
        "AWS production — administrator (aws-prod-admin)"
    );
    assert_eq!(fact(&facts, "Requester"), "alice@example.com");
    assert_eq!(fact(&facts, "Duration"), "1h");
    assert_eq!(
        fact(&facts, "Justification"),
        "INC-1234 hotfix for the payment outage"
    );
    assert_eq!(fact(&facts, "Ticket"), "INC-1234");
    assert_eq!(fact(&facts, "State"), "pending");
    let action = &posts[0].body["attachments"][0]["content"]["actions"][0];
    assert_eq!(action["title"], "Review request");
    assert_eq!(action["url"], n.link.as_str());

    let (headline, facts) = check_card(&posts[1], &n.link);
    assert_eq!(
        headline,
        "alice@example.com's request for aws-prod-admin was approved by bob@example.com"
    );
    assert_eq!(fact(&facts, "State"), "approved");
    assert_eq!(fact(&facts, "Decided by"), "bob@example.com");
    assert_eq!(fact(&facts, "Comment"), "go ahead");
}

#[tokio::test]
async fn teams_429_with_retry_after_is_retried_then_succeeds() {
    let receiver = Receiver::with(&[(StatusCode::TOO_MANY_REQUESTS, Some("1"))]);
    let (_, teams) = receiver.serve().await;
    let n = notification(NotificationKind::BreakGlass, &[]);
    let started = Instant::now();
    Notifier::new(None, Some(teams))
        .deliver(&Channel::Teams, &n)
        .await
        .unwrap();
    let posts = receiver.posts();
    assert_eq!(posts.len(), 2, "one throttled post, one accepted");
    let gap = posts[1].at - posts[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 not honoured: {gap:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        posts[0].body, posts[1].body,
        "the retry sends the same card"
    );
    check_card(&posts[1], &n.link);
}

#[tokio::test]
async fn teams_server_errors_are_retried_a_bounded_number_of_times() {
    let receiver = Receiver::with(&[(StatusCode::INTERNAL_SERVER_ERROR, None); 5]);
    let (_, teams) = receiver.serve().await;
    let n = notification(NotificationKind::NewRequest, &[]);
    let e = Notifier::new(None, Some(teams))
        .deliver(&Channel::Teams, &n)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(e.to_string().contains("500"), "{e}");
    assert!(!e.to_string().contains(SIG), "{e}");
    assert_eq!(receiver.posts().len(), 3);
}

#[tokio::test]
async fn teams_long_retry_after_goes_back_to_the_outbox() {
    let receiver = Receiver::with(&[(StatusCode::TOO_MANY_REQUESTS, Some("120"))]);
    let (_, teams) = receiver.serve().await;
    let n = notification(NotificationKind::NewRequest, &[]);
    let started = Instant::now();
    let e = Notifier::new(None, Some(teams))
        .deliver(&Channel::Teams, &n)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_mins(2)));
    assert_eq!(receiver.posts().len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "must not sleep for minutes"
    );
}

#[tokio::test]
async fn teams_client_errors_are_permanent() {
    let receiver = Receiver::with(&[(StatusCode::BAD_REQUEST, None)]);
    let (_, teams) = receiver.serve().await;
    let n = notification(NotificationKind::NewRequest, &[]);
    let e = Notifier::new(None, Some(teams))
        .deliver(&Channel::Teams, &n)
        .await
        .unwrap_err();
    assert!(matches!(e, NotifyError::Permanent { .. }), "{e:?}");
    assert_eq!(receiver.posts().len(), 1, "a 400 is not retried");
}

#[tokio::test]
async fn teams_unreachable_is_transient_and_never_shows_the_url() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let port = free_port();
    let teams = Teams::new(&TeamsConfig {
        webhook_url: Secret::new(format!(
            "http://127.0.0.1:{port}/workflows/abc123/triggers/manual/paths/invoke?sig={SIG}"
        )),
    })
    .unwrap()
    .with_retry(2, Duration::from_millis(20), Duration::from_secs(1));
    let e = Notifier::new(None, Some(teams))
        .deliver(
            &Channel::Teams,
            &notification(NotificationKind::NewRequest, &[]),
        )
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(SIG) && !shown.contains("abc123"), "{shown}");
}
