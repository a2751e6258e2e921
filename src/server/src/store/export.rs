//! Audit export (interim: JSON lines and CSV).

use std::io::Write;
use std::str::FromStr;

use super::audit::{self, Event};
use super::{Store, StoreError};

/// Export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON event per line.
    Jsonl,
    /// CSV with a header.
    Csv,
}

impl FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" => Ok(Self::Jsonl),
            "csv" => Ok(Self::Csv),
            _ => Err(format!("unknown export format `{s}`: use jsonl or csv")),
        }
    }
}

fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Writes every event from `from` on; returns how many.
pub async fn export(
    store: &Store,
    format: ExportFormat,
    from: i64,
    out: &mut impl Write,
) -> Result<u64, StoreError> {
    if format == ExportFormat::Csv {
        writeln!(
            out,
            "seq,at,actor,action,request_id,entitlement,data,prev_hash,hash"
        )
        .map_err(|e| StoreError::Corrupt(format!("export: {e}")))?;
    }
    audit::for_each(store, from, |e: Event| match format {
        ExportFormat::Jsonl => {
            let line = serde_json::to_string(&e.to_api()).map_err(std::io::Error::other)?;
            writeln!(out, "{line}")
        }
        ExportFormat::Csv => writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            e.seq,
            csv_cell(&crate::service::requests::fmt_ms(e.at)),
            csv_cell(&e.actor),
            csv_cell(&e.action),
            csv_cell(e.request_id.as_deref().unwrap_or("")),
            csv_cell(e.entitlement.as_deref().unwrap_or("")),
            csv_cell(&e.data),
            e.prev_hash,
            e.hash
        ),
    })
    .await
}
