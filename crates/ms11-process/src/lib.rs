//! Owning child processes, and nothing else.
//!
//! [`ManagedChild::spawn`] starts a program (never through a shell) in its own process
//! group with a parent-death signal, so neither it nor its grandchildren outlive the
//! runner. A waiter thread per child reaps it and reports an [`ExitEvent`] on a channel
//! the moment it exits (no polling). [`ManagedChild::stop`] stops in stages: the
//! configured signal to the whole group, a grace period, then SIGKILL to the group, and
//! says which one ended it. [`kill_leftovers`] kills what a SIGKILLed runner left behind,
//! after checking that each recorded pid is still the process it was: same boot, same
//! start time (pids are reused; after a reboot every recorded pid is stale).
//!
//! Every child carries an environment marker, [`SESSION_TOKEN_ENV`], with a value of its
//! own that its descendants inherit. A daemon that double-forked out of the child's
//! process group (`setsid`) still carries it: the signals of a stop, and the kill of
//! leftovers, reach every process of this user that has the child's marker.

use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use ms11_state::{ChildRecord, ExitInfo};
use tracing::{debug, info, warn};

#[cfg(unix)]
mod unix;

/// The environment variable every child is started with: a random value per spawn, so
/// that its descendants can be found even after they left its process group.
pub const SESSION_TOKEN_ENV: &str = "MS11_SESSION_TOKEN";

/// A fresh random marker value (not a secret: it only has to be unique).
fn new_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut words = [0u64; 2];
    for (i, word) in words.iter_mut().enumerate() {
        // RandomState is seeded from the OS's random source.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u64(count);
        hasher.write_u32(std::process::id());
        hasher.write_usize(i);
        *word = hasher.finish();
    }
    format!("{:016x}{:016x}", words[0], words[1])
}

/// What to do with one of the child's standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdioMode {
    /// Share the runner's.
    Inherit,
    /// `/dev/null`.
    #[default]
    Null,
    /// A pipe the runner reads or writes.
    Piped,
}

impl StdioMode {
    fn to_stdio(self) -> Stdio {
        match self {
            StdioMode::Inherit => Stdio::inherit(),
            StdioMode::Null => Stdio::null(),
            StdioMode::Piped => Stdio::piped(),
        }
    }
}

/// How to start a process.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProcessSpec {
    /// The program (looked up on PATH when it has no slash).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Standard input.
    pub stdin: StdioMode,
    /// Standard output.
    pub stdout: StdioMode,
    /// Standard error.
    pub stderr: StdioMode,
}

impl ProcessSpec {
    /// A spec from an argv list (`["prog", "arg", ...]`); `None` when empty.
    pub fn from_argv(argv: &[String]) -> Option<Self> {
        let (program, args) = argv.split_first()?;
        Some(ProcessSpec {
            program: program.clone(),
            args: args.to_vec(),
            ..ProcessSpec::default()
        })
    }
}

/// A child ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitEvent {
    /// The role given at spawn (`client`, `bot`).
    pub role: String,
    /// Its pid.
    pub pid: u32,
    /// How it ended.
    pub exit: ExitInfo,
    /// When the waiter saw it.
    pub at: Instant,
    /// The same, as unix seconds.
    pub unix: f64,
}

/// How a staged stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It had already exited.
    AlreadyExited,
    /// It exited after the stop signal, within the grace period.
    ExitedAfterSignal,
    /// The grace period ran out; the group was killed.
    Killed,
}

impl StopOutcome {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            StopOutcome::AlreadyExited => "already exited",
            StopOutcome::ExitedAfterSignal => "exited after the stop signal",
            StopOutcome::Killed => "killed after the grace period",
        }
    }
}

/// Spawning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The OS refused to start the program.
    #[error("cannot start {role} `{program}`: {source}")]
    Spawn {
        /// The role.
        role: String,
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

type ExitCell = Arc<(Mutex<Option<ExitInfo>>, Condvar)>;

/// A running (or finished) child the runner owns.
#[derive(Debug)]
pub struct ManagedChild {
    role: String,
    program: String,
    pid: u32,
    started_unix: u64,
    start_ticks: Option<u64>,
    boot_id: Option<String>,
    token: String,
    exit: ExitCell,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl ManagedChild {
    /// Starts the process; its exit will be sent on `events`.
    pub fn spawn(
        spec: &ProcessSpec,
        role: &str,
        events: Sender<ExitEvent>,
    ) -> Result<Self, ProcessError> {
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .stdin(spec.stdin.to_stdio())
            .stdout(spec.stdout.to_stdio())
            .stderr(spec.stderr.to_stdio());
        if let Some(cwd) = &spec.cwd {
            command.current_dir(cwd);
        }
        for (k, v) in &spec.env {
            command.env(k, v);
        }
        let token = new_token();
        command.env(SESSION_TOKEN_ENV, &token);
        #[cfg(unix)]
        unix::own_group_and_die_with_parent(&mut command);
        let mut child =
            spawn_from_long_lived_thread(command).map_err(|source| ProcessError::Spawn {
                role: role.to_owned(),
                program: spec.program.clone(),
                source,
            })?;
        let pid = child.id();
        #[cfg(unix)]
        let (start_ticks, boot_id) = (
            i32::try_from(pid).ok().and_then(unix::start_ticks),
            unix::boot_id(),
        );
        #[cfg(not(unix))]
        let (start_ticks, boot_id) = (None, None);
        let started_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let exit: ExitCell = Arc::new((Mutex::new(None), Condvar::new()));
        let cell = Arc::clone(&exit);
        let role_name = role.to_owned();
        std::thread::Builder::new()
            .name(format!("wait-{role}-{pid}"))
            .spawn(move || wait_for(child, pid, &role_name, &cell, &events))
            .map_err(|source| ProcessError::Spawn {
                role: role.to_owned(),
                program: spec.program.clone(),
                source,
            })?;
        info!(role, pid, program = %spec.program, "started");
        Ok(ManagedChild {
            role: role.to_owned(),
            program: spec.program.clone(),
            pid,
            started_unix,
            start_ticks,
            boot_id,
            token,
            exit,
            stdin,
            stdout,
            stderr,
        })
    }

    /// Process id (also its process-group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The role it was started as.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// Still running (not yet reaped).
    pub fn is_running(&self) -> bool {
        self.exit_info().is_none()
    }

    /// How it ended, once it has.
    pub fn exit_info(&self) -> Option<ExitInfo> {
        self.exit.0.lock().map_or(None, |g| g.clone())
    }

    /// Waits up to `timeout` for it to end.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitInfo> {
        let (lock, cvar) = &*self.exit;
        let guard = lock.lock().ok()?;
        let (guard, _) = cvar
            .wait_timeout_while(guard, timeout, |exit| exit.is_none())
            .ok()?;
        guard.clone()
    }

    /// Stops in stages: `signal` to the group, up to `grace`, then SIGKILL to the group.
    pub fn stop(&self, signal: i32, grace: Duration) -> StopOutcome {
        if !self.is_running() {
            self.kill_group(); // grandchildren may remain in the group
            return StopOutcome::AlreadyExited;
        }
        self.signal_group(signal);
        if self.wait_exit(grace).is_some() {
            self.kill_group();
            debug!(role = %self.role, pid = self.pid, "exited after the stop signal");
            return StopOutcome::ExitedAfterSignal;
        }
        warn!(role = %self.role, pid = self.pid, grace_ms = grace.as_millis() as u64, "did not stop within the grace period; killing its process group");
        self.kill_group();
        let _ = self.wait_exit(Duration::from_secs(5));
        StopOutcome::Killed
    }

    /// Sends `signal` to the whole process group, and to the descendants that left it
    /// (they carry the child's [`SESSION_TOKEN_ENV`] marker), and returns at once. A
    /// supervisor that must not block uses this and a timer of its own instead of
    /// [`ManagedChild::stop`]; the exit arrives on the events channel as always.
    pub fn signal_group(&self, signal: i32) {
        #[cfg(unix)]
        unix::signal_group_and_marked(self.pid, &self.token, signal);
        #[cfg(not(unix))]
        let _ = signal;
    }

    /// SIGKILL to the whole process group (grandchildren included) and to the
    /// descendants that left it.
    pub fn kill_group(&self) {
        self.signal_group(9);
    }

    /// The value of its [`SESSION_TOKEN_ENV`] marker.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// What to persist so a restarted runner can kill leftovers.
    pub fn record(&self) -> ChildRecord {
        ChildRecord {
            role: self.role.clone(),
            pid: i32::try_from(self.pid).unwrap_or(i32::MAX),
            pgid: i32::try_from(self.pid).unwrap_or(i32::MAX),
            started_at: self.started_unix,
            program: self.program.clone(),
            start_ticks: self.start_ticks,
            boot_id: self.boot_id.clone(),
            token: Some(self.token.clone()),
        }
    }

    /// The stdin pipe, when piped.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// The stdout pipe, when piped.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// The stderr pipe, when piped.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.stderr.take()
    }
}

/// Spawns on one thread that lives as long as the process. Linux delivers the
/// parent-death signal when the *thread* that forked the child exits, so children
/// started from short-lived threads (a recovery worker) would be killed with it.
fn spawn_from_long_lived_thread(command: Command) -> std::io::Result<Child> {
    type Job = (Command, Sender<std::io::Result<Child>>);
    static SPAWNER: std::sync::OnceLock<Mutex<Sender<Job>>> = std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let started = std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx.iter() {
                    let _ = reply.send(command.spawn());
                }
            });
        if let Err(e) = started {
            warn!(error = %e, "cannot start the spawner thread; spawning from the calling thread");
        }
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
    let sent = spawner
        .lock()
        .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
        .send((command, reply_tx));
    match sent {
        Ok(()) => reply_rx
            .recv()
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?,
        Err(crossbeam_channel::SendError((mut command, _))) => command.spawn(),
    }
}

fn wait_for(mut child: Child, pid: u32, role: &str, cell: &ExitCell, events: &Sender<ExitEvent>) {
    let status = child.wait();
    let at = Instant::now();
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let exit = match status {
        Ok(status) => ExitInfo::from(status),
        Err(e) => {
            warn!(role, pid, error = %e, "waiting for the child failed");
            ExitInfo::default()
        }
    };
    info!(role, pid, exit = %exit, "exited");
    let (lock, cvar) = &**cell;
    if let Ok(mut slot) = lock.lock() {
        *slot = Some(exit.clone());
    }
    cvar.notify_all();
    let _ = events.send(ExitEvent {
        role: role.to_owned(),
        pid,
        exit,
        at,
        unix,
    });
}

/// A leftover process found at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// The record it came from.
    pub record: ChildRecord,
    /// What was done.
    pub action: LeftoverAction,
}

/// What [`kill_leftovers`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftoverAction {
    /// Gone already.
    Gone,
    /// The pid now belongs to another process (another start time, another boot, another
    /// program): left alone.
    PidReused,
    /// Its process group was killed.
    Killed,
}

/// Kills the process groups of a previous runner's children that still run, and their
/// marked descendants, after checking each pid is still the recorded process (same boot,
/// same start time; for records of older versions, the recorded program and group).
pub fn kill_leftovers(records: &[ChildRecord]) -> Vec<Leftover> {
    records
        .iter()
        .map(|record| {
            #[cfg(unix)]
            let action = unix::kill_leftover(record);
            #[cfg(not(unix))]
            let action = LeftoverAction::Gone;
            if action == LeftoverAction::Killed {
                warn!(role = %record.role, pid = record.pid, program = %record.program, "killed a leftover of a previous runner");
            }
            Leftover {
                record: record.clone(),
                action,
            }
        })
        .collect()
}
