//! The README lists every error code the API can answer (issue 9): this reads the codes out of the source (every
//! `ApiError` built from a literal, every `error_body`, every `code()` table) and finds each in the README.

use std::path::{Path, PathBuf};

/// Where errors are made: the service's crates.
const SOURCES: &[&str] = &["shared/runtime/src", "shared/domain/src", "shared/store/src", "functions"];

/// Calls whose first string literal (after an optional `Fault::X,`) is an error code.
const MAKERS: &[&str] = &[
    "ApiError::new(",
    "ApiError::bad_request(",
    "ApiError::invalid(",
    "ApiError::not_found(",
    "ApiError::bad_query(",
    "error_body(",
];

#[test]
fn the_readme_lists_every_error_code_the_api_can_answer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let mut files = Vec::new();
    for dir in SOURCES {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "the sources were not found under {}", root.display());
    let mut codes = std::collections::BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a source file");
        codes.extend(codes_in(&text));
    }
    // The scan finds what it must: codes from each kind of maker.
    for known in ["body_too_large", "insufficient_stock", "malformed_json", "unauthorized", "wrong_audience"] {
        assert!(codes.contains(known), "the scan missed {known}: {codes:?}");
    }
    let missing: Vec<_> = codes.iter().filter(|c| !readme.contains(&format!("`{c}`"))).collect();
    assert!(missing.is_empty(), "error codes the README does not list: {missing:?}");
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn codes_in(text: &str) -> Vec<String> {
    let mut codes = Vec::new();
    for maker in MAKERS {
        for (at, _) in text.match_indices(maker) {
            let mut rest = text[at + maker.len()..].trim_start();
            if let Some(after) = rest.strip_prefix("Fault::") {
                rest = after.split_once(',').map_or("", |(_, r)| r).trim_start();
            }
            codes.extend(literal(rest));
        }
    }
    // `fn code(&self) -> &'static str { match self { ... => "code", ... } }`
    for (at, _) in text.match_indices("fn code(&self) -> &'static str {") {
        let body = &text[at..];
        let body = &body[..body.find("\n    }\n").unwrap_or(body.len())];
        let mut quoted = body.split('"').skip(1).step_by(2);
        codes.extend(quoted.by_ref().filter(|q| is_code(q)).map(str::to_owned));
    }
    codes
}

/// The snake_case literal `rest` starts with, if any.
fn literal(rest: &str) -> Option<String> {
    let inner = rest.strip_prefix('"')?;
    let code = &inner[..inner.find('"')?];
    is_code(code).then(|| code.to_owned())
}

fn is_code(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
