//! One session's loop: the single owner of the session's children, state, store, bot
//! link and detector channels. Everything reaches it as a message ([`Input`]); it
//! decides, acts without blocking, and hands anything long-running to a job.
//!
//! The loop is written as `handle(input)` plus `on_tick(now)` over an injected clock and
//! spawner, so its rules are tested with a fake clock and fake children
//! (`tests.rs`); [`SessionLoop::run`] is the real driver around it.

mod bot;
mod client;
mod evidence;
mod incidents;
mod jobs;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, never, select, unbounded};
use ms11_agent::BotEvent;
use ms11_detect::{DetectorHandle, Fuser, IncidentIds, LogDetectorHandle};
use ms11_persist::StateStore;
use ms11_process::ExitEvent;
use ms11_recover::Clock;
use ms11_state::{Incident, IncidentSubject, SessionState, TaskState};
use tracing::{debug, error, info, warn};

use crate::command::SessionCommand;
use crate::event::{EventBus, EventKind, SupervisorEvent};
use crate::job::JobReport;
use crate::settings::SessionSettings;
use crate::spawner::Spawner;
use crate::status::{Health, RetryStatus, SessionStatus, TaskCounts};

use bot::BotSlot;
use client::ClientSlot;
use incidents::RunningRecovery;
use jobs::{AckWaiter, RunningCommand};

/// Everything that reaches the loop.
#[derive(Debug)]
pub(crate) enum Input {
    /// A child ended (from its waiter).
    Exit(ExitEvent),
    /// A detector saw something.
    Signal(Box<Incident>),
    /// The bot said something (`None`: its stdout closed).
    Bot {
        generation: u64,
        event: Option<BotEvent>,
    },
    /// A job reported.
    Job(JobReport),
    /// Someone asks.
    Command(SessionCommand),
    /// A timer may be due.
    Tick,
}

/// How a session loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// Asked to stop: children stopped, state saved.
    Stopped,
    /// Asked to stop while a terminal incident (ban, wrong password, a bot speaking
    /// another protocol) waited for a person: saved, and the reason.
    Halted(String),
    /// Asked to stop, but the final save failed: the last good generation on disk is
    /// older than what ran.
    FinalSaveFailed(String),
}

/// One session's supervisor.
pub struct SessionLoop {
    settings: SessionSettings,
    state: SessionState,
    store: Box<dyn StateStore>,
    clock: Arc<dyn Clock>,
    spawner: Box<dyn Spawner>,
    /// Ids of signals (what detectors see); an incident gets its own id when recorded.
    ids: IncidentIds,
    next_incident: u64,
    exit_tx: Sender<ExitEvent>,
    exit_rx: Receiver<ExitEvent>,
    signal_tx: Sender<Incident>,
    signal_rx: Receiver<Incident>,
    job_tx: Sender<JobReport>,
    job_rx: Receiver<JobReport>,
    client: ClientSlot,
    bot: BotSlot,
    fuser: Fuser<(IncidentSubject, u64)>,
    recovery: Option<RunningRecovery>,
    next_job: u64,
    queued: VecDeque<Incident>,
    commands_running: Vec<RunningCommand>,
    ack_waiter: Option<AckWaiter>,
    halted: BTreeMap<IncidentSubject, String>,
    saves_failing: Option<String>,
    autosave_at: Instant,
    save_soon_at: Option<Instant>,
    events: EventBus,
    detectors: Vec<DetectorHandle>,
    log_detector: Option<LogDetectorHandle>,
    run_started: Instant,
    duration_base: f64,
    /// A stop of the running client waits until then for the incident's screenshot.
    capture_until: Option<Instant>,
    deferred_stops: Vec<crate::command::Reply<Result<String, String>>>,
}

impl SessionLoop {
    /// A loop for a session whose state was loaded (or created) and whose store is open
    /// (its lock held). Nothing starts until [`SessionLoop::run`].
    pub fn new(
        settings: SessionSettings,
        state: SessionState,
        store: Box<dyn StateStore>,
        clock: Arc<dyn Clock>,
        spawner: Box<dyn Spawner>,
    ) -> Self {
        let (exit_tx, exit_rx) = unbounded();
        let (signal_tx, signal_rx) = unbounded();
        let (job_tx, job_rx) = unbounded();
        let ids = IncidentIds::new(&format!("{}-signal", settings.name));
        let next_incident = next_incident_number(&settings.name, &state);
        let now = clock.now();
        let duration_base = state.session_duration;
        SessionLoop {
            client: ClientSlot::new(settings.client.clone()),
            bot: BotSlot::new(settings.bot.clone(), &settings.stall, now),
            fuser: Fuser::new(settings.fuse_window),
            autosave_at: now + settings.save_interval.max(Duration::from_secs(1)),
            settings,
            state,
            store,
            clock,
            spawner,
            ids,
            next_incident,
            exit_tx,
            exit_rx,
            signal_tx,
            signal_rx,
            job_tx,
            job_rx,
            recovery: None,
            next_job: 1,
            queued: VecDeque::new(),
            commands_running: Vec::new(),
            ack_waiter: None,
            halted: BTreeMap::new(),
            saves_failing: None,
            save_soon_at: None,
            events: EventBus::default(),
            detectors: Vec::new(),
            log_detector: None,
            run_started: now,
            duration_base,
            capture_until: None,
            deferred_stops: Vec::new(),
        }
    }

    /// The session's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Runs until `stop` fires: starts the detectors, the client and the bot, then
    /// handles every input as it comes. Uses the real clock's instants for its timers.
    pub fn run(mut self, stop: &Receiver<()>, commands: &Receiver<SessionCommand>) -> SessionEnd {
        self.start_detectors();
        self.start();
        let mut commands = commands.clone();
        loop {
            let timer = self
                .next_deadline()
                .map_or_else(never, crossbeam_channel::at);
            let (bot_generation, bot_events) = match self.bot.events() {
                Some((generation, rx)) => (generation, rx),
                None => (0, never()),
            };
            let input = select! {
                recv(stop) -> _ => break,
                recv(commands) -> command => match command {
                    Ok(command) => Input::Command(command),
                    Err(_) => {
                        warn!(session = %self.settings.name, "the command channel closed; no more commands are taken");
                        commands = never();
                        continue;
                    }
                },
                recv(self.exit_rx) -> exit => match exit {
                    Ok(exit) => Input::Exit(exit),
                    Err(_) => continue, // the loop holds a sender: never closes
                },
                recv(self.signal_rx) -> signal => match signal {
                    Ok(signal) => Input::Signal(Box::new(signal)),
                    Err(_) => continue,
                },
                recv(self.job_rx) -> report => match report {
                    Ok(report) => Input::Job(report),
                    Err(_) => continue,
                },
                recv(bot_events) -> event => Input::Bot { generation: bot_generation, event: event.ok() },
                recv(timer) -> _ => Input::Tick,
            };
            self.handle(input);
        }
        self.shutdown()
    }

    /// Starts the client and the bot and saves.
    pub(crate) fn start(&mut self) {
        let now = self.clock.now();
        self.run_started = now;
        self.log_pending_retries();
        if self.client.configured() {
            self.start_client_or_report();
        }
        if self.bot.configured() {
            self.start_bot_or_report();
        }
        self.save_now("start");
    }

    /// Handles one input, then whatever timers are due.
    pub(crate) fn handle(&mut self, input: Input) {
        match input {
            Input::Exit(exit) => self.on_exit(exit),
            Input::Signal(signal) => self.on_signal(*signal),
            Input::Bot { generation, event } => self.on_bot_event(generation, event),
            Input::Job(report) => self.on_job_report(report),
            Input::Command(command) => self.on_command(command),
            Input::Tick => {}
        }
        let now = self.clock.now();
        self.on_tick(now);
    }

    /// The earliest time something is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let now_unix = self.clock.unix();
        let now = self.clock.now();
        let retry_due = |policy: &ms11_state::RecoveryPolicyState| {
            policy
                .retry
                .as_ref()
                .map(|r| now + Duration::from_secs_f64((r.next_at - now_unix).clamp(0.0, 86_400.0)))
        };
        [
            self.fuser.deadline(),
            self.client.deadline(),
            self.bot.deadline(),
            self.ack_waiter.as_ref().map(|w| w.due(&self.settings)),
            self.commands_running.iter().map(|c| c.deadline).min(),
            retry_due(&self.state.runtime.recovery)
                .filter(|_| self.retry_allowed(IncidentSubject::Client)),
            retry_due(&self.state.runtime.bot_recovery)
                .filter(|_| self.retry_allowed(IncidentSubject::Bot)),
            Some(self.autosave_at),
            self.save_soon_at,
            self.capture_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Does whatever is due at `now`.
    pub(crate) fn on_tick(&mut self, now: Instant) {
        for incident in self.fuser.poll(now) {
            self.on_fused(incident);
        }
        self.evidence_timers(now);
        self.client_timers(now);
        self.bot_timers(now);
        self.ack_timers(now);
        self.command_timers(now);
        self.retry_timers();
        if now >= self.autosave_at {
            self.autosave_at = now + self.settings.save_interval.max(Duration::from_secs(1));
            self.save_now("autosave");
        }
        if self.save_soon_at.is_some_and(|at| now >= at) {
            self.save_soon_at = None;
            self.save_now("soon");
        }
    }

    fn on_exit(&mut self, exit: ExitEvent) {
        match exit.role.as_str() {
            "client" => self.on_client_exit(exit),
            "bot" => self.on_bot_exit(exit),
            _ => self.on_command_exit(exit),
        }
    }

    fn on_command(&mut self, command: SessionCommand) {
        match command {
            SessionCommand::Status(reply) => {
                let _ = reply.send(self.status());
            }
            SessionCommand::Save(reply) => {
                let result = if self.save_now("requested") {
                    Ok(self.state.generation)
                } else {
                    Err(self
                        .saves_failing
                        .clone()
                        .unwrap_or_else(|| "the save failed".into()))
                };
                let _ = reply.send(result);
            }
            SessionCommand::Restart(reply) => {
                let _ = reply.send(self.operator_recovery("restart"));
            }
            SessionCommand::Relog(reply) => {
                let _ = reply.send(self.operator_recovery("relog"));
            }
            SessionCommand::Ack { incident, reply } => {
                let _ = reply.send(self.acknowledge(incident.as_deref()));
            }
            SessionCommand::Subscribe(listener) => self.events.subscribe(listener),
            SessionCommand::Screenshot(reply) => self.screenshot_now(reply),
            SessionCommand::Ping(reply) => {
                let _ = reply.send(());
            }
            SessionCommand::Reconfigure(settings, reply) => {
                let _ = reply.send(self.reconfigure(*settings));
            }
        }
    }

    /// Applies what can change live from `new` and answers what needs a restart (see
    /// [`SessionCommand::Reconfigure`]).
    fn reconfigure(&mut self, new: SessionSettings) -> Vec<String> {
        let needs_restart = self.settings.restart_only_changes(&new);
        let now = self.clock.now();
        let mut applied = Vec::new();
        if self.settings.recovery != new.recovery {
            self.settings.recovery = new.recovery;
            applied.push("recovery");
        }
        if self.settings.client_pipeline != new.client_pipeline
            || self.settings.bot_pipeline != new.bot_pipeline
        {
            self.settings.client_pipeline = new.client_pipeline;
            self.settings.bot_pipeline = new.bot_pipeline;
            applied.push("pipeline");
        }
        if self.settings.save_interval != new.save_interval {
            self.settings.save_interval = new.save_interval;
            self.autosave_at = now + new.save_interval.max(Duration::from_secs(1));
            applied.push("save_interval");
        }
        if self.settings.stall != new.stall {
            self.bot.set_stall(&new.stall, now);
            self.settings.stall = new.stall;
            applied.push("stall");
        }
        if self.settings.ready != new.ready {
            self.settings.ready = new.ready;
            applied.push("ready");
        }
        if (
            self.settings.recovery_enabled,
            self.settings.auto_restart,
            self.settings.auto_relog,
        ) != (new.recovery_enabled, new.auto_restart, new.auto_relog)
        {
            self.settings.recovery_enabled = new.recovery_enabled;
            self.settings.auto_restart = new.auto_restart;
            self.settings.auto_relog = new.auto_relog;
            self.state.recovery_enabled = new.recovery_enabled;
            self.state.auto_restart = new.auto_restart;
            self.state.auto_relog = new.auto_relog;
            applied.push("recovery_enabled");
        }
        if applied.is_empty() && needs_restart.is_empty() {
            info!(event = "reconfigured", session = %self.settings.name, "the configuration is unchanged");
        } else {
            info!(event = "reconfigured", session = %self.settings.name, applied = %applied.join(", "), needs_restart = %needs_restart.join(", "), "new settings applied");
        }
        if !applied.is_empty() {
            self.save_soon();
        }
        needs_restart
    }

    /// The id of the next recorded incident: `<session>-<n>`, numbered without gaps and
    /// unique across runner restarts.
    fn new_incident_id(&mut self) -> String {
        let id = format!("{}-{}", self.settings.name, self.next_incident);
        self.next_incident = self.next_incident.saturating_add(1);
        id
    }

    /// Records and publishes an event.
    fn emit(&mut self, kind: EventKind) {
        let event = SupervisorEvent {
            session: self.settings.name.clone(),
            at: self.clock.unix(),
            kind,
        };
        self.events.publish(&event);
    }

    fn start_detectors(&mut self) {
        let name = self.settings.name.clone();
        if let Some(log) = self.settings.client_log.clone() {
            let cursor = self
                .state
                .runtime
                .log_cursors
                .get(&log.display().to_string())
                .cloned();
            match ms11_detect::spawn_log_detector(
                &log,
                &self.settings.log_patterns,
                cursor,
                self.ids.clone(),
                self.signal_tx.clone(),
            ) {
                Ok(h) => self.log_detector = Some(h),
                Err(e) => {
                    error!(session = %name, log = %log.display(), error = %e, "cannot follow the client log")
                }
            }
        }
        match ms11_detect::spawn_window_probe(
            &self.settings.window,
            self.ids.clone(),
            self.signal_tx.clone(),
        ) {
            Ok(h) => {
                if let Some(why) = h.disabled_reason() {
                    info!(session = %name, reason = %why, "window probe disabled");
                }
                self.detectors.push(h);
            }
            Err(e) => warn!(session = %name, error = %e, "window probe not started"),
        }
        let cwd = self
            .settings
            .client
            .as_ref()
            .and_then(|c| c.spec.cwd.clone())
            .unwrap_or_else(|| PathBuf::from("."));
        match ms11_detect::spawn_crash_dump_watcher(
            &self.settings.crash_dump,
            &cwd,
            self.ids.clone(),
            self.signal_tx.clone(),
        ) {
            Ok(h) => self.detectors.push(h),
            Err(e) => warn!(session = %name, error = %e, "crash-dump watcher not started"),
        }
    }

    /// A snapshot for `status`.
    pub(crate) fn status(&self) -> SessionStatus {
        let now_unix = self.clock.unix();
        let retry = [
            (IncidentSubject::Client, &self.state.runtime.recovery),
            (IncidentSubject::Bot, &self.state.runtime.bot_recovery),
        ]
        .into_iter()
        .filter(|(subject, _)| self.retry_allowed(*subject))
        .find_map(|(subject, policy)| {
            policy.retry.as_ref().map(|r| RetryStatus {
                incident: r.incident.clone(),
                subject: subject.as_str().to_owned(),
                in_secs: (r.next_at - now_unix).max(0.0),
                rounds: r.rounds,
            })
        });
        let mut client = self.client.status();
        client.stopped = self.halted.get(&IncidentSubject::Client).cloned();
        let mut bot = self.bot.status();
        bot.stopped = self.halted.get(&IncidentSubject::Bot).cloned();
        let waiting_for_ack = self.ack_waiter.as_ref().map(|w| w.incident.clone());
        let recovering = self.recovery.as_ref().map(|r| r.incident.id.clone());
        let health = if !self.halted.is_empty() {
            Health::Stopped
        } else if waiting_for_ack.is_some() {
            Health::WaitingForPerson
        } else if recovering.is_some() {
            Health::Recovering
        } else if retry.is_some()
            || (client.configured && !client.running)
            || (bot.configured && !bot.running)
        {
            Health::Down
        } else if self.saves_failing.is_some() {
            Health::SavesFailing
        } else if client.running && !client.ready {
            Health::Starting
        } else {
            Health::Healthy
        };
        SessionStatus {
            session: self.settings.name.clone(),
            health,
            client,
            bot,
            recovering,
            waiting_for_ack,
            retry,
            saves_failing: self.saves_failing.clone(),
            generation: self.state.generation,
            location: format!("{} / {}", self.state.planet, self.state.zone),
            tasks: TaskCounts {
                done: self.state.count_tasks(TaskState::Done),
                in_flight: self.state.count_tasks(TaskState::InFlight),
                pending: self.state.count_tasks(TaskState::Pending),
            },
            crash_count: self.state.crash_count,
        }
    }

    fn refresh_runtime(&mut self) {
        let elapsed = self.clock.now().saturating_duration_since(self.run_started);
        self.state.session_duration = self.duration_base + elapsed.as_secs_f64();
        let mut children = Vec::new();
        children.extend(self.client.record());
        children.extend(self.bot.record());
        self.state.runtime.children = children;
        if let (Some(log), Some(handle)) = (&self.settings.client_log, &self.log_detector)
            && let Some(cursor) = handle.cursor.get()
        {
            self.state
                .runtime
                .log_cursors
                .insert(log.display().to_string(), cursor);
        }
    }

    /// Saves now; on failure the in-memory state is kept and the next save retries.
    pub(crate) fn save_now(&mut self, why: &str) -> bool {
        self.refresh_runtime();
        match self.store.save(&mut self.state) {
            Ok(report) => {
                debug!(event = "saved", session = %self.settings.name, generation = report.generation, why, "state saved");
                if self.saves_failing.take().is_some() {
                    info!(event = "save_resumed", session = %self.settings.name, generation = report.generation, "saving works again");
                }
                self.emit(EventKind::Saved {
                    generation: report.generation,
                });
                true
            }
            Err(e) => {
                let error = e.to_string();
                error!(event = "save_failed", session = %self.settings.name, error = %error, why, "saving the state failed; kept in memory, will retry");
                self.saves_failing = Some(error.clone());
                self.emit(EventKind::SaveFailed { error });
                false
            }
        }
    }

    /// Saves soon (within 100 ms), so a burst of changes is one save and the path from
    /// an exit to the relaunch never waits for a disk flush.
    fn save_soon(&mut self) {
        let at = self.clock.now() + Duration::from_millis(100);
        self.save_soon_at = Some(self.save_soon_at.map_or(at, |t| t.min(at)));
    }

    /// Stops everything and saves, once; only shutdown may wait.
    fn shutdown(mut self) -> SessionEnd {
        info!(event = "stopping", session = %self.settings.name, "stopping the session");
        self.cancel_recovery("the runner is stopping");
        self.bot.shutdown(&self.settings.name);
        self.client
            .shutdown(&self.settings.name, self.spawner.as_mut(), &self.exit_tx);
        for running in self.commands_running.drain(..) {
            running.child.signal_group(9);
        }
        for detector in self.detectors.drain(..) {
            detector.stop();
        }
        if let Some(log) = self.log_detector.take() {
            let cursor = log.cursor.get();
            log.handle.stop();
            if let (Some(path), Some(cursor)) = (&self.settings.client_log, cursor) {
                self.state
                    .runtime
                    .log_cursors
                    .insert(path.display().to_string(), cursor);
            }
        }
        if self.save_now("shutdown") {
            info!(event = "stopped", session = %self.settings.name, generation = self.state.generation, "session stopped and saved");
            if self.halted.is_empty() {
                SessionEnd::Stopped
            } else {
                let reasons: Vec<String> = self.halted.values().cloned().collect();
                SessionEnd::Halted(reasons.join("; "))
            }
        } else {
            let error = self
                .saves_failing
                .clone()
                .unwrap_or_else(|| "the final save failed".into());
            error!(event = "final_save_failed", session = %self.settings.name, error = %error, "session stopped, but the final save failed: the newest good generation on disk is older");
            SessionEnd::FinalSaveFailed(error)
        }
    }
}

/// The first incident number not used by any recorded incident (ids stay unique across
/// runner restarts, which `update_incident` relies on).
pub fn next_incident_number(session: &str, state: &SessionState) -> u64 {
    let prefix = format!("{session}-");
    let highest = state
        .crash_history
        .iter()
        .filter_map(|i| i.id.strip_prefix(&prefix)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    highest.max(state.crash_count).saturating_add(1)
}
