//! Pure checks of what the broker sends to AWS.
//!
//! moto accepts almost anything (bad session names, 12-hour sessions on
//! 1-hour roles, malformed policies), so the broker enforces the documented
//! STS and Identity Center limits itself, before any call.

use sha2::{Digest, Sha256};

use crate::policy::catalog::{MAX_SESSION_POLICY, MAX_STS_SECONDS, MIN_STS_SECONDS};

/// Longest `RoleSessionName` / `SourceIdentity`.
pub const MAX_SESSION_NAME: usize = 64;
/// Shortest `RoleSessionName` / `SourceIdentity`.
pub const MIN_SESSION_NAME: usize = 2;
/// Longest session tag value.
pub const MAX_TAG_VALUE: usize = 256;
/// Longest session tag key.
pub const MAX_TAG_KEY: usize = 128;
/// Longest STS session of role-chained credentials (the broker running on role credentials).
pub const MAX_CHAINED_SECONDS: u64 = 3600;

/// Length of the STS session the caller should ask for.
///
/// The session ends with the grant or at the entitlement's session cap,
/// whichever comes first, but is never shorter than the STS minimum of 900 s
/// (so a session minted in the last 15 minutes of a grant outlives it by up
/// to that much; revoke-all-sessions covers early revocation) and never
/// longer than the STS maximum of 12 h. The caller must not mint at all once
/// the grant has ended (`left_secs == 0`).
pub fn sts_session_seconds(left_secs: u64, cap_secs: u64) -> u64 {
    left_secs
        .min(cap_secs)
        .clamp(MIN_STS_SECONDS, MAX_STS_SECONDS)
}

/// True for the characters of AWS's `[\w+=,.@-]` (ASCII word characters).
fn is_session_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
}

/// Checks a `RoleSessionName` or `SourceIdentity`: 2–64 characters of `[\w+=,.@-]`.
pub fn validate_session_name(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if !(MIN_SESSION_NAME..=MAX_SESSION_NAME).contains(&len) {
        return Err(format!(
            "session name `{name}` must be {MIN_SESSION_NAME}-{MAX_SESSION_NAME} characters"
        ));
    }
    if let Some(bad) = name.chars().find(|c| !is_session_name_char(*c)) {
        return Err(format!(
            "session name `{name}` contains `{bad}` (allowed: letters, digits and _+=,.@-)"
        ));
    }
    if name.starts_with("aws:") {
        return Err(format!("session name `{name}` must not start with `aws:`"));
    }
    Ok(())
}

/// The `RoleSessionName` (and `SourceIdentity`) for a grantee, derived from
/// their email.
///
/// A valid email is used as is (`alice@example.com`). Anything else has each
/// disallowed character replaced by `_`, is cut to 55 characters and gets
/// `-` plus 8 hex digits of the email's SHA-256 appended, so two different
/// emails never share a name and the result is always valid and stable.
pub fn session_name(email: &str) -> String {
    if validate_session_name(email).is_ok() {
        return email.to_owned();
    }
    let digest = Sha256::digest(email.as_bytes());
    let suffix = hex::encode(&digest[..4]);
    let keep = MAX_SESSION_NAME - 1 - suffix.len();
    let mut name: String = email
        .chars()
        .map(|c| if is_session_name_char(c) { c } else { '_' })
        .take(keep)
        .collect();
    name.push('-');
    name.push_str(&suffix);
    name
}

/// True for a character of the session tag charset `[\p{L}\p{Z}\p{N}_.:/=+\-@]`.
///
/// The broker accepts the ASCII part of it (letters, digits, space and
/// `_.:/=+-@`) plus non-ASCII letters and numbers; that is a subset of what
/// AWS accepts, so whatever passes here passes there.
fn is_tag_char(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric()
            || matches!(c, ' ' | '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
    } else {
        c.is_alphanumeric() && !c.is_control()
    }
}

/// Checks a session tag key: 1–128 characters of the tag charset.
pub fn validate_tag_key(key: &str) -> Result<(), String> {
    let len = key.chars().count();
    if !(1..=MAX_TAG_KEY).contains(&len) {
        return Err(format!(
            "session tag key `{key}` must be 1-{MAX_TAG_KEY} characters"
        ));
    }
    if let Some(bad) = key.chars().find(|c| !is_tag_char(*c)) {
        return Err(format!("session tag key `{key}` contains `{bad}`"));
    }
    Ok(())
}

/// Checks a session tag value: at most 256 characters of the tag charset.
pub fn validate_tag_value(value: &str) -> Result<(), String> {
    if value.chars().count() > MAX_TAG_VALUE {
        return Err(format!(
            "session tag value is longer than {MAX_TAG_VALUE} characters"
        ));
    }
    if let Some(bad) = value.chars().find(|c| !is_tag_char(*c)) {
        return Err(format!("session tag value `{value}` contains `{bad}`"));
    }
    Ok(())
}

/// A session tag value made from free text: disallowed characters become
/// `_`, and it is cut to 256 characters.
pub fn tag_value(text: &str) -> String {
    text.chars()
        .map(|c| if is_tag_char(c) { c } else { '_' })
        .take(MAX_TAG_VALUE)
        .collect()
}

/// Checks an inline session policy: valid JSON, at most 2,048 characters,
/// only U+0020–U+00FF plus tab, LF and CR.
pub fn validate_session_policy(policy: &str) -> Result<(), String> {
    if policy.chars().count() > MAX_SESSION_POLICY {
        return Err(format!(
            "session policy is longer than {MAX_SESSION_POLICY} characters"
        ));
    }
    if let Some(bad) = policy
        .chars()
        .find(|c| !matches!(*c, '\t' | '\n' | '\r' | '\u{20}'..='\u{ff}'))
    {
        return Err(format!(
            "session policy contains the character U+{:04X}, outside U+0020-U+00FF",
            u32::from(bad)
        ));
    }
    let value: serde_json::Value = serde_json::from_str(policy)
        .map_err(|e| format!("session policy is not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err("session policy must be a JSON object".to_owned());
    }
    Ok(())
}

/// Checks an STS `DurationSeconds`: 900–43,200.
pub fn validate_duration(seconds: u64) -> Result<(), String> {
    if (MIN_STS_SECONDS..=MAX_STS_SECONDS).contains(&seconds) {
        Ok(())
    } else {
        Err(format!(
            "session duration {seconds}s is outside {MIN_STS_SECONDS}-{MAX_STS_SECONDS}s"
        ))
    }
}

/// The parts of an IAM role ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn<'a> {
    /// `aws`, `aws-cn`, `aws-us-gov`…
    pub partition: &'a str,
    /// 12-digit account id.
    pub account: &'a str,
    /// Role name (the part after the last `/`).
    pub name: &'a str,
}

/// Parses and checks `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`.
pub fn parse_role_arn(arn: &str) -> Result<RoleArn<'_>, String> {
    let bad = |why: &str| format!("role ARN `{arn}` {why}");
    if !(20..=2048).contains(&arn.len()) {
        return Err(bad("must be 20-2048 characters"));
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ["arn", partition, "iam", "", account, resource] = parts.as_slice() else {
        return Err(bad(
            "is not of the form arn:aws:iam::123456789012:role/Name",
        ));
    };
    if !(*partition == "aws"
        || partition.strip_prefix("aws-").is_some_and(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        }))
    {
        return Err(bad("has an unknown partition"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("must name a 12-digit account"));
    }
    let Some(path_and_name) = resource.strip_prefix("role/") else {
        return Err(bad("is not a role ARN"));
    };
    let name = path_and_name.rsplit('/').next().unwrap_or_default();
    if name.is_empty() || name.len() > 64 || !name.chars().all(is_session_name_char) {
        return Err(bad(
            "has an invalid role name (1-64 characters of letters, digits and _+=,.@-)",
        ));
    }
    let path = &path_and_name[..path_and_name.len() - name.len()];
    if !path
        .chars()
        .all(|c| c == '/' || ('\u{21}'..='\u{7e}').contains(&c))
    {
        return Err(bad("has an invalid path"));
    }
    Ok(RoleArn {
        partition,
        account,
        name,
    })
}

/// Checks an Identity Center instance ARN
/// (`arn:aws:sso:::instance/ssoins-…` or `ins-…`, 16 id characters).
pub fn validate_instance_arn(arn: &str) -> Result<(), String> {
    let ok = arn
        .split_once(":sso:::instance/")
        .is_some_and(|(head, id)| is_arn_head(head) && is_instance_id(id));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "instance ARN `{arn}` is not of the form arn:aws:sso:::instance/ssoins-0123456789abcdef"
        ))
    }
}

/// Checks a permission set ARN
/// (`arn:aws:sso:::permissionSet/ssoins-…/ps-…`, 16 id characters each).
pub fn validate_permission_set_arn(arn: &str) -> Result<(), String> {
    let ok = arn
        .split_once(":sso:::permissionSet/")
        .and_then(|(head, rest)| rest.split_once('/').map(|(ins, ps)| (head, ins, ps)))
        .is_some_and(|(head, ins, ps)| {
            is_arn_head(head) && is_instance_id(ins) && ps.strip_prefix("ps-").is_some_and(is_id16)
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "permission set ARN `{arn}` is not of the form arn:aws:sso:::permissionSet/ssoins-…/ps-…"
        ))
    }
}

/// Checks an AWS account id: exactly 12 digits.
pub fn validate_account_id(id: &str) -> Result<(), String> {
    if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("account id `{id}` must be 12 digits"))
    }
}

/// `arn:aws` with up to three `-xxxxx` partition suffixes.
fn is_arn_head(head: &str) -> bool {
    head.strip_prefix("arn:aws").is_some_and(|rest| {
        rest.is_empty()
            || rest.strip_prefix('-').is_some_and(|r| {
                let parts: Vec<&str> = r.split('-').collect();
                parts.len() <= 3
                    && parts.iter().all(|p| {
                        (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_lowercase())
                    })
            })
    })
}

/// `(sso)?ins-` followed by 16 id characters.
fn is_instance_id(id: &str) -> bool {
    id.strip_prefix("ssoins-")
        .or_else(|| id.strip_prefix("ins-"))
        .is_some_and(is_id16)
}

/// Exactly 16 of `[a-zA-Z0-9-.]`.
fn is_id16(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_seconds_follow_the_grant_and_the_cap() {
        // Plenty of grant left: the cap wins.
        assert_eq!(sts_session_seconds(4 * 3600, 3600), 3600);
        // Little grant left: the grant wins.
        assert_eq!(sts_session_seconds(1800, 3600), 1800);
        // Never below the STS minimum.
        assert_eq!(sts_session_seconds(60, 3600), 900);
        assert_eq!(sts_session_seconds(0, 3600), 900);
        assert_eq!(sts_session_seconds(3600, 600), 900);
        // Never above the STS maximum.
        assert_eq!(sts_session_seconds(u64::MAX, u64::MAX), 43_200);
        assert_eq!(sts_session_seconds(901, 43_200), 901);
    }

    #[test]
    fn plain_emails_are_session_names_as_they_are() {
        assert_eq!(session_name("alice@example.com"), "alice@example.com");
        assert_eq!(session_name("a.b+c=d,e_f-g@x.io"), "a.b+c=d,e_f-g@x.io");
    }

    #[test]
    fn odd_and_long_emails_are_sanitised_truncated_and_kept_distinct() {
        let odd = session_name("o'brien!#@example.com");
        assert!(odd.starts_with("o_brien__@example.com-"), "{odd}");
        assert_eq!(odd.len(), "o_brien__@example.com-".len() + 8);
        validate_session_name(&odd).unwrap();
        // Same after sanitising, different emails: different names.
        assert_ne!(session_name("o'brien@x.io"), session_name("o!brien@x.io"));
        // Stable.
        assert_eq!(odd, session_name("o'brien!#@example.com"));

        let long = format!("{}@example.com", "x".repeat(80));
        let name = session_name(&long);
        assert_eq!(name.len(), 64);
        validate_session_name(&name).unwrap();
        let other = session_name(&format!("{}@example.org", "x".repeat(80)));
        assert_ne!(name, other);

        let unicode = session_name("zoë@example.com");
        assert!(unicode.starts_with("zo_@example.com-"), "{unicode}");
        validate_session_name(&unicode).unwrap();

        for short in ["", "a"] {
            let name = session_name(short);
            validate_session_name(&name).unwrap();
        }
    }

    #[test]
    fn session_names_are_checked() {
        validate_session_name("ab").unwrap();
        validate_session_name(&"a".repeat(64)).unwrap();
        assert!(validate_session_name("a").unwrap_err().contains("2-64"));
        assert!(validate_session_name(&"a".repeat(65)).is_err());
        assert!(validate_session_name("a b").unwrap_err().contains("` `"));
        assert!(validate_session_name("a/b").is_err());
        assert!(validate_session_name("é@x").is_err());
    }

    #[test]
    fn tag_values_are_checked_and_sanitised() {
        validate_tag_key("jit:request-id").unwrap();
        validate_tag_key("jit:requester").unwrap();
        assert!(validate_tag_key("").is_err());
        assert!(validate_tag_key(&"k".repeat(129)).is_err());
        assert!(validate_tag_key("a,b").is_err());

        validate_tag_value("").unwrap();
        validate_tag_value("alice@example.com").unwrap();
        validate_tag_value("0190e5c2-7f4e-7a9b-8c1d-2e3f4a5b6c7d").unwrap();
        validate_tag_value("Zoë Ünal / team:sre = +1").unwrap();
        validate_tag_value(&"v".repeat(256)).unwrap();
        assert!(validate_tag_value(&"v".repeat(257)).is_err());
        assert!(validate_tag_value("o'brien@x").unwrap_err().contains("`'`"));
        assert!(validate_tag_value("a,b").is_err());
        assert!(validate_tag_value("a\nb").is_err());

        assert_eq!(tag_value("o'brien!@x.io"), "o_brien_@x.io");
        assert_eq!(tag_value(&"v".repeat(300)).len(), 256);
        validate_tag_value(&tag_value("a\u{0}b,c;d\"e")).unwrap();
    }

    #[test]
    fn session_policies_are_checked() {
        let good = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:Get*","Resource":"*"}]}"#;
        validate_session_policy(good).unwrap();
        validate_session_policy("{\n\t\"Version\": \"2012-10-17\"\r\n}").unwrap();
        assert!(
            validate_session_policy("{not json")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            validate_session_policy("[1]")
                .unwrap_err()
                .contains("object")
        );
        let long = format!(r#"{{"Sid":"{}"}}"#, "a".repeat(2048));
        assert!(validate_session_policy(&long).unwrap_err().contains("2048"));
        let exact = format!(r#"{{"Sid":"{}"}}"#, "a".repeat(2048 - 10));
        assert_eq!(exact.len(), 2048);
        validate_session_policy(&exact).unwrap();
        assert!(
            validate_session_policy(r#"{"Sid":"€"}"#)
                .unwrap_err()
                .contains("U+20AC")
        );
        validate_session_policy(r#"{"Sid":"ÿ"}"#).unwrap();
    }

    #[test]
    fn durations_are_checked() {
        validate_duration(900).unwrap();
        validate_duration(43_200).unwrap();
        assert!(validate_duration(899).is_err());
        assert!(validate_duration(43_201).is_err());
        assert!(validate_duration(0).is_err());
    }

    #[test]
    fn role_arns_are_parsed() {
        let arn = parse_role_arn("arn:aws:iam::123456789012:role/jit-admin").unwrap();
        assert_eq!(
            arn,
            RoleArn {
                partition: "aws",
                account: "123456789012",
                name: "jit-admin"
            }
        );
        let arn = parse_role_arn("arn:aws-us-gov:iam::123456789012:role/ops/team/Admin").unwrap();
        assert_eq!((arn.partition, arn.name), ("aws-us-gov", "Admin"));
        for bad in [
            "not-an-arn",
            "arn:aws:iam::12345678901:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:sts::123456789012:role/x",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a b",
            "arn:gcp:iam::123456789012:role/x",
            "arn:aws:iam:us-east-1:123456789012:role/x",
        ] {
            assert!(parse_role_arn(bad).is_err(), "{bad}");
        }
        let long = format!("arn:aws:iam::123456789012:role/{}", "n".repeat(65));
        assert!(parse_role_arn(&long).is_err());
    }

    #[test]
    fn identity_center_arns_are_checked() {
        validate_instance_arn("arn:aws:sso:::instance/ssoins-1111111111111111").unwrap();
        validate_instance_arn("arn:aws-us-gov:sso:::instance/ins-abcdefABCDEF0123").unwrap();
        assert!(validate_instance_arn("arn:aws:sso:::instance/ssoins-1").is_err());
        assert!(validate_instance_arn("arn:aws:iam:::instance/ssoins-1111111111111111").is_err());
        validate_permission_set_arn(
            "arn:aws:sso:::permissionSet/ssoins-1111111111111111/ps-2222222222222222",
        )
        .unwrap();
        assert!(validate_permission_set_arn("arn:aws:sso:::permissionSet/ssoins-1/ps-1").is_err());
        assert!(
            validate_permission_set_arn(
                "arn:aws:sso:::permissionSet/ssoins-1111111111111111/2222222222222222"
            )
            .is_err()
        );
        validate_account_id("123456789012").unwrap();
        assert!(validate_account_id("12345678901a").is_err());
        assert!(validate_account_id("1234567890123").is_err());
    }
}
