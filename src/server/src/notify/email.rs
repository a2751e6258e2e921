//! Email over SMTP (lettre): multipart text + HTML, rendered with askama.

use std::fmt;
use std::time::Duration;

use askama::Template;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, header};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as MailMessage, Tokio1Executor};
use uuid::Uuid;

use super::text::{body_text, header_text, truncate};
use super::{Fact, Message, Notification, NotifyError, Tone};
use crate::config::{EmailConfig, Secret};
use sha2::{Digest as _, Sha256};

const CHANNEL: &str = "email";
/// Per SMTP operation (connect, each command), lettre's own timeout.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// The whole send, whatever lettre does inside.
const SEND_TIMEOUT: Duration = Duration::from_secs(45);
const SUBJECT_MAX: usize = 200;
/// Justifications are at most 4 KiB; comments and reasons get the same room.
const VALUE_MAX: usize = 4096;

/// Sends notification emails through one SMTP relay.
pub struct Mailer {
    /// `notify.email.smtp_url`: with an `aws-sm:` one, the value may change.
    smtp_url: Secret,
    /// The transport, and the digest of the URL it was built from.
    transport: std::sync::Mutex<([u8; 32], AsyncSmtpTransport<Tokio1Executor>)>,
    from: Mailbox,
    /// Right-hand side of `Message-ID`s (the From domain).
    domain: String,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The transport holds the SMTP credentials: never print it.
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834): no vacation replies to the broker.
#[derive(Debug, Clone)]
struct AutoSubmitted;

impl header::Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// Values the email templates read.
struct EmailView<'a> {
    subject: &'a str,
    headline: String,
    hint: &'a str,
    facts: Vec<Fact>,
    link: &'a str,
    action: &'a str,
    attention: bool,
}

#[derive(Template)]
#[template(path = "email/notification.txt")]
struct TextEmail<'a> {
    v: &'a EmailView<'a>,
}

#[derive(Template)]
#[template(path = "email/notification.html")]
struct HtmlEmail<'a> {
    v: &'a EmailView<'a>,
}

impl Mailer {
    /// Builds the mailer from `[notify.email]`. Must run inside the Tokio
    /// runtime: lettre's connection pool spawns a cleanup task.
    ///
    /// `smtp_url`: `smtp://host:port` (plain, tests only), `smtp://host?tls=required`
    /// (STARTTLS), `smtps://host` (implicit TLS); `user:password@` enables AUTH.
    pub fn new(config: &EmailConfig) -> Result<Self, NotifyError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(NotifyError::Config {
                key: "notify.email",
                problem: "the mailer must be built inside the tokio runtime".to_owned(),
            });
        }
        let raw = config.smtp_url.expose();
        let transport = transport(&raw)?;
        let from = parse_mailbox(&config.from).ok_or_else(|| NotifyError::Config {
            key: "notify.email.from",
            problem: format!(
                "`{}` is not an address like `jit <jit@example.com>`",
                header_text(&config.from, 100)
            ),
        })?;
        let domain = from.email.domain().to_owned();
        Ok(Self {
            smtp_url: config.smtp_url.clone(),
            transport: std::sync::Mutex::new((Sha256::digest(raw.as_bytes()).into(), transport)),
            from,
            domain,
        })
    }

    /// The transport for the current `smtp_url` (rebuilt when an `aws-sm:` one changed).
    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, NotifyError> {
        let raw = self.smtp_url.expose();
        let digest: [u8; 32] = Sha256::digest(raw.as_bytes()).into();
        let mut held = self
            .transport
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.0 != digest {
            *held = (digest, transport(&raw)?);
        }
        Ok(held.1.clone())
    }

    /// Sends `n` to each of its recipients, one message each; stops at the
    /// first failure. The outbox delivers per recipient with
    /// [`super::Notifier::deliver`] instead, so that a retry resends nothing.
    pub async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        for to in &n.recipients {
            self.send_to(to, n).await?;
        }
        Ok(())
    }

    /// Sends `n` to one recipient.
    pub async fn send_to(&self, recipient: &str, n: &Notification) -> Result<(), NotifyError> {
        self.transmit(self.render(recipient, n)?).await?;
        tracing::debug!(request.id = %n.request.id, kind = ?n.kind, "notification email sent");
        Ok(())
    }

    /// Hands `message` to the relay, within [`SEND_TIMEOUT`].
    /// A relay that refuses the credentials (535) of an `aws-sm:` URL gets the message once
    /// more if the URL, re-read, changed (a rotated password).
    async fn transmit(&self, message: MailMessage) -> Result<(), NotifyError> {
        match self.transmit_once(message.clone()).await {
            Err((true, e)) => {
                if self.smtp_url.refresh().await.unwrap_or(false) {
                    tracing::info!(
                        "smtp relay refused the credentials; smtp_url re-read, sending again"
                    );
                    self.transmit_once(message).await.map_err(|(_, e)| e)
                } else {
                    Err(e)
                }
            }
            other => other.map_err(|(_, e)| e),
        }
    }

    /// One send; the error says whether the relay refused the credentials (535).
    async fn transmit_once(&self, message: MailMessage) -> Result<(), (bool, NotifyError)> {
        let transport = self.transport().map_err(|e| (false, e))?;
        match tokio::time::timeout(SEND_TIMEOUT, transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err((e.status().map(u16::from) == Some(535), classify(&e))),
            Err(_) => Err((
                false,
                NotifyError::transient(
                    CHANNEL,
                    format!("smtp send took longer than {}s", SEND_TIMEOUT.as_secs()),
                ),
            )),
        }
    }

    /// Sends a plain-text alert that concerns no request (the audit checkpoint alarm).
    pub async fn send_alert(
        &self,
        recipient: &str,
        subject: &str,
        text: &str,
    ) -> Result<(), NotifyError> {
        let to = mailbox(recipient)?;
        let message = MailMessage::builder()
            .from(self.from.clone())
            .to(to)
            .subject(format!("[jit] {}", header_text(subject, SUBJECT_MAX)))
            .message_id(Some(format!("<{}@{}>", Uuid::new_v4(), self.domain)))
            .header(AutoSubmitted)
            .header(header::ContentType::TEXT_PLAIN)
            .body(body_text(text, VALUE_MAX))
            .map_err(|e| {
                NotifyError::permanent(CHANNEL, format!("cannot build the message: {e}"))
            })?;
        self.transmit(message).await
    }

    /// The complete message for `recipient`.
    pub(crate) fn render(
        &self,
        recipient: &str,
        n: &Notification,
    ) -> Result<MailMessage, NotifyError> {
        let to = mailbox(recipient)?;
        let message = n.message(n.view_for(recipient));
        let (subject, text, html) = render_bodies(&message, &n.link)?;
        MailMessage::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{}@{}>", Uuid::new_v4(), self.domain)))
            // Every mail about one request threads under the same reference.
            .references(format!("<request-{}@{}>", n.request.id, self.domain))
            .header(AutoSubmitted)
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| NotifyError::permanent(CHANNEL, format!("cannot build the message: {e}")))
    }
}

/// A recipient's mailbox, or why it is not one.
fn mailbox(recipient: &str) -> Result<Mailbox, NotifyError> {
    parse_mailbox(recipient).ok_or_else(|| {
        NotifyError::permanent(
            CHANNEL,
            format!(
                "recipient `{}` is not a valid address",
                header_text(recipient, 100)
            ),
        )
    })
}

/// Subject, text part and HTML part of a message.
pub(crate) fn render_bodies(
    m: &Message,
    link: &str,
) -> Result<(String, String, String), NotifyError> {
    let subject = format!("[jit] {}", header_text(&m.subject, SUBJECT_MAX));
    let view = EmailView {
        subject: &subject,
        headline: header_text(&m.subject, VALUE_MAX),
        hint: m.hint,
        facts: m
            .facts
            .iter()
            .map(|f| Fact {
                title: f.title,
                value: if f.is_free_text() {
                    body_text(&f.value, VALUE_MAX)
                } else {
                    header_text(&f.value, VALUE_MAX)
                },
            })
            .collect(),
        link,
        action: m.action,
        attention: m.tone == Tone::Attention,
    };
    let failed =
        |e: askama::Error| NotifyError::permanent(CHANNEL, format!("cannot render the email: {e}"));
    let text = TextEmail { v: &view }.render().map_err(failed)?;
    let html = HtmlEmail { v: &view }.render().map_err(failed)?;
    Ok((subject, text, html))
}

/// A single address, optionally with a display name; display names are
/// cleaned like any header text.
fn parse_mailbox(raw: &str) -> Option<Mailbox> {
    if raw.chars().any(char::is_control) {
        return None;
    }
    let parsed: Mailbox = raw.trim().parse().ok()?;
    let name = parsed
        .name
        .map(|n| truncate(&header_text(&n, 100), 100))
        .filter(|n| !n.is_empty());
    Some(Mailbox::new(name, parsed.email))
}

/// Transient: connection trouble, timeouts, TLS, SMTP 4xx. Permanent: SMTP 5xx
/// (unknown recipient, refused AUTH), or a client-side problem that a retry repeats.
fn classify(e: &lettre::transport::smtp::Error) -> NotifyError {
    // lettre's message carries the reply code and text ("permanent error (550): …").
    let detail = chain(e);
    if e.is_permanent() {
        NotifyError::permanent(
            CHANNEL,
            format!("smtp server refused the message: {detail}"),
        )
    } else if e.is_transient() {
        NotifyError::transient(
            CHANNEL,
            format!("smtp server deferred the message: {detail}"),
        )
    } else if e.is_client() {
        NotifyError::permanent(CHANNEL, format!("smtp client: {detail}"))
    } else if e.is_timeout() {
        NotifyError::transient(CHANNEL, format!("smtp timed out: {detail}"))
    } else {
        NotifyError::transient(CHANNEL, format!("smtp connection: {detail}"))
    }
}

/// The pooled transport for `raw` (`smtp_url`, checked: scheme, form).
fn transport(raw: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, NotifyError> {
    let url = url::Url::parse(raw).map_err(|_| NotifyError::Config {
        key: "notify.email.smtp_url",
        problem: "not a URL".to_owned(),
    })?;
    if !matches!(url.scheme(), "smtp" | "smtps") {
        return Err(NotifyError::Config {
            key: "notify.email.smtp_url",
            problem: "must start with `smtp://` or `smtps://`".to_owned(),
        });
    }
    // lettre's messages name the scheme or the tls parameter, never the password.
    Ok(AsyncSmtpTransport::<Tokio1Executor>::from_url(raw)
        .map_err(|e| NotifyError::Config {
            key: "notify.email.smtp_url",
            problem: e.to_string(),
        })?
        .timeout(Some(COMMAND_TIMEOUT))
        .pool_config(
            PoolConfig::new()
                .max_size(4)
                .idle_timeout(Duration::from_secs(30)),
        )
        .build())
}

/// An error and its sources, `: `-separated (e.g. "Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::notify::NotificationKind;
    use crate::notify::tests::sample;

    fn mailer() -> Mailer {
        Mailer::new(&EmailConfig {
            smtp_url: Secret::new("smtp://127.0.0.1:2525"),
            from: "jit <jit@example.com>".to_owned(),
        })
        .unwrap()
    }

    fn raw(m: &MailMessage) -> String {
        String::from_utf8(m.formatted()).unwrap()
    }

    fn headers(raw: &str) -> Vec<String> {
        let head = raw.split("\r\n\r\n").next().unwrap();
        let mut out: Vec<String> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                out.last_mut().unwrap().push_str(line);
            } else {
                out.push(line.to_owned());
            }
        }
        out
    }

    #[tokio::test]
    async fn html_part_escapes_user_text() {
        let mut n = sample(NotificationKind::NewRequest);
        n.request.justification = "<script>alert(1)</script> & \"quotes\"".to_owned();
        let m = n.message(super::super::View::Observer);
        let (_, text, html) = render_bodies(&m, &n.link).unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62; &#38; &#34;quotes&#34;"),
            "{html}"
        );
        assert!(
            text.contains("<script>alert(1)</script>"),
            "the text part is plain text: {text}"
        );
        assert!(html.contains(&format!("href=\"{}\"", n.link)), "{html}");
        assert!(text.contains(&n.link));
        assert!(text.contains("Justification: <script>"), "{text}");
    }

    #[tokio::test]
    async fn user_text_cannot_add_headers() {
        let mut n = sample(NotificationKind::NewRequest);
        n.request.requester = "x\r\nBcc: evil@example.com".to_owned();
        n.request.justification = "why\r\nBcc: evil@example.com\r\n\r\nbody".to_owned();
        let m = mailer().render("bob@example.com", &n).unwrap();
        let raw = raw(&m);
        let hs = headers(&raw);
        assert!(
            !hs.iter()
                .any(|h| h.to_ascii_lowercase().starts_with("bcc:")),
            "{hs:#?}"
        );
        let subject = hs.iter().find(|h| h.starts_with("Subject: ")).unwrap();
        assert_eq!(
            subject,
            "Subject: [jit] x Bcc: evil@example.com requests aws-prod-admin for 1h"
        );
        let to: Vec<String> = m.envelope().to().iter().map(ToString::to_string).collect();
        assert_eq!(to, ["bob@example.com"]);
    }

    #[tokio::test]
    async fn bad_addresses_are_permanent() {
        let n = sample(NotificationKind::NewRequest);
        let mailer = mailer();
        for bad in [
            "not an address",
            "bob@example.com\r\nBcc: evil@example.com",
            "",
            "a@b, c@d",
        ] {
            let e = mailer.render(bad, &n).unwrap_err();
            assert!(!e.is_transient(), "{bad:?}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[tokio::test]
    async fn config_is_checked_without_echoing_the_url() {
        let e = Mailer::new(&EmailConfig {
            smtp_url: Secret::new("http://user:hunter2@127.0.0.1:25"),
            from: "jit@example.com".to_owned(),
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("notify.email.smtp_url") && !e.contains("hunter2"),
            "{e}"
        );
        let e = Mailer::new(&EmailConfig {
            smtp_url: Secret::new("smtp://user:hunter2@127.0.0.1:25?tls=bogus"),
            from: "jit@example.com".to_owned(),
        })
        .unwrap_err()
        .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let e = Mailer::new(&EmailConfig {
            smtp_url: Secret::new("smtp://127.0.0.1:25"),
            from: "jit\r\nBcc: x@example.com <jit@example.com>".to_owned(),
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("notify.email.from") && !e.contains('\n'), "{e}");
        let m = format!("{:?}", mailer());
        assert!(m.contains("jit@example.com"), "{m}");
    }

    #[test]
    fn mailer_needs_the_runtime() {
        let e = Mailer::new(&EmailConfig {
            smtp_url: Secret::new("smtp://127.0.0.1:25"),
            from: "jit@example.com".to_owned(),
        })
        .unwrap_err();
        assert!(e.to_string().contains("tokio runtime"), "{e}");
    }
}
