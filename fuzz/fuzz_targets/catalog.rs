//! `jit_server::policy::Catalog::parse` (entitlements.toml) on arbitrary text:
//! never panics; errors are never empty and always `file:line: message`; an
//! accepted catalog parses the same way twice.

#![no_main]

use jit_server::policy::Catalog;
use libfuzzer_sys::fuzz_target;

const FILE: &str = "entitlements.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Catalog::parse(text, FILE) {
        Ok(catalog) => {
            let again = Catalog::parse(text, FILE).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(catalog.len(), again.len());
            for e in catalog.iter() {
                assert!(again.get(&e.id).is_some(), "{}", e.id);
                assert!(!e.id.is_empty());
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in &errors {
                let rest = e
                    .strip_prefix(FILE)
                    .and_then(|r| r.strip_prefix(':'))
                    .unwrap_or_else(|| panic!("error without file: {e}"));
                let (line, _) = rest
                    .split_once(':')
                    .unwrap_or_else(|| panic!("error without line: {e}"));
                assert!(line.parse::<usize>().is_ok(), "{e}");
            }
        }
    }
});
