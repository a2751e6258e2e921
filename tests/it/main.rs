//! Integration tests: real server, real peers (started by `scripts/test`).

mod aws;
mod fault_proxy;
mod support;
