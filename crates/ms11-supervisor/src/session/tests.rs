//! The loop's rules, data-driven: a script of inputs (exits, signals, bot lines, commands,
//! time passing on a fake clock) against fake children, and the transcript of what the
//! loop did (spawns, signals, events) as a snapshot. Real processes are exercised by the
//! end-to-end tests (`tests/tests/core.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use ms11_process::{ExitEvent, ProcessSpec, StopOutcome};
use ms11_recover::{Applicability, Clock, Outcome, RecoveryCtx, SessionControl, Strategy};
use ms11_state::{
    ChildRecord, DetectorSource, ExitInfo, Incident, IncidentKind, IncidentSubject,
    ResolutionStatus, SessionState,
};

use super::{Input, SessionLoop};
use crate::command::SessionCommand;
use crate::event::{EventKind, SupervisorEvent};
use crate::settings::{ChildSettings, ReadyKind, ReadySettings, SessionSettings};
use crate::spawner::{Spawner, SupervisedChild};
use crate::status::{Health, SessionStatus};

/// Time that only moves when the test (or a backoff sleep) moves it.
struct FakeClock {
    base: Instant,
    elapsed: Mutex<Duration>,
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.base + *self.elapsed.lock().unwrap()
    }
    fn unix(&self) -> f64 {
        1_800_000_000.0 + self.elapsed.lock().unwrap().as_secs_f64()
    }
    fn sleep(&self, duration: Duration, _cancel: &AtomicBool) -> bool {
        *self.elapsed.lock().unwrap() += duration;
        true
    }
}

/// What happened, in order: the loop's events and the fake children's actions.
#[derive(Clone, Default)]
struct Transcript(Arc<Mutex<Vec<String>>>);

impl Transcript {
    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

struct FakeChild {
    pid: u32,
    role: String,
    transcript: Transcript,
    events: Receiver<SupervisorEvent>,
    stdin: Option<Box<dyn Write + Send>>,
    stdout: Option<Box<dyn std::io::Read + Send>>,
}

impl SupervisedChild for FakeChild {
    fn pid(&self) -> u32 {
        self.pid
    }
    fn signal_group(&self, signal: i32) {
        drain(&self.events, &self.transcript);
        self.transcript.push(format!(
            "  signal {signal} to {} (pid {})",
            self.role, self.pid
        ));
    }
    fn record(&self) -> ChildRecord {
        ChildRecord {
            role: self.role.clone(),
            pid: self.pid as i32,
            pgid: self.pid as i32,
            started_at: 0,
            program: "fake".into(),
            ..ChildRecord::default()
        }
    }
    fn take_stdin(&mut self) -> Option<Box<dyn Write + Send>> {
        self.stdin.take()
    }
    fn take_stdout(&mut self) -> Option<Box<dyn std::io::Read + Send>> {
        self.stdout.take()
    }
    fn take_stderr(&mut self) -> Option<Box<dyn std::io::Read + Send>> {
        None
    }
    fn stop_blocking(&self, signal: i32, _grace: Duration) -> StopOutcome {
        self.signal_group(signal);
        StopOutcome::ExitedAfterSignal
    }
    fn wait_exit_blocking(&self, _timeout: Duration) -> bool {
        false
    }
}

/// The bot's ends of its pipes, held by the test.
struct BotPipes {
    to_runner: std::io::PipeWriter,
    from_runner: BufReader<std::io::PipeReader>,
}

#[derive(Clone)]
struct FakeSpawner {
    next_pid: Arc<Mutex<u32>>,
    failures: Arc<Mutex<VecDeque<(String, String)>>>,
    panics: bool,
    transcript: Transcript,
    events: Receiver<SupervisorEvent>,
    bot_pipes: Arc<Mutex<Option<BotPipes>>>,
}

impl Spawner for FakeSpawner {
    fn spawn(
        &mut self,
        _spec: &ProcessSpec,
        role: &str,
        _exits: &Sender<ExitEvent>,
    ) -> Result<Box<dyn SupervisedChild>, String> {
        assert!(!self.panics, "the spawner blew up");
        drain(&self.events, &self.transcript);
        let mut failures = self.failures.lock().unwrap();
        if let Some(index) = failures.iter().position(|(r, _)| r == role) {
            let (_, error) = failures.remove(index).unwrap();
            self.transcript.push(format!("  spawn {role}: {error}"));
            return Err(error);
        }
        let mut next = self.next_pid.lock().unwrap();
        *next += 1;
        let pid = *next;
        self.transcript.push(format!("  spawn {role} as pid {pid}"));
        let (mut stdin, mut stdout) = (None, None);
        if role == "bot" {
            let (runner_reads, bot_writes) = std::io::pipe().unwrap();
            let (bot_reads, runner_writes) = std::io::pipe().unwrap();
            stdout = Some(Box::new(runner_reads) as Box<dyn std::io::Read + Send>);
            stdin = Some(Box::new(runner_writes) as Box<dyn Write + Send>);
            *self.bot_pipes.lock().unwrap() = Some(BotPipes {
                to_runner: bot_writes,
                from_runner: BufReader::new(bot_reads),
            });
        }
        Ok(Box::new(FakeChild {
            pid,
            role: role.to_owned(),
            transcript: self.transcript.clone(),
            events: self.events.clone(),
            stdin,
            stdout,
        }))
    }
}

fn drain(events: &Receiver<SupervisorEvent>, transcript: &Transcript) {
    while let Ok(event) = events.try_recv() {
        if let Some(line) = describe(&event.kind) {
            transcript.push(line);
        }
    }
}

/// One line per event, without times (the snapshot must not move).
fn describe(kind: &EventKind) -> Option<String> {
    Some(match kind {
        EventKind::ChildStarted {
            role, generation, ..
        } => format!("{role} #{generation} started"),
        EventKind::StartFailed { role, error } => format!("{role} failed to start: {error}"),
        EventKind::ChildExited {
            role,
            pid,
            exit,
            expected,
        } => format!(
            "{role} pid {pid} exited ({exit}){}",
            if *expected { ", stopped by us" } else { "" }
        ),
        EventKind::Ready { role, .. } => format!("{role} ready"),
        EventKind::Incident {
            incident,
            kind,
            subject,
            terminal,
            ..
        } => format!(
            "INCIDENT {incident}: {kind} about the {subject}{}",
            if *terminal { ", terminal" } else { "" }
        ),
        EventKind::Evidence { incident, kind } => format!("  {kind} attached to {incident}"),
        EventKind::OwnEffect { kind, reason } => format!("  {kind} ignored: {reason}"),
        EventKind::RecoveryStarted { incident, round } => {
            format!("recovery of {incident} ({round} round)")
        }
        EventKind::RecoveryFinished {
            incident,
            status,
            strategy,
        } => format!(
            "recovery of {incident}: {status}{}",
            strategy
                .as_ref()
                .map(|s| format!(" by {s}"))
                .unwrap_or_default()
        ),
        EventKind::WaitingForPerson { incident } => format!("a person is asked about {incident}"),
        EventKind::Acknowledged { incident } => format!("{incident} acknowledged"),
        EventKind::RetryScheduled { incident, .. } => format!("retry of {incident} scheduled"),
        EventKind::Halted { subject, .. } => format!("automatic recovery of the {subject} halted"),
        EventKind::Saved { .. } => return None,
        EventKind::SaveFailed { error } => format!("save failed: {error}"),
    })
}

struct Harness {
    session: SessionLoop,
    clock: Arc<FakeClock>,
    transcript: Transcript,
    events: Receiver<SupervisorEvent>,
    spawner: FakeSpawner,
    _dir: tempfile::TempDir,
}

/// A bot the fake spawner gives pipes to.
fn bot_settings() -> ChildSettings {
    ChildSettings {
        spec: ProcessSpec::from_argv(&["mybot".to_owned()]).unwrap(),
        stop_signal: 15,
        stop_grace: Duration::from_secs(2),
        wine: None,
    }
}

fn settings() -> SessionSettings {
    let mut settings = SessionSettings::new("main");
    settings.client = Some(ChildSettings {
        spec: ProcessSpec::from_argv(&["swgclient".to_owned()]).unwrap(),
        stop_signal: 15,
        stop_grace: Duration::from_secs(2),
        wine: None,
    });
    settings.ready = ReadySettings {
        kind: ReadyKind::Delay,
        delay: Duration::from_millis(300),
        timeout: Duration::from_secs(20),
        ..ReadySettings::default()
    };
    settings.client_pipeline = ["restart", "relog", "manual"].map(String::from).to_vec();
    settings.recovery.restart.attempts = 2;
    settings.recovery.restart.backoff_base_ms = 200;
    settings.recovery.restart.timeout_secs = 5.0;
    settings.recovery.manual.attempts = 1;
    settings.recovery.manual.timeout_secs = 10.0;
    settings.recovery.notify.desktop_notify = false;
    settings.recovery.retry.base_secs = 30.0;
    settings.recovery.retry.cap_secs = 120.0;
    settings
}

impl Harness {
    fn new(configure: impl FnOnce(&mut SessionSettings)) -> Harness {
        let mut settings = settings();
        configure(&mut settings);
        let dir = tempfile::tempdir().unwrap();
        let store = ms11_persist::open_store(
            dir.path().join("session_state.json"),
            ms11_persist::Backend::Atomic,
            3,
        )
        .unwrap();
        let clock = Arc::new(FakeClock {
            base: Instant::now(),
            elapsed: Mutex::new(Duration::ZERO),
        });
        let state = SessionState::new("main-1", "tatooine", "mos_eisley", clock.unix());
        let transcript = Transcript::default();
        let (events_tx, events) = bounded(4096);
        let spawner = FakeSpawner {
            next_pid: Arc::new(Mutex::new(1000)),
            failures: Arc::default(),
            panics: false,
            transcript: transcript.clone(),
            events: events.clone(),
            bot_pipes: Arc::default(),
        };
        let mut session = SessionLoop::new(
            settings,
            state,
            store,
            Arc::clone(&clock) as Arc<dyn Clock>,
            Box::new(spawner.clone()),
        );
        session.handle(Input::Command(SessionCommand::Subscribe(events_tx)));
        Harness {
            session,
            clock,
            transcript,
            events,
            spawner,
            _dir: dir,
        }
    }

    fn start(&mut self) -> &mut Self {
        self.note("start");
        self.session.start();
        self.settle()
    }

    fn note(&mut self, what: &str) {
        drain(&self.events, &self.transcript);
        self.transcript.push(format!("> {what}"));
    }

    /// Handles what the running job sends until it waits for the loop or has finished.
    fn settle(&mut self) -> &mut Self {
        loop {
            while let Ok(report) = self.session.job_rx.try_recv() {
                self.session.handle(Input::Job(report));
            }
            if self.session.recovery.is_none() || self.job_waits() {
                break;
            }
            let report = self
                .session
                .job_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the recovery job neither asked nor finished");
            self.session.handle(Input::Job(report));
        }
        drain(&self.events, &self.transcript);
        self
    }

    fn job_waits(&self) -> bool {
        let s = &self.session;
        s.ack_waiter.is_some()
            || s.client.has_waiters()
            || s.bot.has_waiters()
            || !s.commands_running.is_empty()
    }

    fn advance(&mut self, by: Duration) -> &mut Self {
        self.note(&format!("{} ms pass", by.as_millis()));
        let end = self.clock.now() + by;
        // Step through every deadline on the way, as the real timer would. A deadline
        // that handling does not move would make the real loop spin: fail, not hang.
        let mut steps = 0;
        while let Some(next) = self.session.next_deadline().filter(|d| *d <= end) {
            steps += 1;
            assert!(
                steps < 100_000,
                "the loop's next deadline does not move: it would spin"
            );
            let now = self.clock.now();
            if next > now {
                *self.clock.elapsed.lock().unwrap() += next - now;
            }
            self.session.handle(Input::Tick);
            self.settle();
        }
        let now = self.clock.now();
        if end > now {
            *self.clock.elapsed.lock().unwrap() += end - now;
        }
        self.session.handle(Input::Tick);
        self.settle()
    }

    fn exit(&mut self, role: &str, pid: u32, code: Option<i32>, signal: Option<i32>) -> &mut Self {
        self.note(&format!("{role} pid {pid} exits"));
        let exit = ExitEvent {
            role: role.to_owned(),
            pid,
            exit: ExitInfo {
                code,
                signal,
                core_dumped: false,
            },
            at: self.clock.now(),
            unix: self.clock.unix(),
        };
        self.session.handle(Input::Exit(exit));
        self.settle()
    }

    fn signal(
        &mut self,
        kind: IncidentKind,
        source: DetectorSource,
        subject: IncidentSubject,
    ) -> &mut Self {
        self.note(&format!("detector: {kind}"));
        let incident = self
            .session
            .ids
            .incident(kind, source, format!("{kind} seen"), self.clock.unix())
            .with_subject(subject);
        self.session.handle(Input::Signal(Box::new(incident)));
        self.settle()
    }

    fn command<T>(&mut self, what: &str, make: impl FnOnce(Sender<T>) -> SessionCommand) -> T {
        self.note(what);
        let (tx, rx) = unbounded();
        self.session.handle(Input::Command(make(tx)));
        self.settle();
        rx.try_recv().expect("commands are answered at once")
    }

    fn status(&mut self) -> SessionStatus {
        let (tx, rx) = unbounded();
        self.session
            .handle(Input::Command(SessionCommand::Status(tx)));
        rx.try_recv().unwrap()
    }

    /// The bot writes a line; the loop handles what the reader makes of it.
    fn bot_says(&mut self, line: &str) -> &mut Self {
        self.note(&format!("bot says {line}"));
        {
            let mut pipes = self.spawner.bot_pipes.lock().unwrap();
            let pipes = pipes.as_mut().expect("a bot runs");
            writeln!(pipes.to_runner, "{line}").unwrap();
        }
        let (generation, events) = self.session.bot.events().expect("the bot's stdout is open");
        let event = events.recv_timeout(Duration::from_secs(5)).unwrap();
        self.session.handle(Input::Bot {
            generation,
            event: Some(event),
        });
        self.settle()
    }

    /// The next message the runner sent to the bot.
    fn bot_hears(&mut self) -> serde_json::Value {
        let mut pipes = self.spawner.bot_pipes.lock().unwrap();
        let pipes = pipes.as_mut().expect("a bot runs");
        let mut line = String::new();
        pipes.from_runner.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    fn transcript(&mut self) -> String {
        drain(&self.events, &self.transcript);
        self.transcript.0.lock().unwrap().join("\n")
    }

    fn incidents(&self) -> Vec<Incident> {
        self.session.state.crash_history.clone()
    }
}

#[test]
fn a_client_exit_relaunches_at_once_with_no_fusion_wait() {
    let mut h = Harness::new(|_| {});
    h.start().advance(Duration::from_millis(300));
    assert_eq!(h.status().health, Health::Healthy);
    let before = h.clock.now();
    h.exit("client", 1001, None, Some(9));
    assert_eq!(
        h.clock.now(),
        before,
        "no time passed between the exit and the spawn"
    );
    h.advance(Duration::from_millis(300));
    insta::assert_snapshot!(h.transcript());
    assert_eq!(h.status().health, Health::Healthy);
}

#[test]
fn later_evidence_of_the_same_crash_is_attached_not_a_new_incident() {
    let mut h = Harness::new(|_| {});
    h.start().advance(Duration::from_millis(300));
    h.exit("client", 1001, None, Some(6));
    h.signal(
        IncidentKind::CrashDump,
        DetectorSource::CrashDump,
        IncidentSubject::Client,
    );
    h.advance(Duration::from_millis(300));
    let incidents = h.incidents();
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    assert_eq!(
        incidents[0].kind,
        IncidentKind::CrashDump,
        "the more specific kind"
    );
    assert_eq!(incidents[0].evidence.len(), 2);
    insta::assert_snapshot!(h.transcript());
}

#[test]
fn signals_of_our_own_restart_never_become_incidents() {
    let mut h = Harness::new(|_| {});
    h.start().advance(Duration::from_millis(300));
    let id = h
        .command("operator: restart", SessionCommand::Restart)
        .unwrap();
    assert_eq!(id, "main-1");
    // The window of the client we are stopping disappears, then it exits.
    h.signal(
        IncidentKind::WindowGone,
        DetectorSource::Window,
        IncidentSubject::Client,
    );
    assert_eq!(
        h.status().health,
        Health::Recovering,
        "status answers during the stop"
    );
    h.exit("client", 1001, Some(0), None);
    h.advance(Duration::from_millis(300));
    assert_eq!(h.incidents().len(), 1);
    insta::assert_snapshot!(h.transcript());
}

#[test]
fn a_client_ignoring_sigterm_is_killed_after_its_grace_while_the_loop_keeps_answering() {
    let mut h = Harness::new(|_| {});
    h.start().advance(Duration::from_millis(300));
    h.command("operator: restart", SessionCommand::Restart)
        .unwrap();
    h.advance(Duration::from_millis(1999));
    let generation = h.command("save", SessionCommand::Save).unwrap();
    assert!(generation > 0);
    assert_eq!(h.status().recovering.as_deref(), Some("main-1"));
    h.advance(Duration::from_millis(1));
    h.exit("client", 1001, None, Some(9));
    h.advance(Duration::from_millis(300));
    insta::assert_snapshot!(h.transcript());
}

#[test]
fn a_terminal_signal_during_a_recovery_stops_its_pipeline_and_escalates() {
    let mut h = Harness::new(|_| {});
    h.start().advance(Duration::from_millis(300));
    h.exit("client", 1001, Some(1), None);
    // While the new client starts, the log says the account is banned.
    h.signal(
        IncidentKind::Banned,
        DetectorSource::LogPattern,
        IncidentSubject::Client,
    );
    let status = h.status();
    assert_eq!(status.health, Health::WaitingForPerson, "{status:?}");
    h.advance(Duration::from_secs(10));
    let status = h.status();
    assert_eq!(status.health, Health::Stopped, "{status:?}");
    assert!(status.summary().contains("stopped"), "{}", status.summary());
    let incidents = h.incidents();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].kind, IncidentKind::Banned);
    assert_eq!(
        incidents[0].resolution.as_ref().map(|r| r.status),
        Some(ResolutionStatus::Terminal)
    );
    insta::assert_snapshot!(h.transcript());
    // A person fixed it: the acknowledgement resumes automatic recovery at once.
    assert_eq!(
        h.command("ack", |reply| SessionCommand::Ack {
            incident: None,
            reply
        })
        .unwrap(),
        "main-1"
    );
    assert_ne!(h.status().health, Health::Stopped);
}

#[test]
fn a_failure_of_the_restarted_client_after_it_was_ready_is_a_new_incident() {
    let mut h = Harness::new(|s| s.fuse_window = Duration::from_millis(250));
    h.start().advance(Duration::from_millis(300));
    h.exit("client", 1001, None, Some(11));
    h.advance(Duration::from_millis(300));
    h.signal(
        IncidentKind::Disconnect,
        DetectorSource::LogPattern,
        IncidentSubject::Client,
    );
    h.advance(Duration::from_millis(250));
    let kinds: Vec<IncidentKind> = h.incidents().iter().map(|i| i.kind).collect();
    assert_eq!(kinds, [IncidentKind::Crash, IncidentKind::Disconnect]);
}

#[test]
fn a_client_that_cannot_start_is_an_incident_retried_until_it_runs() {
    let mut h = Harness::new(|_| {});
    for _ in 0..3 {
        h.spawner
            .failures
            .lock()
            .unwrap()
            .push_back(("client".into(), "Permission denied (os error 13)".into()));
    }
    h.start();
    assert_eq!(
        h.status().client.start_error.as_deref(),
        Some("Permission denied (os error 13)")
    );
    // Two restarts fail the same way; the person is asked and does not answer.
    h.advance(Duration::from_secs(10));
    let status = h.status();
    assert_eq!(status.health, Health::Down, "{status:?}");
    let retry = status.retry.clone().expect("a retry is scheduled");
    assert!((27.0..=30.0).contains(&retry.in_secs), "{retry:?}");
    assert!(
        status.summary().contains("down, retrying in"),
        "{}",
        status.summary()
    );
    // The program is fixed meanwhile: the retry (27 to 30 s later, with jitter) starts it.
    h.advance(Duration::from_secs(31));
    assert_eq!(h.status().health, Health::Healthy);
    assert_eq!(h.session.state.runtime.recovery.retry, None);
    insta::assert_snapshot!(h.transcript());
}

#[test]
fn a_bot_stall_and_a_client_exit_are_two_incidents_each_with_its_own_recovery() {
    let mut h = Harness::new(|s| {
        s.bot = Some(bot_settings());
        s.stall.timeout_ms = 5_000;
    });
    h.start();
    h.bot_says(r#"{"type":"hello","protocol":1,"bot":"test"}"#);
    assert_eq!(h.bot_hears()["type"], "resume");
    h.advance(Duration::from_millis(300));
    // The bot goes quiet; the client dies in the same moment. The stall (a bot signal)
    // never merges into the client's exit: the client is restarted at once, and the
    // stall, queued meanwhile, then restarts the bot.
    h.advance(Duration::from_millis(4700));
    h.exit("client", 1001, None, Some(9));
    h.advance(Duration::from_millis(300));
    h.advance(Duration::from_millis(250));
    h.exit("bot", 1002, None, Some(9));
    h.bot_says(r#"{"type":"hello","protocol":1,"bot":"test"}"#);
    assert_eq!(h.bot_hears()["type"], "resume", "the new bot is resumed");
    let mut incidents = h.incidents();
    incidents.sort_by(|a, b| a.id.cmp(&b.id));
    let kinds: Vec<(IncidentKind, IncidentSubject)> =
        incidents.iter().map(|i| (i.kind, i.subject())).collect();
    assert_eq!(
        kinds,
        [
            (IncidentKind::ProcessExit, IncidentSubject::Client),
            (IncidentKind::Stall, IncidentSubject::Bot),
        ]
    );
    insta::assert_snapshot!(h.transcript());
}

#[test]
fn a_bot_speaking_another_protocol_is_terminal_for_the_bot_not_a_restart_storm() {
    let mut h = Harness::new(|s| {
        s.bot = Some(bot_settings());
    });
    h.start().advance(Duration::from_millis(300));
    h.bot_says(r#"{"type":"hello","protocol":2,"bot":"future"}"#);
    h.exit("bot", 1002, Some(0), None);
    h.advance(Duration::from_secs(10));
    let status = h.status();
    assert_eq!(status.health, Health::Stopped);
    assert!(
        status
            .bot
            .stopped
            .as_deref()
            .is_some_and(|s| s.contains("protocol")),
        "{status:?}"
    );
    assert!(status.client.running, "the client keeps running");
    insta::assert_snapshot!(h.transcript());
}

/// A strategy with a bug.
struct Panics;

impl Strategy for Panics {
    fn name(&self) -> &str {
        "panics"
    }
    fn applies_to(&self, _: &Incident, _: &dyn SessionControl) -> Applicability {
        Applicability::Applies
    }
    fn recover(&mut self, _: &Incident, _: &mut RecoveryCtx<'_>) -> Outcome {
        panic!("index out of bounds in a strategy")
    }
}

#[test]
fn a_panicking_recovery_job_is_recorded_and_retried_on_schedule() {
    let mut h = Harness::new(|s| {
        s.client_pipeline = vec!["panics".into()];
        s.extra_strategies = vec![(
            "panics".into(),
            Arc::new(|| Box::new(Panics) as Box<dyn Strategy>),
        )];
    });
    h.start().advance(Duration::from_millis(300));
    h.exit("client", 1001, Some(1), None);
    let incidents = h.incidents();
    assert_eq!(incidents.len(), 2, "{incidents:#?}");
    let note = incidents[0]
        .resolution
        .as_ref()
        .and_then(|r| r.note.clone())
        .unwrap();
    assert!(note.contains("index out of bounds"), "{note}");
    assert_eq!(incidents[1].kind, IncidentKind::InternalError);
    assert!(h.status().retry.is_some(), "retried on schedule");
}

#[test]
fn a_panicking_session_loop_is_reopened_once_and_a_second_panic_fails() {
    let (_stop_tx, stop_rx) = bounded::<()>(1);
    let (_commands_tx, commands_rx) = bounded(1);
    let mut opened = Vec::new();
    let end = crate::supervise_session(
        |panic| {
            opened.push(panic.map(str::to_owned));
            let mut h = Harness::new(|_| {});
            h.spawner.panics = true;
            let Harness { session, _dir, .. } = h;
            let mut session = session;
            session.spawner = Box::new(FakeSpawner {
                panics: true,
                ..h.spawner
            });
            std::mem::forget(_dir);
            Ok(session)
        },
        &stop_rx,
        &commands_rx,
        Duration::from_secs(60),
    );
    assert_eq!(opened.len(), 2, "reopened once");
    assert_eq!(opened[1].as_deref(), Some("the spawner blew up"));
    match end {
        crate::SupervisedEnd::Failed(why) => assert!(why.contains("panicked twice"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_acknowledged_stall_whose_bot_is_still_silent_is_recovered_at_once() {
    let mut h = Harness::new(|s| {
        s.client = None;
        s.bot = Some(bot_settings());
        s.stall.timeout_ms = 5_000;
        s.recovery.restart_bot.budget = 0; // spent: only a person can be asked
    });
    h.start();
    h.bot_says(r#"{"type":"hello","protocol":1,"bot":"test"}"#);
    h.advance(Duration::from_millis(5250));
    assert_eq!(h.status().health, Health::WaitingForPerson);
    let acked = h.command("ack", |reply| SessionCommand::Ack {
        incident: None,
        reply,
    });
    assert_eq!(acked.unwrap(), "main-1");
    // The person said "go on", but the bot is still silent: it is restarted at once.
    h.advance(Duration::ZERO);
    h.exit("bot", 1001, None, Some(9));
    h.bot_says(r#"{"type":"hello","protocol":1,"bot":"test"}"#);
    assert_eq!(h.status().health, Health::Healthy);
    insta::assert_snapshot!(h.transcript());
}

#[test]
fn an_acknowledged_disconnect_is_relogged_at_once() {
    let mut h = Harness::new(|s| {
        s.bot = Some(bot_settings());
        s.recovery.relog.budget = 0; // spent: only a person can be asked
    });
    h.start();
    h.bot_says(r#"{"type":"hello","protocol":1,"bot":"test"}"#);
    assert_eq!(h.bot_hears()["type"], "resume");
    h.advance(Duration::from_millis(300));
    h.signal(
        IncidentKind::Disconnect,
        DetectorSource::LogPattern,
        IncidentSubject::Client,
    );
    h.advance(Duration::from_millis(250));
    assert_eq!(h.status().health, Health::WaitingForPerson);
    h.command("ack", |reply| SessionCommand::Ack {
        incident: None,
        reply,
    })
    .unwrap();
    h.advance(Duration::ZERO);
    assert_eq!(
        h.bot_hears()["type"],
        "relog",
        "the relog is tried again at once"
    );
    h.bot_says(r#"{"type":"relog_result","ok":true}"#);
    let incident = &h.incidents()[0];
    assert_eq!(
        incident
            .resolution
            .as_ref()
            .and_then(|r| r.strategy.as_deref()),
        Some("relog")
    );
    assert_eq!(h.status().health, Health::Healthy);
}

#[test]
fn a_wine_client_is_stopped_with_its_whole_prefix_before_it_starts_again() {
    let mut h = Harness::new(|s| {
        if let Some(client) = &mut s.client {
            client.wine = Some(crate::settings::WineSettings {
                prefix: "/srv/ms11/prefix-main".into(),
                server: "wineserver".into(),
            });
        }
    });
    h.start().advance(Duration::from_millis(300));
    h.command("operator: restart", SessionCommand::Restart)
        .unwrap();
    h.exit("client", 1001, None, Some(15));
    // winedbg and its dialog live outside the client's process group: the new client
    // starts only once `wineserver -k` has ended the prefix.
    assert!(
        !h.session.client.running(),
        "not restarted before the prefix is gone"
    );
    h.exit("wineserver", 1002, Some(0), None);
    h.advance(Duration::from_millis(300));
    insta::assert_snapshot!(h.transcript());
}

#[test]
fn reconfigure_applies_live_settings_and_answers_what_needs_a_restart() {
    let mut h = Harness::new(|_| {});
    h.start();
    let mut new = settings();
    new.client_pipeline = vec!["relog".into(), "manual".into()];
    new.save_interval = Duration::from_secs(7);
    new.recovery.restart.attempts = 5;
    new.ready.timeout = Duration::from_secs(3);
    new.client = Some(ChildSettings {
        spec: ProcessSpec::from_argv(&["otherclient".to_owned()]).unwrap(),
        stop_signal: 15,
        stop_grace: Duration::from_secs(2),
        wine: None,
    });
    new.client_log = Some("elsewhere.log".into());
    let needs_restart = h.command("reconfigure", |reply| {
        SessionCommand::Reconfigure(Box::new(new), reply)
    });
    assert_eq!(needs_restart, ["client", "client_log"]);
    let s = &h.session.settings;
    assert_eq!(s.client_pipeline, ["relog", "manual"]);
    assert_eq!(s.save_interval, Duration::from_secs(7));
    assert_eq!(s.recovery.restart.attempts, 5);
    assert_eq!(s.ready.timeout, Duration::from_secs(3));
    assert_eq!(
        s.client.as_ref().unwrap().spec.program,
        "swgclient",
        "the running client's command is kept until a restart"
    );
    assert!(s.client_log.is_none());
    assert!(h.session.autosave_at <= h.clock.now() + Duration::from_secs(7));
    // The new pipeline is the one the next incident runs.
    h.exit("client", 1001, Some(1), None);
    let incidents = h.incidents();
    let attempts: Vec<&str> = incidents[0]
        .attempts
        .iter()
        .map(|a| a.strategy.as_str())
        .collect();
    assert!(!attempts.contains(&"restart"), "{attempts:?}");
    // The same settings again: nothing needs a restart.
    let again = h.session.settings.clone();
    let needs_restart = h.command("reconfigure again", |reply| {
        SessionCommand::Reconfigure(Box::new(again), reply)
    });
    assert!(needs_restart.is_empty(), "{needs_restart:?}");
}

#[test]
fn patches_over_the_size_limits_are_refused_and_the_bot_is_told_while_the_saved_state_stays() {
    let mut h = Harness::new(|s| {
        s.bot = Some(bot_settings());
        s.state_limits = ms11_state::StateLimits {
            max_patch_bytes: 1024,
            max_state_bytes: 8 * 1024,
        };
    });
    h.start().advance(Duration::from_millis(300));
    h.bot_says(r#"{"type":"hello","protocol":1,"bot":"b"}"#);
    assert_eq!(h.bot_hears()["type"], "resume");

    // One patch over the patch limit: refused whole, the bot hears why.
    let big = format!(
        r#"{{"type":"state","patch":{{"zone":"theed","notes":"{}"}}}}"#,
        "n".repeat(2000)
    );
    h.bot_says(&big);
    let heard = h.bot_hears();
    assert_eq!(heard["type"], "rejected", "{heard}");
    assert_eq!(heard["of"], "state");
    let reason = heard["reason"].as_str().unwrap();
    assert!(
        reason.contains("the patch") && reason.contains("1024"),
        "{reason}"
    );
    assert_eq!(
        h.session.state.zone, "mos_eisley",
        "nothing of it was applied"
    );

    // Patches within the limit until the state would outgrow its limit.
    let mut accepted = Vec::new();
    let refused = (0..20).find_map(|i| {
        let line = format!(
            r#"{{"type":"state","patch":{{"k{i}":"{}"}}}}"#,
            "v".repeat(800)
        );
        h.bot_says(&line);
        if h.session.state.extra.contains_key(&format!("k{i}")) {
            accepted.push(i);
            None
        } else {
            Some(h.bot_hears())
        }
    });
    let heard = refused.expect("the state limit was reached");
    assert_eq!(heard["type"], "rejected");
    assert!(
        heard["reason"]
            .as_str()
            .unwrap()
            .contains("the session state"),
        "{heard}"
    );
    assert!(!accepted.is_empty());
    // What was accepted is saved, and the saved file loads.
    assert!(h.session.save_now("test"));
    let path = h.session.store.path().to_path_buf();
    let loaded = ms11_persist::StateFiles::new(path)
        .load_read_only()
        .unwrap()
        .unwrap()
        .state;
    for i in accepted {
        assert!(loaded.extra.contains_key(&format!("k{i}")));
    }
}

#[test]
fn a_state_taken_over_by_another_runner_shows_as_saves_failing() {
    let mut h = Harness::new(|_| {});
    h.start().advance(Duration::from_millis(300));
    assert_eq!(h.status().health, Health::Healthy);
    let path = h.session.store.path().to_path_buf();
    let mut lock = path.clone().into_os_string();
    lock.push(".lock");
    // The lock file is deleted and a second runner locks a new one.
    std::fs::remove_file(&lock).unwrap();
    let _second = ms11_persist::open_store(&path, ms11_persist::Backend::Atomic, 3).unwrap();
    assert!(!h.session.save_now("test"));
    let status = h.status();
    assert_eq!(status.health, Health::SavesFailing);
    let error = status.saves_failing.unwrap();
    assert!(error.contains("taken over by another"), "{error}");
}

#[test]
fn a_still_image_is_a_hang_only_while_the_bot_is_working_on_a_task() {
    let mut h = Harness::new(|s| s.bot = Some(bot_settings()));
    h.start();
    h.bot_says(r#"{"type":"hello","protocol":1,"bot":"test"}"#);
    assert_eq!(h.bot_hears()["type"], "resume");
    h.advance(Duration::from_millis(300));
    let frozen = |h: &mut Harness| {
        let mut incident = h.session.ids.incident(
            IncidentKind::NotResponding,
            DetectorSource::Window,
            "the window's image has not changed for 60 s",
            h.clock.unix(),
        );
        incident.pattern = Some("frozen".into());
        h.session.handle(Input::Signal(Box::new(incident)));
        h.settle();
    };
    // Idle between tasks: a still screen is no hang.
    frozen(&mut h);
    h.advance(Duration::from_millis(300));
    assert!(h.incidents().is_empty(), "{:?}", h.incidents());
    // Working on a task: the same still image is a hang.
    h.bot_says(r#"{"type":"task_added","id":"t-1","name":"hunt"}"#);
    h.bot_says(r#"{"type":"task_started","id":"t-1"}"#);
    frozen(&mut h);
    h.advance(Duration::from_millis(300));
    let kinds: Vec<IncidentKind> = h.incidents().iter().map(|i| i.kind).collect();
    assert_eq!(kinds, [IncidentKind::NotResponding]);
}

#[test]
fn a_readiness_wait_past_the_start_up_timeout_never_wakes_the_loop_for_nothing() {
    let mut h = Harness::new(|s| {
        s.client_log = Some("no-such-dir/client.log".into());
        s.ready = ReadySettings {
            kind: ReadyKind::LogLine,
            timeout: Duration::from_secs(1),
            ..ReadySettings::default()
        };
        s.recovery.restart.timeout_secs = 5.0;
    });
    h.start();
    h.exit("client", 1001, Some(1), None);
    // The restart waits up to 5 s for a login line that never comes; the start-up
    // timeout (1 s) passes meanwhile.
    h.advance(Duration::from_millis(1500));
    let now = h.clock.now();
    let next = h.session.next_deadline().expect("a deadline");
    assert!(next > now, "a deadline in the past would spin the loop");
}
