//! A state directory someone else prepared: symbolic links and hard links planted where
//! the runner writes, foreign content in the lock file, loose modes. The runner never
//! writes elsewhere, never truncates a file that is not its own, and creates everything
//! private (files 0600, directories 0700).

#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use ms11_persist::{AtomicStore, Backend, PersistError, StateStore, open_store};
use ms11_state::SessionState;

const PRECIOUS: &str = "precious, not the runner's\n";

fn state(planet: &str) -> SessionState {
    let mut s = SessionState::new("test", planet, "theed", 1_700_000_000.0);
    s.add_task("t-1", "travel").unwrap();
    s
}

/// A state path in a fresh private directory, and a file outside it.
fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("tmp");
    fs::create_dir(&state_dir).unwrap();
    fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let outside = dir.path().join("victim.txt");
    fs::write(&outside, PRECIOUS).unwrap();
    (dir, state_dir.join("session_state.json"), outside)
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
    for backend in [Backend::Atomic, Backend::JsonFile] {
        let (_dir, path, outside) = setup();
        symlink(&outside, path.with_extension("json.lock")).unwrap();
        let err = open_store(&path, backend, 3).err().unwrap();
        assert!(
            matches!(
                err,
                PersistError::NotAFile {
                    what: "a symbolic link",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&outside).unwrap(), PRECIOUS);
    }
}

#[test]
fn a_hard_linked_or_foreign_lock_file_is_never_truncated() {
    let (_dir, path, outside) = setup();
    let lock = path.with_extension("json.lock");
    fs::hard_link(&outside, &lock).unwrap();
    let err = AtomicStore::open(&path, 3).err().unwrap();
    assert!(matches!(err, PersistError::NotOurs { .. }), "{err}");
    assert!(err.to_string().contains("hard links"), "{err}");
    assert_eq!(fs::read_to_string(&outside).unwrap(), PRECIOUS);

    // Not a pid: someone's file that happens to sit there.
    fs::remove_file(&lock).unwrap();
    fs::write(&lock, PRECIOUS).unwrap();
    let err = AtomicStore::open(&path, 3).err().unwrap();
    assert!(matches!(err, PersistError::NotOurs { .. }), "{err}");
    assert_eq!(fs::read_to_string(&lock).unwrap(), PRECIOUS);

    // A stale lock file of ours (a pid) is taken over as always.
    fs::write(&lock, "12345\n").unwrap();
    let store = AtomicStore::open(&path, 3).unwrap();
    assert_eq!(
        fs::read_to_string(&lock).unwrap(),
        format!("{}\n", std::process::id())
    );
    drop(store);
}

#[test]
fn the_json_file_backend_never_writes_through_a_symlinked_state_file() {
    let (_dir, path, outside) = setup();
    symlink(&outside, &path).unwrap();
    let mut store = open_store(&path, Backend::JsonFile, 1).unwrap();
    let mut s = state("naboo");
    let err = store.save(&mut s).unwrap_err();
    assert!(
        matches!(
            err,
            PersistError::NotAFile {
                what: "a symbolic link",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(s.generation, 0, "a failed save leaves the state unchanged");
    assert_eq!(fs::read_to_string(&outside).unwrap(), PRECIOUS);
}

#[test]
fn the_atomic_backend_never_writes_through_a_symlinked_state_file() {
    let (_dir, path, outside) = setup();
    symlink(&outside, &path).unwrap();
    let mut store = AtomicStore::open(&path, 3).unwrap();
    assert!(store.save(&mut state("naboo")).is_err());
    assert_eq!(fs::read_to_string(&outside).unwrap(), PRECIOUS);
    assert!(
        fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_symlinked_quarantine_directory_is_not_followed() {
    let (dir, path, _outside) = setup();
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, path.parent().unwrap().join("quarantine")).unwrap();
    let mut store = AtomicStore::open(&path, 3).unwrap();
    let mut s = state("naboo");
    store.save(&mut s).unwrap();
    store.save(&mut s).unwrap();
    fs::write(&path, b"garbage").unwrap();
    let report = store.load().unwrap().unwrap();
    assert_eq!(report.state.generation, 1, "the previous generation loads");
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].quarantined_to, None);
    assert_eq!(
        fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing went there"
    );
    assert_eq!(fs::read(&path).unwrap(), b"garbage", "left in place");
}

#[test]
fn everything_created_is_private_files_0600_directories_0700() {
    for backend in [Backend::Atomic, Backend::JsonFile] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("tmp").join("session_state.json");
        let mut store = open_store(&path, backend, 3).unwrap();
        let mut s = state("naboo");
        store.save(&mut s).unwrap();
        store.save(&mut s).unwrap();
        assert_eq!(mode(&path), 0o600, "{backend:?} state file");
        assert_eq!(
            mode(&path.with_extension("json.lock")),
            0o600,
            "{backend:?} lock"
        );
        assert_eq!(mode(path.parent().unwrap()), 0o700, "{backend:?} state dir");
        assert_eq!(mode(&dir.path().join("a")), 0o700, "{backend:?} parent dir");
        // The quarantine and its reason files.
        fs::write(&path, b"garbage").unwrap();
        if backend == Backend::Atomic {
            let report = store.load().unwrap().unwrap();
            let moved = report.skipped[0].quarantined_to.clone().unwrap();
            let quarantine = moved.parent().unwrap();
            assert_eq!(mode(quarantine), 0o700, "quarantine dir");
            let mut reason = moved.into_os_string();
            reason.push(".reason.txt");
            assert_eq!(mode(Path::new(&reason)), 0o600, "reason file");
        }
    }
}

#[test]
fn an_existing_json_file_state_with_a_loose_mode_is_made_private() {
    let (_dir, path, _outside) = setup();
    fs::write(&path, b"").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut store = open_store(&path, Backend::JsonFile, 1).unwrap();
    store.save(&mut state("naboo")).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn a_state_directory_writable_by_others_is_warned_about() {
    let (_dir, path, _outside) = setup();
    let state_dir = path.parent().unwrap();
    assert_eq!(ms11_persist::shared_dir_warning(state_dir), None);
    for (loose, who) in [(0o770, "its group"), (0o777, "everyone")] {
        fs::set_permissions(state_dir, fs::Permissions::from_mode(loose)).unwrap();
        let warning = ms11_persist::shared_dir_warning(state_dir).unwrap();
        assert!(
            warning.contains(who) && warning.contains("chmod 700"),
            "{warning}"
        );
        // Still usable: a warning, not an error.
        let mut store = AtomicStore::open(&path, 2).unwrap();
        store.save(&mut state("naboo")).unwrap();
    }
}
