//! Real child processes: exits and signals reported at once, staged stops, process
//! groups killed whole, the parent-death signal, leftovers of a killed runner.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use ms11_process::{
    LeftoverAction, ManagedChild, ProcessSpec, StdioMode, StopOutcome, kill_leftovers,
};

const FIXTURE: &str = env!("CARGO_BIN_EXE_ms11-fixture-child");

fn spec(args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        program: FIXTURE.into(),
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        stdout: StdioMode::Piped,
        ..ProcessSpec::default()
    }
}

fn running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next())
        .unwrap_or("gone");
    state != "gone" && state != "Z"
}

#[test]
fn exit_codes_and_signals_are_reported_at_once() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let child = ManagedChild::spawn(&spec(&["exit", "3"]), "client", tx.clone()).unwrap();
    let event = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (event.role.as_str(), event.pid, event.exit.code),
        ("client", child.pid(), Some(3))
    );
    let _segv = ManagedChild::spawn(&spec(&["crash-segv"]), "client", tx).unwrap();
    let event = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(event.exit.signal, Some(11));
}

#[test]
fn a_child_ignoring_term_is_killed_after_the_grace_period() {
    let (tx, _rx) = crossbeam_channel::unbounded();
    let mut child = ManagedChild::spawn(&spec(&["ignore-term"]), "client", tx).unwrap();
    let mut out = BufReader::new(child.take_stdout().unwrap());
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    let started = Instant::now();
    assert_eq!(
        child.stop(15, Duration::from_millis(300)),
        StopOutcome::Killed
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(child.exit_info().unwrap().signal, Some(9));
    let (tx, _rx) = crossbeam_channel::unbounded();
    let polite = ManagedChild::spawn(&spec(&["hang"]), "bot", tx).unwrap();
    assert_eq!(
        polite.stop(15, Duration::from_secs(5)),
        StopOutcome::ExitedAfterSignal
    );
    assert_eq!(
        polite.stop(15, Duration::from_secs(5)),
        StopOutcome::AlreadyExited
    );
}

#[test]
fn stopping_kills_the_whole_process_group_grandchildren_included() {
    let (tx, _rx) = crossbeam_channel::unbounded();
    let mut child =
        ManagedChild::spawn(&spec(&["spawn-grandchildren", "3"]), "client", tx).unwrap();
    let out = BufReader::new(child.take_stdout().unwrap());
    let grandchildren: Vec<u32> = out
        .lines()
        .take(3)
        .map(|l| l.unwrap().trim().parse().unwrap())
        .collect();
    assert!(grandchildren.iter().all(|&p| running(p)));
    child.stop(15, Duration::from_secs(2));
    let end = Instant::now() + Duration::from_secs(5);
    while grandchildren.iter().any(|&p| running(p)) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        grandchildren.iter().all(|&p| !running(p)),
        "grandchildren survived"
    );
}

#[test]
fn leftovers_of_a_previous_runner_are_killed_but_reused_pids_are_not() {
    // A process group that a "previous runner" recorded.
    let (tx, _rx) = crossbeam_channel::unbounded();
    let child = ManagedChild::spawn(&spec(&["hang"]), "client", tx).unwrap();
    let record = child.record();
    // A record whose pid now belongs to another program (this test process).
    let mut reused = record.clone();
    reused.pid = i32::try_from(std::process::id()).unwrap();
    reused.pgid = reused.pid;
    reused.program = "SwgClient_r.exe".into();
    let actions: Vec<LeftoverAction> = kill_leftovers(&[record, reused])
        .into_iter()
        .map(|l| l.action)
        .collect();
    assert_eq!(actions, [LeftoverAction::Killed, LeftoverAction::PidReused]);
    assert!(
        child.wait_exit(Duration::from_secs(5)).is_some(),
        "the leftover died"
    );
}

#[test]
fn a_child_dies_when_the_process_that_started_it_dies() {
    // The fixture starts grandchildren with the same parent-death setup? No: use a
    // helper process: this test binary re-run as a tiny "runner" that spawns a child
    // through ManagedChild and is then SIGKILLed.
    let exe = std::env::current_exe().unwrap();
    let mut runner = std::process::Command::new(exe)
        .args(["--exact", "pdeathsig_helper", "--ignored", "--nocapture"])
        .env("MS11_PDEATHSIG_HELPER", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(runner.stdout.take().unwrap());
    let pid: u32 = out
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("child ").map(|p| p.trim().parse().unwrap()))
        .unwrap();
    assert!(running(pid));
    runner.kill().unwrap();
    runner.wait().unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while running(pid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!running(pid), "the child outlived its runner");
}

/// Entry point of the helper process of `a_child_dies_when_the_process_that_started_it_dies`.
#[test]
#[ignore = "helper process"]
fn pdeathsig_helper() {
    if std::env::var_os("MS11_PDEATHSIG_HELPER").is_none() {
        return;
    }
    let (tx, _rx) = crossbeam_channel::unbounded();
    let child = ManagedChild::spawn(&spec(&["hang"]), "client", tx).unwrap();
    println!("child {}", child.pid());
    std::thread::sleep(Duration::from_secs(30));
}
