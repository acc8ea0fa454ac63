//! `config check`: semantic checks beyond what parsing catches.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::load::{ConfigProblem, LoadedConfig};
use crate::model::{ProcessConfig, ReadyKind};

/// The built-in strategy names.
pub const BUILTIN_STRATEGIES: &[&str] = &["restart", "relog", "manual", "restore"];

/// The largest state file a load accepts (the persist layer's limit).
const MAX_LOADABLE_STATE_BYTES: u64 = 64 * 1024 * 1024;

/// Below this a state cannot hold even a modest task ledger.
const MIN_STATE_BYTES: u64 = 64 * 1024;

impl LoadedConfig {
    /// Everything wrong with the configuration. `extra_strategies` are names provided
    /// by plugins.
    pub fn check(&self, extra_strategies: &[String]) -> Vec<ConfigProblem> {
        let config = &self.config;
        let mut problems = Vec::new();
        let mut add = |key: String, message: String| {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            problems.push(ConfigProblem {
                location: self.origin_of(&path),
                key,
                message,
            });
        };
        if config.save_interval == 0 {
            add("save_interval".into(), "must be at least 1 second".into());
        }
        if config.keep_generations == 0 {
            add("keep_generations".into(), "must be at least 1".into());
        }
        if config.max_state_bytes > MAX_LOADABLE_STATE_BYTES {
            add(
                "max_state_bytes".into(),
                format!(
                    "must be at most {MAX_LOADABLE_STATE_BYTES} (64 MiB): a larger state file would not load again"
                ),
            );
        }
        if config.max_state_bytes < MIN_STATE_BYTES {
            add(
                "max_state_bytes".into(),
                format!("must be at least {MIN_STATE_BYTES} (64 KiB)"),
            );
        }
        if config.max_patch_bytes == 0 || config.max_patch_bytes > config.max_state_bytes {
            add(
                "max_patch_bytes".into(),
                "must be at least 1 and at most max_state_bytes".into(),
            );
        }
        for dir in &config.plugins.dirs {
            if !dir.is_absolute() {
                add(
                    "plugins.dirs".into(),
                    format!("`{}` must be an absolute path", dir.display()),
                );
            }
        }
        let mut names = HashSet::new();
        let mut files = HashSet::new();
        for (i, session) in config.sessions().iter().enumerate() {
            let key = |k: &str| format!("session.{i}.{k}");
            if session.name.trim().is_empty() {
                add(key("name"), "must not be empty".into());
            }
            if !names.insert(session.name.clone()) {
                add(
                    key("name"),
                    format!("`{}` is used by another session", session.name),
                );
            }
            let file = config.state_file_of(i, session);
            if !files.insert(file.clone()) {
                add(
                    key("state_file"),
                    format!("`{}` is used by another session", file.display()),
                );
            }
            if session.pipeline.is_empty() {
                add(
                    key("pipeline"),
                    format!(
                        "must name at least one strategy (e.g. {:?})",
                        crate::default_pipeline()
                    ),
                );
            }
            for strategy in &session.pipeline {
                if !BUILTIN_STRATEGIES.contains(&strategy.as_str())
                    && !extra_strategies.contains(strategy)
                {
                    let mut known: Vec<String> =
                        BUILTIN_STRATEGIES.iter().map(|s| (*s).to_owned()).collect();
                    known.extend(extra_strategies.iter().cloned());
                    add(
                        key("pipeline"),
                        format!(
                            "unknown strategy `{strategy}` (known: {})",
                            known.join(", ")
                        ),
                    );
                }
            }
            for (role, process) in [("client", &session.client), ("bot", &session.bot)] {
                if let Some(p) = process {
                    if p.command.is_empty() {
                        add(
                            key(&format!("{role}.command")),
                            "must name a program".into(),
                        );
                    }
                    if !(0.0..=3600.0).contains(&p.stop_grace_secs) {
                        add(
                            key(&format!("{role}.stop_grace_secs")),
                            "must be between 0 and 3600".into(),
                        );
                    }
                    if crate::signal_number(&p.stop_signal).is_none() {
                        add(
                            key(&format!("{role}.stop_signal")),
                            format!("unknown signal `{}`", p.stop_signal),
                        );
                    }
                }
            }
            if session.ready.kind == ReadyKind::LogLine {
                if let Err(e) = regex::Regex::new(&session.ready.pattern) {
                    add(key("ready.pattern"), format!("invalid regex: {e}"));
                }
                if session.client.is_some() && session.client_log.is_none() {
                    add(
                        key("ready.kind"),
                        "`log_line` readiness needs `client_log`".into(),
                    );
                }
            }
            if let Err(e) = ms11_detect::PatternSet::from_config(&config.log_patterns_of(session)) {
                add(key("log_patterns"), e.to_string());
            }
        }
        problems
    }

    /// The client and bot programs that cannot be started now: not found (on `PATH`
    /// for a bare name), not a file, or not executable. `config check` reports them as
    /// errors; `run` only warns, since a program may appear later (a mounted drive, an
    /// install under way) and a start that fails is an incident retried on schedule.
    pub fn check_programs(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        for (i, session) in self.config.sessions().iter().enumerate() {
            for (role, process) in [("client", &session.client), ("bot", &session.bot)] {
                let Some(p) = process else { continue };
                let Some(program) = p.command.first() else {
                    continue;
                };
                // Under Wine the loader is what starts; the Windows program only has
                // to exist (a `.exe` on a Windows drive need not be executable).
                let problem = match &p.wine {
                    Some(wine) => program_problem(&wine.binary, p).map(|_| ()).and_then(|()| {
                        let exe = match &p.cwd {
                            Some(cwd) if Path::new(program).is_relative() => cwd.join(program),
                            _ => PathBuf::from(program),
                        };
                        let windows_path = program.contains('\\') || program.get(1..2) == Some(":");
                        if exe.is_file() || windows_path {
                            Ok(())
                        } else {
                            Err(format!("Windows program `{program}` does not exist"))
                        }
                    }),
                    None => program_problem(program, p).map(|_| ()),
                };
                if let Err(message) = problem {
                    let key = format!("session.{i}.{role}.command");
                    let path: Vec<String> = key.split('.').map(str::to_owned).collect();
                    problems.push(ConfigProblem {
                        location: self.origin_of(&path),
                        key,
                        message,
                    });
                }
            }
        }
        problems
    }
}

/// Whether `program` can be started: a path (it has a slash) must be an executable
/// file; a bare name must be found as one on `PATH` (the process's own `PATH` from
/// its `env` when it sets one).
fn program_problem(program: &str, process: &ProcessConfig) -> Result<PathBuf, String> {
    if program.contains('/') {
        let path = match &process.cwd {
            Some(cwd) if Path::new(program).is_relative() => cwd.join(program),
            _ => PathBuf::from(program),
        };
        return match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("program `{program}` does not exist"))
            }
            Err(e) => Err(format!("program `{program}` cannot be read: {e}")),
            Ok(meta) if !meta.is_file() => Err(format!("program `{program}` is not a file")),
            Ok(meta) if !is_executable(&meta) => {
                Err(format!("program `{program}` is not executable"))
            }
            Ok(_) => Ok(path),
        };
    }
    let search = process
        .env
        .get("PATH")
        .map(std::ffi::OsString::from)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    let mut found_not_executable = None;
    for dir in std::env::split_paths(&search) {
        let candidate = dir.join(program);
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
        {
            if is_executable(&meta) {
                return Ok(candidate);
            }
            found_not_executable.get_or_insert(candidate);
        }
    }
    Err(match found_not_executable {
        Some(path) => format!(
            "program `{program}` found on PATH at `{}` is not executable",
            path.display()
        ),
        None => format!("program `{program}` not found on PATH"),
    })
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    true
}
