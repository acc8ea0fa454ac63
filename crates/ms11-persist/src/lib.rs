//! Crash-safe storage of [`SessionState`]s, and nothing else.
//!
//! A state lives in one file (the seed's `tmp/session_state.json`) with older
//! generations beside it (`session_state.json.1`, `.2`, ...). Two backends implement
//! [`StateStore`]:
//!
//! - [`AtomicStore`] (the default): temp file in the same directory (`O_EXCL`, mode
//!   0600), write all, fsync, close, rotate the generations, rename over the target,
//!   fsync the directory. A failed write or fsync is never retried on the same file:
//!   the next save writes a new temp file from memory.
//! - [`JsonFileStore`]: a plain rewrite of the one file, for tests and for sharing the
//!   file with tools that expect exactly that.
//!
//! Loading picks the newest generation that passes its checksum, parses and validates;
//! every file it passes over is reported, and moved to `quarantine/` beside the state
//! file when a valid one was found. If state files exist and none is valid, loading
//! fails and says why for each: never a silent default.
//!
//! Every file this crate creates is mode 0600 and every directory 0700; nothing is
//! written through a symbolic link found in the state directory, and an existing state
//! directory writable by others is warned about ([`shared_dir_warning`]).
//!
//! One process writes a state file at a time ([`StateLock`]), checked again at every
//! save: a lock file or state directory removed while the store is open is re-created,
//! and a state that another process took over meanwhile is never written again;
//! [`cleanup`] removes old generations, stale temp files and quarantine entries, never
//! the newest valid state.
//! This crate knows nothing of detectors, strategies or processes.

mod atomic;
mod cleanup;
mod error;
mod files;
mod integrity;
mod json_file;
mod lock;
mod quarantine;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ms11_state::{Migration, SessionState};

pub use atomic::{AtomicStore, shared_dir_warning};
pub use cleanup::{CleanupReport, cleanup};
pub use error::PersistError;
pub use files::{GenerationInfo, MAX_STATE_BYTES, StateFiles};
pub use json_file::JsonFileStore;
pub use lock::{Change, Recreated, StateLock};
pub use quarantine::QuarantinedFile;

/// Which on-disk write discipline to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Temp file + fsync + rename + directory fsync, with generations.
    #[default]
    Atomic,
    /// Plain rewrite of the one file (no fsync, no generations).
    JsonFile,
}

impl std::str::FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "atomic" => Ok(Backend::Atomic),
            "json-file" | "json_file" => Ok(Backend::JsonFile),
            other => Err(format!(
                "unknown state backend `{other}` (expected `atomic` or `json-file`)"
            )),
        }
    }
}

/// A state file passed over during a load, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// Why it was not used.
    pub reason: String,
    /// Where it was moved, when it was quarantined.
    pub quarantined_to: Option<PathBuf>,
}

/// The outcome of a successful load.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The state, valid and migrated to the current schema.
    pub state: SessionState,
    /// The file it came from.
    pub loaded_from: PathBuf,
    /// Newer or equal files that were not used, with the reason for each.
    pub skipped: Vec<SkippedFile>,
    /// Set when the file had an older schema.
    pub migration: Option<Migration>,
    /// Task ids found only in `task_queue` and added to the ledger.
    pub tasks_added_from_queue: Vec<String>,
}

/// The outcome of a successful save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveReport {
    /// The file written.
    pub path: PathBuf,
    /// The generation it holds.
    pub generation: u64,
    /// Its size.
    pub bytes: usize,
    /// How long the save took.
    pub duration: Duration,
    /// The state directory or lock file this save found removed or replaced and
    /// re-created before writing (already logged).
    pub recreated: Option<Recreated>,
}

/// A place where session states are saved and loaded.
pub trait StateStore: Send {
    /// The main state file.
    fn path(&self) -> &Path;

    /// Loads the newest valid generation. `Ok(None)`: no state files at all (a first
    /// run). Invalid files passed over are quarantined when a valid one is found; when
    /// none is valid nothing is moved and the error lists every file with its reason.
    fn load(&mut self) -> Result<Option<LoadReport>, PersistError>;

    /// Saves `state` as the next generation. On success `state.generation`,
    /// `state.last_save_time` and `state.runtime.save_count` are updated; on failure
    /// `state` is unchanged and the previous good generation is intact on disk.
    ///
    /// Every save first checks that the lock file and the state directory are still
    /// the ones taken at open ([`StateLock::ensure_held`]): what was removed is
    /// re-created (and reported in [`SaveReport::recreated`]); a state another process
    /// took over in the meantime is never written again ([`PersistError::TakenOver`]).
    fn save(&mut self, state: &mut SessionState) -> Result<SaveReport, PersistError>;

    /// Every state file present, newest generation first, with its validity.
    fn generations(&self) -> Result<Vec<GenerationInfo>, PersistError> {
        files_of(self.path()).generations()
    }

    /// Loads one specific generation (for restore).
    fn load_generation(&self, generation: u64) -> Result<SessionState, PersistError> {
        files_of(self.path()).load_generation(generation)
    }

    /// Moves every invalid state file to `quarantine/` (used by `--force`: start fresh
    /// and keep the bad files).
    fn quarantine_invalid(&mut self) -> Result<Vec<QuarantinedFile>, PersistError> {
        files_of(self.path()).quarantine_invalid()
    }
}

fn files_of(path: &Path) -> StateFiles {
    StateFiles::new(path)
}

/// Opens a store of the given backend, taking the single-writer lock and removing
/// temp files a crashed writer left behind.
pub fn open_store(
    path: impl Into<PathBuf>,
    backend: Backend,
    keep_generations: usize,
) -> Result<Box<dyn StateStore>, PersistError> {
    let path = path.into();
    Ok(match backend {
        Backend::Atomic => Box::new(AtomicStore::open(path, keep_generations)?),
        Backend::JsonFile => Box::new(JsonFileStore::open(path)?),
    })
}

/// Seconds since the unix epoch, for `last_save_time`.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
