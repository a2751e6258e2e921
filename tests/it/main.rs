//! Integration tests: real server, real peers (started by `scripts/test`).

mod support;
mod workflow;
mod policy;
mod process;
