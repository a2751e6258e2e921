//! Shared test harness. The peers are started by `scripts/test`, which exports:
//! `JIT_TEST_PG_URL` (superuser URL of a throw-away PostgreSQL), `JIT_TEST_MOTO_URL`,
//! `JIT_TEST_IDP_URL`, `JIT_TEST_PEERS` (the `.peers` dir with the Python venv).

#![allow(
    dead_code,
    reason = "each test module uses a different part of the harness"
)]

/// Reads a peer variable; fails loudly when the harness did not set it.
pub fn peer_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `scripts/test`, which starts the peers")
    })
}

pub mod server;
