//! Save and load costs, each next to its baseline measured in the same run:
//! `atomic_save/5kb` (3 generations kept) and `atomic_save_keep1/5kb` (1 kept) against
//! `bare_syscalls/5kb` (the same temp-file, write, fsync,
//! close, rename, directory-fsync sequence written inline with std, no generations, no
//! validation, no checksum), `load/5kb`, and `atomic_save/1mb` for scaling.
//! `cargo xtask bench` turns the estimates into ratios.

#![allow(missing_docs, clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use ms11_persist::{AtomicStore, StateFiles, StateStore};
use ms11_state::SessionState;

fn state_of_size(target_bytes: usize) -> SessionState {
    let mut state = SessionState::new("bench", "naboo", "theed", 1_700_000_000.0);
    let mut quest = serde_json::Map::new();
    quest.insert("name".into(), "Legacy Quest: Imperial Courier".into());
    quest.insert(
        "objectives".into(),
        serde_json::json!(["Deliver the datadisk", "Return to Theed"]),
    );
    state.current_quest = Some(quest);
    state.active_modes = vec!["questing".into(), "combat".into()];
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

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(std::env::var("MS11_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let small = state_of_size(5 * 1024);
    let large = state_of_size(1024 * 1024);

    let mut group = c.benchmark_group("persist");
    group.sample_size(60);
    let bare_dir = dir.path().join("bare");
    std::fs::create_dir_all(&bare_dir).unwrap();
    let bytes = small.to_json_pretty().unwrap();
    group.bench_function("bare_syscalls/5kb", |b| {
        b.iter(|| bare_save(&bare_dir, &bare_dir.join("session_state.json"), &bytes));
    });
    let path = dir.path().join("atomic").join("session_state.json");
    let mut store = AtomicStore::open(&path, 3).unwrap();
    let mut state = small.clone();
    group.bench_function("atomic_save/5kb", |b| {
        b.iter(|| store.save(&mut state).unwrap())
    });
    let single_path = dir.path().join("single").join("session_state.json");
    let mut single_store = AtomicStore::open(&single_path, 1).unwrap();
    let mut single_state = small.clone();
    group.bench_function("atomic_save_keep1/5kb", |b| {
        b.iter(|| single_store.save(&mut single_state).unwrap());
    });
    let files = StateFiles::new(&path);
    group.bench_function("load/5kb", |b| {
        b.iter(|| files.load_read_only().unwrap().unwrap())
    });
    group.sample_size(10);
    let large_path = dir.path().join("large").join("session_state.json");
    let mut large_store = AtomicStore::open(&large_path, 3).unwrap();
    let mut large_state = large.clone();
    group.bench_function("atomic_save/1mb", |b| {
        b.iter(|| large_store.save(&mut large_state).unwrap())
    });
    group.finish();
}

criterion_group!(persist, benches);
criterion_main!(persist);
