//! A checkpoint signer whose private key never leaves AWS KMS: a customer-managed asymmetric
//! key of spec `ECC_NIST_P256`, signing with `ECDSA_SHA_256` (`audit.signing_key =
//! "kms:<key id, ARN or alias>"`). Rotation is KMS's; verification takes the key's public key
//! (from `GetPublicKey`, or a PEM file exported from it).

use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, MessageType, SigningAlgorithmSpec};

use super::keys::{Alg, KeyError, PublicKey, Signer};
use crate::cloud::describe;

/// A KMS key and its public key.
pub struct KmsSigner {
    client: aws_sdk_kms::Client,
    key: String,
    public: PublicKey,
}

impl std::fmt::Debug for KmsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KmsSigner({}, {})", self.key, self.public.key_id())
    }
}

/// A KMS client with the settings of `[aws]`.
async fn client(aws: Option<&crate::config::AwsConfig>) -> aws_sdk_kms::Client {
    let sdk = crate::cloud::sdk_config(aws).await;
    let mut conf = aws_sdk_kms::config::Builder::from(&sdk);
    if let Some(url) = crate::cloud::endpoint_url(aws) {
        conf = conf.endpoint_url(url);
    }
    aws_sdk_kms::Client::from_conf(conf.build())
}

/// The public key of KMS key `key` (`GetPublicKey`); refuses a key that is not an
/// `ECC_NIST_P256` signing key.
pub async fn public_key(
    aws: Option<&crate::config::AwsConfig>,
    key: &str,
) -> Result<PublicKey, KeyError> {
    fetch_public_key(&client(aws).await, key).await
}

async fn fetch_public_key(client: &aws_sdk_kms::Client, key: &str) -> Result<PublicKey, KeyError> {
    let out = client
        .get_public_key()
        .key_id(key)
        .send()
        .await
        .map_err(|e| KeyError::Invalid(format!("KMS key `{key}`: {}", describe(&e))))?;
    let not_p256 = || {
        KeyError::Invalid(format!(
            "KMS key `{key}` is not an ECC_NIST_P256 signing key with ECDSA_SHA_256"
        ))
    };
    // The key's spec is read from its public key (KMS also names it in `KeySpec`, which not
    // every implementation fills in).
    if out.key_spec().is_some_and(|s| *s != KeySpec::EccNistP256)
        || !out
            .signing_algorithms()
            .contains(&SigningAlgorithmSpec::EcdsaSha256)
    {
        return Err(not_p256());
    }
    let der = out
        .public_key()
        .ok_or_else(|| KeyError::Invalid(format!("KMS key `{key}`: no public key returned")))?;
    let public = PublicKey::from_der(der.as_ref()).map_err(|_| not_p256())?;
    if public.alg() != Alg::EcdsaP256Sha256 {
        return Err(not_p256());
    }
    Ok(public)
}

impl KmsSigner {
    /// Reads the key's public key, checking its spec.
    pub async fn new(aws: Option<&crate::config::AwsConfig>, key: &str) -> Result<Self, KeyError> {
        let client = client(aws).await;
        let public = fetch_public_key(&client, key).await?;
        Ok(Self {
            client,
            key: key.to_owned(),
            public,
        })
    }
}

#[async_trait]
impl Signer for KmsSigner {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let out = self
            .client
            .sign()
            .key_id(&self.key)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| KeyError::Sign(format!("KMS key `{}`: {}", self.key, describe(&e))))?;
        out.signature()
            .map(|s| s.as_ref().to_vec())
            .ok_or_else(|| KeyError::Sign(format!("KMS key `{}`: no signature returned", self.key)))
    }
}
