//! The default patterns against corpora of benign client log lines (must never fire) and
//! real error lines (must fire with the right kind).
#![allow(clippy::unwrap_used)]

use ms11_detect::PatternSet;
use ms11_state::IncidentKind;

const BENIGN: &str = include_str!("fixtures/benign_client_log.txt");
const ERRORS: &str = include_str!("fixtures/error_lines.txt");

#[test]
fn benign_lines_never_fire_with_the_defaults() {
    let set = PatternSet::defaults().unwrap();
    let lines: Vec<&str> = BENIGN.lines().collect();
    assert!(lines.len() >= 300, "corpus too small: {}", lines.len());
    let fired: Vec<String> = lines
        .iter()
        .filter_map(|l| {
            set.match_line(l.as_bytes())
                .map(|i| format!("{} <- {l}", set.patterns()[i].name))
        })
        .collect();
    assert!(fired.is_empty(), "false positives:\n{}", fired.join("\n"));
    let mut chunk_hits = 0;
    set.scan(BENIGN.as_bytes(), |_, _| chunk_hits += 1);
    assert_eq!(chunk_hits, 0);
}

#[test]
fn benign_lines_do_fire_without_the_chat_guard() {
    // Proves the corpus exercises the guard: the same lines fire once it is off.
    let cfg = ms11_detect::LogPatternConfig {
        use_default_ignore: false,
        ..Default::default()
    };
    let set = PatternSet::from_config(&cfg).unwrap();
    let fired = BENIGN
        .lines()
        .filter(|l| set.match_line(l.as_bytes()).is_some())
        .count();
    assert!(
        fired > 50,
        "only {fired} chat lines mention an error phrase"
    );
}

#[test]
fn real_error_lines_fire_with_the_right_kind() {
    let set = PatternSet::defaults().unwrap();
    let mut n = 0;
    for entry in ERRORS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (kind, line) = entry.split_once('\t').unwrap();
        let want: IncidentKind = kind.parse().unwrap();
        let got = set.match_line(line.as_bytes()).map(|i| &set.patterns()[i]);
        let got = got.unwrap_or_else(|| panic!("no pattern matched: {line}"));
        assert_eq!(got.kind, want, "{line} (pattern {})", got.name);
        assert_eq!(got.terminal, want.is_terminal_by_default(), "{line}");
        n += 1;
    }
    assert!(n >= 30);
    let mut all = 0;
    set.scan(ERRORS.as_bytes(), |_, _| all += 1);
    assert_eq!(all, n, "chunk scan finds every error line once");
}
