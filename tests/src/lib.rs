//! End-to-end test harness: a simulated session (sim-client + sim-bot) under the real
//! `ms11-recovery` binary, its structured event log, fault injection, and the checks
//! that nothing acknowledged was lost and nothing ran twice.

#![allow(clippy::unwrap_used, clippy::print_stderr, clippy::missing_panics_doc)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ms11_sim::{LedgerCheck, Scenario, ScenarioOptions};
use ms11_state::{SessionState, TaskState};
use serde_json::Value;

/// The directory holding the workspace's binaries, built for this test run.
///
/// `CARGO_BIN_EXE_*` exists only for the test's own package, so the binaries of the
/// runner, the simulator and the plugin host are built here, every time (quick when up to date), once per
/// test process: a stale binary that happens to exist is never tested.
pub fn bin_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
            build(&["ms11-runner", "ms11-sim", "ms11-plugin-host"]);
            for binary in ["ms11-recovery", "sim-client", "sim-bot", "ms11-plugin-host"] {
                assert!(
                    dir.join(binary).exists(),
                    "`{binary}` not found in {} after the build",
                    dir.display()
                );
            }
            dir
        })
        .clone()
}

/// Runs `cargo build -p` for `packages` (quick when they are up to date).
pub fn build(packages: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.arg("build");
    for p in packages {
        command.args(["-p", p]);
    }
    let status = command.status().unwrap();
    assert!(status.success(), "building {packages:?} failed");
}

/// A running (or stopped) simulated session.
pub struct Session {
    /// Its files.
    pub scenario: Scenario,
    _dir: Option<tempfile::TempDir>,
    runner: Option<Child>,
    events: Arc<Mutex<Vec<Value>>>,
    display: Option<String>,
}

impl Session {
    /// A new session in a temp dir with `options`.
    pub fn new(options: ScenarioOptions) -> Session {
        let dir = tempfile::tempdir().unwrap();
        let scenario = Scenario::create(dir.path(), &bin_dir(), options).unwrap();
        // MS11_E2E_KEEP=1 keeps the session directories for a look after a failure.
        let dir = if std::env::var_os("MS11_E2E_KEEP").is_some() {
            eprintln!("keeping {}", dir.keep().display());
            None
        } else {
            Some(dir)
        };
        Session {
            scenario,
            _dir: dir,
            runner: None,
            events: Arc::default(),
            display: None,
        }
    }

    /// A session whose runner runs and whose bot has acknowledged `tasks` tasks (within
    /// 30 s).
    pub fn running(options: ScenarioOptions, tasks: usize) -> Session {
        let mut s = Session::new(options);
        s.start_runner();
        s.wait_tasks(tasks, Duration::from_secs(30));
        s
    }

    /// Uses this X display for runner and client.
    pub fn with_display(mut self, display: &str) -> Self {
        self.display = Some(display.to_owned());
        self
    }

    fn command(&self) -> Command {
        let mut c = Command::new(self.scenario.runner_binary());
        c.arg("--config").arg(self.scenario.config());
        match &self.display {
            Some(d) => c.env("DISPLAY", d),
            None => c.env_remove("DISPLAY"),
        };
        c
    }

    /// Starts `ms11-recovery run`.
    pub fn start_runner(&mut self) {
        let mut child = self
            .command()
            .args(["run", "--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let events = Arc::clone(&self.events);
        let log = self.scenario.root.join("runner.log");
        std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                use std::io::Write;
                let _ = writeln!(file, "{line}");
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    events.lock().unwrap().push(v);
                }
            }
        });
        self.runner = Some(child);
    }

    /// SIGKILLs the runner (its children die by the parent-death signal).
    pub fn kill_runner(&mut self) {
        if let Some(mut child) = self.runner.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, and waits for a clean exit; returns the exit code.
    pub fn stop_runner(&mut self) -> Option<i32> {
        let mut child = self.runner.take()?;
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().unwrap();
        child.wait().unwrap().code()
    }

    /// Runs a CLI command of the runner and returns (exit code, stdout).
    pub fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = self.command().args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Runs a CLI command of the runner and returns its whole output (code, stdout,
    /// stderr).
    pub fn cli_output(&self, args: &[&str]) -> std::process::Output {
        self.command().args(args).output().unwrap()
    }

    /// The runner's process id, while it runs.
    pub fn runner_pid(&self) -> Option<u32> {
        self.runner.as_ref().map(Child::id)
    }

    /// Drops a command file for the client.
    pub fn client_command(&self, command: &str) {
        ms11_sim::send_command(&self.scenario.client_control(), command).unwrap();
    }

    /// Drops a command file for the bot.
    pub fn bot_command(&self, command: &str) {
        ms11_sim::send_command(&self.scenario.bot_control(), command).unwrap();
    }

    /// Events seen so far.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Waits for an event matching `pred`, failing the test with the runner log after
    /// `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + timeout;
        loop {
            // A copy: `pred` may look at the session itself (and the reader thread must
            // never wait for it, or the runner's stderr fills up and the runner stalls).
            let events = self.events();
            if let Some(v) = events.iter().find(|v| pred(v)) {
                return v.clone();
            }
            if Instant::now() > end {
                let log = std::fs::read_to_string(self.scenario.root.join("runner.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "timed out waiting for {what}; last runner log lines (newest first):\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for an event with `event` == `name` and the given string fields.
    pub fn wait_event(&self, name: &str, fields: &[(&str, &str)], timeout: Duration) -> Value {
        self.wait_for(&format!("{name} {fields:?}"), timeout, |v| {
            v["event"] == name && fields.iter().all(|(k, val)| v[*k].as_str() == Some(val))
        })
    }

    /// Waits until at least `n` tasks were acknowledged in this session.
    pub fn wait_tasks(&self, n: usize, timeout: Duration) {
        self.wait_for(&format!("{n} tasks done"), timeout, |v| {
            v["event"] == "task_done" && v["done"].as_u64().unwrap_or(0) >= n as u64
        });
    }

    /// The pid of the running client, from `status --json`.
    pub fn client_pid(&self) -> u32 {
        let (_, out) = self.cli(&["status", "--json"]);
        let v: Value = serde_json::from_str(&out).unwrap_or_default();
        v["main"]["client"]["pid"]
            .as_u64()
            .expect("client pid in status") as u32
    }

    /// The saved state.
    pub fn state(&self) -> SessionState {
        ms11_persist::StateFiles::new(self.scenario.state_file())
            .load_read_only()
            .unwrap()
            .unwrap()
            .state
    }

    /// The bot's ledger.
    pub fn ledger(&self) -> LedgerCheck {
        ms11_sim::check_ledger(&self.scenario.ledger()).unwrap()
    }

    /// Asserts the guarantee: every acknowledged task is done in the saved state, and
    /// no task's effect happened twice.
    pub fn assert_nothing_lost_or_repeated(&self) {
        let acked: BTreeSet<String> = self
            .events()
            .iter()
            .filter(|v| v["event"] == "task_done")
            .filter_map(|v| v["task"].as_str().map(str::to_owned))
            .collect();
        let state = self.state();
        let done: BTreeSet<&str> = state
            .tasks()
            .iter()
            .filter(|t| t.state == TaskState::Done)
            .map(|t| t.id.as_str())
            .collect();
        let lost: Vec<&String> = acked
            .iter()
            .filter(|id| !done.contains(id.as_str()))
            .collect();
        assert!(lost.is_empty(), "acknowledged tasks lost: {lost:?}");
        let ledger = self.ledger();
        assert!(
            ledger.duplicates.is_empty(),
            "tasks whose effect happened twice: {:?}",
            ledger.duplicates
        );
        assert!(!acked.is_empty(), "no task was acknowledged at all");
    }

    /// The runner's control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.scenario
            .state_file()
            .parent()
            .unwrap()
            .join("ms11-recovery.sock")
    }

    /// One request on the control socket, as the CLI sends it: the answer and how long
    /// it took (without a process start, so the figure is the runner's).
    pub fn control(&self, request: &Value) -> (Value, Duration) {
        use std::io::Write;
        let started = Instant::now();
        // The runner may still be starting: its socket comes a moment after the process.
        let end = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            match std::os::unix::net::UnixStream::connect(self.control_socket()) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() < end => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("no runner answers on its control socket: {e}"),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        writeln!(stream, "{request}").unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        let took = started.elapsed();
        (serde_json::from_str(&line).unwrap_or_default(), took)
    }

    /// `status --json` of the session `main`.
    pub fn status(&self) -> Value {
        let (answer, _) = self.control(&serde_json::json!({"cmd": "status"}));
        answer["data"]["main"].clone()
    }

    /// The recorded incident with this id once its resolution is saved (the `recovered`
    /// log line comes a moment before the session loop saves the resolution).
    pub fn resolved_incident(&self, id: &str) -> ms11_state::Incident {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let incident = self.state().crash_history.into_iter().find(|i| i.id == id);
            match incident {
                Some(incident) if incident.resolution.is_some() => return incident,
                _ if Instant::now() < end => std::thread::sleep(Duration::from_millis(50)),
                other => panic!("incident {id} has no saved resolution: {other:?}"),
            }
        }
    }

    /// The recorded incident with this id.
    pub fn incident(&self, id: &str) -> ms11_state::Incident {
        self.state()
            .crash_history
            .into_iter()
            .find(|i| i.id == id)
            .unwrap_or_else(|| panic!("incident {id} not recorded"))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.kill_runner();
    }
}

/// An Xvfb display for window tests, or why there is none.
pub type Display = ms11_sim::Xvfb;
