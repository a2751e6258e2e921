//! Bearer token parsing (`identity::bearer`) before any signature check, on
//! arbitrary text: the compact-JWS split, the header checks, the base64url JSON
//! claims and the claim checks (`aud`, `exp`/`nbf`/`iat`, scopes). Never panics;
//! a refusal is an `InvalidToken` with a reason short enough that no token is
//! ever copied whole into a log line.
//!
//! The input is tried as a token as is, and, when it has a newline, as
//! `header JSON \n claims JSON \n signature` encoded into one, so the fuzzer can
//! mutate the JSON directly instead of its base64.

#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jit_server::identity::AuthErrorKind;
use jit_server::identity::bearer::{MAX_TOKEN_LEN, fuzz_parse};
use libfuzzer_sys::fuzz_target;

/// 2027-01-15T08:00:00Z; the claims' times are what is fuzzed.
const NOW: i64 = 1_800_000_000;
/// Longest reason: fixed text plus attacker values cut to 64 characters and escaped.
const MAX_REASON_LEN: usize = 1024;

fn check(token: &str) {
    match fuzz_parse(token, NOW) {
        Ok(()) => {
            assert!(token.len() <= MAX_TOKEN_LEN);
            assert_eq!(token.split('.').count(), 3, "{token:?}");
        }
        Err(e) => {
            assert_eq!(e.kind(), AuthErrorKind::InvalidToken, "{e:?}");
            assert_eq!(e.status(), 401);
            let reason = e.reason();
            assert!(!reason.is_empty());
            assert!(reason.len() <= MAX_REASON_LEN, "{} bytes", reason.len());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check(text);
    let mut parts = text.splitn(3, '\n');
    if let (Some(header), Some(claims)) = (parts.next(), parts.next()) {
        let signature = parts.next().unwrap_or("c2ln");
        check(&format!(
            "{}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        ));
    }
});
