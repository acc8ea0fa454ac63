//! Paired save benchmark: the bare syscall sequence and the atomic store's saves run
//! alternately in one loop, so machine noise hits both alike; the medians and their
//! ratios are printed as one JSON line (read by `cargo xtask bench`).

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

use ms11_persist::{AtomicStore, StateStore};
use ms11_state::SessionState;

fn state_of_size(target_bytes: usize) -> SessionState {
    let mut state = SessionState::new("bench", "naboo", "theed", 1_700_000_000.0);
    let mut i = 0;
    while state.to_json_pretty().unwrap().len() < target_bytes {
        state
            .add_task(
                &format!("task-{i:06}"),
                "hunt kaadu near the Theed spaceport",
            )
            .unwrap();
        i += 1;
    }
    state
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

fn median(v: &mut [u128]) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility
    }
    let rounds: usize = std::env::var("MS11_PAIRED_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let dir = tempfile::tempdir_in(std::env::var("MS11_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let state = state_of_size(5 * 1024);
    let bytes = state.to_json_pretty().unwrap();
    let bare_dir = dir.path().join("bare");
    std::fs::create_dir_all(&bare_dir).unwrap();
    let bare_target = bare_dir.join("session_state.json");
    let mut keep3 = AtomicStore::open(dir.path().join("keep3/session_state.json"), 3).unwrap();
    let mut keep1 = AtomicStore::open(dir.path().join("keep1/session_state.json"), 1).unwrap();
    let (mut s3, mut s1) = (state.clone(), state.clone());
    let (mut bare, mut k3, mut k1) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds + 20 {
        let t = Instant::now();
        bare_save(&bare_dir, &bare_target, &bytes);
        let b = t.elapsed().as_nanos();
        let t = Instant::now();
        keep3.save(&mut s3).unwrap();
        let a3 = t.elapsed().as_nanos();
        let t = Instant::now();
        keep1.save(&mut s1).unwrap();
        let a1 = t.elapsed().as_nanos();
        if round >= 20 {
            bare.push(b);
            k3.push(a3);
            k1.push(a1);
        }
    }
    let (b, a3, a1) = (median(&mut bare), median(&mut k3), median(&mut k1));
    #[allow(clippy::cast_precision_loss)]
    let ratio = |x: u128| x as f64 / b as f64;
    println!(
        "{{\"paired_save\":{{\"rounds\":{rounds},\"bytes\":{},\"bare_median_ns\":{b},\"keep3_median_ns\":{a3},\"keep1_median_ns\":{a1},\"keep3_ratio\":{:.3},\"keep1_ratio\":{:.3}}}}}",
        bytes.len(),
        ratio(a3),
        ratio(a1)
    );
}
