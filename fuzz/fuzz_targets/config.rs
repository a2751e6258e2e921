//! `jit_server::config::Config::from_toml_str` on arbitrary text: never panics,
//! and every error is one `config: …` line.
//!
//! Inputs that could name a secret file are skipped: `file:/dev/zero` or
//! `file:/dev/stdin` would make the parser read forever, which is the
//! operator's choice in a real config and not a bug (`\u` escapes could spell
//! `file:` inside a TOML string, so those are skipped too).

#![no_main]

use jit_server::config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("file:") || text.contains("\\u") || text.contains("\\U") {
        return;
    }
    match Config::from_toml_str(text) {
        Ok(config) => {
            // A configuration that parsed and validated has a usable bind address.
            assert!(config.bind_addr().is_ok());
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("config: "), "{msg}");
            if let ConfigError::Invalid { key, .. } = e {
                assert!(!key.is_empty());
            }
        }
    }
});
