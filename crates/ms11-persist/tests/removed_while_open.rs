//! The state directory and the lock file removed or replaced while a store is open (an
//! operator's cleanup, systemd-tmpfiles, a careless `rm -rf`): the next save notices,
//! re-creates what it can and takes the lock again, and a state that another store
//! took over in the meantime is never written again.

#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use ms11_persist::{Backend, Change, PersistError, Recreated, open_store};
use ms11_state::SessionState;

const BACKENDS: [Backend; 2] = [Backend::Atomic, Backend::JsonFile];

fn state(planet: &str) -> SessionState {
    let mut s = SessionState::new("test", planet, "theed", 1_700_000_000.0);
    s.add_task("t-1", "travel").unwrap();
    s
}

/// A state path in a fresh directory `tmp/` (not created yet).
fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tmp").join("session_state.json");
    (dir, path)
}

fn lock_of(path: &Path) -> PathBuf {
    path.with_extension("json.lock")
}

fn our_pid_line() -> String {
    format!("{}\n", std::process::id())
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file in the state directory with its content.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn assert_in_use(path: &Path, backend: Backend) {
    match open_store(path, backend, 3) {
        Err(PersistError::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
        Err(e) => panic!("{backend:?}: a second store failed otherwise: {e}"),
        Ok(_) => panic!("{backend:?}: a second store got the lock"),
    }
}

#[test]
fn a_lock_file_removed_while_open_is_re_created_at_the_next_save() {
    for backend in BACKENDS {
        let (_dir, path) = setup();
        let lock = lock_of(&path);
        let mut store = open_store(&path, backend, 3).unwrap();
        let mut s = state("naboo");
        assert_eq!(store.save(&mut s).unwrap().recreated, None);

        fs::remove_file(&lock).unwrap();
        let report = store.save(&mut s).unwrap();
        assert_eq!(
            report.recreated,
            Some(Recreated {
                dir: path.parent().unwrap().to_path_buf(),
                dir_change: None,
                lock_file: lock.clone(),
                lock_change: Change::Removed,
            }),
            "{backend:?}"
        );
        let message = report.recreated.unwrap().to_string();
        assert!(
            message.contains("was removed") && message.contains(&lock.display().to_string()),
            "{message}"
        );
        assert_eq!(fs::read_to_string(&lock).unwrap(), our_pid_line());
        assert_eq!(mode(&lock), 0o600);
        assert_in_use(&path, backend);

        // Taken again once: the next save finds everything as it was.
        assert_eq!(store.save(&mut s).unwrap().recreated, None, "{backend:?}");
        assert_eq!(s.generation, 3);
    }
}

#[test]
fn a_lock_file_replaced_while_open_is_locked_again() {
    let (_dir, path) = setup();
    let lock = lock_of(&path);
    let mut store = open_store(&path, Backend::Atomic, 3).unwrap();
    let mut s = state("naboo");
    store.save(&mut s).unwrap();
    // A stale-looking lock file moved over ours: no one holds a lock on it.
    let other = path.with_extension("json.other");
    fs::write(&other, "4242\n").unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(&other, &lock).unwrap();

    let report = store.save(&mut s).unwrap();
    assert_eq!(
        report.recreated.map(|r| (r.dir_change, r.lock_change)),
        Some((None, Change::Replaced))
    );
    assert_eq!(fs::read_to_string(&lock).unwrap(), our_pid_line());
    assert_in_use(&path, Backend::Atomic);
}

#[test]
fn a_symlink_planted_at_the_removed_lock_file_fails_the_save_and_is_not_followed() {
    let (dir, path) = setup();
    let lock = lock_of(&path);
    let mut store = open_store(&path, Backend::Atomic, 3).unwrap();
    let mut s = state("naboo");
    store.save(&mut s).unwrap();
    let outside = dir.path().join("victim.txt");
    fs::write(&outside, "precious\n").unwrap();
    fs::remove_file(&lock).unwrap();
    symlink(&outside, &lock).unwrap();

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
    assert_eq!(s.generation, 1, "the state in memory is unchanged");
    assert_eq!(fs::read_to_string(&outside).unwrap(), "precious\n");

    // Once the link is gone, the next save takes the lock again.
    fs::remove_file(&lock).unwrap();
    let report = store.save(&mut s).unwrap();
    assert!(report.recreated.is_some());
    assert_eq!(s.generation, 2);
}

#[test]
fn a_state_directory_removed_while_open_is_re_created_with_its_files() {
    for backend in BACKENDS {
        let (_dir, path) = setup();
        let state_dir = path.parent().unwrap().to_path_buf();
        let mut store = open_store(&path, backend, 3).unwrap();
        let mut s = state("naboo");
        store.save(&mut s).unwrap();
        store.save(&mut s).unwrap();

        fs::remove_dir_all(&state_dir).unwrap();
        s.planet = "tatooine".into();
        let report = store.save(&mut s).unwrap();
        let recreated = report.recreated.unwrap();
        assert_eq!(recreated.dir, state_dir, "{backend:?}");
        assert_eq!(recreated.dir_change, Some(Change::Removed), "{backend:?}");
        assert_eq!(recreated.lock_change, Change::Removed, "{backend:?}");
        assert!(recreated.to_string().contains("re-created it (0700)"));
        assert_eq!(mode(&state_dir), 0o700, "{backend:?}");
        assert_eq!(mode(&path), 0o600, "{backend:?}");
        assert_eq!(fs::read_to_string(lock_of(&path)).unwrap(), our_pid_line());
        assert_in_use(&path, backend);

        let loaded = ms11_persist::StateFiles::new(&path)
            .load_read_only()
            .unwrap()
            .unwrap();
        assert_eq!(loaded.state, s, "{backend:?}");
        assert_eq!(loaded.state.planet, "tatooine");
        assert_eq!(loaded.state.generation, 3, "the generations go on");
    }
}

#[test]
fn a_state_taken_over_after_its_lock_file_was_removed_is_never_written_again() {
    for backend in BACKENDS {
        let (_dir, path) = setup();
        let state_dir = path.parent().unwrap().to_path_buf();
        let mut first = open_store(&path, backend, 3).unwrap();
        let mut mine = state("naboo");
        first.save(&mut mine).unwrap();

        // The lock file goes; a second runner starts on the same state, takes a new
        // lock and saves its own.
        fs::remove_file(lock_of(&path)).unwrap();
        let mut second = open_store(&path, backend, 3).unwrap();
        let mut theirs = second.load().unwrap().unwrap().state;
        theirs.planet = "tatooine".into();
        second.save(&mut theirs).unwrap();
        let before = snapshot(&state_dir);

        mine.planet = "hoth".into();
        let err = first.save(&mut mine).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, PersistError::TakenOver { pid: Some(pid), .. } if *pid == std::process::id()),
            "{backend:?}: {text}"
        );
        assert!(
            text.contains("taken over by another ms11-recovery process")
                && text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert_eq!(mine.generation, 1, "the state in memory is unchanged");
        assert_eq!(
            snapshot(&state_dir),
            before,
            "{backend:?}: the second's files"
        );

        // It stays so: no later save writes there, not even once the second is gone.
        assert!(matches!(
            first.save(&mut mine),
            Err(PersistError::TakenOver { .. })
        ));
        drop(second);
        assert!(matches!(
            first.save(&mut mine),
            Err(PersistError::TakenOver { .. })
        ));
        assert_eq!(
            snapshot(&state_dir),
            before,
            "{backend:?}: the second's files"
        );
        let loaded = ms11_persist::StateFiles::new(&path)
            .load_read_only()
            .unwrap()
            .unwrap();
        assert_eq!(loaded.state.planet, "tatooine");
    }
}

#[test]
fn saves_written_by_another_store_while_the_lock_was_lost_number_below_the_next_save() {
    let (_dir, path) = setup();
    let mut first = open_store(&path, Backend::Atomic, 3).unwrap();
    let mut mine = state("naboo");
    first.save(&mut mine).unwrap();
    fs::remove_file(lock_of(&path)).unwrap();
    {
        // A second runner came and went while the lock file was missing.
        let mut second = open_store(&path, Backend::Atomic, 3).unwrap();
        let mut theirs = second.load().unwrap().unwrap().state;
        for _ in 0..3 {
            second.save(&mut theirs).unwrap();
        }
        assert_eq!(theirs.generation, 4);
    }
    mine.planet = "hoth".into();
    let report = first.save(&mut mine).unwrap();
    assert_eq!(
        report.recreated.map(|r| r.lock_change),
        Some(Change::Replaced)
    );
    assert_eq!(
        report.generation, 5,
        "numbered above what was written meanwhile"
    );
    let loaded = ms11_persist::StateFiles::new(&path)
        .load_read_only()
        .unwrap()
        .unwrap();
    assert_eq!(
        loaded.state.planet, "hoth",
        "the newest save is the one loaded"
    );
}
