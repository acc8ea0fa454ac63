//! The runner's overhead from a client exit to the relaunch, next to the client's own
//! start time measured in the same run. Part of `cargo xtask bench`.
//!
//! The release `ms11-recovery` supervises one session whose client is the release
//! `sim-client` (no bot), with the default fusion settings. The bench makes the client
//! exit (`exit-3` dropped into its control directory) `exits` times, each time waiting
//! for the runner's `recovered` event and a short pause. The client writes the moments
//! itself (`--timestamps FILE`): `start <unix_ns>` first thing in `main`, `exit
//! <unix_ns>` just before it exits. Overhead of exit N = start of client N+1 minus exit
//! of client N: the waiter's detection, the runner's incident and recovery job, the
//! spawn and the new process's way into `main`.
//!
//! Baseline, alternating with the exits: the bench itself spawns the same `sim-client`
//! (`std::process::Command`, nothing between spawn and exec), noting the time just
//! before the spawn; baseline = that client's `start` minus that time. The ratio of the
//! two medians is the runner's cost in units of "starting the client at all".
//!
//! The runner's own JSON log (`client_exited`, `client_started`, microsecond
//! timestamps) splits the overhead into detection, runner and exec parts.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ms11_sim::timestamps;
use serde_json::Value;

use crate::util;

/// The goal for the p50 overhead, nanoseconds.
const GOAL_P50_NS: f64 = 5e6;
/// Pause after each recovery and after each bare spawn, so every exit meets a runner
/// that has finished its saves and logging.
const SETTLE: Duration = Duration::from_millis(100);

/// Kills the runner if the measurement fails half-way (its children die with it: they
/// carry a parent-death signal).
struct RunnerGuard(Child);

impl Drop for RunnerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The runner's JSON log events, as they arrive.
struct Events {
    rx: Receiver<Value>,
    seen: Vec<Value>,
}

impl Events {
    /// Waits until an event named `name` arrives after the first `from` events.
    fn wait_for(&mut self, name: &str, from: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.seen[from.min(self.seen.len())..]
                .iter()
                .any(|e| e["event"] == name)
            {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(event) => self.seen.push(event),
                Err(RecvTimeoutError::Timeout) => {
                    let last: Vec<String> = self
                        .seen
                        .iter()
                        .rev()
                        .take(8)
                        .map(|e| format!("{} {}", e["event"], e["message"]))
                        .collect();
                    bail!(
                        "no `{name}` event from the runner within {timeout:?}; last events (newest first): {last:?}"
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("the runner ended while the bench waited for `{name}`")
                }
            }
        }
    }

    /// Takes whatever has arrived without waiting.
    fn drain(&mut self) {
        while let Ok(event) = self.rx.try_recv() {
            self.seen.push(event);
        }
    }
}

/// The result: a table row and its JSON.
pub struct Relaunch {
    /// One Markdown table row (with its newline).
    pub markdown: String,
    /// The same figures for `summary.json`.
    pub json: Value,
    /// The row for the `comparisons` list of `summary.json`.
    pub comparison: Value,
}

/// Measures `exits` client exits and as many bare spawns.
pub fn measure(exits: usize) -> Result<Relaunch> {
    ensure!(exits > 0, "--exits must be at least 1");
    let bin = util::target_dir().join("release");
    let client = bin.join("sim-client");
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let stamps = root.join("timestamps");
    let config = root.join("ms11.toml");
    std::fs::write(&config, config_toml(root, &client, &stamps))
        .with_context(|| format!("writing {}", config.display()))?;
    let mut runner = Command::new(bin.join("ms11-recovery"))
        .arg("--config")
        .arg(&config)
        .args(["--log-format", "json", "run"])
        .env_remove("DISPLAY")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the release ms11-recovery")?;
    let stderr = runner
        .stderr
        .take()
        .context("the runner's stderr is not piped")?;
    let runner = RunnerGuard(runner);
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && tx.send(event).is_err()
            {
                break;
            }
        }
    });
    let mut events = Events {
        rx,
        seen: Vec::new(),
    };
    events
        .wait_for("client_ready", 0, Duration::from_secs(30))
        .context("the first client did not become ready")?;
    std::thread::sleep(SETTLE);

    let control = root.join("cc");
    let bare = BareClient {
        program: client,
        root: root.join("bare"),
    };
    std::fs::create_dir_all(&bare.root)?;
    let mut baseline_ns = Vec::with_capacity(exits);
    for n in 0..exits {
        events.drain();
        let mark = events.seen.len();
        ms11_sim::send_command(&control, "exit-3")
            .with_context(|| format!("sending exit-3 into {}", control.display()))?;
        events
            .wait_for("recovered", mark, Duration::from_secs(20))
            .with_context(|| format!("exit {} of {exits}", n + 1))?;
        std::thread::sleep(SETTLE);
        baseline_ns.push(bare.start_ns(n + 1)?);
        std::thread::sleep(SETTLE);
    }
    events.drain();
    stop(runner)?;
    events.drain();

    let moments =
        timestamps::read(&stamps).with_context(|| format!("reading {}", stamps.display()))?;
    let overhead_ns = overheads(&moments);
    ensure!(
        overhead_ns.len() == exits,
        "{} exit-to-start pairs in {} for {exits} exits",
        overhead_ns.len(),
        stamps.display()
    );
    let parts = breakdown(&moments, &events.seen);
    Ok(report(exits, &overhead_ns, &baseline_ns, &parts))
}

/// The session's configuration: the release sim-client, no bot, the `restart` strategy
/// only, breaker and budget out of the way of a fast series of exits; everything else
/// (fusion included) as configured by default.
fn config_toml(root: &Path, client: &Path, stamps: &Path) -> String {
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let log = root.join("client.log");
    format!(
        r#"state_file = {state}
continue_previous = "yes"
auto_restart = true

[[session]]
name = "bench"
client_log = {log}
pipeline = ["restart"]

[session.client]
command = [{client}, "--log", {log}, "--control-dir", {cc}, "--window", "off", "--startup-ms", "20", "--lines-per-sec", "1", "--timestamps", {stamps}]
cwd = {root}

[session.ready]
kind = "log_line"
pattern = "Login successful"
timeout_secs = 15

[session.window]
enabled = false

[session.recovery.breaker]
max_incidents = 1000000
window_secs = 1.0

[session.recovery.restart]
budget = 1000000
budget_window_secs = 1.0

[session.recovery.notify]
desktop_notify = false
"#,
        state = q(&root.join("state/session_state.json")),
        log = q(&log),
        client = q(client),
        cc = q(&root.join("cc")),
        stamps = q(stamps),
        root = q(root),
    )
}

/// Ends the runner with SIGTERM (it stops its client) and waits for it.
fn stop(mut runner: RunnerGuard) -> Result<()> {
    let pid = runner.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while runner.0.try_wait()?.is_none() {
        ensure!(
            Instant::now() < deadline,
            "the runner did not stop within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The client spawned by the bench itself, for the baseline.
struct BareClient {
    program: PathBuf,
    root: PathBuf,
}

impl BareClient {
    /// Spawns the client once more (the `count`th time), returns the nanoseconds from
    /// just before the spawn to the client's `start`, and kills it.
    fn start_ns(&self, count: usize) -> Result<f64> {
        let stamps = self.root.join("timestamps");
        let before = timestamps::unix_ns();
        let mut child = Command::new(&self.program)
            .arg("--log")
            .arg(self.root.join("client.log"))
            .arg("--control-dir")
            .arg(self.root.join("cc"))
            .args(["--window", "off", "--startup-ms", "60000", "--timestamps"])
            .arg(&stamps)
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {}", self.program.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let started = loop {
            let starts: Vec<u64> = timestamps::read(&stamps)
                .unwrap_or_default()
                .into_iter()
                .filter(|(what, _)| what == "start")
                .map(|(_, ns)| ns)
                .collect();
            if starts.len() >= count {
                break starts[count - 1];
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the bare sim-client wrote no `start` within 10 s");
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        child.kill().context("killing the bare sim-client")?;
        child.wait().context("waiting for the bare sim-client")?;
        #[allow(clippy::cast_precision_loss)]
        Ok(started.saturating_sub(before) as f64)
    }
}

/// For every `exit`, the time to the next `start` (the relaunched client).
#[allow(clippy::cast_precision_loss)]
fn overheads(moments: &[(String, u64)]) -> Vec<f64> {
    let mut found = Vec::new();
    for (i, (what, exit)) in moments.iter().enumerate() {
        if what != "exit" {
            continue;
        }
        if let Some((_, start)) = moments[i + 1..].iter().find(|(w, _)| w == "start") {
            found.push(start.saturating_sub(*exit) as f64);
        }
    }
    found
}

/// Medians of the overhead's parts, from the runner's log: exit → `client_exited`
/// (detection), `client_exited` → `client_started` (the runner: incident, recovery job,
/// spawn), `client_started` → the client's `start` (the new process's way into `main`,
/// partly before the log line: the spawn returns once the child has exec'd).
struct Parts {
    detect_ns: Option<f64>,
    runner_ns: Option<f64>,
    exec_ns: Option<f64>,
}

#[allow(clippy::cast_precision_loss)]
fn breakdown(moments: &[(String, u64)], events: &[Value]) -> Parts {
    let logged = |name: &str| -> Vec<i128> {
        events
            .iter()
            .filter(|e| e["event"] == name && e["expected"] != true)
            .filter_map(|e| e["timestamp"].as_str().and_then(rfc3339_ns))
            .collect()
    };
    let exited = logged("client_exited");
    let started = logged("client_started");
    let client = |name: &str| -> Vec<i128> {
        moments
            .iter()
            .filter(|(w, _)| w == name)
            .map(|(_, ns)| i128::from(*ns))
            .collect()
    };
    let exits = client("exit");
    let starts = client("start");
    // Exit n (0-based) is followed by start n+1; the runner logs one `client_exited` per
    // exit and one `client_started` per start.
    let n = exits
        .len()
        .min(exited.len())
        .min(started.len().saturating_sub(1))
        .min(starts.len().saturating_sub(1));
    let median_of = |f: &dyn Fn(usize) -> i128| -> Option<f64> {
        let mut v: Vec<f64> = (0..n).map(|i| f(i) as f64).collect();
        v.sort_by(f64::total_cmp);
        percentile(&v, 50.0)
    };
    Parts {
        detect_ns: median_of(&|i| exited[i] - exits[i]),
        runner_ns: median_of(&|i| started[i + 1] - exited[i]),
        exec_ns: median_of(&|i| starts[i + 1] - started[i + 1]),
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn report(exits: usize, overhead: &[f64], baseline: &[f64], parts: &Parts) -> Relaunch {
    let sorted = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let (o, b) = (sorted(overhead), sorted(baseline));
    let p = |v: &[f64], q: f64| percentile(v, q).unwrap_or(f64::NAN);
    let (o50, o95, b50, b95) = (p(&o, 50.0), p(&o, 95.0), p(&b, 50.0), p(&b, 95.0));
    let ratio = o50 / b50;
    let met = o50 < GOAL_P50_NS;
    let goal = "runner overhead p50 < 5 ms";
    let ms = |ns: f64| format!("{:.2} ms", ns / 1e6);
    let part = |ns: Option<f64>| ns.map_or_else(|| "n/a".to_owned(), ms);
    let mut markdown = String::new();
    let _ = writeln!(
        markdown,
        "| runner overhead, client exit → relaunched client's `main`, {exits} exits (p50 / p95) | {} / {} | {} / {} (bare spawn → client's `main`, same binary, alternating) | {ratio:.2}x | {goal} ({}) |",
        ms(o50),
        ms(o95),
        ms(b50),
        ms(b95),
        if met { "met" } else { "NOT met" },
    );
    let _ = writeln!(
        markdown,
        "| ... of which (p50, runner's log): exit → `client_exited` / → `client_started` / → client's `main` | {} / {} / {} | - | - | - |",
        part(parts.detect_ns),
        part(parts.runner_ns),
        part(parts.exec_ns),
    );
    let json = serde_json::json!({
        "exits": exits,
        "overhead_p50_ns": o50,
        "overhead_p95_ns": o95,
        "overhead_min_ns": o.first(),
        "overhead_max_ns": o.last(),
        "baseline_p50_ns": b50,
        "baseline_p95_ns": b95,
        "ratio_p50": ratio,
        "goal": goal,
        "goal_met": met,
        "parts_p50_ns": {
            "exit_to_client_exited": parts.detect_ns,
            "client_exited_to_client_started": parts.runner_ns,
            "client_started_to_main": parts.exec_ns,
        },
        "overhead_ns": overhead,
        "baseline_ns": baseline,
    });
    let comparison = serde_json::json!({
        "what": format!("runner overhead, client exit → relaunched client's main, {exits} exits (p50)"),
        "measured_ns": o50, "measured_p95_ns": o95,
        "baseline": "bare spawn of the same sim-client → its main (p50, alternating)",
        "baseline_ns": b50, "baseline_p95_ns": b95,
        "ratio": ratio, "goal": goal, "goal_met": met, "paired": true,
    });
    Relaunch {
        markdown,
        json,
        comparison,
    }
}

/// `2025-11-30T06:40:01.123456Z` (what the runner's JSON log writes) as Unix
/// nanoseconds; `None` for anything else (other offsets included).
fn rfc3339_ns(text: &str) -> Option<i128> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (year, month, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(str::parse::<i64>);
    let (h, m, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let frac_ns: i128 = if frac.is_empty() {
        0
    } else {
        let digits = u32::try_from(frac.len()).ok()?;
        frac.parse::<i128>().ok()? * 10i128.pow(9 - digits)
    };
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    Some(i128::from(secs) * 1_000_000_000 + frac_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_parse_to_unix_nanoseconds() {
        assert_eq!(rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_ns("2000-03-01T00:00:01.5Z"),
            Some(951_868_801_500_000_000)
        );
        assert_eq!(
            rfc3339_ns("2025-11-30T06:40:01.123456Z"),
            Some(1_764_484_801_123_456_000)
        );
        assert_eq!(rfc3339_ns("2025-11-30T06:40:01+01:00"), None);
    }

    #[test]
    fn each_exit_pairs_with_the_next_start() {
        let m: Vec<(String, u64)> = [("start", 0), ("exit", 10), ("start", 13), ("exit", 20)]
            .iter()
            .map(|(w, n)| ((*w).to_owned(), *n))
            .collect();
        assert_eq!(overheads(&m), vec![3.0]);
        let sorted: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(10.0));
        assert_eq!(percentile(&sorted, 95.0), Some(19.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
