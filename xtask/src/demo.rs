//! `cargo xtask run`: the demo. A full simulated session (sim-client + sim-bot) under
//! the real `ms11-recovery` binary, with faults injected on a schedule and recovered
//! live, then a summary. Exits non-zero if any acknowledged task was lost or any task's
//! effect happened twice.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ms11_state::{AttemptOutcome, ResolutionStatus, SessionState, TaskState};
use serde_json::Value;

use crate::util;

/// Options of `cargo xtask run`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Seconds of ordinary running after the fault schedule (the schedule takes ~70 s).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seed of the simulated client and bot.
    #[arg(long, default_value_t = 35)]
    seed: u64,
    /// Keep the session directory here (default: a temporary one, removed at the end).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Run without a window even when Xvfb is installed.
    #[arg(long)]
    no_window: bool,
}

struct Paths {
    root: PathBuf,
    bin: PathBuf,
}

impl Paths {
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

/// Builds the binaries and picks the session directory (`keep`, or a temporary one
/// that lives as long as the returned guard).
fn prepare(keep: Option<&PathBuf>) -> Result<(tempfile::TempDir, Paths)> {
    println!("building ms11-recovery, sim-client and sim-bot ...");
    let args: Vec<String> = ["build", "--quiet", "-p", "ms11-runner", "-p", "ms11-sim"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    util::cargo(&args)?;
    let temp = tempfile::tempdir()?;
    let root = keep.cloned().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&root)?;
    let bin = util::target_dir().join("debug");
    Ok((temp, Paths { root, bin }))
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<()> {
    let (_temp, paths) = prepare(args.keep.as_ref())?;
    let xvfb = if args.no_window { None } else { start_xvfb() };
    let display = xvfb.as_ref().map(DemoDisplay::name);
    match &display {
        Some(d) => println!("window probe on: Xvfb display {d}"),
        None if args.no_window => {
            println!("window probe off (--no-window): the error-dialog fault is skipped")
        }
        None => println!(
            "window probe off: Xvfb is not installed (apt-get install xvfb); the error-dialog fault is skipped"
        ),
    }
    let options = ms11_sim::ScenarioOptions {
        seed: args.seed,
        window: display.is_some(),
        ..Default::default()
    };
    ms11_sim::Scenario::create(&paths.root, &paths.bin, options)?;
    println!("session directory: {}\n", paths.root.display());
    let mut demo = Demo::new(paths, display, Instant::now());
    demo.start_runner()?;
    let result = demo.schedule(args.duration);
    demo.stop_runner();
    drop(xvfb);
    result?;
    demo.summary()
}

/// Options of `cargo xtask soak`.
#[derive(clap::Args)]
pub struct SoakArgs {
    /// Number of faults to inject.
    #[arg(long, default_value_t = 100)]
    faults: usize,
    /// Seed of the fault schedule (and of client and bot).
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// Keep the session directory here.
    #[arg(long)]
    keep: Option<PathBuf>,
}

/// `cargo xtask soak`: a long randomized fault schedule; prints recovered / escalated /
/// unrecovered / lost / duplicated counts; exits non-zero on any loss, duplicate or
/// unrecovered fault.
pub fn soak(args: &SoakArgs) -> Result<()> {
    use rand::{Rng, SeedableRng};
    let (_temp, paths) = prepare(args.keep.as_ref())?;
    let options = ms11_sim::ScenarioOptions {
        seed: args.seed,
        task_ms: 150,
        total_tasks: 1_000_000,
        breaker_window_secs: 4.0,
        // Faults come every few seconds here: the same log pattern must be reported
        // again (the default 30 s cooldown is for real clients repeating an error).
        extra_toml: "[session.log_patterns]\ndefault_cooldown_ms = 500\n".into(),
        ..Default::default()
    };
    ms11_sim::Scenario::create(&paths.root, &paths.bin, options)?;
    let mut demo = Demo::new(paths, None, Instant::now());
    demo.quiet = true;
    demo.start_runner()?;
    demo.wait(3.0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let kinds = [
        "client-kill",
        "crash-dump",
        "crash-abort",
        "disconnect",
        "session-expired",
        "bot-hang",
        "bot-crash",
        "runner-kill",
    ];
    let mut counts: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for n in 1..=args.faults {
        let kind = kinds[rng.random_range(0..kinds.len())];
        let mark = demo.seen_events;
        match kind {
            "client-kill" => match demo.client_pid() {
                Some(pid) => {
                    Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status()?;
                }
                None => continue,
            },
            "crash-dump" | "crash-abort" | "disconnect" | "session-expired" => {
                demo.client_command(kind)?
            }
            "bot-hang" => demo.bot_command("hang")?,
            "bot-crash" => demo.bot_command("crash")?,
            _ => {
                demo.kill_runner();
                demo.start_runner()?;
            }
        }
        let outcome = demo.await_outcome(mark, Duration::from_secs(30), kind == "runner-kill");
        let entry = counts.entry(kind).or_default();
        match outcome {
            Outcome::Recovered => entry.0 += 1,
            Outcome::Escalated => entry.1 += 1,
            Outcome::Unrecovered => entry.2 += 1,
        }
        if n % 10 == 0 {
            demo.say(&format!("{n}/{} faults injected", args.faults));
        }
        demo.wait(1.0 + rng.random_range(0.0..1.0));
    }
    demo.wait(3.0);
    demo.stop_runner();
    println!("\n================ soak ================");
    println!(
        "{:<16} {:>9} {:>9} {:>11}",
        "fault", "recovered", "escalated", "unrecovered"
    );
    let mut totals = (0, 0, 0);
    for (kind, (r, e, u)) in &counts {
        println!("{kind:<16} {r:>9} {e:>9} {u:>11}");
        totals = (totals.0 + r, totals.1 + e, totals.2 + u);
    }
    println!(
        "{:<16} {:>9} {:>9} {:>11}",
        "all", totals.0, totals.1, totals.2
    );
    demo.summary()?;
    anyhow::ensure!(
        totals.2 == 0,
        "{} fault(s) were neither recovered nor escalated",
        totals.2
    );
    Ok(())
}

/// How one injected fault ended.
enum Outcome {
    Recovered,
    Escalated,
    Unrecovered,
}

/// The display the demo uses: the one set, or an Xvfb it starts.
enum DemoDisplay {
    Existing(String),
    Started(ms11_sim::Xvfb),
}

impl DemoDisplay {
    fn name(&self) -> String {
        match self {
            DemoDisplay::Existing(d) => d.clone(),
            DemoDisplay::Started(x) => x.display.clone(),
        }
    }
}

/// Uses `DISPLAY` when set, else starts Xvfb when it is installed.
fn start_xvfb() -> Option<DemoDisplay> {
    if let Ok(d) = std::env::var("DISPLAY") {
        return Some(DemoDisplay::Existing(d));
    }
    ms11_sim::Xvfb::start(90..200)
        .ok()
        .map(DemoDisplay::Started)
}

/// What the demo saw in the runner's event log.
#[derive(Default)]
struct Seen {
    acknowledged: BTreeSet<String>,
    recovered: usize,
    waiting_for_ack: Option<String>,
}

struct Demo {
    paths: Paths,
    display: Option<String>,
    started: Instant,
    runner: Option<Child>,
    events: Option<Receiver<Value>>,
    seen: Seen,
    runner_log: std::fs::File,
    runner_starts: usize,
    /// Events received so far (an index for "after this point").
    seen_events: usize,
    recent: Vec<Value>,
    quiet: bool,
}

impl Demo {
    fn new(paths: Paths, display: Option<String>, started: Instant) -> Demo {
        let runner_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(paths.p("runner.log"))
            .unwrap_or_else(|_| tempfile::tempfile().expect("a temp file"));
        Demo {
            paths,
            display,
            started,
            runner: None,
            events: None,
            seen: Seen::default(),
            runner_log,
            runner_starts: 0,
            seen_events: 0,
            recent: Vec::new(),
            quiet: false,
        }
    }

    fn t(&self) -> String {
        format!("[{:6.1}s]", self.started.elapsed().as_secs_f64())
    }

    fn say(&self, text: &str) {
        println!("{} {text}", self.t());
    }

    fn recovery(&self) -> Command {
        let mut c = Command::new(self.paths.bin.join("ms11-recovery"));
        c.arg("--config").arg(self.paths.p("ms11.toml"));
        if let Some(d) = &self.display {
            c.env("DISPLAY", d);
        }
        c
    }

    fn start_runner(&mut self) -> Result<()> {
        self.runner_starts += 1;
        let mut child = self
            .recovery()
            .args(["run", "--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ms11-recovery")?;
        let stderr = child.stderr.take().context("runner stderr")?;
        let (tx, rx) = channel();
        let mut log = self.runner_log.try_clone()?;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        self.say(&format!("runner started (pid {})", child.id()));
        self.runner = Some(child);
        self.events = Some(rx);
        Ok(())
    }

    fn stop_runner(&mut self) {
        if let Some(mut child) = self.runner.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let end = Instant::now() + Duration::from_secs(15);
            while Instant::now() < end {
                self.pump();
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            if let Ok(status) = child.wait() {
                self.say(&format!("runner stopped ({status})"));
            }
            self.pump();
        }
    }

    fn kill_runner(&mut self) {
        if let Some(mut child) = self.runner.take() {
            self.say(&format!(
                "FAULT runner killed with SIGKILL (pid {}); its children die with it",
                child.id()
            ));
            let _ = child.kill();
            let _ = child.wait();
            self.pump();
        }
    }

    /// Prints the interesting events that arrived.
    fn pump(&mut self) {
        let Some(rx) = &self.events else { return };
        let events: Vec<Value> = rx.try_iter().collect();
        for e in events {
            self.show(&e);
        }
    }

    /// Waits for the recovery (or escalation) of a fault injected after event `mark`.
    fn await_outcome(&mut self, mark: usize, timeout: Duration, runner_restart: bool) -> Outcome {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            self.pump();
            let new = &self.recent[mark.min(self.recent.len())..];
            if runner_restart && new.iter().any(|e| e["event"] == "continue") {
                return Outcome::Recovered;
            }
            if let Some(manual) = new.iter().find(|e| e["event"] == "manual") {
                let id = manual["incident"].as_str().unwrap_or_default().to_owned();
                let _ = self.recovery().args(["ack", &id]).output();
                self.seen.waiting_for_ack = None;
                return Outcome::Escalated;
            }
            if new.iter().any(|e| e["event"] == "recovered") {
                return Outcome::Recovered;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Outcome::Unrecovered
    }

    fn show(&mut self, e: &Value) {
        self.seen_events += 1;
        self.recent.push(e.clone());
        if self.quiet {
            if e["event"] == "task_done"
                && let Some(task) = e["task"].as_str()
            {
                self.seen.acknowledged.insert(task.to_owned());
            }
            return;
        }
        let s = |k: &str| {
            e.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let n = |k: &str| e.get(k).and_then(Value::as_u64).unwrap_or_default();
        match s("event").as_str() {
            "incident" => self.say(&format!(
                "  incident {} {}: {}",
                s("incident"),
                s("kind"),
                s("message")
            )),
            "skipped" => self.say(&format!("    skip {} ({})", s("strategy"), s("reason"))),
            "attempt" => self.say(&format!(
                "    try {} (attempt {})",
                s("strategy"),
                n("attempt")
            )),
            "attempt_failed" => self.say(&format!("    {} failed: {}", s("strategy"), s("reason"))),
            "backoff" => self.say(&format!(
                "    back off {} ms before {}",
                n("wait_ms"),
                s("strategy")
            )),
            "breaker" => self.say("    crash-loop breaker tripped: straight to manual"),
            "manual" => {
                self.say(&format!("    MANUAL: {}", s("message")));
                self.seen.waiting_for_ack = Some(s("incident"));
            }
            "recovered" => {
                self.seen.recovered += 1;
                self.say(&format!(
                    "  recovered {} by {} in {} ms",
                    s("incident"),
                    s("strategy"),
                    n("ms")
                ));
            }
            "unrecovered" => self.say(&format!(
                "  NOT recovered {} ({})",
                s("incident"),
                s("status")
            )),
            "restored" => self.say(&format!(
                "    state rolled back to generation {}",
                n("generation")
            )),
            "resume" => {
                let rerun = s("rerun");
                let rerun = if rerun == "[]" {
                    "nothing".to_owned()
                } else {
                    rerun.replace('"', "")
                };
                self.say(&format!(
                    "  bot resumed from the saved state (re-run: {rerun})"
                ));
            }
            "continue" => self.say(&format!(
                "  continuing the saved session (generation {})",
                n("generation")
            )),
            "leftover_killed" => self.say(&format!(
                "  killed leftover {} (pid {}) of the previous runner",
                s("role"),
                n("pid")
            )),
            "task_done" => {
                self.seen.acknowledged.insert(s("task"));
                if n("done") % 25 == 0 {
                    self.say(&format!("  {} tasks done", n("done")));
                }
            }
            "save_failed" => self.say(&format!("  SAVE FAILED: {}", s("error"))),
            _ => {}
        }
    }

    /// Waits `secs` while showing events.
    fn wait(&mut self, secs: f64) {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < end {
            self.pump();
            std::thread::sleep(Duration::from_millis(50));
        }
        self.pump();
    }

    fn client_command(&self, command: &str) -> Result<()> {
        ms11_sim::send_command(&self.paths.p("cc"), command).context("sending a client command")
    }

    fn bot_command(&self, command: &str) -> Result<()> {
        ms11_sim::send_command(&self.paths.p("bc"), command).context("sending a bot command")
    }

    fn status(&self) -> Option<Value> {
        let out = self.recovery().args(["status", "--json"]).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn client_pid(&mut self) -> Option<u64> {
        self.status()?
            .get("main")?
            .get("client")?
            .get("pid")?
            .as_u64()
    }

    fn schedule(&mut self, tail_secs: u64) -> Result<()> {
        self.wait(4.0);
        let pid = self.client_pid().context("the client is not running")?;
        self.say(&format!("FAULT client killed with SIGKILL (pid {pid})"));
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()?;
        self.wait(5.0);
        self.say("FAULT client crashes and writes a crash dump");
        self.client_command("crash-dump")?;
        self.wait(5.0);
        self.say("FAULT connection to the server lost");
        self.client_command("disconnect")?;
        self.wait(5.0);
        if self.display.is_some() {
            self.say("FAULT \"Fatal Report\" error dialog while the client stays alive");
            self.client_command("fatal-dialog")?;
            self.wait(5.0);
        }
        self.say("FAULT bot hangs (no more heartbeats)");
        self.bot_command("hang")?;
        self.wait(6.0);
        self.kill_runner();
        self.wait(0.5);
        self.start_runner()?;
        self.wait(5.0);
        self.kill_runner();
        let main = self.paths.p("state/session_state.json");
        let bytes = std::fs::read(&main).unwrap_or_default();
        std::fs::write(&main, &bytes[..bytes.len() / 2])?;
        self.say(&format!(
            "FAULT newest state generation damaged on disk ({} of {} bytes kept)",
            bytes.len() / 2,
            bytes.len()
        ));
        self.start_runner()?;
        self.wait(6.0);
        self.say("FAULT crash loop: the client crashes right after every restart");
        for _ in 0..5 {
            self.client_command("crash-abort")?;
            self.wait(1.2);
            if self.seen.waiting_for_ack.is_some() {
                break;
            }
        }
        let end = Instant::now() + Duration::from_secs(20);
        while self.seen.waiting_for_ack.is_none() && Instant::now() < end {
            self.wait(0.2);
        }
        if let Some(incident) = self.seen.waiting_for_ack.take() {
            self.say("  (a person would look now; the demo acknowledges after 3 s)");
            self.wait(3.0);
            let out = self.recovery().args(["ack", &incident]).output()?;
            self.say(&format!(
                "ACK `ms11-recovery ack {incident}`: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
        self.wait(tail_secs as f64);
        Ok(())
    }

    fn summary(&mut self) -> Result<()> {
        let report = ms11_persist::StateFiles::new(self.paths.p("state/session_state.json"))
            .load_read_only()?
            .context("no final state")?;
        let state: SessionState = report.state;
        let ledger = ms11_sim::check_ledger(&self.paths.p("ledger.txt"))?;
        let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
        let mut attempts: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut ttr: Vec<u64> = Vec::new();
        let mut recovered = 0;
        let mut by_person = 0;
        for inc in &state.crash_history {
            *by_kind.entry(inc.kind.as_str().to_owned()).or_default() += 1;
            for a in &inc.attempts {
                if a.outcome != AttemptOutcome::Skipped {
                    *attempts
                        .entry((a.strategy.clone(), a.outcome.as_str().to_owned()))
                        .or_default() += 1;
                }
            }
            if let Some(resolution) = inc
                .resolution
                .as_ref()
                .filter(|r| r.status == ResolutionStatus::Recovered)
            {
                recovered += 1;
                // A person's acknowledgement may be followed by an automatic restart (the
                // client was down): it counts as the person's.
                if inc
                    .attempts
                    .iter()
                    .any(|a| a.strategy == "manual" && a.outcome == AttemptOutcome::Recovered)
                {
                    by_person += 1;
                }
                if let Some(ms) = resolution.time_to_recover_ms {
                    ttr.push(ms);
                }
            }
        }
        ttr.sort_unstable();
        let done: BTreeSet<&str> = state
            .tasks()
            .iter()
            .filter(|t| t.state == TaskState::Done)
            .map(|t| t.id.as_str())
            .collect();
        let lost: Vec<&String> = self
            .seen
            .acknowledged
            .iter()
            .filter(|id| !done.contains(id.as_str()))
            .collect();
        let pct = |p: f64| {
            ttr.get(((ttr.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        println!("\n================ summary ================");
        println!("incidents by kind:");
        for (k, n) in &by_kind {
            println!("  {k:<16} {n}");
        }
        println!("strategy attempts:");
        for ((s, o), n) in &attempts {
            println!("  {s:<10} {o:<10} {n}");
        }
        println!(
            "recovered                 {recovered} of {} incidents: {} automatically, {by_person} after a person acknowledged",
            state.crash_history.len(),
            recovered - by_person
        );
        println!(
            "time to recover           p50 {} ms, max {} ms",
            pct(0.5),
            ttr.last().copied().unwrap_or(0)
        );
        println!(
            "tasks completed           {} (effects in the bot's ledger: {})",
            done.len(),
            ledger.effects
        );
        println!(
            "lost tasks                {} (acknowledged but not done in the saved state)",
            lost.len()
        );
        println!(
            "duplicated tasks          {} (effects recorded twice)",
            ledger.duplicates.len()
        );
        println!("runner starts             {}", self.runner_starts);
        println!(
            "state saves               {} (generation {})",
            state.runtime.save_count, state.generation
        );
        println!(
            "final state               {} / {}, level {} ({}/{} xp), quest step {}",
            state.planet,
            state.zone,
            state.xp_level,
            state.xp_current,
            state.xp_next_level,
            state.quest_step
        );
        println!("session directory         {}", self.paths.root.display());
        if !lost.is_empty() || !ledger.duplicates.is_empty() {
            bail!("lost {:?}, duplicated {:?}", lost, ledger.duplicates);
        }
        Ok(())
    }
}
