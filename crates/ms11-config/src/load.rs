//! Layering: embedded defaults < config file (TOML, or YAML by extension) < `MS11_*`
//! environment variables < `--set KEY=VALUE` from the command line. Errors name the key,
//! the file and line where it can be found, and suggest the nearest known key.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml, Yaml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use thiserror::Error;

use crate::model::Config;

/// The embedded defaults (`config/default.toml`).
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Names of the top-level keys, used to pick `MS11_*` variables that are configuration
/// (others, like `MS11_CONFIG`, belong to other parts).
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "save_interval",
    "state_file",
    "recovery_enabled",
    "auto_restart",
    "auto_relog",
    "crash_detection",
    "session_tracking",
    "state_backend",
    "keep_generations",
    "max_state_bytes",
    "max_patch_bytes",
    "continue_previous",
    "control_socket",
    "plugins",
    "session",
];

/// `MS11_*` environment variables that belong to other parts of the project (the
/// runner's `--config`, the plugin host, the test and benchmark tools), not to the
/// configuration. Any other `MS11_*` variable must name a configuration key.
pub const NON_CONFIG_ENV: &[&str] = &[
    "MS11_CONFIG",
    "MS11_PLUGIN_HOST",
    "MS11_REQUIRE",
    "MS11_E2E_KEEP",
    "MS11_PAIRED_ROUNDS",
    "MS11_KILL9_ITERATIONS",
    "MS11_SAVER_DIR",
    "MS11_PDEATHSIG_HELPER",
    // The marker every child of a runner carries (`ms11-process`); a bot that runs
    // `ms11-recovery ack` inherits it.
    "MS11_SESSION_TOKEN",
];

/// Prefixes of `MS11_*` variables that belong to the project's tools (benchmarks).
const NON_CONFIG_ENV_PREFIXES: &[&str] = &["MS11_BENCH_"];

/// The longest nesting (of brackets, braces or YAML block levels) a config file may
/// have. Deeper files are refused before they reach the parser, whose time grows
/// faster than the depth.
pub const MAX_NESTING: usize = 128;

/// Where the configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// The config file, if any.
    pub file: Option<PathBuf>,
    /// `KEY=VALUE` overrides from the command line, in order.
    pub overrides: Vec<String>,
    /// Read `MS11_*` environment variables of this process.
    pub use_env: bool,
    /// `MS11_*` variables given explicitly (`NAME`, `VALUE`), read after the process's
    /// own with the same rules (tests, and callers that filter the environment).
    pub env: Vec<(String, String)>,
}

/// A loaded configuration and the layers it came from (for `config show`).
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The merged configuration.
    pub config: Config,
    pub(crate) figment: Figment,
    pub(crate) file: Option<PathBuf>,
    pub(crate) file_text: Option<String>,
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path (`session.0.pipeline`), empty for the whole file.
    pub key: String,
    /// Where: `file:line`, `environment variable MS11_X`, `--set`, or empty.
    pub location: String,
    /// What is wrong, with a suggestion where there is one.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.key.is_empty(), self.location.is_empty()) {
            (true, true) => write!(f, "{}", self.message),
            (true, false) => write!(f, "{}: {}", self.location, self.message),
            (false, true) => write!(f, "`{}`: {}", self.key, self.message),
            (false, false) => write!(f, "{}: `{}`: {}", self.location, self.key, self.message),
        }
    }
}

/// The configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file nests deeper than [`MAX_NESTING`].
    #[error(
        "config file `{path}`: line {line}: nested deeper than {max} levels; refusing to parse it"
    )]
    TooDeep {
        /// The file.
        path: PathBuf,
        /// The 1-based line where the limit was passed.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// A `--set` argument is not `KEY=VALUE` (secrets in it redacted).
    #[error("`--set {}`: expected KEY=VALUE (e.g. --set save_interval=60)", ms11_redact::redact(.0))]
    BadOverride(String),
    /// Keys or values are wrong.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

impl ConfigError {
    /// The individual problems (for `config check`).
    pub fn problems(&self) -> Vec<ConfigProblem> {
        match self {
            ConfigError::Invalid(p) => p.clone(),
            other => vec![ConfigProblem {
                key: String::new(),
                location: String::new(),
                message: other.to_string(),
            }],
        }
    }
}

/// Loads and merges the layers.
pub fn load(sources: &ConfigSources) -> Result<LoadedConfig, ConfigError> {
    let mut figment = Figment::new().merge(Toml::string(DEFAULT_TOML));
    let mut file_text = None;
    if let Some(path) = &sources.file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        if let Some(line) = too_deep(&text, is_yaml, MAX_NESTING) {
            return Err(ConfigError::TooDeep {
                path: path.clone(),
                line,
                max: MAX_NESTING,
            });
        }
        figment = if is_yaml {
            figment.merge(Yaml::file_exact(path))
        } else {
            figment.merge(Toml::file_exact(path))
        };
        file_text = Some(text);
    }
    let mut variables: Vec<(String, String)> = Vec::new();
    if sources.use_env {
        variables.extend(std::env::vars_os().filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with("MS11_")
                .then(|| (k, v.to_string_lossy().into_owned()))
        }));
    }
    variables.extend(sources.env.iter().cloned());
    let mut problems = Vec::new();
    for (name, value) in variables {
        match env_key(&name) {
            EnvKey::NotConfig => {}
            EnvKey::Key(key) => {
                figment = figment.merge(EnvVar {
                    name,
                    key,
                    value: value.trim().to_owned(),
                });
            }
            EnvKey::Unknown(first) => {
                let mut message = format!("unknown environment variable `{name}`");
                if let Some(best) = did_you_mean(&first, TOP_LEVEL_KEYS) {
                    message.push_str(&format!(
                        " (did you mean `MS11_{}`?)",
                        best.to_ascii_uppercase()
                    ));
                }
                problems.push(ConfigProblem {
                    key: String::new(),
                    location: format!("environment variable {name}"),
                    message,
                });
            }
        }
    }
    for item in &sources.overrides {
        let (key, value) = item
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| ConfigError::BadOverride(item.clone()))?;
        figment = figment.merge(Serialized::default(key.trim(), parse_value(value.trim())));
    }
    match figment.extract::<Config>() {
        Ok(config) if problems.is_empty() => {
            let mut loaded = LoadedConfig {
                config,
                figment,
                file: sources.file.clone(),
                file_text,
            };
            loaded.resolve_relative_paths();
            Ok(loaded)
        }
        Ok(_) => Err(ConfigError::Invalid(problems)),
        Err(errors) => {
            problems.extend(
                errors
                    .into_iter()
                    .map(|e| problem_from(&e, file_text.as_deref())),
            );
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// What an `MS11_*` variable is.
enum EnvKey {
    /// Not configuration (see [`NON_CONFIG_ENV`]) or not `MS11_*` at all.
    NotConfig,
    /// A configuration key, dotted (`crash_detection.enabled`).
    Key(String),
    /// `MS11_*`, but its first segment (given, lower-cased) is no top-level key.
    Unknown(String),
}

/// The configuration key an `MS11_*` variable sets: the name after the prefix,
/// lower-cased, nested keys joined by `__` (`MS11_CRASH_DETECTION__ENABLED`).
fn env_key(name: &str) -> EnvKey {
    let Some(rest) = name.strip_prefix("MS11_") else {
        return EnvKey::NotConfig;
    };
    if NON_CONFIG_ENV.contains(&name) || NON_CONFIG_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
    {
        return EnvKey::NotConfig;
    }
    let key = rest
        .to_ascii_lowercase()
        .split("__")
        .collect::<Vec<_>>()
        .join(".");
    let first = key.split('.').next().unwrap_or_default();
    if TOP_LEVEL_KEYS.contains(&first) && !key.split('.').any(str::is_empty) {
        EnvKey::Key(key)
    } else {
        EnvKey::Unknown(first.to_owned())
    }
}

/// One `MS11_*` variable as a configuration layer, named after the variable so errors
/// and `config show` name it.
struct EnvVar {
    name: String,
    key: String,
    value: String,
}

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable {}", self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        // The value parses like figment's own environment provider: numbers, booleans,
        // arrays (`[1, 2]`), or text.
        let value: Value = self
            .value
            .parse()
            .unwrap_or_else(|never: std::convert::Infallible| match never {});
        Serialized::default(&self.key, value).data()
    }
}

/// The 1-based line where `text` nests deeper than `max`, if it does. Linear in the
/// text: counts open brackets and braces outside strings and comments, and for YAML
/// the block levels a line can open (its indentation and leading `- `/`? ` markers).
pub(crate) fn too_deep(text: &str, yaml: bool, max: usize) -> Option<usize> {
    let mut depth: usize = 0;
    let mut line = 1;
    let mut at_line_start = true;
    let mut block = 0usize;
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    let mut comment = false;
    let mut previous = b'\n';
    for &byte in text.as_bytes() {
        if byte == b'\n' {
            line += 1;
            at_line_start = true;
            block = 0;
            comment = false;
            previous = byte;
            // A YAML double-quoted or TOML basic string may span lines; a single-line
            // string that never closed ends here.
            if quote == Some(b'\'') && !yaml {
                quote = None;
            }
            continue;
        }
        if comment {
            continue;
        }
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if q == b'"' && byte == b'\\' {
                escaped = true;
            } else if byte == q {
                quote = None;
            }
            previous = byte;
            continue;
        }
        if yaml && at_line_start {
            match byte {
                b' ' | b'\t' | b'-' | b'?' => {
                    block += 1;
                    if block + depth > max {
                        return Some(line);
                    }
                    previous = byte;
                    continue;
                }
                _ => {}
            }
        }
        at_line_start = false;
        match byte {
            b'#' if previous.is_ascii_whitespace() || previous == b'\n' => comment = true,
            b'"' => quote = Some(b'"'),
            // In YAML a quote only opens a string at the start of a scalar.
            b'\''
                if !yaml
                    || matches!(
                        previous,
                        b' ' | b'\t' | b'[' | b'{' | b',' | b':' | b'-' | b'\n'
                    ) =>
            {
                quote = Some(b'\'')
            }
            b'[' | b'{' => {
                depth += 1;
                if depth + block > max {
                    return Some(line);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = byte;
    }
    None
}

/// A `--set` value: TOML syntax (`60`, `true`, `["a", "b"]`, `"text"`), or plain text.
fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn problem_from(error: &figment::Error, file_text: Option<&str>) -> ConfigProblem {
    use figment::error::Kind;
    let mut path = error.path.clone();
    let mut message = error.kind.to_string();
    if let Kind::UnknownField(field, expected) = &error.kind {
        if path.last() != Some(field) {
            path.push(field.clone());
        }
        message = format!("unknown key `{field}`");
        if let Some(best) = did_you_mean(field, expected) {
            message.push_str(&format!(" (did you mean `{best}`?)"));
        } else if !expected.is_empty() {
            message.push_str(&format!(" (known keys: {})", expected.join(", ")));
        }
    }
    let key = path.join(".");
    let location = location_of(error.metadata.as_ref(), &path, file_text);
    // An error may echo the value (`found string "..."`): never a secret's.
    if ms11_redact::is_secret_key(&key) {
        message = echoed_values()
            .replace_all(&message, "${1}[redacted]${1}")
            .into_owned();
    }
    let message = ms11_redact::redact(&message).into_owned();
    ConfigProblem {
        key,
        location,
        message,
    }
}

/// Quoted values in a parser's error message.
fn echoed_values() -> &'static regex::Regex {
    static QUOTED: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    #[allow(clippy::unwrap_used)] // A constant, valid pattern.
    QUOTED.get_or_init(|| regex::Regex::new(r#"(["`'])[^"`']*["`']"#).unwrap())
}

/// Where a value came from, as text: `file.toml:12`, `environment variable MS11_X`,
/// `--set`, `defaults`.
pub(crate) fn location_of(
    metadata: Option<&Metadata>,
    path: &[String],
    file_text: Option<&str>,
) -> String {
    let Some(meta) = metadata else {
        return String::new();
    };
    match &meta.source {
        Some(Source::File(file)) => match file_text.and_then(|t| line_of_key(t, path)) {
            Some(line) => format!("{}:{line}", display(file)),
            None => display(file),
        },
        _ if meta.name.starts_with("environment variable") => meta.name.to_string(),
        _ if meta.name.contains("TOML source string") => "defaults".into(),
        _ => "--set".into(),
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// The 1-based line of a (nested) key in TOML or YAML text: each path segment is looked
/// for after the line of its parent; numeric segments (array indexes) are skipped.
pub(crate) fn line_of_key(text: &str, path: &[String]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut found = None;
    let mut previous: Option<&str> = None;
    for segment in path {
        if let Ok(index) = segment.parse::<usize>() {
            // The index-th `[[previous]]` table (TOML arrays of tables).
            if let Some(key) = previous {
                let header = format!("[[{key}]]");
                if let Some(at) = lines
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.trim() == header)
                    .map(|(i, _)| i)
                    .nth(index)
                {
                    found = Some(at + 1);
                    from = at;
                }
            }
            continue;
        }
        previous = Some(segment.as_str());
        let at = lines.iter().enumerate().skip(from).find_map(|(i, line)| {
            let l = line.trim_start().trim_start_matches("- ");
            let bare = l.trim_start_matches('[').trim_start_matches('[');
            let is_key = [l, bare].iter().any(|s| {
                let s = s.trim_start_matches('"');
                s.starts_with(segment.as_str())
                    && s[segment.len()..]
                        .trim_start_matches('"')
                        .trim_start()
                        .starts_with(['=', ':', ']', '.'])
            }) || (l.starts_with('[')
                && (bare.contains(&format!(".{segment}]"))
                    || bare.contains(&format!(".{segment}."))));
            is_key.then_some(i)
        })?;
        found = Some(at + 1);
        from = at;
    }
    found
}

/// The nearest known key by edit distance, if it is close enough to be a typo.
fn did_you_mean(field: &str, expected: &[&str]) -> Option<String> {
    expected
        .iter()
        .map(|candidate| (edit_distance(field, candidate), *candidate))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(
            did_you_mean("sav_interval", &["save_interval", "state_file"]).as_deref(),
            Some("save_interval")
        );
        assert_eq!(did_you_mean("zzz", &["save_interval"]), None);
    }

    #[test]
    fn keys_are_found_on_their_lines() {
        let text = "save_interval = 60\n\n[[session]]\nname = \"a\"\n[session.client]\ncommand = [\"x\"]\nstop_grace_secs = 1\n";
        assert_eq!(line_of_key(text, &["save_interval".into()]), Some(1));
        assert_eq!(
            line_of_key(
                text,
                &[
                    "session".into(),
                    "0".into(),
                    "client".into(),
                    "stop_grace_secs".into()
                ]
            ),
            Some(7)
        );
        let yaml = "save_interval: 300\ncrash_detection:\n  enabled: true\n  check_interval: 30\n";
        assert_eq!(
            line_of_key(yaml, &["crash_detection".into(), "check_interval".into()]),
            Some(4)
        );
    }

    #[test]
    fn environment_variables_name_keys_in_upper_case() {
        assert!(matches!(env_key("MS11_SAVE_INTERVAL"), EnvKey::Key(k) if k == "save_interval"));
        assert!(matches!(
            env_key("MS11_CRASH_DETECTION__ENABLED"),
            EnvKey::Key(k) if k == "crash_detection.enabled"
        ));
        assert!(matches!(env_key("MS11_CONFIG"), EnvKey::NotConfig));
        assert!(matches!(env_key("MS11_BENCH_DIR"), EnvKey::NotConfig));
        assert!(
            matches!(env_key("MS11_SAVE_INTERVALL"), EnvKey::Unknown(k) if k == "save_intervall")
        );
    }

    #[test]
    fn nesting_is_measured_outside_strings_and_comments() {
        assert_eq!(too_deep("a = [[1]]\n", false, 2), None);
        assert_eq!(too_deep("a = 1\nb = [[[1]]]\n", false, 2), Some(2));
        assert_eq!(too_deep("a = \"[[[[[\" # [[[[[\n", false, 2), None);
        assert_eq!(too_deep("a:\n  b:\n    - - [x]\n", true, 9), None);
        assert_eq!(too_deep("a:\n  b:\n    - - [x]\n", true, 6), Some(3));
        assert_eq!(too_deep("a: don't [[[\n", true, 2), Some(1));
    }

    #[test]
    fn set_values_parse_as_toml_or_text() {
        assert_eq!(parse_value("60"), toml::Value::Integer(60));
        assert_eq!(parse_value("true"), toml::Value::Boolean(true));
        assert_eq!(
            parse_value("some/path.json"),
            toml::Value::String("some/path.json".into())
        );
    }
}
