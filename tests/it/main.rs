//! Integration tests: real server, real peers (started by `scripts/test`).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod aws;
mod fault_proxy;
mod graph;
mod graph_fake;
mod identity;
mod notify;
mod policy;
mod process;
mod support;
mod workflow;
