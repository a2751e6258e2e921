//! Audit events held while the audit store fails (docs/audit.md, "Held
//! events").
//!
//! Granting stays fail-closed, but taking access away must never wait for
//! the audit store. When the transaction of a removal (a revoke, an expiry,
//! the upstream removal, a withdrawn session) cannot write its audit events,
//! it runs again with the events *held*: the transaction collects them
//! instead of writing them ([`super::Tx::hold_audit`]), and before it
//! commits they are appended to a local file, the spool, and flushed to disk.
//! With them goes the state change they record, so that a replay can make
//! it should the database commit fail too.
//!
//! The spool is a text file of one record per line, `HASH BODY`: `BODY` is
//! the record as compact JSON and `HASH` the SHA-256 (hex) of `BODY`'s
//! bytes. Every body names the hash of the line before (`prev`; the
//! genesis hash for the first), so a line removed, changed or reordered
//! breaks the link where it happened. Record bodies are numbered (`n`)
//! without gaps. Once records are in the chain, a `replayed` line says how
//! far; when every record is, the file is rewritten as one `anchor` line
//! that carries the number and hash to continue from.
//!
//! Replayed events keep their time and carry `data.held` = `{n, hash, prev,
//! held_at}`: in the chain, consecutive held events link to each other by
//! those hashes, so an auditor sees a missing one even after the spool was
//! compacted.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::audit::{GENESIS, NewEvent};
use super::db::query_built;
use super::{Backend, Store, StoreError};

/// An audit event as held: owned, with its time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldEvent {
    /// Unix milliseconds.
    pub at: i64,
    /// Actor.
    pub actor: String,
    /// Action.
    pub action: String,
    /// Request id text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Entitlement id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement: Option<String>,
    /// Details.
    pub data: Value,
}

impl HeldEvent {
    /// Holds `event`, written at `at` (unix ms).
    pub fn new(at: i64, event: &NewEvent<'_>) -> Self {
        Self {
            at,
            actor: event.actor.to_owned(),
            action: event.action.to_owned(),
            request_id: event.request_id.map(|id| id.to_string()),
            entitlement: event.entitlement.map(str::to_owned),
            data: event.data.clone(),
        }
    }
}

/// The state change that held events record, made again at replay when
/// the transaction that held them could not commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// A request ended: `from` → `to` at `at` (and its removal is due).
    Ended {
        /// Request id.
        request: String,
        /// State it was in.
        from: String,
        /// State it ended in.
        to: String,
        /// Unix ms.
        at: i64,
    },
    /// A request's upstream object was removed at `at`.
    Deprovisioned {
        /// Request id.
        request: String,
        /// Unix ms.
        at: i64,
    },
    /// Several changes made together (a revocation ends a grant's whole extension chain).
    All {
        /// The changes, none of them `All`.
        changes: Vec<Change>,
    },
}

/// One line of the spool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Body {
    /// Events held together.
    Record {
        n: u64,
        prev: String,
        held_at: i64,
        events: Vec<HeldEvent>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        change: Option<Change>,
    },
    /// Records up to `through` are in the chain.
    Replayed { through: u64, prev: String },
    /// A compacted spool: the next record is `next`, after `prev`.
    Anchor { next: u64, prev: String },
}

impl Body {
    fn prev(&self) -> &str {
        match self {
            Self::Record { prev, .. } | Self::Replayed { prev, .. } | Self::Anchor { prev, .. } => {
                prev
            }
        }
    }
}

/// A held record, waiting for the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// Its number.
    pub n: u64,
    /// Its line's hash.
    pub hash: String,
    /// The hash of the line before.
    pub prev: String,
    /// When it was held (unix ms).
    pub held_at: i64,
    /// The events.
    pub events: Vec<HeldEvent>,
    /// The state change they record.
    pub change: Option<Change>,
}

impl Held {
    /// What a replayed event carries under `data.held`.
    pub fn mark(&self) -> Value {
        serde_json::json!({
            "n": self.n,
            "hash": self.hash,
            "prev": self.prev,
            "held_at": self.held_at,
        })
    }
}

/// What a spool file holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contents {
    /// Records not yet in the chain, oldest first.
    pub waiting: Vec<Held>,
    /// The next record's number.
    next: u64,
    /// The last line's hash.
    last: String,
}

/// The spool's file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Reading or writing it failed.
    #[error("audit spool `{0}`: {1}")]
    Io(PathBuf, std::io::Error),
    /// A line does not link, does not hash, or does not parse.
    #[error("audit spool `{path}` is broken at line {line}: {why}")]
    Broken {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// Reads and checks a spool file; a missing file is an empty spool.
pub fn read(path: &Path) -> Result<Contents, SpoolError> {
    let io = |e| SpoolError::Io(path.to_owned(), e);
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Contents {
                waiting: Vec::new(),
                next: 1,
                last: GENESIS.to_owned(),
            });
        }
        Err(e) => return Err(io(e)),
    };
    let mut contents = Contents {
        waiting: Vec::new(),
        next: 1,
        last: GENESIS.to_owned(),
    };
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        let broken = |why: String| SpoolError::Broken {
            path: path.to_owned(),
            line: i + 1,
            why,
        };
        let (hash, text) = line
            .split_once(' ')
            .ok_or_else(|| broken("not `HASH BODY`".to_owned()))?;
        if hex::encode(Sha256::digest(text.as_bytes())) != hash {
            return Err(broken("the body does not match its hash".to_owned()));
        }
        let body: Body =
            serde_json::from_str(text).map_err(|e| broken(format!("unreadable body: {e}")))?;
        if i == 0
            && let Body::Anchor { next, prev } = &body
        {
            contents.next = *next;
            contents.last.clone_from(prev);
        }
        if body.prev() != contents.last {
            return Err(broken(
                "its `prev` is not the hash of the line before (a line is missing or moved)"
                    .to_owned(),
            ));
        }
        match body {
            Body::Record {
                n,
                prev,
                held_at,
                events,
                change,
            } => {
                if n != contents.next {
                    return Err(broken(format!(
                        "record {n} where record {} was due",
                        contents.next
                    )));
                }
                contents.next = n + 1;
                contents.waiting.push(Held {
                    n,
                    hash: hash.to_owned(),
                    prev,
                    held_at,
                    events,
                    change,
                });
            }
            Body::Replayed { through, .. } => {
                contents.waiting.retain(|h| h.n > through);
            }
            Body::Anchor { .. } if i == 0 => {}
            Body::Anchor { .. } => return Err(broken("an anchor after the first line".to_owned())),
        }
        hash.clone_into(&mut contents.last);
    }
    Ok(contents)
}

/// The spool of one broker: appends are flushed to disk before they return.
pub struct Spool {
    path: PathBuf,
    state: Mutex<Contents>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Spool {
    /// Opens the spool at `path` (read and checked; created on first hold).
    pub fn open(path: &Path) -> Result<Arc<Self>, SpoolError> {
        let contents = read(path)?;
        Ok(Arc::new(Self {
            path: path.to_owned(),
            state: Mutex::new(contents),
        }))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Contents> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records waiting for the chain, oldest first.
    pub fn waiting(&self) -> Vec<Held> {
        self.state().waiting.clone()
    }

    /// How many events wait for the chain.
    pub fn waiting_events(&self) -> usize {
        self.state().waiting.iter().map(|h| h.events.len()).sum()
    }

    /// Appends `body` as the next line and flushes it to disk.
    fn append(&self, state: &mut Contents, body: &Body) -> Result<String, SpoolError> {
        let io = |e| SpoolError::Io(self.path.clone(), e);
        let text =
            serde_json::to_string(body).map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let hash = hex::encode(Sha256::digest(text.as_bytes()));
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        file.write_all(format!("{hash} {text}\n").as_bytes())
            .map_err(io)?;
        file.sync_data().map_err(io)?;
        hash.clone_into(&mut state.last);
        Ok(hash)
    }

    /// Holds `events` (and the `change` they record), written at `now`
    /// (unix ms): on disk when this returns. Runs the file work on a
    /// blocking thread.
    pub async fn hold(
        self: &Arc<Self>,
        now: i64,
        events: Vec<HeldEvent>,
        change: Option<Change>,
    ) -> Result<Held, SpoolError> {
        let spool = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut state = spool.state();
            let n = state.next;
            let prev = state.last.clone();
            let body = Body::Record {
                n,
                prev: prev.clone(),
                held_at: now,
                events: events.clone(),
                change: change.clone(),
            };
            let hash = spool.append(&mut state, &body)?;
            state.next = n + 1;
            let held = Held {
                n,
                hash,
                prev,
                held_at: now,
                events,
                change,
            };
            state.waiting.push(held.clone());
            Ok(held)
        })
        .await
        .map_err(|e| SpoolError::Io(self.path.clone(), std::io::Error::other(e.to_string())))?
    }

    /// Records up to `through` are in the chain: says so in the file, and
    /// compacts it to an anchor when none waits any more.
    pub async fn replayed(self: &Arc<Self>, through: u64) -> Result<(), SpoolError> {
        let spool = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut state = spool.state();
            let prev = state.last.clone();
            spool.append(&mut state, &Body::Replayed { through, prev })?;
            state.waiting.retain(|h| h.n > through);
            if state.waiting.is_empty() {
                spool.compact(&mut state)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| SpoolError::Io(self.path.clone(), std::io::Error::other(e.to_string())))?
    }

    /// Rewrites the file as one anchor line (written aside, then renamed
    /// over it, both flushed).
    fn compact(&self, state: &mut Contents) -> Result<(), SpoolError> {
        let io = |e| SpoolError::Io(self.path.clone(), e);
        let body = Body::Anchor {
            next: state.next,
            prev: state.last.clone(),
        };
        let text =
            serde_json::to_string(&body).map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let hash = hex::encode(Sha256::digest(text.as_bytes()));
        let mut aside = self.path.clone().into_os_string();
        aside.push(".new");
        let aside = PathBuf::from(aside);
        let mut file = File::create(&aside).map_err(io)?;
        file.write_all(format!("{hash} {text}\n").as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&aside, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        state.last = hash;
        Ok(())
    }
}

/// Whether the events of `held` are in the chain already (or written and
/// waiting to be chained, on PostgreSQL): a replay that committed but died
/// before it could say so in the spool.
pub async fn in_chain(store: &Store, held: &Held) -> Result<bool, StoreError> {
    let Some(first) = held.events.first() else {
        return Ok(true);
    };
    let needle = format!("%\"hash\":\"{}\"%", held.hash);
    let mut tables = vec!["audit_events"];
    if store.backend() == Backend::Postgres {
        tables.push("audit_pending");
    }
    for table in tables {
        let found = match &first.request_id {
            Some(request) => query_built(format!(
                "SELECT 1 FROM {table} WHERE request_id = $1 AND action = $2 AND data LIKE $3 LIMIT 1"
            ))
            .bind(request.clone()),
            None => query_built(format!(
                "SELECT 1 FROM {table} WHERE action = $1 AND data LIKE $2 LIMIT 1"
            )),
        }
        .bind(first.action.clone())
        .bind(needle.clone())
        .fetch_optional(store)
        .await?;
        if found.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str) -> HeldEvent {
        HeldEvent {
            at: 1_767_225_600_000,
            actor: "system".to_owned(),
            action: action.to_owned(),
            request_id: Some("0194f1a2-7b3c-7d4e-8f50-6a7b8c9d0e1f".to_owned()),
            entitlement: Some("aws-sandbox".to_owned()),
            data: serde_json::json!({ "reason": "test" }),
        }
    }

    #[tokio::test]
    async fn records_link_replay_and_compact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let spool = Spool::open(&path).unwrap();
        assert!(spool.waiting().is_empty());
        let first = spool
            .hold(1, vec![event("grant.revoked")], None)
            .await
            .unwrap();
        assert_eq!((first.n, first.prev.as_str()), (1, GENESIS));
        let second = spool
            .hold(
                2,
                vec![event("grant.removed")],
                Some(Change::Deprovisioned {
                    request: "r".to_owned(),
                    at: 2,
                }),
            )
            .await
            .unwrap();
        assert_eq!((second.n, second.prev.as_str()), (2, first.hash.as_str()));
        // What a restart reads back.
        let again = Spool::open(&path).unwrap();
        assert_eq!(again.waiting(), vec![first.clone(), second.clone()]);
        assert_eq!(again.waiting_events(), 2);

        again.replayed(1).await.unwrap();
        assert_eq!(Spool::open(&path).unwrap().waiting(), vec![second.clone()]);
        again.replayed(2).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "compacted: {text}");
        assert!(text.contains(r#""kind":"anchor","next":3"#), "{text}");
        // Numbers and links go on from the anchor.
        let reopened = Spool::open(&path).unwrap();
        let third = reopened
            .hold(3, vec![event("grant.expired")], None)
            .await
            .unwrap();
        assert_eq!(third.n, 3);
        assert_eq!(Spool::open(&path).unwrap().waiting(), vec![third]);
    }

    #[tokio::test]
    async fn a_missing_changed_or_moved_line_breaks_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let spool = Spool::open(&path).unwrap();
        for i in 0..3 {
            spool
                .hold(i, vec![event("grant.revoked")], None)
                .await
                .unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let check = |body: String, line: usize, why: &str| {
            std::fs::write(&path, body).unwrap();
            let err = read(&path).unwrap_err().to_string();
            assert!(
                err.contains(&format!("line {line}")) && err.contains(why),
                "{err}"
            );
        };
        check(
            format!("{}\n{}\n", lines[0], lines[2]),
            2,
            "missing or moved",
        );
        check(
            format!("{}\n{}\n{}\n", lines[1], lines[0], lines[2]),
            1,
            "missing or moved",
        );
        check(
            format!(
                "{}\n{}\n{}\n",
                lines[0],
                lines[1].replace("test", "tset"),
                lines[2]
            ),
            2,
            "does not match its hash",
        );
        check("garbage\n".to_owned(), 1, "HASH BODY");
        // A missing file is an empty spool.
        std::fs::remove_file(&path).unwrap();
        assert!(read(&path).unwrap().waiting.is_empty());
    }
}
