//! Patch flood benchmark: a session state of about 1 MB takes a flood of `state` patches
//! through [`ExactlyOnce::handle`] (the session loop's code path), with a `task_done`
//! every few messages whose durable save (`AtomicStore`) is timed as the loop does it,
//! followed by the bare syscall sequence writing the same bytes (the baseline, paired).
//! The medians of the first and the last tenth of the flood show whether the cost of a
//! message or a save grows with every message (`patch_ratio`, `save_ratio`: end / start).
//! On a shared machine the load can change between the start and the end, so each patch
//! and save is also timed on a fresh copy of the flood's first state right after the real
//! one; `*_growth_vs_ref` is end / start of the real over the reference, which only what
//! accumulated during the flood moves. One JSON line is printed (read by
//! `cargo xtask bench`).
//!
//! `MS11_FLOOD_MESSAGES` (default 2000) and `MS11_FLOOD_SAVE_EVERY` (default 10) change
//! the flood; `MS11_BENCH_DIR` is where the scratch files go.

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

use ms11_agent::{Action, BotMessage, ExactlyOnce};
use ms11_persist::{AtomicStore, StateStore};
use ms11_state::SessionState;
use serde_json::{Map, Value, json};

const NOW: f64 = 1_700_000_000.0;

/// About `target_bytes` of saved state: a long task ledger (most of it) and an extra
/// field of the bot's own (an inventory), as a long-running session has.
fn state_of_size(target_bytes: usize) -> SessionState {
    let mut state = SessionState::new("bench", "naboo", "theed", NOW);
    let inventory: Vec<Value> = (0..1000)
        .map(|i| json!({"item": format!("kaadu hide {i}"), "count": i % 17, "quality": 0.5}))
        .collect();
    let mut extra = Map::new();
    extra.insert("inventory".into(), Value::Array(inventory));
    state.apply_patch(&extra).unwrap();
    let mut i = 0;
    // Checked every 200 tasks: serialising a growing state after each task would be slow.
    while state.to_json_pretty().unwrap().len() < target_bytes {
        for _ in 0..200 {
            state
                .add_task(
                    &format!("task-{i:06}"),
                    "hunt kaadu near the Theed spaceport",
                )
                .unwrap();
            i += 1;
        }
    }
    state
}

/// A patch as a bot sends it while it works: position, experience, its own fields.
fn patch(n: u64) -> BotMessage {
    #[allow(clippy::cast_precision_loss)]
    let x = (n % 1000) as f64 * 0.5;
    let Value::Object(patch) = json!({
        "coordinates": [x, -45.0],
        "xp_current": n % 1000,
        "last_target": format!("kaadu {}", n % 50),
    }) else {
        unreachable!()
    };
    BotMessage::State { patch }
}

fn bare_save(dir: &Path, target: &Path, bytes: &[u8]) {
    let tmp = dir.join(".bare.tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
    drop(file);
    std::fs::rename(&tmp, target).unwrap();
    File::open(dir).unwrap().sync_all().unwrap();
}

fn median(v: &[u128]) -> u128 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

/// Medians of the first and the last tenth of `v` (at least one sample each).
fn start_end(v: &[u128]) -> (u128, u128) {
    let tenth = (v.len() / 10).max(1);
    (median(&v[..tenth]), median(&v[v.len() - tenth..]))
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility
    }
    let messages = env_or("MS11_FLOOD_MESSAGES", 2000);
    let save_every = env_or("MS11_FLOOD_SAVE_EVERY", 10).max(2);
    let warm_up = 100;
    let dir = tempfile::tempdir_in(std::env::var("MS11_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let mut state = state_of_size(1024 * 1024);
    let state_bytes = state.to_json_pretty().unwrap().len();
    let mut store = AtomicStore::open(dir.path().join("store/session_state.json"), 3).unwrap();
    store.save(&mut state).unwrap();
    let bare_dir = dir.path().join("bare");
    std::fs::create_dir_all(&bare_dir).unwrap();
    let bare_target = bare_dir.join("session_state.json");

    // The reference: the same patch and save on a fresh copy of the flood's first state,
    // timed right after the real one, so machine noise hits both alike and only what
    // accumulated during the flood makes them differ.
    let first = state.clone();
    let mut reference = AtomicStore::open(dir.path().join("ref/session_state.json"), 3).unwrap();

    let mut rules = ExactlyOnce::new();
    let hello = BotMessage::Hello {
        protocol: 1,
        bot: "bench".into(),
        version: "0".into(),
    };
    assert_eq!(rules.handle(&mut state, &hello, NOW), Action::SendResume);
    let mut patches = Vec::new();
    let mut ref_patches = Vec::new();
    let (mut saves, mut ref_saves, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    let mut done = 0;
    for n in 0..warm_up + messages {
        let recorded = n >= warm_up;
        if n % save_every == save_every - 1 {
            // A task_done: the loop saves durably before it acknowledges.
            let message = BotMessage::TaskDone {
                id: format!("task-{done:06}"),
                seq: n,
            };
            done += 1;
            let action = rules.handle(&mut state, &message, NOW);
            assert_eq!(action, Action::SaveThenAck { seq: n });
            let mark = rules.change_mark();
            let t = Instant::now();
            store.save(&mut state).unwrap();
            let s = t.elapsed().as_nanos();
            rules.saved(mark);
            let bytes = std::fs::read(store.files().path()).unwrap();
            let t = Instant::now();
            bare_save(&bare_dir, &bare_target, &bytes);
            let b = t.elapsed().as_nanos();
            let mut fresh = first.clone();
            let t = Instant::now();
            reference.save(&mut fresh).unwrap();
            let r = t.elapsed().as_nanos();
            if recorded {
                saves.push(s);
                bare.push(b);
                ref_saves.push(r);
            }
        } else {
            let message = patch(n);
            let t = Instant::now();
            let action = rules.handle(&mut state, &message, NOW);
            let p = t.elapsed().as_nanos();
            assert!(matches!(action, Action::StateChanged { .. }), "{action:?}");
            let (mut fresh, mut fresh_rules) = (first.clone(), ExactlyOnce::new());
            let _ = fresh_rules.handle(&mut fresh, &hello, NOW);
            let t = Instant::now();
            let action = fresh_rules.handle(&mut fresh, &message, NOW);
            let r = t.elapsed().as_nanos();
            assert!(matches!(action, Action::StateChanged { .. }), "{action:?}");
            if recorded {
                patches.push(p);
                ref_patches.push(r);
            }
        }
    }
    let end_bytes = state.to_json_pretty().unwrap().len();
    let (p0, p1) = start_end(&patches);
    let (rp0, rp1) = start_end(&ref_patches);
    let (s0, s1) = start_end(&saves);
    let (rs0, rs1) = start_end(&ref_saves);
    let (s, b) = (median(&saves), median(&bare));
    #[allow(clippy::cast_precision_loss)]
    let ratio = |x: u128, y: u128| x as f64 / y as f64;
    println!(
        "{{\"patch_flood\":{{\"messages\":{messages},\"save_every\":{save_every},\"state_bytes\":{state_bytes},\"state_bytes_end\":{end_bytes},\
\"patch_start_median_ns\":{p0},\"patch_end_median_ns\":{p1},\"patch_ratio\":{:.3},\
\"ref_patch_start_median_ns\":{rp0},\"ref_patch_end_median_ns\":{rp1},\"patch_growth_vs_ref\":{:.3},\
\"save_start_median_ns\":{s0},\"save_end_median_ns\":{s1},\"save_ratio\":{:.3},\
\"ref_save_start_median_ns\":{rs0},\"ref_save_end_median_ns\":{rs1},\"save_growth_vs_ref\":{:.3},\
\"save_median_ns\":{s},\"bare_median_ns\":{b},\"save_vs_bare\":{:.3}}}}}",
        ratio(p1, p0),
        ratio(p1, rp1) / ratio(p0, rp0),
        ratio(s1, s0),
        ratio(s1, rs1) / ratio(s0, rs0),
        ratio(s, b)
    );
}
