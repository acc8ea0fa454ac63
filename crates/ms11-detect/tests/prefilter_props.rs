//! The chunk scan (prefilters) reports exactly the lines that the per-line check matches,
//! whatever the case, the non-ASCII characters and the pattern flags.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ms11_detect::{PatternSet, PatternSpec};
use ms11_state::IncidentKind;
use proptest::prelude::*;

const WORDS: &[&str] = &[
    "connection",
    "Connection",
    "CONNECTION",
    "to",
    "server",
    "SERVER",
    "lost",
    "LoSt",
    "game",
    "has",
    "crashed",
    "CRASHED",
    "ſession",
    "session",
    "key",
    "is",
    "invalid",
    "Kelvin",
    "\u{212A}ey",
    "[Chat]",
    "Spatial:",
    "error",
    "code",
    "1042",
    "in",
    "module",
    "abc7",
    "FATAL",
    "fatal",
    "é",
    "Ünïcödé",
    "memory",
    "out",
    "of",
    "\r",
    " ",
    "-",
    "x\ty",
    "\u{FFFD}",
];

fn set() -> &'static PatternSet {
    static SET: std::sync::OnceLock<PatternSet> = std::sync::OnceLock::new();
    SET.get_or_init(build)
}

fn build() -> PatternSet {
    let mut specs = ms11_detect::default_patterns();
    let mut cs = PatternSpec::new("cs", r"\bFATAL\b", IncidentKind::Crash);
    cs.case_sensitive = true;
    specs.push(cs);
    specs.push(PatternSpec::new(
        "inline",
        r"(?-i:Kelvin) [a-z]+",
        IncidentKind::Other,
    ));
    specs.push(PatternSpec::new(
        "code",
        r"error code 1[0-9]{2}\d in module [a-z]+\d",
        IncidentKind::Other,
    ));
    specs.push(PatternSpec::new(
        "anchored",
        r"^memory$|^out of memory",
        IncidentKind::MemoryError,
    ));
    specs.push(PatternSpec::new(
        "unicode",
        r"\w+ key is",
        IncidentKind::SessionExpired,
    ));
    PatternSet::compile(&specs, &ms11_detect::default_ignore(), true, Duration::ZERO).unwrap()
}

fn line() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 0..12).prop_map(|w| w.join(" "))
}

/// ASCII-only lines: chunks of them take the lowercased fast path.
fn ascii_line() -> impl Strategy<Value = String> {
    let ascii: Vec<&str> = WORDS.iter().copied().filter(|w| w.is_ascii()).collect();
    prop::collection::vec(prop::sample::select(ascii), 0..12).prop_map(|w| w.join(" "))
}

fn check(lines: &[String]) -> Result<(), TestCaseError> {
    let set = set();
    let chunk = lines.join("\n");
    let expected: Vec<(String, usize)> = lines
        .iter()
        .filter_map(|l| {
            set.match_line(l.as_bytes())
                .map(|i| (l.trim_end_matches('\r').to_owned(), i))
        })
        .collect();
    let mut got = Vec::new();
    set.scan(chunk.as_bytes(), |l, i| {
        got.push((String::from_utf8_lossy(l).into_owned(), i))
    });
    prop_assert_eq!(got, expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn scan_reports_exactly_the_matching_lines(lines in prop::collection::vec(line(), 1..20)) {
        check(&lines)?;
    }

    #[test]
    fn ascii_chunks_via_the_fast_path_too(lines in prop::collection::vec(ascii_line(), 1..20)) {
        check(&lines)?;
    }
}
