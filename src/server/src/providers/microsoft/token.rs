//! App-only tokens from the Microsoft identity platform by the client-credentials
//! grant (for Graph and for Azure Resource Manager alike): a client secret, or a
//! certificate through a `private_key_jwt` client assertion.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::client::{ApiError, Service};
use crate::config::{AppCredentials, Secret};

/// RFC 7523 client assertion type.
pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Lifetime of a client assertion (Microsoft: keep it to 5–10 minutes).
const ASSERTION_SECONDS: i64 = 300;
/// Tokens are renewed this long before they expire.
pub(crate) const REFRESH_MARGIN_SECONDS: i64 = 300;

/// How the broker proves it is its app.
pub(crate) enum Credential {
    /// `client_secret`.
    Secret(Secret),
    /// `private_key_jwt` with a certificate registered on the app.
    Certificate {
        /// The RSA private key.
        key: EncodingKey,
        /// Base64url SHA-256 thumbprint of the certificate DER (`x5t#S256`).
        thumbprint: String,
        /// Whose token (for errors).
        service: Service,
    },
}

impl Credential {
    /// Picks the certificate when a key is configured, else the secret.
    pub(crate) fn from_config(app: &AppCredentials, service: Service) -> Result<Self, ApiError> {
        let section = app.section;
        let config = |message: String| ApiError::Config { service, message };
        if let Some(key) = &app.certificate_key {
            let certificate = app.certificate.as_deref().ok_or_else(|| {
                config(format!(
                    "`{section}.certificate` is required with `{section}.certificate_key`"
                ))
            })?;
            let pem = if let Some(path) = certificate.strip_prefix("file:") {
                std::fs::read_to_string(path).map_err(|e| {
                    config(format!(
                        "cannot read `{section}.certificate` file `{path}`: {e}"
                    ))
                })?
            } else {
                certificate.to_owned()
            };
            let der = certificate_der(&pem).ok_or_else(|| {
                config(format!(
                    "`{section}.certificate` holds no PEM `CERTIFICATE` block"
                ))
            })?;
            let key = EncodingKey::from_rsa_pem(key.expose().as_bytes()).map_err(|_| {
                config(format!(
                    "`{section}.certificate_key` is not an RSA private key in PEM"
                ))
            })?;
            Ok(Self::Certificate {
                key,
                thumbprint: URL_SAFE_NO_PAD.encode(Sha256::digest(&der)),
                service,
            })
        } else if let Some(secret) = &app.client_secret {
            Ok(Self::Secret(secret.clone()))
        } else {
            Err(config(format!(
                "set `{section}.client_secret` or `{section}.certificate_key`"
            )))
        }
    }

    /// Re-reads an `aws-sm:` client secret after the token endpoint refused it: whether it
    /// changed (a certificate or a secret from elsewhere never does).
    pub(crate) async fn refresh(&self) -> bool {
        let Self::Secret(secret) = self else {
            return false;
        };
        match secret.refresh().await {
            Ok(changed) => changed,
            Err(e) => {
                tracing::warn!(error = %e, "client secret not re-read");
                false
            }
        }
    }

    /// The form fields that authenticate the client, besides `client_id`.
    pub(crate) fn form_fields(
        &self,
        client_id: &str,
        token_url: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<(&'static str, SecretString)>, ApiError> {
        match self {
            Self::Secret(secret) => Ok(vec![(
                "client_secret",
                SecretString::from(secret.expose().to_owned()),
            )]),
            Self::Certificate {
                key,
                thumbprint,
                service,
            } => {
                let assertion = client_assertion(key, thumbprint, client_id, token_url, now)
                    .map_err(|message| ApiError::Config {
                        service: *service,
                        message,
                    })?;
                Ok(vec![
                    ("client_assertion_type", SecretString::from(ASSERTION_TYPE)),
                    ("client_assertion", SecretString::from(assertion)),
                ])
            }
        }
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

/// The signed JWT Microsoft's certificate-credentials page describes: PS256,
/// `x5t#S256`, `aud` = the token endpoint, `iss` = `sub` = client id, a fresh `jti`.
fn client_assertion(
    key: &EncodingKey,
    thumbprint: &str,
    client_id: &str,
    token_url: &str,
    now: OffsetDateTime,
) -> Result<String, String> {
    let mut header = Header::new(Algorithm::PS256);
    header.typ = Some("JWT".to_owned());
    header.x5t_s256 = Some(thumbprint.to_owned());
    let now = now.unix_timestamp();
    let claims = AssertionClaims {
        aud: token_url,
        iss: client_id,
        sub: client_id,
        jti: uuid::Uuid::new_v4().to_string(),
        nbf: now,
        iat: now,
        exp: now + ASSERTION_SECONDS,
    };
    jsonwebtoken::encode(&header, &claims, key)
        .map_err(|e| format!("cannot sign the client assertion: {e}"))
}

/// DER of the first `CERTIFICATE` block of a PEM text.
pub(crate) fn certificate_der(pem: &str) -> Option<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let end = start + pem[start..].find(END)?;
    let body: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).ok().filter(|d| !d.is_empty())
}

/// A successful token response (`ext_expires_in` and others are ignored).
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub(crate) access_token: String,
    #[serde(deserialize_with = "number_or_string")]
    pub(crate) expires_in: i64,
}

/// A token endpoint error body.
#[derive(Deserialize)]
pub(crate) struct TokenErrorBody {
    pub(crate) error: String,
    #[serde(default)]
    pub(crate) error_description: Option<String>,
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        N(i64),
        S(String),
    }
    match Either::deserialize(d)? {
        Either::N(n) => Ok(n),
        Either::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// A token and when to stop using it.
pub(crate) struct CachedToken {
    pub(crate) token: SecretString,
    pub(crate) refresh_at: OffsetDateTime,
}

impl CachedToken {
    /// Kept until five minutes before expiry (half the lifetime when shorter than that).
    pub(crate) fn new(token: String, expires_in: i64, now: OffsetDateTime) -> Self {
        let keep = if expires_in > 2 * REFRESH_MARGIN_SECONDS {
            expires_in - REFRESH_MARGIN_SECONDS
        } else {
            expires_in / 2
        };
        Self {
            token: SecretString::from(token),
            refresh_at: now + time::Duration::seconds(keep.max(0)),
        }
    }

    /// Still good at `now`.
    pub(crate) fn fresh(&self, now: OffsetDateTime) -> bool {
        now < self.refresh_at
    }

    /// The bearer value.
    pub(crate) fn value(&self) -> &str {
        self.token.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_certificate_block() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n";
        assert_eq!(certificate_der(pem), Some(vec![0, 1, 2, 3]));
        assert_eq!(certificate_der("-----BEGIN PRIVATE KEY-----"), None);
    }

    #[test]
    fn tokens_refresh_five_minutes_early() {
        let now = OffsetDateTime::now_utc();
        let t = CachedToken::new("t".into(), 3599, now);
        assert!(t.fresh(now + time::Duration::seconds(3298)));
        assert!(!t.fresh(now + time::Duration::seconds(3299)));
        let short = CachedToken::new("t".into(), 120, now);
        assert!(!short.fresh(now + time::Duration::seconds(60)));
    }
}
