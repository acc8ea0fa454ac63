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

/// Field `n` (1-based, as in proc(5)) of `/proc/PID/stat`.
fn stat_field(pid: u32, n: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n - 3)?.parse().ok()
}

fn wait_gone(pid: u32) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while running(pid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    !running(pid)
}

/// A client that double-forks a daemon out of its process group and session (`setsid`,
/// reparented away when the subshell exits), prints the daemon's pid, and runs on.
fn double_forking_client() -> (ManagedChild, u32) {
    let (tx, _rx) = crossbeam_channel::unbounded();
    let spec = ProcessSpec {
        program: "sh".into(),
        args: vec![
            "-c".into(),
            "(setsid sleep 300 & echo $!); exec sleep 300".into(),
        ],
        stdout: StdioMode::Piped,
        ..ProcessSpec::default()
    };
    let mut child = ManagedChild::spawn(&spec, "client", tx).unwrap();
    let mut out = BufReader::new(child.take_stdout().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let daemon: u32 = line.trim().parse().unwrap();
    // `$!` is printed as soon as the subshell forked; `setsid` runs a moment later.
    let end = Instant::now() + Duration::from_secs(5);
    while stat_field(daemon, 5) == Some(u64::from(child.pid())) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(running(daemon));
    assert_ne!(
        stat_field(daemon, 5),
        Some(u64::from(child.pid())),
        "the daemon left the client's process group"
    );
    (child, daemon)
}

#[test]
fn a_daemon_that_left_the_process_group_is_killed_on_stop() {
    let (child, daemon) = double_forking_client();
    child.stop(15, Duration::from_secs(2));
    assert!(
        wait_gone(daemon),
        "the double-forked daemon survived the stop"
    );
}

#[test]
fn leftovers_include_daemons_that_left_the_process_group() {
    let (child, daemon) = double_forking_client();
    let record = child.record();
    assert!(record.token.is_some() && record.start_ticks.is_some());
    // The runner was killed: only the leader is gone (its parent-death signal); the
    // daemon, in a session of its own, runs on.
    let killed = std::process::Command::new("kill")
        .args(["-9", &child.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait_exit(Duration::from_secs(5)).is_some());
    assert!(running(daemon));
    let actions: Vec<LeftoverAction> = kill_leftovers(&[record])
        .into_iter()
        .map(|l| l.action)
        .collect();
    assert_eq!(actions, [LeftoverAction::Killed]);
    assert!(
        wait_gone(daemon),
        "the daemon survived the runner's restart"
    );
}

#[test]
fn a_process_that_merely_reuses_a_recorded_pid_is_never_signalled() {
    use std::os::unix::process::CommandExt;
    // An unrelated process that runs the recorded program in a group of its own, like
    // a recorded child would: only its start time tells it apart.
    let mut unrelated = std::process::Command::new("sleep")
        .arg("300")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = unrelated.id();
    let ticks = stat_field(pid, 22).unwrap();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let base = ms11_state::ChildRecord {
        role: "client".into(),
        pid: pid as i32,
        pgid: pid as i32,
        started_at: now,
        program: "sleep".into(),
        ..ms11_state::ChildRecord::default()
    };
    let records = [
        // Same boot, another start time: the pid was reused.
        ms11_state::ChildRecord {
            start_ticks: Some(ticks + 1),
            boot_id: Some(boot_id.clone()),
            token: Some("not-its-token".into()),
            ..base.clone()
        },
        // The right start time, but recorded during another boot.
        ms11_state::ChildRecord {
            start_ticks: Some(ticks),
            boot_id: Some("another-boot".into()),
            ..base.clone()
        },
        // A record of an older version, made before this boot (started_at 1970).
        ms11_state::ChildRecord {
            started_at: 1,
            ..base.clone()
        },
    ];
    let actions: Vec<LeftoverAction> = kill_leftovers(&records)
        .into_iter()
        .map(|l| l.action)
        .collect();
    assert_eq!(actions, [LeftoverAction::PidReused; 3]);
    std::thread::sleep(Duration::from_millis(100));
    assert!(running(pid), "an unrelated process was signalled");
    // The same process recorded with its real start time is ours and is killed.
    let ours = ms11_state::ChildRecord {
        start_ticks: Some(ticks),
        boot_id: Some(boot_id),
        ..base
    };
    assert_eq!(kill_leftovers(&[ours])[0].action, LeftoverAction::Killed);
    let status = unrelated.wait().unwrap();
    assert!(!status.success());
}
