//! Invariants of the source tree that docs/ARCHITECTURE.md states and a reader relies on,
//! checked on every `cargo test`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.map_while(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The part of a file that ships: everything before its `#[cfg(test)]` module.
fn shipped_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[test]
fn every_child_process_is_started_through_ms11_process() {
    let root = root();
    let mut files = Vec::new();
    for dir in ["crates", "plugins"] {
        rust_files(&root.join(dir), &mut files);
    }
    let offenders: Vec<String> = files
        .iter()
        .filter(|path| {
            let relative = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            // ms11-process is the one place; the simulator and test code start what
            // they test.
            !(relative.starts_with("crates/ms11-process/")
                || relative.starts_with("crates/ms11-sim/")
                || relative.contains("/tests/")
                || relative.contains("/benches/"))
        })
        .filter(|path| {
            let code = shipped_code(path);
            code.contains("Command::new") || code.contains("process::Command")
        })
        .map(|path| path.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "children started without ms11-process (no process group, no parent-death signal, no leftover record): {offenders:?}"
    );
}

#[test]
fn every_crate_says_what_it_is_for_in_its_first_line() {
    let root = root();
    let mut missing = Vec::new();
    for dir in ["crates", "plugins", "plugins/fixtures"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.map_while(Result::ok) {
            for file in ["src/lib.rs", "src/main.rs"] {
                let path = entry.path().join(file);
                if let Ok(text) = std::fs::read_to_string(&path)
                    && !text.starts_with("//!")
                {
                    missing.push(path.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "crate roots without a `//!` doc comment: {missing:?}"
    );
}

#[test]
fn every_test_that_skips_for_a_missing_need_goes_through_the_one_helper() {
    let root = root();
    let mut files = Vec::new();
    for dir in ["crates", "plugins", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    // A test that says "skipped" by itself would pass in CI without running; the
    // helper fails it instead when MS11_REQUIRE names its need.
    let skip_line = ["eprintln!(\"", "skipped"].concat();
    let offenders: Vec<String> = files
        .iter()
        .filter(|path| !path.starts_with(root.join("crates/ms11-test-support")))
        .filter(|path| {
            std::fs::read_to_string(path)
                .unwrap()
                .contains(skip_line.as_str())
        })
        .map(|path| path.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "tests that skip without ms11_test_support::skip (CI would pass them without running): {offenders:?}"
    );
}
