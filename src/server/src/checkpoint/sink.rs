//! Where checkpoints go, off the database host: a directory (`file:///var/lib/jit/checkpoints`,
//! for development and air-gapped installs) or an S3 bucket with Object Lock
//! (`s3://bucket/prefix`, the production sink). A sink never overwrites: writing a checkpoint
//! that is already there with the same content succeeds (a retry), with other content fails.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::{Checkpoint, object_name};

/// A sink, as configured (`audit.checkpoint_sinks`); parsing does no IO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// A directory.
    File(PathBuf),
    /// An S3 bucket and key prefix (no leading or trailing `/`; may be empty).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix.
        prefix: String,
    },
}

impl SinkSpec {
    /// Reads `file:///DIR` or `s3://BUCKET[/PREFIX]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "`{text}`: a file sink names an absolute directory, like `file:///var/lib/jit/checkpoints`"
                ));
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid {
                return Err(format!("`{text}`: `{bucket}` is not an S3 bucket name"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        Err(format!(
            "`{text}`: a sink is `s3://bucket/prefix` or `file:///directory`"
        ))
    }
}

impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "file://{}", path.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// A sink failure.
#[derive(Debug, Error)]
pub enum SinkError {
    /// The sink said no or could not be reached.
    #[error("{0}")]
    Io(String),
    /// The sink holds that checkpoint with other content.
    #[error("{0}")]
    Conflict(String),
    /// An object in the sink is not a checkpoint.
    #[error("{0}")]
    Invalid(String),
}

/// An opened sink.
#[derive(Debug, Clone)]
pub enum Sink {
    /// A directory.
    File(PathBuf),
    /// An S3 bucket with Object Lock.
    #[cfg(feature = "aws")]
    S3(super::s3::S3Sink),
}

impl Sink {
    /// Opens `spec`; S3 sinks take the AWS settings of `[aws]` (region, endpoint override).
    pub async fn open(
        spec: &SinkSpec,
        aws: Option<&crate::config::AwsConfig>,
        retention_secs: u64,
    ) -> Result<Self, SinkError> {
        match spec {
            SinkSpec::File(path) => Ok(Self::File(path.clone())),
            #[cfg(feature = "aws")]
            SinkSpec::S3 { bucket, prefix } => Ok(Self::S3(
                super::s3::S3Sink::new(aws, bucket, prefix, retention_secs).await,
            )),
            #[cfg(not(feature = "aws"))]
            SinkSpec::S3 { .. } => {
                let _ = (aws, retention_secs);
                Err(SinkError::Io(
                    "this jit-server was built without AWS support: no S3 sink".to_owned(),
                ))
            }
        }
    }

    /// How configuration and reports name it.
    pub fn name(&self) -> String {
        match self {
            Self::File(path) => SinkSpec::File(path.clone()).to_string(),
            #[cfg(feature = "aws")]
            Self::S3(s3) => s3.name(),
        }
    }

    /// Writes `cp`, unless the sink holds it already.
    pub async fn put(&self, cp: &Checkpoint) -> Result<(), SinkError> {
        match self {
            Self::File(dir) => {
                let (dir, cp) = (dir.clone(), cp.clone());
                tokio::task::spawn_blocking(move || put_file(&dir, &cp))
                    .await
                    .map_err(|e| SinkError::Io(e.to_string()))?
            }
            #[cfg(feature = "aws")]
            Self::S3(s3) => s3.put(cp).await,
        }
    }

    /// Every checkpoint the sink holds, by number.
    pub async fn list(&self) -> Result<Vec<Checkpoint>, SinkError> {
        let mut all = match self {
            Self::File(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || list_files(&dir))
                    .await
                    .map_err(|e| SinkError::Io(e.to_string()))??
            }
            #[cfg(feature = "aws")]
            Self::S3(s3) => s3.list().await?,
        };
        all.sort_by_key(|c| c.number);
        Ok(all)
    }
}

/// Whether `name` is a checkpoint's file or object name.
pub(super) fn is_checkpoint_name(name: &str) -> bool {
    name.strip_prefix("checkpoint-")
        .and_then(|n| n.strip_suffix(".json"))
        .is_some_and(|n| n.len() == 12 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes the file without ever replacing one: a temporary file, synced, then hard-linked to
/// its name (which fails if the name exists), then the directory synced.
fn put_file(dir: &Path, cp: &Checkpoint) -> Result<(), SinkError> {
    let io = |what: &str, e: std::io::Error| {
        SinkError::Io(format!("{what} in `{}`: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| io("cannot create the directory", e))?;
    let name = object_name(cp.number);
    let target = dir.join(&name);
    let body = cp.to_json() + "\n";
    if let Ok(existing) = std::fs::read_to_string(&target) {
        return same_or_conflict(&existing, &body, &name);
    }
    let tmp = dir.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(body.as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, &target)
    })();
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let existing =
                std::fs::read_to_string(&target).map_err(|e| io("cannot read back", e))?;
            return same_or_conflict(&existing, &body, &name);
        }
        Err(e) => return Err(io(&format!("cannot write `{name}`"), e)),
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o440));
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync the directory", e))
}

pub(super) fn same_or_conflict(existing: &str, body: &str, name: &str) -> Result<(), SinkError> {
    if existing.trim() == body.trim() {
        Ok(())
    } else {
        Err(SinkError::Conflict(format!(
            "`{name}` is already in the sink with other content: two checkpoints with one number"
        )))
    }
}

fn list_files(dir: &Path) -> Result<Vec<Checkpoint>, SinkError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| SinkError::Io(format!("cannot read `{}`: {e}", dir.display())))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| SinkError::Io(format!("`{}`: {e}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_checkpoint_name(&name) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())
            .map_err(|e| SinkError::Io(format!("cannot read `{name}`: {e}")))?;
        out.push(Checkpoint::from_json(&text, &name).map_err(|e| SinkError::Invalid(e.0))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_parse_and_name_themselves() {
        assert_eq!(
            SinkSpec::parse("file:///var/lib/jit/checkpoints").unwrap(),
            SinkSpec::File("/var/lib/jit/checkpoints".into())
        );
        assert_eq!(
            SinkSpec::parse("s3://jit-audit/prod/eu").unwrap(),
            SinkSpec::S3 {
                bucket: "jit-audit".into(),
                prefix: "prod/eu".into()
            }
        );
        for text in ["s3://jit-audit", "s3://jit-audit/x", "file:///tmp/x"] {
            assert_eq!(SinkSpec::parse(text).unwrap().to_string(), text);
        }
        for bad in [
            "file:relative",
            "file://relative",
            "s3://A_B/x",
            "s3://",
            "gs://b/x",
            "",
        ] {
            assert!(SinkSpec::parse(bad).is_err(), "{bad}");
        }
        assert!(is_checkpoint_name("checkpoint-000000000042.json"));
        assert!(!is_checkpoint_name("checkpoint-42.json"));
        assert!(!is_checkpoint_name(".checkpoint-000000000042.json.tmp"));
    }
}
