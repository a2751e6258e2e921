//! Strict reading of token JSON: the header and the claims of a JWT are parsed by a visitor
//! that refuses a member name seen twice in one object, at any depth (`serde_json` keeps the
//! last silently, so `{"oid": "victim", …, "oid": "attacker"}` would read differently here than
//! in another parser), and the claims the broker reads are taken with their exact JSON types.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::AuthError;
use super::claims::shown;

/// A JSON value in which no object names a member twice.
struct NoDuplicates;

impl<'de> DeserializeSeed<'de> for NoDuplicates {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(NoDuplicates)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(de::Error::custom(format_args!(
                    "member {} appears twice",
                    shown(&name)
                )));
            }
            let value = map.next_value_seed(NoDuplicates)?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

/// Parses `bytes` as one JSON object in which no object, at any depth, names a member twice.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = NoDuplicates
        .deserialize(&mut deserializer)
        .and_then(|v| deserializer.end().map(|()| v))
        .map_err(|e| match e.classify() {
            // what the visitor refused: a repeated member, a number out of range
            serde_json::error::Category::Data => e.to_string(),
            _ => format!("not a JSON object ({e})"),
        })?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err("not a JSON object".to_owned()),
    }
}

/// One base64url (unpadded) part of a compact JWS as a JSON object; `what` names the part.
pub fn decode_part(part: &str, what: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::invalid(format!("token {what}: not base64url")))?;
    parse_object(&bytes).map_err(|e| AuthError::invalid(format!("token {what}: {e}")))
}

/// A string claim: absent is `None`, any other type is refused.
pub fn string<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(AuthError::invalid(format!("`{name}` is not a string"))),
    }
}

/// A claim that is an array of strings: absent is `None`; a plain string, an element of
/// another type or any other type is refused.
pub fn strings<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<Vec<&'a str>>, AuthError> {
    let not_a_list = || AuthError::invalid(format!("`{name}` is not an array of strings"));
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().ok_or_else(not_a_list))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(not_a_list()),
    }
}

/// Latest `NumericDate` taken (year 9999): later ones are refused rather than saturated.
const MAX_TIME: i64 = 253_402_300_799;
/// [`MAX_TIME`] as a float (exactly: it is below 2^53).
const MAX_TIME_F64: f64 = 253_402_300_799.0;

/// A `NumericDate` claim (seconds since the epoch, possibly with a fraction): absent is `None`;
/// anything but a number, or a number outside years 0–9999, is refused.
pub fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, AuthError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(n) = value else {
        return Err(AuthError::invalid(format!("`{name}` is not a number")));
    };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "bounded to ±MAX_TIME before the cast"
    )]
    let seconds = n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.is_finite() && f.abs() <= MAX_TIME_F64)
            .map(|f| f.floor() as i64)
    });
    match seconds {
        Some(s) if (-MAX_TIME..=MAX_TIME).contains(&s) => Ok(Some(s)),
        _ => Err(AuthError::invalid(format!(
            "`{name}` is not a time (outside years 0 to 9999)"
        ))),
    }
}

/// `exp` no further from `iat` (or from `now` when there is no `iat`) than `max_lifetime`
/// seconds: a token that never expires is a token nobody can take back.
pub fn check_lifetime(
    claims: &Map<String, Value>,
    now: i64,
    max_lifetime: i64,
) -> Result<(), AuthError> {
    let exp =
        numeric_date(claims, "exp")?.ok_or_else(|| AuthError::invalid("token has no `exp`"))?;
    let from = numeric_date(claims, "iat")?.unwrap_or(now);
    let lifetime = exp.saturating_sub(from);
    if lifetime > max_lifetime {
        return Err(AuthError::invalid(format!(
            "`exp` is {lifetime} s after `iat`, more than the longest token lifetime of {max_lifetime} s (`oidc.max_token_lifetime`)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicate_members_are_refused_at_any_depth() {
        for text in [
            r#"{"oid":"a","oid":"b"}"#,
            r#"{"oid":"a","\u006fid":"b"}"#,
            r#"{"x":{"y":1,"y":1}}"#,
            r#"{"x":[{"a":1},{"b":2,"b":3}]}"#,
            r#"{"_claim_sources":{"src1":{"endpoint":"a","endpoint":"b"}}}"#,
        ] {
            let e = parse_object(text.as_bytes()).unwrap_err();
            assert!(e.contains("appears twice"), "{text}: {e}");
        }
        let ok =
            parse_object(br#"{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}],"d":null,"e":1.5}"#).unwrap();
        assert_eq!(Value::Object(ok)["c"][1]["a"], json!(2));
        for text in ["[1]", "\"x\"", "{", "{} {}", "{\"a\":1e999}", ""] {
            assert!(parse_object(text.as_bytes()).is_err(), "{text}");
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn claim_types_are_exact() {
        let c = claims(json!({
            "s": "x", "n": 7, "list": ["a", "b"], "mixed": ["a", 1], "empty": [],
        }));
        assert_eq!(string(&c, "s").unwrap(), Some("x"));
        assert_eq!(string(&c, "none").unwrap(), None);
        assert!(string(&c, "n").is_err());
        assert!(string(&c, "list").is_err());
        assert_eq!(strings(&c, "list").unwrap(), Some(vec!["a", "b"]));
        assert_eq!(strings(&c, "empty").unwrap(), Some(vec![]));
        assert!(strings(&c, "s").is_err());
        assert!(strings(&c, "mixed").is_err());
        assert!(strings(&c, "n").is_err());
    }

    #[test]
    fn times_are_numbers_in_range_and_lifetimes_bounded() {
        let c = claims(json!({
            "int": 1_800_000_000, "frac": 1_800_000_000.75, "neg": -5, "text": "1800000000",
            "huge": 1e300, "u64": u64::MAX, "far": 253_402_300_800_i64, "bool": true,
        }));
        assert_eq!(numeric_date(&c, "int").unwrap(), Some(1_800_000_000));
        assert_eq!(numeric_date(&c, "frac").unwrap(), Some(1_800_000_000));
        assert_eq!(numeric_date(&c, "neg").unwrap(), Some(-5));
        assert_eq!(numeric_date(&c, "absent").unwrap(), None);
        for name in ["text", "huge", "u64", "far", "bool"] {
            assert!(numeric_date(&c, name).is_err(), "{name}");
        }
        let now = 1_800_000_000;
        let day = 86_400;
        let ok = claims(json!({"iat": now, "exp": now + day}));
        check_lifetime(&ok, now, day).unwrap();
        let long = claims(json!({"iat": now, "exp": now + day + 1}));
        let e = check_lifetime(&long, now, day).unwrap_err();
        assert!(
            e.reason().contains("oidc.max_token_lifetime"),
            "{}",
            e.reason()
        );
        // without `iat`, from now
        check_lifetime(&claims(json!({"exp": now + day})), now, day).unwrap();
        assert!(check_lifetime(&claims(json!({"exp": now + day + 1})), now, day).is_err());
        // an `iat` far in the past does not stretch the bound past `exp`
        assert!(
            check_lifetime(
                &claims(json!({"iat": -MAX_TIME, "exp": MAX_TIME})),
                now,
                day
            )
            .is_err()
        );
        assert!(check_lifetime(&claims(json!({"iat": now})), now, day).is_err());
    }
}
