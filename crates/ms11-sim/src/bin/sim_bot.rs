//! `sim-bot`: a bot speaking the agent protocol on stdin/stdout. It works through the
//! runner's task queue (re-runs first), adds tasks
//! from a seeded plan, reports state patches, records each task's effect in
//! `--ledger` before `task_done`, and waits for every `ack`. A task handed out whose
//! effect is already in the ledger is done again and so counted as a duplicate (only
//! `--verify-reruns` skips a re-run on purpose). On command (a file in
//! `--control-dir`) it hangs, prints garbage or crashes mid-task.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use crossbeam_channel::{Receiver, select, tick};
use ms11_agent::{Decoded, RunnerMessage, decode_line};
use ms11_sim::ledger::record_effect;
use ms11_sim::{check_ledger, poll_commands, send_command};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// A simulated bot.
#[derive(Parser)]
#[command(name = "sim-bot", version)]
struct Args {
    /// Effect ledger: one line per task whose effect happened.
    #[arg(long, default_value = "sim-bot-ledger.txt")]
    ledger: PathBuf,
    /// Tasks to add from the plan in all.
    #[arg(long, default_value_t = 50)]
    total_tasks: usize,
    /// Mean task duration, milliseconds.
    #[arg(long, default_value_t = 400)]
    task_ms: u64,
    /// Heartbeat interval, milliseconds.
    #[arg(long, default_value_t = 500)]
    heartbeat_ms: u64,
    /// The client's control directory (relog drops `reconnect` there).
    #[arg(long)]
    client_control_dir: Option<PathBuf>,
    /// The client's log (relog waits for `Login successful` there).
    #[arg(long)]
    client_log: Option<PathBuf>,
    /// Directory polled for fault commands: hang, garbage, crash.
    #[arg(long)]
    control_dir: Option<PathBuf>,
    /// Random seed of the plan.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The protocol major announced in `hello` (a bot of another version: not 1).
    #[arg(long, default_value_t = 1)]
    protocol: u32,
    /// Skip a re-run (a task the runner resumes as in flight) whose effect is already in
    /// the ledger, as a bot that checks its own effects would. Off by default: then a
    /// task run twice is recorded twice and counted as a duplicate. A task handed out
    /// again without being a re-run is always recorded as a duplicate.
    #[arg(long)]
    verify_reruns: bool,
    /// Only check a ledger and print `{"effects","unique","duplicates"}`.
    #[arg(long, value_name = "FILE")]
    check_ledger: Option<PathBuf>,
}

struct Working {
    id: String,
    until: Instant,
    next_patch: Instant,
}

struct WaitingAck {
    id: String,
    seq: u64,
    since: Instant,
    /// Waiting for the ack of a `task_started` claim (else of a `task_done`).
    claim: bool,
}

struct Relogging {
    offset: u64,
    deadline: Instant,
}

struct Bot {
    args: Args,
    out: std::io::Stdout,
    rng: rand::rngs::StdRng,
    queue: VecDeque<String>,
    rerun: HashSet<String>,
    effects: HashSet<String>,
    planned: usize,
    seq: u64,
    working: Option<Working>,
    waiting: Option<WaitingAck>,
    relogging: Option<Relogging>,
    resumed: bool,
    crash_next: bool,
    xp: (i64, i64, i64),
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.check_ledger {
        let check = check_ledger(path)?;
        println!(
            "{}",
            json!({"effects": check.effects, "unique": check.unique, "duplicates": check.duplicates})
        );
        return Ok(());
    }
    let effects: HashSet<String> = check_ledger(&args.ledger)?.ids.into_iter().collect();
    let rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let messages = spawn_stdin_reader();
    let mut bot = Bot {
        out: std::io::stdout(),
        rng,
        queue: VecDeque::new(),
        rerun: HashSet::new(),
        effects,
        planned: 0,
        seq: 0,
        working: None,
        waiting: None,
        relogging: None,
        resumed: false,
        crash_next: false,
        xp: (1, 0, 1000),
        args,
    };
    bot.send(&json!({"type": "hello", "protocol": bot.args.protocol, "bot": "sim-bot", "version": env!("CARGO_PKG_VERSION")}));
    let heartbeat = tick(Duration::from_millis(bot.args.heartbeat_ms.max(50)));
    let step = tick(Duration::from_millis(20));
    loop {
        select! {
            recv(messages) -> m => match m {
                Ok(message) => { if !bot.on_message(message) { return Ok(()); } }
                Err(_) => return Ok(()), // stdin closed: the runner is gone
            },
            recv(heartbeat) -> _ => bot.send(&json!({"type": "heartbeat"})),
            recv(step) -> _ => bot.step(),
        }
    }
}

fn spawn_stdin_reader() -> Receiver<RunnerMessage> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            match decode_line::<RunnerMessage>(line.as_bytes()) {
                Decoded::Message(m) => {
                    if tx.send(m).is_err() {
                        break;
                    }
                }
                other => eprintln!("sim-bot: ignored from runner: {other:?}"),
            }
        }
    });
    rx
}

impl Bot {
    fn send(&mut self, value: &Value) {
        let mut line = value.to_string();
        line.push('\n');
        let _ = self.out.write_all(line.as_bytes());
        let _ = self.out.flush();
    }

    /// Returns false to exit.
    fn on_message(&mut self, message: RunnerMessage) -> bool {
        match message {
            RunnerMessage::Resume { state, rerun } => {
                self.resumed = true;
                self.working = None;
                self.waiting = None;
                self.rerun = rerun.iter().cloned().collect();
                self.queue = rerun.into_iter().collect();
                for id in state.task_queue() {
                    if !self.queue.contains(id) {
                        self.queue.push_back(id.clone());
                    }
                }
                self.planned = state
                    .tasks()
                    .iter()
                    .filter(|t| t.id.starts_with("t-"))
                    .count();
                self.xp = (state.xp_level, state.xp_current, state.xp_next_level.max(1));
                eprintln!(
                    "sim-bot: resumed with {} task(s), {} re-run(s)",
                    self.queue.len(),
                    self.rerun.len()
                );
            }
            RunnerMessage::Ack { seq } => {
                if self.waiting.as_ref().is_some_and(|w| w.seq == seq)
                    && let Some(w) = self.waiting.take()
                    && w.claim
                {
                    self.begin(w.id);
                }
            }
            RunnerMessage::Rejected { of, reason } => {
                eprintln!("sim-bot: the runner refused my {of}: {reason}");
            }
            RunnerMessage::Relog => {
                let offset = self
                    .args
                    .client_log
                    .as_ref()
                    .and_then(|p| std::fs::metadata(p).ok())
                    .map_or(0, |m| m.len());
                if let Some(dir) = &self.args.client_control_dir {
                    let _ = send_command(dir, "reconnect");
                }
                self.relogging = Some(Relogging {
                    offset,
                    deadline: Instant::now() + Duration::from_secs(10),
                });
            }
            RunnerMessage::Shutdown => return false,
        }
        true
    }

    fn step(&mut self) {
        self.faults();
        self.relog_progress();
        if let Some(w) = &self.waiting {
            if w.since.elapsed() > Duration::from_secs(2) {
                let (id, seq) = (w.id.clone(), w.seq);
                let kind = if w.claim { "task_started" } else { "task_done" };
                self.send(&json!({"type": kind, "id": id, "seq": seq}));
                if let Some(w) = &mut self.waiting {
                    w.since = Instant::now();
                }
            }
            return;
        }
        if !self.resumed {
            return;
        }
        if let Some(work) = &self.working {
            let now = Instant::now();
            if now >= work.until {
                let id = work.id.clone();
                self.finish(&id);
            } else if now >= work.next_patch {
                self.patch();
                if let Some(w) = &mut self.working {
                    w.next_patch = now + Duration::from_millis(self.args.task_ms / 2 + 1);
                }
            }
            return;
        }
        let next = match self.queue.pop_front() {
            Some(id) => id,
            None if self.planned < self.args.total_tasks => {
                self.planned += 1;
                let id = format!("t-{:04}", self.planned);
                let name = plan_name(self.planned, &mut self.rng);
                self.send(&json!({"type": "task_added", "id": id, "name": name}));
                id
            }
            None => return,
        };
        // Claim it: the runner records it in flight durably, then acks; only then work.
        self.seq += 1;
        let seq = self.seq;
        self.send(&json!({"type": "task_started", "id": next, "seq": seq}));
        self.waiting = Some(WaitingAck {
            id: next,
            seq,
            since: Instant::now(),
            claim: true,
        });
    }

    fn begin(&mut self, next: String) {
        if self.crash_next {
            eprintln!("sim-bot: crashing mid-task as told");
            std::process::exit(101);
        }
        if self.effects.contains(&next) {
            if self.args.verify_reruns && self.rerun.contains(&next) {
                // Asked for: a re-run whose effect already happened is verified and
                // reported done without doing it again.
                eprintln!("sim-bot: re-run {next} already done (ledger); not repeating it");
                self.done(&next);
                return;
            }
            // Never hidden: doing it again records the effect twice, which the ledger
            // check counts as a duplicate.
            eprintln!(
                "sim-bot: {next} was handed out although its effect is in the ledger; doing it again (a duplicate)"
            );
        }
        let spread = self.args.task_ms / 2;
        let ms = self.args.task_ms - spread + self.rng.random_range(0..=spread * 2);
        let now = Instant::now();
        self.working = Some(Working {
            id: next,
            until: now + Duration::from_millis(ms),
            next_patch: now,
        });
    }

    fn patch(&mut self) {
        let (mut level, mut current, mut next) = self.xp;
        current += self.rng.random_range(20..120);
        while current > next {
            current -= next;
            level += 1;
            next += 250;
        }
        self.xp = (level, current, next);
        let planets = ["naboo", "tatooine", "corellia", "talus"];
        let planet = planets[usize::try_from(level).unwrap_or(0) % planets.len()];
        let (x, y): (i32, i32) = (
            self.rng.random_range(-6000..6000),
            self.rng.random_range(-6000..6000),
        );
        let patch = json!({"type": "state", "patch": {
            "planet": planet,
            "zone": format!("{planet}_outpost_{}", level % 3),
            "coordinates": [x, y],
            "xp_level": level, "xp_current": current, "xp_next_level": next,
            "quest_step": self.planned,
            "current_quest": {"name": format!("Legacy Quest part {}", self.planned / 5 + 1)},
        }});
        self.send(&patch);
    }

    fn finish(&mut self, id: &str) {
        self.working = None;
        if let Err(e) = record_effect(&self.args.ledger, id) {
            eprintln!("sim-bot: cannot record the effect of {id}: {e}");
            return;
        }
        self.effects.insert(id.to_owned());
        self.done(id);
    }

    fn done(&mut self, id: &str) {
        self.seq += 1;
        let seq = self.seq;
        self.send(&json!({"type": "task_done", "id": id, "seq": seq}));
        self.waiting = Some(WaitingAck {
            id: id.to_owned(),
            seq,
            since: Instant::now(),
            claim: false,
        });
    }

    fn relog_progress(&mut self) {
        let Some(r) = &self.relogging else { return };
        let found = self.args.client_log.as_ref().is_some_and(|path| {
            let Ok(mut f) = std::fs::File::open(path) else {
                return false;
            };
            if f.seek(SeekFrom::Start(r.offset)).is_err() {
                return false;
            }
            let mut text = String::new();
            let _ = f.take(1 << 20).read_to_string(&mut text);
            text.contains("Login successful")
        });
        if found {
            self.relogging = None;
            self.send(&json!({"type": "relog_result", "ok": true}));
        } else if Instant::now() >= r.deadline {
            self.relogging = None;
            self.send(&json!({"type": "relog_result", "ok": false, "reason": "no `Login successful` within 10 s"}));
        }
    }

    fn faults(&mut self) {
        let Some(dir) = &self.args.control_dir else {
            return;
        };
        for command in poll_commands(dir) {
            match command.as_str() {
                "hang" => {
                    eprintln!("sim-bot: hanging as told");
                    loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                }
                "garbage" => {
                    let mut junk = String::from(
                        "Traceback (most recent call last):\n  File \"bot.py\", line 12\n{\"type\": \"task_do\nnot json at all\n",
                    );
                    junk.push_str(&"x".repeat(2 * 1024 * 1024));
                    junk.push('\n');
                    let _ = self.out.write_all(junk.as_bytes());
                    let bytes: Vec<u8> = (0..512).map(|_| self.rng.random()).collect();
                    let _ = self.out.write_all(&bytes);
                    let _ = self.out.write_all(b"\n");
                    let _ = self.out.flush();
                }
                "crash" => self.crash_next = true,
                other => eprintln!("sim-bot: unknown command `{other}`"),
            }
        }
    }
}

fn plan_name(n: usize, rng: &mut impl Rng) -> String {
    let kinds = [
        "travel to",
        "quest step at",
        "hunt near",
        "craft at",
        "survey near",
    ];
    let places = [
        "Theed",
        "Keren",
        "Mos Eisley",
        "Coronet",
        "Anchorhead",
        "Dearic",
    ];
    format!(
        "{} {} ({n})",
        kinds[rng.random_range(0..kinds.len())],
        places[rng.random_range(0..places.len())]
    )
}
