//! Checkpoint keys: an Ed25519 key from a file or the environment, or an AWS KMS key
//! ([`super::writer`] takes any [`Signer`]); public keys to verify with, from PEM.

use std::sync::Arc;

use async_trait::async_trait;
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ED25519, Ed25519KeyPair, KeyPair as _, ParsedPublicKey,
};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// A signature algorithm of checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alg {
    /// Ed25519 (RFC 8032) over the canonical bytes.
    #[serde(rename = "ed25519")]
    Ed25519,
    /// ECDSA on P-256 over the SHA-256 of the canonical bytes, DER signature (AWS KMS
    /// `ECC_NIST_P256` with `ECDSA_SHA_256`).
    #[serde(rename = "ecdsa-p256-sha256")]
    EcdsaP256Sha256,
}

/// A key problem; never shows key material.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The key text or file cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// The signing service failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// A public key that checkpoints are verified with.
#[derive(Clone)]
pub struct PublicKey {
    alg: Alg,
    parsed: Arc<ParsedPublicKey>,
    der: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({:?}, {})", self.alg, self.key_id())
    }
}

impl PublicKey {
    /// From a `SubjectPublicKeyInfo` (DER): an Ed25519 or a P-256 key.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        for (alg, algorithm) in [
            (
                Alg::Ed25519,
                &ED25519 as &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
            ),
            (Alg::EcdsaP256Sha256, &ECDSA_P256_SHA256_ASN1),
        ] {
            if let Ok(parsed) = ParsedPublicKey::new(algorithm, der) {
                return Ok(Self {
                    alg,
                    parsed: Arc::new(parsed),
                    der: der.to_vec(),
                });
            }
        }
        Err(KeyError::Invalid(
            "not an Ed25519 or P-256 public key (SubjectPublicKeyInfo)".to_owned(),
        ))
    }

    /// From PEM text (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        Self::from_der(&pem_decode(text, "PUBLIC KEY")?)
    }

    /// Reads a PEM file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            KeyError::Invalid(format!("cannot read public key `{}`: {e}", path.display()))
        })?;
        Self::from_pem(&text)
            .map_err(|e| KeyError::Invalid(format!("public key `{}`: {e}", path.display())))
    }

    /// Which algorithm it verifies.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The first 16 bytes of the SHA-256 of the `SubjectPublicKeyInfo`, hex.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(&self.der)[..16])
    }

    /// PEM text.
    pub fn to_pem(&self) -> String {
        pem_encode(&self.der, "PUBLIC KEY")
    }

    /// Whether `signature` over `message` verifies.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.parsed.verify_sig(message, signature).is_ok()
    }
}

/// Something that signs checkpoints.
#[async_trait]
pub trait Signer: Send + Sync {
    /// Its public key (which names the algorithm).
    fn public_key(&self) -> &PublicKey;
    /// Signs `message` (the canonical bytes of a checkpoint).
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError>;
}

/// An Ed25519 key held in memory.
pub struct Ed25519Signer {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519Signer({})", self.public.key_id())
    }
}

impl Ed25519Signer {
    /// From PKCS#8 PEM text (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let der = pem_decode(text, "PRIVATE KEY")?;
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|_| KeyError::Invalid("not an Ed25519 private key (PKCS#8)".to_owned()))?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: Ed25519KeyPair) -> Result<Self, KeyError> {
        let der = pair
            .public_key()
            .as_der()
            .map_err(|_| KeyError::Invalid("cannot encode the public key".to_owned()))?;
        let public = PublicKey::from_der(der.as_ref())?;
        Ok(Self { pair, public })
    }
}

#[async_trait]
impl Signer for Ed25519Signer {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(self.pair.sign(message).as_ref().to_vec())
    }
}

/// The signer `audit.signing_key` names: `kms:<key id, ARN or alias>`, or an Ed25519 private
/// key (PKCS#8 PEM) given as `file:PATH` or `env:NAME`.
pub async fn load_signer(
    raw: &str,
    aws: Option<&crate::config::AwsConfig>,
) -> Result<Arc<dyn Signer>, KeyError> {
    if let Some(key) = raw.strip_prefix("kms:") {
        #[cfg(feature = "aws")]
        return Ok(Arc::new(super::kms::KmsSigner::new(aws, key).await?));
        #[cfg(not(feature = "aws"))]
        {
            let _ = (key, aws);
            return Err(KeyError::Invalid(
                "this jit-server was built without AWS support: no KMS signer".to_owned(),
            ));
        }
    }
    let pem = crate::config::Secret::resolve(raw).map_err(KeyError::Invalid)?;
    Ok(Arc::new(Ed25519Signer::from_pem(&pem.expose())?))
}

/// A public key to verify checkpoints with: `kms:<key>` (its `GetPublicKey`), or a PEM file
/// (`file:PATH` or just the path).
pub async fn load_public_key(
    raw: &str,
    aws: Option<&crate::config::AwsConfig>,
) -> Result<PublicKey, KeyError> {
    if let Some(key) = raw.strip_prefix("kms:") {
        #[cfg(feature = "aws")]
        return super::kms::public_key(aws, key).await;
        #[cfg(not(feature = "aws"))]
        {
            let _ = (key, aws);
            return Err(KeyError::Invalid(
                "this jit-server was built without AWS support: no KMS keys".to_owned(),
            ));
        }
    }
    PublicKey::from_file(std::path::Path::new(
        raw.strip_prefix("file:").unwrap_or(raw),
    ))
}

/// A new Ed25519 key pair: the signer and its private key as PKCS#8 PEM (what `jit-server
/// audit keygen` writes).
pub fn generate() -> Result<(Ed25519Signer, String), KeyError> {
    let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
        .map_err(|_| KeyError::Invalid("cannot generate a key".to_owned()))?;
    let pem = pem_encode(doc.as_ref(), "PRIVATE KEY");
    Ok((Ed25519Signer::from_pem(&pem)?, pem))
}

/// `-----BEGIN {label}-----` … base64 … `-----END {label}-----`, 64 characters a line.
fn pem_encode(der: &[u8], label: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

fn pem_decode(text: &str, label: &str) -> Result<Vec<u8>, KeyError> {
    let (begin, end) = (
        format!("-----BEGIN {label}-----"),
        format!("-----END {label}-----"),
    );
    let body = text
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body)
        .ok_or_else(|| KeyError::Invalid(format!("not PEM with `{begin}`")))?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| KeyError::Invalid(format!("the `{label}` PEM is not base64")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_round_trip_through_pem() {
        let (signer, private_pem) = generate().unwrap();
        assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = Ed25519Signer::from_pem(&private_pem).unwrap();
        assert_eq!(again.public_key().key_id(), signer.public_key().key_id());
        let public = PublicKey::from_pem(&signer.public_key().to_pem()).unwrap();
        assert_eq!(public.alg(), Alg::Ed25519);
        let sig = signer.sign(b"checkpoint").await.unwrap();
        assert!(public.verify(b"checkpoint", &sig));
        assert!(!public.verify(b"checkpoinT", &sig));
        assert_eq!(public.key_id().len(), 32);
        assert!(
            PublicKey::from_pem(&private_pem).is_err(),
            "a private key is not a public key"
        );
        assert!(Ed25519Signer::from_pem("nonsense").is_err());
    }
}
