//! Server configuration: one TOML file, every key overridable by `JIT_SECTION__KEY`.
//!
//! Secrets may be literals or `env:NAME` / `file:PATH` references, resolved once at load
//! time, or `aws-sm:<secret id>[#json-key]` references to AWS Secrets Manager, read before
//! the broker starts and re-read later ([`crate::secrets`]); all are [`Secret`]s that never
//! print.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;
use url::Url;

/// A configuration problem, always naming the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a value has the wrong type.
    #[error("config: {0}")]
    Parse(String),
    /// A key holds a value that is not allowed.
    #[error("config: `{key}`: {problem}")]
    Invalid {
        /// Dotted key, e.g. `server.bind`.
        key: &'static str,
        /// What is wrong, lowercase, no trailing period.
        problem: String,
    },
}

impl ConfigError {
    fn invalid(key: &'static str, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            problem: problem.into(),
        }
    }
}

/// A secret value: a literal, `env:NAME` or `file:PATH` (resolved at load), or an
/// `aws-sm:<secret id>[#json-key]` reference to AWS Secrets Manager (read by
/// [`crate::secrets::resolve`] before the broker starts, and again by [`Secret::refresh`]).
/// Clones share the value, so a re-read reaches every holder.
#[derive(Clone)]
pub struct Secret(Arc<SecretInner>);

struct SecretInner {
    value: std::sync::RwLock<SecretString>,
    remote: Option<Remote>,
}

/// Where an `aws-sm:` secret is read from, once the broker has a client.
struct Remote {
    reference: crate::secrets::Reference,
    client: std::sync::OnceLock<crate::secrets::Client>,
    /// One read at a time.
    reading: tokio::sync::Mutex<()>,
}

/// A secret's text for one use; keep it out of logs.
pub struct Exposed(SecretString);

impl std::ops::Deref for Exposed {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.expose_secret()
    }
}

impl Secret {
    /// Wraps a value that is already resolved.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Arc::new(SecretInner {
            value: std::sync::RwLock::new(SecretString::from(value.into())),
            remote: None,
        }))
    }

    /// The secret text (the current value of an `aws-sm:` reference; empty before it is
    /// read); keep it out of logs.
    pub fn expose(&self) -> Exposed {
        Exposed(
            self.0
                .value
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }

    /// The `aws-sm:` reference, if the value comes from Secrets Manager.
    pub fn reference(&self) -> Option<&crate::secrets::Reference> {
        self.0.remote.as_ref().map(|r| &r.reference)
    }

    /// An `aws-sm:` secret: reads it with `client`, which later re-reads use.
    #[cfg(feature = "aws")]
    pub(crate) async fn attach(&self, client: crate::secrets::Client) -> Result<(), String> {
        if let Some(remote) = &self.0.remote {
            let _ = remote.client.set(client);
            self.refresh().await?;
        }
        Ok(())
    }

    /// Re-reads an `aws-sm:` secret (when an upstream refused the value held, and every
    /// `secrets.refresh_every`): whether the value changed. Other secrets never change.
    pub async fn refresh(&self) -> Result<bool, String> {
        let Some(remote) = &self.0.remote else {
            return Ok(false);
        };
        let Some(client) = remote.client.get() else {
            return Err(format!("`{}` has not been read", remote.reference));
        };
        let _one = remote.reading.lock().await;
        let fresh = crate::secrets::read(client, &remote.reference).await?;
        let mut value = self
            .0
            .value
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = value.expose_secret() != fresh;
        *value = SecretString::from(fresh);
        Ok(changed)
    }

    /// Resolves `env:NAME`, `file:PATH` or a literal; keeps an `aws-sm:` reference to read.
    pub fn resolve(raw: &str) -> Result<Self, String> {
        if let Some(rest) = raw.strip_prefix(crate::secrets::Reference::PREFIX) {
            let reference = crate::secrets::Reference::parse(rest)?;
            Ok(Self(Arc::new(SecretInner {
                value: std::sync::RwLock::new(SecretString::from(String::new())),
                remote: Some(Remote {
                    reference,
                    client: std::sync::OnceLock::new(),
                    reading: tokio::sync::Mutex::new(()),
                }),
            })))
        } else if let Some(name) = raw.strip_prefix("env:") {
            let value = std::env::var(name)
                .map_err(|_| format!("environment variable `{name}` is not set"))?;
            if value.is_empty() {
                return Err(format!("environment variable `{name}` is empty"));
            }
            Ok(Self::new(value))
        } else if let Some(path) = raw.strip_prefix("file:") {
            let value = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read secret file `{path}`: {e}"))?;
            let value = value.trim_end_matches(['\n', '\r']);
            if value.is_empty() {
                return Err(format!("secret file `{path}` is empty"));
            }
            Ok(Self::new(value))
        } else if raw.is_empty() {
            Err("secret is empty".to_owned())
        } else {
            Ok(Self::new(raw))
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // serde's own type error quotes the value (`found unsigned int `12345``): a secret
        // written as a number would reach the error line, so it gets a message of its own.
        let raw = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a string: the secret itself, `env:NAME`, `file:PATH` or `aws-sm:ID[#KEY]` (the value is not shown)",
            )
        })?;
        Self::resolve(&raw).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[database]`.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// `[oidc]`; absent only in development mode.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// `[aws]`.
    #[serde(default)]
    pub aws: Option<AwsConfig>,
    /// `[entra]`.
    #[serde(default)]
    pub entra: Option<EntraConfig>,
    /// `[azure]`: Azure resource roles through PIM (`azure_role`).
    #[serde(default)]
    pub azure: Option<AzureConfig>,
    /// `[notify]`.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// `[policy]`.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// `[scheduler]`.
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// `[audit]`.
    #[serde(default)]
    pub audit: AuditConfig,
    /// `[secrets]`: how `aws-sm:` references are kept fresh.
    #[serde(default)]
    pub secrets: SecretsConfig,
}

/// `[secrets]`: `aws-sm:` references (docs/deploy.md, "Secrets").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// How often every `aws-sm:` reference is re-read (besides when an upstream refuses the
    /// value held).
    #[serde(default = "default_secrets_refresh_every")]
    pub refresh_every: ConfigDuration,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            refresh_every: default_secrets_refresh_every(),
        }
    }
}

fn default_secrets_refresh_every() -> ConfigDuration {
    ConfigDuration::from_secs(3600)
}

/// `[audit]`: signed checkpoints of the audit chain (docs/audit.md, "Signed checkpoints") and
/// the spool of held events ("Held events").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The checkpoint signing key: `kms:<key id, ARN or alias>` (an `ECC_NIST_P256` KMS key), or
    /// an Ed25519 private key (PKCS#8 PEM, from `jit-server audit keygen`) as `file:PATH` or
    /// `env:NAME`. Unset: no checkpoints.
    #[serde(default)]
    pub signing_key: Option<String>,
    /// The public key `audit verify` checks checkpoints with: a PEM file (`file:PATH`) or
    /// `kms:<key>`. Default: the signing key's.
    #[serde(default)]
    pub public_key: Option<String>,
    /// How often a checkpoint is signed when the chain has grown (and at shutdown).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: ConfigDuration,
    /// Where checkpoints go: `s3://bucket/prefix` (Object Lock), `file:///directory`.
    #[serde(default)]
    pub checkpoint_sinks: Vec<String>,
    /// How long S3 keeps each checkpoint locked (COMPLIANCE mode), in days.
    #[serde(default = "default_checkpoint_retention_days")]
    pub checkpoint_retention_days: u32,
    /// The name this broker signs checkpoints with (default: the host's name).
    #[serde(default)]
    pub broker_id: Option<String>,
    /// The file where a removal's audit events wait while the audit store
    /// fails (docs/audit.md, "Held events"). Default: next to a SQLite
    /// database (`<file>.audit-spool`), else `jit-audit-spool` in the
    /// working directory.
    #[serde(default)]
    pub spool: Option<std::path::PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            signing_key: None,
            public_key: None,
            checkpoint_every: default_checkpoint_every(),
            checkpoint_sinks: Vec::new(),
            checkpoint_retention_days: default_checkpoint_retention_days(),
            broker_id: None,
            spool: None,
        }
    }
}

fn default_checkpoint_every() -> ConfigDuration {
    ConfigDuration::from_secs(60)
}
fn default_checkpoint_retention_days() -> u32 {
    2557
}

impl AuditConfig {
    /// The broker's name in checkpoints: `audit.broker_id`, else the host's name.
    pub fn broker_id(&self) -> String {
        self.broker_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "jit".to_owned())
        })
    }
}

impl Config {
    /// The audit spool's file (`audit.spool`, or its default).
    pub fn audit_spool(&self) -> std::path::PathBuf {
        if let Some(path) = &self.audit.spool {
            return path.clone();
        }
        match self.database.url.strip_prefix("sqlite:") {
            Some(rest) => {
                let file = rest.split('?').next().unwrap_or(rest);
                let file = file.strip_prefix("//").unwrap_or(file);
                std::path::PathBuf::from(format!("{file}.audit-spool"))
            }
            None => std::path::PathBuf::from("jit-audit-spool"),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Base URL users reach the broker at (links, OIDC redirect).
    #[serde(default = "default_public_url")]
    pub public_url: String,
    /// Key material for session and CSRF MACs: 64+ random bytes, base64.
    #[serde(default)]
    pub session_key: Option<Secret>,
    /// Idle session timeout.
    #[serde(default = "default_idle")]
    pub session_idle_timeout: ConfigDuration,
    /// Absolute session lifetime.
    #[serde(default = "default_absolute")]
    pub session_absolute_timeout: ConfigDuration,
    /// Log format: `json` (default) or `text`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// The longest a long poll goes without reading its request again, in
    /// case word of a change was lost (at least 1 s).
    #[serde(default = "default_long_poll_reread")]
    pub long_poll_reread: ConfigDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: default_bind(),
            public_url: default_public_url(),
            session_key: None,
            session_idle_timeout: default_idle(),
            session_absolute_timeout: default_absolute(),
            log_format: default_log_format(),
            long_poll_reread: default_long_poll_reread(),
        }
    }
}

fn default_bind() -> String {
    "127.0.0.1:8080".to_owned()
}
fn default_public_url() -> String {
    "http://127.0.0.1:8080".to_owned()
}
fn default_long_poll_reread() -> ConfigDuration {
    ConfigDuration::from_secs(5)
}
fn default_idle() -> ConfigDuration {
    ConfigDuration::from_secs(3600)
}
fn default_absolute() -> ConfigDuration {
    ConfigDuration::from_secs(43200)
}
fn default_log_format() -> String {
    "json".to_owned()
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://jit.db` or `postgres://…`.
    #[serde(default = "default_db_url")]
    pub url: String,
    /// Pool size (PostgreSQL; SQLite writes through one connection).
    #[serde(default = "default_pool")]
    pub max_connections: u32,
    /// What `jit-server migrate` connects as: the owner of the tables (default: `url`).
    #[serde(default)]
    pub migrate_url: Option<String>,
    /// PostgreSQL: the role `serve` connects as (through `url`). `migrate` grants it exactly
    /// what the broker needs; `serve` then runs no DDL and refuses to run as the owner.
    #[serde(default)]
    pub app_role: Option<String>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: default_db_url(),
            max_connections: default_pool(),
            migrate_url: None,
            app_role: None,
        }
    }
}

impl DatabaseConfig {
    /// The URL `jit-server migrate` connects with.
    pub fn migrate_url(&self) -> &str {
        self.migrate_url.as_deref().unwrap_or(&self.url)
    }

    /// Development mode (`--dev`): the default database becomes [`DEV_DATABASE_URL`], so
    /// `serve --dev` and the audit commands with `--dev` open the same file; a URL the
    /// configuration sets stays.
    pub fn use_dev_database(&mut self) {
        if self.url == default_db_url() {
            DEV_DATABASE_URL.clone_into(&mut self.url);
        }
    }
}

/// The database of `jit-server serve --dev` (unless `database.url` says otherwise).
pub const DEV_DATABASE_URL: &str = "sqlite://jit-dev.db";

fn default_db_url() -> String {
    "sqlite://jit.db".to_owned()
}
fn default_pool() -> u32 {
    10
}

/// `[oidc]`: the identity provider (Entra ID in production).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Issuer URL; discovery is read from it.
    pub issuer: String,
    /// Confidential web client id.
    pub client_id: String,
    /// Its secret.
    pub client_secret: Secret,
    /// Scopes of the browser sign-in.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// `aud` of bearer tokens the CLI sends.
    pub api_audience: String,
    /// Public client used by `jit login`.
    #[serde(default)]
    pub cli_client_id: Option<String>,
    /// Scopes `jit login` asks for.
    #[serde(default)]
    pub cli_scopes: Vec<String>,
    /// Scope that must be granted in `scp` / `scope`.
    #[serde(default)]
    pub required_scope: Option<String>,
    /// Tenant to pin (`tid`); derived from an Entra v2.0 issuer when absent.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Claim names.
    #[serde(default)]
    pub claims: ClaimMapping,
    /// Longest accepted age of a sign-in for `require_mfa` entitlements.
    #[serde(default = "default_mfa_max_age")]
    pub mfa_max_age: ConfigDuration,
    /// Accept tokens of any tenant when none is pinned (providers without tenants). Off by
    /// default: a production broker refuses to start without a tenant to pin.
    #[serde(default)]
    pub allow_any_tenant: bool,
    /// Longest lifetime of an ID or access token: `exp` at most this long after `iat`.
    #[serde(default = "default_max_token_lifetime")]
    pub max_token_lifetime: ConfigDuration,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "offline_access"]
        .map(str::to_owned)
        .to_vec()
}
fn default_mfa_max_age() -> ConfigDuration {
    ConfigDuration::from_secs(3600)
}
fn default_max_token_lifetime() -> ConfigDuration {
    ConfigDuration::from_secs(86400)
}

/// Which token claims carry what; Entra defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimMapping {
    /// Stable user id claim.
    pub user_id: String,
    /// Tenant claim, part of the user key.
    pub tenant: String,
    /// Display name.
    pub name: String,
    /// Email claims, first present wins.
    pub email: Vec<String>,
    /// Group ids.
    pub groups: String,
    /// App roles.
    pub roles: String,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            user_id: "oid".to_owned(),
            tenant: "tid".to_owned(),
            name: "name".to_owned(),
            email: vec!["email".to_owned(), "preferred_username".to_owned()],
            groups: "groups".to_owned(),
            roles: "roles".to_owned(),
        }
    }
}

/// `[aws]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// Region for STS and Identity Center.
    #[serde(default = "default_region")]
    pub region: String,
    /// Endpoint override (tests only).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// `arn:aws:sso:::instance/ssoins-…`.
    #[serde(default)]
    pub identity_center_instance_arn: Option<String>,
    /// `d-…`.
    #[serde(default)]
    pub identity_store_id: Option<String>,
    /// Federation endpoint for console sign-in.
    #[serde(default = "default_federation_url")]
    pub federation_url: String,
    /// Console destination after sign-in.
    #[serde(default = "default_console_url")]
    pub console_url: String,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}
fn default_federation_url() -> String {
    "https://signin.aws.amazon.com/federation".to_owned()
}
fn default_console_url() -> String {
    "https://console.aws.amazon.com/".to_owned()
}

/// `[entra]`: the broker's own app for Microsoft Graph.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraConfig {
    /// Directory (tenant) id.
    pub tenant_id: String,
    /// App (client) id.
    pub client_id: String,
    /// Client secret.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// PEM private key for `private_key_jwt`.
    #[serde(default)]
    pub certificate_key: Option<Secret>,
    /// PEM certificate matching `certificate_key`.
    #[serde(default)]
    pub certificate: Option<String>,
    /// Graph base URL (tests only).
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// Login base URL (tests only).
    #[serde(default = "default_login_url")]
    pub login_url: String,
}

impl EntraConfig {
    /// The broker's app as the login endpoint knows it.
    pub fn app(&self) -> AppCredentials {
        AppCredentials {
            section: "entra",
            tenant_id: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            certificate_key: self.certificate_key.clone(),
            certificate: self.certificate.clone(),
            login_url: self.login_url.clone(),
        }
    }
}

/// `[azure]`: the broker's app for Azure Resource Manager. Tenant and app
/// credentials default to `[entra]`'s; an own `client_id` brings its own secret
/// or certificate (never mixed with `[entra]`'s).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// Azure Resource Manager base URL (tests point it at the in-repo fake).
    #[serde(default = "default_arm_url")]
    pub arm_url: String,
    /// Login base URL; defaults to `[entra]`'s.
    #[serde(default)]
    pub login_url: Option<String>,
    /// Directory (tenant) id; defaults to `[entra]`'s.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// App (client) id; defaults to `[entra]`'s, with its secret or certificate.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Client secret of `client_id`.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// PEM private key for `private_key_jwt` of `client_id`.
    #[serde(default)]
    pub certificate_key: Option<Secret>,
    /// PEM certificate matching `certificate_key`.
    #[serde(default)]
    pub certificate: Option<String>,
}

impl Default for AzureConfig {
    fn default() -> Self {
        Self {
            arm_url: default_arm_url(),
            login_url: None,
            tenant_id: None,
            client_id: None,
            client_secret: None,
            certificate_key: None,
            certificate: None,
        }
    }
}

fn default_arm_url() -> String {
    "https://management.azure.com".to_owned()
}

/// An app registration as the Microsoft login endpoint knows it: who the broker
/// is when it asks for a client-credentials token.
#[derive(Debug, Clone)]
pub struct AppCredentials {
    /// The section the values come from (`entra`, `azure`), for messages.
    pub section: &'static str,
    /// Directory (tenant) id.
    pub tenant_id: String,
    /// App (client) id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: Option<Secret>,
    /// PEM private key for `private_key_jwt`.
    pub certificate_key: Option<Secret>,
    /// PEM certificate matching `certificate_key`.
    pub certificate: Option<String>,
    /// Login base URL.
    pub login_url: String,
}

fn default_graph_url() -> String {
    "https://graph.microsoft.com/v1.0".to_owned()
}
fn default_login_url() -> String {
    "https://login.microsoftonline.com".to_owned()
}

/// `[notify]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// `[notify.email]`.
    #[serde(default)]
    pub email: Option<EmailConfig>,
    /// `[notify.teams]`.
    #[serde(default)]
    pub teams: Option<TeamsConfig>,
    /// Warn the requester this long before a grant ends.
    #[serde(default = "default_expiry_warning")]
    pub expiry_warning: ConfigDuration,
    /// Addresses told of every break-glass use.
    #[serde(default)]
    pub security_emails: Vec<String>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            email: None,
            teams: None,
            expiry_warning: default_expiry_warning(),
            security_emails: Vec::new(),
        }
    }
}

fn default_expiry_warning() -> ConfigDuration {
    ConfigDuration::from_secs(600)
}

/// `[notify.email]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp://host:port`, `smtps://…` or `smtp://…?tls=required`; may carry user:password.
    pub smtp_url: Secret,
    /// From header.
    pub from: String,
}

/// `[notify.teams]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfig {
    /// Workflows webhook URL (it is a credential).
    pub webhook_url: Secret,
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Directory with `entitlements.toml`, `schema.cedarschema` and `*.cedar`.
    #[serde(default = "default_policy_dir")]
    pub dir: PathBuf,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: default_policy_dir(),
        }
    }
}

fn default_policy_dir() -> PathBuf {
    PathBuf::from("policies")
}

/// `[scheduler]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// How often due jobs are looked for.
    #[serde(default = "default_tick")]
    pub tick: ConfigDuration,
    /// How often drift reconciliation runs.
    #[serde(default = "default_reconcile")]
    pub reconcile_every: ConfigDuration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            tick: default_tick(),
            reconcile_every: default_reconcile(),
        }
    }
}

fn default_tick() -> ConfigDuration {
    ConfigDuration::from_secs(1)
}
fn default_reconcile() -> ConfigDuration {
    ConfigDuration::from_secs(300)
}

/// A duration key (`15m`, `1h30m`, seconds as digits), parsed when the configuration is read:
/// a value that is not one is an error naming its key, so a running broker holds only
/// durations that parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(u64);

impl ConfigDuration {
    /// `secs` seconds.
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs)
    }

    /// In seconds.
    #[must_use]
    pub const fn secs(self) -> u64 {
        self.0
    }

    /// As a [`Duration`](std::time::Duration).
    #[must_use]
    pub const fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }
}

impl std::str::FromStr for ConfigDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        jit_api::parse_duration(s)
            .map(Self)
            .map_err(|e| e.to_string())
    }
}

impl std::fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&jit_api::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Text like `15m`, or whole seconds (an environment variable of digits reads as a number).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration like `15m`, `1h30m` or seconds")
        })? {
            Raw::Seconds(s) => s.to_string().parse(),
            Raw::Text(t) => t.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// One line for a configuration error: the key as the file spells it (figment's own message
/// says `default.entra.client_secret`, its profile leaking in), what is wrong, and where the
/// value came from (the file, or the `JIT_SECTION__KEY` variable).
fn describe(e: &figment::Error) -> String {
    let key = e.path.join(".");
    let source = e.metadata.as_ref().map(|md| match &md.source {
        Some(source) => format!(" (in {source})"),
        None if md.name.contains("environment") && !e.path.is_empty() => format!(
            " (from `JIT_{}`)",
            e.path
                .iter()
                .map(|k| k.to_ascii_uppercase())
                .collect::<Vec<_>>()
                .join("__")
        ),
        None => String::new(),
    });
    let source = source.unwrap_or_default();
    if key.is_empty() {
        format!("{}{source}", e.kind)
    } else {
        format!("`{key}`: {}{source}", e.kind)
    }
}

impl Config {
    /// Loads `path` (if given) and `JIT_SECTION__KEY` overrides, then validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(serde_json::json!({})));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Parse(format!(
                    "config file `{}` does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Self::env());
        Self::extract(&figment)
    }

    /// Parses configuration from TOML text alone (no file, no `JIT_SECTION__KEY`
    /// overrides), then validates it like [`Config::load`]. For tools and fuzzing.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::extract(&Figment::from(Toml::string(text)))
    }

    fn extract(figment: &Figment) -> Result<Self, ConfigError> {
        let config: Self = figment
            .extract()
            .map_err(|e| ConfigError::Parse(describe(&e)))?;
        config.validate()?;
        Ok(config)
    }

    fn env() -> Env {
        // Only `JIT_SECTION__KEY` names are configuration: `JIT_CONFIG`, `JIT_LOG`,
        // the CLI's `JIT_SERVER` and test harness variables are not.
        Env::prefixed("JIT_")
            .filter(|k| k.as_str().contains("__"))
            .split("__")
    }

    /// `[azure]` with the app it signs in as: its own values where given,
    /// `[entra]`'s otherwise. `None` without `[azure]`.
    pub fn azure_app(&self) -> Result<Option<(&AzureConfig, AppCredentials)>, ConfigError> {
        let Some(azure) = &self.azure else {
            return Ok(None);
        };
        let entra = self.entra.as_ref();
        let tenant_id = azure
            .tenant_id
            .clone()
            .or_else(|| entra.map(|e| e.tenant_id.clone()))
            .ok_or_else(|| {
                ConfigError::invalid("azure.tenant_id", "set it, or configure `[entra]`")
            })?;
        let own_credential = azure.client_secret.is_some() || azure.certificate_key.is_some();
        let (section, client_id, client_secret, certificate_key, certificate) = match (
            &azure.client_id,
            entra,
        ) {
            (Some(id), _) => {
                if !own_credential {
                    return Err(ConfigError::invalid(
                        "azure.client_secret",
                        "set `client_secret` or `certificate_key` with `azure.client_id`",
                    ));
                }
                (
                    "azure",
                    id.clone(),
                    azure.client_secret.clone(),
                    azure.certificate_key.clone(),
                    azure.certificate.clone(),
                )
            }
            (None, _) if own_credential => {
                return Err(ConfigError::invalid(
                    "azure.client_id",
                    "required with `azure.client_secret` or `azure.certificate_key`",
                ));
            }
            (None, Some(e)) => (
                "entra",
                e.client_id.clone(),
                e.client_secret.clone(),
                e.certificate_key.clone(),
                e.certificate.clone(),
            ),
            (None, None) => {
                return Err(ConfigError::invalid(
                    "azure.client_id",
                    "set it with a `client_secret` or `certificate_key`, or configure `[entra]`",
                ));
            }
        };
        let login_url = azure
            .login_url
            .clone()
            .or_else(|| entra.map(|e| e.login_url.clone()))
            .unwrap_or_else(default_login_url);
        Ok(Some((
            azure,
            AppCredentials {
                section,
                tenant_id,
                client_id,
                client_secret,
                certificate_key,
                certificate,
                login_url,
            },
        )))
    }

    /// Checks values that parse but make no sense, section by section in file order.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_secrets()?;
        self.validate_database()?;
        self.validate_oidc()?;
        self.validate_aws()?;
        self.validate_entra()?;
        self.validate_azure()?;
        self.validate_audit()?;
        self.validate_email()
    }

    /// Checks `server.bind` and that `server.public_url` is an http(s) URL.
    fn validate_server(&self) -> Result<(), ConfigError> {
        self.bind_addr()?;
        let public = Url::parse(&self.server.public_url)
            .map_err(|e| ConfigError::invalid("server.public_url", format!("not a URL: {e}")))?;
        if !matches!(public.scheme(), "http" | "https") {
            return Err(ConfigError::invalid(
                "server.public_url",
                "must be an http or https URL",
            ));
        }
        Ok(())
    }

    /// Checks the `[database]` URLs, the app role and the pool size.
    fn validate_database(&self) -> Result<(), ConfigError> {
        let db = &self.database.url;
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid(
                "database.url",
                "must start with `sqlite:` or `postgres://`",
            ));
        }
        if let Some(m) = &self.database.migrate_url
            && db.starts_with("sqlite:") != m.starts_with("sqlite:")
        {
            return Err(ConfigError::invalid(
                "database.migrate_url",
                "must be a URL of the same database engine as `database.url`",
            ));
        }
        if let Some(role) = &self.database.app_role {
            validate_app_role(role, db.starts_with("sqlite:"))?;
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Checks the `[oidc]` issuer is https (or loopback) and the API audience is set.
    fn validate_oidc(&self) -> Result<(), ConfigError> {
        let Some(oidc) = &self.oidc else {
            return Ok(());
        };
        let issuer = Url::parse(&oidc.issuer)
            .map_err(|e| ConfigError::invalid("oidc.issuer", format!("not a URL: {e}")))?;
        if issuer.scheme() != "https" && !is_loopback_url(&issuer) {
            return Err(ConfigError::invalid(
                "oidc.issuer",
                "must be https (plain http only on loopback)",
            ));
        }
        if oidc.api_audience.is_empty() {
            return Err(ConfigError::invalid(
                "oidc.api_audience",
                "must not be empty",
            ));
        }
        Ok(())
    }

    /// Checks the `[aws]` endpoint and federation URLs parse.
    fn validate_aws(&self) -> Result<(), ConfigError> {
        let Some(aws) = &self.aws else {
            return Ok(());
        };
        if let Some(endpoint) = &aws.endpoint_url {
            Url::parse(endpoint)
                .map_err(|e| ConfigError::invalid("aws.endpoint_url", format!("not a URL: {e}")))?;
        }
        Url::parse(&aws.federation_url)
            .map_err(|e| ConfigError::invalid("aws.federation_url", format!("not a URL: {e}")))?;
        Ok(())
    }

    /// Checks `[entra]` has a credential and that its URLs parse.
    fn validate_entra(&self) -> Result<(), ConfigError> {
        let Some(entra) = &self.entra else {
            return Ok(());
        };
        if entra.client_secret.is_none() && entra.certificate_key.is_none() {
            return Err(ConfigError::invalid(
                "entra.client_secret",
                "set `client_secret` or `certificate_key`",
            ));
        }
        validate_urls([
            ("entra.graph_url", &entra.graph_url),
            ("entra.login_url", &entra.login_url),
        ])
    }

    /// Checks the `[azure]` app resolves and that its URLs parse.
    fn validate_azure(&self) -> Result<(), ConfigError> {
        let Some((azure, app)) = self.azure_app()? else {
            return Ok(());
        };
        validate_urls([
            ("azure.arm_url", &azure.arm_url),
            ("azure.login_url", &app.login_url),
        ])
    }

    /// Checks `[notify.email]`: an smtp(s) URL (or a secret reference) and a sender.
    fn validate_email(&self) -> Result<(), ConfigError> {
        let Some(email) = &self.notify.email else {
            return Ok(());
        };
        let url = Url::parse(&email.smtp_url.expose()).ok();
        if email.smtp_url.reference().is_none() && url.is_none() {
            return Err(ConfigError::invalid("notify.email.smtp_url", "not a URL"));
        }
        if let Some(url) = url
            && !matches!(url.scheme(), "smtp" | "smtps")
        {
            return Err(ConfigError::invalid(
                "notify.email.smtp_url",
                "must start with `smtp://` or `smtps://`",
            ));
        }
        if email.from.trim().is_empty() {
            return Err(ConfigError::invalid(
                "notify.email.from",
                "must not be empty",
            ));
        }
        Ok(())
    }

    /// Checks `[audit]`: sinks parse, a signing key and sinks come together, retention is set.
    fn validate_audit(&self) -> Result<(), ConfigError> {
        let audit = &self.audit;
        for sink in &audit.checkpoint_sinks {
            crate::checkpoint::sink::SinkSpec::parse(sink)
                .map_err(|e| ConfigError::invalid("audit.checkpoint_sinks", e))?;
        }
        match (&audit.signing_key, audit.checkpoint_sinks.is_empty()) {
            (Some(_), true) => {
                return Err(ConfigError::invalid(
                    "audit.checkpoint_sinks",
                    "a signing key needs at least one sink off the database host \
                     (`s3://bucket/prefix` or `file:///directory`)",
                ));
            }
            (None, false) => {
                return Err(ConfigError::invalid(
                    "audit.signing_key",
                    "checkpoint sinks need a signing key (`jit-server audit keygen`, or `kms:<key>`)",
                ));
            }
            _ => {}
        }
        if let Some(key) = &audit.signing_key
            && key.is_empty()
        {
            return Err(ConfigError::invalid(
                "audit.signing_key",
                "must not be empty",
            ));
        }
        if audit.checkpoint_retention_days == 0 {
            return Err(ConfigError::invalid(
                "audit.checkpoint_retention_days",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The parsed `server.bind`.
    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.bind.parse().map_err(|_| {
            ConfigError::invalid(
                "server.bind",
                format!(
                    "`{}` is not an address like 127.0.0.1:8080",
                    self.server.bind
                ),
            )
        })
    }

    /// Every secret of the configuration with its key, for reading `aws-sm:` references.
    pub fn secrets(&self) -> Vec<(&'static str, &Secret)> {
        let mut all: Vec<(&'static str, Option<&Secret>)> = vec![
            ("server.session_key", self.server.session_key.as_ref()),
            (
                "oidc.client_secret",
                self.oidc.as_ref().map(|o| &o.client_secret),
            ),
            (
                "notify.email.smtp_url",
                self.notify.email.as_ref().map(|e| &e.smtp_url),
            ),
            (
                "notify.teams.webhook_url",
                self.notify.teams.as_ref().map(|t| &t.webhook_url),
            ),
        ];
        if let Some(e) = &self.entra {
            all.push(("entra.client_secret", e.client_secret.as_ref()));
            all.push(("entra.certificate_key", e.certificate_key.as_ref()));
        }
        if let Some(a) = &self.azure {
            all.push(("azure.client_secret", a.client_secret.as_ref()));
            all.push(("azure.certificate_key", a.certificate_key.as_ref()));
        }
        all.into_iter()
            .filter_map(|(k, s)| s.map(|s| (k, s)))
            .collect()
    }

    /// Checks the form of secrets whose value is known (an `aws-sm:` one once it is read).
    pub(crate) fn validate_secrets(&self) -> Result<(), ConfigError> {
        if let Some(key) = &self.server.session_key
            && (key.reference().is_none() || !key.expose().is_empty())
        {
            session_key_bytes(&key.expose())
                .map_err(|e| ConfigError::invalid("server.session_key", e))?;
        }
        Ok(())
    }
}

/// Decodes `server.session_key` (base64, at least 64 bytes).
pub fn session_key_bytes(text: &str) -> Result<Vec<u8>, String> {
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.trim())
        .map_err(|_| "must be base64 (e.g. `openssl rand -base64 64`)".to_owned())?;
    if bytes.len() < 64 {
        return Err(format!("must hold at least 64 bytes, has {}", bytes.len()));
    }
    Ok(bytes)
}

/// Checks `database.app_role` is a plain PostgreSQL role name, and not set for SQLite.
fn validate_app_role(role: &str, sqlite: bool) -> Result<(), ConfigError> {
    if sqlite {
        return Err(ConfigError::invalid(
            "database.app_role",
            "is for PostgreSQL; on SQLite the file's permissions are the boundary",
        ));
    }
    let mut chars = role.chars();
    let ident = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && role.len() <= 63;
    if !ident {
        return Err(ConfigError::invalid(
            "database.app_role",
            format!("`{role}` is not a plain role name (a-z, 0-9, _; like `jit_app`)"),
        ));
    }
    Ok(())
}

/// Checks each value parses as a URL, naming the first key that does not.
fn validate_urls<const N: usize>(urls: [(&'static str, &str); N]) -> Result<(), ConfigError> {
    for (key, value) in urls {
        Url::parse(value).map_err(|e| ConfigError::invalid(key, format!("not a URL: {e}")))?;
    }
    Ok(())
}

fn is_loopback_url(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("jit-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jit.toml");
        std::fs::write(&path, toml).unwrap();
        let result = Config::load(Some(&path));
        std::fs::remove_dir_all(&dir).ok();
        result
    }

    #[test]
    fn defaults_are_valid() {
        let c = load_str("").unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:8080");
        assert_eq!(c.database.url, "sqlite://jit.db");
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_quoted_in_the_error() {
        let e =
            load_str("[entra]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = 91827364\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("entra.client_secret"), "{e}");
        assert!(e.contains("expected a string"), "{e}");
        assert!(!e.contains("91827364"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = load_str("[server]\nbind = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.bind"), "{e}");
        let e = load_str("[database]\nurl = \"mysql://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("database.url"), "{e}");
        let e = load_str("[server]\nbindd = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bindd"), "{e}");
        let e = load_str("[database]\nmax_connections = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_connections"), "{e}");
        // The key as the file spells it: no `default.` profile from the config library.
        let e = load_str("[database]\nmax_connections = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config: `database.max_connections`: invalid type: found string \"many\", expected u32 (in ")
                && e.ends_with("jit.toml)")
                && !e.contains("default."),
            "{e}"
        );
    }

    #[test]
    fn from_toml_str_parses_validates_and_names_keys() {
        let c = Config::from_toml_str(
            "[server]\nbind = \"0.0.0.0:9090\"\n[database]\nurl = \"postgres://db/jit\"\n",
        )
        .unwrap();
        assert_eq!(c.server.bind, "0.0.0.0:9090");
        assert_eq!(c.database.url, "postgres://db/jit");
        assert_eq!(c.scheduler.tick, ConfigDuration::from_secs(1));
        let e = Config::from_toml_str("[scheduler]\ntick = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("scheduler.tick"), "{e}");
        // Parsed once, when read: text or whole seconds; nothing falls back to a default.
        let c = Config::from_toml_str(
            "[scheduler]\ntick = 2\nreconcile_every = \"1h30m\"\n[server]\nlong_poll_reread = \"90s\"\n",
        )
        .unwrap();
        assert_eq!(
            c.scheduler.tick.duration(),
            std::time::Duration::from_secs(2)
        );
        assert_eq!(c.scheduler.reconcile_every.secs(), 5400);
        assert_eq!(c.server.long_poll_reread.to_string(), "1m30s");
        for bad in [
            "[scheduler]\ntick = 0\n",
            "[scheduler]\ntick = -1\n",
            "[scheduler]\ntick = \"\"\n",
            "[oidc]\nissuer = \"https://idp\"\nclient_id = \"c\"\napi_audience = \"a\"\nmfa_max_age = \"an hour\"\n",
        ] {
            let e = Config::from_toml_str(bad).unwrap_err().to_string();
            let key = if bad.contains("mfa_max_age") {
                "oidc.mfa_max_age"
            } else {
                "scheduler.tick"
            };
            assert!(e.contains(key), "{bad}: {e}");
        }
        let e = Config::from_toml_str("[server\n").unwrap_err().to_string();
        assert!(e.starts_with("config: "), "{e}");
        let e = Config::from_toml_str("[nope]\n").unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn secret_references_resolve_and_redact() {
        let dir = std::env::temp_dir().join(format!("jit-secret-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s");
        std::fs::write(&file, "from-file\n").unwrap();
        let s = Secret::resolve(&format!("file:{}", file.display())).unwrap();
        assert_eq!(&*s.expose(), "from-file");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(Secret::resolve("env:JIT_TEST_SURELY_UNSET_VAR").is_err());
        assert!(Secret::resolve("file:/nonexistent/jit").is_err());
        assert_eq!(&*Secret::resolve("literal").unwrap().expose(), "literal");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn aws_sm_references_wait_to_be_read_and_bad_ones_name_the_key() {
        let c = Config::from_toml_str(
            "[server]\nsession_key = \"aws-sm:prod/jit#session\"\n[notify.email]\nsmtp_url = \"aws-sm:arn:aws:secretsmanager:eu-west-1:123456789012:secret:smtp-AbCdEf\"\nfrom = \"jit <jit@example.com>\"\n[secrets]\nrefresh_every = \"15m\"\n",
        )
        .unwrap();
        let keys: Vec<_> = c
            .secrets()
            .iter()
            .map(|(k, s)| (*k, s.reference().map(ToString::to_string)))
            .collect();
        assert_eq!(
            keys,
            [
                (
                    "server.session_key",
                    Some("aws-sm:prod/jit#session".to_owned())
                ),
                (
                    "notify.email.smtp_url",
                    Some(
                        "aws-sm:arn:aws:secretsmanager:eu-west-1:123456789012:secret:smtp-AbCdEf"
                            .to_owned()
                    )
                ),
            ]
        );
        assert!(c.server.session_key.unwrap().expose().is_empty());
        assert_eq!(c.secrets.refresh_every.secs(), 900);
        assert_eq!(Config::default().secrets.refresh_every.secs(), 3600);
        let e = Config::from_toml_str("[notify.teams]\nwebhook_url = \"aws-sm:#k\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("notify.teams.webhook_url") && e.contains("needs a secret id"),
            "{e}"
        );
        let e = Config::from_toml_str("[secrets]\nrefresh_every = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("secrets.refresh_every"), "{e}");
    }

    #[test]
    fn azure_reuses_entra_unless_it_has_its_own_app() {
        const ENTRA: &str = "[entra]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\nlogin_url = \"http://127.0.0.1:9/\"\n";
        let c = Config::from_toml_str(&format!("{ENTRA}[azure]\n")).unwrap();
        let (azure, app) = c.azure_app().unwrap().unwrap();
        assert_eq!(azure.arm_url, "https://management.azure.com");
        assert_eq!(
            (app.section, app.tenant_id.as_str(), app.client_id.as_str()),
            ("entra", "t", "c")
        );
        assert_eq!(&*app.client_secret.unwrap().expose(), "s");
        assert_eq!(app.login_url, "http://127.0.0.1:9/");
        let c = Config::from_toml_str(&format!(
            "{ENTRA}[azure]\nclient_id = \"a\"\nclient_secret = \"x\"\ntenant_id = \"t2\"\n"
        ))
        .unwrap();
        let (_, app) = c.azure_app().unwrap().unwrap();
        assert_eq!(
            (app.section, app.tenant_id.as_str(), app.client_id.as_str()),
            ("azure", "t2", "a")
        );
        assert_eq!(app.login_url, "http://127.0.0.1:9/");
        for (toml, key) in [
            ("[azure]\n", "azure.tenant_id"),
            ("[azure]\ntenant_id = \"t\"\n", "azure.client_id"),
            (
                &*format!("{ENTRA}[azure]\nclient_id = \"a\"\n"),
                "azure.client_secret",
            ),
            (
                &*format!("{ENTRA}[azure]\nclient_secret = \"x\"\n"),
                "azure.client_id",
            ),
            (
                &*format!("{ENTRA}[azure]\narm_url = \"nope\"\n"),
                "azure.arm_url",
            ),
        ] {
            let e = Config::from_toml_str(toml).unwrap_err().to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn missing_secret_reference_names_the_key() {
        let e = load_str("[notify.teams]\nwebhook_url = \"env:JIT_TEST_NO_SUCH_WEBHOOK\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("webhook_url"), "{e}");
        assert!(e.contains("JIT_TEST_NO_SUCH_WEBHOOK"), "{e}");
    }
}
