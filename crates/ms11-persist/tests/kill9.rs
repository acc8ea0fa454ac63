//! Crash consistency: a child process saving in a loop is SIGKILLed at random moments,
//! again and again. After every kill the store must load a valid state no older than
//! the last save the child saw return `Ok`, whose content belongs to its generation.
//!
//! The child is this test binary run again with `MS11_SAVER_DIR` set (the ignored test
//! `saver_child` is its entry point). `cargo xtask torture` runs more iterations.

#![allow(clippy::unwrap_used)]
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ms11_persist::{AtomicStore, StateStore};
use ms11_state::SessionState;
use rand::Rng;

const DIR_ENV: &str = "MS11_SAVER_DIR";

/// Entry point of the child process; does nothing unless run by `kill9_loop`.
#[test]
#[ignore = "entry point of the child process of kill9_loop"]
fn saver_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let path = Path::new(&dir).join("session_state.json");
    let mut store = AtomicStore::open(&path, 3).expect("open store");
    let mut state = match store.load().expect("load") {
        Some(report) => report.state,
        None => SessionState::new("torture", "naboo", "theed", 1_700_000_000.0),
    };
    let stdout = std::io::stdout();
    loop {
        // Content that must match the generation the save will stamp.
        let next = state.generation + 1;
        state.quest_step = i64::try_from(next).expect("small");
        state.xp_current = state.quest_step % 1000;
        if next % 7 == 0 {
            state
                .add_task(&format!("t-{next}"), "filler")
                .expect("unique");
        }
        let report = store.save(&mut state).expect("save");
        let mut out = stdout.lock();
        writeln!(out, "ack {}", report.generation).expect("stdout");
        out.flush().expect("flush");
    }
}

/// `ack <generation>` anywhere in a line. The child writes each line with one `write`
/// to a pipe (atomic below PIPE_BUF), so a kill never leaves half an ack.
fn parse_ack(line: &str) -> Option<u64> {
    line[line.find("ack ")? + 4..].trim().parse().ok()
}

fn iterations() -> usize {
    std::env::var("MS11_KILL9_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn kill9_loop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session_state.json");
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut last_acked = 0u64;
    let mut kills_after_a_save = 0usize;
    for iteration in 0..iterations() {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "saver_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut acked_this_run = false;
        if iteration % 2 == 1 {
            // Half the kills land while saves are under way: wait for the first one.
            // (libtest prints its own header lines first.)
            let mut line = String::new();
            while stdout.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(generation) = parse_ack(&line) {
                    last_acked = last_acked.max(generation);
                    acked_this_run = true;
                    break;
                }
                line.clear();
            }
            std::thread::sleep(Duration::from_micros(rng.random_range(0..3_000)));
        } else {
            // The other half anywhere from start-up on.
            std::thread::sleep(Duration::from_micros(rng.random_range(0..8_000)));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in stdout.lines() {
            if let Some(generation) = parse_ack(&line.unwrap_or_default()) {
                last_acked = last_acked.max(generation);
                acked_this_run = true;
            }
        }
        kills_after_a_save += usize::from(acked_this_run);
        let report = ms11_persist::StateFiles::new(&path).load_read_only();
        let report = match report {
            Ok(Some(report)) => report,
            Ok(None) => {
                assert_eq!(
                    last_acked, 0,
                    "iteration {iteration}: state vanished after gen {last_acked}"
                );
                continue;
            }
            Err(e) => panic!("iteration {iteration}: no loadable state: {e}"),
        };
        let state = report.state;
        assert!(
            report.skipped.is_empty(),
            "iteration {iteration}: a damaged file: {:?}",
            report.skipped
        );
        assert!(
            state.generation >= last_acked,
            "iteration {iteration}: loaded generation {} is older than the acknowledged {last_acked}",
            state.generation
        );
        assert_eq!(
            u64::try_from(state.quest_step).unwrap(),
            state.generation,
            "iteration {iteration}: content does not belong to its generation"
        );
    }
    assert!(
        kills_after_a_save * 2 >= iterations(),
        "too few kills landed after saves started ({kills_after_a_save})"
    );
    // One line for `cargo xtask torture` (every invalid or lost state failed above).
    println!(
        "torture kill9: iterations {} kills_after_a_save {kills_after_a_save} last_acknowledged_generation {last_acked} invalid 0 lost 0",
        iterations()
    );
}
