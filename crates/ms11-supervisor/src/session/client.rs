//! The game client: its child, its generations, staged stops driven by the loop's
//! timers (never a blocking wait), and its readiness check.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ms11_agent::{BotReader, ReaderConfig};
use ms11_process::{ExitEvent, StdioMode};
use ms11_state::{ChildRecord, DetectorSource, IncidentKind, IncidentSubject};
use tracing::{debug, error, info, warn};

use super::SessionLoop;
use crate::command::Reply;
use crate::event::EventKind;
use crate::readiness::ReadinessCheck;
use crate::settings::ChildSettings;
use crate::spawner::SupervisedChild;
use crate::status::ChildStatus;

/// After SIGKILL, how long a stop waits for the exit before it reports failure.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long `wineserver -k` may take to end a prefix.
const PREFIX_KILL_WAIT: Duration = Duration::from_secs(10);

/// `wineserver -k` for a prefix: ends every process of that Wine prefix.
fn wineserver_kill(wine: &crate::settings::WineSettings) -> ms11_process::ProcessSpec {
    ms11_process::ProcessSpec {
        program: wine.server.clone(),
        args: vec!["-k".into()],
        env: vec![("WINEPREFIX".into(), wine.prefix.display().to_string())],
        ..ms11_process::ProcessSpec::default()
    }
}

/// A staged stop in progress.
struct Stopping {
    pid: u32,
    kill_at: Instant,
    give_up_at: Option<Instant>,
    waiters: Vec<Reply<Result<String, String>>>,
}

/// The client process of one session.
pub(super) struct ClientSlot {
    settings: Option<ChildSettings>,
    /// Starts so far in this run; signals are keyed by it.
    pub(super) generation: u64,
    child: Option<Box<dyn SupervisedChild>>,
    running: bool,
    /// Unix time the current generation was started.
    pub(super) started_unix: f64,
    /// Evidence of readiness of the current generation.
    pub(super) ready: Option<String>,
    readiness: Option<ReadinessCheck>,
    readiness_gives_up: Option<Instant>,
    ready_waiters: Vec<(Instant, Reply<Result<String, String>>)>,
    stopping: Option<Stopping>,
    expected_exits: HashSet<u32>,
    pub(super) start_error: Option<String>,
    output: Vec<BotReader>,
    /// `wineserver -k` ending the client's Wine prefix, with when to give up on it.
    prefix_kill: Option<(Box<dyn SupervisedChild>, Instant)>,
    /// Stops that wait for the prefix to be gone.
    prefix_waiters: Vec<Reply<Result<String, String>>>,
}

impl ClientSlot {
    pub(super) fn new(settings: Option<ChildSettings>) -> Self {
        ClientSlot {
            settings,
            generation: 0,
            child: None,
            running: false,
            started_unix: 0.0,
            ready: None,
            readiness: None,
            readiness_gives_up: None,
            ready_waiters: Vec::new(),
            stopping: None,
            expected_exits: HashSet::new(),
            start_error: None,
            output: Vec::new(),
            prefix_kill: None,
            prefix_waiters: Vec::new(),
        }
    }

    pub(super) fn configured(&self) -> bool {
        self.settings.is_some()
    }

    pub(super) fn running(&self) -> bool {
        self.running
    }

    /// A stop we ordered is under way.
    pub(super) fn stopping(&self) -> bool {
        self.stopping.is_some()
    }

    fn pid(&self) -> Option<u32> {
        self.child
            .as_ref()
            .filter(|_| self.running)
            .map(|c| c.pid())
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        let stop = self
            .stopping
            .as_ref()
            .map(|s| s.give_up_at.unwrap_or(s.kill_at));
        let readiness = self.readiness.as_ref().map(ReadinessCheck::due);
        let prefix = self.prefix_kill.as_ref().map(|(_, give_up)| *give_up);
        let waiters = self.ready_waiters.iter().map(|(d, _)| *d).min();
        [
            stop,
            readiness,
            waiters,
            prefix,
            // The start-up timeout only ends a check nobody waits for (a waiting job has
            // its own deadline); a past one here would wake the loop for nothing.
            self.readiness_gives_up
                .filter(|_| self.readiness.is_some() && self.ready_waiters.is_empty()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(super) fn record(&self) -> Option<ChildRecord> {
        self.child
            .as_ref()
            .filter(|_| self.running)
            .map(|c| c.record())
    }

    pub(super) fn status(&self) -> ChildStatus {
        ChildStatus {
            configured: self.configured(),
            running: self.running,
            pid: self.pid(),
            ready: self.running && self.ready.is_some(),
            start_error: self.start_error.clone(),
            stopped: None,
        }
    }

    pub(super) fn output_tail(&self) -> Vec<String> {
        self.output
            .iter()
            .flat_map(BotReader::recent_output)
            .collect()
    }

    /// A job waits for an answer about the client.
    #[cfg(test)]
    pub(super) fn has_waiters(&self) -> bool {
        !self.ready_waiters.is_empty()
            || !self.prefix_waiters.is_empty()
            || self
                .stopping
                .as_ref()
                .is_some_and(|s| !s.waiters.is_empty())
    }

    /// Stops the client for good (shutdown only: waits).
    pub(super) fn shutdown(
        &mut self,
        session: &str,
        spawner: &mut dyn crate::spawner::Spawner,
        exits: &crossbeam_channel::Sender<ms11_process::ExitEvent>,
    ) {
        if let (Some(child), Some(settings)) = (&self.child, &self.settings)
            && self.running
        {
            self.expected_exits.insert(child.pid());
            let how = child.stop_blocking(settings.stop_signal, settings.stop_grace);
            info!(session, how = how.as_str(), "client stopped");
        }
        if let Some(wine) = self.settings.as_ref().and_then(|s| s.wine.clone()) {
            match spawner.spawn(&wineserver_kill(&wine), "wineserver", exits) {
                Ok(kill) => {
                    if !kill.wait_exit_blocking(PREFIX_KILL_WAIT) {
                        warn!(session, prefix = %wine.prefix.display(), "`wineserver -k` did not finish in time");
                    }
                }
                Err(e) => warn!(session, error = %e, "cannot run `wineserver -k`"),
            }
        }
        for (_, waiter) in self.ready_waiters.drain(..) {
            let _ = waiter.send(Err("the session is stopping".into()));
        }
    }
}

impl Drop for ClientSlot {
    /// A loop that unwinds (a panic) leaves no client behind: the runner reopens the
    /// session and starts a new one.
    fn drop(&mut self) {
        if self.running
            && let Some(child) = &self.child
        {
            child.signal_group(9);
        }
    }
}

impl SessionLoop {
    /// Starts a new client generation now. A failure is recorded on the slot (for
    /// `status`) and returned; the caller decides whether it is an incident.
    pub(super) fn start_client_now(&mut self) -> Result<u32, String> {
        let Some(settings) = self.client.settings.clone() else {
            return Err("no client command configured".into());
        };
        if self.client.running {
            return Err("the client is already running".into());
        }
        let log_offset = self
            .settings
            .client_log
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        let mut spec = settings.spec.clone();
        spec.stdout = StdioMode::Piped;
        spec.stderr = StdioMode::Piped;
        let name = self.settings.name.clone();
        let mut child = match self.spawner.spawn(&spec, "client", &self.exit_tx) {
            Ok(child) => child,
            Err(e) => {
                error!(event = "start_failed", session = %name, role = "client", error = %e, "cannot start the client");
                self.client.start_error = Some(e.clone());
                self.emit(EventKind::StartFailed {
                    role: "client".into(),
                    error: e.clone(),
                });
                return Err(e);
            }
        };
        let now = self.clock.now();
        let pid = child.pid();
        let label = format!("{name}/client");
        self.client.output.clear();
        for stream in [child.take_stdout(), child.take_stderr()]
            .into_iter()
            .flatten()
        {
            if let Ok(reader) =
                ms11_agent::spawn_output_reader(stream, ReaderConfig::new(label.clone()))
            {
                self.client.output.push(reader);
            }
        }
        let client = &mut self.client;
        client.generation += 1;
        client.child = Some(child);
        client.running = true;
        client.started_unix = self.clock.unix();
        client.ready = None;
        client.start_error = None;
        client.readiness_gives_up = Some(now + self.settings.ready.timeout);
        client.readiness = match ReadinessCheck::new(
            &self.settings.ready,
            self.settings.client_log.as_deref(),
            log_offset,
            now,
        ) {
            Ok(check) => Some(check),
            Err(e) => {
                warn!(session = %name, error = %e, "no readiness check: the client counts as ready once started");
                client.ready = Some(format!("started ({e})"));
                None
            }
        };
        let generation = client.generation;
        info!(event = "client_started", session = %name, pid, generation, "client started");
        self.emit(EventKind::ChildStarted {
            role: "client".into(),
            pid,
            generation,
        });
        self.save_soon();
        Ok(pid)
    }

    /// Begins a staged stop; `reply` gets how it ended. Never waits.
    pub(super) fn stop_client(&mut self, reply: Reply<Result<String, String>>) {
        let Some(reply) = self.defer_stop_for_screenshot(reply) else {
            return; // the incident's screenshot first: a crash dialog must be on it
        };
        if let Some(stopping) = &mut self.client.stopping {
            stopping.waiters.push(reply);
            return;
        }
        let (Some(child), Some(settings)) = (&self.client.child, self.client.settings.clone())
        else {
            let _ = reply.send(Ok("no client was running".into()));
            return;
        };
        if !self.client.running {
            child.signal_group(9); // grandchildren may remain in the group
            self.end_wine_prefix();
            if self.client.prefix_kill.is_some() {
                self.client.prefix_waiters.push(reply);
            } else {
                let _ = reply.send(Ok("already exited".into()));
            }
            return;
        }
        let pid = child.pid();
        self.client.expected_exits.insert(pid);
        child.signal_group(settings.stop_signal);
        self.end_wine_prefix();
        info!(event = "client_stopping", session = %self.settings.name, pid, signal = settings.stop_signal, grace_ms = settings.stop_grace.as_millis() as u64, "stopping the client");
        self.client.stopping = Some(Stopping {
            pid,
            kill_at: self.clock.now() + settings.stop_grace,
            give_up_at: None,
            waiters: vec![reply],
        });
    }

    /// Answers when the current generation is ready, exits, or `deadline` passes.
    pub(super) fn wait_client_ready(
        &mut self,
        deadline: Instant,
        reply: Reply<Result<String, String>>,
    ) {
        if !self.client.running {
            let _ = reply.send(Err("the client is not running".into()));
            return;
        }
        if let Some(evidence) = &self.client.ready {
            let _ = reply.send(Ok(evidence.clone()));
            return;
        }
        if self.client.readiness.is_none() {
            let _ = reply.send(Err("the client's readiness check gave up".into()));
            return;
        }
        self.client.ready_waiters.push((deadline, reply));
    }

    pub(super) fn on_client_exit(&mut self, exit: ExitEvent) {
        let current = self.client.child.as_ref().map(|c| c.pid()) == Some(exit.pid);
        let expected = self.client.expected_exits.remove(&exit.pid);
        if !current || !self.client.running {
            return; // an older generation's late report
        }
        let name = self.settings.name.clone();
        self.client.running = false;
        if let Some(child) = &self.client.child {
            child.signal_group(9); // helpers left in its process group
        }
        self.client.readiness = None;
        self.emit(EventKind::ChildExited {
            role: "client".into(),
            pid: exit.pid,
            exit: exit.exit.to_string(),
            expected,
        });
        if let Some(stopping) = self.client.stopping.take() {
            let how = if stopping.give_up_at.is_some() {
                "killed after the grace period"
            } else {
                "exited after the stop signal"
            };
            if self.client.prefix_kill.is_some() {
                // The stop is done when the whole Wine prefix is gone.
                self.client.prefix_waiters.extend(stopping.waiters);
            } else {
                for waiter in stopping.waiters {
                    let _ = waiter.send(Ok(how.to_owned()));
                }
            }
        }
        let why = format!("the client exited during start-up ({})", exit.exit);
        for (_, waiter) in self.client.ready_waiters.drain(..) {
            let _ = waiter.send(Err(why.clone()));
        }
        self.save_soon();
        if expected {
            info!(event = "client_exited", session = %name, pid = exit.pid, exit = %exit.exit, expected, "client exited (stopped by us)");
            return;
        }
        info!(event = "client_exited", session = %name, pid = exit.pid, exit = %exit.exit, expected, "client exited");
        // Whatever it left in its Wine prefix (winedbg, conhost, helpers) goes too.
        self.end_wine_prefix();
        let mut incident =
            ms11_detect::incident_for_exit(&self.ids, "client", exit.exit, exit.unix)
                .with_subject(IncidentSubject::Client);
        incident.output_tail = self.client.output_tail();
        self.on_signal(incident);
    }

    /// Runs `wineserver -k` for the client's prefix (once at a time).
    fn end_wine_prefix(&mut self) {
        let Some(wine) = self.client.settings.as_ref().and_then(|s| s.wine.clone()) else {
            return;
        };
        if self.client.prefix_kill.is_some() {
            return;
        }
        match self
            .spawner
            .spawn(&wineserver_kill(&wine), "wineserver", &self.exit_tx)
        {
            Ok(kill) => {
                info!(event = "wine_prefix_stopping", session = %self.settings.name, prefix = %wine.prefix.display(), "ending everything in the client's Wine prefix");
                self.client.prefix_kill = Some((kill, self.clock.now() + PREFIX_KILL_WAIT));
            }
            Err(e) => {
                warn!(session = %self.settings.name, error = %e, "cannot run `wineserver -k`; only the client's process group is stopped");
            }
        }
    }

    /// `wineserver -k` ended (or was given up on): stops waiting for it answer.
    pub(super) fn on_wine_prefix_ended(&mut self, pid: u32, how: &str) -> bool {
        if self.client.prefix_kill.as_ref().map(|(c, _)| c.pid()) != Some(pid) {
            return false;
        }
        self.client.prefix_kill = None;
        debug!(session = %self.settings.name, how, "the client's Wine prefix has ended");
        if self.client.stopping.is_none() {
            for waiter in self.client.prefix_waiters.drain(..) {
                let _ = waiter.send(Ok(format!("stopped with its Wine prefix ({how})")));
            }
        }
        true
    }

    pub(super) fn client_timers(&mut self, now: Instant) {
        let name = self.settings.name.clone();
        if let Some((kill, give_up)) = &self.client.prefix_kill
            && now >= *give_up
        {
            warn!(session = %name, "`wineserver -k` did not finish in time; going on");
            kill.signal_group(9);
            let pid = kill.pid();
            self.on_wine_prefix_ended(pid, "timed out");
        }
        if let Some(stopping) = &mut self.client.stopping {
            match stopping.give_up_at {
                None if now >= stopping.kill_at => {
                    warn!(session = %name, pid = stopping.pid, "the client did not stop within its grace period; killing its process group");
                    if let Some(child) = &self.client.child {
                        child.signal_group(9);
                    }
                    stopping.give_up_at = Some(now + KILL_WAIT);
                }
                Some(give_up) if now >= give_up => {
                    error!(session = %name, pid = stopping.pid, "the client did not exit even after SIGKILL");
                    if let Some(stopping) = self.client.stopping.take() {
                        for waiter in stopping.waiters {
                            let _ = waiter
                                .send(Err("the client did not exit even after SIGKILL".into()));
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(check) = &mut self.client.readiness
            && now >= check.due()
        {
            match check.poll(now) {
                Ok(Some(evidence)) => {
                    self.client.readiness = None;
                    self.client_ready(evidence);
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(session = %name, error = %e, "the readiness check failed");
                    self.client.readiness = None;
                    for (_, waiter) in self.client.ready_waiters.drain(..) {
                        let _ = waiter.send(Err(e.clone()));
                    }
                }
            }
        }
        if self.client.readiness.is_some()
            && self.client.ready_waiters.is_empty()
            && self.client.readiness_gives_up.is_some_and(|at| now >= at)
        {
            let what = self.client.readiness.as_ref().map(ReadinessCheck::describe);
            warn!(session = %name, waiting_for = ?what, timeout_s = self.settings.ready.timeout.as_secs_f64(), "the client is not ready after the start-up timeout; the readiness check stops");
            self.client.readiness = None;
        }
        let mut index = 0;
        while index < self.client.ready_waiters.len() {
            if now >= self.client.ready_waiters[index].0 {
                let (_, waiter) = self.client.ready_waiters.remove(index);
                let what = self
                    .client
                    .readiness
                    .as_ref()
                    .map_or_else(|| "readiness".to_owned(), ReadinessCheck::describe);
                let _ = waiter.send(Err(format!(
                    "not ready within the deadline (waiting for {what})"
                )));
            } else {
                index += 1;
            }
        }
    }

    fn client_ready(&mut self, evidence: String) {
        let name = self.settings.name.clone();
        info!(event = "client_ready", session = %name, generation = self.client.generation, evidence = %evidence, "client ready");
        self.client.ready = Some(evidence.clone());
        for (_, waiter) in self.client.ready_waiters.drain(..) {
            let _ = waiter.send(Ok(evidence.clone()));
        }
        self.emit(EventKind::Ready {
            role: "client".into(),
            evidence,
        });
        // The client runs: a retry scheduled for it is moot.
        let recovering_client = self
            .recovery
            .as_ref()
            .is_some_and(|r| r.subject == IncidentSubject::Client);
        if !recovering_client && self.state.runtime.recovery.retry.take().is_some() {
            info!(event = "retry_cleared", session = %name, "the client is up again; no more retries");
            self.save_soon();
        }
    }

    /// Starts the client outside any recovery (session start, retry); a failure to start
    /// is an incident like any other.
    pub(super) fn start_client_or_report(&mut self) {
        if let Err(e) = self.start_client_now() {
            let incident = self
                .ids
                .incident(
                    IncidentKind::StartFailed,
                    DetectorSource::Other,
                    format!("cannot start the client: {e}"),
                    self.clock.unix(),
                )
                .with_subject(IncidentSubject::Client);
            self.on_signal(incident);
        }
    }

    /// Forgets the replies a cancelled job waits for (the stop itself goes on).
    pub(super) fn drop_client_waiters(&mut self) {
        self.client.ready_waiters.clear();
        self.client.prefix_waiters.clear();
        if let Some(stopping) = &mut self.client.stopping {
            stopping.waiters.clear();
        }
    }

    /// Whether a client signal is an effect of our own action, and why.
    pub(super) fn client_own_effect(&self, incident: &ms11_state::Incident) -> Option<String> {
        if incident.terminal || incident.kind == IncidentKind::Operator {
            return None;
        }
        if self.client.stopping() {
            return Some("the client is being stopped by the runner".into());
        }
        // A still image is a hang only while the bot says it is working: at a login
        // screen or between tasks a client may well draw nothing new.
        if incident.kind == IncidentKind::NotResponding
            && incident.pattern.as_deref() == Some("frozen")
            && self.bot.configured()
            && !(self.bot.connected()
                && self.state.count_tasks(ms11_state::TaskState::InFlight) > 0)
        {
            return Some(
                "the window's image is still, but the bot is not working on a task".into(),
            );
        }
        if incident.source != DetectorSource::ProcessExit
            && self.client.generation > 0
            && incident.detected_at() < self.client.started_unix
        {
            return Some("seen before the current client was started (the replaced client)".into());
        }
        if matches!(
            incident.kind,
            IncidentKind::WindowGone | IncidentKind::NotResponding
        ) && !self.client.running
        {
            return Some("the client is not running: its window is gone with it".into());
        }
        None
    }
}
