//! Shared test harness. The peers are started by `scripts/test`, which exports:
//! `JIT_TEST_PG_URL` (superuser URL of a throw-away PostgreSQL), `JIT_TEST_MOTO_URL`,
//! `JIT_TEST_IDP_URL` (the issuer), `JIT_TEST_PEERS` (the `.peers` dir with the Python venv)
//! and `JIT_TEST_ROOT` (the repository).
//!
//! - [`db`]: [`TestDb`], a migrated store in a fresh database on either engine, and
//!   [`both_backends!`], which turns one test body into a SQLite and a PostgreSQL test.
//! - [`smtp`]: [`smtp::SmtpSink`], a private aiosmtpd sink per test.

#![allow(
    dead_code,
    reason = "each test module uses a different part of the harness"
)]
#![allow(
    unused_imports,
    reason = "each test module uses a different part of the harness"
)]

pub mod audit_fault;
pub mod db;
pub mod server;
pub mod smtp;

pub(crate) use db::{TestDb, both_backends, each_backend};

/// Reads a peer variable; fails loudly when the harness did not set it.
pub fn peer_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `scripts/test`, which starts the peers")
    })
}

/// GETs `url` and reads its JSON body, whatever the status.
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// Once per process: what every test needs before it builds TLS clients.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}
