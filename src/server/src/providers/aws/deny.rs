//! The broker's deny statements: how sessions handed out before a removal
//! stop working (docs/revocation.md).
//!
//! STS sessions cannot be revoked, but AWS evaluates policies on every
//! request, so a `Deny` on `*` whose conditions match only one person's
//! sessions issued before a time ends exactly those: `aws:SourceIdentity`
//! (set by the broker on every `aws_role` session) or `identitystore:userId`
//! (Identity Center), and `aws:TokenIssueTime` before the cutoff. Sessions
//! minted afterwards (a new grant) are not touched.
//!
//! The statements live in an inline policy: the broker's own on an
//! `aws_role` role, or the permission set's, next to the operator's own
//! statements (the broker's carry a `Sid` starting with `jit`; the rest is
//! kept as it is). A statement is pruned once every session it targets has
//! expired (its cutoff plus the longest session the role or permission set
//! allows), and one per person is kept: a later removal moves its cutoff on.
//! When the policy would exceed [`POLICY_BUDGET`], one statement for
//! everyone (`jitAll`, the documented role-wide deny) replaces every
//! per-person statement it covers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcOffset};

/// The `Sid` prefix of the broker's statements.
pub const SID_PREFIX: &str = "jit";

/// The `Sid` of the statement that denies every session issued before its cutoff.
pub const SID_EVERYONE: &str = "jitAll";

/// The most characters (white space not counted) a role's inline policies
/// may hold together, per IAM's quotas; also the broker's limit for a
/// permission set's inline policy, which becomes an inline policy of the
/// role Identity Center provisions.
pub const POLICY_BUDGET: usize = 10_240;

/// How long a target's longest session is remembered.
const LIFETIME_TTL: std::time::Duration = std::time::Duration::from_mins(10);

/// One read-modify-write of a policy at a time, per policy, in this broker
/// (across brokers the caller holds a database lock as well).
#[derive(Debug, Default)]
pub(crate) struct PolicyLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl PolicyLocks {
    /// The lock of the policy `key`.
    pub(crate) fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() > 10_000 {
            map.retain(|_, l| Arc::strong_count(l) > 1);
        }
        map.entry(key.to_owned()).or_default().clone()
    }
}

/// The longest session of roles and permission sets, as AWS said a moment ago.
#[derive(Debug, Default)]
pub(crate) struct Lifetimes(Mutex<HashMap<String, (Duration, std::time::Instant)>>);

impl Lifetimes {
    /// What AWS said for `key` less than ten minutes ago.
    pub(crate) fn get(&self, key: &str) -> Option<Duration> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .filter(|(_, at)| at.elapsed() < LIFETIME_TTL)
            .map(|(d, _)| *d)
    }

    /// Remembers what AWS said for `key`.
    pub(crate) fn put(&self, key: &str, lifetime: Duration) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_owned(), (lifetime, std::time::Instant::now()));
    }
}

/// Whose sessions a deny statement matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who<'a> {
    /// `aws:SourceIdentity` equals this (`aws_role` sessions).
    SourceIdentity(&'a str),
    /// `identitystore:userId` equals `user` and `aws:PrincipalAccount`
    /// equals `account` (Identity Center sessions of one account: a permission
    /// set's policy is provisioned to every account that uses it).
    IdentityStoreUser {
        /// Identity Store user id.
        user: &'a str,
        /// 12-digit account id.
        account: &'a str,
    },
    /// Every session.
    Everyone,
}

impl Who<'_> {
    /// The statement id: `jit` and 16 hex digits of the person's key.
    pub fn sid(&self) -> String {
        let key = match self {
            Self::SourceIdentity(v) => format!("source-identity\n{v}"),
            Self::IdentityStoreUser { user, account } => {
                format!("identitystore-user\n{user}\n{account}")
            }
            Self::Everyone => return SID_EVERYONE.to_owned(),
        };
        let digest = Sha256::digest(key.as_bytes());
        format!("{SID_PREFIX}{}", &hex::encode(digest)[..16])
    }
}

/// The cutoff as IAM date conditions take it: UTC, whole seconds.
pub fn stamp(cutoff: OffsetDateTime) -> String {
    cutoff
        .to_offset(UtcOffset::UTC)
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .unwrap_or_default()
}

/// `now` rounded up to the next whole second: the cutoff that covers every
/// session issued up to now, also within the current second.
pub fn cutoff_after(now: OffsetDateTime) -> OffsetDateTime {
    let now = now.to_offset(UtcOffset::UTC);
    if now.nanosecond() == 0 {
        now
    } else {
        now.replace_nanosecond(0).unwrap_or(now) + Duration::SECOND
    }
}

/// The deny statement for `who`'s sessions issued before `cutoff`.
pub fn statement(who: Who<'_>, cutoff: OffsetDateTime) -> Value {
    let mut condition = Map::new();
    match who {
        Who::SourceIdentity(v) => {
            condition.insert("StringEquals".into(), json!({ "aws:SourceIdentity": v }));
        }
        Who::IdentityStoreUser { user, account } => {
            condition.insert(
                "StringEquals".into(),
                json!({ "identitystore:userId": user, "aws:PrincipalAccount": account }),
            );
        }
        Who::Everyone => {}
    }
    condition.insert(
        "DateLessThan".into(),
        json!({ "aws:TokenIssueTime": stamp(cutoff) }),
    );
    json!({
        "Sid": who.sid(),
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": condition,
    })
}

/// Characters IAM counts against its size quotas: everything but white space.
pub fn policy_size(document: &str) -> usize {
    document.chars().filter(|c| !c.is_whitespace()).count()
}

/// A policy after a merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The document to write; `None` when it holds no statement any more
    /// (delete the policy).
    pub document: Option<String>,
    /// Its size as IAM counts it.
    pub size: usize,
    /// The broker's statements in it.
    pub denies: usize,
    /// The broker's statements dropped: their sessions have all expired, or
    /// a statement for everyone covers them.
    pub pruned: usize,
    /// When the next of the broker's statements may be pruned.
    pub next_expiry: Option<OffsetDateTime>,
    /// Whether the document differs from the one read.
    pub changed: bool,
}

/// The cutoff of one of the broker's statements.
fn cutoff_of(statement: &Value) -> Option<OffsetDateTime> {
    statement
        .pointer("/Condition/DateLessThan/aws:TokenIssueTime")
        .and_then(Value::as_str)
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
}

fn sid_of(statement: &Value) -> Option<&str> {
    statement.get("Sid").and_then(Value::as_str)
}

fn is_ours(statement: &Value) -> bool {
    sid_of(statement).is_some_and(|s| s.starts_with(SID_PREFIX))
}

/// Merges a deny for `add` (who, cutoff) into the `existing` policy document
/// and prunes what has expired at `now` (a statement expires `lifetime` after
/// its cutoff). The operator's statements are kept as they are; one of the
/// broker's for the same person keeps the later of the two cutoffs.
pub fn merge(
    existing: Option<&str>,
    add: Option<(Who<'_>, OffsetDateTime)>,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<Merged, String> {
    let mut root = match existing.map(str::trim).filter(|d| !d.is_empty()) {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err("the inline policy is not a JSON object".to_owned()),
            Err(e) => return Err(format!("the inline policy is not valid JSON: {e}")),
        },
    };
    let before: Vec<Value> = match root.remove("Statement") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list,
        Some(one @ Value::Object(_)) => vec![one],
        Some(_) => return Err("the inline policy's `Statement` is not a list".to_owned()),
    };
    let mut statements = before.clone();
    if let Some((who, cutoff)) = add {
        let sid = who.sid();
        let cutoff = statements
            .iter()
            .filter(|s| sid_of(s) == Some(&sid))
            .filter_map(cutoff_of)
            .fold(cutoff, OffsetDateTime::max);
        statements.retain(|s| sid_of(s) != Some(&sid));
        statements.push(statement(who, cutoff));
    }
    // Everyone's cutoff covers every person's statement that is not later.
    let everyone = statements
        .iter()
        .filter(|s| sid_of(s) == Some(SID_EVERYONE))
        .filter_map(cutoff_of)
        .max();
    let mut pruned = 0;
    statements.retain(|s| {
        if !is_ours(s) {
            return true;
        }
        let Some(cutoff) = cutoff_of(s) else {
            // Ours but unreadable: a deny is never dropped on a guess.
            return true;
        };
        let expired = cutoff + lifetime <= now;
        let covered = sid_of(s) != Some(SID_EVERYONE) && everyone.is_some_and(|all| cutoff <= all);
        if expired || covered {
            pruned += 1;
        }
        !(expired || covered)
    });
    let ours: Vec<&Value> = statements.iter().filter(|s| is_ours(s)).collect();
    let denies = ours.len();
    let next_expiry = ours
        .iter()
        .filter_map(|s| cutoff_of(s))
        .min()
        .map(|c| c + lifetime);
    let changed = statements != before;
    if statements.is_empty() {
        return Ok(Merged {
            document: None,
            size: 0,
            denies,
            pruned,
            next_expiry,
            changed: changed || existing.is_some_and(|d| !d.trim().is_empty()),
        });
    }
    if !root.contains_key("Version") {
        root.insert("Version".into(), json!("2012-10-17"));
    }
    root.insert("Statement".into(), Value::Array(statements));
    let document = Value::Object(root).to_string();
    Ok(Merged {
        size: policy_size(&document),
        document: Some(document),
        denies,
        pruned,
        next_expiry,
        changed,
    })
}

/// Merges `who`'s deny; when the result would not fit in [`POLICY_BUDGET`],
/// one statement for everyone instead (which replaces the per-person ones).
/// Returns the merge and whether it had to fall back to everyone.
pub fn merge_within_budget(
    existing: Option<&str>,
    who: Who<'_>,
    cutoff: OffsetDateTime,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Result<(Merged, bool), String> {
    let merged = merge(existing, Some((who, cutoff)), now, lifetime)?;
    if merged.size <= POLICY_BUDGET {
        return Ok((merged, false));
    }
    let everyone = merge(existing, Some((Who::Everyone, cutoff)), now, lifetime)?;
    if everyone.size > POLICY_BUDGET {
        return Err(format!(
            "the inline policy holds {} characters of the operator's own statements: \
             no room for the broker's deny within {POLICY_BUDGET}",
            everyone.size
        ));
    }
    Ok((everyone, who != Who::Everyone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// A request's context, as IAM sees it, for the conditions the broker
    /// writes (moto does not evaluate conditions: this is the in-repo check).
    struct Context<'a> {
        source_identity: Option<&'a str>,
        identity_store_user: Option<&'a str>,
        principal_account: Option<&'a str>,
        token_issue_time: Option<OffsetDateTime>,
    }

    impl Context<'_> {
        fn value(&self, key: &str) -> Option<String> {
            // Condition keys are case-insensitive.
            match key.to_ascii_lowercase().as_str() {
                "aws:sourceidentity" => self.source_identity.map(str::to_owned),
                "identitystore:userid" => self.identity_store_user.map(str::to_owned),
                "aws:principalaccount" => self.principal_account.map(str::to_owned),
                "aws:tokenissuetime" => self.token_issue_time.and_then(|t| t.format(&Rfc3339).ok()),
                _ => None,
            }
        }
    }

    /// IAM's evaluation of one statement's `Condition` block, for the two
    /// operators the broker uses: every operator must match (AND), within an
    /// operator every key (AND), for a key any listed value (OR); a key
    /// missing from the request makes its operator false.
    fn conditions_match(statement: &Value, ctx: &Context<'_>) -> bool {
        let Some(block) = statement.get("Condition").and_then(Value::as_object) else {
            return true;
        };
        block.iter().all(|(operator, keys)| {
            keys.as_object().unwrap().iter().all(|(key, wanted)| {
                let wanted: Vec<&str> = match wanted {
                    Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                    one => vec![one.as_str().unwrap()],
                };
                let Some(actual) = ctx.value(key) else {
                    return false;
                };
                match operator.as_str() {
                    "StringEquals" => wanted.contains(&actual.as_str()),
                    "DateLessThan" => {
                        let actual = OffsetDateTime::parse(&actual, &Rfc3339).unwrap();
                        wanted
                            .iter()
                            .any(|w| actual < OffsetDateTime::parse(w, &Rfc3339).unwrap())
                    }
                    other => panic!("operator `{other}` is not evaluated here"),
                }
            })
        })
    }

    /// Whether a request is denied by any Deny statement of `document`
    /// (`Action` and `Resource` are `*` in all of the broker's).
    fn denied(document: &str, ctx: &Context<'_>) -> bool {
        let doc: Value = serde_json::from_str(document).unwrap();
        doc["Statement"].as_array().unwrap().iter().any(|s| {
            s["Effect"] == "Deny"
                && s["Action"] == "*"
                && s["Resource"] == "*"
                && conditions_match(s, ctx)
        })
    }

    const CUT: OffsetDateTime = datetime!(2026-05-07 23:47:00 UTC);

    #[test]
    fn the_statement_is_exactly_this() {
        let s = statement(Who::SourceIdentity("alice@example.com"), CUT);
        assert_eq!(
            s.to_string(),
            r#"{"Sid":"jitca8b18d6d5e69971","Effect":"Deny","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:SourceIdentity":"alice@example.com"},"DateLessThan":{"aws:TokenIssueTime":"2026-05-07T23:47:00Z"}}}"#
        );
        let s = statement(
            Who::IdentityStoreUser {
                user: "906722b2b4-0a8b",
                account: "111111111111",
            },
            CUT,
        );
        assert_eq!(
            s.to_string(),
            r#"{"Sid":"jit0743df915852ceea","Effect":"Deny","Action":"*","Resource":"*","Condition":{"StringEquals":{"identitystore:userId":"906722b2b4-0a8b","aws:PrincipalAccount":"111111111111"},"DateLessThan":{"aws:TokenIssueTime":"2026-05-07T23:47:00Z"}}}"#
        );
        let s = statement(Who::Everyone, CUT);
        assert_eq!(
            s.to_string(),
            r#"{"Sid":"jitAll","Effect":"Deny","Action":"*","Resource":"*","Condition":{"DateLessThan":{"aws:TokenIssueTime":"2026-05-07T23:47:00Z"}}}"#
        );
        let merged = merge(
            None,
            Some((Who::SourceIdentity("alice@example.com"), CUT)),
            CUT,
            Duration::HOUR,
        )
        .unwrap();
        assert_eq!(
            merged.document.as_deref(),
            Some(
                r#"{"Version":"2012-10-17","Statement":[{"Sid":"jitca8b18d6d5e69971","Effect":"Deny","Action":"*","Resource":"*","Condition":{"StringEquals":{"aws:SourceIdentity":"alice@example.com"},"DateLessThan":{"aws:TokenIssueTime":"2026-05-07T23:47:00Z"}}}]}"#
            )
        );
    }

    #[test]
    fn the_deny_ends_that_persons_older_sessions_only() {
        let doc = merge(
            None,
            Some((Who::SourceIdentity("alice@example.com"), CUT)),
            CUT,
            Duration::HOUR,
        )
        .unwrap()
        .document
        .unwrap();
        let alice = |issued| Context {
            source_identity: Some("alice@example.com"),
            identity_store_user: None,
            principal_account: Some("111111111111"),
            token_issue_time: Some(issued),
        };
        assert!(denied(&doc, &alice(CUT - Duration::minutes(30))));
        assert!(denied(&doc, &alice(CUT - Duration::SECOND)));
        // Issued at or after the cutoff (a new grant): allowed.
        assert!(!denied(&doc, &alice(CUT)));
        assert!(!denied(&doc, &alice(CUT + Duration::minutes(5))));
        // Someone else's session, or none with a source identity: allowed.
        let bob = Context {
            source_identity: Some("bob@example.com"),
            ..alice(CUT - Duration::minutes(30))
        };
        assert!(!denied(&doc, &bob));
        let anonymous = Context {
            source_identity: None,
            ..alice(CUT - Duration::minutes(30))
        };
        assert!(!denied(&doc, &anonymous));
        // Long-term keys carry no issue time: not a session, not matched.
        let long_term = Context {
            token_issue_time: None,
            ..alice(CUT - Duration::minutes(30))
        };
        assert!(!denied(&doc, &long_term));

        // Identity Center: the user id instead of the source identity.
        let doc = merge(
            None,
            Some((
                Who::IdentityStoreUser {
                    user: "u-1",
                    account: "111111111111",
                },
                CUT,
            )),
            CUT,
            Duration::HOUR,
        )
        .unwrap()
        .document
        .unwrap();
        let user = |id, account, issued| Context {
            source_identity: None,
            identity_store_user: Some(id),
            principal_account: Some(account),
            token_issue_time: Some(issued),
        };
        let early = CUT - Duration::minutes(1);
        assert!(denied(&doc, &user("u-1", "111111111111", early)));
        assert!(!denied(
            &doc,
            &user("u-1", "111111111111", CUT + Duration::minutes(1))
        ));
        assert!(!denied(&doc, &user("u-2", "111111111111", early)));
        // The same permission set in another account: untouched.
        assert!(!denied(&doc, &user("u-1", "222222222222", early)));

        // Everyone: any session issued before the cutoff.
        let doc = merge(None, Some((Who::Everyone, CUT)), CUT, Duration::HOUR)
            .unwrap()
            .document
            .unwrap();
        assert!(denied(&doc, &bob));
        assert!(!denied(&doc, &alice(CUT + Duration::SECOND)));
    }

    #[test]
    fn cutoffs_cover_the_current_second_and_never_move_back() {
        assert_eq!(cutoff_after(datetime!(2026-05-07 23:46:59.250 UTC)), CUT);
        assert_eq!(cutoff_after(CUT), CUT);
        let alice = Who::SourceIdentity("alice@example.com");
        let first = merge(None, Some((alice, CUT)), CUT, Duration::HOUR).unwrap();
        let earlier = merge(
            first.document.as_deref(),
            Some((alice, CUT - Duration::minutes(5))),
            CUT,
            Duration::HOUR,
        )
        .unwrap();
        assert_eq!(earlier.document, first.document, "the later cutoff stays");
        assert!(!earlier.changed);
        let later = merge(
            first.document.as_deref(),
            Some((alice, CUT + Duration::minutes(5))),
            CUT,
            Duration::HOUR,
        )
        .unwrap();
        assert_eq!(later.denies, 1, "one statement per person");
        assert!(later.document.unwrap().contains("23:52:00Z"));
    }

    #[test]
    fn the_operators_statements_are_kept_and_expired_denies_pruned() {
        let operator = r#"{"Version":"2012-10-17","Statement":[
            {"Sid":"ReadOnly","Effect":"Allow","Action":"s3:Get*","Resource":"*"},
            {"Effect":"Deny","Action":"iam:*","Resource":"*"}]}"#;
        let merged = merge(
            Some(operator),
            Some((
                Who::IdentityStoreUser {
                    user: "u-1",
                    account: "111111111111",
                },
                CUT,
            )),
            CUT,
            Duration::HOUR,
        )
        .unwrap();
        let doc: Value = serde_json::from_str(merged.document.as_deref().unwrap()).unwrap();
        let list = doc["Statement"].as_array().unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0]["Sid"], "ReadOnly");
        assert_eq!(list[1]["Action"], "iam:*");
        assert_eq!(merged.denies, 1);
        assert_eq!(merged.next_expiry, Some(CUT + Duration::HOUR));

        // A second person, later; then the first expires.
        let two = merge(
            merged.document.as_deref(),
            Some((
                Who::IdentityStoreUser {
                    user: "u-2",
                    account: "111111111111",
                },
                CUT + Duration::minutes(30),
            )),
            CUT + Duration::minutes(30),
            Duration::HOUR,
        )
        .unwrap();
        assert_eq!((two.denies, two.pruned), (2, 0));
        let pruned = merge(
            two.document.as_deref(),
            None,
            CUT + Duration::HOUR,
            Duration::HOUR,
        )
        .unwrap();
        assert_eq!((pruned.denies, pruned.pruned), (1, 1));
        assert!(pruned.changed);
        assert_eq!(
            pruned.next_expiry,
            Some(CUT + Duration::minutes(90)),
            "the second one's"
        );
        let all_gone = merge(
            pruned.document.as_deref(),
            None,
            CUT + Duration::hours(2),
            Duration::HOUR,
        )
        .unwrap();
        assert_eq!(all_gone.denies, 0);
        let left: Value = serde_json::from_str(all_gone.document.as_deref().unwrap()).unwrap();
        assert_eq!(
            left["Statement"].as_array().unwrap().len(),
            2,
            "the operator's stay"
        );
        // Nothing of the broker's and nothing else: the policy goes.
        let own_only = merge(None, Some((Who::Everyone, CUT)), CUT, Duration::HOUR).unwrap();
        let gone = merge(
            own_only.document.as_deref(),
            None,
            CUT + Duration::HOUR,
            Duration::HOUR,
        )
        .unwrap();
        assert_eq!(gone.document, None);
        assert!(gone.changed);

        for bad in ["[1]", "not json", r#"{"Statement":"x"}"#] {
            assert!(
                merge(Some(bad), None, CUT, Duration::HOUR).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_budget_falls_back_to_everyone() {
        let mut doc: Option<String> = None;
        let mut fell_back = 0;
        for i in 0..500 {
            let email = format!("user-{i:03}@example.com");
            let now = CUT + Duration::seconds(i);
            let (merged, everyone) = merge_within_budget(
                doc.as_deref(),
                Who::SourceIdentity(&email),
                cutoff_after(now),
                now,
                Duration::HOUR,
            )
            .unwrap();
            assert!(merged.size <= POLICY_BUDGET, "{i}: {}", merged.size);
            if everyone {
                fell_back += 1;
                // Everyone's deny covers every earlier person's.
                assert_eq!(merged.denies, 1);
            }
            doc = merged.document;
        }
        assert!((5..=20).contains(&fell_back), "{fell_back}");
        // White space does not count.
        assert_eq!(policy_size("{ \"a\" :\n 1 }"), 7);
        // A policy of the operator's that leaves no room is an error, not a clobber.
        let big = format!(
            r#"{{"Statement":[{{"Sid":"Big","Effect":"Allow","Action":"s3:*","Resource":"{}"}}]}}"#,
            "x".repeat(POLICY_BUDGET)
        );
        assert!(merge_within_budget(Some(&big), Who::Everyone, CUT, CUT, Duration::HOUR).is_err());
        let err = merge_within_budget(
            Some(&big),
            Who::IdentityStoreUser {
                user: "u-1",
                account: "111111111111",
            },
            CUT,
            CUT,
            Duration::HOUR,
        )
        .unwrap_err();
        assert!(err.contains("operator's own statements"), "{err}");
    }
}
