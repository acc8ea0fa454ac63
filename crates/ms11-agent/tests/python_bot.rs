//! Runs the example bot (`examples/python_bot/bot.py`) with `python3` over real pipes and
//! drives it the way the runner does: this crate's reader, writer and exactly-once rules,
//! with real durable saves (ms11-persist) before every ack.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use ms11_agent::{
    Action, AgentWriter, BotEvent, BotMessage, BotReader, ExactlyOnce, ReaderConfig, RunnerMessage,
    spawn_reader,
};
use ms11_persist::{AtomicStore, StateStore};
use ms11_state::{SessionState, TaskState};

const ACK_TIMEOUT_S: f64 = 2.0;

fn bot_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python_bot/bot.py")
}

fn python_available() -> bool {
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            ms11_test_support::skip(
                "python_bot",
                ms11_test_support::Need::Python3,
                "python3 is not installed (needed to run the example bot)",
            );
            false
        }
    }
}

/// The runner's side of one bot session.
struct Harness {
    child: Child,
    reader: BotReader,
    writer: AgentWriter<ChildStdin>,
    rules: ExactlyOnce,
    state: SessionState,
    store: AtomicStore,
    logs: Vec<String>,
    heartbeats: u32,
    deadline: Instant,
}

impl Harness {
    fn start(dir: &Path, state: SessionState) -> Harness {
        let mut store = AtomicStore::open(dir.join("session_state.json"), 3).unwrap();
        let mut state = state;
        store.save(&mut state).unwrap();
        let mut child = Command::new("python3")
            .arg(bot_script())
            .args(["--heartbeat-interval", "0.1"])
            .args(["--ack-timeout", &ACK_TIMEOUT_S.to_string()])
            .args(["--task-seconds", "0.1", "--patches-per-task", "2"])
            .args(["--xp-per-task", "300", "--relog-seconds", "0.05"])
            .arg("--effects-file")
            .arg(dir.join("effects.txt"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        Harness {
            child,
            reader: spawn_reader(stdout, ReaderConfig::new("python-bot")).unwrap(),
            writer: AgentWriter::new(stdin, "python-bot"),
            rules: ExactlyOnce::new(),
            state,
            store,
            logs: Vec::new(),
            heartbeats: 0,
            deadline: Instant::now() + Duration::from_secs(30),
        }
    }

    /// The next message that needs a decision (not heartbeat, log or state, which are
    /// handled here), or `None` if nothing came within `wait`.
    fn next_within(&mut self, wait: Duration) -> Option<BotMessage> {
        let until = Instant::now() + wait;
        loop {
            assert!(Instant::now() < self.deadline, "test took too long");
            let left = until.saturating_duration_since(Instant::now());
            let event = match self.reader.events.recv_timeout(left) {
                Ok(event) => event,
                Err(_) => return None,
            };
            let message = match event {
                BotEvent::Message(message) => message,
                other => panic!("unexpected event from the bot: {other:?}"),
            };
            match &message {
                BotMessage::Heartbeat => self.heartbeats += 1,
                BotMessage::Log { msg, .. } => self.logs.push(msg.clone()),
                BotMessage::State { .. } => {
                    let action = self.rules.handle(&mut self.state, &message, now());
                    assert!(matches!(action, Action::StateChanged { .. }), "{action:?}");
                }
                _ => return Some(message),
            }
        }
    }

    fn next(&mut self) -> BotMessage {
        self.next_within(Duration::from_secs(10))
            .expect("the bot sent nothing for 10 s")
    }

    /// Applies the rules; returns the seq to acknowledge after a durable save.
    fn handle_expecting_save(&mut self, message: &BotMessage) -> u64 {
        match self.rules.handle(&mut self.state, message, now()) {
            Action::SaveThenAck { seq } => seq,
            other => panic!("expected SaveThenAck for {message:?}, got {other:?}"),
        }
    }

    fn save_then_ack(&mut self, seq: u64) {
        let mark = self.rules.change_mark();
        self.store.save(&mut self.state).unwrap();
        self.rules.saved(mark);
        self.writer.send(&RunnerMessage::Ack { seq }).unwrap();
    }

    fn expect_hello_and_resume(&mut self) -> Vec<String> {
        let hello = self.next();
        assert!(
            matches!(hello, BotMessage::Hello { protocol: 1, .. }),
            "{hello:?}"
        );
        assert_eq!(
            self.rules.handle(&mut self.state, &hello, now()),
            Action::SendResume
        );
        let resume = self.rules.resume(&self.state);
        let RunnerMessage::Resume { rerun, .. } = &resume else {
            unreachable!()
        };
        let rerun = rerun.clone();
        self.writer.send(&resume).unwrap();
        rerun
    }

    fn wait_for_log(&mut self, needle: &str) {
        while !self.logs.iter().any(|l| l.contains(needle)) {
            if let Some(message) = self.next_within(Duration::from_millis(200)) {
                panic!("unexpected {message:?} while waiting for log `{needle}`");
            }
        }
    }

    fn shutdown_and_wait(mut self) -> (i32, Vec<String>) {
        self.writer.send(&RunnerMessage::Shutdown).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < until,
                "the bot did not exit after shutdown"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader ends with Closed once the bot's stdout is closed.
        let closed = self
            .reader
            .events
            .iter()
            .find(|e| matches!(e, BotEvent::Closed(_)));
        assert!(matches!(closed, Some(BotEvent::Closed(ref s)) if s.error.is_none()));
        let output = self.reader.recent_output();
        (status.code().unwrap_or(-1), output)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Never leave the bot behind when an assertion fails.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn state_with(tasks: &[&str]) -> SessionState {
    let mut state = SessionState::new("python-bot-test", "naboo", "theed", now());
    for id in tasks {
        state.add_task(id, &format!("errand {id}")).unwrap();
    }
    state
}

fn effects(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("effects.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_example_bot_works_the_queue_in_order_and_waits_for_every_ack() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(dir.path(), state_with(&["t-1", "t-2", "t-3"]));
    assert_eq!(h.expect_hello_and_resume(), Vec::<String>::new());

    let mut last_seq = 0;
    for (i, id) in ["t-1", "t-2", "t-3"].into_iter().enumerate() {
        // Claim: task_started with a seq; the bot must not act before the ack.
        let started = h.next();
        let BotMessage::TaskStarted {
            id: got,
            seq: Some(seq),
        } = &started
        else {
            panic!("expected task_started of {id}, got {started:?}")
        };
        assert_eq!(got, id);
        assert!(*seq > last_seq, "seq must increase");
        let seq = h.handle_expecting_save(&started);
        assert_eq!(h.state.task(id).unwrap().state, TaskState::InFlight);
        let quiet = h.next_within(Duration::from_millis(300));
        assert_eq!(
            quiet, None,
            "the bot went on before the claim of {id} was acked"
        );
        h.save_then_ack(seq);

        let done = h.next();
        let BotMessage::TaskDone {
            id: got,
            seq: done_seq,
        } = done.clone()
        else {
            panic!("expected task_done of {id}, got {done:?}")
        };
        assert_eq!(got, id);
        assert!(done_seq > seq);
        last_seq = done_seq;
        assert_eq!(h.handle_expecting_save(&done), done_seq);

        if i == 1 {
            // Hold the ack past the bot's ack timeout: it must resend the same
            // task_done (same seq) and still not start the next task.
            let resent = h.next_within(Duration::from_secs_f64(ACK_TIMEOUT_S * 3.0));
            assert_eq!(
                resent.as_ref(),
                Some(&done),
                "expected a resend of {done:?}"
            );
            // Not yet saved: the rules still ask for a save first.
            assert_eq!(h.handle_expecting_save(&done), done_seq);
        } else {
            let quiet = h.next_within(Duration::from_millis(400));
            assert_eq!(
                quiet, None,
                "the bot went on before task_done of {id} was acked"
            );
        }
        h.save_then_ack(done_seq);
        // Durable before the ack: the file on disk already has it done.
        let on_disk = ms11_persist::StateFiles::new(h.store.path())
            .load_read_only()
            .unwrap()
            .unwrap()
            .state;
        assert_eq!(on_disk.task(id).unwrap().state, TaskState::Done);
        assert_eq!(on_disk.task(id).unwrap().done_seq, Some(done_seq));
    }
    h.wait_for_log("task queue empty");
    assert!(h.heartbeats > 0, "no heartbeat seen");
    // Experience from the state patches: 3 tasks × 300 xp.
    assert_eq!(h.state.xp_current, 900);
    assert_eq!(h.state.count_tasks(TaskState::Done), 3);
    assert!(h.state.task_queue().is_empty());

    let (code, output) = h.shutdown_and_wait();
    assert_eq!(code, 0, "the bot must exit 0 after shutdown");
    assert_eq!(effects(dir.path()), ["t-1", "t-2", "t-3"]);
    assert!(
        output.iter().any(|l| l == "finished t-3 errand t-3"),
        "{output:?}"
    );
}

#[test]
fn the_example_bot_verifies_a_rerun_instead_of_repeating_it_and_answers_relog() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut state = state_with(&["t-1", "t-2"]);
    state.start_task("t-1", now()).unwrap();
    // The effect of t-1 happened before the crash; only its task_done was lost.
    std::fs::write(dir.path().join("effects.txt"), "t-1\n").unwrap();
    let mut h = Harness::start(dir.path(), state);
    assert_eq!(h.expect_hello_and_resume(), ["t-1"]);

    let mut order = Vec::new();
    for _ in 0..4 {
        let message = h.next();
        let seq = h.handle_expecting_save(&message);
        h.save_then_ack(seq);
        order.push(message);
    }
    let kinds: Vec<_> = order
        .iter()
        .map(|m| match m {
            BotMessage::TaskStarted { id, .. } => format!("started {id}"),
            BotMessage::TaskDone { id, .. } => format!("done {id}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        ["started t-1", "done t-1", "started t-2", "done t-2"]
    );
    assert_eq!(
        h.state.task("t-1").unwrap().attempts,
        2,
        "t-1 ran a second time"
    );
    h.wait_for_log("task queue empty");
    assert!(
        h.logs
            .iter()
            .any(|l| l.contains("re-run of t-1: its effect is already there")),
        "{:?}",
        h.logs
    );

    h.writer.send(&RunnerMessage::Relog).unwrap();
    let answer = h.next();
    assert_eq!(
        answer,
        BotMessage::RelogResult {
            ok: true,
            reason: None
        }
    );

    let (code, _) = h.shutdown_and_wait();
    assert_eq!(code, 0);
    // t-1's effect is not repeated.
    assert_eq!(effects(dir.path()), ["t-1", "t-2"]);
}
