//! The default backend: every save is a new temp file made durable, then renamed over
//! the state file after the older generations moved one slot down.
//!
//! Sequence (see `research/persistence.md`): create `.<name>.<pid>.<n>.tmp` in the same
//! directory with `O_EXCL` and mode 0600, write everything, fsync, close; rename the
//! current `<name>` to its ring slot `<name>.<k>` (k = 1 + (its generation - 1) mod
//! (keep - 1), replacing the oldest generation kept); rename the temp file to `<name>`;
//! fsync the directory. One rename more than a bare replace, whatever `keep` is. A crash
//! at any point leaves the previous generation loadable: a load goes by the generation
//! number inside the files, never by their names. A failed write or fsync is never
//! retried on the same file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ms11_state::SessionState;
use tracing::{debug, warn};

use crate::files::StateFiles;
use crate::lock::StateLock;
use crate::{LoadReport, PersistError, SaveReport, StateStore, integrity, unix_now};

/// Atomic, durable saves with `keep` generations.
#[derive(Debug)]
pub struct AtomicStore {
    files: StateFiles,
    keep: usize,
    last_generation: u64,
    temp_counter: u64,
    lock: StateLock,
}

impl AtomicStore {
    /// Opens the store: takes the lock, removes stale temp files, and notes the highest
    /// generation on disk. `keep` is the number of generations kept (at least 1).
    pub fn open(path: impl Into<PathBuf>, keep: usize) -> Result<Self, PersistError> {
        let files = StateFiles::new(path);
        let lock = StateLock::acquire(files.path())?;
        files.remove_stale_temps();
        let last_generation = files.highest_generation();
        Ok(AtomicStore {
            files,
            keep: keep.max(1),
            last_generation,
            temp_counter: 0,
            lock,
        })
    }

    /// The file layout.
    pub fn files(&self) -> &StateFiles {
        &self.files
    }

    fn check_slots_are_files(&self) -> Result<(), PersistError> {
        for slot in 0..self.keep {
            let path = self.files.slot_path(slot);
            if let Ok(meta) = fs::symlink_metadata(&path) {
                let ft = meta.file_type();
                let what = if ft.is_dir() {
                    "a directory"
                } else if ft.is_symlink() {
                    "a symbolic link"
                } else if !ft.is_file() {
                    "a special file"
                } else {
                    continue;
                };
                return Err(PersistError::NotAFile { path, what });
            }
        }
        Ok(())
    }

    /// Moves the current main file (generation `displaced`) to its ring slot.
    fn rotate(&self, displaced: u64) -> Result<(), PersistError> {
        if self.keep < 2 || displaced == 0 {
            return Ok(());
        }
        let ring = self.keep as u64 - 1;
        let slot = usize::try_from(1 + (displaced - 1) % ring).unwrap_or(1);
        let from = self.files.path();
        match fs::rename(from, self.files.slot_path(slot)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(PersistError::io("keep the previous generation of", from, e)),
        }
    }
}

impl StateStore for AtomicStore {
    fn path(&self) -> &Path {
        self.files.path()
    }

    fn load(&mut self) -> Result<Option<LoadReport>, PersistError> {
        let report = self.files.load_and_quarantine()?;
        if let Some(r) = &report {
            self.last_generation = self.last_generation.max(r.state.generation);
        }
        Ok(report)
    }

    fn save(&mut self, state: &mut SessionState) -> Result<SaveReport, PersistError> {
        let started = Instant::now();
        let recreated = self.lock.ensure_held()?;
        if recreated.is_some() {
            // Whatever was written while the lock was not ours numbers below this save.
            self.last_generation = self.last_generation.max(self.files.highest_generation());
        }
        let displaced = self.last_generation;
        let bytes = stamp_and_serialize(state, self.last_generation, self.files.path())?;
        let result = (|| {
            create_private_dir(self.files.dir())?;
            self.check_slots_are_files()?;
            self.temp_counter += 1;
            let tmp = self.files.temp_path(self.temp_counter);
            write_durable_temp(&tmp, &bytes.bytes)?;
            if let Err(e) = self
                .rotate(displaced)
                .and_then(|()| replace(&tmp, self.files.path()))
            {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            sync_dir(self.files.dir())
        })();
        match result {
            Ok(()) => {
                self.last_generation = state.generation;
                let report = SaveReport {
                    path: self.files.path().to_path_buf(),
                    generation: state.generation,
                    bytes: bytes.bytes.len(),
                    duration: started.elapsed(),
                    recreated,
                };
                debug!(path = %report.path.display(), generation = report.generation, bytes = report.bytes, "saved session state");
                Ok(report)
            }
            Err(e) => {
                bytes.previous.restore(state);
                Err(e)
            }
        }
    }
}

/// The fields a save stamps on the state, so a failed save can put them back.
pub(crate) struct Stamped {
    pub(crate) bytes: Vec<u8>,
    pub(crate) previous: PreviousStamp,
}

pub(crate) struct PreviousStamp {
    generation: u64,
    last_save_time: f64,
    save_count: u64,
}

impl PreviousStamp {
    pub(crate) fn restore(self, state: &mut SessionState) {
        state.generation = self.generation;
        state.last_save_time = self.last_save_time;
        state.runtime.save_count = self.save_count;
    }
}

/// Stamps the next generation, the save time and the save count on `state`, validates
/// it and serialises it with the checksum line. On error `state` is unchanged.
pub(crate) fn stamp_and_serialize(
    state: &mut SessionState,
    last_generation: u64,
    path: &Path,
) -> Result<Stamped, PersistError> {
    let previous = PreviousStamp {
        generation: state.generation,
        last_save_time: state.last_save_time,
        save_count: state.runtime.save_count,
    };
    // A generation (or save count) read from a file can be anything up to u64::MAX: the
    // counters saturate rather than overflow, and a save at the ceiling says so.
    let newest = last_generation.max(state.generation);
    state.generation = newest.saturating_add(1);
    if newest == u64::MAX {
        warn!(
            path = %path.display(),
            "the generation counter is at its maximum ({}); saving under the same number \
             (the main file wins a tie); start a fresh state file to reset it",
            u64::MAX
        );
    }
    state.last_save_time = unix_now();
    state.runtime.save_count = state.runtime.save_count.saturating_add(1);
    let json = state
        .validate()
        .map_err(ms11_state::StateError::from)
        .and_then(|()| state.to_json_pretty());
    match json {
        Ok(json) => {
            let bytes = integrity::seal(&json);
            if bytes.len() as u64 > crate::files::MAX_STATE_BYTES {
                // A file the loader refuses would be no save at all.
                previous.restore(state);
                return Err(PersistError::TooLarge {
                    path: path.to_path_buf(),
                    bytes: bytes.len() as u64,
                    limit: crate::files::MAX_STATE_BYTES,
                });
            }
            Ok(Stamped { bytes, previous })
        }
        Err(source) => {
            previous.restore(state);
            Err(PersistError::InvalidState {
                path: path.to_path_buf(),
                source,
            })
        }
    }
}

/// `O_NOFOLLOW` for `OpenOptionsExt::custom_flags`: opening a symbolic link fails.
#[cfg(unix)]
pub(crate) const NO_FOLLOW_FLAG: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

/// Whether `path` itself is a symbolic link (not following it).
pub(crate) fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Warns when an existing state directory is writable by its group or by everyone:
/// another user could then replace the state files. Returns the warning, if any.
pub fn shared_dir_warning(dir: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir).ok()?.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Some(format!(
                "the state directory `{}` is writable by {} (mode {mode:03o}): another user \
                 could replace the state files; `chmod 700` it",
                dir.display(),
                if mode & 0o002 != 0 {
                    "everyone"
                } else {
                    "its group"
                }
            ));
        }
        None
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Logs [`shared_dir_warning`], if any.
pub(crate) fn warn_if_shared_dir(dir: &Path) {
    if let Some(warning) = shared_dir_warning(dir) {
        warn!("{warning}");
    }
}

/// Creates a directory of ours inside the state directory (the quarantine), mode 0700;
/// a symbolic link or anything else than a directory at that name is refused.
pub(crate) fn create_private_subdir(dir: &Path) -> Result<(), PersistError> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_dir() => Ok(()),
        Ok(meta) => Err(PersistError::NotAFile {
            path: dir.to_path_buf(),
            what: if meta.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "a file where a directory of ours belongs"
            },
        }),
        Err(_) => create_private_dir(dir),
    }
}

/// Creates a directory (and its parents) readable by the owner only.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), PersistError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| PersistError::io("create the state directory", dir, e))
}

/// Writes `bytes` to a new file (`O_EXCL`, 0600) and fsyncs it. On any failure the
/// file is removed: a failed fsync is never retried on the same descriptor.
fn write_durable_temp(tmp: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(tmp)
        .map_err(|e| PersistError::io("create temp file", tmp, e))?;
    let written = file
        .write_all(bytes)
        .map_err(|e| PersistError::io("write temp file", tmp, e))
        .and_then(|()| {
            file.sync_all()
                .map_err(|e| PersistError::io("fsync temp file", tmp, e))
        });
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    Ok(())
}

#[cfg(unix)]
fn replace(tmp: &Path, target: &Path) -> Result<(), PersistError> {
    fs::rename(tmp, target).map_err(|e| PersistError::io("rename temp file over", target, e))
}

#[cfg(windows)]
#[allow(unsafe_code)]
fn replace(tmp: &Path, target: &Path) -> Result<(), PersistError> {
    use std::os::windows::ffi::OsStrExt;
    use windows_sys::Win32::Storage::FileSystem::{
        MOVEFILE_REPLACE_EXISTING, MOVEFILE_WRITE_THROUGH, MoveFileExW,
    };
    let wide = |p: &Path| -> Vec<u16> { p.as_os_str().encode_wide().chain(Some(0)).collect() };
    let (from, to) = (wide(tmp), wide(target));
    // SAFETY: both buffers are NUL-terminated UTF-16 strings that outlive the call.
    let ok = unsafe {
        MoveFileExW(
            from.as_ptr(),
            to.as_ptr(),
            MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH,
        )
    };
    if ok == 0 {
        return Err(PersistError::io(
            "rename temp file over",
            target,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Makes the renames durable.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PersistError::io("fsync the state directory", dir, e))
}

/// Windows has no directory fsync; `MOVEFILE_WRITE_THROUGH` is the commit.
#[cfg(windows)]
pub(crate) fn sync_dir(_dir: &Path) -> Result<(), PersistError> {
    Ok(())
}
