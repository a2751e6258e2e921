//! The provider's signing keys (JWKS), cached, refreshed on rotation without letting unknown
//! `kid`s turn into a fetch per request.
//!
//! A `kid` the cache does not know triggers at most one fetch of `jwks_uri` per
//! [`MIN_REFRESH_INTERVAL`], whoever asks; keys older than [`MAX_KEY_AGE`] are refetched on use,
//! and kept when that fetch fails or yields no usable key. Only signature keys usable with the allowed algorithms are
//! kept: never symmetric (`oct`) keys.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet};
use time::{Duration, OffsetDateTime};
use url::Url;

use super::client::{HttpError, IdpHttp};
use crate::clock::Clock;

/// Unknown `kid`s refetch the JWKS at most this often.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::seconds(30);
/// Keys are refetched on use when older than this.
pub const MAX_KEY_AGE: Duration = Duration::hours(1);
/// Longest `kid` looked up (longer ones are refused without a fetch).
const MAX_KID_LEN: usize = 256;
/// Most keys read from one JWKS document.
const MAX_KEYS: usize = 64;

/// The signature algorithms ever accepted (no `none`, no HMAC).
pub const ALLOWED_ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// One verification key and the algorithms it may verify.
pub struct VerifyKey {
    /// The decoded key.
    pub key: DecodingKey,
    /// What the JWK allows: its `alg`, or RS256 / ES256 / ES384 by key type when it names none.
    pub algorithms: Vec<Algorithm>,
}

/// Why a key was not found.
#[derive(Debug)]
pub enum KeyLookup {
    /// No key with that `kid` (after at most one refresh).
    Unknown {
        /// The refresh failed (the provider may be down).
        refresh_failed: Option<String>,
        /// A refresh was skipped because one ran less than [`MIN_REFRESH_INTERVAL`] ago.
        rate_limited: bool,
    },
}

struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    oidc: CoreJsonWebKeySet,
    fetched_at: OffsetDateTime,
}

/// The JWKS cache.
pub struct KeyStore {
    http: IdpHttp,
    jwks_uri: Url,
    clock: Arc<dyn Clock>,
    keys: RwLock<Arc<KeySet>>,
    /// When the last refresh was attempted (not the first fetch at start).
    last_refresh: tokio::sync::Mutex<Option<OffsetDateTime>>,
}

impl KeyStore {
    /// Fetches the keys once.
    pub async fn fetch(
        http: IdpHttp,
        jwks_uri: Url,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, HttpError> {
        let document = http.get_json(&jwks_uri).await?;
        let keys = parse_jwks(&document, clock.now());
        if keys.by_kid.is_empty() {
            tracing::warn!(jwks_uri = %jwks_uri, "the identity provider publishes no usable signing key");
        }
        Ok(Self {
            http,
            jwks_uri,
            clock,
            keys: RwLock::new(Arc::new(keys)),
            last_refresh: tokio::sync::Mutex::new(None),
        })
    }

    fn current(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The key named `kid`, refreshing the cache when it is unknown or old (rate-limited).
    pub async fn find(&self, kid: &str) -> Result<Arc<VerifyKey>, KeyLookup> {
        if kid.is_empty() || kid.len() > MAX_KID_LEN {
            return Err(KeyLookup::Unknown {
                refresh_failed: None,
                rate_limited: false,
            });
        }
        let snapshot = self.current();
        let fresh = self.clock.now() - snapshot.fetched_at < MAX_KEY_AGE;
        if let Some(key) = snapshot.by_kid.get(kid)
            && fresh
        {
            return Ok(Arc::clone(key));
        }
        let outcome = self.refresh().await;
        let snapshot = self.current();
        if let Some(key) = snapshot.by_kid.get(kid) {
            return Ok(Arc::clone(key));
        }
        Err(KeyLookup::Unknown {
            refresh_failed: match &outcome {
                Refresh::Failed(reason) => Some(reason.clone()),
                _ => None,
            },
            rate_limited: matches!(outcome, Refresh::RateLimited),
        })
    }

    /// For readiness: the number of usable signing keys, after refetching the JWKS when the
    /// cached set is older than [`MAX_KEY_AGE`] (rate-limited like every refresh). Bearer
    /// checks keep working on cached keys while the provider is down, so only an empty set
    /// makes the broker unready.
    pub async fn usable_keys(&self) -> usize {
        if self.clock.now() - self.current().fetched_at >= MAX_KEY_AGE {
            let _ = self.refresh().await;
        }
        self.current().by_kid.len()
    }

    /// The keys in `openidconnect`'s form, for ID token verification.
    pub fn oidc_keys(&self) -> CoreJsonWebKeySet {
        self.current().oidc.clone()
    }

    /// Refetches the JWKS unless that happened less than [`MIN_REFRESH_INTERVAL`] ago; callers
    /// arriving together wait for one fetch.
    async fn refresh(&self) -> Refresh {
        let mut last = self.last_refresh.lock().await;
        let now = self.clock.now();
        if let Some(at) = *last
            && now - at < MIN_REFRESH_INTERVAL
        {
            return Refresh::RateLimited;
        }
        *last = Some(now);
        match self.http.get_json(&self.jwks_uri).await {
            Ok(document) => {
                let keys = parse_jwks(&document, self.clock.now());
                if keys.by_kid.is_empty() {
                    tracing::warn!(
                        "the identity provider's JWKS has no usable signing key; keeping the cached ones"
                    );
                    return Refresh::Failed("the JWKS has no usable signing key".to_owned());
                }
                tracing::info!(
                    keys = keys.by_kid.len(),
                    "identity provider signing keys refreshed"
                );
                match self.keys.write() {
                    Ok(mut guard) => *guard = Arc::new(keys),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
                }
                Refresh::Done
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the identity provider signing keys; keeping the cached ones");
                Refresh::Failed(e.to_string())
            }
        }
    }
}

enum Refresh {
    Done,
    RateLimited,
    Failed(String),
}

/// Keeps the usable signature keys of a JWKS document; everything else is skipped.
fn parse_jwks(document: &serde_json::Value, now: OffsetDateTime) -> KeySet {
    let mut by_kid = HashMap::new();
    let mut oidc = Vec::new();
    let entries = document
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for entry in entries.iter().take(MAX_KEYS) {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            continue;
        };
        let Some(kid) = jwk.common.key_id.clone().filter(|k| !k.is_empty()) else {
            continue;
        };
        let Some(algorithms) = usable_algorithms(&jwk) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        if let Ok(oidc_key) = serde_json::from_value::<CoreJsonWebKey>(entry.clone()) {
            oidc.push(oidc_key);
        }
        by_kid.insert(kid, Arc::new(VerifyKey { key, algorithms }));
    }
    KeySet {
        by_kid,
        oidc: CoreJsonWebKeySet::new(oidc),
        fetched_at: now,
    }
}

/// The algorithms a JWK may verify, or `None` when it is not a usable signature key.
fn usable_algorithms(jwk: &Jwk) -> Option<Vec<Algorithm>> {
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return None,
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.iter().any(|op| matches!(op, KeyOperations::Verify))
    {
        return None;
    }
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        // symmetric keys (HMAC) and anything else are never verification keys here
        _ => return None,
    };
    match jwk.common.key_algorithm {
        Some(named) => {
            let alg = Algorithm::try_from(named).ok()?;
            (by_type.contains(&alg) && ALLOWED_ALGORITHMS.contains(&alg)).then(|| vec![alg])
        }
        // no `alg` in the JWK (Entra publishes none): the usual one for the key type
        None => Some(vec![by_type[0]]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa(extra: serde_json::Value) -> serde_json::Value {
        let mut base = serde_json::json!({
            "kty": "RSA", "kid": "k1",
            "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
            "e": "AQAB"
        });
        if let (Some(base), serde_json::Value::Object(extra)) = (base.as_object_mut(), extra) {
            base.extend(extra);
        }
        base
    }

    fn keys(entries: Vec<serde_json::Value>) -> KeySet {
        let mut document = serde_json::Map::new();
        document.insert("keys".to_owned(), serde_json::Value::Array(entries));
        parse_jwks(
            &serde_json::Value::Object(document),
            OffsetDateTime::now_utc(),
        )
    }

    #[test]
    fn jwk_alg_and_type_decide_the_algorithms() {
        let set = keys(vec![rsa(serde_json::json!({}))]);
        assert_eq!(set.by_kid["k1"].algorithms, vec![Algorithm::RS256]);
        let set = keys(vec![rsa(serde_json::json!({"alg": "PS256", "use": "sig"}))]);
        assert_eq!(set.by_kid["k1"].algorithms, vec![Algorithm::PS256]);
        assert_eq!(set.oidc.keys().len(), 1);
    }

    #[test]
    fn unusable_keys_are_skipped() {
        for extra in [
            serde_json::json!({"use": "enc"}),
            serde_json::json!({"alg": "HS256"}),
            serde_json::json!({"alg": "ES256"}),
            serde_json::json!({"alg": "RSA-OAEP"}),
            serde_json::json!({"key_ops": ["encrypt"]}),
            serde_json::json!({"kid": ""}),
        ] {
            let set = keys(vec![rsa(extra.clone())]);
            assert!(set.by_kid.is_empty(), "{extra}");
        }
        let set = keys(vec![
            serde_json::json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"}),
            serde_json::json!({"kty": "RSA", "kid": "broken"}),
            serde_json::json!("not an object"),
        ]);
        assert!(set.by_kid.is_empty());
        assert!(keys(vec![]).by_kid.is_empty());
        assert!(
            parse_jwks(&serde_json::json!([]), OffsetDateTime::now_utc())
                .by_kid
                .is_empty()
        );
    }
}
