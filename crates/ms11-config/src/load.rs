//! Layering: embedded defaults < config file (TOML, or YAML by extension) < `MS11_*`
//! environment variables < `--set KEY=VALUE` from the command line. Errors name the key,
//! the file and line where it can be found, and suggest the nearest known key.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml, Yaml};
use figment::{Figment, Metadata, Source};
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

/// Where the configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// The config file, if any.
    pub file: Option<PathBuf>,
    /// `KEY=VALUE` overrides from the command line, in order.
    pub overrides: Vec<String>,
    /// Read `MS11_*` environment variables.
    pub use_env: bool,
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
    /// A `--set` argument is not `KEY=VALUE`.
    #[error("`--set {0}`: expected KEY=VALUE (e.g. --set save_interval=60)")]
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
        figment = if is_yaml {
            figment.merge(Yaml::file_exact(path))
        } else {
            figment.merge(Toml::file_exact(path))
        };
        file_text = Some(text);
    }
    if sources.use_env {
        figment = figment.merge(Env::prefixed("MS11_").split("__").filter(|key| {
            let first = key.as_str().split('.').next().unwrap_or_default();
            TOP_LEVEL_KEYS.contains(&first)
        }));
    }
    for item in &sources.overrides {
        let (key, value) = item
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| ConfigError::BadOverride(item.clone()))?;
        figment = figment.merge(Serialized::default(key.trim(), parse_value(value.trim())));
    }
    match figment.extract::<Config>() {
        Ok(config) => Ok(LoadedConfig {
            config,
            figment,
            file: sources.file.clone(),
            file_text,
        }),
        Err(errors) => Err(ConfigError::Invalid(
            errors
                .into_iter()
                .map(|e| problem_from(&e, file_text.as_deref()))
                .collect(),
        )),
    }
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
    ConfigProblem {
        key,
        location,
        message,
    }
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
        _ if meta.name.contains("environment") => {
            let var: Vec<String> = path.iter().map(|p| p.to_uppercase()).collect();
            format!("environment variable MS11_{}", var.join("__"))
        }
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
            }) || bare.contains(&format!(".{segment}]"));
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
    fn set_values_parse_as_toml_or_text() {
        assert_eq!(parse_value("60"), toml::Value::Integer(60));
        assert_eq!(parse_value("true"), toml::Value::Boolean(true));
        assert_eq!(
            parse_value("some/path.json"),
            toml::Value::String("some/path.json".into())
        );
    }
}
