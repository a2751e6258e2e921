//! Microsoft Teams: an Adaptive Card posted to a Workflows webhook.
//!
//! The webhook URL carries its own signature (`sig=`) and is the only
//! credential: it never reaches a log or an error message (reqwest errors are
//! stripped of their URL). Cards only link to the request page; approving
//! happens there, after sign-in.

use std::fmt;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use super::text::{card_text, header_text};
use super::{Message, Notification, NotifyError, Tone, View};
use crate::config::{Secret, TeamsConfig};

const CHANNEL: &str = "teams";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Webhooks reject messages over 28 KB; observed rejections start a little
/// below that, so the whole envelope stays under 26 KB.
pub const MAX_ENVELOPE_BYTES: usize = 26 * 1024;
/// Longest justification / comment on a card; the request page has the rest.
const LONG_VALUE_MAX: usize = 1000;
/// Longest other value on a card.
const VALUE_MAX: usize = 300;
/// Every value, when the card is still too large.
const TIGHT_VALUE_MAX: usize = 120;
/// Retry-After values above this are capped (the outbox reschedules).
const RETRY_AFTER_CAP: Duration = Duration::from_hours(1);

/// Posts notification cards to one Teams Workflows webhook.
pub struct Teams {
    client: reqwest::Client,
    url: Secret,
    max_attempts: u32,
    backoff: Duration,
    max_inline_wait: Duration,
}

impl fmt::Debug for Teams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Teams")
            .field("webhook_url", &"<redacted>")
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// How one attempt went.
enum Attempt {
    Delivered,
    Retry {
        message: String,
        retry_after: Option<Duration>,
    },
    Permanent(String),
}

impl Teams {
    /// Builds the poster from `[notify.teams]`. The URL must be `https`
    /// (plain `http` only on loopback, for tests).
    pub fn new(config: &TeamsConfig) -> Result<Self, NotifyError> {
        let invalid = |problem: &str| NotifyError::Config {
            key: "notify.teams.webhook_url",
            problem: problem.to_owned(),
        };
        let url =
            url::Url::parse(&config.webhook_url.expose()).map_err(|_| invalid("not a URL"))?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
            return Err(invalid(
                "must be an https URL (plain http only on loopback)",
            ));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect would carry the card somewhere we did not configure.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("jit/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Config {
                key: "notify.teams",
                problem: format!("cannot build the http client: {}", e.without_url()),
            })?;
        Ok(Self {
            client,
            url: config.webhook_url.clone(),
            max_attempts: 3,
            backoff: Duration::from_millis(500),
            max_inline_wait: Duration::from_secs(30),
        })
    }

    /// Changes the retry policy of one [`Teams::post`]: at most `max_attempts`
    /// tries, exponential backoff from `backoff`, and waits (including
    /// `Retry-After`) longer than `max_inline_wait` handed back to the caller
    /// as [`NotifyError::Transient`] with `retry_after`.
    #[must_use]
    pub fn with_retry(
        mut self,
        max_attempts: u32,
        backoff: Duration,
        max_inline_wait: Duration,
    ) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.backoff = backoff;
        self.max_inline_wait = max_inline_wait;
        self
    }

    /// Posts the card for `n`, retrying 429 (honouring `Retry-After`), 408,
    /// 5xx and network failures a bounded number of times.
    pub async fn post(&self, n: &Notification) -> Result<(), NotifyError> {
        let body = envelope_bytes(n)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(&body).await {
                Attempt::Delivered => {
                    tracing::debug!(request.id = %n.request.id, kind = ?n.kind, attempt, "teams card posted");
                    return Ok(());
                }
                Attempt::Permanent(message) => {
                    return Err(NotifyError::permanent(CHANNEL, message));
                }
                Attempt::Retry {
                    message,
                    retry_after,
                } => {
                    let backoff = self.backoff.saturating_mul(1 << (attempt - 1).min(10));
                    let wait = retry_after.unwrap_or(backoff);
                    if attempt >= self.max_attempts || wait > self.max_inline_wait {
                        return Err(NotifyError::Transient {
                            channel: CHANNEL,
                            message: format!("{message} (after {attempt} attempts)"),
                            retry_after,
                        });
                    }
                    tracing::info!(request.id = %n.request.id, attempt, wait_ms = wait.as_millis(), reason = %message, "teams webhook retry");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(&self, body: &[u8]) -> Attempt {
        let response = match self
            .client
            .post(&*self.url.expose())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let permanent = e.is_builder();
                let message = describe(&e.without_url());
                return if permanent {
                    Attempt::Permanent(message)
                } else {
                    Attempt::Retry {
                        message,
                        retry_after: None,
                    }
                };
            }
        };
        let status = response.status();
        let retry_after = retry_after(response.headers(), OffsetDateTime::now_utc());
        let text = response.text().await.unwrap_or_default();
        let snippet = header_text(&text, 200);
        if status.is_success() {
            // The legacy connector reports throttling inside a 200 body.
            if text.contains("HTTP error 429") {
                return Attempt::Retry {
                    message: "webhook throttled (429 in the response body)".to_owned(),
                    retry_after,
                };
            }
            return Attempt::Delivered;
        }
        match status.as_u16() {
            429 => Attempt::Retry {
                message: "webhook throttled (429)".to_owned(),
                retry_after,
            },
            408 | 500..=599 => Attempt::Retry {
                message: format!("webhook answered {status}"),
                retry_after,
            },
            413 => Attempt::Permanent("webhook refused the card as too large (413)".to_owned()),
            // A webhook URL from Secrets Manager may have been rotated: re-read it once.
            401 | 403 | 404 if self.url.refresh().await.unwrap_or(false) => Attempt::Retry {
                message: format!("webhook answered {status}; its URL was re-read"),
                retry_after: Some(Duration::ZERO),
            },
            _ if snippet.is_empty() => Attempt::Permanent(format!("webhook answered {status}")),
            _ => Attempt::Permanent(format!("webhook answered {status}: {snippet}")),
        }
    }
}

/// The request body: the card in the webhook envelope, under the size budget.
fn envelope_bytes(n: &Notification) -> Result<Vec<u8>, NotifyError> {
    let link = url::Url::parse(&n.link)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| {
            NotifyError::permanent(
                CHANNEL,
                format!(
                    "notification link `{}` is not an http(s) URL",
                    header_text(&n.link, 200)
                ),
            )
        })?;
    let message = n.message(View::Observer);
    for (long, short) in [
        (LONG_VALUE_MAX, VALUE_MAX),
        (TIGHT_VALUE_MAX, TIGHT_VALUE_MAX),
    ] {
        let bytes = serde_json::to_vec(&envelope(&message, link.as_str(), long, short))
            .map_err(|e| NotifyError::permanent(CHANNEL, format!("cannot encode the card: {e}")))?;
        if bytes.len() <= MAX_ENVELOPE_BYTES {
            return Ok(bytes);
        }
    }
    Err(NotifyError::permanent(
        CHANNEL,
        format!("card exceeds {MAX_ENVELOPE_BYTES} bytes even when shortened"),
    ))
}

/// The Workflows webhook envelope around an Adaptive Card 1.4.
pub(crate) fn envelope(m: &Message, link: &str, long_max: usize, value_max: usize) -> Value {
    let headline = card_text(&m.subject, 300);
    let color = match m.tone {
        Tone::Default => "Default",
        Tone::Good => "Good",
        Tone::Attention => "Attention",
    };
    let facts: Vec<Value> = m
        .facts
        .iter()
        .map(|f| {
            let max = if f.is_free_text() {
                long_max
            } else {
                value_max
            };
            json!({ "title": f.title, "value": card_text(&f.value, max) })
        })
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "fallbackText": headline,
                "msteams": { "width": "Full" },
                "body": [
                    {
                        "type": "TextBlock",
                        "text": headline,
                        "weight": "Bolder",
                        "size": "Medium",
                        "color": color,
                        "wrap": true
                    },
                    {
                        "type": "TextBlock",
                        "text": m.hint,
                        "isSubtle": true,
                        "spacing": "Small",
                        "wrap": true
                    },
                    { "type": "FactSet", "facts": facts }
                ],
                "actions": [
                    { "type": "Action.OpenUrl", "title": m.action, "url": link }
                ]
            }
        }]
    })
}

/// `Retry-After` as delay-seconds or an HTTP date, capped at an hour.
fn retry_after(headers: &HeaderMap, now: OffsetDateTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = OffsetDateTime::parse(value, &Rfc2822).ok()?;
        Duration::try_from(at - now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

/// A reqwest error (already without its URL) and its sources.
fn describe(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "webhook timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect to the webhook".to_owned()
    } else {
        "webhook request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
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
    use crate::notify::NotificationKind;
    use crate::notify::tests::sample;
    use reqwest::header::HeaderValue;

    fn card(n: &Notification) -> Value {
        serde_json::from_slice(&envelope_bytes(n).unwrap()).unwrap()
    }

    #[test]
    fn card_has_the_documented_shape() {
        let n = sample(NotificationKind::NewRequest);
        let v = card(&n);
        assert_eq!(v["type"], "message");
        let a = &v["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        let c = &a["content"];
        assert_eq!(c["type"], "AdaptiveCard");
        assert_eq!(c["version"], "1.4");
        assert_eq!(c["actions"][0]["type"], "Action.OpenUrl");
        assert_eq!(c["actions"][0]["title"], "Review request");
        assert_eq!(c["actions"][0]["url"], n.link.as_str());
        assert_eq!(
            c["actions"].as_array().unwrap().len(),
            1,
            "no approve action"
        );
        let facts = c["body"][2]["facts"].as_array().unwrap();
        let get = |t: &str| {
            facts
                .iter()
                .find(|f| f["title"] == t)
                .map(|f| f["value"].clone())
        };
        assert_eq!(get("Requester").unwrap(), "alice@example.com");
        assert_eq!(get("Duration").unwrap(), "1h");
        assert_eq!(get("Ticket").unwrap(), "INC-1234");
        assert_eq!(get("State").unwrap(), "pending");
    }

    #[test]
    fn long_text_is_cut_to_fit() {
        let mut n = sample(NotificationKind::NewRequest);
        n.request.justification = "𝔵".repeat(4096);
        n.comment = Some("y".repeat(100_000));
        n.request.ticket = Some("z".repeat(100_000));
        let bytes = envelope_bytes(&n).unwrap();
        assert!(bytes.len() <= MAX_ENVELOPE_BYTES, "{}", bytes.len());
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let facts = v["attachments"][0]["content"]["body"][2]["facts"]
            .as_array()
            .unwrap();
        let j = facts
            .iter()
            .find(|f| f["title"] == "Justification")
            .unwrap();
        let j = j["value"].as_str().unwrap();
        assert_eq!(j.chars().count(), LONG_VALUE_MAX);
        assert!(j.ends_with('…'));
    }

    #[test]
    fn user_text_cannot_hide_a_link() {
        let mut n = sample(NotificationKind::NewRequest);
        n.request.justification = "[Approve here](https://evil.example/x)".to_owned();
        let text = serde_json::to_string(&card(&n)).unwrap();
        assert!(!text.contains("](https://evil"), "{text}");
    }

    #[test]
    fn a_link_that_is_not_http_is_refused() {
        let mut n = sample(NotificationKind::NewRequest);
        n.link = "javascript:alert(1)".to_owned();
        assert!(!envelope_bytes(&n).unwrap_err().is_transient());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = time::macros::datetime!(2026-05-01 12:00:00 UTC);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Fri, 01 May 2026 12:00:30 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Fri, 01 May 2026 11:00:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("999999"));
        assert_eq!(retry_after(&h, now), Some(RETRY_AFTER_CAP));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn config_is_checked_without_echoing_the_url() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        for bad in [
            "http://teams.example.com/x?sig=hunter2",
            "nope hunter2",
            "ftp://127.0.0.1/?sig=hunter2",
        ] {
            let e = Teams::new(&TeamsConfig {
                webhook_url: Secret::new(bad),
            })
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("notify.teams.webhook_url") && !e.contains("hunter2"),
                "{e}"
            );
        }
        let t = Teams::new(&TeamsConfig {
            webhook_url: Secret::new(
                "https://prod-01.westeurope.logic.azure.com/workflows/x?sig=hunter2",
            ),
        })
        .unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
