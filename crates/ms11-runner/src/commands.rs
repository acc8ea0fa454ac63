//! The commands that do not supervise: they read the saved state, the configuration or
//! the logs, or ask the running runner over its control socket.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use ms11_config::{Config, LoadedConfig, SessionConfig};
use ms11_detect::PatternSet;
use ms11_persist::StateFiles;
use serde_json::json;

use crate::control::{self, ControlRequest};
use crate::exit_code::{ExitCode, Failure};
use crate::output::Output;
use crate::prompt;
use crate::stats::SessionStats;

/// The sessions a command applies to (all, or the one named by `--session`).
pub fn selected_sessions(
    config: &Config,
    only: Option<&str>,
) -> Result<Vec<(usize, SessionConfig)>> {
    let all: Vec<(usize, SessionConfig)> = config.sessions().into_iter().enumerate().collect();
    match only {
        None => Ok(all),
        Some(name) => {
            let found: Vec<_> = all.into_iter().filter(|(_, s)| s.name == name).collect();
            if found.is_empty() {
                let names: Vec<String> = config.sessions().into_iter().map(|s| s.name).collect();
                return Err(Failure::new(
                    ExitCode::Config,
                    format!(
                        "no session named `{name}` (configured: {})",
                        names.join(", ")
                    ),
                )
                .into());
            }
            Ok(found)
        }
    }
}

/// `stats`: statistics of each session's saved state.
pub fn stats(config: &Config, only: Option<&str>, out: &mut Output) -> Result<ExitCode> {
    let mut all = serde_json::Map::new();
    let mut text = String::new();
    for (index, session) in selected_sessions(config, only)? {
        let path = config.state_file_of(index, &session);
        match StateFiles::new(&path).load_read_only()? {
            Some(report) => {
                let stats = SessionStats::from_state(
                    &session.name,
                    &report.state,
                    config.save_interval,
                    &path.display().to_string(),
                );
                text.push_str(&stats.to_text());
                text.push('\n');
                all.insert(session.name.clone(), serde_json::to_value(&stats)?);
            }
            None => {
                text.push_str(&format!(
                    "session `{}`: no saved session (no state file at `{}`)\n\n",
                    session.name,
                    path.display()
                ));
            }
        }
    }
    // With one session the JSON is that session's object (the seed's shape); with
    // several, an object by session name. No saved session: `{}`.
    let json = if all.len() == 1 {
        all.into_iter().next().map(|(_, v)| v).unwrap_or_default()
    } else {
        serde_json::Value::Object(all)
    };
    out.emit(text.trim_end(), &json)?;
    Ok(ExitCode::Ok)
}

/// `recover`: shows what would continue; fails (exit 3) without a saved session.
pub fn recover(config: &Config, only: Option<&str>, out: &mut Output) -> Result<ExitCode> {
    let now = crate::unix_now();
    let mut found = Vec::new();
    let mut text = Vec::new();
    for (index, session) in selected_sessions(config, only)? {
        let path = config.state_file_of(index, &session);
        if let Some(report) = StateFiles::new(&path).load_read_only()? {
            let state = &report.state;
            text.push(prompt::describe(&session.name, state, now));
            for skipped in &report.skipped {
                text.push(format!(
                    "  passed over `{}`: {}",
                    skipped.path.display(),
                    skipped.reason
                ));
            }
            let rerun: Vec<&str> = state.in_flight_tasks().map(|t| t.id.as_str()).collect();
            if !rerun.is_empty() {
                text.push(format!(
                    "  in flight, will run once more: {}",
                    rerun.join(", ")
                ));
            }
            found.push(json!({
                "session": session.name,
                "state_file": path,
                "loaded_from": report.loaded_from,
                "generation": state.generation,
                "planet": state.planet,
                "zone": state.zone,
                "task_queue": state.task_queue(),
                "rerun": rerun,
            }));
        }
    }
    if found.is_empty() {
        return Err(Failure::new(ExitCode::NoSavedSession, "no saved session to recover").into());
    }
    text.push("Start `ms11-recovery run` to continue it.".into());
    out.emit(&text.join("\n"), &json!({"sessions": found}))?;
    Ok(ExitCode::Ok)
}

/// `cleanup --max-age HOURS`.
pub fn cleanup(
    config: &Config,
    only: Option<&str>,
    hours: f64,
    out: &mut Output,
) -> Result<ExitCode> {
    if !(hours.is_finite() && hours >= 0.0) {
        return Err(Failure::new(
            ExitCode::Usage,
            format!("--max-age must be a number of hours >= 0, got {hours}"),
        )
        .into());
    }
    let max_age = Duration::from_secs_f64(hours * 3600.0);
    let mut text = Vec::new();
    let mut reports = Vec::new();
    for (index, session) in selected_sessions(config, only)? {
        let path = config.state_file_of(index, &session);
        let report = ms11_persist::cleanup(&path, max_age)?;
        let screenshots = ms11_screenshot::Shots::new(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .join("screenshots"),
            usize::MAX,
        )
        .remove_older_than(max_age);
        text.push(format!(
            "session `{}`: removed {} file(s) and {screenshots} screenshot(s) older than {hours} h{}",
            session.name,
            report.removed.len(),
            report
                .kept_newest
                .as_ref()
                .map(|p| format!("; kept the newest valid state `{}`", p.display()))
                .unwrap_or_default()
        ));
        for path in &report.removed {
            text.push(format!("  removed `{}`", path.display()));
        }
        for (path, error) in &report.failed {
            text.push(format!("  could not remove `{}`: {error}", path.display()));
        }
        reports.push(json!({
            "session": session.name,
            "removed": report.removed,
            "kept_newest": report.kept_newest,
            "screenshots_removed": screenshots,
            "failed": report.failed.iter().map(|(p, e)| json!({"path": p, "error": e})).collect::<Vec<_>>(),
        }));
    }
    out.emit(&text.join("\n"), &json!({"sessions": reports}))?;
    Ok(ExitCode::Ok)
}

/// `config show`: secrets redacted unless `show_secrets`.
pub fn config_show(
    loaded: &LoadedConfig,
    show_secrets: bool,
    out: &mut Output,
) -> Result<ExitCode> {
    let mut json = serde_json::to_value(&loaded.config)?;
    if !show_secrets {
        ms11_config::redact_secret_values(&mut json, &mut Vec::new());
    }
    out.emit(loaded.show_with(show_secrets).trim_end(), &json)?;
    Ok(ExitCode::Ok)
}

/// `config check`: exit 6 with every problem listed, or 0.
pub fn config_check(
    loaded: &LoadedConfig,
    extra_strategies: &[String],
    out: &mut Output,
) -> Result<ExitCode> {
    let mut problems = loaded.check(extra_strategies);
    problems.extend(loaded.check_programs());
    if problems.is_empty() {
        out.emit("configuration OK", &json!({"ok": true, "problems": []}))?;
        return Ok(ExitCode::Ok);
    }
    let text: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    out.emit(
        &format!("configuration has {} problem(s):\n{}", problems.len(), text.join("\n")),
        &json!({"ok": false, "problems": problems.iter().map(ToString::to_string).collect::<Vec<_>>()}),
    )?;
    Ok(ExitCode::Config)
}

/// `detect-crashes`: runs each session's log patterns once over its client log, from
/// where the runner stopped reading (or from the start).
pub fn detect_crashes(
    config: &Config,
    only: Option<&str>,
    from_start: bool,
    out: &mut Output,
) -> Result<ExitCode> {
    let mut text = Vec::new();
    let mut found = Vec::new();
    for (index, session) in selected_sessions(config, only)? {
        let Some(log) = &session.client_log else {
            text.push(format!(
                "session `{}`: no client_log configured",
                session.name
            ));
            continue;
        };
        let patterns = PatternSet::from_config(&config.log_patterns_of(&session)).map_err(|e| {
            Failure::new(ExitCode::Config, format!("session `{}`: {e}", session.name))
        })?;
        let mut offset = 0;
        if !from_start {
            let state_path = config.state_file_of(index, &session);
            if let Ok(Some(report)) = StateFiles::new(&state_path).load_read_only()
                && let Some(cursor) = report
                    .state
                    .runtime
                    .log_cursors
                    .get(&log.display().to_string())
            {
                offset = cursor.offset;
            }
        }
        let matches = scan_log(log, offset, &patterns)
            .with_context(|| format!("scanning `{}`", log.display()))?;
        text.push(format!(
            "session `{}`: {} match(es) in `{}` from byte {offset}",
            session.name,
            matches.len(),
            log.display()
        ));
        for (line_no, name, kind, terminal, line) in &matches {
            text.push(format!(
                "  line {line_no}: {kind}{} [{name}] {line}",
                if *terminal { " (terminal)" } else { "" }
            ));
            found.push(json!({"session": session.name, "line": line_no, "pattern": name, "kind": kind, "terminal": terminal, "text": line}));
        }
    }
    out.emit(&text.join("\n"), &json!({"matches": found}))?;
    Ok(ExitCode::Ok)
}

type LogMatch = (u64, String, String, bool, String);

fn scan_log(path: &Path, offset: u64, patterns: &PatternSet) -> Result<Vec<LogMatch>> {
    let mut file = std::fs::File::open(path)?;
    if offset > 0 && offset <= file.metadata()?.len() {
        file.seek(SeekFrom::Start(offset))?;
    }
    let mut reader = BufReader::new(file.take(u64::MAX));
    let mut found = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if let Some(info) = patterns
            .match_line(line.as_bytes())
            .and_then(|i| patterns.patterns().get(i))
        {
            found.push((
                line_no,
                info.name.clone(),
                info.kind.as_str().to_owned(),
                info.terminal,
                line.to_owned(),
            ));
        }
    }
    Ok(found)
}

/// Commands that ask the running runner.
pub fn control(config: &Config, request: ControlRequest, out: &mut Output) -> Result<ExitCode> {
    let socket = config.control_socket_path();
    let response = control::request(&socket, &request, Duration::from_secs(30))?;
    out.emit(&response.message, &serde_json::to_value(&response)?)?;
    Ok(if response.ok {
        ExitCode::Ok
    } else {
        ExitCode::Error
    })
}

/// `status`: the live status, or the saved state when no runner runs.
pub fn status(config: &Config, only: Option<&str>, out: &mut Output) -> Result<ExitCode> {
    match control::request(
        &config.control_socket_path(),
        &ControlRequest::Status,
        Duration::from_secs(10),
    ) {
        Ok(response) => {
            out.emit(&response.message, &response.data)?;
            Ok(ExitCode::Ok)
        }
        Err(control::ControlError::NotRunning(socket)) => {
            let mut text = vec![format!(
                "no runner is running (no control socket at `{}`)",
                socket.display()
            )];
            let mut saved = Vec::new();
            let now = crate::unix_now();
            for (index, session) in selected_sessions(config, only)? {
                let path = config.state_file_of(index, &session);
                if let Ok(Some(report)) = StateFiles::new(&path).load_read_only() {
                    text.push(prompt::describe(&session.name, &report.state, now));
                    saved.push(
                        json!({"session": session.name, "generation": report.state.generation}),
                    );
                } else {
                    text.push(format!("session `{}`: no saved session", session.name));
                }
            }
            out.emit(&text.join("\n"), &json!({"running": false, "saved": saved}))?;
            Ok(ExitCode::NotRunning)
        }
        Err(e) => Err(e.into()),
    }
}

/// `auto-save`: the running runner's auto-save schedule.
pub fn auto_save(config: &Config, out: &mut Output) -> Result<ExitCode> {
    match control::request(&config.control_socket_path(), &ControlRequest::Status, Duration::from_secs(10)) {
        Ok(response) => {
            let text = format!(
                "auto-save is on: every {} s and at every task checkpoint.\n{}",
                config.save_interval, response.message
            );
            out.emit(&text, &json!({"save_interval": config.save_interval, "status": response.data}))?;
            Ok(ExitCode::Ok)
        }
        Err(control::ControlError::NotRunning(_)) => Err(Failure::new(
            ExitCode::NotRunning,
            format!(
                "no runner is running; `ms11-recovery run` saves every {} s and at every task checkpoint",
                config.save_interval
            ),
        )
        .into()),
        Err(e) => Err(e.into()),
    }
}
