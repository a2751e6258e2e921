//! Integration tests: real server, real peers (started by `scripts/test`).

mod support;
mod identity;
