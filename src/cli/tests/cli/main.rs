//! Tests of the `jit` binary and of its sign-in against the real test identity provider.
//!
//! `binary` needs nothing outside; `idp` needs the `OpenID` provider that
//! `scripts/test` starts (`JIT_TEST_IDP_URL`). Tests against the real broker
//! live in the top-level `tests/it`.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions fail loudly on purpose"
)]

mod binary;
mod idp;

use std::path::PathBuf;

/// A fresh directory under the system temp dir.
pub fn tempdir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "jit-cli-it-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Reads a peer variable; fails loudly when the harness did not set it.
pub fn peer_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `scripts/test`, which starts the peers")
    })
}
