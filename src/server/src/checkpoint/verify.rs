//! Holding the database's chain against signed checkpoints (`jit-server audit verify
//! --checkpoints SINK --public-key KEY`, docs/audit.md "Verifying against checkpoints").
//!
//! 1. The checkpoints, in number order: each one's fields must hash to its `hash`, a given
//!    public key must verify its signature, and each must name the one before (`prev`), with
//!    no number missing. The first that fails ends the checkpoints that count.
//! 2. The chain is walked in full (`store::audit::verify`).
//! 3. Each checkpoint, oldest first, is held against the database: the row at its `seq` must
//!    still hold its `head_hash`, the table at least `event_count` rows, and no row at or below
//!    its `seq` may fail the walk. The first checkpoint whose claim fails *disproves* the
//!    database: its tail was truncated, everything deleted, or the chain rewritten at or
//!    before that `seq`.
//! 4. Chained events after the newest checkpoint are verified as a chain only: *not yet
//!    covered*.

use std::collections::HashMap;

use jit_api::{CheckpointReport, VerifyReport};

use super::{Checkpoint, GENESIS, PublicKey};
use crate::store::{Store, StoreError, audit};

/// The checkpoints that hold as a chain of their own, in order, and the first problem.
pub fn check_chain<'a>(
    cps: &'a [Checkpoint],
    keys: &[PublicKey],
) -> (Vec<&'a Checkpoint>, Option<String>) {
    let mut valid: Vec<&Checkpoint> = Vec::new();
    for cp in cps {
        let key = keys
            .iter()
            .find(|k| k.key_id() == cp.key_id)
            .or_else(|| keys.first().filter(|_| keys.len() == 1));
        let Some(key) = key else {
            return (
                valid,
                Some(format!(
                    "checkpoint {} was signed by key {}, which is not among the public keys given",
                    cp.number, cp.key_id
                )),
            );
        };
        if let Err(e) = cp.verify(key) {
            return (valid, Some(e.0));
        }
        let problem = match valid.last() {
            None if cp.number == 1 && cp.prev != GENESIS => {
                Some("it is number 1 but names a previous checkpoint".to_owned())
            }
            Some(before) if cp.number != before.number + 1 => Some(format!(
                "checkpoint {} is missing before it (the sink lost it, or it was removed)",
                before.number + 1
            )),
            Some(before) if cp.prev != before.hash => Some(format!(
                "it names a previous checkpoint other than {} (a second chain of checkpoints)",
                before.number
            )),
            Some(before) if cp.seq < before.seq || cp.event_count < before.event_count => Some(
                format!("it covers less than checkpoint {} did", before.number),
            ),
            None | Some(_) => None,
        };
        if let Some(why) = problem {
            return (valid, Some(format!("checkpoint {}: {why}", cp.number)));
        }
        valid.push(cp);
    }
    (valid, None)
}

/// Walks the whole chain and holds it against `cps` (read from a sink), with `keys`.
pub async fn against(
    store: &Store,
    cps: &[Checkpoint],
    keys: &[PublicKey],
) -> Result<VerifyReport, StoreError> {
    let mut report = audit::verify(store, None).await?;
    let (valid, chain_problem) = check_chain(cps, keys);
    let (checkpoints, disproof) = hold(store, &report, &valid).await?;
    let empty = if cps.is_empty() && report.last_seq.is_some() {
        Some("the sink holds no checkpoint: nothing proves the chain".to_owned())
    } else {
        None
    };
    if let Some(problem) = disproof.or(chain_problem).or(empty) {
        report.ok = false;
        report.problem = Some(problem);
    }
    report.checkpoints = Some(checkpoints);
    Ok(report)
}

/// Holds `report`'s chain against the newest checkpoint the database recorded, verified with
/// `key` (the audit page and `GET /api/v1/audit/verify`: which checkpoint covers the chain).
/// The sinks, not this copy, are what an auditor verifies against.
pub async fn attach_newest(
    store: &Store,
    key: &PublicKey,
    report: &mut VerifyReport,
) -> Result<(), StoreError> {
    let Some(stored) = crate::store::checkpoints::newest(store).await? else {
        report.checkpoints = Some(CheckpointReport {
            checked: 0,
            newest: None,
            not_covered: not_covered(report, 0),
            disproved_by: None,
        });
        return Ok(());
    };
    let cp = match Checkpoint::from_json(&stored.body, "audit_checkpoints") {
        Ok(cp) => cp,
        Err(e) => {
            report.ok = false;
            report.problem = Some(format!("the newest checkpoint in the database: {e}"));
            return Ok(());
        }
    };
    let keys = [key.clone()];
    let (valid, problem) = check_chain(std::slice::from_ref(&cp), &keys);
    let (checkpoints, disproof) = hold(store, report, &valid).await?;
    if let Some(problem) = disproof.or(problem) {
        report.ok = false;
        report.problem = Some(problem);
    }
    report.checkpoints = Some(checkpoints);
    Ok(())
}

/// Holds the database against each of `valid`, oldest first; the report part and the
/// disproof, if one fails.
async fn hold(
    store: &Store,
    report: &VerifyReport,
    valid: &[&Checkpoint],
) -> Result<(CheckpointReport, Option<String>), StoreError> {
    let seqs: Vec<i64> = valid.iter().map(|c| c.seq).filter(|s| *s > 0).collect();
    let stored: HashMap<i64, String> = audit::hashes_at(store, &seqs).await?;
    let rows = match report.rows {
        Some(rows) => rows,
        None => audit::row_count(store).await?,
    };
    Ok(hold_rows(report, valid, &stored, rows))
}

/// [`hold`] over the hashes at the checkpoints' `seq`s and the number of rows, however read.
fn hold_rows(
    report: &VerifyReport,
    valid: &[&Checkpoint],
    stored: &HashMap<i64, String>,
    rows: u64,
) -> (CheckpointReport, Option<String>) {
    let mut checked = 0;
    let mut newest: Option<&Checkpoint> = None;
    let mut disproof = None;
    for cp in valid {
        if let Some(why) = claim_fails(cp, report, stored, rows) {
            let at = time::format_description::well_known::Rfc3339;
            disproof = Some((
                cp.number,
                format!(
                    "checkpoint {} (signed {} by {}) disproves the database: it signed seq {} \
                     with hash {}; {why}",
                    cp.number,
                    cp.at.format(&at).unwrap_or_default(),
                    cp.broker_id,
                    cp.seq,
                    short(&cp.head_hash),
                ),
            ));
            break;
        }
        checked += 1;
        newest = Some(cp);
    }
    let covered = newest.map_or(0, |c| c.seq);
    (
        CheckpointReport {
            checked,
            newest: newest.map(Checkpoint::to_api),
            not_covered: not_covered(report, covered),
            disproved_by: disproof.as_ref().map(|(n, _)| *n),
        },
        disproof.map(|(_, why)| why),
    )
}

/// Verifies a JSON Lines export (`jit-server audit export --format jsonl`) with no database:
/// the events' chain, recomputed from the exported fields (`at` back to milliseconds, `data`
/// back to compact JSON text in its stored key order), then the checkpoints the export
/// carries, each held against the exported events as [`against`] holds them against the
/// database. An export that starts past seq 1 is anchored on its first event's `prev_hash`;
/// checkpoints below its start are checked as signatures and a chain only.
pub fn against_export(
    path: &std::path::Path,
    keys: &[PublicKey],
) -> Result<VerifyReport, super::Invalid> {
    use std::io::BufRead as _;
    let open = || {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|e| super::Invalid(format!("cannot read `{}`: {e}", path.display())))
    };
    let line_error = |n: usize, e: &dyn std::fmt::Display| {
        super::Invalid(format!("`{}` line {n}: {e}", path.display()))
    };
    // First pass: the checkpoints, which follow the events.
    let mut cps = Vec::new();
    for (n, line) in open()?.lines().enumerate() {
        let line = line.map_err(|e| line_error(n + 1, &e))?;
        if line.contains("\"record\":\"checkpoint\"") {
            let record: ExportedCheckpoint =
                serde_json::from_str(&line).map_err(|e| line_error(n + 1, &e))?;
            cps.push(record.checkpoint);
        }
    }
    cps.sort_by_key(|c| c.number);
    let wanted: std::collections::HashSet<i64> = cps.iter().map(|c| c.seq).collect();
    // Second pass: the events' chain.
    let mut walk = ExportWalk::default();
    for (n, line) in open()?.lines().enumerate() {
        let line = line.map_err(|e| line_error(n + 1, &e))?;
        if line.trim().is_empty() || line.contains("\"record\":\"checkpoint\"") {
            continue;
        }
        let event: jit_api::AuditEvent =
            serde_json::from_str(&line).map_err(|e| line_error(n + 1, &e))?;
        if !walk.event(&event, &wanted) {
            break;
        }
    }
    let mut report = walk.report();
    let (valid, chain_problem) = check_chain(&cps, keys);
    let start = walk.first.unwrap_or(1);
    let held: Vec<&Checkpoint> = valid.iter().copied().filter(|c| c.seq >= start).collect();
    let rows = walk.checked + u64::try_from(start - 1).unwrap_or(0);
    let (mut checkpoints, disproof) = hold_rows(&report, &held, &walk.at_checkpoints, rows);
    checkpoints.checked += u64::try_from(valid.len() - held.len()).unwrap_or(0);
    let empty = (cps.is_empty() && walk.checked > 0)
        .then(|| "the export carries no checkpoint: nothing proves the chain".to_owned());
    if let Some(problem) = disproof.or(chain_problem).or(empty) {
        report.ok = false;
        report.problem = Some(problem);
    }
    report.checkpoints = Some(checkpoints);
    Ok(report)
}

/// A checkpoint line of an export.
#[derive(serde::Deserialize)]
struct ExportedCheckpoint {
    checkpoint: Checkpoint,
}

/// The chain of an export's events, checked line by line.
#[derive(Default)]
struct ExportWalk {
    first: Option<i64>,
    last: Option<(i64, String)>,
    checked: u64,
    bad: Option<(i64, String)>,
    at_checkpoints: HashMap<i64, String>,
}

impl ExportWalk {
    /// Checks the next event; false once one failed.
    fn event(&mut self, e: &jit_api::AuditEvent, wanted: &std::collections::HashSet<i64>) -> bool {
        let request_id = e.request_id.map(|id| id.to_string());
        let data = serde_json::to_string(&e.data).unwrap_or_default();
        let row = audit::Canonical {
            seq: e.seq,
            at: crate::clock::to_ms(e.at),
            actor: &e.actor,
            action: &e.action,
            request_id: request_id.as_deref(),
            entitlement: e.entitlement.as_deref(),
            data: &data,
            prev_hash: &e.prev_hash,
        };
        let problem = match &self.last {
            None if e.seq == 1 && e.prev_hash != audit::GENESIS => {
                Some("prev_hash of seq 1 is not the genesis hash".to_owned())
            }
            Some((seq, _)) if e.seq != seq + 1 => {
                Some(format!("row is missing (next row found is {})", e.seq))
            }
            Some((_, hash)) if *hash != e.prev_hash => {
                Some("prev_hash does not match the previous row's hash".to_owned())
            }
            None | Some(_) => None,
        }
        .or_else(|| {
            (audit::chain_hash(&row) != e.hash)
                .then(|| "content does not match its hash".to_owned())
        });
        if let Some(why) = problem {
            let at = self.last.as_ref().map_or(e.seq, |(s, _)| s + 1);
            self.bad = Some((at.min(e.seq), why));
            return false;
        }
        self.first.get_or_insert(e.seq);
        if wanted.contains(&e.seq) {
            self.at_checkpoints.insert(e.seq, e.hash.clone());
        }
        self.checked += 1;
        self.last = Some((e.seq, e.hash.clone()));
        true
    }

    fn report(&self) -> VerifyReport {
        VerifyReport {
            ok: self.bad.is_none(),
            checked: self.checked,
            last_seq: self.last.as_ref().map(|(s, _)| *s),
            first_bad_seq: self.bad.as_ref().map(|(s, _)| *s),
            problem: self.bad.as_ref().map(|(_, why)| why.clone()),
            pending: 0,
            held: 0,
            rows: self.bad.is_none().then_some(self.checked),
            checkpoints: None,
            recomputed_from: None,
        }
    }
}

/// Why the database contradicts `cp`, if it does.
fn claim_fails(
    cp: &Checkpoint,
    report: &VerifyReport,
    stored: &HashMap<i64, String>,
    rows: u64,
) -> Option<String> {
    if let Some(bad) = report
        .first_bad_seq
        .filter(|bad| !report.ok && *bad <= cp.seq)
    {
        return Some(format!(
            "row {bad} at or below it no longer verifies ({})",
            report.problem.as_deref().unwrap_or("")
        ));
    }
    if cp.seq > 0 {
        match stored.get(&cp.seq) {
            None if rows == 0 => {
                return Some("the database holds no events: everything was deleted".to_owned());
            }
            None => {
                let end = report.last_seq.unwrap_or(0);
                return Some(if end < cp.seq {
                    format!("the database's chain ends at seq {end}: its tail was truncated")
                } else {
                    format!("the database has no row {}", cp.seq)
                });
            }
            Some(hash) if *hash != cp.head_hash => {
                return Some(format!(
                    "the database's row {} has hash {}: the chain was rewritten at or before seq {}",
                    cp.seq,
                    short(hash),
                    cp.seq
                ));
            }
            Some(_) => {}
        }
    }
    (rows < cp.event_count).then(|| {
        format!(
            "it counted {} events, the table holds {rows} rows",
            cp.event_count
        )
    })
}

/// Chained events past `covered` that the walk verified.
fn not_covered(report: &VerifyReport, covered: i64) -> u64 {
    u64::try_from(report.last_seq.unwrap_or(0) - covered).unwrap_or(0)
}

fn short(hash: &str) -> String {
    format!("{}…", hash.get(..16).unwrap_or(hash))
}
