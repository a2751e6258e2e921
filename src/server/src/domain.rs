//! Pure rules: the request lifecycle, who may decide, input limits. No IO here.

use jit_api::RequestState;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub mod text;
pub mod time;

pub use self::time::UnixMs;
pub use text::local_path;

/// Who receives a grant, as providers need to know them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grantee {
    /// Broker user key.
    pub key: String,
    /// Email or user principal name (Identity Store user lookup, session names).
    pub email: String,
    /// Display name.
    pub name: String,
    /// Entra object id (PIM `principalId`).
    pub oid: Option<String>,
}

/// Something that moves a request from one state to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The last required approval arrived (or auto-approval, or break-glass).
    Approve,
    /// An approver said no.
    Deny,
    /// The requester withdrew.
    Cancel,
    /// The pending TTL ran out.
    TimeOut,
    /// The provider confirmed the grant.
    Activate,
    /// The provider could not make the grant.
    Fail,
    /// The window ended.
    Expire,
    /// Ended early by the requester or an admin.
    Revoke,
    /// The last required approval arrived for a request with a future `start_at`.
    Schedule,
    /// A scheduled request's `start_at` came: its grant is made now.
    Start,
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("cannot {event:?} a request that is {from}")]
pub struct IllegalTransition {
    /// Where the request was.
    pub from: RequestState,
    /// What was tried.
    pub event: Event,
}

/// The lifecycle of SPEC §4:
/// `pending → approved → active → expired`, with `denied`, `cancelled`,
/// `timed_out`, `revoked` and `failed` as the other ends. A request with a future
/// `start_at` goes `pending → scheduled → approved` instead (SPEC §10): it waits,
/// cancellable, until its start, or fails when its window ended before it could start.
pub fn transition(from: RequestState, event: Event) -> Result<RequestState, IllegalTransition> {
    use Event as E;
    use RequestState as S;
    let to = match (from, event) {
        (S::Pending, E::Approve) | (S::Scheduled, E::Start) => S::Approved,
        (S::Pending, E::Schedule) => S::Scheduled,
        (S::Pending, E::Deny) => S::Denied,
        (S::Pending | S::Approved | S::Scheduled, E::Cancel) => S::Cancelled,
        (S::Pending, E::TimeOut) => S::TimedOut,
        (S::Approved, E::Activate) => S::Active,
        (S::Approved | S::Scheduled, E::Fail) => S::Failed,
        (S::Active, E::Expire) => S::Expired,
        (S::Approved | S::Active, E::Revoke) => S::Revoked,
        _ => return Err(IllegalTransition { from, event }),
    };
    Ok(to)
}

/// A signed-in user as the broker knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable key: `tid/oid` for Entra, `dev/<name>` in development mode.
    pub key: String,
    /// Directory object id (Entra `oid`), used as PIM `principalId`.
    pub oid: Option<String>,
    /// Display name.
    pub name: String,
    /// Email or user principal name; shown as "requester".
    pub email: String,
    /// Group ids or names.
    pub groups: Vec<String>,
    /// App roles.
    pub roles: Vec<String>,
    /// The sign-in carried MFA (`amr` contains `mfa`).
    pub mfa: bool,
    /// Unix seconds of the sign-in (`auth_time`).
    pub auth_time: Option<i64>,
    /// Entra authentication contexts the sign-in satisfied (`acrs`, e.g. `["c1"]`).
    #[serde(default)]
    pub acrs: Vec<String>,
}

/// A refused action, with a reason the caller may read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleError {
    /// Requesters never approve their own requests, whatever the policy says.
    #[error("you cannot decide on your own request")]
    SelfApproval,
    /// The approver already decided.
    #[error("you have already decided on this request")]
    AlreadyDecided,
    /// Justification missing.
    #[error("justification is required")]
    JustificationMissing,
    /// Justification too long.
    #[error("justification is longer than {MAX_JUSTIFICATION} bytes")]
    JustificationTooLong,
    /// Comment too long.
    #[error("comment is longer than {MAX_COMMENT} bytes")]
    CommentTooLong,
    /// Duration above the entitlement's maximum.
    #[error("duration {asked} is above the maximum of {max} for `{entitlement}`")]
    DurationTooLong {
        /// Asked, formatted.
        asked: String,
        /// Maximum, formatted.
        max: String,
        /// Entitlement id.
        entitlement: String,
    },
    /// The entitlement needs a ticket and none or a malformed one was given.
    #[error("ticket {0}")]
    Ticket(String),
    /// A character that hides or reorders text (see [`text`]).
    #[error("{field} has {} (U+{code:04X}) at character {position}: remove it", why.describe())]
    UnsafeCharacter {
        /// `justification`, `ticket` or `comment`.
        field: &'static str,
        /// 1-based position among the characters as sent.
        position: usize,
        /// The code point.
        code: u32,
        /// What kind of character.
        why: text::Unsafe,
    },
}

/// Refuses the first character of `value` that [`text::first_unsafe`] finds.
fn check_characters(field: &'static str, value: &str, lines: bool) -> Result<(), RuleError> {
    match text::first_unsafe(value, lines) {
        None => Ok(()),
        Some(found) => Err(RuleError::UnsafeCharacter {
            field,
            position: found.position,
            code: u32::from(found.ch),
            why: found.why,
        }),
    }
}

/// Longest justification, in bytes.
pub const MAX_JUSTIFICATION: usize = 4096;
/// Longest approver comment, in bytes.
pub const MAX_COMMENT: usize = 2048;
/// Longest ticket reference.
pub const MAX_TICKET: usize = 64;

/// Checks a justification: present, bounded, printable (line breaks allowed; see [`text`]).
pub fn check_justification(text: &str) -> Result<String, RuleError> {
    check_characters("justification", text, true)?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(RuleError::JustificationMissing);
    }
    if trimmed.len() > MAX_JUSTIFICATION {
        return Err(RuleError::JustificationTooLong);
    }
    Ok(trimmed.to_owned())
}

/// Checks an optional approver comment (line breaks allowed; see [`text`]).
pub fn check_comment(text: Option<&str>) -> Result<Option<String>, RuleError> {
    if let Some(text) = text {
        check_characters("comment", text, true)?;
    }
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.len() > MAX_COMMENT {
        return Err(RuleError::CommentTooLong);
    }
    Ok(Some(text.to_owned()))
}

/// Checks a ticket reference against the entitlement's rule.
///
/// `pattern` is a simple shape: letters for `A`, digits for `9`, with a `*`
/// suffix allowing more of the last class; e.g. `INC-9*` accepts `INC-1234`.
pub fn check_ticket(
    ticket: Option<&str>,
    required: bool,
    pattern: Option<&str>,
) -> Result<Option<String>, RuleError> {
    if let Some(ticket) = ticket {
        check_characters("ticket", ticket, false)?;
    }
    let ticket = ticket.map(str::trim).filter(|t| !t.is_empty());
    let Some(ticket) = ticket else {
        return if required {
            Err(RuleError::Ticket(match pattern {
                Some(pattern) => format!(
                    "is required for this entitlement, in the format {}",
                    ticket_format(pattern)
                ),
                None => "is required for this entitlement".to_owned(),
            }))
        } else {
            Ok(None)
        };
    };
    if ticket.len() > MAX_TICKET {
        return Err(RuleError::Ticket(format!(
            "is longer than {MAX_TICKET} characters"
        )));
    }
    if !ticket
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '#' | '.' | '/'))
    {
        return Err(RuleError::Ticket(format!(
            "`{}` may contain only letters, digits and - _ # . /",
            ticket.escape_default()
        )));
    }
    if let Some(pattern) = pattern
        && !ticket_matches(ticket, pattern)
    {
        return Err(RuleError::Ticket(format!(
            "`{ticket}` does not match the format {}",
            ticket_format(pattern)
        )));
    }
    Ok(Some(ticket.to_owned()))
}

/// A ticket pattern as people read it: "`INC-9*` (like `INC-1234`)".
pub fn ticket_format(pattern: &str) -> String {
    format!("`{pattern}` (like `{}`)", ticket_example(pattern))
}

/// A ticket that matches `pattern`: `9` a digit, `A` a letter, `X*` one or more of `X`
/// (written three times more), e.g. `INC-9*` gives `INC-1234`.
pub fn ticket_example(pattern: &str) -> String {
    const DIGITS: &[u8] = b"1234567890";
    const LETTERS: &[u8] = b"ABCDEFGHIJ";
    let mut out = String::new();
    let (mut digits, mut letters) = (0, 0);
    let mut write = |p: char, out: &mut String| match p {
        '9' => {
            out.push(char::from(DIGITS[digits % DIGITS.len()]));
            digits += 1;
        }
        'A' => {
            out.push(char::from(LETTERS[letters % LETTERS.len()]));
            letters += 1;
        }
        other => out.push(other),
    };
    let mut last = None;
    for p in pattern.chars() {
        if p == '*' {
            if let Some(l) = last.filter(|l| matches!(l, '9' | 'A')) {
                for _ in 0..3 {
                    write(l, &mut out);
                }
            }
        } else {
            write(p, &mut out);
            last = Some(p);
        }
    }
    out
}

#[expect(clippy::many_single_char_names, reason = "a tiny two-cursor matcher")]
fn ticket_matches(ticket: &str, pattern: &str) -> bool {
    fn class(p: char, c: char) -> bool {
        match p {
            '9' => c.is_ascii_digit(),
            'A' => c.is_ascii_alphabetic(),
            _ => p == c,
        }
    }
    let t: Vec<char> = ticket.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut i, mut j) = (0, 0);
    while j < p.len() {
        if p.get(j + 1) == Some(&'*') {
            let mut n = 0;
            while i < t.len() && class(p[j], t[i]) {
                i += 1;
                n += 1;
            }
            if n == 0 {
                return false;
            }
            j += 2;
        } else {
            if i >= t.len() || !class(p[j], t[i]) {
                return false;
            }
            i += 1;
            j += 1;
        }
    }
    i == t.len()
}

/// Makes the decision rules that hold whatever the policies say.
pub fn check_decider(requester_key: &str, approver: &User) -> Result<(), RuleError> {
    if requester_key == approver.key {
        Err(RuleError::SelfApproval)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event as E;
    use RequestState as S;

    const EVENTS: [Event; 10] = [
        E::Approve,
        E::Deny,
        E::Cancel,
        E::TimeOut,
        E::Activate,
        E::Fail,
        E::Expire,
        E::Revoke,
        E::Schedule,
        E::Start,
    ];

    #[test]
    fn every_legal_transition() {
        let legal = [
            (S::Pending, E::Approve, S::Approved),
            (S::Pending, E::Deny, S::Denied),
            (S::Pending, E::Cancel, S::Cancelled),
            (S::Pending, E::TimeOut, S::TimedOut),
            (S::Approved, E::Cancel, S::Cancelled),
            (S::Approved, E::Activate, S::Active),
            (S::Approved, E::Fail, S::Failed),
            (S::Approved, E::Revoke, S::Revoked),
            (S::Active, E::Expire, S::Expired),
            (S::Active, E::Revoke, S::Revoked),
            (S::Pending, E::Schedule, S::Scheduled),
            (S::Scheduled, E::Start, S::Approved),
            (S::Scheduled, E::Cancel, S::Cancelled),
            (S::Scheduled, E::Fail, S::Failed),
        ];
        for (from, ev, to) in legal {
            assert_eq!(transition(from, ev), Ok(to), "{from} {ev:?}");
        }
        // Everything else is refused with a typed error.
        for from in RequestState::ALL {
            for ev in EVENTS {
                if legal.iter().any(|(f, e, _)| *f == from && *e == ev) {
                    continue;
                }
                assert_eq!(
                    transition(from, ev),
                    Err(IllegalTransition { from, event: ev }),
                    "{from} {ev:?} should be illegal"
                );
            }
        }
    }

    #[test]
    fn terminal_states_accept_nothing() {
        for from in RequestState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for ev in EVENTS {
                assert!(transition(from, ev).is_err());
            }
        }
    }

    fn user(key: &str) -> User {
        User {
            key: key.to_owned(),
            oid: None,
            name: key.to_owned(),
            email: format!("{key}@example.com"),
            groups: vec![],
            roles: vec![],
            mfa: false,
            auth_time: None,
            acrs: vec![],
        }
    }

    #[test]
    fn self_approval_is_refused() {
        assert_eq!(check_decider("a", &user("a")), Err(RuleError::SelfApproval));
        assert_eq!(check_decider("a", &user("b")), Ok(()));
    }

    #[test]
    fn justification_rules() {
        assert_eq!(
            check_justification("  "),
            Err(RuleError::JustificationMissing)
        );
        assert_eq!(
            check_justification(&"x".repeat(MAX_JUSTIFICATION + 1)),
            Err(RuleError::JustificationTooLong)
        );
        assert!(check_justification(&"x".repeat(MAX_JUSTIFICATION)).is_ok());
        assert!(check_justification("fix\0it").is_err());
        assert_eq!(
            check_justification("ok\u{202E}gnp.exe")
                .unwrap_err()
                .to_string(),
            "justification has a bidirectional control character (U+202E) at character 3: remove it"
        );
        assert_eq!(
            check_comment(Some(" a\u{200B}")).unwrap_err().to_string(),
            "comment has an invisible formatting character (U+200B) at character 3: remove it"
        );
        assert_eq!(
            check_justification(" fix prod\nnow ").unwrap(),
            "fix prod\nnow"
        );
    }

    #[test]
    fn ticket_rules() {
        assert!(check_ticket(None, true, None).is_err());
        assert_eq!(check_ticket(None, false, None), Ok(None));
        assert_eq!(
            check_ticket(Some("INC-1234"), true, Some("INC-9*")),
            Ok(Some("INC-1234".to_owned()))
        );
        assert!(check_ticket(Some("INC-"), true, Some("INC-9*")).is_err());
        assert!(check_ticket(Some("CHG-12"), true, Some("INC-9*")).is_err());
        // The errors say the format with an example that passes.
        assert_eq!(
            check_ticket(Some("CHG-12"), true, Some("INC-9*"))
                .unwrap_err()
                .to_string(),
            "ticket `CHG-12` does not match the format `INC-9*` (like `INC-1234`)"
        );
        assert_eq!(
            check_ticket(None, true, Some("INC-9*"))
                .unwrap_err()
                .to_string(),
            "ticket is required for this entitlement, in the format `INC-9*` (like `INC-1234`)"
        );
        for pattern in ["INC-9*", "CHG-99999", "AA-9", "A*-9*", "X*"] {
            let example = ticket_example(pattern);
            assert!(ticket_matches(&example, pattern), "{pattern}: {example}");
        }
        assert_eq!(ticket_example("CHG-99999"), "CHG-12345");
        assert!(check_ticket(Some("INC-12x"), true, Some("INC-9*")).is_err());
        assert!(check_ticket(Some("a b"), false, None).is_err());
        assert!(check_ticket(Some("INC-1\r\nBcc: x"), false, None).is_err());
        assert_eq!(
            check_ticket(Some("INC\u{2069}-1"), false, None)
                .unwrap_err()
                .to_string(),
            "ticket has a bidirectional control character (U+2069) at character 4: remove it"
        );
    }
}
