//! `jit_api::parse_duration` on arbitrary text: never panics, accepted values
//! lie in 1 s ..= 366 d, and `format_duration` writes what it reads back.

#![no_main]

use jit_api::{format_duration, parse_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(secs) = parse_duration(text) {
        assert!((1..=366 * 24 * 3600).contains(&secs), "{text:?} -> {secs}");
        let formatted = format_duration(secs);
        assert_eq!(
            parse_duration(&formatted),
            Ok(secs),
            "{text:?} -> {formatted:?}"
        );
    }
});
