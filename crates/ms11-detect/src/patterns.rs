//! Named, typed log patterns compiled into one `RegexSet`, plus the chat guard that keeps
//! lines which merely mention an error word from firing.
//!
//! Matching works on bytes (`regex::bytes`), so invalid UTF-8 in a log never costs a
//! decode; only a matched line is decoded (lossily) for the incident. [`PatternSet::scan`]
//! runs one combined regex over a whole chunk of lines and checks the per-pattern set only
//! on candidate lines, so benign lines cost one pass of a single automaton.

use std::time::{Duration, Instant};

use ms11_state::{IncidentKind, Severity};
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::{Deserialize, Deserializer};

use crate::error::DetectError;

/// One named log pattern as written in config.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PatternSpec {
    /// Name shown in incidents and used for the cooldown (`game_crashed`, ...).
    pub name: String,
    /// The regex (Rust `regex` syntax), matched against one line without its newline.
    pub regex: String,
    /// What a match means (`crash`, `disconnect`, `banned`, ...).
    #[serde(deserialize_with = "kind_from_str")]
    #[schemars(with = "String")]
    pub kind: IncidentKind,
    /// How bad; defaults to `critical` for terminal patterns, else `error`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub severity: Option<Severity>,
    /// Recovery must not retry (banned, wrong password); defaults by kind.
    #[serde(default)]
    pub terminal: Option<bool>,
    /// The same pattern is not reported again within this many milliseconds; defaults
    /// to the config's `default_cooldown_ms`.
    #[serde(default)]
    pub cooldown_ms: Option<u64>,
    /// Match case-sensitively (patterns are case-insensitive by default).
    #[serde(default)]
    pub case_sensitive: bool,
}

fn kind_from_str<'de, D: Deserializer<'de>>(d: D) -> Result<IncidentKind, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

impl PatternSpec {
    /// A pattern with the kind's default severity, terminal flag and cooldown.
    pub fn new(name: &str, regex: &str, kind: IncidentKind) -> Self {
        PatternSpec {
            name: name.to_owned(),
            regex: regex.to_owned(),
            kind,
            severity: None,
            terminal: None,
            cooldown_ms: None,
            case_sensitive: false,
        }
    }

    /// A pattern from one of the seed's plain `error_patterns` strings: matched literally,
    /// case-insensitively, with a kind guessed from its words (`other` if none fits).
    pub fn from_plain(text: &str) -> Self {
        let kind = kind_for_words(text);
        let name = format!(
            "seed_{}",
            text.trim()
                .to_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
        );
        PatternSpec::new(&name, &regex::escape(text.trim()), kind)
    }
}

/// Guesses the incident kind of a plain error phrase from its words.
pub fn kind_for_words(text: &str) -> IncidentKind {
    let t = text.to_lowercase();
    let has = |w: &str| t.contains(w);
    if has("banned") {
        IncidentKind::Banned
    } else if has("password") || has("login failed") || has("account disabled") {
        IncidentKind::LoginFailed
    } else if has("version") {
        IncidentKind::VersionMismatch
    } else if has("session") && (has("expired") || has("invalid")) {
        IncidentKind::SessionExpired
    } else if has("maintenance") || has("server down") || has("server is down") {
        IncidentKind::ServerDown
    } else if has("memory") {
        IncidentKind::MemoryError
    } else if has("graphic") || has("direct3d") || has("directx") {
        IncidentKind::GraphicsError
    } else if has("another instance") {
        IncidentKind::DuplicateInstance
    } else if has("crash") || has("fatal") {
        IncidentKind::Crash
    } else if has("disconnect") || has("connection") || has("timed out") || has("timeout") {
        IncidentKind::Disconnect
    } else {
        IncidentKind::Other
    }
}

/// Log-pattern detector settings (the `[session.detect.log]` table of the config).
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogPatternConfig {
    /// Run the log-pattern detector.
    pub enabled: bool,
    /// Include the built-in patterns ([`default_patterns`]) before `patterns`.
    pub use_defaults: bool,
    /// Extra named patterns, checked after the defaults (the first match wins).
    pub patterns: Vec<PatternSpec>,
    /// The seed's plain list (`crash_detection.error_patterns`): literal, case-insensitive
    /// phrases whose kind is guessed from their words.
    pub error_patterns: Vec<String>,
    /// Include the built-in chat guard ([`default_ignore`]): chat, tells and emotes
    /// never fire, whatever they say.
    pub use_default_ignore: bool,
    /// Extra regexes; a line matching any of them never fires.
    pub ignore: Vec<String>,
    /// Patterns without `case_sensitive = true` ignore case.
    pub case_insensitive: bool,
    /// Cooldown for patterns that set none, in milliseconds.
    pub default_cooldown_ms: u64,
    /// A longer line is cut to this many bytes (counted, reported once).
    pub max_line_bytes: usize,
    /// A final line without newline is taken as complete after this quiet time (ms).
    pub partial_line_flush_ms: u64,
    /// Polling interval when file notification is unavailable, and the safety re-check
    /// interval when it is (ms).
    pub poll_interval_ms: u64,
    /// Where to start in a file already present when no saved cursor fits it.
    pub start_at: StartAt,
}

/// Where a follower starts in a file found at start-up without a matching saved cursor.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// At its end, like `tail -F` (old lines are not reported).
    #[default]
    End,
    /// At its beginning.
    Beginning,
}

impl Default for LogPatternConfig {
    fn default() -> Self {
        LogPatternConfig {
            enabled: true,
            use_defaults: true,
            patterns: Vec::new(),
            error_patterns: Vec::new(),
            use_default_ignore: true,
            ignore: Vec::new(),
            case_insensitive: true,
            default_cooldown_ms: 30_000,
            max_line_bytes: 64 * 1024,
            partial_line_flush_ms: 1_000,
            poll_interval_ms: 250,
            start_at: StartAt::End,
        }
    }
}

/// The built-in patterns, most specific first (the first matching pattern wins).
///
/// They follow the phrasings of the SOE client source and SWGEmu's Core3 server, plus
/// the seed's five error types as they are actually written by clients.
pub fn default_patterns() -> Vec<PatternSpec> {
    use IncidentKind as K;
    vec![
        PatternSpec::new(
            "account_banned",
            r"\baccount (?:has been )?banned\b|\byou are banned from this galaxy\b",
            K::Banned,
        ),
        PatternSpec::new(
            "wrong_password",
            r"\bwrong password\b|\bthe password you entered was incorrect\b",
            K::LoginFailed,
        ),
        PatternSpec::new(
            "account_disabled",
            r"\baccount (?:has been )?disabled\b",
            K::LoginFailed,
        ),
        PatternSpec::new(
            "version_mismatch",
            r"\bthe client you are attempting to connect with does not match\b|\bclient version (?:mismatch|does not match)\b|\bversion mismatch\b",
            K::VersionMismatch,
        ),
        PatternSpec::new(
            "session_expired",
            r"\bsession key is (?:invalid|expired)\b|\bsession (?:key )?has expired\b",
            K::SessionExpired,
        ),
        PatternSpec::new(
            "server_down",
            r"\b(?:server|galaxy) (?:is )?(?:currently )?(?:down|offline|unavailable)\b|\b(?:down|closed) for (?:scheduled )?maintenance\b|\bserver (?:is )?(?:undergoing|in) maintenance\b",
            K::ServerDown,
        ),
        PatternSpec::new("server_forced_fatal", r"\bserver forced fatal\b", K::Crash),
        PatternSpec::new(
            "game_crashed",
            r"\b(?:game|client|application) (?:has )?crashed\b|\bfatal report\b|\bautomated crash dump from\b",
            K::Crash,
        ),
        PatternSpec::new(
            "connection_lost",
            r"\bconnection (?:to (?:the )?(?:game |login |connection )?(?:server|galaxy|cluster) )?(?:was |has been )?(?:lost|closed|dropped|timed out)\b|\blost (?:the )?connection to (?:the )?(?:game |login )?(?:server|galaxy|cluster)\b",
            K::Disconnect,
        ),
        PatternSpec::new(
            "server_disconnected",
            r"\bserver disconnected\b|\bdisconnected (?:from|by) (?:the )?(?:game |login )?(?:server|galaxy|cluster)\b",
            K::Disconnect,
        ),
        PatternSpec::new(
            "memory_error",
            r"\bout of memory\b|\bmemory (?:allocation )?(?:error|failure)\b|\b(?:memory allocation|failed to allocate)\b|\bbad_alloc\b",
            K::MemoryError,
        ),
        PatternSpec::new(
            "graphics_error",
            r"\bgraphics subsystem could not be initiali[sz]ed\b|\bgraphics (?:error|failure)\b|\bfailed to (?:create|initiali[sz]e) (?:the )?(?:direct3d|d3d|graphics) device\b",
            K::GraphicsError,
        ),
        PatternSpec::new(
            "duplicate_instance",
            r"\banother instance of this application is already running\b",
            K::DuplicateInstance,
        ),
    ]
}

/// The built-in chat guard: lines that are chat, tells, emotes or mail never fire.
pub fn default_ignore() -> Vec<String> {
    vec![
        // channel-tagged chat: "[Chat] Spatial: ...", "[Guild] ...", "[Tell] ..."
        r"\[(?:chat|spatial|say|tell|tells|guild|group|party|city|planet|galaxy|auction|trade|emote|shout|whisper|ooc|pvp|lfg|help|newbie|mail|social)\]".to_owned(),
        // chat rooms: "[SWG.Galaxy.Naboo.Planet] Bob: ..."
        r"\[swg\.[\w.]+\]".to_owned(),
        // spoken and tells: "Bob says, ...", "Bob tells you, ...", "You tell Bob, ..."
        r#"\b(?:says|said|shouts|whispers|exclaims|asks|yells|tells you|mutters)[,:]\s"#.to_owned(),
        r"\byou tell [^,:]{1,40}[,:]\s".to_owned(),
        // in-game mail: "You have received mail from Bob: Re: ..."
        r"\b(?:received mail from|mail subject:)".to_owned(),
    ]
}

/// One compiled pattern's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternInfo {
    /// The pattern's name.
    pub name: String,
    /// The regex as written.
    pub regex: String,
    /// What a match means.
    pub kind: IncidentKind,
    /// How bad.
    pub severity: Severity,
    /// Recovery must not retry.
    pub terminal: bool,
    /// Minimum time between two reports of this pattern.
    pub cooldown: Duration,
}

/// Compiled patterns: one `RegexSet` (which pattern), one combined regex (whether any),
/// and the ignore set.
#[derive(Debug, Clone)]
pub struct PatternSet {
    infos: Vec<PatternInfo>,
    set: RegexSet,
    any: Option<Regex>,
    ascii_lower: Option<Regex>,
    ignore: Option<RegexSet>,
}

fn check_syntax(name: &str, regex: &str) -> Result<(), DetectError> {
    let mut parser = regex_syntax::ParserBuilder::new().build();
    match parser.parse(regex) {
        Ok(_) => Ok(()),
        Err(err) => {
            let (span, message) = match &err {
                regex_syntax::Error::Parse(e) => (*e.span(), e.kind().to_string()),
                regex_syntax::Error::Translate(e) => (*e.span(), e.kind().to_string()),
                _ => (
                    regex_syntax::ast::Span::splat(regex_syntax::ast::Position::new(0, 1, 1)),
                    err.to_string(),
                ),
            };
            Err(DetectError::BadPattern {
                name: name.to_owned(),
                regex: regex.to_owned(),
                column: span.start.column,
                message,
            })
        }
    }
}

/// The combined regex that finds candidate lines: every pattern, multi-line, with word
/// boundary assertions removed. Dropping a zero-width assertion only widens what a
/// pattern matches, so every line a pattern matches is still a candidate (the per-line
/// `RegexSet` decides); without Unicode word boundaries the lazy DFA never has to give
/// up on non-ASCII input. Falls back to the plain alternation if a pattern cannot be
/// rewritten.
fn prefilter_regex(wrapped: &[String]) -> String {
    use regex_syntax::hir::{Hir, HirKind, Look};
    fn strip(hir: &Hir) -> Hir {
        match hir.kind() {
            HirKind::Look(
                Look::WordAscii
                | Look::WordAsciiNegate
                | Look::WordUnicode
                | Look::WordUnicodeNegate
                | Look::WordStartAscii
                | Look::WordEndAscii
                | Look::WordStartUnicode
                | Look::WordEndUnicode
                | Look::WordStartHalfAscii
                | Look::WordEndHalfAscii
                | Look::WordStartHalfUnicode
                | Look::WordEndHalfUnicode,
            ) => Hir::empty(),
            HirKind::Repetition(r) => Hir::repetition(regex_syntax::hir::Repetition {
                sub: Box::new(strip(&r.sub)),
                ..r.clone()
            }),
            HirKind::Capture(c) => strip(&c.sub),
            HirKind::Concat(subs) => Hir::concat(subs.iter().map(strip).collect()),
            HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(strip).collect()),
            _ => hir.clone(),
        }
    }
    let plain = format!("(?mR){}", wrapped.join("|"));
    let mut parts = Vec::with_capacity(wrapped.len());
    for w in wrapped {
        let parsed = regex_syntax::ParserBuilder::new()
            .multi_line(true)
            .crlf(true)
            .build()
            .parse(w);
        match parsed {
            Ok(hir) => parts.push(strip(&hir)),
            Err(_) => return plain,
        }
    }
    Hir::alternation(parts).to_string()
}

/// Whether a look-around is a word boundary (dropped from prefilters).
fn is_word_look(look: regex_syntax::hir::Look) -> bool {
    use regex_syntax::hir::Look;
    !matches!(
        look,
        Look::Start | Look::End | Look::StartLF | Look::EndLF | Look::StartCRLF | Look::EndCRLF
    )
}

/// The fast prefilter for chunks that are pure ASCII, run on the chunk lowercased.
///
/// Every class is case-folded, then cut down to ASCII without `A`-`Z`; literals are
/// lowercased; word boundaries are dropped. On an ASCII haystack that was lowercased,
/// this matches wherever any pattern matches the original (nothing it removes can occur
/// there), and being a plain case-sensitive regex it gets a literal prefilter, which a
/// case-insensitive set of many patterns does not. `None` if a pattern cannot be rewritten.
fn ascii_lower_prefilter(raw: &[&str]) -> Option<Regex> {
    use regex_syntax::hir::{
        Class, ClassBytes, ClassBytesRange, ClassUnicode, ClassUnicodeRange, Hir, HirKind, Literal,
        Repetition,
    };
    let uni = ClassUnicode::new([
        ClassUnicodeRange::new('\0', '@'),
        ClassUnicodeRange::new('[', '\x7f'),
    ]);
    let bytes = ClassBytes::new([
        ClassBytesRange::new(0, b'@'),
        ClassBytesRange::new(b'[', 0x7f),
    ]);
    fn lower(h: &Hir, uni: &ClassUnicode, bytes: &ClassBytes) -> Option<Hir> {
        Some(match h.kind() {
            HirKind::Look(look) if is_word_look(*look) => Hir::empty(),
            HirKind::Class(Class::Unicode(c)) => {
                let mut c = c.clone();
                c.try_case_fold_simple().ok()?;
                c.intersect(uni);
                Hir::class(Class::Unicode(c))
            }
            HirKind::Class(Class::Bytes(c)) => {
                let mut c = c.clone();
                c.case_fold_simple();
                c.intersect(bytes);
                Hir::class(Class::Bytes(c))
            }
            HirKind::Literal(Literal(b)) => Hir::literal(b.to_ascii_lowercase()),
            HirKind::Repetition(r) => Hir::repetition(Repetition {
                sub: Box::new(lower(&r.sub, uni, bytes)?),
                ..r.clone()
            }),
            HirKind::Capture(c) => lower(&c.sub, uni, bytes)?,
            HirKind::Concat(subs) => Hir::concat(
                subs.iter()
                    .map(|s| lower(s, uni, bytes))
                    .collect::<Option<_>>()?,
            ),
            HirKind::Alternation(subs) => Hir::alternation(
                subs.iter()
                    .map(|s| lower(s, uni, bytes))
                    .collect::<Option<_>>()?,
            ),
            _ => h.clone(),
        })
    }
    let mut parts = Vec::with_capacity(raw.len());
    for r in raw {
        let hir = regex_syntax::ParserBuilder::new()
            .case_insensitive(true)
            .multi_line(true)
            .crlf(true)
            .build()
            .parse(r)
            .ok()?;
        parts.push(lower(&hir, &uni, &bytes)?);
    }
    RegexBuilder::new(&Hir::alternation(parts).to_string())
        .size_limit(64 << 20)
        .build()
        .ok()
}

impl PatternSet {
    /// Compiles `specs` (in priority order) with the given ignore regexes.
    /// `case_insensitive` applies to specs that are not `case_sensitive`; ignore regexes
    /// are always case-insensitive. `default_cooldown` fills specs without a cooldown.
    pub fn compile(
        specs: &[PatternSpec],
        ignore: &[String],
        case_insensitive: bool,
        default_cooldown: Duration,
    ) -> Result<Self, DetectError> {
        let mut infos = Vec::with_capacity(specs.len());
        let mut wrapped = Vec::with_capacity(specs.len());
        for spec in specs {
            if spec.name.trim().is_empty() {
                return Err(DetectError::Config {
                    field: "patterns.name".into(),
                    message: format!("a pattern has an empty name (regex `{}`)", spec.regex),
                });
            }
            check_syntax(&spec.name, &spec.regex)?;
            let ci = case_insensitive && !spec.case_sensitive;
            wrapped.push(format!("(?{}:{})", if ci { "i" } else { "-i" }, spec.regex));
            let terminal = spec.terminal.unwrap_or(spec.kind.is_terminal_by_default());
            infos.push(PatternInfo {
                name: spec.name.clone(),
                regex: spec.regex.clone(),
                kind: spec.kind,
                severity: spec.severity.unwrap_or(if terminal {
                    Severity::Critical
                } else {
                    Severity::Error
                }),
                terminal,
                cooldown: spec
                    .cooldown_ms
                    .map_or(default_cooldown, Duration::from_millis),
            });
        }
        for (i, re) in ignore.iter().enumerate() {
            check_syntax(&format!("ignore[{i}]"), re)?;
        }
        let set = RegexSetBuilder::new(&wrapped)
            .size_limit(64 << 20)
            .build()
            .map_err(|e| DetectError::PatternSet(e.to_string()))?;
        let any = if wrapped.is_empty() {
            None
        } else {
            Some(
                RegexBuilder::new(&prefilter_regex(&wrapped))
                    .size_limit(64 << 20)
                    .build()
                    .map_err(|e| DetectError::PatternSet(e.to_string()))?,
            )
        };
        let raw: Vec<&str> = specs.iter().map(|s| s.regex.as_str()).collect();
        let ascii_lower = if raw.is_empty() {
            None
        } else {
            ascii_lower_prefilter(&raw)
        };
        let ignore = if ignore.is_empty() {
            None
        } else {
            Some(
                RegexSetBuilder::new(ignore)
                    .case_insensitive(true)
                    .build()
                    .map_err(|e| DetectError::PatternSet(e.to_string()))?,
            )
        };
        Ok(PatternSet {
            infos,
            set,
            any,
            ascii_lower,
            ignore,
        })
    }

    /// Compiles the patterns a config asks for: defaults, then `patterns`, then the
    /// seed's `error_patterns`; ignore = default chat guard + `ignore`.
    pub fn from_config(config: &LogPatternConfig) -> Result<Self, DetectError> {
        let mut specs = if config.use_defaults {
            default_patterns()
        } else {
            Vec::new()
        };
        specs.extend(config.patterns.iter().cloned());
        specs.extend(
            config
                .error_patterns
                .iter()
                .filter(|p| !p.trim().is_empty())
                .map(|p| PatternSpec::from_plain(p)),
        );
        let mut ignore = if config.use_default_ignore {
            default_ignore()
        } else {
            Vec::new()
        };
        ignore.extend(config.ignore.iter().cloned());
        Self::compile(
            &specs,
            &ignore,
            config.case_insensitive,
            Duration::from_millis(config.default_cooldown_ms),
        )
    }

    /// The built-in patterns and chat guard with default settings.
    pub fn defaults() -> Result<Self, DetectError> {
        Self::from_config(&LogPatternConfig::default())
    }

    /// The patterns, in priority order.
    pub fn patterns(&self) -> &[PatternInfo] {
        &self.infos
    }

    /// The first pattern (by priority) matching one line (no newline), unless the line
    /// is ignored.
    pub fn match_line(&self, line: &[u8]) -> Option<usize> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let first = self.set.matches(line).into_iter().next()?;
        if self.ignore.as_ref().is_some_and(|ig| ig.is_match(line)) {
            return None;
        }
        Some(first)
    }

    /// Calls `on_match(line, pattern_index)` for every line of `chunk` (lines separated by
    /// `\n`; a final line without newline counts) that a pattern matches.
    pub fn scan(&self, chunk: &[u8], mut on_match: impl FnMut(&[u8], usize)) {
        let Some(any) = &self.any else { return };
        // Pure ASCII (the usual case): search the lowercased chunk with the fast
        // prefilter; positions are the same in both.
        let lowered;
        let (haystack, finder) = match &self.ascii_lower {
            Some(fast) if chunk.is_ascii() => {
                lowered = chunk.to_ascii_lowercase();
                (&lowered[..], fast)
            }
            _ => (chunk, any),
        };
        let mut pos = 0;
        while pos < chunk.len() {
            let Some(m) = finder.find_at(haystack, pos) else {
                break;
            };
            let start = m.start();
            let line_start = chunk[pos..start]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(pos, |i| pos + i + 1);
            let line_end = chunk[start..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(chunk.len(), |i| start + i);
            let line = &chunk[line_start..line_end];
            if let Some(idx) = self.match_line(line) {
                on_match(line.strip_suffix(b"\r").unwrap_or(line), idx);
            }
            pos = line_end + 1;
        }
    }
}

/// A [`PatternSet`] with per-pattern cooldowns.
#[derive(Debug)]
pub struct PatternMatcher {
    set: PatternSet,
    last_fired: Vec<Option<Instant>>,
}

impl PatternMatcher {
    /// Wraps a compiled set; no pattern is cooling down yet.
    pub fn new(set: PatternSet) -> Self {
        let n = set.patterns().len();
        PatternMatcher {
            set,
            last_fired: vec![None; n],
        }
    }

    /// The compiled set.
    pub fn set(&self) -> &PatternSet {
        &self.set
    }

    /// Whether pattern `idx` may fire at `now`; if so, starts its cooldown.
    pub fn admit(&mut self, idx: usize, now: Instant) -> bool {
        let Some(info) = self.set.patterns().get(idx) else {
            return false;
        };
        let slot = &mut self.last_fired[idx];
        if let Some(last) = *slot
            && now.saturating_duration_since(last) < info.cooldown
        {
            return false;
        }
        *slot = Some(now);
        true
    }

    /// Scans a chunk and returns `(line, pattern index)` of the matches that are not
    /// cooling down at `now`.
    pub fn scan(&mut self, chunk: &[u8], now: Instant) -> Vec<(String, usize)> {
        let mut hits = Vec::new();
        self.set.scan(chunk, |line, idx| {
            hits.push((String::from_utf8_lossy(line).into_owned(), idx));
        });
        hits.retain(|(_, idx)| self.admit(*idx, now));
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> PatternSet {
        PatternSet::defaults().unwrap()
    }

    fn kind_of(set: &PatternSet, line: &str) -> Option<IncidentKind> {
        set.match_line(line.as_bytes())
            .map(|i| set.patterns()[i].kind)
    }

    #[test]
    fn the_issue_examples_get_the_right_kind() {
        let set = defaults();
        assert_eq!(
            kind_of(&set, "Connection to server lost. Please reconnect."),
            Some(IncidentKind::Disconnect)
        );
        assert_eq!(
            kind_of(&set, "Game has crashed. Please restart the client."),
            Some(IncidentKind::Crash)
        );
        assert_eq!(
            kind_of(&set, "[Chat] Spatial: lol my game crashed yesterday"),
            None
        );
    }

    #[test]
    fn the_defaults_get_the_fast_ascii_prefilter() {
        let set = defaults();
        assert!(set.ascii_lower.is_some());
        let mut n = 0;
        set.scan(b"CONNECTION TO SERVER LOST.\nok\n", |_, _| n += 1);
        assert_eq!(n, 1);
    }

    #[test]
    fn a_bad_regex_names_the_pattern_and_the_column() {
        let spec = PatternSpec::new("broken", r"fatal (error", IncidentKind::Crash);
        let err = PatternSet::compile(&[spec], &[], true, Duration::ZERO).unwrap_err();
        match &err {
            DetectError::BadPattern { name, column, .. } => {
                assert_eq!(name, "broken");
                assert_eq!(*column, 7, "{err}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string().contains("`broken`") && err.to_string().contains("column 7"),
            "{err}"
        );
        let bad_class = PatternSpec::new("cls", r"ab\p{NoSuchClass}", IncidentKind::Crash);
        let err = PatternSet::compile(&[bad_class], &[], true, Duration::ZERO).unwrap_err();
        assert!(
            matches!(err, DetectError::BadPattern { column: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn case_sensitivity_is_per_pattern() {
        let mut cs = PatternSpec::new("cs", "FATAL", IncidentKind::Crash);
        cs.case_sensitive = true;
        let ci = PatternSpec::new("ci", "oops", IncidentKind::Other);
        let set = PatternSet::compile(&[cs, ci], &[], true, Duration::ZERO).unwrap();
        assert_eq!(set.match_line(b"FATAL thing"), Some(0));
        assert_eq!(set.match_line(b"fatal thing"), None);
        assert_eq!(set.match_line(b"OOPS"), Some(1));
    }

    #[test]
    fn scan_finds_each_matching_line_of_a_chunk_once() {
        let set = defaults();
        let chunk = b"zone loaded\r\nConnection to server lost.\n[Chat] Spatial: connection lost lol\nGame has crashed\nlast line without newline: out of memory";
        let mut found = Vec::new();
        set.scan(chunk, |line, idx| {
            found.push((
                String::from_utf8_lossy(line).into_owned(),
                set.patterns()[idx].kind,
            ))
        });
        assert_eq!(
            found,
            vec![
                (
                    "Connection to server lost.".to_owned(),
                    IncidentKind::Disconnect
                ),
                ("Game has crashed".to_owned(), IncidentKind::Crash),
                (
                    "last line without newline: out of memory".to_owned(),
                    IncidentKind::MemoryError
                ),
            ]
        );
    }

    #[test]
    fn cooldown_suppresses_the_same_pattern_only() {
        let mut m = PatternMatcher::new(defaults());
        let t0 = Instant::now();
        let lines = b"Connection to server lost.\nGame has crashed\n";
        assert_eq!(m.scan(lines, t0).len(), 2);
        assert_eq!(
            m.scan(b"Connection to server lost.\n", t0 + Duration::from_secs(5))
                .len(),
            0
        );
        assert_eq!(
            m.scan(b"out of memory\n", t0 + Duration::from_secs(5))
                .len(),
            1
        );
        assert_eq!(
            m.scan(
                b"Connection to server lost.\n",
                t0 + Duration::from_secs(31)
            )
            .len(),
            1
        );
    }

    #[test]
    fn seed_plain_patterns_get_kinds_from_their_words() {
        let cases = [
            ("connection lost", IncidentKind::Disconnect),
            ("server disconnected", IncidentKind::Disconnect),
            ("game crashed", IncidentKind::Crash),
            ("memory error", IncidentKind::MemoryError),
            ("graphics error", IncidentKind::GraphicsError),
            ("something odd (x)", IncidentKind::Other),
        ];
        for (text, kind) in cases {
            let spec = PatternSpec::from_plain(text);
            assert_eq!(spec.kind, kind, "{text}");
        }
        let cfg = LogPatternConfig {
            use_defaults: false,
            error_patterns: vec!["something odd (x)".into()],
            ..LogPatternConfig::default()
        };
        let set = PatternSet::from_config(&cfg).unwrap();
        assert_eq!(set.match_line(b"SOMETHING ODD (X) happened"), Some(0));
        assert_eq!(set.patterns()[0].name, "seed_something_odd__x_");
    }

    #[test]
    fn config_rejects_unknown_keys_and_kinds() {
        let ok: LogPatternConfig = toml::from_str(
            "error_patterns = [\"game crashed\"]\n[[patterns]]\nname = \"x\"\nregex = \"boom\"\nkind = \"crash\"\nterminal = true\ncooldown_ms = 5\n",
        )
        .unwrap();
        assert_eq!(ok.patterns[0].kind, IncidentKind::Crash);
        let err = toml::from_str::<LogPatternConfig>("bogus = 1").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = toml::from_str::<LogPatternConfig>(
            "[[patterns]]\nname = \"x\"\nregex = \"b\"\nkind = \"explosion\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("explosion"), "{err}");
    }
}
