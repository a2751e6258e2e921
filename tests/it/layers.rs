//! The import direction of the broker's layers: `config`, `domain` and `store`
//! are below the use cases and the edges, so they name nothing from `http`,
//! `service` or `providers` (issue 23). Read from the source, so a new `use`
//! that breaks the rule fails here, naming its file.

use std::path::{Path, PathBuf};

/// Layers that must stay below the others.
const LOWER: [&str; 3] = ["config", "domain", "store"];
/// What they must not name.
const UPPER: [&str; 3] = ["http", "service", "providers"];

fn sources(root: &Path, layer: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let file = root.join(format!("{layer}.rs"));
    if file.exists() {
        files.push(file);
    }
    let mut dirs = vec![root.join(layer)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The crate-level modules a line of code names: `crate::x`, `super::super::x`
/// (from a module two levels down) and each top-level name of `use crate::{x, …}`.
fn named_modules(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for prefix in ["crate::", "super::super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let after = &rest[at + prefix.len()..];
            if let Some(group) = after.strip_prefix('{') {
                // Top-level names of the group: those at brace depth 0.
                let mut depth = 0;
                let mut start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => start = true,
                        c if c.is_whitespace() => {}
                        _ if start && depth == 0 => {
                            out.push(ident(&group[i..]));
                            start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                out.push(ident(after));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn lower_layers_import_nothing_from_the_upper_ones() {
    assert_eq!(
        named_modules("use crate::{http::x, store::{a, b}, service};"),
        ["http", "store", "service"]
    );
    assert_eq!(
        named_modules("let g = super::super::providers::Grantee;"),
        ["providers"]
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for layer in LOWER {
        let files = sources(&root, layer);
        assert!(!files.is_empty(), "no source of `{layer}` under {root:?}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // A `use` may span lines: join each statement's lines before reading it.
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(" ");
            for module in named_modules(&code) {
                if UPPER.contains(&module.as_str()) {
                    found.push(format!(
                        "{}: names `{module}`",
                        file.strip_prefix(&root).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "config, domain and store must not import from http, service or providers:\n{}",
        found.join("\n")
    );
}
