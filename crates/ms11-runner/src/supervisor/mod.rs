//! `run`: opens every session's state, asks whether to continue, kills leftovers of a
//! previous runner, starts one supervisor thread per session and the control socket,
//! and on SIGTERM/SIGINT stops them all after a final save (a second SIGINT stops at
//! once). SIGHUP reads the configuration again: what can change live is handed to each
//! session loop, what cannot is reported in the log.

mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use crossbeam_channel::{Receiver, Sender, bounded, select};
use ms11_config::{Config, ContinuePrevious, LoadedConfig, SessionConfig, StateBackend};
use ms11_persist::{Backend, PersistError, StateStore};
use ms11_state::SessionState;
use ms11_supervisor::{
    ProcessSpawner, SessionCommand, SessionEnd, SessionLoop, SupervisedEnd, supervise_session,
};
use serde_json::json;
use tracing::{error, info, warn};

use crate::cli::GlobalArgs;
use crate::control::{ControlRequest, ControlResponse, ControlServer, StartError};
use crate::exit_code::{ExitCode, Failure};
use crate::prompt::{self, ContinueDecision, ContinuePolicy};
use crate::signals::RunnerSignal;

/// A second panic of a session loop within this window stops the runner.
const PANIC_WINDOW: Duration = Duration::from_secs(600);

/// Runs every selected session until a termination signal.
pub fn run(loaded: &LoadedConfig, global: &GlobalArgs) -> Result<ExitCode> {
    let config = &loaded.config;
    let sessions = crate::commands::selected_sessions(config, global.session.as_deref())?;
    let (plugin_strategies, plugin_reports) = crate::plugins::load(config);
    for report in &plugin_reports {
        if let Err(e) = &report.result {
            warn!(plugin = %report.path.display(), error = %e, "plugin not loaded");
        }
    }
    let problems = loaded.check(&crate::plugins::strategy_names(&plugin_strategies));
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        return Err(Failure::new(
            ExitCode::Config,
            format!("the configuration has problems:\n{}", text.join("\n")),
        )
        .into());
    }
    for problem in loaded.check_programs() {
        warn!(event = "program_missing", problem = %problem, "a program cannot be started now; its start is retried as an incident");
    }
    if sessions
        .iter()
        .all(|(_, s)| s.client.is_none() && s.bot.is_none())
    {
        return Err(Failure::new(
            ExitCode::Config,
            "nothing to supervise: configure a [[session]] with a client and/or bot command (see docs/configuration.md)",
        )
        .into());
    }
    check_socket_is_no_state_file(config, &sessions)?;
    let signals = crate::signals::signal_channel().context("installing signal handlers")?;
    let mut prepared = Vec::new();
    for (index, session) in sessions {
        let path = config.state_file_of(index, &session);
        let (state, store) = open_session(config, &session, &path, global)?;
        prepared.push((index, session, state, store));
    }
    let mut routes: BTreeMap<String, Sender<SessionCommand>> = BTreeMap::new();
    let mut threads = Vec::new();
    let mut stops = Vec::new();
    // Unbounded: after a signal nobody receives, and a session ending then must not block.
    let (ended_tx, ended_rx) = crossbeam_channel::unbounded::<()>();
    for (index, session, state, store) in prepared {
        let (stop_tx, stop_rx) = bounded(1);
        let (command_tx, command_rx) = bounded(64);
        routes.insert(session.name.clone(), command_tx);
        stops.push(stop_tx);
        let session_settings =
            settings::session_settings(config, index, &session, &plugin_strategies);
        let path = config.state_file_of(index, &session);
        let backend = backend_of(config);
        let keep = config.keep_generations;
        let ended = ended_tx.clone();
        let mut first = Some((state, store));
        let name = session.name.clone();
        let thread = std::thread::Builder::new()
            .name(format!("session-{name}"))
            .spawn(move || {
                let open = |panic: Option<&str>| -> Result<SessionLoop, String> {
                    let (state, store) = match (first.take(), panic) {
                        (Some(opened), _) => opened,
                        (None, panic) => reopen_after_panic(
                            &name,
                            &path,
                            backend,
                            keep,
                            panic.unwrap_or("unknown"),
                        )?,
                    };
                    Ok(SessionLoop::new(
                        session_settings.clone(),
                        state,
                        store,
                        Arc::new(ms11_recover::RealClock),
                        Box::new(ProcessSpawner),
                    ))
                };
                let end = supervise_session(open, &stop_rx, &command_rx, PANIC_WINDOW);
                let _ = ended.send(());
                end
            })?;
        threads.push(thread);
    }
    let routes = Arc::new(routes);
    let handler_routes = Arc::clone(&routes);
    let control = ControlServer::start(
        &config.control_socket_path(),
        Arc::new(move |request| route(&handler_routes, request)),
    )
    .map_err(|e| {
        let code = match e {
            StartError::NotASocket { .. } => ExitCode::Config,
            _ => ExitCode::Error,
        };
        Failure::new(code, e.to_string())
    })?;
    info!(event = "running", sessions = routes.len(), control = %control.path().display(), "supervising");
    let notifier = crate::sd_notify::Notifier::from_env();
    if let Some(n) = &notifier {
        n.send("READY=1\nSTATUS=supervising");
    }
    let watchdog = crate::sd_notify::watchdog_interval()
        .filter(|_| notifier.is_some())
        .map_or_else(crossbeam_channel::never, crossbeam_channel::tick);
    // Blocks until a signal or the end of a session (no polling).
    let mut ended = 0usize;
    let why = loop {
        select! {
            recv(watchdog) -> _ => {
                // Pinged only while every session loop answers: a stuck or dead loop
                // lets the service manager's watchdog restart the runner.
                if every_session_answers(&routes, Duration::from_secs(1)) {
                    if let Some(n) = &notifier {
                        n.send("WATCHDOG=1");
                    }
                } else {
                    warn!("a session loop did not answer; the watchdog is not pinged");
                }
            },
            recv(signals) -> signal => match signal {
                Ok(RunnerSignal::Reload) => reload(global, config, &routes, &plugin_strategies),
                Ok(RunnerSignal::Interrupt) => {
                    warn!(event = "interrupted", "stopping; press Ctrl-C again to stop at once");
                    break "Interrupt".to_owned();
                }
                Ok(RunnerSignal::Term) => break "Term".to_owned(),
                Err(_) => break "the signal thread ended".to_owned(),
            },
            recv(ended_rx) -> _ => {
                ended += 1;
                break "a session ended".to_owned();
            },
        }
    };
    info!(event = "terminating", reason = %why, "stopping every session");
    if let Some(n) = &notifier {
        n.send("STOPPING=1");
    }
    for stop in &stops {
        let _ = stop.send(());
    }
    // Waits for every session to save and stop; a second Ctrl-C does not wait.
    while ended < threads.len() && !threads.iter().all(std::thread::JoinHandle::is_finished) {
        select! {
            recv(ended_rx) -> _ => ended += 1,
            recv(signals) -> signal => match signal {
                Ok(RunnerSignal::Interrupt) => {
                    error!(event = "stopped_at_once", "second Ctrl-C: stopping at once, without waiting for the children to stop or the final save (the children are killed with the runner; the last saved generation is kept)");
                    std::process::exit(ExitCode::Interrupted.code());
                }
                Ok(RunnerSignal::Reload) => info!("the configuration is not reloaded while stopping"),
                Ok(RunnerSignal::Term) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            },
            default(Duration::from_millis(500)) => {}
        }
    }
    let mut code = ExitCode::Ok;
    for thread in threads {
        let end = thread.join();
        code = worse(
            code,
            match end {
                Ok(SupervisedEnd::Ended(SessionEnd::Stopped)) => ExitCode::Ok,
                Ok(SupervisedEnd::Ended(SessionEnd::Halted(_))) => ExitCode::Terminal,
                Ok(SupervisedEnd::Ended(SessionEnd::FinalSaveFailed(_))) => ExitCode::Error,
                Ok(SupervisedEnd::Failed(e)) => {
                    error!(event = "session_failed", error = %e, "a session failed");
                    ExitCode::Error
                }
                Err(_) => ExitCode::Error,
            },
        );
    }
    drop(control);
    Ok(code)
}

/// SIGHUP: reads the configuration again (file, `MS11_*` variables, `--set`) and hands
/// each running session its new settings; the session applies what can change live
/// and answers what cannot. Everything that needs a restart of the runner is logged.
/// An invalid configuration changes nothing.
fn reload(
    global: &GlobalArgs,
    running: &Config,
    routes: &BTreeMap<String, Sender<SessionCommand>>,
    plugins: &[ms11_plugin_host::PluginStrategy],
) {
    info!(event = "reload", "SIGHUP: reading the configuration again");
    let refused = |why: String| {
        error!(event = "reload_failed", error = %why, "the configuration was not reloaded; the running one stays");
    };
    let loaded = match crate::load_config(global) {
        Ok(loaded) => loaded,
        Err(e) => return refused(format!("{e:#}")),
    };
    let problems = loaded.check(&crate::plugins::strategy_names(plugins));
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return refused(text.join("; "));
    }
    let new = &loaded.config;
    let sessions = match crate::commands::selected_sessions(new, global.session.as_deref()) {
        Ok(sessions) => sessions,
        Err(e) => return refused(format!("{e:#}")),
    };
    let mut needs_restart: Vec<String> = runner_wide_changes(running, new);
    let old_files: BTreeMap<String, std::path::PathBuf> = running
        .sessions()
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), running.state_file_of(i, s)))
        .collect();
    let new_names: BTreeSet<&str> = sessions.iter().map(|(_, s)| s.name.as_str()).collect();
    for name in routes.keys().filter(|n| !new_names.contains(n.as_str())) {
        needs_restart.push(format!("session `{name}` removed"));
    }
    let timeout = Duration::from_secs(5);
    for (index, session) in &sessions {
        let Some(tx) = routes.get(&session.name) else {
            needs_restart.push(format!("session `{}` added", session.name));
            continue;
        };
        if old_files.get(&session.name) != Some(&new.state_file_of(*index, session)) {
            needs_restart.push(format!("session.{index}.state_file"));
        }
        let settings = settings::session_settings(new, *index, session, plugins);
        let (reply, answer) = bounded(1);
        let asked = tx
            .send_timeout(
                SessionCommand::Reconfigure(Box::new(settings), reply),
                timeout,
            )
            .is_ok();
        match answer.recv_timeout(timeout) {
            Ok(keys) if asked => {
                needs_restart.extend(keys.iter().map(|k| format!("session.{index}.{k}")));
            }
            _ => {
                warn!(event = "reload_failed", session = %session.name, "the session did not take its new settings (stopped?)");
            }
        }
    }
    if needs_restart.is_empty() {
        info!(
            event = "reloaded",
            "configuration reloaded; every change is applied"
        );
    } else {
        warn!(event = "reloaded", needs_restart = %needs_restart.join(", "), "configuration reloaded; these changes take effect only after a restart of the runner: {}", needs_restart.join(", "));
    }
}

/// Runner-wide keys that differ and are only read at start.
fn runner_wide_changes(running: &Config, new: &Config) -> Vec<String> {
    [
        ("state_file", running.state_file != new.state_file),
        ("state_backend", running.state_backend != new.state_backend),
        (
            "keep_generations",
            running.keep_generations != new.keep_generations,
        ),
        (
            "control_socket",
            running.control_socket_path() != new.control_socket_path(),
        ),
        ("plugins", running.plugins != new.plugins),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(key, _)| key.to_owned())
    .collect()
}

/// `control_socket` pointing at a session's state file is a
/// configuration error: binding there would clobber the session.
fn check_socket_is_no_state_file(
    config: &Config,
    sessions: &[(usize, SessionConfig)],
) -> Result<()> {
    let socket = config.control_socket_path();
    let same = |a: &std::path::Path, b: &std::path::Path| {
        let absolute =
            |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        absolute(a) == absolute(b)
            || matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
    };
    for (index, session) in sessions {
        let state = config.state_file_of(*index, session);
        if same(&socket, &state) {
            return Err(Failure::new(
                ExitCode::Config,
                format!(
                    "control_socket `{}` is the state file `{}` of session `{}`: choose another path for `control_socket`",
                    socket.display(),
                    state.display(),
                    session.name
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// The more serious of two session outcomes.
fn worse(a: ExitCode, b: ExitCode) -> ExitCode {
    let rank = |c: ExitCode| match c {
        ExitCode::Ok => 0,
        ExitCode::Terminal => 1,
        _ => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

fn backend_of(config: &Config) -> Backend {
    match config.state_backend {
        StateBackend::Atomic => Backend::Atomic,
        StateBackend::JsonFile => Backend::JsonFile,
    }
}

/// Every session answers a ping within `timeout`.
fn every_session_answers(
    routes: &BTreeMap<String, Sender<SessionCommand>>,
    timeout: Duration,
) -> bool {
    let replies: Vec<Receiver<()>> = routes
        .values()
        .filter_map(|tx| {
            let (reply_tx, reply_rx) = bounded(1);
            tx.try_send(SessionCommand::Ping(reply_tx)).ok()?;
            Some(reply_rx)
        })
        .collect();
    replies.len() == routes.len() && replies.iter().all(|r| r.recv_timeout(timeout).is_ok())
}

/// Opens a session again after its loop panicked: the newest good state on disk (what
/// was durable), the panic recorded as an incident, the leftovers killed.
fn reopen_after_panic(
    name: &str,
    path: &std::path::Path,
    backend: Backend,
    keep: usize,
    panic: &str,
) -> Result<(SessionState, Box<dyn StateStore>), String> {
    let mut store = ms11_persist::open_store(path, backend, keep).map_err(|e| e.to_string())?;
    let report = store
        .load()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("session `{name}`: no saved state to reopen after a panic"))?;
    let mut state = report.state;
    ms11_process::kill_leftovers(&state.runtime.children);
    let now = crate::unix_now();
    let id = format!(
        "{name}-{}",
        ms11_supervisor::next_incident_number(name, &state)
    );
    let mut incident = ms11_state::Incident::new(
        id,
        ms11_state::IncidentKind::InternalError,
        ms11_state::DetectorSource::Other,
        format!("the session loop panicked: {panic}"),
        now,
    )
    .with_subject(ms11_state::IncidentSubject::State);
    incident.session = name.to_owned();
    incident.resolve(ms11_state::Resolution {
        status: ms11_state::ResolutionStatus::Recovered,
        strategy: None,
        at: now,
        time_to_recover_ms: Some(0),
        note: Some("the session was reopened from its last saved state".into()),
    });
    error!(event = "incident", session = name, incident = %incident.id, kind = "internal_error", message = %incident.crash.error_message, "the session loop panicked; reopening the session from disk");
    state.record_incident(incident);
    store.save(&mut state).map_err(|e| e.to_string())?;
    Ok((state, store))
}

/// A load that passed over damaged files is a recovery by `restore`: the newest good
/// generation was loaded and the damaged files quarantined. It is recorded as such.
fn record_restore_on_load(
    state: &mut SessionState,
    session: &str,
    report: &ms11_persist::LoadReport,
) {
    let now = crate::unix_now();
    let reasons: Vec<String> = report
        .skipped
        .iter()
        .map(|s| format!("`{}`: {}", s.path.display(), s.reason))
        .collect();
    let id = format!(
        "{session}-{}",
        ms11_supervisor::next_incident_number(session, state)
    );
    let mut incident = ms11_state::Incident::new(
        id,
        ms11_state::IncidentKind::StateDamaged,
        ms11_state::DetectorSource::Other,
        format!("damaged state file(s): {}", reasons.join("; ")),
        now,
    );
    incident.session = session.to_owned();
    incident.record_attempt(ms11_state::Attempt {
        strategy: "restore".into(),
        started_at: now,
        duration_ms: 0,
        outcome: ms11_state::AttemptOutcome::Recovered,
        reason: Some(format!(
            "loaded generation {} from `{}`",
            report.state.generation,
            report.loaded_from.display()
        )),
    });
    incident.resolve(ms11_state::Resolution {
        status: ms11_state::ResolutionStatus::Recovered,
        strategy: Some("restore".into()),
        at: now,
        time_to_recover_ms: Some(0),
        note: Some("damaged files moved to quarantine/".into()),
    });
    info!(event = "incident", session, incident = %incident.id, kind = "state_damaged", source = "other", message = %incident.crash.error_message, "incident");
    info!(event = "recovered", session, incident = %incident.id, strategy = "restore", ms = 0u64, generation = report.state.generation, "restored the newest good generation");
    state.record_incident(incident);
}

fn route(
    routes: &BTreeMap<String, Sender<SessionCommand>>,
    request: ControlRequest,
) -> ControlResponse {
    let target = match &request {
        ControlRequest::Status => None,
        ControlRequest::Save { session }
        | ControlRequest::Screenshot { session }
        | ControlRequest::Restart { session }
        | ControlRequest::Relog { session }
        | ControlRequest::Ack { session, .. } => session.clone(),
    };
    let names: Vec<&String> = match &target {
        Some(name) if routes.contains_key(name) => vec![name],
        Some(name) => return ControlResponse::error(format!("no session named `{name}`")),
        None => routes.keys().collect(),
    };
    let mut messages = Vec::new();
    let mut data = serde_json::Map::new();
    let mut ok = true;
    let mut acknowledged = false;
    for name in names {
        let Some(tx) = routes.get(name) else { continue };
        match ask(tx, &request) {
            Some(Ok((message, value))) => {
                acknowledged |= matches!(request, ControlRequest::Ack { .. });
                messages.push(message);
                data.insert(name.clone(), value);
            }
            Some(Err(message)) => {
                ok = false;
                messages.push(message);
            }
            None => {
                ok = false;
                messages.push(format!("session `{name}` did not answer (stopped?)"));
            }
        }
    }
    // `ack` over every session succeeds when one of them took it; the others'
    // "nothing is waiting" is no news.
    if acknowledged && !ok {
        ok = true;
        messages.retain(|m| m.contains("acknowledged"));
    }
    ControlResponse {
        ok,
        message: messages.join("\n"),
        data: json!(data),
    }
}

/// One request to one session loop; `None` when it does not answer in time.
fn ask(
    tx: &Sender<SessionCommand>,
    request: &ControlRequest,
) -> Option<Result<(String, serde_json::Value), String>> {
    let timeout = Duration::from_secs(5);
    match request {
        ControlRequest::Status => {
            let (reply, rx) = bounded(1);
            tx.send_timeout(SessionCommand::Status(reply), timeout)
                .ok()?;
            let status = rx.recv_timeout(timeout).ok()?;
            let value = serde_json::to_value(&status).unwrap_or_default();
            Some(Ok((status.summary(), value)))
        }
        ControlRequest::Save { .. } => {
            let (reply, rx) = bounded(1);
            tx.send_timeout(SessionCommand::Save(reply), timeout).ok()?;
            Some(rx.recv_timeout(timeout).ok()?.map(|generation| {
                (
                    format!("saved (generation {generation})"),
                    json!({"generation": generation}),
                )
            }))
        }
        ControlRequest::Restart { .. } | ControlRequest::Relog { .. } => {
            let what = if matches!(request, ControlRequest::Restart { .. }) {
                "restart"
            } else {
                "relog"
            };
            let (reply, rx) = bounded(1);
            let command = if what == "restart" {
                SessionCommand::Restart(reply)
            } else {
                SessionCommand::Relog(reply)
            };
            tx.send_timeout(command, timeout).ok()?;
            Some(rx.recv_timeout(timeout).ok()?.map(|incident| {
                (
                    format!("{what} started (incident {incident})"),
                    json!({"incident": incident}),
                )
            }))
        }
        ControlRequest::Screenshot { .. } => {
            let (reply, rx) = bounded(1);
            tx.send_timeout(SessionCommand::Screenshot(reply), timeout)
                .ok()?;
            Some(
                rx.recv_timeout(timeout)
                    .ok()?
                    .map(|file| (format!("screenshot: {file}"), json!({"screenshot": file}))),
            )
        }
        ControlRequest::Ack { incident, .. } => {
            let (reply, rx) = bounded(1);
            tx.send_timeout(
                SessionCommand::Ack {
                    incident: incident.clone(),
                    reply,
                },
                timeout,
            )
            .ok()?;
            Some(rx.recv_timeout(timeout).ok()?.map(|incident| {
                (
                    format!("incident {incident} acknowledged"),
                    json!({"incident": incident}),
                )
            }))
        }
    }
}

/// Opens a session's store (taking the lock), loads its state, asks whether to continue,
/// and kills the leftovers of a previous runner.
fn open_session(
    config: &Config,
    session: &SessionConfig,
    path: &std::path::Path,
    global: &GlobalArgs,
) -> Result<(SessionState, Box<dyn StateStore>)> {
    let mut store = ms11_persist::open_store(path, backend_of(config), config.keep_generations)?;
    let loaded = match store.load() {
        Ok(loaded) => loaded,
        Err(PersistError::NoValidState { .. }) if global.force => {
            let moved = store.quarantine_invalid()?;
            warn!(session = %session.name, quarantined = moved.len(), "--force: the unusable state files were moved to quarantine/; starting a new session");
            None
        }
        Err(e @ PersistError::NoValidState { .. }) => {
            return Err(Failure::new(
                ExitCode::StateUnusable,
                format!("session `{}`: {e}", session.name),
            )
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let now = crate::unix_now();
    let fresh = || {
        let mut s = SessionState::new(
            &format!("{}-{}", session.name, now as u64),
            "unknown",
            "unknown",
            now,
        );
        s.recovery_enabled = config.recovery_enabled;
        s.auto_restart = config.auto_restart;
        s.auto_relog = config.auto_relog;
        s
    };
    let Some(report) = loaded else {
        info!(session = %session.name, "no saved session: starting a new one");
        return Ok((fresh(), store));
    };
    for skipped in &report.skipped {
        warn!(session = %session.name, file = %skipped.path.display(), reason = %skipped.reason, "passed over a state file");
    }
    let policy = match config.continue_previous {
        ContinuePrevious::Ask => ContinuePolicy::Ask,
        ContinuePrevious::Yes => ContinuePolicy::Yes,
        ContinuePrevious::No => ContinuePolicy::No,
    };
    let description = prompt::describe(&session.name, &report.state, now);
    let decision = prompt::decide(
        global.yes,
        global.no,
        policy,
        &description,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout(),
        prompt::is_interactive(),
    );
    let leftovers = ms11_process::kill_leftovers(&report.state.runtime.children);
    for l in &leftovers {
        match l.action {
            ms11_process::LeftoverAction::Killed => {
                info!(event = "leftover_killed", session = %session.name, role = %l.record.role, pid = l.record.pid, "killed a leftover of the previous runner");
            }
            ms11_process::LeftoverAction::PidReused => {
                info!(event = "leftover_left_alone", session = %session.name, role = %l.record.role, pid = l.record.pid, "the recorded pid now belongs to another process (another start time or boot); left alone");
            }
            ms11_process::LeftoverAction::Gone => {}
        }
    }
    match decision {
        ContinueDecision::Continue => {
            let mut state = report.state.clone();
            if !report.skipped.is_empty() {
                record_restore_on_load(&mut state, &session.name, &report);
            }
            state.recovery_enabled = config.recovery_enabled;
            state.auto_restart = config.auto_restart;
            state.auto_relog = config.auto_relog;
            info!(event = "continue", session = %session.name, generation = state.generation, from = %report.loaded_from.display(), "continuing the previous session");
            Ok((state, store))
        }
        ContinueDecision::StartFresh => {
            info!(session = %session.name, "starting a new session; the previous one stays on disk as an older generation");
            let mut state = fresh();
            state.generation = report.state.generation;
            Ok((state, store))
        }
    }
}
