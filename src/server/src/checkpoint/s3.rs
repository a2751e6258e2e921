//! The production sink: an S3 bucket with Object Lock. Each checkpoint is one object,
//! `PREFIX/checkpoint-NNNNNNNNNNNN.json`, put with Object Lock in COMPLIANCE mode until
//! `audit.checkpoint_retention_days` from now: nobody, the bucket's owner and the root user
//! included, can delete or overwrite that version before then.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockMode};
use tokio::sync::OnceCell;

use super::sink::{SinkError, is_checkpoint_name, same_or_conflict};
use super::{Checkpoint, object_name};
use crate::cloud::describe;

/// An S3 bucket and prefix.
#[derive(Clone)]
pub struct S3Sink {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    retention_secs: u64,
    /// Whether the bucket has Object Lock, asked once it answers.
    locked: Arc<OnceCell<()>>,
}

impl std::fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl S3Sink {
    /// A client for `bucket` with the settings of `[aws]`.
    pub async fn new(
        aws: Option<&crate::config::AwsConfig>,
        bucket: &str,
        prefix: &str,
        retention_secs: u64,
    ) -> Self {
        let sdk = crate::cloud::sdk_config(aws).await;
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk);
        if let Some(url) = crate::cloud::endpoint_url(aws) {
            // An S3 emulator on loopback answers path-style requests only.
            conf = conf.endpoint_url(url).force_path_style(true);
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(conf.build()),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            retention_secs,
            locked: Arc::new(OnceCell::new()),
        }
    }

    /// `s3://bucket/prefix`.
    pub fn name(&self) -> String {
        super::sink::SinkSpec::S3 {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
        }
        .to_string()
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// Refuses a bucket without Object Lock: its objects could be deleted.
    async fn check_locked(&self) -> Result<(), SinkError> {
        self.locked
            .get_or_try_init(|| async {
                let out = self
                    .client
                    .get_object_lock_configuration()
                    .bucket(&self.bucket)
                    .send()
                    .await
                    .map_err(|e| {
                        use aws_sdk_s3::error::ProvideErrorMetadata as _;
                        if e.code() == Some("ObjectLockConfigurationNotFoundError") {
                            SinkError::Io(format!(
                                "bucket `{}` has no Object Lock: create it with Object Lock enabled",
                                self.bucket
                            ))
                        } else {
                            SinkError::Io(format!(
                                "bucket `{}`: cannot read its Object Lock configuration: {}",
                                self.bucket,
                                describe(&e)
                            ))
                        }
                    })?;
                let enabled = out
                    .object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    == Some(&ObjectLockEnabled::Enabled);
                if enabled {
                    Ok(())
                } else {
                    Err(SinkError::Io(format!(
                        "bucket `{}` has no Object Lock: create it with Object Lock enabled",
                        self.bucket
                    )))
                }
            })
            .await?;
        Ok(())
    }

    /// Puts `cp` under COMPLIANCE retention, unless the bucket holds it already.
    pub async fn put(&self, cp: &Checkpoint) -> Result<(), SinkError> {
        self.check_locked().await?;
        let name = object_name(cp.number);
        let key = self.key(&name);
        let body = cp.to_json() + "\n";
        if let Some(existing) = self.get(&key).await? {
            return same_or_conflict(&existing, &body, &name);
        }
        let until = time::OffsetDateTime::now_utc()
            + time::Duration::seconds(i64::try_from(self.retention_secs).unwrap_or(i64::MAX));
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
                until.unix_timestamp(),
            ))
            .body(ByteStream::from(body.into_bytes()))
            .send()
            .await
            .map_err(|e| SinkError::Io(format!("cannot put `{key}`: {}", describe(&e))))?;
        Ok(())
    }

    /// The object's text (a given version, or the latest), or none when there is no such key
    /// (or the latest version is a delete marker).
    async fn get(&self, key: &str) -> Result<Option<String>, SinkError> {
        self.get_version(key, None).await
    }

    async fn get_version(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<String>, SinkError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            .send()
            .await
        {
            Ok(out) => {
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| SinkError::Io(format!("cannot read `{key}`: {e}")))?
                    .into_bytes();
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
            Err(e)
                if e.as_service_error().is_some_and(
                    aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key,
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(SinkError::Io(format!(
                "cannot get `{key}`: {}",
                describe(&e)
            ))),
        }
    }

    /// Every checkpoint under the prefix: every version of every object, so that a delete
    /// marker (which a plain DELETE adds, locked or not) hides nothing. Two versions of one
    /// name with different content are two checkpoints with one number: refused.
    pub async fn list(&self) -> Result<Vec<Checkpoint>, SinkError> {
        let mut out: BTreeMap<u64, Checkpoint> = BTreeMap::new();
        let prefix = self.key("checkpoint-");
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| {
                    SinkError::Io(format!("cannot list `{}`: {}", self.name(), describe(&e)))
                })?;
            for version in page.versions() {
                let Some(key) = version.key() else { continue };
                let name = key.rsplit('/').next().unwrap_or(key);
                if !is_checkpoint_name(name) {
                    continue;
                }
                let text = self
                    .get_version(key, version.version_id())
                    .await?
                    .ok_or_else(|| SinkError::Io(format!("`{key}` vanished while listing")))?;
                let cp = Checkpoint::from_json(&text, key).map_err(|e| SinkError::Invalid(e.0))?;
                match out.entry(cp.number) {
                    Entry::Occupied(same) if *same.get() == cp => {}
                    Entry::Occupied(_) => {
                        return Err(SinkError::Invalid(format!(
                            "`{key}` has versions with different checkpoints: two checkpoints \
                             numbered {}",
                            cp.number
                        )));
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(cp);
                    }
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(out.into_values().collect());
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
        }
    }
}
