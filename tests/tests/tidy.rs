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

/// The shipped code of every crate (no tests, benches or `#[cfg(test)]` modules), by
/// path relative to the root.
fn shipped_crate_code() -> Vec<(String, String)> {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    files
        .iter()
        .map(|path| {
            (
                path.strip_prefix(&root).unwrap().display().to_string(),
                path,
            )
        })
        .filter(|(relative, _)| !relative.contains("/tests/") && !relative.contains("/benches/"))
        .map(|(relative, path)| (relative, non_test_code(path)))
        .collect()
}

/// The code of a file without its inline test modules (`#[cfg(test)] mod x { ... }`,
/// up to the end of the file, where they are by convention); items marked
/// `#[cfg(test)]` elsewhere (a test-only method, `mod tests;`) are kept.
fn non_test_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut from = 0;
    while let Some(at) = text[from..].find("#[cfg(test)]") {
        let at = from + at;
        let next_line = text[at..].lines().nth(1).unwrap_or_default().trim();
        if next_line.starts_with("mod ") && next_line.ends_with('{') {
            return text[..at].to_owned();
        }
        from = at + 1;
    }
    text
}

/// Whether `code` reads the field `field` (`.field` not followed by more of a name).
fn reads_field(code: &str, field: &str) -> bool {
    !field_reads(code, field).is_empty()
}

/// Where `code` reads `.field`.
fn field_reads(code: &str, field: &str) -> Vec<usize> {
    let needle = format!(".{field}");
    code.match_indices(&needle)
        .map(|(at, _)| at)
        .filter(|at| {
            code[at + needle.len()..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        })
        .collect()
}

/// The name of the function around byte `at` of `code`.
fn enclosing_fn(code: &str, at: usize) -> Option<&str> {
    let start = code[..at].rfind("fn ")? + 3;
    let name = &code[start..];
    let end = name.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    Some(&name[..end])
}

#[test]
fn every_documented_configuration_key_is_read_by_the_code() {
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let code = shipped_crate_code();
    let (config, others): (Vec<_>, Vec<_>) = code
        .iter()
        .partition(|(path, _)| path.starts_with("crates/ms11-config/"));
    let called_outside_config =
        |name: &str| others.iter().any(|(_, c)| c.contains(&format!("{name}(")));
    let mut keys = 0;
    let mut dead = Vec::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let columns: Vec<&str> = line.split(" | ").collect();
        let key = columns[0].trim_start_matches("| `").trim_end_matches('`');
        if columns.get(1) == Some(&"table") {
            continue;
        }
        keys += 1;
        // A key of the seed's files that is accepted and ignored says so.
        if columns
            .last()
            .is_some_and(|d| d.contains("accepted in the seed's files and ignored"))
        {
            continue;
        }
        let segments: Vec<&str> = key.split('.').filter(|s| *s != "N").collect();
        let field = segments[segments.len() - 1];
        // For a key of a top-level table, the table must be named where it is read.
        let table = (segments.len() == 2 && segments[0] != "session").then_some(segments[0]);
        let read_directly = others
            .iter()
            .any(|(_, c)| reads_field(c, field) && table.is_none_or(|t| c.contains(t)));
        // Or a method of the configuration reads it, and that method is used.
        let read_by_a_used_method = config.iter().any(|(_, c)| {
            field_reads(c, field)
                .into_iter()
                .filter_map(|at| enclosing_fn(c, at))
                .any(&called_outside_config)
        });
        if !read_directly && !read_by_a_used_method {
            dead.push(key.to_owned());
        }
    }
    assert!(keys > 50, "only {keys} keys found in docs/configuration.md");
    assert!(
        dead.is_empty(),
        "documented configuration keys that no code reads (implement them, or remove them from the config types and docs): {dead:?}"
    );
}

#[test]
fn every_documented_exit_code_can_be_produced() {
    let root = root();
    let doc = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    let start = doc
        .find("Exit codes:")
        .expect("docs/operations.md lists the exit codes");
    let paragraph = doc[start..]
        .split("\n\n")
        .next()
        .unwrap()
        .replace('\n', " ");
    let documented: Vec<u8> = paragraph["Exit codes:".len()..]
        .split(", ")
        .filter_map(|part| part.trim().split(' ').next()?.parse().ok())
        .collect();
    let source = std::fs::read_to_string(root.join("crates/ms11-runner/src/exit_code.rs")).unwrap();
    let enum_body = source
        .split("pub enum ExitCode {")
        .nth(1)
        .and_then(|s| s.split('}').next())
        .unwrap();
    let variants: Vec<(String, u8)> = enum_body
        .lines()
        .filter_map(|l| {
            let (name, value) = l.trim().trim_end_matches(',').split_once(" = ")?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect();
    let mut codes: Vec<u8> = variants.iter().map(|(_, v)| *v).collect();
    codes.sort_unstable();
    assert_eq!(
        documented, codes,
        "the exit codes in docs/operations.md and ExitCode differ"
    );
    let code = shipped_crate_code();
    let runner: Vec<&String> = code
        .iter()
        .filter(|(path, _)| path.starts_with("crates/ms11-runner/"))
        .map(|(_, c)| c)
        .collect();
    let unused: Vec<String> = variants
        .iter()
        .filter(|(name, _)| {
            !runner
                .iter()
                .any(|c| c.contains(&format!("ExitCode::{name}")))
        })
        .map(|(name, value)| format!("{value} ({name})"))
        .collect();
    assert!(
        unused.is_empty(),
        "exit codes the runner never returns: {unused:?}"
    );
    // 8 comes from a session that halted: the session loop must end so.
    assert!(
        code.iter()
            .any(|(path, c)| path.starts_with("crates/ms11-supervisor/")
                && c.contains("SessionEnd::Halted(")),
        "no session ever ends Halted, so exit code 8 cannot happen"
    );
}

/// The message types in the table under `heading` of docs/agent-protocol.md.
fn documented_messages(doc: &str, heading: &str) -> Vec<String> {
    let section = doc.split(heading).nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| l[3..].split('`').next().unwrap().to_owned())
        .collect()
}

fn camel(type_name: &str) -> String {
    type_name
        .split('_')
        .map(|w| {
            let mut chars = w.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn every_documented_protocol_message_is_sent_or_handled() {
    let doc = std::fs::read_to_string(root().join("docs/agent-protocol.md")).unwrap();
    let from_bot = documented_messages(&doc, "## Messages: bot → runner");
    let to_bot = documented_messages(&doc, "## Messages: runner → bot");
    assert_eq!(from_bot, ms11_agent::BOT_MESSAGE_TYPES, "bot → runner");
    assert_eq!(to_bot, ms11_agent::RUNNER_MESSAGE_TYPES, "runner → bot");
    let code = shipped_crate_code();
    let used_in = |prefixes: &[&str], needle: &str| {
        code.iter().any(|(path, c)| {
            prefixes.iter().any(|p| path.starts_with(p))
                && !path.ends_with("/message.rs")
                && c.contains(needle)
        })
    };
    let runner = [
        "crates/ms11-supervisor/",
        "crates/ms11-runner/",
        "crates/ms11-agent/",
    ];
    let unsent: Vec<&String> = to_bot
        .iter()
        .filter(|t| !used_in(&runner, &format!("RunnerMessage::{}", camel(t))))
        .collect();
    let unhandled: Vec<&String> = from_bot
        .iter()
        .filter(|t| !used_in(&runner, &format!("BotMessage::{}", camel(t))))
        .collect();
    assert!(
        unsent.is_empty() && unhandled.is_empty(),
        "documented but dead: runner → bot never sent {unsent:?}, bot → runner never handled {unhandled:?}"
    );
}
