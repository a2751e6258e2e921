//! API bearer tokens (what `jit` sends): JWT access tokens from the provider, checked against
//! its JWKS.
//!
//! Refused, before any key is used: anything but three base64url parts, tokens over
//! [`MAX_TOKEN_LEN`], algorithms outside [`ALLOWED_ALGORITHMS`](super::ALLOWED_ALGORITHMS)
//! (`none` and HMAC never), headers carrying or pointing at keys (`jwk`, `jku`, `x5u`, `x5c`),
//! `crit`, encrypted tokens, a `typ` other than `JWT` / `at+jwt`, a missing `kid`. Then: the key
//! named by `kid` (unknown `kid`s refresh the keys at most once per
//! [`MIN_REFRESH_INTERVAL`](super::MIN_REFRESH_INTERVAL)), whose JWK must allow the header's
//! `alg`; the signature; `iss` exactly; `aud` containing `oidc.api_audience` and not the web
//! client (that is an ID token); `exp` / `nbf` / `iat` with [`LEEWAY`]; no `nonce`, `at_hash`,
//! `c_hash` (ID token claims); no app-only token; the required scope in `scp` or `scope`; the
//! pinned tenant.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::claims::shown;
use super::keys::{ALLOWED_ALGORITHMS, KeyLookup};
use super::{AuthError, SetupError, Shared};
use crate::config::OidcConfig;
use crate::domain::User;

/// Longest token accepted (Entra access tokens are a few KiB, even with 200 groups).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY: i64 = 60;

/// Header parameters that carry or point at keys; tokens naming them are refused, never followed.
const KEY_HEADERS: [&str; 5] = ["jwk", "jku", "x5u", "x5c", "crit"];
/// Header parameters of encrypted tokens (JWE) or compressed payloads.
const JWE_HEADERS: [&str; 2] = ["enc", "zip"];
/// Claims only ID tokens carry.
const ID_TOKEN_CLAIMS: [&str; 3] = ["nonce", "at_hash", "c_hash"];

/// Validates API bearer tokens.
pub struct BearerValidator {
    shared: Arc<Shared>,
    audience: String,
    /// The web client's id, when it is not also the API's: a token for it is an ID token.
    web_client_id: Option<String>,
    required_scope: Option<String>,
}

impl BearerValidator {
    /// One app registration may be both the web client and the API (Entra v2.0 access tokens
    /// then carry the client id as `aud`, like ID tokens): the required scope, which ID tokens
    /// never carry, must then be set.
    pub(crate) fn new(shared: Arc<Shared>, config: &OidcConfig) -> Result<Self, SetupError> {
        let required_scope = config
            .required_scope
            .clone()
            .filter(|s| !s.trim().is_empty());
        let same_app = config.api_audience == config.client_id;
        if same_app && required_scope.is_none() {
            return Err(SetupError::invalid(
                "oidc.required_scope",
                "must be set when `api_audience` is the web `client_id` (it tells access tokens from ID tokens)",
            ));
        }
        Ok(Self {
            shared,
            audience: config.api_audience.clone(),
            web_client_id: (!same_app).then(|| config.client_id.clone()),
            required_scope,
        })
    }

    /// The user behind `token` (the value after `Bearer `), or why it is refused.
    pub async fn validate(&self, token: &str) -> Result<User, AuthError> {
        let (alg, kid) = check_header(token)?;
        let key = self.shared.keys.find(&kid).await.map_err(|e| match e {
            KeyLookup::Unknown {
                refresh_failed,
                rate_limited,
            } => AuthError::invalid(format!(
                "unknown signing key {}{}",
                shown(&kid),
                match (refresh_failed, rate_limited) {
                    (Some(reason), _) => format!(" (key refresh failed: {reason})"),
                    (None, true) => " (keys refreshed recently, not refetched)".to_owned(),
                    (None, false) => String::new(),
                }
            )),
        })?;
        if !key.algorithms.contains(&alg) {
            return Err(AuthError::invalid(format!(
                "algorithm {alg:?} is not the one of key {}",
                shown(&kid)
            )));
        }
        let mut validation = Validation::new(alg);
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| AuthError::invalid(format!("signature or payload refused: {e}")))?
            .claims;
        let rules = ClaimRules {
            issuer: self.shared.discovery.issuer(),
            audience: &self.audience,
            web_client_id: self.web_client_id.as_deref(),
            required_scope: self.required_scope.as_deref(),
        };
        check_claims(&claims, &rules, self.shared.clock.now().unix_timestamp())?;
        self.shared.user(&claims).await
    }
}

/// What a signed token's claims must satisfy.
struct ClaimRules<'a> {
    issuer: &'a str,
    audience: &'a str,
    /// The web client's id, when it is not also the API's: a token for it is an ID token.
    web_client_id: Option<&'a str>,
    required_scope: Option<&'a str>,
}

/// The claim checks, at `now` (Unix seconds).
fn check_claims(
    claims: &Map<String, Value>,
    rules: &ClaimRules<'_>,
    now: i64,
) -> Result<(), AuthError> {
    match claims.get("iss").and_then(Value::as_str) {
        Some(iss) if iss == rules.issuer => {}
        Some(iss) => {
            return Err(AuthError::invalid(format!(
                "issuer {} is not ours",
                shown(iss)
            )));
        }
        None => return Err(AuthError::invalid("token has no `iss`")),
    }
    let audiences = audiences(claims.get("aud"))
        .ok_or_else(|| AuthError::invalid("token has no usable `aud`"))?;
    if let Some(web) = rules.web_client_id
        && audiences.contains(&web)
    {
        return Err(AuthError::invalid(
            "`aud` is the web client: an ID token presented as an access token",
        ));
    }
    if !audiences.contains(&rules.audience) {
        return Err(AuthError::invalid(format!(
            "audience {} is not the API",
            shown(&audiences.join(" "))
        )));
    }
    if let Some(claim) = ID_TOKEN_CLAIMS.iter().find(|c| claims.contains_key(**c)) {
        return Err(AuthError::invalid(format!(
            "token has `{claim}`: an ID token presented as an access token"
        )));
    }
    let exp = time_claim(claims, "exp")?.ok_or_else(|| AuthError::invalid("token has no `exp`"))?;
    if now > exp.saturating_add(LEEWAY) {
        return Err(AuthError::invalid(format!(
            "token expired {} s ago",
            now.saturating_sub(exp)
        )));
    }
    if let Some(nbf) = time_claim(claims, "nbf")?
        && now.saturating_add(LEEWAY) < nbf
    {
        return Err(AuthError::invalid("token is not valid yet (`nbf`)"));
    }
    if let Some(iat) = time_claim(claims, "iat")?
        && iat > now.saturating_add(LEEWAY)
    {
        return Err(AuthError::invalid("token is issued in the future (`iat`)"));
    }
    if claims.get("idtyp").and_then(Value::as_str) == Some("app") {
        return Err(AuthError::invalid("app-only token: a user is required"));
    }
    if let Some(required) = rules.required_scope
        && !granted_scopes(claims).any(|s| s == required)
    {
        return Err(AuthError::invalid(format!(
            "scope `{required}` was not granted"
        )));
    }
    Ok(())
}

/// Structural checks on the raw token and its header; returns the algorithm and the `kid`.
fn check_header(token: &str) -> Result<(Algorithm, String), AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::invalid(format!(
            "token is longer than {MAX_TOKEN_LEN} bytes"
        )));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(AuthError::invalid(format!(
            "token has {} parts, a signed JWT has 3",
            parts.len()
        )));
    }
    if parts.iter().any(|p| p.is_empty()) {
        return Err(AuthError::invalid("token has an empty part"));
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(AuthError::invalid("token is not base64url"));
    }
    let header = json_object(parts[0])
        .ok_or_else(|| AuthError::invalid("token header is not a JSON object"))?;
    if let Some(name) = KEY_HEADERS.iter().find(|h| header.contains_key(**h)) {
        return Err(AuthError::invalid(format!(
            "token header has `{name}` (keys are only taken from the provider's JWKS)"
        )));
    }
    if let Some(name) = JWE_HEADERS.iter().find(|h| header.contains_key(**h)) {
        return Err(AuthError::invalid(format!("token header has `{name}`")));
    }
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::invalid("token header has no `alg`"))?;
    let alg = alg_name
        .parse::<Algorithm>()
        .ok()
        .filter(|a| ALLOWED_ALGORITHMS.contains(a))
        .ok_or_else(|| {
            AuthError::invalid(format!("algorithm {} is not allowed", shown(alg_name)))
        })?;
    match header.get("typ") {
        None => {}
        Some(Value::String(typ))
            if ["jwt", "at+jwt", "application/at+jwt"]
                .contains(&typ.to_ascii_lowercase().as_str()) => {}
        Some(other) => {
            return Err(AuthError::invalid(format!(
                "token type {} is not an access token",
                shown(&other.to_string())
            )));
        }
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| AuthError::invalid("token header has no `kid`"))?;
    Ok((alg, kid.to_owned()))
}

/// A base64url (unpadded) JSON object, as the header and the claims are encoded.
fn json_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Rules [`fuzz_parse`] checks claims against.
const FUZZ_RULES: ClaimRules<'static> = ClaimRules {
    issuer: "https://login.example/tenant/v2.0",
    audience: "api://jit",
    web_client_id: Some("jit-web"),
    required_scope: Some("access"),
};

/// Entry point for the `bearer` fuzz target (fuzz/), not for the broker: the checks
/// [`BearerValidator::validate`] makes without any key, run on an *unverified* token. The
/// header checks, then the claims part decoded (base64url JSON object) and checked at `now`
/// against fixed rules (issuer `https://login.example/tenant/v2.0`, audience `api://jit`, web
/// client `jit-web`, scope `access`). `Ok` says nothing about the token's authenticity.
///
/// # Errors
/// Why the token is refused, as `validate` would refuse it.
#[doc(hidden)]
pub fn fuzz_parse(token: &str, now: i64) -> Result<(), AuthError> {
    check_header(token)?;
    let claims = token
        .split('.')
        .nth(1)
        .and_then(json_object)
        .ok_or_else(|| AuthError::invalid("token claims are not a JSON object"))?;
    check_claims(&claims, &FUZZ_RULES, now)
}

/// `aud` as a string or an array of strings; `None` when absent, empty or of another type.
fn audiences(aud: Option<&Value>) -> Option<Vec<&str>> {
    let list: Vec<&str> = match aud? {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    let list: Vec<&str> = list.into_iter().filter(|a| !a.is_empty()).collect();
    (!list.is_empty()).then_some(list)
}

/// A `NumericDate` claim: absent is `None`, anything but a number is an error.
fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "NumericDate seconds fit an i64"
                )]
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or_else(|| AuthError::invalid(format!("`{name}` is not a time"))),
        Some(_) => Err(AuthError::invalid(format!("`{name}` is not a number"))),
    }
}

/// Granted scopes: the `scp` claim as Entra writes it (space-separated), RFC 9068 `scope`
/// (space-separated, or an array as some providers write it).
fn granted_scopes(claims: &Map<String, Value>) -> impl Iterator<Item = &str> {
    ["scp", "scope"]
        .into_iter()
        .filter_map(|name| claims.get(name))
        .flat_map(|value| {
            let items: Vec<&str> = match value {
                Value::String(s) => s.split(' ').filter(|s| !s.is_empty()).collect(),
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            items
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn token(header: &Value) -> String {
        format!("{}.{}.c2ln", b64(header), b64(&json!({})))
    }

    #[test]
    fn headers_that_carry_keys_or_bad_algorithms_are_refused() {
        let ok = token(&json!({"alg": "RS256", "kid": "k", "typ": "at+jwt"}));
        assert_eq!(
            check_header(&ok).unwrap(),
            (Algorithm::RS256, "k".to_owned())
        );
        for header in [
            json!({"alg": "none", "kid": "k"}),
            json!({"alg": "HS256", "kid": "k"}),
            json!({"alg": "EdDSA", "kid": "k"}),
            json!({"alg": "rs256", "kid": "k"}),
            json!({"kid": "k"}),
            json!({"alg": "RS256"}),
            json!({"alg": "RS256", "kid": ""}),
            json!({"alg": "RS256", "kid": 7}),
            json!({"alg": "RS256", "kid": "k", "jku": "http://127.0.0.1/jwks"}),
            json!({"alg": "RS256", "kid": "k", "x5u": "http://127.0.0.1/cert"}),
            json!({"alg": "RS256", "kid": "k", "jwk": {"kty": "RSA"}}),
            json!({"alg": "RS256", "kid": "k", "x5c": ["MII"]}),
            json!({"alg": "RS256", "kid": "k", "crit": ["exp"]}),
            json!({"alg": "RS256", "kid": "k", "enc": "A256GCM"}),
            json!({"alg": "RS256", "kid": "k", "typ": "JWE"}),
            json!({"alg": "RS256", "kid": "k", "typ": 1}),
            json!(["alg", "RS256"]),
        ] {
            assert!(check_header(&token(&header)).is_err(), "{header}");
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let ok = token(&json!({"alg": "RS256", "kid": "k"}));
        let two: Vec<&str> = ok.split('.').collect();
        for bad in [
            String::new(),
            "a".to_owned(),
            format!("{}.{}", two[0], two[1]),
            format!("{ok}.x"),
            format!("{}.{}.", two[0], two[1]),
            format!("{ok} "),
            format!("{}=.{}.x", two[0], two[1]),
            "!!!.e30.x".to_owned(),
            "x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(check_header(&bad).is_err(), "{bad:.40}");
        }
    }

    #[test]
    fn scopes_from_scp_or_scope() {
        let c = json!({"scp": "read access"});
        assert!(granted_scopes(c.as_object().unwrap()).any(|s| s == "access"));
        let c = json!({"scope": ["access"]});
        assert!(granted_scopes(c.as_object().unwrap()).any(|s| s == "access"));
        let c = json!({"scope": "accessible"});
        assert!(!granted_scopes(c.as_object().unwrap()).any(|s| s == "access"));
    }

    #[test]
    fn audience_shapes() {
        assert_eq!(audiences(Some(&json!("a"))), Some(vec!["a"]));
        assert_eq!(audiences(Some(&json!(["a", 1, "b"]))), Some(vec!["a", "b"]));
        assert_eq!(audiences(Some(&json!(""))), None);
        assert_eq!(audiences(Some(&json!([]))), None);
        assert_eq!(audiences(Some(&json!(3))), None);
        assert_eq!(audiences(None), None);
    }

    fn unsigned(claims: &Value) -> String {
        format!(
            "{}.{}.c2ln",
            b64(&json!({"alg": "RS256", "kid": "k"})),
            b64(claims)
        )
    }

    #[test]
    fn claims_are_checked_against_the_rules() {
        let now = 1_800_000_000;
        let good = json!({
            "iss": FUZZ_RULES.issuer, "aud": "api://jit", "exp": now + 600, "scp": "access",
        });
        fuzz_parse(&unsigned(&good), now).unwrap();
        for (name, value) in [
            ("iss", json!("https://evil.example")),
            ("aud", json!(["api://jit", "jit-web"])),
            ("aud", json!(7)),
            ("exp", json!(now - 61)),
            ("exp", json!("soon")),
            ("nbf", json!(now + 61)),
            ("iat", json!(now + 61)),
            ("nonce", json!("n")),
            ("idtyp", json!("app")),
            ("scp", json!("read")),
        ] {
            let mut claims = good.clone();
            claims[name] = value;
            assert!(fuzz_parse(&unsigned(&claims), now).is_err(), "{claims}");
        }
        assert!(
            fuzz_parse(
                &format!("{}.e30x.c2ln", b64(&json!({"alg": "RS256", "kid": "k"}))),
                now
            )
            .is_err()
        );
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let claims = |exp: Value| {
            unsigned(
                &json!({"iss": FUZZ_RULES.issuer, "aud": "api://jit", "exp": exp, "scp": "access"}),
            )
        };
        assert!(fuzz_parse(&claims(json!(i64::MIN)), i64::MAX).is_err());
        assert!(fuzz_parse(&claims(json!(-1e300)), 0).is_err());
        // Saturates to the far future: never expires, but no panic either.
        fuzz_parse(&claims(json!(u64::MAX)), i64::MAX).unwrap();
        fuzz_parse(&claims(json!(1e300)), i64::MIN).unwrap();
    }
}
