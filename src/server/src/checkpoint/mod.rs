//! Signed checkpoints of the audit chain (docs/audit.md, "Signed checkpoints").
//!
//! Every `audit.checkpoint_every` the broker signs the chain's head — `{number, prev, seq,
//! head_hash, event_count, at, broker_id}` — and writes it to sinks off the database host
//! (a directory, an S3 bucket with Object Lock). Checkpoints form their own chain: each names
//! the hash of the one before. Anyone holding a checkpoint and the public key can later show
//! that the database still holds the chain as it was signed, or which checkpoint disproves it.
//!
//! Crypto is aws-lc-rs, which the tree already links through rustls, the AWS SDK and
//! jsonwebtoken: Ed25519 for keys in files, ECDSA P-256 with SHA-256 to verify what an AWS
//! KMS key signs.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

pub mod keys;
#[cfg(feature = "aws")]
pub mod kms;
#[cfg(feature = "aws")]
pub mod s3;
pub mod sink;
pub mod verify;
pub mod writer;

pub use keys::{Alg, PublicKey, Signer};

/// The `prev` of the first checkpoint.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a checkpoint asserts, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// 1, 2, 3, … without gaps.
    pub number: u64,
    /// The hash of checkpoint `number - 1` ([`GENESIS`] for the first).
    pub prev: String,
    /// The newest `seq` of the chain when it was signed (0: an empty chain).
    pub seq: i64,
    /// That row's `hash` ([`crate::store::audit::GENESIS`] for an empty chain).
    pub head_hash: String,
    /// Rows of the table from 1 to `seq`, counted apart from the walk.
    pub event_count: u64,
    /// When it was signed, Unix milliseconds.
    pub at: i64,
    /// Which broker signed it (`audit.broker_id`).
    pub broker_id: String,
}

impl Claim {
    /// The canonical encoding that is hashed and signed (docs/audit.md): the version line
    /// `jit-checkpoint-v1`, then each field as `<byte length>:<bytes>\n`, in this order.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"jit-checkpoint-v1\n");
        for field in [
            self.number.to_string().as_bytes(),
            self.prev.as_bytes(),
            self.seq.to_string().as_bytes(),
            self.head_hash.as_bytes(),
            self.event_count.to_string().as_bytes(),
            self.at.to_string().as_bytes(),
            self.broker_id.as_bytes(),
        ] {
            out.extend_from_slice(field.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(field);
            out.push(b'\n');
        }
        out
    }

    /// SHA-256 of the canonical encoding, lowercase hex: what the next checkpoint names.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }
}

/// A signed checkpoint, as sinks hold it (one JSON object) and exports carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version: 1.
    pub version: u32,
    /// See [`Claim::number`].
    pub number: u64,
    /// See [`Claim::prev`].
    pub prev: String,
    /// See [`Claim::seq`].
    pub seq: i64,
    /// See [`Claim::head_hash`].
    pub head_hash: String,
    /// See [`Claim::event_count`].
    pub event_count: u64,
    /// When it was signed (RFC 3339, UTC, milliseconds).
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// See [`Claim::broker_id`].
    pub broker_id: String,
    /// [`Claim::hash`].
    pub hash: String,
    /// `ed25519` or `ecdsa-p256-sha256`.
    pub alg: Alg,
    /// The signing key's id: the first 16 bytes of the SHA-256 of its public key (SPKI DER), hex.
    pub key_id: String,
    /// The signature over the canonical encoding, base64 (Ed25519: 64 bytes; ECDSA: DER).
    pub signature: String,
}

/// Why a checkpoint cannot be believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

impl Checkpoint {
    /// Signs `claim` with `signer`.
    pub async fn sign(claim: Claim, signer: &dyn Signer) -> Result<Self, keys::KeyError> {
        let signature = signer.sign(&claim.canonical_bytes()).await?;
        let at = crate::clock::from_ms(claim.at);
        Ok(Self {
            version: 1,
            hash: claim.hash(),
            number: claim.number,
            prev: claim.prev,
            seq: claim.seq,
            head_hash: claim.head_hash,
            event_count: claim.event_count,
            at,
            broker_id: claim.broker_id,
            alg: signer.public_key().alg(),
            key_id: signer.public_key().key_id(),
            signature: base64::engine::general_purpose::STANDARD.encode(signature),
        })
    }

    /// What it asserts.
    pub fn claim(&self) -> Claim {
        Claim {
            number: self.number,
            prev: self.prev.clone(),
            seq: self.seq,
            head_hash: self.head_hash.clone(),
            event_count: self.event_count,
            at: crate::clock::to_ms(self.at),
            broker_id: self.broker_id.clone(),
        }
    }

    /// Checks that its fields hash to `hash` and that `key` signed them.
    pub fn verify(&self, key: &PublicKey) -> Result<(), Invalid> {
        if self.version != 1 {
            return Err(Invalid(format!(
                "checkpoint {}: unknown version {}",
                self.number, self.version
            )));
        }
        let claim = self.claim();
        if claim.hash() != self.hash {
            return Err(Invalid(format!(
                "checkpoint {}: its fields do not match its hash",
                self.number
            )));
        }
        let signature = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| {
                Invalid(format!(
                    "checkpoint {}: the signature is not base64",
                    self.number
                ))
            })?;
        if key.verify(&claim.canonical_bytes(), &signature) {
            Ok(())
        } else {
            Err(Invalid(format!(
                "checkpoint {}: the signature does not verify with this public key (key {}; signed by key {})",
                self.number,
                key.key_id(),
                self.key_id
            )))
        }
    }

    /// The JSON text sinks store: one line.
    pub fn to_json(&self) -> String {
        // A struct of strings and numbers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a checkpoint's JSON text; `what` names it in the error.
    pub fn from_json(text: &str, what: &str) -> Result<Self, Invalid> {
        serde_json::from_str(text.trim())
            .map_err(|e| Invalid(format!("{what}: not a checkpoint: {e}")))
    }

    /// The summary the API and the pages show.
    pub fn to_api(&self) -> jit_api::CheckpointInfo {
        jit_api::CheckpointInfo {
            number: self.number,
            seq: self.seq,
            head_hash: self.head_hash.clone(),
            event_count: self.event_count,
            at: self.at,
            broker_id: self.broker_id.clone(),
            key_id: self.key_id.clone(),
        }
    }
}

/// The file or object name of checkpoint `number` in a sink.
pub fn object_name(number: u64) -> String {
    format!("checkpoint-{number:012}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Claim {
        Claim {
            number: 1,
            prev: GENESIS.to_owned(),
            seq: 2,
            head_hash: "c7edebbe6d0b138eefa53ef28f4d586e213b89c4e9d1aa021aa002fbe34aedc7"
                .to_owned(),
            event_count: 2,
            at: 1_767_225_720_000,
            broker_id: "jit-1".to_owned(),
        }
    }

    #[test]
    fn the_documented_example_encodes_as_published() {
        let text = String::from_utf8(claim().canonical_bytes()).unwrap();
        assert_eq!(
            text,
            "jit-checkpoint-v1\n1:1\n64:0000000000000000000000000000000000000000000000000000000000000000\n\
             1:2\n64:c7edebbe6d0b138eefa53ef28f4d586e213b89c4e9d1aa021aa002fbe34aedc7\n1:2\n\
             13:1767225720000\n5:jit-1\n"
        );
        assert_eq!(
            claim().hash(),
            "108b01c3eed1ee7d306587c69f9c24120ad1d7c8ef379b0f639ab56c7efe8966",
            "docs/audit.md publishes it"
        );
        assert_eq!(claim().hash(), hex::encode(Sha256::digest(text.as_bytes())));
    }

    #[tokio::test]
    async fn a_signed_checkpoint_verifies_and_any_change_breaks_it() {
        let (signer, _) = keys::generate().unwrap();
        let key = signer.public_key().clone();
        let cp = Checkpoint::sign(claim(), &signer).await.unwrap();
        cp.verify(&key).unwrap();
        let again = Checkpoint::from_json(&cp.to_json(), "test").unwrap();
        assert_eq!(again, cp);
        again.verify(&key).unwrap();

        let mut moved = cp.clone();
        moved.seq = 3;
        assert!(
            moved
                .verify(&key)
                .unwrap_err()
                .0
                .contains("do not match its hash")
        );
        moved.hash = moved.claim().hash();
        assert!(
            moved
                .verify(&key)
                .unwrap_err()
                .0
                .contains("does not verify")
        );

        let (other, _) = keys::generate().unwrap();
        let e = cp.verify(other.public_key()).unwrap_err().0;
        assert!(e.contains("does not verify with this public key"), "{e}");
    }
}
