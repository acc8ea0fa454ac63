//! The bot: its child, the agent-protocol link with the exactly-once rules, its
//! heartbeat deadline, and the staged restart `restart-bot` asks for.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use ms11_agent::{
    Action, BotEvent, BotMessage, BotReader, BotWriter, ExactlyOnce, ProtocolMessage, ReaderConfig,
    RunnerMessage,
};
use ms11_detect::{StallConfig, StallTracker};
use ms11_process::{ExitEvent, StdioMode};
use ms11_state::{ChildRecord, DetectorSource, IncidentKind, IncidentSubject};
use tracing::{debug, error, info, warn};

use super::SessionLoop;
use crate::command::Reply;
use crate::event::EventKind;
use crate::settings::ChildSettings;
use crate::spawner::SupervisedChild;
use crate::status::ChildStatus;

/// After SIGKILL, how long a stop waits for the exit before it reports failure.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The running bot and its protocol state.
struct BotLink {
    child: Box<dyn SupervisedChild>,
    reader: BotReader,
    _stderr: Option<BotReader>,
    writer: BotWriter,
    rules: ExactlyOnce,
    hello_seen: bool,
    reader_open: bool,
}

/// The bot of one session.
pub(super) struct BotSlot {
    settings: Option<ChildSettings>,
    pub(super) generation: u64,
    link: Option<BotLink>,
    running: bool,
    stopping: Option<(Instant, Option<Instant>)>,
    expected_exits: HashSet<u32>,
    restart_waiter: Option<(Instant, Reply<Result<String, String>>)>,
    pub(super) pending_relog: Option<(Instant, Reply<Result<(), String>>)>,
    stall: Option<StallTracker>,
    stall_timeout: Option<Duration>,
    start_error: Option<String>,
}

impl BotSlot {
    pub(super) fn new(settings: Option<ChildSettings>, stall: &StallConfig, _now: Instant) -> Self {
        BotSlot {
            settings,
            generation: 0,
            link: None,
            running: false,
            stopping: None,
            expected_exits: HashSet::new(),
            restart_waiter: None,
            pending_relog: None,
            stall: None,
            stall_timeout: (stall.enabled && stall.timeout_ms > 0)
                .then(|| Duration::from_millis(stall.timeout_ms)),
            start_error: None,
        }
    }

    pub(super) fn configured(&self) -> bool {
        self.settings.is_some()
    }

    /// A new stall timeout (a reload): the next bot gets it, and a running bot not
    /// already found silent is watched with it from `now`.
    pub(super) fn set_stall(&mut self, stall: &StallConfig, now: Instant) {
        self.stall_timeout = (stall.enabled && stall.timeout_ms > 0)
            .then(|| Duration::from_millis(stall.timeout_ms));
        let silent = self.stall.as_ref().is_some_and(|s| s.deadline().is_none());
        if self.running && !silent {
            self.stall = self.stall_timeout.map(|t| StallTracker::new(t, now));
        }
    }

    /// The bot said `hello` and may be resumed.
    pub(super) fn connected(&self) -> bool {
        self.running && self.link.as_ref().is_some_and(|l| l.hello_seen)
    }

    /// Connected and not silent past its heartbeat deadline.
    pub(super) fn alive(&self) -> bool {
        self.connected()
            && self
                .stall
                .as_ref()
                .is_none_or(|stall| stall.deadline().is_some())
    }

    /// The protocol events of the current bot, while its stdout is open.
    pub(super) fn events(&self) -> Option<(u64, Receiver<BotEvent>)> {
        self.link
            .as_ref()
            .filter(|l| l.reader_open)
            .map(|l| (self.generation, l.reader.events.clone()))
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        let stop = self
            .stopping
            .map(|(kill_at, give_up)| give_up.unwrap_or(kill_at));
        let restart = self.restart_waiter.as_ref().map(|(d, _)| *d);
        let relog = self.pending_relog.as_ref().map(|(d, _)| *d);
        let stall = self
            .stall
            .as_ref()
            .filter(|_| self.connected())
            .and_then(StallTracker::deadline);
        [stop, restart, relog, stall].into_iter().flatten().min()
    }

    pub(super) fn record(&self) -> Option<ChildRecord> {
        self.link
            .as_ref()
            .filter(|_| self.running)
            .map(|l| l.child.record())
    }

    pub(super) fn status(&self) -> ChildStatus {
        ChildStatus {
            configured: self.configured(),
            running: self.running,
            pid: self
                .link
                .as_ref()
                .filter(|_| self.running)
                .map(|l| l.child.pid()),
            ready: self.connected(),
            start_error: self.start_error.clone(),
            stopped: None,
        }
    }

    /// A job waits for an answer about the bot.
    #[cfg(test)]
    pub(super) fn has_waiters(&self) -> bool {
        self.restart_waiter.is_some() || self.pending_relog.is_some()
    }

    pub(super) fn send(&self, session: &str, message: RunnerMessage) {
        if let Some(link) = &self.link
            && self.running
            && let Err(e) = link.writer.send(message)
        {
            warn!(session, error = %e, "could not send to the bot");
        }
    }

    /// Stops the bot for good (shutdown only: waits).
    pub(super) fn shutdown(&mut self, session: &str) {
        if let Some((_, reply)) = self.restart_waiter.take() {
            let _ = reply.send(Err("the session is stopping".into()));
        }
        let Some(link) = &self.link else { return };
        if !self.running {
            return;
        }
        self.expected_exits.insert(link.child.pid());
        let _ = link.writer.send(RunnerMessage::Shutdown);
        if !link.child.wait_exit_blocking(Duration::from_secs(3)) {
            let how = link.child.stop_blocking(15, Duration::from_secs(2));
            info!(session, how = how.as_str(), "bot stopped");
        }
    }
}

impl Drop for BotSlot {
    fn drop(&mut self) {
        if self.running
            && let Some(link) = &self.link
        {
            link.child.signal_group(9);
        }
    }
}

impl SessionLoop {
    /// Starts a new bot generation now, with its protocol link.
    pub(super) fn start_bot_now(&mut self) -> Result<u32, String> {
        let Some(settings) = self.bot.settings.clone() else {
            return Err("no bot command configured".into());
        };
        if self.bot.running {
            return Err("the bot is already running".into());
        }
        let name = self.settings.name.clone();
        let mut spec = settings.spec.clone();
        spec.stdin = StdioMode::Piped;
        spec.stdout = StdioMode::Piped;
        spec.stderr = StdioMode::Piped;
        let fail = |this: &mut SessionLoop, e: String| {
            error!(event = "start_failed", session = %name, role = "bot", error = %e, "cannot start the bot");
            this.bot.start_error = Some(e.clone());
            this.emit(EventKind::StartFailed {
                role: "bot".into(),
                error: e.clone(),
            });
            Err(e)
        };
        let mut child = match self.spawner.spawn(&spec, "bot", &self.exit_tx) {
            Ok(child) => child,
            Err(e) => return fail(self, e),
        };
        let label = format!("{name}/bot");
        let (Some(stdin), Some(stdout)) = (child.take_stdin(), child.take_stdout()) else {
            child.signal_group(9);
            return fail(self, "the bot's pipes are missing".into());
        };
        let stderr = child.take_stderr().and_then(|e| {
            ms11_agent::spawn_output_reader(e, ReaderConfig::new(format!("{label}/stderr"))).ok()
        });
        let reader = match ms11_agent::spawn_reader(stdout, ReaderConfig::new(label.clone())) {
            Ok(r) => r,
            Err(e) => {
                child.signal_group(9);
                return fail(self, format!("cannot read the bot: {e}"));
            }
        };
        let writer = match ms11_agent::spawn_writer(stdin, label, 256) {
            Ok(w) => w,
            Err(e) => {
                child.signal_group(9);
                return fail(self, format!("cannot write to the bot: {e}"));
            }
        };
        let pid = child.pid();
        let now = self.clock.now();
        self.bot.generation += 1;
        self.bot.running = true;
        self.bot.start_error = None;
        self.bot.link = Some(BotLink {
            child,
            reader,
            _stderr: stderr,
            writer,
            rules: ExactlyOnce::with_limits(self.settings.state_limits),
            hello_seen: false,
            reader_open: true,
        });
        self.bot.stall = self.bot.stall_timeout.map(|t| StallTracker::new(t, now));
        let generation = self.bot.generation;
        info!(event = "bot_started", session = %name, pid, generation, "bot started");
        self.emit(EventKind::ChildStarted {
            role: "bot".into(),
            pid,
            generation,
        });
        self.save_soon();
        Ok(pid)
    }

    /// Starts the bot outside any recovery; a failure to start is an incident.
    pub(super) fn start_bot_or_report(&mut self) {
        if let Err(e) = self.start_bot_now() {
            let incident = self
                .ids
                .incident(
                    IncidentKind::StartFailed,
                    DetectorSource::Other,
                    format!("cannot start the bot: {e}"),
                    self.clock.unix(),
                )
                .with_subject(IncidentSubject::Bot);
            self.on_signal(incident);
        }
    }

    /// `restart-bot`: a staged stop of the current bot, a new one, its `hello`.
    pub(super) fn restart_bot(&mut self, deadline: Instant, reply: Reply<Result<String, String>>) {
        if let Some((_, old)) = self.bot.restart_waiter.replace((deadline, reply)) {
            let _ = old.send(Err("superseded by a newer restart".into()));
        }
        if self.bot.running {
            // A stalled bot is hung: no point in waiting for it to stop politely.
            let hung = self
                .recovery
                .as_ref()
                .is_some_and(|r| r.incident.kind == IncidentKind::Stall);
            self.stop_bot(hung);
            return; // the start follows the exit
        }
        self.start_bot_for_restart();
    }

    fn start_bot_for_restart(&mut self) {
        if let Err(e) = self.start_bot_now()
            && let Some((_, reply)) = self.bot.restart_waiter.take()
        {
            let _ = reply.send(Err(format!("cannot start the bot: {e}")));
        }
    }

    /// Begins a staged stop of the bot: `shutdown` over the protocol, the stop signal,
    /// then SIGKILL after the grace (a hung bot: at once).
    fn stop_bot(&mut self, hung: bool) {
        let Some(link) = &self.bot.link else { return };
        if !self.bot.running || self.bot.stopping.is_some() {
            return;
        }
        let pid = link.child.pid();
        self.bot.expected_exits.insert(pid);
        let (signal, grace) = self
            .bot
            .settings
            .as_ref()
            .map_or((15, Duration::from_secs(2)), |s| {
                (s.stop_signal, s.stop_grace)
            });
        let now = self.clock.now();
        if hung {
            link.child.signal_group(9);
            self.bot.stopping = Some((now, Some(now + KILL_WAIT)));
        } else {
            let _ = link.writer.send(RunnerMessage::Shutdown);
            link.child.signal_group(signal);
            self.bot.stopping = Some((now + grace, None));
        }
        debug!(session = %self.settings.name, pid, hung, "stopping the bot");
    }

    pub(super) fn on_bot_exit(&mut self, exit: ExitEvent) {
        let current = self.bot.link.as_ref().map(|l| l.child.pid()) == Some(exit.pid);
        let expected = self.bot.expected_exits.remove(&exit.pid);
        if !current || !self.bot.running {
            return;
        }
        let name = self.settings.name.clone();
        self.bot.running = false;
        self.bot.stopping = None;
        self.bot.stall = None;
        if let Some(link) = &self.bot.link {
            link.child.signal_group(9);
        }
        if let Some((_, reply)) = self.bot.pending_relog.take() {
            let _ = reply.send(Err("the bot exited".into()));
        }
        self.emit(EventKind::ChildExited {
            role: "bot".into(),
            pid: exit.pid,
            exit: exit.exit.to_string(),
            expected,
        });
        info!(event = "bot_exited", session = %name, pid = exit.pid, exit = %exit.exit, expected, "bot exited");
        self.save_soon();
        if self.bot.restart_waiter.is_some() {
            self.start_bot_for_restart();
            if expected {
                return;
            }
        }
        if expected {
            return;
        }
        let output = self
            .bot
            .link
            .as_ref()
            .map(|l| l.reader.recent_output())
            .unwrap_or_default();
        let mut incident = ms11_detect::incident_for_exit(&self.ids, "bot", exit.exit, exit.unix)
            .with_subject(IncidentSubject::Bot);
        incident.output_tail = output;
        self.on_signal(incident);
    }

    pub(super) fn bot_timers(&mut self, now: Instant) {
        let name = self.settings.name.clone();
        if let Some((kill_at, give_up)) = self.bot.stopping {
            match give_up {
                None if now >= kill_at => {
                    if let Some(link) = &self.bot.link {
                        link.child.signal_group(9);
                    }
                    self.bot.stopping = Some((kill_at, Some(now + KILL_WAIT)));
                }
                Some(give_up) if now >= give_up => {
                    error!(session = %name, "the bot did not exit even after SIGKILL");
                    self.bot.stopping = None;
                    if let Some((_, reply)) = self.bot.restart_waiter.take() {
                        let _ =
                            reply.send(Err("the old bot did not exit even after SIGKILL".into()));
                    }
                }
                _ => {}
            }
        }
        if self
            .bot
            .restart_waiter
            .as_ref()
            .is_some_and(|(d, _)| now >= *d)
            && let Some((_, reply)) = self.bot.restart_waiter.take()
        {
            let _ = reply.send(Err("the bot did not say hello before the deadline".into()));
        }
        if self
            .bot
            .pending_relog
            .as_ref()
            .is_some_and(|(d, _)| now >= *d)
            && let Some((_, reply)) = self.bot.pending_relog.take()
        {
            let _ = reply.send(Err("the bot did not answer the relog in time".into()));
        }
        let connected = self.bot.connected();
        if let Some(stall) = self.bot.stall.as_mut().filter(|_| connected)
            && let Some(silence) = stall.check(now)
        {
            let incident = self
                .ids
                .incident(
                    IncidentKind::Stall,
                    DetectorSource::Stall,
                    format!(
                        "bot: no heartbeat or progress for {:.0} s",
                        silence.as_secs_f64()
                    ),
                    self.clock.unix(),
                )
                .with_subject(IncidentSubject::Bot);
            self.on_signal(incident);
        }
    }

    pub(super) fn on_bot_event(&mut self, generation: u64, event: Option<BotEvent>) {
        if generation != self.bot.generation {
            return;
        }
        match event {
            Some(BotEvent::Message(message)) => self.on_bot_message(&message),
            Some(BotEvent::Ignored(_)) => {}
            Some(BotEvent::Closed(_)) | None => {
                // The exit (from the waiter) decides what happens; stop reading.
                if let Some(link) = &mut self.bot.link {
                    link.reader_open = false;
                }
                debug!(session = %self.settings.name, "the bot closed its stdout");
            }
        }
    }

    fn on_bot_message(&mut self, message: &BotMessage) {
        let now = self.clock.now();
        if let Some(stall) = &mut self.bot.stall {
            stall.beat(now);
        }
        let unix = self.clock.unix();
        let name = self.settings.name.clone();
        let Some(link) = &mut self.bot.link else {
            return;
        };
        let tracked = tracked_patch(&self.settings.tracking, message);
        let message = tracked.as_ref().unwrap_or(message);
        match link.rules.handle(&mut self.state, message, unix) {
            Action::SendResume => {
                link.hello_seen = true;
                info!(event = "bot_ready", session = %name, generation = self.bot.generation, "the bot said hello");
                self.emit(EventKind::Ready {
                    role: "bot".into(),
                    evidence: "hello".into(),
                });
                if let Some((_, reply)) = self.bot.restart_waiter.take() {
                    let _ = reply.send(Ok("the bot said hello".into()));
                }
                self.send_resume();
            }
            Action::SaveThenAck { seq } => {
                let mark = link.rules.change_mark();
                if self.save_now("task checkpoint") {
                    if let Some(link) = &mut self.bot.link {
                        link.rules.saved(mark);
                    }
                    if let BotMessage::TaskDone { id, .. } = message {
                        info!(event = "task_done", session = %name, task = %id, seq, done = self.state.count_tasks(ms11_state::TaskState::Done), "task done and saved");
                    }
                    self.bot.send(&name, RunnerMessage::Ack { seq });
                }
            }
            Action::Ack { seq } => self.bot.send(&name, RunnerMessage::Ack { seq }),
            Action::Save => {
                let mark = link.rules.change_mark();
                if self.save_now("task started")
                    && let Some(link) = &mut self.bot.link
                {
                    link.rules.saved(mark);
                }
            }
            Action::StateChanged { .. } => {}
            Action::Resync { reason } => {
                warn!(session = %name, %reason, "resynchronising the bot");
                self.send_resume();
            }
            Action::Log { level, msg } => level.emit(&name, &msg),
            Action::RelogResult { ok, reason } => {
                if let Some((_, reply)) = self.bot.pending_relog.take() {
                    let _ = reply.send(if ok {
                        Ok(())
                    } else {
                        Err(reason.unwrap_or_else(|| "relog failed".into()))
                    });
                }
            }
            Action::Incompatible(e) => {
                error!(session = %name, error = %e, "the bot speaks an incompatible protocol; shutting it down");
                self.stop_bot(false);
                let incident = self
                    .ids
                    .incident(
                        IncidentKind::ProtocolMismatch,
                        DetectorSource::Agent,
                        format!("bot: {e}"),
                        unix,
                    )
                    .with_subject(IncidentSubject::Bot);
                self.on_signal(incident);
            }
            Action::Rejected { reason } => {
                // Already logged by the rules; the bot is told too, so that it does not
                // believe the refused change was kept.
                self.bot.send(
                    &name,
                    RunnerMessage::Rejected {
                        of: message.type_name().to_owned(),
                        reason,
                    },
                );
            }
            Action::Beat | Action::None => {}
        }
    }

    /// Sends `resume` for the saved state (the bot continues exactly where it was).
    pub(super) fn send_resume(&mut self) {
        let Some(link) = &self.bot.link else { return };
        if !link.hello_seen {
            return;
        }
        let message = link.rules.resume(&self.state);
        if let RunnerMessage::Resume { rerun, .. } = &message {
            info!(event = "resume", session = %self.settings.name, rerun = ?rerun, queue = self.state.task_queue().len(), "bot resumed from the saved state");
        }
        self.bot.send(&self.settings.name, message);
    }

    /// `relog` through the bot: answered by its `relog_result`, its exit or the deadline.
    pub(super) fn relog_through_bot(
        &mut self,
        deadline: Instant,
        reply: Reply<Result<(), String>>,
    ) {
        if !self.bot.connected() {
            let _ = reply.send(Err("no bot is connected to relog".into()));
            return;
        }
        if let Some((_, old)) = self.bot.pending_relog.replace((deadline, reply)) {
            let _ = old.send(Err("superseded by a newer relog".into()));
        }
        info!(event = "relog", session = %self.settings.name, "asking the bot to log in again");
        self.bot.send(&self.settings.name, RunnerMessage::Relog);
    }

    /// Forgets the reply a cancelled `restart-bot` waits for.
    pub(super) fn drop_bot_restart_waiter(&mut self) {
        self.bot.restart_waiter = None;
    }

    /// Whether a bot signal is an effect of our own action, and why.
    pub(super) fn bot_own_effect(&self, incident: &ms11_state::Incident) -> Option<String> {
        if incident.terminal {
            return None;
        }
        if self.bot.stopping.is_some() {
            return Some("the bot is being stopped by the runner".into());
        }
        if incident.kind == IncidentKind::Stall && !self.bot.running {
            return Some("the bot is not running".into());
        }
        None
    }
}

/// A `state` patch without the fields the session does not track (`session_tracking`);
/// `None` when the message goes through as it is.
fn tracked_patch(tracking: &crate::settings::Tracking, message: &BotMessage) -> Option<BotMessage> {
    let BotMessage::State { patch } = message else {
        return None;
    };
    if tracking.tracks_everything() {
        return None;
    }
    let dropped: Vec<&str> = patch
        .keys()
        .filter(|k| !tracking.tracks(k))
        .map(String::as_str)
        .collect();
    if dropped.is_empty() {
        return None;
    }
    debug!(fields = ?dropped, "state patch fields not tracked (session_tracking); dropped");
    Some(BotMessage::State {
        patch: patch
            .iter()
            .filter(|(k, _)| tracking.tracks(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

#[cfg(test)]
mod tracking_tests {
    use super::*;
    use crate::settings::Tracking;

    fn patch() -> BotMessage {
        let serde_json::Value::Object(patch) =
            serde_json::json!({"planet": "naboo", "xp_current": 5, "mood": "calm"})
        else {
            unreachable!()
        };
        BotMessage::State { patch }
    }

    fn fields(message: Option<BotMessage>) -> Vec<String> {
        match message.unwrap_or_else(patch) {
            BotMessage::State { patch } => patch.keys().cloned().collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn untracked_fields_of_a_patch_are_dropped_and_tracking_off_drops_all() {
        assert_eq!(
            fields(tracked_patch(&Tracking::default(), &patch())),
            ["mood", "planet", "xp_current"]
        );
        let no_xp = Tracking {
            off: false,
            untracked: ["xp_current".to_owned()].into(),
        };
        assert_eq!(fields(tracked_patch(&no_xp, &patch())), ["mood", "planet"]);
        let off = Tracking {
            off: true,
            untracked: Default::default(),
        };
        assert!(fields(tracked_patch(&off, &patch())).is_empty());
        assert!(tracked_patch(&off, &BotMessage::Heartbeat).is_none());
    }
}
