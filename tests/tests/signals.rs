//! The runner's signals with the real binary: SIGHUP reloads the configuration (live
//! settings applied, the rest reported, a broken file refused) instead of stopping, and
//! a second Ctrl-C stops at once instead of waiting for a client that ignores SIGTERM.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ms11_sim::{Scenario, ScenarioOptions};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// A runner started on a scenario's configuration, its JSON log collected.
struct Runner {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    log: std::path::PathBuf,
}

impl Runner {
    fn start(scenario: &Scenario) -> Runner {
        let mut child = Command::new(scenario.runner_binary())
            .arg("--config")
            .arg(scenario.config())
            .args(["run", "--log-format", "json"])
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&events);
        let log = scenario.root.join("runner.log");
        let log_file = log.clone();
        std::thread::spawn(move || {
            use std::io::Write as _;
            let mut file = std::fs::File::create(log_file).unwrap();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    collected.lock().unwrap().push(v);
                }
            }
        });
        Runner { child, events, log }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The `n`-th (0-based) event named `name`.
    fn wait_event(&self, name: &str, n: usize) -> Value {
        let end = Instant::now() + T;
        loop {
            let found = self
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|v| v["event"] == name)
                .nth(n)
                .cloned();
            if let Some(v) = found {
                return v;
            }
            assert!(
                Instant::now() < end,
                "no {name} event; runner log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn still_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn edit(path: &Path, edits: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(path).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "`{from}` not in {text}");
        text = text.replace(from, to);
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn sighup_reloads_the_configuration_instead_of_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let scenario =
        Scenario::create(dir.path(), &ms11_e2e::bin_dir(), ScenarioOptions::default()).unwrap();
    let mut runner = Runner::start(&scenario);
    runner.wait_event("running", 0);
    edit(
        &scenario.config(),
        &[
            ("save_interval = 10", "save_interval = 3"),
            (
                r#"pipeline = ["restart", "relog", "manual", "restore"]"#,
                r#"pipeline = ["restart", "manual"]"#,
            ),
            (r#""--startup-ms", "300""#, r#""--startup-ms", "400""#),
        ],
    );
    runner.signal("HUP");
    let reloaded = runner.wait_event("reloaded", 0);
    assert_eq!(reloaded["needs_restart"], "session.0.client", "{reloaded}");
    let applied = runner.wait_event("reconfigured", 0);
    let applied = applied["applied"].as_str().unwrap_or_default().to_owned();
    assert!(
        applied.contains("pipeline") && applied.contains("save_interval"),
        "{applied}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(runner.still_running(), "SIGHUP stopped the runner");

    // A broken file is refused; the running configuration stays.
    edit(
        &scenario.config(),
        &[("save_interval = 3", "save_interval = \"soon\"")],
    );
    runner.signal("HUP");
    let refused = runner.wait_event("reload_failed", 0);
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("save_interval"),
        "{refused}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(runner.still_running(), "a broken reload stopped the runner");

    runner.signal("TERM");
    assert_eq!(runner.wait_exit(T), Some(0));
}

#[test]
fn a_second_ctrl_c_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let options = ScenarioOptions {
        client_args: vec!["--ignore-term".into()],
        ..ScenarioOptions::default()
    };
    let scenario = Scenario::create(dir.path(), &ms11_e2e::bin_dir(), options).unwrap();
    // The client ignores SIGTERM, and a graceful stop waits a minute before killing it.
    edit(
        &scenario.config(),
        &[("stop_grace_secs = 2", "stop_grace_secs = 60")],
    );
    let mut runner = Runner::start(&scenario);
    runner.wait_event("running", 0);
    runner.wait_event("client_ready", 0);
    runner.signal("INT");
    let first = runner.wait_event("interrupted", 0);
    assert!(
        first["message"]
            .as_str()
            .unwrap_or_default()
            .contains("press Ctrl-C again to stop at once"),
        "{first}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        runner.still_running(),
        "the first Ctrl-C waits for the client's graceful stop"
    );
    let pressed = Instant::now();
    runner.signal("INT");
    assert_eq!(runner.wait_exit(Duration::from_secs(10)), Some(130));
    eprintln!("stopped {:?} after the second Ctrl-C", pressed.elapsed());
    runner.wait_event("stopped_at_once", 0);
}
