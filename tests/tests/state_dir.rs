//! The state directory under a running runner, with the real binary: its lock file or
//! the whole directory removed (an operator's cleanup, systemd-tmpfiles) is noticed at
//! the next save, said in the log and re-created, and the session goes on healthy.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::Duration;

use ms11_e2e::Session;
use ms11_sim::ScenarioOptions;
use ms11_state::TaskState;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn running() -> Session {
    Session::running(
        ScenarioOptions {
            task_ms: 100,
            ..ScenarioOptions::default()
        },
        2,
    )
}

/// `ms11-recovery status --json` for the session `main`.
fn cli_status(s: &Session) -> Value {
    let (code, out) = s.cli(&["status", "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["main"].clone()
}

/// The lock file beside the state file.
fn lock_file(s: &Session) -> std::path::PathBuf {
    s.scenario.state_file().with_extension("json.lock")
}

/// Waits until tasks acknowledged after this call were saved, then checks the session
/// is healthy and its lock file is back with the runner's pid.
fn assert_back(s: &Session) {
    let done = s.state().count_tasks(TaskState::Done);
    s.wait_tasks(done + 2, T);
    let pid = s.runner_pid().unwrap();
    assert_eq!(
        std::fs::read_to_string(lock_file(s)).unwrap(),
        format!("{pid}\n"),
        "the lock file is back with the runner's pid"
    );
    let status = cli_status(s);
    assert_eq!(status["health"], "healthy", "{status}");
    assert!(status["saves_failing"].is_null(), "{status}");
    assert!(s.state().count_tasks(TaskState::Done) >= done + 2);
}

#[test]
fn a_lock_file_removed_under_a_running_runner_is_re_created_at_the_next_save() {
    let s = running();
    let lock = lock_file(&s);
    assert!(lock.exists());
    std::fs::remove_file(&lock).unwrap();
    // The bot's next task_done is saved at once, and that save notices.
    let event = s.wait_event("lock_file_recreated", &[], T);
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains("was removed") && m.contains("session_state.json.lock")),
        "{event}"
    );
    assert_back(&s);
    s.assert_nothing_lost_or_repeated();
}

#[test]
fn a_state_directory_removed_under_a_running_runner_is_re_created_at_the_next_save() {
    let s = running();
    let state_dir = s.scenario.state_file().parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&state_dir).unwrap();
    let event = s.wait_event("state_dir_recreated", &[], T);
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains("re-created it (0700)")),
        "{event}"
    );
    // The control socket lived there too: it is bound again by its own check.
    s.wait_event("control_socket_recreated", &[], T);
    assert_back(&s);
    s.assert_nothing_lost_or_repeated();
}
