//! The hash-chained, append-only audit log (SPEC §5, docs/audit.md): the chain
//! ([`chain`]: events written, hashed, read and verified), the sealer that chains
//! PostgreSQL's pending events ([`seal`]) and the export in JSON Lines, CSV and
//! OCSF ([`export`]).

mod chain;
pub mod export;
pub(super) mod seal;

pub use chain::*;
