//! Step-up: the broker's RFC 9470 challenge (`401` with `WWW-Authenticate: Bearer
//! error="insufficient_user_authentication", acr_values="c1", max_age=3600`) read, and what
//! the next sign-in asks the identity provider for: the authentication context as Entra takes
//! it, the `claims` request parameter, and `max_age`.

use std::fmt;

/// What the broker wants of a new sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Authentication contexts (Entra ids like `c1`) the new token must list in `acrs`.
    pub acr_values: Vec<String>,
    /// The oldest sign-in accepted, seconds.
    pub max_age: Option<u64>,
}

impl Challenge {
    /// Reads the first `Bearer` challenge of a `WWW-Authenticate` value; `Some` only for
    /// `error="insufficient_user_authentication"`.
    pub fn parse(header: &str) -> Option<Self> {
        let params = bearer_params(header)?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        if get("error")? != "insufficient_user_authentication" {
            return None;
        }
        Some(Self {
            acr_values: get("acr_values")
                .unwrap_or_default()
                .split(' ')
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect(),
            max_age: get("max_age").and_then(|v| v.parse().ok()),
        })
    }

    /// The `claims` request parameter asking for the contexts in the access token (for the
    /// broker) and the ID token: `{"access_token":{"acrs":{"essential":true,"value":"c1"}},…}`;
    /// `None` when no context is asked for.
    pub fn claims(&self) -> Option<String> {
        let acrs = match self.acr_values.as_slice() {
            [] => return None,
            [one] => serde_json::json!({ "essential": true, "value": one }),
            many => serde_json::json!({ "essential": true, "values": many }),
        };
        Some(
            serde_json::json!({
                "access_token": { "acrs": acrs.clone() },
                "id_token": { "acrs": acrs },
            })
            .to_string(),
        )
    }

    /// The device authorization request's extra parameters: `claims`, `max_age`.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = Vec::new();
        if let Some(claims) = self.claims() {
            params.push(("claims", claims));
        }
        if let Some(max_age) = self.max_age {
            params.push(("max_age", max_age.to_string()));
        }
        params
    }
}

impl fmt::Display for Challenge {
    /// What the sign-in must show, for people.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.acr_values.as_slice() {
            [] => f.write_str("a recent sign-in with multi-factor authentication")?,
            [one] => write!(f, "authentication context `{one}`")?,
            many => write!(f, "authentication contexts `{}`", many.join("`, `"))?,
        }
        if let Some(max_age) = self.max_age {
            let age = crate::output::span(i64::try_from(max_age).unwrap_or(i64::MAX));
            write!(f, " (a sign-in at most {age} old)")?;
        }
        Ok(())
    }
}

/// The auth-params of the first `Bearer` challenge in `header` (RFC 9110 §11.2: `name=token`
/// or `name="quoted string"`, separated by commas).
fn bearer_params(header: &str) -> Option<Vec<(String, String)>> {
    let start = header
        .char_indices()
        .find(|&(i, _)| {
            header[i..]
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("bearer "))
                && (i == 0 || header[..i].trim_end().ends_with(','))
        })
        .map(|(i, _)| i + 7)?;
    let mut params = Vec::new();
    let mut rest = header[start..].trim_start();
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim().trim_start_matches(',').trim();
        if name.is_empty() || name.contains(' ') {
            // Another scheme begins (`Basic realm=…`): this challenge is over.
            break;
        }
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            out.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            value = out;
            rest = &quoted[end?..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        params.push((name.to_owned(), value));
        rest = rest.trim_start().trim_start_matches(',').trim_start();
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brokers_challenge_is_read() {
        let header = r#"Bearer realm="jit", error="insufficient_user_authentication", error_description="a sign-in with authentication context c1 is required", acr_values="c1", max_age=3600, claims="eyJhIjoxfQ==""#;
        let c = Challenge::parse(header).unwrap();
        assert_eq!(c.acr_values, ["c1"]);
        assert_eq!(c.max_age, Some(3600));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&c.claims().unwrap()).unwrap(),
            serde_json::json!({
                "access_token": {"acrs": {"essential": true, "value": "c1"}},
                "id_token": {"acrs": {"essential": true, "value": "c1"}},
            })
        );
        assert_eq!(
            c.params().iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            ["claims", "max_age"]
        );
        assert_eq!(
            c.to_string(),
            "authentication context `c1` (a sign-in at most 1h old)"
        );
    }

    #[test]
    fn other_challenges_are_not_step_ups() {
        for header in [
            r#"Bearer realm="jit""#,
            r#"Bearer error="invalid_token", error_description="expired""#,
            r#"Basic realm="x""#,
            "",
            "Bearer",
        ] {
            assert_eq!(Challenge::parse(header), None, "{header}");
        }
    }

    #[test]
    fn shapes_rfc_9470_allows() {
        // RFC 9470's own example: MFA, no context, unquoted and quoted values, other schemes.
        let c = Challenge::parse(
            r#"Basic realm="x", Bearer error="insufficient_user_authentication", error_description="A different authentication level is required", acr_values="myACR1 myACR2""#,
        )
        .unwrap();
        assert_eq!(c.acr_values, ["myACR1", "myACR2"]);
        assert_eq!(c.max_age, None);
        assert!(
            c.claims()
                .unwrap()
                .contains(r#""values":["myACR1","myACR2"]"#)
        );
        let c = Challenge::parse(
            r#"bearer error=insufficient_user_authentication, max_age=5, error_description="a \"quoted\", value""#,
        )
        .unwrap();
        assert!(c.acr_values.is_empty());
        assert_eq!(c.max_age, Some(5));
        assert_eq!(c.claims(), None);
        assert_eq!(c.params(), [("max_age", "5".to_owned())]);
        assert_eq!(
            c.to_string(),
            "a recent sign-in with multi-factor authentication (a sign-in at most 5s old)"
        );
    }
}
