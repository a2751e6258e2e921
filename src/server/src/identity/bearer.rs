//! API bearer tokens (what `jit` sends): JWT access tokens from the provider, checked against
//! its JWKS.
//!
//! Refused, before any key is used: anything but three base64url parts, tokens over
//! [`MAX_TOKEN_LEN`], a header or payload that is not one JSON object or names a member twice at
//! any depth ([`super::strict`]), algorithms outside
//! [`ALLOWED_ALGORITHMS`](super::ALLOWED_ALGORITHMS) (`none` and HMAC never), headers carrying
//! or pointing at keys (`jwk`, `jku`, `x5u`, `x5c`), `crit`, encrypted tokens, a `typ` other than
//! `JWT` / `at+jwt`, a missing `kid`. Then: the key named by `kid` (unknown `kid`s refresh the
//! keys at most once per [`MIN_REFRESH_INTERVAL`](super::MIN_REFRESH_INTERVAL)), whose JWK must
//! allow the header's `alg`; the signature; `iss` exactly; `aud` containing `oidc.api_audience`
//! and not the web client (that is an ID token); `exp` / `nbf` / `iat` as numbers, with
//! [`LEEWAY`], and `exp` at most `oidc.max_token_lifetime` after `iat`; no `nonce`, `at_hash`,
//! `c_hash` (ID token claims); no app-only token; the required scope in `scp` or `scope` (each
//! a space-separated string); the claims the broker reads with their exact types; the pinned
//! tenant.

use std::sync::Arc;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::claims::shown;
use super::keys::{ALLOWED_ALGORITHMS, KeyLookup};
use super::strict::{self, check_lifetime, numeric_date};
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
    /// `oidc.max_token_lifetime`, seconds.
    max_lifetime: i64,
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
            max_lifetime: max_lifetime(config),
        })
    }

    /// The user behind `token` (the value after `Bearer `), or why it is refused.
    pub async fn validate(&self, token: &str) -> Result<User, AuthError> {
        let Parsed { alg, kid, claims } = parse(token)?;
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
        // What was parsed above is what the signature covers: the claims are never read again.
        let (message, signature) = token
            .rsplit_once('.')
            .ok_or_else(|| AuthError::invalid("token has no signature"))?;
        match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.key, alg) {
            Ok(true) => {}
            Ok(false) => return Err(AuthError::invalid("signature does not verify")),
            Err(e) => return Err(AuthError::invalid(format!("signature refused: {e}"))),
        }
        let rules = ClaimRules {
            issuer: self.shared.discovery.issuer(),
            audience: &self.audience,
            web_client_id: self.web_client_id.as_deref(),
            required_scope: self.required_scope.as_deref(),
            max_lifetime: self.max_lifetime,
        };
        check_claims(&claims, &rules, self.shared.clock.now().unix_timestamp())?;
        self.shared.user(&claims).await
    }
}

/// `oidc.max_token_lifetime` in seconds.
pub(crate) fn max_lifetime(config: &OidcConfig) -> i64 {
    i64::try_from(config.max_token_lifetime.secs()).unwrap_or(i64::MAX)
}

/// What a signed token's claims must satisfy.
struct ClaimRules<'a> {
    issuer: &'a str,
    audience: &'a str,
    /// The web client's id, when it is not also the API's: a token for it is an ID token.
    web_client_id: Option<&'a str>,
    required_scope: Option<&'a str>,
    /// Longest `exp` − `iat`, seconds.
    max_lifetime: i64,
}

/// The claim checks, at `now` (Unix seconds).
fn check_claims(
    claims: &Map<String, Value>,
    rules: &ClaimRules<'_>,
    now: i64,
) -> Result<(), AuthError> {
    match strict::string(claims, "iss")? {
        Some(iss) if iss == rules.issuer => {}
        Some(iss) => {
            return Err(AuthError::invalid(format!(
                "issuer {} is not ours",
                shown(iss)
            )));
        }
        None => return Err(AuthError::invalid("token has no `iss`")),
    }
    let audiences = audiences(claims.get("aud"))?;
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
    let exp =
        numeric_date(claims, "exp")?.ok_or_else(|| AuthError::invalid("token has no `exp`"))?;
    if now > exp.saturating_add(LEEWAY) {
        return Err(AuthError::invalid(format!(
            "token expired {} s ago",
            now.saturating_sub(exp)
        )));
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && now.saturating_add(LEEWAY) < nbf
    {
        return Err(AuthError::invalid("token is not valid yet (`nbf`)"));
    }
    if let Some(iat) = numeric_date(claims, "iat")?
        && iat > now.saturating_add(LEEWAY)
    {
        return Err(AuthError::invalid("token is issued in the future (`iat`)"));
    }
    check_lifetime(claims, now, rules.max_lifetime)?;
    if strict::string(claims, "idtyp")? == Some("app") {
        return Err(AuthError::invalid("app-only token: a user is required"));
    }
    let scopes = granted_scopes(claims)?;
    if let Some(required) = rules.required_scope
        && !scopes.contains(&required)
    {
        return Err(AuthError::invalid(format!(
            "scope `{required}` was not granted"
        )));
    }
    Ok(())
}

/// A token whose structure and header passed, with its claims parsed (not yet verified).
struct Parsed {
    alg: Algorithm,
    kid: String,
    claims: Map<String, Value>,
}

/// Structural checks on the raw token and its header, and the claims parsed strictly.
fn parse(token: &str) -> Result<Parsed, AuthError> {
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
    let header = strict::decode_part(parts[0], "header")?;
    if let Some(name) = KEY_HEADERS.iter().find(|h| header.contains_key(**h)) {
        return Err(AuthError::invalid(format!(
            "token header has `{name}` (keys are only taken from the provider's JWKS)"
        )));
    }
    if let Some(name) = JWE_HEADERS.iter().find(|h| header.contains_key(**h)) {
        return Err(AuthError::invalid(format!("token header has `{name}`")));
    }
    let alg_name = strict::string(&header, "alg")?
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
    let kid = strict::string(&header, "kid")?
        .filter(|k| !k.is_empty())
        .ok_or_else(|| AuthError::invalid("token header has no `kid`"))?
        .to_owned();
    let claims = strict::decode_part(parts[1], "payload")?;
    Ok(Parsed { alg, kid, claims })
}

/// Rules [`fuzz_parse`] checks claims against.
const FUZZ_RULES: ClaimRules<'static> = ClaimRules {
    issuer: "https://login.example/tenant/v2.0",
    audience: "api://jit",
    web_client_id: Some("jit-web"),
    required_scope: Some("access"),
    max_lifetime: 86_400,
};

/// Entry point for the `bearer` fuzz target (fuzz/), not for the broker: the checks
/// [`BearerValidator::validate`] makes without any key, run on an *unverified* token. The
/// structure and header checks, the header and claims parsed strictly (one JSON object each, no
/// member named twice), then the claims checked at `now` against fixed rules (issuer
/// `https://login.example/tenant/v2.0`, audience `api://jit`, web client `jit-web`, scope
/// `access`, lifetime at most 24 h). `Ok` says nothing about the token's authenticity.
///
/// # Errors
/// Why the token is refused, as `validate` would refuse it.
#[doc(hidden)]
pub fn fuzz_parse(token: &str, now: i64) -> Result<(), AuthError> {
    let parsed = parse(token)?;
    check_claims(&parsed.claims, &FUZZ_RULES, now)
}

/// `aud` as a string or an array of strings, not empty; anything else is refused.
fn audiences(aud: Option<&Value>) -> Result<Vec<&str>, AuthError> {
    let list: Vec<&str> = match aud {
        None => return Err(AuthError::invalid("token has no `aud`")),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| AuthError::invalid("`aud` is not a string or an array of strings"))?,
        Some(_) => {
            return Err(AuthError::invalid(
                "`aud` is not a string or an array of strings",
            ));
        }
    };
    let list: Vec<&str> = list.into_iter().filter(|a| !a.is_empty()).collect();
    if list.is_empty() {
        return Err(AuthError::invalid("token has no usable `aud`"));
    }
    Ok(list)
}

/// Granted scopes: the `scp` claim as Entra writes it, RFC 9068 `scope`; each a
/// space-separated string (an array, or any other type, is refused).
fn granted_scopes(claims: &Map<String, Value>) -> Result<Vec<&str>, AuthError> {
    let mut scopes = Vec::new();
    for name in ["scp", "scope"] {
        if let Some(value) = strict::string(claims, name)? {
            scopes.extend(value.split(' ').filter(|s| !s.is_empty()));
        }
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn token(header: &Value) -> String {
        format!("{}.{}.c2ln", b64(header), b64(&json!({})))
    }

    fn header_of(token: &str) -> Result<(Algorithm, String), AuthError> {
        parse(token).map(|p| (p.alg, p.kid))
    }

    #[test]
    fn headers_that_carry_keys_or_bad_algorithms_are_refused() {
        let ok = token(&json!({"alg": "RS256", "kid": "k", "typ": "at+jwt"}));
        assert_eq!(header_of(&ok).unwrap(), (Algorithm::RS256, "k".to_owned()));
        for header in [
            json!({"alg": "none", "kid": "k"}),
            json!({"alg": "HS256", "kid": "k"}),
            json!({"alg": "EdDSA", "kid": "k"}),
            json!({"alg": "rs256", "kid": "k"}),
            json!({"alg": ["RS256"], "kid": "k"}),
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
            assert!(header_of(&token(&header)).is_err(), "{header}");
        }
        // a member named twice, in the header or anywhere in the payload
        let dup = |header: &str, payload: &str| {
            format!(
                "{}.{}.c2ln",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(payload)
            )
        };
        for (header, payload) in [
            (r#"{"alg":"RS256","kid":"k","kid":"j"}"#, "{}"),
            (r#"{"alg":"none","alg":"RS256","kid":"k"}"#, "{}"),
            (r#"{"alg":"RS256","kid":"k"}"#, r#"{"oid":"a","oid":"b"}"#),
            (
                r#"{"alg":"RS256","kid":"k"}"#,
                r#"{"x":{"groups":[],"groups":[]}}"#,
            ),
        ] {
            let e = header_of(&dup(header, payload)).unwrap_err();
            assert!(
                e.reason().contains("appears twice"),
                "{header} {payload}: {}",
                e.reason()
            );
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
            format!("{}.W10.x", two[0]),
            "x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(header_of(&bad).is_err(), "{bad:.40}");
        }
    }

    #[test]
    fn scopes_are_space_separated_strings() {
        let scopes = |v: Value| granted_scopes(v.as_object().unwrap()).map(|s| s.join(","));
        assert_eq!(
            scopes(json!({"scp": "read access"})).unwrap(),
            "read,access"
        );
        assert_eq!(
            scopes(json!({"scope": "openid  access"})).unwrap(),
            "openid,access"
        );
        assert_eq!(
            scopes(json!({"scope": "accessible"})).unwrap(),
            "accessible"
        );
        assert!(scopes(json!({"scope": ["access"]})).is_err());
        assert!(scopes(json!({"scp": 1})).is_err());
    }

    #[test]
    fn audience_shapes() {
        assert_eq!(audiences(Some(&json!("a"))).unwrap(), vec!["a"]);
        assert_eq!(audiences(Some(&json!(["a", "b"]))).unwrap(), vec!["a", "b"]);
        for bad in [
            json!(["a", 1, "b"]),
            json!(""),
            json!([]),
            json!(3),
            json!({"a": 1}),
        ] {
            assert!(audiences(Some(&bad)).is_err(), "{bad}");
        }
        assert!(audiences(None).is_err());
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
            "iss": FUZZ_RULES.issuer, "aud": "api://jit", "exp": now + 600, "iat": now - 5, "scp": "access",
        });
        fuzz_parse(&unsigned(&good), now).unwrap();
        for (name, value) in [
            ("iss", json!("https://evil.example")),
            ("iss", json!([FUZZ_RULES.issuer])),
            ("aud", json!(["api://jit", "jit-web"])),
            ("aud", json!(7)),
            ("aud", json!(["api://jit", 7])),
            ("exp", json!(now - 61)),
            ("exp", json!("soon")),
            ("exp", json!(now + 86_400)),
            ("nbf", json!(now + 61)),
            ("nbf", json!("now")),
            ("iat", json!(now + 61)),
            ("iat", json!(null)),
            ("nonce", json!("n")),
            ("idtyp", json!("app")),
            ("idtyp", json!(1)),
            ("scp", json!("read")),
            ("scp", json!(["access"])),
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
    fn extreme_times_are_refused_without_overflow() {
        let claims = |exp: Value| {
            unsigned(
                &json!({"iss": FUZZ_RULES.issuer, "aud": "api://jit", "exp": exp, "scp": "access"}),
            )
        };
        assert!(fuzz_parse(&claims(json!(i64::MIN)), i64::MAX).is_err());
        assert!(fuzz_parse(&claims(json!(-1e300)), 0).is_err());
        // Far-future expiries are tokens that never expire: refused, not saturated.
        for (exp, now) in [
            (json!(u64::MAX), i64::MAX),
            (json!(1e300), i64::MIN),
            (json!(1e300), 0),
            (json!(i64::MAX), 0),
        ] {
            let e = fuzz_parse(&claims(exp.clone()), now).unwrap_err();
            assert!(e.reason().contains("`exp`"), "{exp}: {}", e.reason());
        }
    }
}
