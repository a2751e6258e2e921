//! Config secrets kept in AWS Secrets Manager: `aws-sm:<secret id>[#json-key]`.
//!
//! A reference is read once before the broker starts ([`resolve`]; a secret that cannot be
//! read stops the start, naming the key and the reference, never a value), again every
//! `secrets.refresh_every` ([`spawn_refresh`]), and again when an upstream refuses the value
//! it holds ([`crate::config::Secret::refresh`]), so a secret rotated in Secrets Manager is
//! picked up without a restart. The secret id is an ARN or a name; with `#json-key` the
//! secret string is a JSON object and the value is its member `json-key` (a string).

use std::fmt;
use std::time::Duration;

use crate::config::{Config, ConfigError, Secret};

/// `aws-sm:<secret id>[#json-key]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Secret name or ARN (`SecretId`).
    pub id: String,
    /// The member of the JSON secret string, if the value is one.
    pub key: Option<String>,
}

impl Reference {
    /// The prefix of a reference in the configuration.
    pub const PREFIX: &'static str = "aws-sm:";

    /// Parses what follows `aws-sm:`.
    pub fn parse(rest: &str) -> Result<Self, String> {
        let (id, key) = match rest.split_once('#') {
            Some((id, key)) => (id, Some(key)),
            None => (rest, None),
        };
        if id.is_empty() {
            return Err("`aws-sm:` needs a secret id: `aws-sm:<secret id>[#json-key]`".to_owned());
        }
        if let Some(key) = key
            && key.is_empty()
        {
            return Err(format!(
                "`aws-sm:{id}#` names no JSON key: `aws-sm:<secret id>#<json-key>`"
            ));
        }
        Ok(Self {
            id: id.to_owned(),
            key: key.map(str::to_owned),
        })
    }

    /// The value from a secret string: all of it, or member `key` of its JSON object.
    pub fn pick(&self, secret_string: &str) -> Result<String, String> {
        let value = match &self.key {
            None => secret_string.to_owned(),
            Some(key) => {
                // serde's message could quote the secret text: say only what is wrong
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(secret_string)
                        .map_err(|_| format!("`{self}`: the secret string is not a JSON object"))?;
                match object.get(key) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(_) => return Err(format!("`{self}`: `{key}` is not a string")),
                    None => return Err(format!("`{self}`: the secret has no key `{key}`")),
                }
            }
        };
        if value.is_empty() {
            return Err(format!("`{self}` is empty"));
        }
        Ok(value)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.id)?;
        if let Some(key) = &self.key {
            write!(f, "#{key}")?;
        }
        Ok(())
    }
}

/// The Secrets Manager client that reads references (with `[aws]`'s region and endpoint).
#[cfg(feature = "aws")]
pub type Client = aws_sdk_secretsmanager::Client;

/// Without the `aws` feature there is nothing to read references with.
#[cfg(not(feature = "aws"))]
#[derive(Debug, Clone)]
pub enum Client {}

/// A client of Secrets Manager with the settings of `[aws]`.
#[cfg(feature = "aws")]
pub async fn client(aws: Option<&crate::config::AwsConfig>) -> Client {
    let sdk = crate::cloud::sdk_config(aws).await;
    let mut conf = aws_sdk_secretsmanager::config::Builder::from(&sdk);
    if let Some(url) = crate::cloud::endpoint_url(aws) {
        conf = conf.endpoint_url(url);
    }
    Client::from_conf(conf.build())
}

/// Reads `reference` (`GetSecretValue`, current version).
#[cfg(feature = "aws")]
pub(crate) async fn read(client: &Client, reference: &Reference) -> Result<String, String> {
    let out = client
        .get_secret_value()
        .secret_id(&reference.id)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot read `{reference}` from AWS Secrets Manager: {}",
                crate::cloud::describe(&e)
            )
        })?;
    let text = out.secret_string().ok_or_else(|| {
        format!("`{reference}` holds no secret string (binary secrets are not read)")
    })?;
    reference.pick(text)
}

#[cfg(not(feature = "aws"))]
pub(crate) async fn read(client: &Client, _reference: &Reference) -> Result<String, String> {
    match *client {}
}

/// Reads every `aws-sm:` reference of `config` once, before anything uses them; the first
/// that cannot be read is the error (naming its key and reference). Checks afterwards what
/// could not be checked at load (the session key's form).
pub async fn resolve(config: &Config) -> Result<(), ConfigError> {
    let remote: Vec<(&'static str, &Secret)> = config
        .secrets()
        .into_iter()
        .filter(|(_, s)| s.reference().is_some())
        .collect();
    if remote.is_empty() {
        return Ok(());
    }
    #[cfg(feature = "aws")]
    {
        let sm = client(config.aws.as_ref()).await;
        resolve_with(&remote, &sm).await?;
        config.validate_secrets()
    }
    #[cfg(not(feature = "aws"))]
    {
        let (key, _) = remote[0];
        Err(ConfigError::Invalid {
            key,
            problem: "`aws-sm:` references need a broker built with the `aws` feature".to_owned(),
        })
    }
}

/// Reads the references in `secrets` with `client` (tests give a client of their own).
#[cfg(feature = "aws")]
pub async fn resolve_with(
    secrets: &[(&'static str, &Secret)],
    client: &Client,
) -> Result<(), ConfigError> {
    for (key, secret) in secrets {
        secret
            .attach(client.clone())
            .await
            .map_err(|problem| ConfigError::Invalid { key, problem })?;
    }
    Ok(())
}

/// Re-reads every reference of `config` every `every`, keeping the value it has when a read
/// fails (logged with the reference, never a value).
pub fn spawn_refresh(config: &Config, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
    let remote: Vec<(&'static str, Secret)> = config
        .secrets()
        .into_iter()
        .filter(|(_, s)| s.reference().is_some())
        .map(|(k, s)| (k, s.clone()))
        .collect();
    if remote.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            for (key, secret) in &remote {
                match secret.refresh().await {
                    Ok(true) => tracing::info!(key, "secret re-read: it changed"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(key, error = %e, "secret not re-read, keeping the value held");
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_id_and_json_key() {
        let r = Reference::parse("prod/jit#oidc_client_secret").unwrap();
        assert_eq!(r.id, "prod/jit");
        assert_eq!(r.key.as_deref(), Some("oidc_client_secret"));
        assert_eq!(r.to_string(), "aws-sm:prod/jit#oidc_client_secret");
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:jit-AbCdEf";
        let r = Reference::parse(arn).unwrap();
        assert_eq!((r.id.as_str(), r.key), (arn, None));
        assert!(Reference::parse("").is_err());
        assert!(Reference::parse("#key").is_err());
        assert!(Reference::parse("id#").is_err());
    }

    #[test]
    fn picks_the_value_without_quoting_it() {
        let r = Reference::parse("s#k").unwrap();
        assert_eq!(r.pick(r#"{"k":"v1","o":"x"}"#).unwrap(), "v1");
        let e = r.pick("not json hunter2").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(r.pick(r#"{"o":"x"}"#).unwrap_err().contains("no key `k`"));
        assert!(r.pick(r#"{"k":1}"#).unwrap_err().contains("not a string"));
        assert!(r.pick(r#"{"k":""}"#).unwrap_err().contains("empty"));
        let whole = Reference::parse("s").unwrap();
        assert_eq!(whole.pick("raw value").unwrap(), "raw value");
    }
}
