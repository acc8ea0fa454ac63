//! Disk full and read-only file systems, on real small tmpfs mounts. Mounting needs
//! root (CI runs as root); elsewhere these tests say why they are skipped.

#![allow(clippy::unwrap_used)]
#![cfg(target_os = "linux")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ms11_persist::{AtomicStore, PersistError, StateStore};
use ms11_state::SessionState;
use ms11_test_support::Need;

/// A tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        if !ms11_test_support::is_root() {
            return Err("mounting a tmpfs needs root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .map_err(|e| format!("cannot run `mount`: {e}"))?;
        if !status.success() {
            return Err(format!(
                "`mount -t tmpfs` failed ({status}); no mount permission here"
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Makes the mount read-only for new operations through a read-only bind mount on
    /// top of it (files already open, such as the lock file, stay open).
    fn bind_read_only(&self) {
        for args in [vec!["--bind"], vec!["-o", "remount,bind,ro"]] {
            let status = Command::new("mount")
                .args(&args)
                .arg(self.path())
                .arg(self.path())
                .status()
                .unwrap();
            assert!(status.success(), "mount {args:?}");
        }
    }

    fn unbind(&self) {
        let status = Command::new("umount").arg(self.path()).status().unwrap();
        assert!(status.success(), "umount the read-only bind");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

fn big_state(tasks: usize) -> SessionState {
    let mut s = SessionState::new("disk", "naboo", "theed", 1_700_000_000.0);
    for i in 0..tasks {
        s.add_task(
            &format!("task-{i:05}"),
            "a task with a long enough name to take space",
        )
        .unwrap();
    }
    s
}

fn no_temp_files(dir: &Path) -> bool {
    fs::read_dir(dir)
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
}

#[test]
fn disk_full_fails_loudly_keeps_the_previous_state_and_succeeds_once_space_is_back() {
    let fs_ = match Tmpfs::mount("1m") {
        Ok(m) => m,
        Err(reason) => {
            ms11_test_support::skip("disk_full", Need::Root, &reason);
            return;
        }
    };
    let path: PathBuf = fs_.path().join("session_state.json");
    let mut store = AtomicStore::open(&path, 2).unwrap();
    let mut state = big_state(10);
    store.save(&mut state).unwrap();
    // Fill the disk.
    let filler = fs_.path().join("filler");
    let _ = fs::write(&filler, vec![0u8; 2 * 1024 * 1024]);
    let mut bigger = big_state(3000);
    bigger.generation = state.generation;
    let before = bigger.clone();
    let err = store.save(&mut bigger).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PersistError::Io { .. }), "{text}");
    assert!(text.contains("disk is full"), "{text}");
    assert!(
        text.contains(&*fs_.path().to_string_lossy()),
        "error names the path: {text}"
    );
    assert_eq!(bigger, before, "in-memory state kept for the retry");
    assert!(no_temp_files(fs_.path()), "failed temp file removed");
    let loaded = store.load().unwrap().unwrap();
    assert_eq!(loaded.state.generation, 1, "previous good state intact");
    // Space comes back: the same in-memory state saves.
    fs::remove_file(&filler).unwrap();
    let saved = store.save(&mut bigger).unwrap();
    assert_eq!(saved.generation, 2);
}

#[test]
fn read_only_file_system_fails_loudly_and_loading_still_works() {
    let fs_ = match Tmpfs::mount("1m") {
        Ok(m) => m,
        Err(reason) => {
            ms11_test_support::skip("read_only", Need::Root, &reason);
            return;
        }
    };
    let path = fs_.path().join("session_state.json");
    let mut store = AtomicStore::open(&path, 3).unwrap();
    let mut state = big_state(3);
    store.save(&mut state).unwrap();
    fs_.bind_read_only();
    let err = store.save(&mut state).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("read-only"), "{text}");
    assert_eq!(state.generation, 1);
    assert_eq!(store.load().unwrap().unwrap().state.generation, 1);
    fs_.unbind();
    assert_eq!(store.save(&mut state).unwrap().generation, 2);
}

#[test]
fn permission_denied_names_the_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("locked");
    fs::create_dir(&state_dir).unwrap();
    let path = state_dir.join("session_state.json");
    let mut store = AtomicStore::open(&path, 3).unwrap();
    fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o500)).unwrap();
    let probe = state_dir.join("probe");
    if fs::write(&probe, b"x").is_ok() {
        let _ = fs::remove_file(&probe);
        fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o700)).unwrap();
        ms11_test_support::skip(
            "permission_denied_names_the_directory",
            Need::NonRoot,
            "running as root, mode bits do not stop writes",
        );
        return;
    }
    let err = store.save(&mut big_state(1)).unwrap_err();
    fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(err.to_string().contains("permission denied"), "{err}");
}
