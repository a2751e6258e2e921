//! Integration tests: real server, real peers (started by `scripts/test`).

// Everything in this binary is test code: lets clippy's `allow-*-in-tests` cover the helpers too.
#![cfg(test)]

mod store;
mod support;
