//! The store against real files: generations, quarantine, corrupt files of every kind,
//! the lock, stale temp files, cleanup.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ms11_persist::{
    AtomicStore, Backend, JsonFileStore, PersistError, StateStore, cleanup, open_store,
};
use ms11_state::SessionState;

fn state(planet: &str) -> SessionState {
    let mut s = SessionState::new("test", planet, "theed", 1_700_000_000.0);
    s.add_task("t-1", "travel").unwrap();
    s
}

fn state_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("tmp").join("session_state.json")
}

#[test]
fn save_then_load_round_trips_and_counts_generations() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let mut store = AtomicStore::open(&path, 3).unwrap();
    assert!(store.load().unwrap().is_none(), "no files: a first run");
    let mut s = state("naboo");
    for expected in 1..=5 {
        let report = store.save(&mut s).unwrap();
        assert_eq!(report.generation, expected);
        assert_eq!(s.generation, expected);
    }
    assert_eq!(s.runtime.save_count, 5);
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.state, s);
    assert_eq!(loaded.loaded_from, path);
    let gens: Vec<u64> = store
        .generations()
        .unwrap()
        .iter()
        .filter_map(|g| g.generation)
        .collect();
    assert_eq!(gens, vec![5, 4, 3], "keeps the last 3 generations");
    assert_eq!(store.load_generation(4).unwrap().generation, 4);
    assert!(matches!(
        store.load_generation(1),
        Err(PersistError::Generation { generation: 1, .. })
    ));
}

#[cfg(unix)]
#[test]
fn files_are_private_and_the_missing_parent_is_created_0700() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("session_state.json");
    let mut store = AtomicStore::open(&path, 2).unwrap();
    store.save(&mut state("naboo")).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
}

#[test]
fn output_is_plain_json_with_the_seed_fields_and_an_integrity_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let mut store = AtomicStore::open(&path, 2).unwrap();
    store.save(&mut state("tatooine")).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("{\n  \"integrity\": \"crc32c:"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for field in [
        "timestamp",
        "planet",
        "zone",
        "coordinates",
        "current_quest",
        "quest_step",
        "xp_level",
        "xp_current",
        "xp_next_level",
        "equipped_weapon",
        "active_modes",
        "task_queue",
        "session_duration",
        "crash_count",
        "last_save_time",
        "recovery_enabled",
        "auto_restart",
        "auto_relog",
    ] {
        assert!(v.get(field).is_some(), "seed field {field} missing");
    }
    assert_eq!(v["task_queue"], serde_json::json!(["t-1"]));
}

/// Writes each kind of damage over the newest generation and checks the previous one
/// loads, with the bad file quarantined and its reason reported.
#[test]
fn every_kind_of_corrupt_newest_file_falls_back_to_the_previous_generation() {
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "garbage",
            Box::new(|p| fs::write(p, b"\x00\xff garbage \x13").unwrap()),
        ),
        (
            "truncated",
            Box::new(|p| {
                let bytes = fs::read(p).unwrap();
                fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
            }),
        ),
        ("empty", Box::new(|p| fs::write(p, b"").unwrap())),
        (
            "wrong shape",
            Box::new(|p| fs::write(p, b"[1, 2, 3]").unwrap()),
        ),
        (
            "missing field",
            Box::new(|p| fs::write(p, br#"{"planet": "naboo"}"#).unwrap()),
        ),
        (
            "invalid value",
            Box::new(|p| {
                let text = fs::read_to_string(p).unwrap();
                // Keep it valid JSON without the checksum line, but break a rule.
                let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
                v.as_object_mut().unwrap().remove("integrity");
                v["planet"] = "".into();
                fs::write(p, serde_json::to_vec(&v).unwrap()).unwrap();
            }),
        ),
        (
            "bit flip",
            Box::new(|p| {
                let mut bytes = fs::read(p).unwrap();
                let i = bytes.iter().rposition(|&b| b == b'n').unwrap();
                bytes[i] = b'm';
                fs::write(p, bytes).unwrap();
            }),
        ),
        (
            "future schema",
            Box::new(|p| {
                let text = fs::read_to_string(p).unwrap();
                let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
                v.as_object_mut().unwrap().remove("integrity");
                v["schema_version"] = 99.into();
                fs::write(p, serde_json::to_vec(&v).unwrap()).unwrap();
            }),
        ),
        (
            "directory",
            Box::new(|p| {
                fs::remove_file(p).unwrap();
                fs::create_dir(p).unwrap();
            }),
        ),
        #[cfg(unix)]
        (
            "symlink",
            Box::new(|p| {
                fs::remove_file(p).unwrap();
                std::os::unix::fs::symlink("/etc/hostname", p).unwrap();
            }),
        ),
    ];
    for (name, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        let mut store = AtomicStore::open(&path, 3).unwrap();
        let mut s = state("naboo");
        store.save(&mut s).unwrap();
        s.planet = "corellia".into();
        store.save(&mut s).unwrap();
        damage(&path);
        let report = store
            .load()
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: nothing loaded"));
        assert_eq!(
            report.state.generation, 1,
            "{name}: previous generation loads"
        );
        assert_eq!(report.state.planet, "naboo", "{name}");
        assert_eq!(report.skipped.len(), 1, "{name}: {:?}", report.skipped);
        let skipped = &report.skipped[0];
        assert_eq!(skipped.path, path, "{name}");
        let moved = skipped
            .quarantined_to
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: not quarantined"));
        assert!(
            moved.starts_with(path.parent().unwrap().join("quarantine")),
            "{name}: {moved:?}"
        );
        assert!(
            fs::symlink_metadata(moved).is_ok(),
            "{name}: quarantined file kept"
        );
        assert!(!skipped.reason.is_empty());
        // The next save makes a new, higher generation in the main file.
        let saved = store.save(&mut report.state.clone()).unwrap();
        assert_eq!(
            saved.generation, 3,
            "{name}: numbering continues above every file seen"
        );
    }
}

#[test]
fn no_valid_file_is_an_error_listing_each_file_and_nothing_moves() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, b"{\"planet\": ").unwrap();
    fs::write(path.with_extension("json.1"), b"").unwrap();
    let mut store = AtomicStore::open(&path, 3).unwrap();
    let err = store.load().unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, PersistError::NoValidState { ref files, .. } if files.len() == 2),
        "{text}"
    );
    assert!(
        text.contains("session_state.json`") && text.contains("session_state.json.1`"),
        "{text}"
    );
    assert!(text.contains("--force"), "{text}");
    assert!(path.exists(), "nothing was moved");
    // --force: quarantine the bad files, then start fresh.
    let moved = store.quarantine_invalid().unwrap();
    assert_eq!(moved.len(), 2);
    assert!(store.load().unwrap().is_none());
    let reason = fs::read_to_string(format!("{}.reason.txt", moved[0].moved_to.display())).unwrap();
    assert!(reason.contains("reason:"), "{reason}");
}

#[test]
fn a_seed_state_file_loads_and_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(
        &path,
        include_str!("../../ms11-state/tests/fixtures/seed_state.json"),
    )
    .unwrap();
    let mut store = JsonFileStore::open(&path).unwrap();
    let report = store.load().unwrap().unwrap();
    assert_eq!(
        report.migration.as_ref().map(|m| (m.from, m.to)),
        Some((0, 1))
    );
    assert_eq!(report.state.planet, "naboo");
    assert_eq!(report.state.task_queue().len(), report.state.tasks().len());
}

#[test]
fn a_second_writer_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let _first = open_store(&path, Backend::Atomic, 3).unwrap();
    let Err(err) = open_store(&path, Backend::JsonFile, 3) else {
        panic!("second writer got the lock")
    };
    let text = err.to_string();
    assert!(
        matches!(err, PersistError::Locked { pid: Some(pid), .. } if pid == std::process::id()),
        "{text}"
    );
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
}

#[test]
fn stale_temp_files_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let stale = path
        .parent()
        .unwrap()
        .join(".session_state.json.4242.7.tmp");
    fs::write(&stale, b"{\"half").unwrap();
    let unrelated = path.parent().unwrap().join("notes.tmp");
    fs::write(&unrelated, b"keep me").unwrap();
    let _store = AtomicStore::open(&path, 3).unwrap();
    assert!(!stale.exists());
    assert!(unrelated.exists());
}

#[test]
fn a_directory_in_the_way_fails_the_save_and_keeps_the_memory_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let mut store = AtomicStore::open(&path, 3).unwrap();
    fs::create_dir_all(&path).unwrap();
    let mut s = state("naboo");
    let before = s.clone();
    let err = store.save(&mut s).unwrap_err();
    assert!(
        matches!(
            err,
            PersistError::NotAFile {
                what: "a directory",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("session_state.json"), "{err}");
    assert_eq!(s, before, "a failed save leaves the state untouched");
    assert!(
        store
            .generations()
            .unwrap()
            .iter()
            .all(|g| g.generation.is_none())
    );
    assert!(
        fs::read_dir(path.parent().unwrap()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp"))
    );
}

#[test]
fn an_invalid_state_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    let mut store = AtomicStore::open(&path, 3).unwrap();
    let mut s = state("naboo");
    store.save(&mut s).unwrap();
    s.zone.clear();
    let err = store.save(&mut s).unwrap_err();
    assert!(err.to_string().contains("`zone`"), "{err}");
    assert_eq!(s.generation, 1);
    assert_eq!(store.load().unwrap().unwrap().state.zone, "theed");
}

#[test]
fn cleanup_removes_old_files_but_never_the_newest_valid_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = state_path(&dir);
    {
        let mut store = AtomicStore::open(&path, 3).unwrap();
        let mut s = state("naboo");
        for _ in 0..3 {
            store.save(&mut s).unwrap();
        }
        fs::write(
            path.parent().unwrap().join(".session_state.json.1.1.tmp"),
            b"x",
        )
        .unwrap();
        fs::create_dir_all(path.parent().unwrap().join("quarantine")).unwrap();
        fs::write(
            path.parent()
                .unwrap()
                .join("quarantine/session_state.json.1.0"),
            b"bad",
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    let report = cleanup(&path, Duration::from_millis(1)).unwrap();
    assert_eq!(report.kept_newest.as_deref(), Some(path.as_path()));
    assert_eq!(report.removed.len(), 4, "{:?}", report.removed);
    assert!(path.exists());
    let report = cleanup(&path, Duration::from_secs(3600)).unwrap();
    assert!(report.removed.is_empty());
}

#[test]
fn a_state_file_at_the_largest_generation_loads_and_saves_without_panicking() {
    for backend in [Backend::Atomic, Backend::JsonFile] {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        {
            // A file whose counters are at the ceiling (a hand edit, a damaged tool).
            let mut store = open_store(&path, backend, 3).unwrap();
            let mut s = state("naboo");
            s.generation = u64::MAX - 1;
            s.runtime.save_count = u64::MAX - 1;
            store.save(&mut s).unwrap();
            assert_eq!(s.generation, u64::MAX);
        }
        let mut store = open_store(&path, backend, 3).unwrap();
        let mut loaded = store.load().unwrap().unwrap().state;
        assert_eq!(loaded.generation, u64::MAX);
        loaded.planet = "tatooine".into();
        for _ in 0..3 {
            let report = store.save(&mut loaded).unwrap();
            assert_eq!(report.generation, u64::MAX, "{backend:?}");
        }
        assert_eq!(loaded.runtime.save_count, u64::MAX);
        let again = store.load().unwrap().unwrap().state;
        assert_eq!(
            again.planet, "tatooine",
            "{backend:?}: the newest save is loaded"
        );
    }
}

#[test]
fn a_state_larger_than_a_load_accepts_is_never_written() {
    for backend in [Backend::Atomic, Backend::JsonFile] {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        let mut store = open_store(&path, backend, 3).unwrap();
        let mut s = state("naboo");
        store.save(&mut s).unwrap();
        let saved = fs::read(&path).unwrap();
        let limit = ms11_persist::MAX_STATE_BYTES as usize;
        s.extra
            .insert("hoard".into(), serde_json::Value::String("x".repeat(limit)));
        let before = s.clone();
        let err = store.save(&mut s).unwrap_err();
        assert!(
            matches!(err, PersistError::TooLarge { .. }),
            "{backend:?}: {err}"
        );
        assert!(
            err.to_string().contains("previous state is intact"),
            "{err}"
        );
        assert_eq!(s, before, "{backend:?}: the state is unchanged");
        assert_eq!(fs::read(&path).unwrap(), saved, "{backend:?}: the file too");
        drop(s);
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.state.generation, 1);
    }
}
