//! The control socket as an operator meets it, with the real binary: it never holds up
//! a stop, never deletes what is not its own, serves every client at once, and comes
//! back when its file is removed.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ms11_e2e::Session;
use ms11_sim::ScenarioOptions;
use serde_json::json;

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

#[test]
fn a_runner_whose_socket_file_was_removed_still_stops_at_sigterm() {
    let mut s = running();
    std::fs::remove_file(s.control_socket()).unwrap();
    let started = Instant::now();
    let code = s.stop_runner();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the runner took {took:?} to stop (it hung and was killed)"
    );
    assert_eq!(code, Some(0));
    s.wait_event("terminating", &[], T);
}

#[test]
fn status_answers_at_once_with_a_hundred_idle_connections_open() {
    let s = running();
    let idle: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(s.control_socket()).unwrap())
        .collect();
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let (answer, took) = s.control(&json!({"cmd": "status"}));
        assert_eq!(answer["ok"], true, "{answer}");
        slowest = slowest.max(took);
    }
    assert!(
        slowest < Duration::from_millis(100),
        "status took {slowest:?} with 100 idle connections open"
    );
    drop(idle);
}

#[test]
fn a_socket_file_removed_while_running_is_noticed_and_re_created() {
    let s = running();
    std::fs::remove_file(s.control_socket()).unwrap();
    let event = s.wait_event("control_socket_recreated", &[], T);
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains("was removed")),
        "{event}"
    );
    let (answer, _) = s.control(&json!({"cmd": "status"}));
    assert_eq!(answer["ok"], true, "{answer}");
}

#[test]
fn a_control_socket_at_the_state_file_is_a_configuration_error() {
    let s = Session::new(ScenarioOptions::default());
    let state = s.scenario.state_file();
    let set = format!("control_socket={:?}", state.display().to_string());
    let out = s.cli_output(&["--set", &set, "run", "--log-format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.matches(&state.display().to_string()).count() >= 2,
        "the message names the socket and the state file: {stderr}"
    );
    assert!(
        !state.exists(),
        "nothing was created at the state file's path"
    );
}

#[test]
fn a_control_socket_path_holding_a_file_is_left_alone() {
    let s = Session::new(ScenarioOptions::default());
    let file = s.scenario.root.join("notes.txt");
    std::fs::write(&file, "precious").unwrap();
    let set = format!("control_socket={:?}", file.display().to_string());
    let out = s.cli_output(&["--set", &set, "run", "--log-format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("a regular file"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
}
