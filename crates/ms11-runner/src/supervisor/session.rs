//! One session's supervisor loop: children, detectors, the bot link, saves, incidents,
//! recoveries and control requests, all on one thread driven by channels.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, never, select, tick, unbounded};
use ms11_agent::{
    Action, BotEvent, BotMessage, BotReader, BotWriter, ExactlyOnce, ReaderConfig, RunnerMessage,
};
use ms11_config::{Config, SessionConfig};
use ms11_detect::{DetectorHandle, IncidentIds, LogDetectorHandle, StallDetector};
use ms11_persist::StateStore;
use ms11_process::{ExitEvent, ManagedChild, ProcessSpec, StdioMode};
use ms11_recover::{Pipeline, RealClock, Strategy};
use ms11_state::{
    Attempt, AttemptOutcome, DetectorSource, Incident, IncidentKind, Resolution, ResolutionStatus,
    SessionState,
};
use serde_json::json;
use tracing::{debug, error, info, warn};

use super::client::ClientSlot;
use super::recovery::{RunningRecovery, WorkerRequest};
use crate::control::{ControlRequest, ControlResponse};

/// A control request routed to this session, with where to answer.
pub struct ControlMessage {
    /// The request.
    pub request: ControlRequest,
    /// The answer goes here.
    pub reply: Sender<ControlResponse>,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Asked to stop (signal): saved, children stopped.
    Stopped,
    /// Stopped on a terminal condition nobody acknowledged.
    Terminal,
}

/// Everything one session needs to run.
pub struct SessionSupervisor {
    name: String,
    config: Config,
    session: SessionConfig,
    state: SessionState,
    store: Box<dyn StateStore>,
    ids: IncidentIds,
    client: Arc<Mutex<ClientSlot>>,
    exit_tx: Sender<ExitEvent>,
    exit_rx: Receiver<ExitEvent>,
    raw_tx: Sender<Incident>,
    fused_rx: Receiver<Incident>,
    detectors: Vec<DetectorHandle>,
    log_detector: Option<LogDetectorHandle>,
    stall: Option<StallDetector>,
    bot: Option<BotLink>,
    bot_failures: u32,
    bot_restart_at: Option<Instant>,
    bot_incident: Option<(Incident, Instant)>,
    recovery: Option<RunningRecovery>,
    pending_relog: Option<Sender<Result<(), String>>>,
    run_started: Instant,
    duration_base: f64,
    dirty: bool,
    plugins: Vec<ms11_plugin_host::PluginStrategy>,
}

/// The running bot and its protocol state.
struct BotLink {
    child: ManagedChild,
    reader: BotReader,
    _stderr: Option<BotReader>,
    writer: BotWriter,
    rules: ExactlyOnce,
    hello_seen: bool,
}

impl SessionSupervisor {
    /// Prepares a session whose state was loaded (or created) and whose store is open.
    pub fn new(
        config: &Config,
        session: SessionConfig,
        state: SessionState,
        store: Box<dyn StateStore>,
        plugins: Vec<ms11_plugin_host::PluginStrategy>,
    ) -> Self {
        let name = session.name.clone();
        let (exit_tx, exit_rx) = unbounded();
        let (raw_tx, _) = unbounded();
        let (_, fused_rx) = unbounded();
        let client_spec = session.client.as_ref().and_then(process_spec);
        let (signal, grace) = session
            .client
            .as_ref()
            .map_or((15, Duration::from_secs(10)), |c| {
                (
                    ms11_config::signal_number(&c.stop_signal).unwrap_or(15),
                    Duration::from_secs_f64(c.stop_grace_secs.max(0.0)),
                )
            });
        let client = ClientSlot::new(
            &name,
            client_spec,
            exit_tx.clone(),
            signal,
            grace,
            session.client_log.clone(),
            session.ready.clone(),
        );
        let ids = IncidentIds::starting_at(&name, next_incident_number(&name, &state));
        let duration_base = state.session_duration;
        SessionSupervisor {
            name,
            config: config.clone(),
            session,
            state,
            store,
            ids,
            client: Arc::new(Mutex::new(client)),
            exit_tx,
            exit_rx,
            raw_tx,
            fused_rx,
            detectors: Vec::new(),
            log_detector: None,
            stall: None,
            bot: None,
            bot_failures: 0,
            bot_restart_at: None,
            bot_incident: None,
            recovery: None,
            pending_relog: None,
            run_started: Instant::now(),
            duration_base,
            dirty: false,
            plugins,
        }
    }

    /// Runs until `stop` fires.
    pub fn run(mut self, stop: Receiver<()>, control: Receiver<ControlMessage>) -> SessionEnd {
        self.start_detectors();
        self.start_client();
        self.start_bot();
        self.save("start");
        let autosave = tick(Duration::from_secs(self.config.save_interval.max(1)));
        loop {
            let bot_restart = self
                .bot_restart_at
                .map_or_else(never, crossbeam_channel::at);
            let bot_events = self
                .bot
                .as_ref()
                .map_or_else(never, |b| b.reader.events.clone());
            let (done_rx, req_rx) = match &self.recovery {
                Some(r) => (r.done.clone(), r.requests.clone()),
                None => (never(), never()),
            };
            select! {
                recv(stop) -> _ => break,
                recv(bot_events) -> event => match event {
                    Ok(event) => self.on_bot_event(event),
                    Err(_) => self.on_bot_closed(),
                },
                recv(self.exit_rx) -> exit => if let Ok(exit) = exit { self.on_exit(exit) },
                recv(self.fused_rx) -> incident => if let Ok(incident) = incident { self.on_incident(incident) },
                recv(done_rx) -> done => if let Ok((incident, policy, result)) = done { self.on_recovery_done(incident, policy, result) },
                recv(req_rx) -> req => if let Ok(req) = req { self.on_worker_request(req) },
                recv(control) -> msg => if let Ok(msg) = msg {
                    let response = self.on_control(msg.request);
                    let _ = msg.reply.send(response);
                },
                recv(autosave) -> _ => self.save("autosave"),
                recv(bot_restart) -> _ => self.housekeeping(),
            }
        }
        self.shutdown();
        SessionEnd::Stopped
    }

    fn start_detectors(&mut self) {
        let (raw_tx, raw_rx) = unbounded();
        let (fused_tx, fused_rx) = unbounded();
        self.raw_tx = raw_tx.clone();
        self.fused_rx = fused_rx;
        match ms11_detect::spawn_fuser(&self.session.fuse, raw_rx, fused_tx) {
            Ok(h) => self.detectors.push(h),
            Err(e) => error!(session = %self.name, error = %e, "cannot start the incident fuser"),
        }
        if let Some(log) = self.session.client_log.clone() {
            let patterns = self.config.log_patterns_of(&self.session);
            let cursor = self
                .state
                .runtime
                .log_cursors
                .get(&log.display().to_string())
                .cloned();
            match ms11_detect::spawn_log_detector(
                &log,
                &patterns,
                cursor,
                self.ids.clone(),
                raw_tx.clone(),
            ) {
                Ok(h) => self.log_detector = Some(h),
                Err(e) => {
                    error!(session = %self.name, log = %log.display(), error = %e, "cannot follow the client log")
                }
            }
        }
        match ms11_detect::spawn_window_probe(
            &self.session.window,
            self.ids.clone(),
            raw_tx.clone(),
        ) {
            Ok(h) => {
                if let Some(why) = h.disabled_reason() {
                    info!(session = %self.name, reason = %why, "window probe disabled");
                }
                self.detectors.push(h);
            }
            Err(e) => warn!(session = %self.name, error = %e, "window probe not started"),
        }
        let cwd = self
            .session
            .client
            .as_ref()
            .and_then(|c| c.cwd.clone())
            .unwrap_or_else(|| PathBuf::from("."));
        match ms11_detect::spawn_crash_dump_watcher(
            &self.session.crash_dump,
            &cwd,
            self.ids.clone(),
            raw_tx.clone(),
        ) {
            Ok(h) => self.detectors.push(h),
            Err(e) => warn!(session = %self.name, error = %e, "crash-dump watcher not started"),
        }
        if self.session.bot.is_some() {
            match StallDetector::spawn(&self.session.stall, "bot", self.ids.clone(), raw_tx) {
                Ok(s) => self.stall = Some(s),
                Err(e) => warn!(session = %self.name, error = %e, "stall detector not started"),
            }
        }
    }

    fn start_client(&mut self) {
        let Ok(mut client) = self.client.lock() else {
            return;
        };
        if !client.configured() {
            return;
        }
        match client.start() {
            Ok(pid) => info!(event = "client_started", session = %self.name, pid, "client started"),
            Err(e) => error!(session = %self.name, error = %e, "cannot start the client"),
        }
        drop(client);
        self.dirty = true;
    }

    fn start_bot(&mut self) {
        let Some(bot) = &self.session.bot else { return };
        let Some(mut spec) = process_spec(bot) else {
            return;
        };
        spec.stdin = StdioMode::Piped;
        spec.stdout = StdioMode::Piped;
        spec.stderr = StdioMode::Piped;
        let mut child = match ManagedChild::spawn(&spec, "bot", self.exit_tx.clone()) {
            Ok(c) => c,
            Err(e) => {
                error!(session = %self.name, error = %e, "cannot start the bot");
                self.schedule_bot_restart();
                return;
            }
        };
        let label = format!("{}/bot", self.name);
        let (Some(stdin), Some(stdout)) = (child.take_stdin(), child.take_stdout()) else {
            error!(session = %self.name, "the bot's pipes are missing");
            return;
        };
        let stderr = child.take_stderr().and_then(|e| {
            ms11_agent::spawn_output_reader(e, ReaderConfig::new(format!("{label}/stderr"))).ok()
        });
        let reader = match ms11_agent::spawn_reader(stdout, ReaderConfig::new(label.clone())) {
            Ok(r) => r,
            Err(e) => {
                error!(session = %self.name, error = %e, "cannot read the bot");
                return;
            }
        };
        let writer = match ms11_agent::spawn_writer(stdin, label, 256) {
            Ok(w) => w,
            Err(e) => {
                error!(session = %self.name, error = %e, "cannot write to the bot");
                return;
            }
        };
        info!(event = "bot_started", session = %self.name, pid = child.pid(), "bot started");
        self.bot = Some(BotLink {
            child,
            reader,
            _stderr: stderr,
            writer,
            rules: ExactlyOnce::new(),
            hello_seen: false,
        });
        if let Some(stall) = &self.stall {
            stall.beat();
        }
        self.dirty = true;
    }

    fn send_to_bot(&mut self, message: RunnerMessage) {
        if let Some(bot) = &self.bot
            && let Err(e) = bot.writer.send(message)
        {
            warn!(session = %self.name, error = %e, "could not send to the bot");
        }
    }

    fn send_resume(&mut self) {
        let Some(bot) = &self.bot else { return };
        let message = bot.rules.resume(&self.state);
        if let RunnerMessage::Resume { rerun, .. } = &message {
            info!(event = "resume", session = %self.name, rerun = ?rerun, queue = self.state.task_queue().len(), "bot resumed from the saved state");
        }
        self.send_to_bot(message);
    }

    fn on_bot_event(&mut self, event: BotEvent) {
        match event {
            BotEvent::Message(message) => self.on_bot_message(&message),
            BotEvent::Ignored(_) => {}
            BotEvent::Closed(_) => self.on_bot_closed(),
        }
    }

    fn on_bot_closed(&mut self) {
        // The exit event (from the waiter) decides what happens; stop reading.
        if let Some(bot) = &mut self.bot
            && bot.child.is_running()
        {
            debug!(session = %self.name, "the bot closed its stdout");
        }
    }

    fn on_bot_message(&mut self, message: &BotMessage) {
        if let Some(stall) = &self.stall {
            stall.beat();
        }
        let now = crate::unix_now();
        let Some(bot) = &mut self.bot else { return };
        let action = bot.rules.handle(&mut self.state, message, now);
        match action {
            Action::SendResume => {
                bot.hello_seen = true;
                self.bot_resolved();
                self.send_resume();
            }
            Action::SaveThenAck { seq } => {
                let mark = bot.rules.change_mark();
                if self.save_now("task checkpoint") {
                    if let Some(bot) = &mut self.bot {
                        bot.rules.saved(mark);
                    }
                    if let BotMessage::TaskDone { id, .. } = message {
                        info!(event = "task_done", session = %self.name, task = %id, seq, done = self.state.count_tasks(ms11_state::TaskState::Done), "task done and saved");
                    }
                    self.send_to_bot(RunnerMessage::Ack { seq });
                }
            }
            Action::Ack { seq } => self.send_to_bot(RunnerMessage::Ack { seq }),
            Action::Save => {
                let mark = bot.rules.change_mark();
                if self.save_now("task started")
                    && let Some(bot) = &mut self.bot
                {
                    bot.rules.saved(mark);
                }
            }
            Action::StateChanged { .. } => self.dirty = true,
            Action::Resync { reason } => {
                warn!(session = %self.name, %reason, "resynchronising the bot");
                self.send_resume();
            }
            Action::Log { level, msg } => level.emit(&self.name, &msg),
            Action::RelogResult { ok, reason } => {
                if let Some(reply) = self.pending_relog.take() {
                    let _ = reply.send(if ok {
                        Ok(())
                    } else {
                        Err(reason.unwrap_or_else(|| "relog failed".into()))
                    });
                }
            }
            Action::Incompatible(e) => {
                error!(session = %self.name, error = %e, "the bot speaks an incompatible protocol; shutting it down");
                self.send_to_bot(RunnerMessage::Shutdown);
            }
            Action::Beat | Action::Rejected { .. } | Action::None => {}
        }
    }

    fn on_exit(&mut self, exit: ExitEvent) {
        if exit.role == "client" {
            let expected = self
                .client
                .lock()
                .map(|mut c| c.take_expected_exit(exit.pid))
                .unwrap_or(false);
            if expected {
                return;
            }
            let mut incident =
                ms11_detect::incident_for_exit(&self.ids, "client", exit.exit.clone(), exit.unix);
            incident.output_tail = self
                .client
                .lock()
                .map(|c| c.output_tail())
                .unwrap_or_default();
            let _ = self.raw_tx.send(incident);
            return;
        }
        // The bot.
        let is_current = self.bot.as_ref().is_some_and(|b| b.child.pid() == exit.pid);
        if !is_current {
            return;
        }
        let output = self
            .bot
            .as_ref()
            .map(|b| b.reader.recent_output())
            .unwrap_or_default();
        self.bot = None;
        if self.pending_relog.is_some()
            && let Some(reply) = self.pending_relog.take()
        {
            let _ = reply.send(Err("the bot exited".into()));
        }
        let mut incident = ms11_detect::incident_for_exit(&self.ids, "bot", exit.exit, exit.unix);
        incident.output_tail = output;
        self.bot_failed(incident);
    }

    /// The bot died or stalled: record it, restart it with backoff, resume it.
    fn bot_failed(&mut self, mut incident: Incident) {
        incident.crash.error_message = format!("bot: {}", incident.crash.error_message);
        info!(event = "incident", session = %self.name, incident = %incident.id, kind = %incident.kind, source = %incident.source, message = %incident.crash.error_message, "incident (bot)");
        self.state.record_incident(incident.clone());
        self.bot_incident = Some((incident, Instant::now()));
        if let Some(bot) = self.bot.take() {
            bot.child.stop(9, Duration::from_millis(500));
        }
        self.schedule_bot_restart();
        self.save_now("bot incident");
    }

    fn schedule_bot_restart(&mut self) {
        self.bot_failures = self.bot_failures.saturating_add(1);
        let delay_ms = (250u64 << self.bot_failures.min(7)).min(30_000);
        self.bot_restart_at = Some(Instant::now() + Duration::from_millis(delay_ms));
        info!(event = "backoff", session = %self.name, strategy = "restart", wait_ms = delay_ms, "restarting the bot after a pause");
    }

    /// The restarted bot said hello: its incident is resolved.
    fn bot_resolved(&mut self) {
        let Some((mut incident, started)) = self.bot_incident.take() else {
            self.bot_failures = 0;
            return;
        };
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        incident.record_attempt(Attempt {
            strategy: "restart".into(),
            started_at: incident.detected_at(),
            duration_ms: ms,
            outcome: AttemptOutcome::Recovered,
            reason: Some("bot restarted and resumed".into()),
        });
        incident.resolve(Resolution {
            status: ResolutionStatus::Recovered,
            strategy: Some("restart".into()),
            at: crate::unix_now(),
            time_to_recover_ms: Some(ms),
            note: None,
        });
        info!(event = "recovered", session = %self.name, incident = %incident.id, strategy = "restart", ms, "bot restarted and resumed");
        self.state.update_incident(incident);
        self.bot_failures = 0;
        self.dirty = true;
    }

    fn housekeeping(&mut self) {
        if let Some(at) = self.bot_restart_at
            && Instant::now() >= at
            && self.bot.is_none()
        {
            self.bot_restart_at = None;
            self.start_bot();
        }
    }

    fn on_incident(&mut self, incident: Incident) {
        // Signals of the client that was replaced by a restart are stale.
        let client_started = self.client.lock().map(|c| c.started_unix()).unwrap_or(0.0);
        let from_client = incident.source != DetectorSource::Stall;
        if from_client
            && incident.detected_at() < client_started
            && incident.kind != IncidentKind::Operator
        {
            debug!(session = %self.name, incident = %incident.id, "stale signal from the replaced client; ignored");
            return;
        }
        if incident.kind == IncidentKind::Stall {
            if self.bot_incident.is_some() || self.bot.is_none() {
                return; // already restarting the bot
            }
            self.bot_failed(incident);
            return;
        }
        if let Some(running) = &self.recovery {
            info!(session = %self.name, incident = %incident.id, during = %running.incident_id, kind = %incident.kind, "signal during a recovery; folded into it");
            return;
        }
        info!(event = "incident", session = %self.name, incident = %incident.id, kind = %incident.kind, source = %incident.source, terminal = incident.terminal, message = %incident.crash.error_message, "incident");
        self.state.record_incident(incident.clone());
        self.save_now("incident");
        if !self.config.recovery_enabled || !self.state.recovery_enabled {
            warn!(session = %self.name, incident = %incident.id, "recovery is disabled; incident recorded only");
            return;
        }
        self.start_recovery(incident);
    }

    fn pipeline(&self) -> Pipeline {
        let settings = &self.session.recovery;
        let mut strategies: Vec<Box<dyn Strategy>> = Vec::new();
        for name in &self.session.pipeline {
            let allowed = match name.as_str() {
                "restart" | "restore" => self.config.auto_restart,
                "relog" => self.config.auto_relog,
                _ => true,
            };
            if !allowed {
                continue;
            }
            if let Some(s) = ms11_recover::builtin(name, settings) {
                strategies.push(s);
            } else if let Some(p) = self
                .plugins
                .iter()
                .find(|p| ms11_recover::Strategy::name(*p) == name.as_str())
            {
                strategies.push(Box::new(p.clone()));
            } else {
                warn!(session = %self.name, strategy = %name, "unknown strategy in the pipeline; skipped");
            }
        }
        Pipeline::new(strategies, settings, Arc::new(RealClock))
    }

    fn start_recovery(&mut self, mut incident: Incident) {
        incident.session = self.name.clone();
        let pipeline = self.pipeline();
        info!(event = "recovery", session = %self.name, incident = %incident.id, order = ?pipeline.names(), "recovering");
        let policy = self.state.runtime.recovery.clone();
        let ack_file = self.session.recovery.notify.ack_file.clone();
        match RunningRecovery::start(
            pipeline,
            incident,
            policy,
            Arc::clone(&self.client),
            ack_file,
        ) {
            Ok(r) => self.recovery = Some(r),
            Err(e) => error!(session = %self.name, error = %e, "cannot start the recovery worker"),
        }
    }

    fn on_recovery_done(
        &mut self,
        incident: Incident,
        policy: ms11_state::RecoveryPolicyState,
        result: ms11_recover::PipelineResult,
    ) {
        if let Some(r) = self.recovery.take() {
            r.join(Duration::from_secs(1));
        }
        self.state.runtime.recovery = policy;
        self.state.update_incident(incident);
        self.save_now("recovery");
        if result.status == ResolutionStatus::Recovered {
            // The session continues from the persisted state.
            if self.bot.as_ref().is_some_and(|b| b.hello_seen) {
                self.send_resume();
            }
        }
    }

    fn on_worker_request(&mut self, request: WorkerRequest) {
        match request {
            WorkerRequest::Relog(reply) => {
                if self.bot.as_ref().is_some_and(|b| b.hello_seen) {
                    self.pending_relog = Some(reply);
                    info!(event = "relog", session = %self.name, "asking the bot to log in again");
                    self.send_to_bot(RunnerMessage::Relog);
                } else {
                    let _ = reply.send(Err("no bot is connected to relog".into()));
                }
            }
            WorkerRequest::RollBack(generation, reply) => {
                let _ = reply.send(self.roll_back(generation));
            }
        }
    }

    /// Restores the game fields of an older good generation; the ledger, incidents and
    /// counters stay (nothing acknowledged is lost).
    fn roll_back(&mut self, generation: Option<u64>) -> Result<u64, String> {
        let target = match generation {
            Some(g) => g,
            None => self
                .store
                .generations()
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|g| g.validity.is_ok())
                .filter_map(|g| g.generation)
                .filter(|&g| g < self.state.generation)
                .max()
                .ok_or_else(|| "no valid older generation on disk".to_owned())?,
        };
        let old = self
            .store
            .load_generation(target)
            .map_err(|e| e.to_string())?;
        let s = &mut self.state;
        s.planet = old.planet;
        s.zone = old.zone;
        s.coordinates = old.coordinates;
        s.current_quest = old.current_quest;
        s.quest_step = old.quest_step;
        s.xp_level = old.xp_level;
        s.xp_current = old.xp_current;
        s.xp_next_level = old.xp_next_level;
        s.equipped_weapon = old.equipped_weapon;
        s.active_modes = old.active_modes;
        info!(event = "restored", session = %self.name, generation = target, "game fields rolled back to an older generation; task ledger kept");
        self.save_now("restore");
        Ok(target)
    }

    fn on_control(&mut self, request: ControlRequest) -> ControlResponse {
        match request {
            ControlRequest::Status => ControlResponse::ok(self.status_text(), self.status_json()),
            ControlRequest::Save { .. } => {
                if self.save_now("requested") {
                    ControlResponse::ok(
                        format!(
                            "session `{}` saved (generation {})",
                            self.name, self.state.generation
                        ),
                        json!({"session": self.name, "generation": self.state.generation}),
                    )
                } else {
                    ControlResponse::error(format!(
                        "session `{}`: the save failed; see the runner's log",
                        self.name
                    ))
                }
            }
            ControlRequest::Restart { .. } | ControlRequest::Relog { .. } => {
                let what = if matches!(request, ControlRequest::Restart { .. }) {
                    "restart"
                } else {
                    "relog"
                };
                if self.recovery.is_some() {
                    return ControlResponse::error(format!(
                        "session `{}` is already recovering",
                        self.name
                    ));
                }
                let mut incident = self.ids.incident(
                    IncidentKind::Operator,
                    DetectorSource::Operator,
                    format!("operator asked for a {what}"),
                    crate::unix_now(),
                );
                incident.pattern = Some(what.into());
                let id = incident.id.clone();
                self.on_incident(incident);
                ControlResponse::ok(
                    format!("session `{}`: {what} started (incident {id})", self.name),
                    json!({"incident": id}),
                )
            }
            ControlRequest::Ack { .. } => match &self.recovery {
                Some(r) if r.waiting_for_ack.load(Ordering::SeqCst) => {
                    let _ = r.acks.send(());
                    ControlResponse::ok(
                        format!(
                            "session `{}`: incident {} acknowledged",
                            self.name, r.incident_id
                        ),
                        json!({"incident": r.incident_id}),
                    )
                }
                _ => ControlResponse::error(format!(
                    "session `{}`: nothing is waiting for an acknowledgement",
                    self.name
                )),
            },
        }
    }

    fn status_json(&self) -> serde_json::Value {
        let client = self.client.lock().ok();
        json!({
            "session": self.name,
            "client": {"running": client.as_ref().is_some_and(|c| c.running()), "pid": client.as_ref().and_then(|c| c.pid())},
            "bot": {"running": self.bot.is_some(), "pid": self.bot.as_ref().map(|b| b.child.pid())},
            "recovering": self.recovery.as_ref().map(|r| r.incident_id.clone()),
            "waiting_for_ack": self.recovery.as_ref().is_some_and(|r| r.waiting_for_ack.load(Ordering::SeqCst)),
            "generation": self.state.generation,
            "location": format!("{} / {}", self.state.planet, self.state.zone),
            "tasks": {
                "done": self.state.count_tasks(ms11_state::TaskState::Done),
                "in_flight": self.state.count_tasks(ms11_state::TaskState::InFlight),
                "pending": self.state.count_tasks(ms11_state::TaskState::Pending),
            },
            "crash_count": self.state.crash_count,
        })
    }

    fn status_text(&self) -> String {
        let v = self.status_json();
        format!(
            "session `{}`: client {}, bot {}, {}; generation {}; {}; tasks {} done, {} in flight, {} pending; {} incident(s)",
            self.name,
            if v["client"]["running"] == true {
                "running"
            } else {
                "not running"
            },
            if v["bot"]["running"] == true {
                "running"
            } else {
                "not running"
            },
            match &self.recovery {
                Some(r) if r.waiting_for_ack.load(Ordering::SeqCst) =>
                    format!("waiting for `ms11-recovery ack` ({})", r.incident_id),
                Some(r) => format!("recovering ({})", r.incident_id),
                None => "healthy".into(),
            },
            self.state.generation,
            v["location"].as_str().unwrap_or_default(),
            v["tasks"]["done"],
            v["tasks"]["in_flight"],
            v["tasks"]["pending"],
            self.state.crash_count,
        )
    }

    fn refresh_runtime(&mut self) {
        self.state.session_duration = self.duration_base + self.run_started.elapsed().as_secs_f64();
        let mut children = Vec::new();
        if let Some(r) = self.client.lock().ok().and_then(|c| c.record()) {
            children.push(r);
        }
        if let Some(bot) = &self.bot
            && bot.child.is_running()
        {
            children.push(bot.child.record());
        }
        self.state.runtime.children = children;
        if let (Some(log), Some(handle)) = (&self.session.client_log, &self.log_detector)
            && let Some(cursor) = handle.cursor.get()
        {
            self.state
                .runtime
                .log_cursors
                .insert(log.display().to_string(), cursor);
        }
    }

    fn save(&mut self, why: &str) {
        self.save_now(why);
    }

    /// Saves now; on failure the in-memory state is kept and the next save retries.
    fn save_now(&mut self, why: &str) -> bool {
        self.refresh_runtime();
        match self.store.save(&mut self.state) {
            Ok(report) => {
                debug!(event = "saved", session = %self.name, generation = report.generation, why, "state saved");
                self.dirty = false;
                true
            }
            Err(e) => {
                error!(event = "save_failed", session = %self.name, error = %e, why, "saving the state failed; kept in memory, will retry");
                false
            }
        }
    }

    fn shutdown(&mut self) {
        info!(event = "stopping", session = %self.name, "stopping the session");
        if let Some(r) = self.recovery.take() {
            r.cancel.store(true, Ordering::SeqCst);
            r.join(Duration::from_secs(5));
        }
        if let Some(bot) = self.bot.take() {
            let _ = bot.writer.send(RunnerMessage::Shutdown);
            if bot.child.wait_exit(Duration::from_secs(3)).is_none() {
                bot.child.stop(15, Duration::from_secs(2));
            }
        }
        if let Ok(mut client) = self.client.lock()
            && client.running()
        {
            let how = client.stop();
            info!(session = %self.name, %how, "client stopped");
        }
        for d in self.detectors.drain(..) {
            d.stop();
        }
        if let Some(log) = self.log_detector.take() {
            let cursor = log.cursor.get();
            log.handle.stop();
            if let (Some(path), Some(cursor)) = (&self.session.client_log, cursor) {
                self.state
                    .runtime
                    .log_cursors
                    .insert(path.display().to_string(), cursor);
            }
        }
        if let Some(stall) = self.stall.take() {
            stall.stop();
        }
        self.save_now("shutdown");
        info!(event = "stopped", session = %self.name, generation = self.state.generation, "session stopped and saved");
    }
}

/// The first incident number not used by any recorded incident (ids stay unique across
/// runner restarts, which `update_incident` relies on).
pub(crate) fn next_incident_number(session: &str, state: &SessionState) -> u64 {
    let prefix = format!("{session}-");
    let highest = state
        .crash_history
        .iter()
        .filter_map(|i| i.id.strip_prefix(&prefix)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    highest.max(state.crash_count) + 1
}

fn process_spec(p: &ms11_config::ProcessConfig) -> Option<ProcessSpec> {
    let mut spec = ProcessSpec::from_argv(&p.command)?;
    spec.cwd = p.cwd.clone();
    spec.env = p.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Some(spec)
}
