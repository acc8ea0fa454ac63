//! The game client slot: its spec, the running child, staged stops whose exits are
//! expected (not incidents), and readiness checks. Shared by the session loop and the
//! recovery worker.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use ms11_config::{ReadyConfig, ReadyKind};
use ms11_process::{ExitEvent, ManagedChild, ProcessSpec, StdioMode};
use regex::Regex;

/// The client process of one session.
pub struct ClientSlot {
    pub(crate) session: String,
    spec: Option<ProcessSpec>,
    child: Option<ManagedChild>,
    exit_tx: Sender<ExitEvent>,
    expected_exits: HashSet<u32>,
    stop_signal: i32,
    grace: Duration,
    log: Option<PathBuf>,
    log_offset_at_start: u64,
    started_unix: f64,
    ready: ReadyConfig,
    output: Vec<ms11_agent::BotReader>,
}

impl ClientSlot {
    /// A slot for `spec` (None: the session has no client to run).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        session: &str,
        spec: Option<ProcessSpec>,
        exit_tx: Sender<ExitEvent>,
        stop_signal: i32,
        grace: Duration,
        log: Option<PathBuf>,
        ready: ReadyConfig,
    ) -> Self {
        ClientSlot {
            session: session.to_owned(),
            spec,
            child: None,
            exit_tx,
            expected_exits: HashSet::new(),
            stop_signal,
            grace,
            log,
            log_offset_at_start: 0,
            started_unix: 0.0,
            ready,
            output: Vec::new(),
        }
    }

    /// Whether there is a client to run at all.
    pub fn configured(&self) -> bool {
        self.spec.is_some()
    }

    /// Whether the client runs now.
    pub fn running(&self) -> bool {
        self.child.as_ref().is_some_and(ManagedChild::is_running)
    }

    /// Unix time the current client was started (0 if never).
    pub fn started_unix(&self) -> f64 {
        self.started_unix
    }

    /// Its pid, when running.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .as_ref()
            .filter(|c| c.is_running())
            .map(ManagedChild::pid)
    }

    /// The record to persist.
    pub fn record(&self) -> Option<ms11_state::ChildRecord> {
        self.child
            .as_ref()
            .filter(|c| c.is_running())
            .map(ManagedChild::record)
    }

    /// Whether an exit of `pid` was caused on purpose (and forgets it).
    pub fn take_expected_exit(&mut self, pid: u32) -> bool {
        self.expected_exits.remove(&pid)
    }

    /// The last lines the client printed.
    pub fn output_tail(&self) -> Vec<String> {
        self.output
            .iter()
            .flat_map(ms11_agent::BotReader::recent_output)
            .collect()
    }

    /// Starts the client.
    pub fn start(&mut self) -> Result<u32, String> {
        let Some(spec) = &self.spec else {
            return Err("no client command configured".into());
        };
        if self.running() {
            return Err("the client is already running".into());
        }
        self.log_offset_at_start = self
            .log
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        let mut spec = spec.clone();
        spec.stdout = StdioMode::Piped;
        spec.stderr = StdioMode::Piped;
        let mut child = ManagedChild::spawn(&spec, "client", self.exit_tx.clone())
            .map_err(|e| e.to_string())?;
        self.output.clear();
        let label = format!("{}/client", self.session);
        if let Some(out) = child.take_stdout()
            && let Ok(reader) =
                ms11_agent::spawn_output_reader(out, ms11_agent::ReaderConfig::new(label.clone()))
        {
            self.output.push(reader);
        }
        if let Some(err) = child.take_stderr()
            && let Ok(reader) =
                ms11_agent::spawn_output_reader(err, ms11_agent::ReaderConfig::new(label))
        {
            self.output.push(reader);
        }
        let pid = child.pid();
        self.started_unix = crate::unix_now();
        self.child = Some(child);
        Ok(pid)
    }

    /// Stops the client in stages; its exit is expected, not an incident.
    pub fn stop(&mut self) -> String {
        let Some(child) = &self.child else {
            return "no client was running".into();
        };
        if child.is_running() {
            self.expected_exits.insert(child.pid());
        }
        let outcome = child.stop(self.stop_signal, self.grace);
        outcome.as_str().to_owned()
    }

    /// What readiness waits for, and from where.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            ready: self.ready.clone(),
            log: self.log.clone(),
            offset: self.log_offset_at_start,
            started: Instant::now(),
        }
    }

    /// How the current client ended, if it has.
    pub fn exit_status(&self) -> Option<ms11_state::ExitInfo> {
        self.child.as_ref().and_then(ManagedChild::exit_info)
    }
}

/// A readiness check of a just-started client, taken out of the slot so waiting does
/// not hold its lock.
pub struct Readiness {
    ready: ReadyConfig,
    log: Option<PathBuf>,
    offset: u64,
    started: Instant,
}

impl Readiness {
    /// Checks once; `Ok(Some(evidence))` when ready.
    pub fn poll(&self, last_read: &mut u64, buffer: &mut String) -> Result<Option<String>, String> {
        match self.ready.kind {
            ReadyKind::Delay => {
                let elapsed = self.started.elapsed();
                Ok((elapsed >= Duration::from_millis(self.ready.delay_ms))
                    .then(|| format!("{} ms passed", self.ready.delay_ms)))
            }
            ReadyKind::LogLine | ReadyKind::Window => {
                // Window readiness uses the title text against the log too when no probe
                // result is available; the window probe reports a missing window anyway.
                let Some(path) = &self.log else {
                    return Err("no client_log to watch for readiness".into());
                };
                let regex =
                    Regex::new(&self.ready.pattern).map_err(|e| format!("ready.pattern: {e}"))?;
                let Ok(mut file) = std::fs::File::open(path) else {
                    return Ok(None);
                };
                let start = (*last_read).max(self.offset);
                let len = file.metadata().map_or(0, |m| m.len());
                if len < start {
                    *last_read = 0; // truncated: read from the start
                    return Ok(None);
                }
                file.seek(SeekFrom::Start(start))
                    .map_err(|e| e.to_string())?;
                let mut chunk = Vec::new();
                file.take(4 << 20)
                    .read_to_end(&mut chunk)
                    .map_err(|e| e.to_string())?;
                *last_read = start + chunk.len() as u64;
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                for line in buffer.lines() {
                    if regex.is_match(line) {
                        return Ok(Some(line.trim().to_owned()));
                    }
                }
                // keep only the unfinished last line
                if let Some(pos) = buffer.rfind('\n') {
                    buffer.drain(..=pos);
                }
                Ok(None)
            }
        }
    }

    /// Waits until ready, the deadline, cancellation, or the client exiting.
    pub fn wait(
        &self,
        deadline: Instant,
        cancel: &AtomicBool,
        exited: impl Fn() -> Option<String>,
    ) -> Result<String, String> {
        let mut last_read = 0;
        let mut buffer = String::new();
        loop {
            if let Some(evidence) = self.poll(&mut last_read, &mut buffer)? {
                return Ok(evidence);
            }
            if let Some(how) = exited() {
                return Err(format!("the client exited during start-up ({how})"));
            }
            if cancel.load(Ordering::SeqCst) {
                return Err("cancelled".into());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not ready within the deadline (waiting for {:?} `{}`)",
                    self.ready.kind, self.ready.pattern
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}
