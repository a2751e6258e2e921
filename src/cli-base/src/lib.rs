//! What the `jit` command-line client does without the network: its one error type, where
//! its files live and how they are written, the saved settings, the on-disk cache of AWS
//! `credential_process` output, and the `jit` program itself ([`front`]), which answers a
//! `jit credential-process` cache hit and hands every other command to `jit-client`.
//!
//! This crate depends on serde, `serde_json` and time only. The `jit` program links it and
//! nothing else, so a cache hit does not pay for the HTTP client, TLS (aws-lc's start-up)
//! or clap's command tree (docs/performance.md). The full client (crate `jit`) re-exports
//! these modules.

pub mod credcache;
pub mod dirs;
pub mod error;
pub mod front;
pub mod settings;

pub use error::{CliError, EXIT_ERROR, EXIT_NOT_GRANTED, Result};
