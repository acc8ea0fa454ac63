//! The `tail -F` follower on real files: appearance, rotation, truncation, recreation,
//! partial and long lines, invalid UTF-8, and resuming from a persisted cursor.
#![allow(clippy::unwrap_used)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use ms11_detect::{
    FileTail, FollowSettings, IncidentIds, LogPatternConfig, StartAt, spawn_log_detector,
};
use ms11_state::IncidentKind;

fn settings() -> FollowSettings {
    FollowSettings {
        max_line_bytes: 64,
        partial_line_flush: Duration::from_millis(500),
        poll_interval: Duration::from_millis(20),
        start_at: StartAt::End,
    }
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// Polls once and returns the lines handed out.
fn lines(tail: &mut FileTail, now: Instant) -> Vec<String> {
    let mut out = Vec::new();
    while tail.poll(now, &mut |chunk| {
        out.extend(String::from_utf8_lossy(chunk).lines().map(str::to_owned));
    }) {}
    out
}

#[test]
fn file_missing_at_start_is_read_from_its_beginning_when_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("client.log");
    let mut tail = FileTail::new(&log, settings(), None);
    assert!(tail.cursor().is_none());
    assert!(lines(&mut tail, Instant::now()).is_empty());
    append(&log, b"first\nsecond\n");
    assert_eq!(lines(&mut tail, Instant::now()), ["first", "second"]);
}

#[test]
fn existing_content_is_skipped_by_default_and_read_with_start_at_beginning() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("client.log");
    append(&log, b"old line\n");
    let mut tail = FileTail::new(&log, settings(), None);
    append(&log, b"new line\n");
    assert_eq!(lines(&mut tail, Instant::now()), ["new line"]);
    let mut from_start = FileTail::new(
        &log,
        FollowSettings {
            start_at: StartAt::Beginning,
            ..settings()
        },
        None,
    );
    assert_eq!(
        lines(&mut from_start, Instant::now()),
        ["old line", "new line"]
    );
}

#[test]
fn rename_rotation_drains_the_old_file_then_reads_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("client.log");
    append(&log, b"");
    let mut tail = FileTail::new(&log, settings(), None);
    append(&log, b"a1\n");
    assert_eq!(lines(&mut tail, Instant::now()), ["a1"]);
    append(&log, b"a2\na3-unterminated");
    fs::rename(&log, dir.path().join("client.log.1")).unwrap();
    append(&log, b"b1\n");
    assert_eq!(
        lines(&mut tail, Instant::now()),
        ["a2", "a3-unterminated", "b1"]
    );
}

#[test]
fn copytruncate_restarts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("client.log");
    append(&log, b"");
    let mut tail = FileTail::new(&log, settings(), None);
    append(&log, b"one\ntwo\nthree\n");
    assert_eq!(lines(&mut tail, Instant::now()).len(), 3);
    fs::copy(&log, dir.path().join("client.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    append(&log, b"x\n");
    assert_eq!(lines(&mut tail, Instant::now()), ["x"]);
}

#[test]
fn delete_and_recreate_reads_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("client.log");
    append(&log, b"");
    let mut tail = FileTail::new(&log, settings(), None);
    append(&log, b"before\n");
    assert_eq!(lines(&mut tail, Instant::now()), ["before"]);
    fs::remove_file(&log).unwrap();
    assert!(lines(&mut tail, Instant::now()).is_empty());
    append(&log, b"after one\nafter two\n");
    assert_eq!(lines(&mut tail, Instant::now()), ["after one", "after two"]);
}

#[test]
fn partial_lines_wait_for_their_newline_or_the_quiet_period() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("client.log");
    append(&log, b"");
    let mut tail = FileTail::new(&log, settings(), None);
    let t0 = Instant::now();
    append(&log, b"Connection to ser");
    assert!(lines(&mut tail, t0).is_empty());
    let c = tail.cursor().unwrap();
    assert_eq!(c.offset, 0, "cursor stays at the line start");
    append(&log, b"ver lost.\nGame has");
    assert_eq!(lines(&mut tail, t0), ["Connection to server lost."]);
    assert!(lines(&mut tail, t0 + Duration::from_millis(100)).is_empty());
    assert_eq!(
        lines(&mut tail, t0 + Duration::from_millis(600)),
        ["Game has"]
    );
    assert_eq!(
        tail.cursor().unwrap().offset,
        fs::metadata(&log).unwrap().len()
    );
}

#[test]
fn long_lines_are_cut_counted_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("client.log");
    append(&log, b"");
    let mut tail = FileTail::new(&log, settings(), None);
    let stats = tail.stats();
    let mut long = vec![b'x'; 200_000];
    long.extend_from_slice(b"\nshort\n");
    append(&log, &long);
    let got = lines(&mut tail, Instant::now());
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].len(), 64);
    assert_eq!(got[1], "short");
    append(&log, &[b'y'; 100]);
    append(&log, b"\n");
    assert_eq!(lines(&mut tail, Instant::now())[0].len(), 64);
    assert_eq!(
        stats.cut_lines.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn invalid_utf8_is_decoded_lossily_and_still_matches() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("client.log");
    append(&log, b"");
    let det = spawn_log_detector(
        &log,
        &LogPatternConfig::default(),
        None,
        IncidentIds::new("s"),
        tx,
    )
    .unwrap();
    append(
        &log,
        b"\xff\xfe garbage \xc3\x28 Game has crashed. Please restart the client.\n",
    );
    let inc = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(inc.kind, IncidentKind::Crash);
    assert!(inc.matched_text.as_deref().unwrap().contains('\u{FFFD}'));
    assert_eq!(inc.pattern.as_deref(), Some("game_crashed"));
    det.handle.stop();
}

#[test]
fn a_restart_resumes_at_the_cursor_without_rereporting_or_missing_lines() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("client.log");
    append(&log, b"boot\n");
    let cfg = LogPatternConfig {
        default_cooldown_ms: 0,
        ..Default::default()
    };
    let ids = IncidentIds::new("s");
    let det = spawn_log_detector(&log, &cfg, None, ids.clone(), tx.clone()).unwrap();
    append(&log, b"Connection to server lost.\n");
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap().kind,
        IncidentKind::Disconnect
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while det.cursor.get().unwrap().offset != fs::metadata(&log).unwrap().len() {
        assert!(Instant::now() < deadline, "cursor never caught up");
        std::thread::sleep(Duration::from_millis(5));
    }
    let saved = det.cursor.get().unwrap();
    det.handle.stop();
    // Written while the runner was down.
    append(&log, b"Game has crashed.\n");
    let det = spawn_log_detector(&log, &cfg, Some(saved.clone()), ids.clone(), tx.clone()).unwrap();
    let inc = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        inc.kind,
        IncidentKind::Crash,
        "the line written while down is seen"
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "the old line is not re-reported"
    );
    det.handle.stop();
    // Rotated while down: a cursor for another inode means the new file is read from 0.
    fs::rename(&log, dir.path().join("client.log.1")).unwrap();
    append(
        &log,
        b"Your session key is invalid, or has expired. Please re-login\n",
    );
    let det = spawn_log_detector(&log, &cfg, Some(saved), ids, tx).unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap().kind,
        IncidentKind::SessionExpired
    );
    det.handle.stop();
}

#[test]
fn a_log_directory_created_later_is_picked_up() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let log = logs.join("client.log");
    let cfg = LogPatternConfig {
        poll_interval_ms: 20,
        ..Default::default()
    };
    let det = spawn_log_detector(&log, &cfg, None, IncidentIds::new("s"), tx).unwrap();
    fs::create_dir(&logs).unwrap();
    append(&log, b"Login Error : Account Banned\n");
    let inc = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(inc.kind, IncidentKind::Banned);
    assert!(inc.terminal);
    det.handle.stop();
}
