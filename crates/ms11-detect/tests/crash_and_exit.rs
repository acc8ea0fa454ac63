//! Crash-dump watcher on a real directory and exit watcher on real child processes.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use ms11_detect::{CrashDumpConfig, ExitWatcher, IncidentIds, spawn_crash_dump_watcher};
use ms11_state::IncidentKind;

#[test]
fn new_crash_files_are_reported_once_and_old_ones_never() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("SwgClient_r-1.0-20261124220000.mdmp"),
        b"old",
    )
    .unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let h = spawn_crash_dump_watcher(
        &CrashDumpConfig::default(),
        dir.path(),
        IncidentIds::new("s"),
        tx,
    )
    .unwrap();
    std::fs::write(dir.path().join("client.log"), b"not a crash").unwrap();
    std::fs::write(
        dir.path().join("SwgClient_r-1.0-20261125031244.txt"),
        b"automated crash dump from SwgClient_r.exe\nException c0000005(3)=code 0040a1b2=addr\n",
    )
    .unwrap();
    let inc = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(inc.kind, IncidentKind::CrashDump);
    assert_eq!(
        inc.matched_text.as_deref(),
        Some("SwgClient_r-1.0-20261125031244.txt")
    );
    assert!(
        inc.crash.error_message.contains("Exception c0000005"),
        "{}",
        inc.crash.error_message
    );
    std::fs::write(
        dir.path().join("SwgClient_r-1.0-20261125031244.mdmp"),
        b"MDMP",
    )
    .unwrap();
    let inc = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        inc.matched_text.as_deref(),
        Some("SwgClient_r-1.0-20261125031244.mdmp")
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "each file once; the old dump never"
    );
    h.stop();
}

#[cfg(unix)]
#[test]
fn exit_watcher_reports_codes_and_crash_signals() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let ids = IncidentIds::new("s");
    let child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
    ExitWatcher::spawn(child, "bot", ids.clone(), tx.clone())
        .unwrap()
        .join();
    let inc = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(inc.kind, IncidentKind::ProcessExit);
    assert_eq!(inc.exit.as_ref().unwrap().code, Some(3));

    let child = Command::new("sh")
        .args(["-c", "kill -SEGV $$"])
        .spawn()
        .unwrap();
    let w = ExitWatcher::spawn(child, "client", ids, tx).unwrap();
    let inc = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(inc.kind, IncidentKind::Crash);
    assert_eq!(inc.exit.as_ref().unwrap().signal, Some(11));
    assert!(
        inc.crash
            .error_message
            .starts_with("client exited: signal 11"),
        "{}",
        inc.crash.error_message
    );
    w.join();
}

#[test]
fn idle_detectors_sharing_a_directory_do_not_wake_each_other() {
    // Regression: the crash-dump scan opens the directory, which is an inotify event
    // for the log follower watching the same directory (and for the scan itself).
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("client.log");
    std::fs::write(&log, b"").unwrap();
    let (tx, _rx) = crossbeam_channel::unbounded();
    let ids = IncidentIds::new("idle");
    let det =
        ms11_detect::spawn_log_detector(&log, &Default::default(), None, ids.clone(), tx.clone())
            .unwrap();
    let dump = spawn_crash_dump_watcher(&CrashDumpConfig::default(), dir.path(), ids, tx).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let wakeups = det.stats.wakeups.load(std::sync::atomic::Ordering::Relaxed);
    // Start + at most one safety re-check (every 2 s by default) + slack.
    assert!(
        wakeups <= 3,
        "log follower woke {wakeups} times in 800 ms of silence"
    );
    dump.stop();
    det.handle.stop();
}

#[test]
fn disabled_detectors_return_disabled_handles() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = crossbeam_channel::unbounded();
    let ids = IncidentIds::new("s");
    let cfg = CrashDumpConfig {
        enabled: false,
        ..Default::default()
    };
    let h = spawn_crash_dump_watcher(&cfg, dir.path(), ids.clone(), tx.clone()).unwrap();
    assert_eq!(h.disabled_reason(), Some("disabled in config"));
    let log_cfg = ms11_detect::LogPatternConfig {
        enabled: false,
        ..Default::default()
    };
    let det = ms11_detect::spawn_log_detector(
        &dir.path().join("x.log"),
        &log_cfg,
        None,
        ids.clone(),
        tx.clone(),
    )
    .unwrap();
    assert!(det.handle.disabled_reason().is_some() && !det.handle.is_running());
    let stall = ms11_detect::StallDetector::spawn(
        &ms11_detect::StallConfig {
            enabled: false,
            timeout_ms: 1,
        },
        "bot",
        ids,
        tx,
    )
    .unwrap();
    stall.beat();
    assert!(stall.handle().disabled_reason().is_some());
}
