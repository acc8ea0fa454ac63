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
use tracing::debug;

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
    _lock: StateLock,
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
            _lock: lock,
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
    state.generation = last_generation.max(state.generation) + 1;
    state.last_save_time = unix_now();
    state.runtime.save_count += 1;
    let json = state
        .validate()
        .map_err(ms11_state::StateError::from)
        .and_then(|()| state.to_json_pretty());
    match json {
        Ok(json) => Ok(Stamped {
            bytes: integrity::seal(&json),
            previous,
        }),
        Err(source) => {
            previous.restore(state);
            Err(PersistError::InvalidState {
                path: path.to_path_buf(),
                source,
            })
        }
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
