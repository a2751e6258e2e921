//! Notifications by email and Microsoft Teams.
//!
//! A [`Notification`] is self-contained — it carries the request as the API
//! shows it — so the outbox stores it as JSON and delivers it later without
//! the database. [`fan_out`] splits it into [`Channel`]s (one per email
//! recipient, plus Teams) so that each is a job of its own, retried on its
//! own; [`Notifier::deliver`] sends one channel and says, through
//! [`NotifyError::is_transient`], whether a failure is worth retrying.
//!
//! Every link points at `/requests/{id}`: the reader signs in and decides
//! there. Nothing sent from here approves anything by itself.

mod email;
mod teams;
pub mod text;

use std::collections::HashSet;
use std::time::Duration;

use jit_api::{Decision, Request, RequestState};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::config::NotifyConfig;
pub use email::Mailer;
pub use teams::Teams;
use text::when;

/// What happened, which decides who is told and what the message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// A request (or an extension, when `request.extends` is set) waits for approval → approvers.
    NewRequest,
    /// One approval of several arrived (N-of-M) → requester and the other approvers.
    ApprovalRecorded,
    /// The last approval arrived → requester and the other approvers ("decided by someone else").
    Approved,
    /// An approver said no → requester and the other approvers.
    Denied,
    /// The grant exists in the cloud → requester.
    GrantActive,
    /// The grant could not be made → requester.
    GrantFailed,
    /// The grant ends soon → requester.
    ExpiringSoon,
    /// The grant ran out and was removed → requester.
    Expired,
    /// The grant was ended early → requester.
    Revoked,
    /// An extension was granted → requester.
    Extended,
    /// Break-glass access was taken → approvers and the security list.
    BreakGlass,
    /// Nobody decided in time → requester and approvers.
    TimedOut,
    /// The request was withdrawn → approvers (and the requester if someone else cancelled it).
    Cancelled,
}

/// Who could be told about a request; [`NotificationKind::recipients`] picks from it.
#[derive(Debug, Clone, Copy)]
pub struct Audience<'a> {
    /// The requester's email address.
    pub requester: &'a str,
    /// Whether the requester is told when the kind names them; `false` for an action that
    /// ends several requests, which tells the requester once, of the request named.
    pub tell_requester: bool,
    /// Approver addresses (the entitlement's `notify.email` route).
    pub approvers: &'a [String],
    /// `notify.security_emails`, told of every break-glass use.
    pub security: &'a [String],
}

impl NotificationKind {
    /// The email recipients of this kind of event: deduplicated (case-insensitively,
    /// first spelling kept), never the `actor` themselves, never empty strings.
    pub fn recipients(self, audience: &Audience<'_>, actor: Option<&str>) -> Vec<String> {
        use NotificationKind as K;
        let requester = std::slice::from_ref(&audience.requester);
        let approvers = audience.approvers.iter().map(String::as_str);
        let candidates: Vec<&str> = match self {
            K::NewRequest => approvers.collect(),
            K::ApprovalRecorded | K::Approved | K::Denied | K::TimedOut | K::Cancelled => {
                requester.iter().copied().chain(approvers).collect()
            }
            K::GrantActive
            | K::GrantFailed
            | K::ExpiringSoon
            | K::Expired
            | K::Revoked
            | K::Extended => requester.to_vec(),
            K::BreakGlass => approvers
                .chain(audience.security.iter().map(String::as_str))
                .collect(),
        };
        // An approver who is also the requester never reviews their own request.
        let skip_requester = self == K::NewRequest || !audience.tell_requester;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for c in candidates {
            let c = c.trim();
            let key = c.to_lowercase();
            if c.is_empty()
                || actor.is_some_and(|a| a.trim().eq_ignore_ascii_case(c))
                || (skip_requester && audience.requester.trim().eq_ignore_ascii_case(c))
                || !seen.insert(key)
            {
                continue;
            }
            out.push(c.to_owned());
        }
        out
    }

    /// Whether the Teams channel hears of it: the approval flow and break-glass,
    /// not one person's grant lifecycle.
    pub fn posts_to_teams(self) -> bool {
        use NotificationKind as K;
        matches!(
            self,
            K::NewRequest
                | K::ApprovalRecorded
                | K::Approved
                | K::Denied
                | K::BreakGlass
                | K::TimedOut
                | K::Cancelled
        )
    }
}

/// One thing to tell people about a request; stored as JSON in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// What happened.
    pub kind: NotificationKind,
    /// The request as the API shows it, after the event.
    pub request: Request,
    /// The entitlement's human title.
    pub entitlement_title: String,
    /// Who acted (approver, revoker, canceller), when someone did.
    #[serde(default)]
    pub actor: Option<String>,
    /// The actor's comment.
    #[serde(default)]
    pub comment: Option<String>,
    /// `{public_url}/requests/{id}`; see [`Notification::link_for`].
    pub link: String,
    /// Email addresses; see [`NotificationKind::recipients`].
    pub recipients: Vec<String>,
    /// Post to the Teams webhook too (the entitlement's `notify.teams`).
    #[serde(default)]
    pub teams: bool,
}

impl Notification {
    /// The request page a notification links to.
    pub fn link_for(public_url: &str, id: Uuid) -> String {
        format!("{}/requests/{id}", public_url.trim_end_matches('/'))
    }

    /// How a message reads for `recipient`: in the second person for the
    /// requester (`request.requester` is their email), else in the third.
    pub(crate) fn view_for(&self, recipient: &str) -> View {
        if recipient
            .trim()
            .eq_ignore_ascii_case(self.request.requester.trim())
        {
            View::Requester
        } else {
            View::Observer
        }
    }

    /// Approvals so far.
    fn approvals(&self) -> usize {
        self.request
            .approvals
            .iter()
            .filter(|a| a.decision == Decision::Approve)
            .count()
    }

    /// The channel-neutral words of the message; user text is raw here and
    /// each channel cleans it for its own medium.
    pub(crate) fn message(&self, view: View) -> Message {
        Message {
            subject: self.subject(view),
            hint: self.hint(view),
            tone: self.tone(),
            facts: self.facts(),
            action: self.action(),
        }
    }

    /// The subject line: what happened, to whose request or access.
    fn subject(&self, view: View) -> String {
        use NotificationKind as K;
        let q = &self.request;
        let (r, e, d) = (&q.requester, &q.entitlement, &q.duration);
        let whose = if view == View::Requester {
            "Your".to_owned()
        } else {
            format!("{r}'s")
        };
        let by = self
            .actor
            .as_deref()
            .map(|a| format!(" by {a}"))
            .unwrap_or_default();
        let until = q
            .expires_at
            .map(|t| format!(" until {}", when(t)))
            .unwrap_or_default();
        match self.kind {
            K::NewRequest if q.extends.is_some() => {
                format!("{r} requests an extension of {e} by {d}")
            }
            K::NewRequest => format!("{r} requests {e} for {d}"),
            K::ApprovalRecorded => format!(
                "{whose} request for {e} was approved{by} ({} of {})",
                self.approvals(),
                q.approvals_required
            ),
            K::Approved => format!("{whose} request for {e} was approved{by}"),
            K::Denied => format!("{whose} request for {e} was denied{by}"),
            K::GrantActive => format!("{whose} access to {e} is active{until}"),
            K::GrantFailed => format!("{whose} access to {e} could not be granted"),
            K::ExpiringSoon => format!(
                "{whose} access to {e} ends {}",
                q.expires_at
                    .map_or_else(|| "soon".to_owned(), |t| format!("at {}", when(t)))
            ),
            K::Expired => format!("{whose} access to {e} has ended"),
            K::Revoked => format!("{whose} access to {e} was revoked{by}"),
            K::Extended => format!("{whose} access to {e} was extended{until}"),
            K::BreakGlass => format!("BREAK-GLASS: {r} took {e} for {d}"),
            K::TimedOut => format!("{whose} request for {e} timed out without a decision"),
            K::Cancelled => format!("{whose} request for {e} was cancelled{by}"),
        }
    }

    /// What the reader may do next; on a decided request only the requester has something to do.
    fn hint(&self, view: View) -> &'static str {
        use NotificationKind as K;
        let mine = view == View::Requester;
        let requester_only = |hint| if mine { hint } else { NO_ACTION };
        match self.kind {
            K::NewRequest => REVIEW_HINT,
            K::ApprovalRecorded if mine => "More approvals are needed before access is granted.",
            K::ApprovalRecorded => {
                "More approvals are needed; open the request if you have not decided yet."
            }
            K::Approved => {
                requester_only("The grant is being made; you will be told when it is active.")
            }
            K::Denied | K::TimedOut => {
                requester_only("Nothing was granted. File a new request if you still need access.")
            }
            K::GrantActive => "It is removed automatically when the time is up.",
            K::GrantFailed => "Nothing was granted; the reason is below.",
            K::ExpiringSoon => "Extend it from the request page if you still need it.",
            K::Expired => "The grant was removed. File a new request if you need access again.",
            K::Revoked => "The grant was removed before its window ended.",
            K::Extended => "It is removed automatically when the new time is up.",
            K::BreakGlass => {
                "Access was granted at once, without approval, and must be reviewed: open the request."
            }
            K::Cancelled => requester_only("Nothing was granted."),
        }
    }

    /// How loud the message is: good news, bad news, or neither.
    fn tone(&self) -> Tone {
        use NotificationKind as K;
        match self.kind {
            K::Approved | K::GrantActive | K::Extended => Tone::Good,
            K::Denied | K::GrantFailed | K::Revoked | K::BreakGlass => Tone::Attention,
            K::NewRequest
            | K::ApprovalRecorded
            | K::ExpiringSoon
            | K::Expired
            | K::TimedOut
            | K::Cancelled => Tone::Default,
        }
    }

    /// The label of the link: a review where someone may still decide, else a look.
    fn action(&self) -> &'static str {
        use NotificationKind as K;
        if matches!(
            self.kind,
            K::NewRequest | K::ApprovalRecorded | K::BreakGlass
        ) {
            "Review request"
        } else {
            "Open request"
        }
    }

    /// The request's facts, in reading order.
    fn facts(&self) -> Vec<Fact> {
        use NotificationKind as K;
        let q = &self.request;
        let title = self.entitlement_title.trim();
        let entitlement = if title.is_empty() || title == q.entitlement {
            q.entitlement.clone()
        } else {
            format!("{title} ({})", q.entitlement)
        };
        let mut facts = vec![Fact::new("Entitlement", entitlement)];
        if !q.target.trim().is_empty() {
            facts.push(Fact::new("Grants", q.target.clone()));
        }
        facts.extend([
            Fact::new("Requester", q.requester.clone()),
            Fact::new("Duration", q.duration.clone()),
            Fact::new("Justification", q.justification.clone()),
        ]);
        if let Some(ticket) = &q.ticket {
            facts.push(Fact::new("Ticket", ticket.clone()));
        }
        facts.push(Fact::new("State", q.state.as_str().to_owned()));
        if q.break_glass {
            facts.push(Fact::new("Break-glass", "yes, review required".to_owned()));
        }
        if let Some(original) = q.extends {
            facts.push(Fact::new("Extends", original.to_string()));
        }
        if let Some(actor) = &self.actor {
            let title = match self.kind {
                K::ApprovalRecorded | K::Approved | K::Denied => Some("Decided by"),
                K::Revoked => Some("Revoked by"),
                K::Cancelled => Some("Cancelled by"),
                _ => None,
            };
            if let Some(title) = title {
                facts.push(Fact::new(title, actor.clone()));
            }
        }
        if let Some(comment) = self.comment.as_deref().filter(|c| !c.trim().is_empty()) {
            facts.push(Fact::new("Comment", comment.to_owned()));
        }
        if q.approvals_required > 0 && matches!(self.kind, K::NewRequest | K::ApprovalRecorded) {
            facts.push(Fact::new(
                "Approvals",
                format!("{} of {}", self.approvals(), q.approvals_required),
            ));
        }
        if let Some(t) = q.expires_at {
            facts.push(Fact::new("Expires", when(t)));
        } else if let (RequestState::Pending, Some(t)) = (q.state, q.pending_until) {
            facts.push(Fact::new("Decide by", when(t)));
        }
        if self.kind == K::GrantFailed
            && let Some(reason) = &q.failure_reason
        {
            facts.push(Fact::new("Reason", reason.clone()));
        }
        if q.simulated {
            facts.push(Fact::new(
                "Simulated",
                "yes, development mode: nothing was granted in a real cloud".to_owned(),
            ));
        }
        facts
    }
}

const REVIEW_HINT: &str =
    "Open the request to approve or deny it. You sign in first; the link alone approves nothing.";

/// The hint on a decided request for everyone but the requester.
const NO_ACTION: &str = "No action is needed from you.";

/// Whose eyes a message is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// The requester: "Your request…".
    Requester,
    /// Approvers, the security list, the Teams channel: "alice's request…".
    Observer,
}

/// How loud a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tone {
    /// Neutral.
    Default,
    /// Good news.
    Good,
    /// Bad news or something to look at.
    Attention,
}

/// A notification's words before a channel shapes them.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// Subject / headline, without the `[jit]` prefix.
    pub subject: String,
    /// What the reader may do next.
    pub hint: &'static str,
    /// How loud.
    pub tone: Tone,
    /// Title/value pairs.
    pub facts: Vec<Fact>,
    /// Label of the link to the request.
    pub action: &'static str,
}

/// One title/value line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fact {
    /// Fixed label.
    pub title: &'static str,
    /// Value, possibly user text.
    pub value: String,
}

impl Fact {
    fn new(title: &'static str, value: String) -> Self {
        Self { title, value }
    }

    /// Justification, comment and failure reason may span lines; every
    /// other value is one line.
    pub(crate) fn is_free_text(&self) -> bool {
        matches!(self.title, "Justification" | "Comment" | "Reason")
    }
}

/// Where one delivery goes; the outbox stores one job per channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "channel", content = "to", rename_all = "snake_case")]
pub enum Channel {
    /// One email recipient.
    Email(String),
    /// The Teams webhook.
    Teams,
}

impl Channel {
    /// A stable key for `dedupe_key`: `email:alice@example.com` or `teams`.
    pub fn key(&self) -> String {
        match self {
            Self::Email(to) => format!("email:{}", to.trim().to_lowercase()),
            Self::Teams => "teams".to_owned(),
        }
    }

    /// `email` or `teams`, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Email(_) => "email",
            Self::Teams => "teams",
        }
    }
}

/// An outbox job payload: one notification for one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Where it goes.
    pub channel: Channel,
    /// What it says.
    pub notification: Notification,
}

impl Delivery {
    /// The job's `dedupe_key`: `notify:{event}:{channel}`, where `event`
    /// names the event uniquely (e.g. its audit sequence number).
    pub fn dedupe_key(&self, event: &str) -> String {
        format!("notify:{event}:{}", self.channel.key())
    }
}

/// Every channel a notification goes to: one per distinct recipient address
/// (case-insensitive, trimmed), then Teams when `teams` is set and the kind
/// is one the channel hears of.
pub fn fan_out(n: &Notification) -> Vec<Channel> {
    let mut seen = HashSet::new();
    let mut out: Vec<Channel> = n
        .recipients
        .iter()
        .map(|r| r.trim())
        .filter(|r| !r.is_empty() && seen.insert(r.to_lowercase()))
        .map(|r| Channel::Email(r.to_owned()))
        .collect();
    if n.teams && n.kind.posts_to_teams() {
        out.push(Channel::Teams);
    }
    out
}

/// A delivery that did not happen.
#[derive(Debug, Error)]
pub enum NotifyError {
    /// Worth retrying later (connection refused, timeout, SMTP 4xx, HTTP 429/5xx).
    #[error("{channel} delivery failed, will retry: {message}")]
    Transient {
        /// `email` or `teams`.
        channel: &'static str,
        /// What went wrong; never holds a secret.
        message: String,
        /// When the peer asked us to come back, if it did.
        retry_after: Option<Duration>,
    },
    /// Retrying will not help (SMTP 5xx, bad address, HTTP 4xx, card too large).
    #[error("{channel} delivery failed: {message}")]
    Permanent {
        /// `email` or `teams`.
        channel: &'static str,
        /// What went wrong; never holds a secret.
        message: String,
    },
    /// The channel has no configuration.
    #[error("{0} notifications are not configured")]
    NotConfigured(&'static str),
    /// A configuration value cannot be used.
    #[error("config: `{key}`: {problem}")]
    Config {
        /// Dotted key, e.g. `notify.email.from`.
        key: &'static str,
        /// What is wrong; never holds the secret.
        problem: String,
    },
}

impl NotifyError {
    /// True when the outbox should try again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    /// How long the peer asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn transient(channel: &'static str, message: impl Into<String>) -> Self {
        Self::Transient {
            channel,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn permanent(channel: &'static str, message: impl Into<String>) -> Self {
        Self::Permanent {
            channel,
            message: message.into(),
        }
    }
}

/// The configured channels.
#[derive(Debug, Default)]
pub struct Notifier {
    mailer: Option<Mailer>,
    teams: Option<Teams>,
}

impl Notifier {
    /// A notifier over the given channels (either may be absent).
    pub fn new(mailer: Option<Mailer>, teams: Option<Teams>) -> Self {
        Self { mailer, teams }
    }

    /// Builds the channels `[notify]` configures. Call it inside the Tokio
    /// runtime (the SMTP connection pool spawns a cleanup task).
    pub fn from_config(config: &NotifyConfig) -> Result<Self, NotifyError> {
        let mailer = config.email.as_ref().map(Mailer::new).transpose()?;
        let teams = config.teams.as_ref().map(Teams::new).transpose()?;
        Ok(Self { mailer, teams })
    }

    /// The channels of `n` this notifier can serve: [`fan_out`] without the
    /// unconfigured ones.
    pub fn channels(&self, n: &Notification) -> Vec<Channel> {
        fan_out(n)
            .into_iter()
            .filter(|c| match c {
                Channel::Email(_) => self.mailer.is_some(),
                Channel::Teams => self.teams.is_some(),
            })
            .collect()
    }

    /// Emails a plain-text alert to each of `recipients` (when email is configured); failures
    /// are logged, never returned: an alert must not stop what raised it.
    pub async fn alert(&self, recipients: &[String], subject: &str, text: &str) {
        let Some(mailer) = &self.mailer else { return };
        for to in recipients {
            if let Err(e) = mailer.send_alert(to, subject, text).await {
                tracing::error!(error = %e, "cannot send an alert email");
            }
        }
    }

    /// Whether any channel is configured at all.
    pub fn is_configured(&self) -> bool {
        self.mailer.is_some() || self.teams.is_some()
    }

    /// Sends `n` on one channel.
    pub async fn deliver(&self, channel: &Channel, n: &Notification) -> Result<(), NotifyError> {
        match channel {
            Channel::Email(to) => {
                let mailer = self
                    .mailer
                    .as_ref()
                    .ok_or(NotifyError::NotConfigured("email"))?;
                mailer.send_to(to, n).await
            }
            Channel::Teams => {
                let teams = self
                    .teams
                    .as_ref()
                    .ok_or(NotifyError::NotConfigured("teams"))?;
                teams.post(n).await
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;

    /// A pending request as a notification carries it.
    pub(crate) fn sample(kind: NotificationKind) -> Notification {
        let id = Uuid::parse_str("0190a5d2-0000-7000-8000-000000004711").unwrap();
        Notification {
            kind,
            request: Request {
                id,
                entitlement: "aws-prod-admin".to_owned(),
                requester: "alice@example.com".to_owned(),
                state: RequestState::Pending,
                duration: "1h".to_owned(),
                duration_seconds: 3600,
                justification: "INC-1234 hotfix".to_owned(),
                ticket: Some("INC-1234".to_owned()),
                created_at: datetime!(2026-05-01 12:00 UTC),
                pending_until: Some(datetime!(2026-05-01 13:00 UTC)),
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
            },
            entitlement_title: "AWS production — administrator".to_owned(),
            actor: None,
            comment: None,
            link: Notification::link_for("https://jit.example.com/", id),
            recipients: vec!["bob@example.com".to_owned()],
            teams: true,
        }
    }

    #[test]
    fn round_trips_as_json() {
        let mut n = sample(NotificationKind::Denied);
        n.actor = Some("bob@example.com".to_owned());
        n.comment = Some("not now".to_owned());
        let d = Delivery {
            channel: Channel::Email("bob@example.com".to_owned()),
            notification: n,
        };
        let json = serde_json::to_string(&d).unwrap();
        assert!(
            json.contains(r#""channel":{"channel":"email","to":"bob@example.com"}"#),
            "{json}"
        );
        assert!(json.contains(r#""kind":"denied""#), "{json}");
        let back: Delivery = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        let teams: Channel = serde_json::from_str(r#"{"channel":"teams"}"#).unwrap();
        assert_eq!(teams, Channel::Teams);
    }

    #[test]
    fn link_points_at_the_request_page() {
        let n = sample(NotificationKind::NewRequest);
        assert_eq!(
            n.link,
            "https://jit.example.com/requests/0190a5d2-0000-7000-8000-000000004711"
        );
    }

    #[test]
    fn subjects_read_well() {
        let n = sample(NotificationKind::NewRequest);
        assert_eq!(
            n.message(View::Observer).subject,
            "alice@example.com requests aws-prod-admin for 1h"
        );
        let mut n = sample(NotificationKind::Approved);
        n.actor = Some("bob@example.com".to_owned());
        assert_eq!(
            n.message(n.view_for("ALICE@example.com")).subject,
            "Your request for aws-prod-admin was approved by bob@example.com"
        );
        assert_eq!(
            n.message(n.view_for("carol@example.com")).subject,
            "alice@example.com's request for aws-prod-admin was approved by bob@example.com"
        );
        let mut n = sample(NotificationKind::NewRequest);
        n.request.extends = Some(Uuid::nil());
        n.request.duration = "30m".to_owned();
        assert_eq!(
            n.message(View::Observer).subject,
            "alice@example.com requests an extension of aws-prod-admin by 30m"
        );
    }

    #[test]
    fn every_kind_has_words_and_the_core_facts() {
        use NotificationKind as K;
        for kind in [
            K::NewRequest,
            K::ApprovalRecorded,
            K::Approved,
            K::Denied,
            K::GrantActive,
            K::GrantFailed,
            K::ExpiringSoon,
            K::Expired,
            K::Revoked,
            K::Extended,
            K::BreakGlass,
            K::TimedOut,
            K::Cancelled,
        ] {
            let n = sample(kind);
            for view in [View::Requester, View::Observer] {
                let m = n.message(view);
                assert!(
                    m.subject.contains("aws-prod-admin"),
                    "{kind:?}: {}",
                    m.subject
                );
                assert!(!m.hint.is_empty());
                let titles: Vec<_> = m.facts.iter().map(|f| f.title).collect();
                for t in [
                    "Entitlement",
                    "Requester",
                    "Duration",
                    "Justification",
                    "Ticket",
                    "State",
                ] {
                    assert!(titles.contains(&t), "{kind:?} lacks {t}");
                }
            }
        }
    }

    #[test]
    fn recipients_follow_the_kind() {
        use NotificationKind as K;
        let approvers = vec![
            "bob@example.com".to_owned(),
            "Carol@example.com".to_owned(),
            "carol@example.com".to_owned(),
            "alice@example.com".to_owned(),
            " ".to_owned(),
        ];
        let security = vec!["sec@example.com".to_owned()];
        let a = Audience {
            requester: "alice@example.com",
            tell_requester: true,
            approvers: &approvers,
            security: &security,
        };
        assert_eq!(
            K::NewRequest.recipients(&a, None),
            ["bob@example.com", "Carol@example.com"]
        );
        assert_eq!(
            K::Approved.recipients(&a, Some("bob@example.com")),
            ["alice@example.com", "Carol@example.com"]
        );
        assert_eq!(K::GrantActive.recipients(&a, None), ["alice@example.com"]);
        assert!(
            K::Revoked
                .recipients(&a, Some("alice@example.com"))
                .is_empty()
        );
        assert_eq!(
            K::BreakGlass.recipients(&a, Some("alice@example.com")),
            ["bob@example.com", "Carol@example.com", "sec@example.com"]
        );
    }

    #[test]
    fn fan_out_makes_one_channel_per_recipient_and_teams_where_it_belongs() {
        let mut n = sample(NotificationKind::NewRequest);
        n.recipients = vec![
            "bob@example.com".to_owned(),
            "BOB@example.com".to_owned(),
            "carol@example.com".to_owned(),
        ];
        assert_eq!(
            fan_out(&n),
            [
                Channel::Email("bob@example.com".to_owned()),
                Channel::Email("carol@example.com".to_owned()),
                Channel::Teams
            ]
        );
        n.kind = NotificationKind::GrantActive;
        assert!(!fan_out(&n).contains(&Channel::Teams));
        n.kind = NotificationKind::NewRequest;
        n.teams = false;
        assert!(!fan_out(&n).contains(&Channel::Teams));
        let d = Delivery {
            channel: Channel::Email("Bob@Example.com".to_owned()),
            notification: n,
        };
        assert_eq!(d.dedupe_key("42"), "notify:42:email:bob@example.com");
    }

    #[tokio::test]
    async fn unconfigured_channels_are_permanent_errors() {
        let notifier = Notifier::default();
        let n = sample(NotificationKind::NewRequest);
        assert!(notifier.channels(&n).is_empty());
        let e = notifier.deliver(&Channel::Teams, &n).await.unwrap_err();
        assert!(!e.is_transient());
        assert_eq!(e.to_string(), "teams notifications are not configured");
    }
}
