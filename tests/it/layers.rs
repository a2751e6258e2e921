//! The import direction of the broker's layers: `config`, `domain` and `store`
//! are below the use cases and the edges, so they name nothing from `http`,
//! `service` or `providers` (issue 23). Read from the source, so a new `use`
//! that breaks the rule fails here, naming its file. Also the shape of the
//! service layer (Must show 4): no function over 80 lines and no run of six or
//! more lines standing again.

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

/// A line with its string and char literals emptied and its `//` comment cut,
/// so that braces and slashes inside text do not count.
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push('"');
            }
            '/' if chars.peek() == Some(&'/') => break,
            '\'' => {
                // A char literal such as '{' or '\'' (a lifetime has no closing quote).
                let rest: String = chars.clone().take(3).collect();
                let len = if rest.starts_with('\\') {
                    rest.find('\'').map(|i| i + 1)
                } else if rest.chars().nth(1) == Some('\'') {
                    Some(2)
                } else {
                    None
                };
                if let Some(len) = len {
                    for _ in 0..len {
                        chars.next();
                    }
                    out.push_str("' '");
                } else {
                    out.push('\'');
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Each `fn` of a source with its first line (1-based) and its length in lines,
/// from the `fn` line to the line of its closing brace.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<String> = text.lines().map(code_of).collect();
    let mut out = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "fn") else {
            continue;
        };
        let qualifiers = [
            "pub",
            "pub(crate)",
            "pub(super)",
            "async",
            "const",
            "unsafe",
        ];
        if !words[..at].iter().all(|w| qualifiers.contains(w)) {
            continue;
        }
        let Some(name) = words.get(at + 1) else {
            continue;
        };
        let name: String = name
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let mut depth = 0usize;
        let mut opened = false;
        'lines: for (end, code) in lines.iter().enumerate().skip(start) {
            for c in code.chars() {
                match c {
                    // A declaration without a body (in a trait).
                    ';' if !opened && depth == 0 => break 'lines,
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => {
                        depth -= 1;
                        if opened && depth == 0 {
                            out.push((name.clone(), start + 1, end - start + 1));
                            break 'lines;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// The longest a function of the service layer may be (issue 23, Must show 4).
const SERVICE_FN_LINES: usize = 80;

#[test]
fn service_functions_stay_short() {
    let sample = "pub async fn a(x: &str) -> Result<(), E> {\n    let b = '{';\n    \
                  let c = \"}}{\"; // }\n    if x.is_empty() {\n        return Ok(());\n    }\n    \
                  Ok(())\n}\nfn decl(&self);\nfn b() {}\n";
    assert_eq!(
        functions(sample),
        [("a".to_owned(), 1, 8), ("b".to_owned(), 10, 1)]
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for file in sources(&root, "service") {
        let rel = file
            .strip_prefix(root.join("service"))
            .unwrap()
            .display()
            .to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        for (name, line, len) in functions(&text) {
            if len > SERVICE_FN_LINES {
                found.push(format!(
                    "service/{rel}:{line}: `{name}` is {len} lines (at most {SERVICE_FN_LINES})"
                ));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// How many lines in a row make a repetition (issue 23, Must show 4).
const REPEAT_LINES: usize = 6;

/// The places (file and first line) where a run of `REPEAT_LINES` or more
/// lines starts that stands again somewhere in `files`, comparing the lines
/// trimmed, without comments, and passing over lines with no word in them
/// (`}`, `)?;`, blank).
fn repeated_runs(files: &[(String, String)]) -> Vec<String> {
    let mut kept: Vec<Vec<(usize, String)>> = Vec::new();
    for (_, text) in files {
        kept.push(
            text.lines()
                .enumerate()
                .filter_map(|(i, l)| {
                    let code = l.split("//").next().unwrap_or("").trim();
                    code.chars()
                        .any(char::is_alphanumeric)
                        .then(|| (i + 1, code.to_owned()))
                })
                .collect(),
        );
    }
    let mut seen: std::collections::HashMap<Vec<&str>, usize> = std::collections::HashMap::new();
    for lines in &kept {
        for window in lines.windows(REPEAT_LINES) {
            let key: Vec<&str> = window.iter().map(|(_, l)| l.as_str()).collect();
            *seen.entry(key).or_default() += 1;
        }
    }
    let mut runs = Vec::new();
    for ((name, _), lines) in files.iter().zip(&kept) {
        let mut in_run = false;
        for window in lines.windows(REPEAT_LINES) {
            let key: Vec<&str> = window.iter().map(|(_, l)| l.as_str()).collect();
            let repeated = seen[&key] > 1;
            if repeated && !in_run {
                runs.push(format!("{name}:{}", window[0].0));
            }
            in_run = repeated;
        }
    }
    runs
}

#[test]
fn service_layer_repeats_no_six_lines() {
    let block = "let a = 1;\nlet b = 2;\n}\nlet c = 3;\nlet d = 4;\nlet e = 5;\nlet f = 6;\n";
    let sample = vec![
        ("x.rs".to_owned(), format!("fn x() {{\n{block}}}\n")),
        (
            "y.rs".to_owned(),
            format!("fn y() {{\n// a comment\n{block}g();\n}}\n"),
        ),
        (
            "z.rs".to_owned(),
            "let a = 1;\nlet b = 2;\nlet c = 3;\n".to_owned(),
        ),
    ];
    assert_eq!(repeated_runs(&sample), ["x.rs:2", "y.rs:3"]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<(String, String)> = sources(&root, "service")
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(&root).unwrap().display().to_string();
            (rel, std::fs::read_to_string(&f).unwrap())
        })
        .collect();
    files.sort();
    let runs = repeated_runs(&files);
    assert!(
        runs.is_empty(),
        "{} runs of {REPEAT_LINES} or more lines stand again in the service layer: \
         fold them into one function\n{}",
        runs.len(),
        runs.join("\n")
    );
}
