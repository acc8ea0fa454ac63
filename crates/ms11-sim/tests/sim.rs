//! The simulated client and bot as real processes: commands, exit codes, dump files,
//! SIGTERM, and the bot's protocol over pipes with its ledger.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ms11_sim::{check_ledger, send_command};
use serde_json::{Value, json};

const CLIENT: &str = env!("CARGO_BIN_EXE_sim-client");
const BOT: &str = env!("CARGO_BIN_EXE_sim-bot");

fn client(dir: &std::path::Path) -> Child {
    Command::new(CLIENT)
        .args([
            "--window",
            "off",
            "--startup-ms",
            "50",
            "--lines-per-sec",
            "50",
            "--log",
        ])
        .arg(dir.join("client.log"))
        .arg("--control-dir")
        .arg(dir.join("cc"))
        .arg("--dump-dir")
        .arg(dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_for_log(dir: &std::path::Path, text: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(dir.join("client.log"))
        .unwrap_or_default()
        .contains(text)
    {
        assert!(Instant::now() < end, "`{text}` never logged");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < end, "the client did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_client_logs_in_and_obeys_exit_and_disconnect_commands() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = client(dir.path());
    wait_for_log(dir.path(), "Login successful");
    send_command(&dir.path().join("cc"), "disconnect").unwrap();
    wait_for_log(dir.path(), "Connection to server lost. Please reconnect.");
    send_command(&dir.path().join("cc"), "reconnect").unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(dir.path().join("client.log"))
        .unwrap()
        .matches("Login successful")
        .count()
        < 2
    {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(20));
    }
    send_command(&dir.path().join("cc"), "exit-3").unwrap();
    assert_eq!(wait_exit(&mut c).code(), Some(3));
}

#[test]
fn timestamps_are_written_at_start_and_before_an_exit_on_command() {
    let dir = tempfile::tempdir().unwrap();
    let stamps = dir.path().join("ts");
    let before = ms11_sim::timestamps::unix_ns();
    let mut c = Command::new(CLIENT)
        .args(["--window", "off", "--startup-ms", "10", "--log"])
        .arg(dir.path().join("client.log"))
        .arg("--control-dir")
        .arg(dir.path().join("cc"))
        .arg("--timestamps")
        .arg(&stamps)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_log(dir.path(), "Login successful");
    let started = ms11_sim::timestamps::read(&stamps).unwrap();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].0, "start");
    assert!(started[0].1 >= before);
    send_command(&dir.path().join("cc"), "exit-3").unwrap();
    assert_eq!(wait_exit(&mut c).code(), Some(3));
    let after = ms11_sim::timestamps::unix_ns();
    let all = ms11_sim::timestamps::read(&stamps).unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1].0, "exit");
    assert!(all[0].1 < all[1].1 && all[1].1 <= after, "{all:?}");
}

#[test]
fn a_crash_dump_is_written_with_the_clients_names_then_it_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = client(dir.path());
    wait_for_log(dir.path(), "Login successful");
    send_command(&dir.path().join("cc"), "crash-dump").unwrap();
    assert_eq!(wait_exit(&mut c).signal(), Some(6), "SIGABRT");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("SwgClient_r-1.0-"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let txt = names.iter().find(|n| n.ends_with(".txt")).unwrap();
    assert_eq!(
        txt.len(),
        "SwgClient_r-1.0-20261125052854.txt".len(),
        "{txt}"
    );
    assert!(
        std::fs::read_to_string(dir.path().join(txt))
            .unwrap()
            .starts_with("automated crash dump from ")
    );
}

#[test]
fn sigterm_logs_shutting_down_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = client(dir.path());
    wait_for_log(dir.path(), "Login successful");
    Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(wait_exit(&mut c).code(), Some(0));
    wait_for_log(dir.path(), "Client shutting down");
}

#[test]
fn the_bot_claims_works_records_and_reports_each_task_once() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.txt");
    let mut bot = Command::new(BOT)
        .args([
            "--total-tasks",
            "3",
            "--task-ms",
            "20",
            "--heartbeat-ms",
            "5000",
            "--ledger",
        ])
        .arg(&ledger)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = bot.stdin.take().unwrap();
    let mut lines = BufReader::new(bot.stdout.take().unwrap()).lines();
    let mut next = || -> Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    assert_eq!(next()["type"], "hello");
    let state = ms11_state::SessionState::new("s", "naboo", "theed", 1.0);
    let mut send = |v: Value| writeln!(stdin, "{v}").unwrap();
    send(json!({"type": "resume", "state": state, "rerun": []}));
    let mut done = Vec::new();
    while done.len() < 3 {
        let m = next();
        match m["type"].as_str().unwrap() {
            "task_started" | "task_done" => {
                if m["type"] == "task_done" {
                    done.push(m["id"].as_str().unwrap().to_owned());
                }
                send(json!({"type": "ack", "seq": m["seq"]}));
            }
            _ => {}
        }
    }
    assert_eq!(done, ["t-0001", "t-0002", "t-0003"]);
    let check = check_ledger(&ledger).unwrap();
    assert_eq!(
        (check.effects, check.unique, check.duplicates.len()),
        (3, 3, 0)
    );
    send(json!({"type": "shutdown"}));
    assert_eq!(bot.wait().unwrap().code(), Some(0));
}

/// Runs a bot on a ledger that already holds `t-0001`, resumes it with `t-0001` pending
/// (and as a re-run when `rerun`), acks everything until it reports `t-0001` done, and
/// returns the ledger's duplicates.
fn hand_out_a_task_already_done(rerun: bool, verify_reruns: bool) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.txt");
    std::fs::write(&ledger, "t-0001\n").unwrap();
    let mut args = vec![
        "--total-tasks",
        "1",
        "--task-ms",
        "20",
        "--heartbeat-ms",
        "5000",
    ];
    if verify_reruns {
        args.push("--verify-reruns");
    }
    let mut bot = Command::new(BOT)
        .args(&args)
        .arg("--ledger")
        .arg(&ledger)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = bot.stdin.take().unwrap();
    let mut lines = BufReader::new(bot.stdout.take().unwrap()).lines();
    let mut next = || -> Value { serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap() };
    assert_eq!(next()["type"], "hello");
    let mut state = ms11_state::SessionState::new("s", "naboo", "theed", 1.0);
    state.add_task("t-0001", "patrol").unwrap();
    let rerun: Vec<&str> = if rerun { vec!["t-0001"] } else { vec![] };
    let mut send = |v: Value| writeln!(stdin, "{v}").unwrap();
    send(json!({"type": "resume", "state": state, "rerun": rerun}));
    loop {
        let m = next();
        if matches!(m["type"].as_str(), Some("task_started" | "task_done")) {
            send(json!({"type": "ack", "seq": m["seq"]}));
            if m["type"] == "task_done" {
                assert_eq!(m["id"], "t-0001");
                break;
            }
        }
    }
    send(json!({"type": "shutdown"}));
    assert_eq!(bot.wait().unwrap().code(), Some(0));
    check_ledger(&ledger).unwrap().duplicates
}

#[test]
fn a_task_handed_out_again_is_recorded_as_a_duplicate_unless_a_rerun_is_verified_on_purpose() {
    assert_eq!(hand_out_a_task_already_done(false, false), ["t-0001"]);
    assert_eq!(hand_out_a_task_already_done(true, false), ["t-0001"]);
    // A task that is not a re-run is never skipped, even when asked to verify re-runs.
    assert_eq!(hand_out_a_task_already_done(false, true), ["t-0001"]);
    assert!(hand_out_a_task_already_done(true, true).is_empty());
}
