//! Everything that can go wrong while storing states, each naming the file concerned.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// A storage failure. Every variant names the path concerned.
#[derive(Debug, Error)]
pub enum PersistError {
    /// A file-system operation failed (disk full, read-only, permission denied, ...).
    #[error("could not {op} `{path}`: {source}{hint}", hint = io_hint(source))]
    Io {
        /// What was being done (`write temp file`, `fsync directory`, ...).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Something that is not a regular file sits where a state file must go.
    #[error("`{path}` is {what}, not a state file; move it out of the way")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is (`a directory`, `a symbolic link`, ...).
        what: &'static str,
    },
    /// A file the runner would write is not one of its own (another user's, a hard link,
    /// unexpected content): it is left untouched.
    #[error(
        "`{path}` is not a file of ours ({why}); it was left untouched: move it out of the way"
    )]
    NotOurs {
        /// The path.
        path: PathBuf,
        /// Why it is not ours.
        why: String,
    },
    /// The state would be larger than a load accepts; nothing was written.
    #[error(
        "refusing to save a state of {bytes} bytes to `{path}`: the limit is {limit} bytes (a larger file would not load again); the previous state is intact"
    )]
    TooLarge {
        /// The state file.
        path: PathBuf,
        /// The size of the serialised state.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// State files exist and none of them is usable.
    #[error(
        "state files exist in `{dir}` but none is valid:\n{list}\nnothing was changed; start fresh with --force (the bad files are then kept in `quarantine/`)",
        list = format_list(files)
    )]
    NoValidState {
        /// The state directory.
        dir: PathBuf,
        /// Every file with the reason it was refused.
        files: Vec<(PathBuf, String)>,
    },
    /// Another process holds the single-writer lock.
    #[error("state file `{path}` is in use by another ms11-recovery process{}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        /// The state file.
        path: PathBuf,
        /// The holder's pid, as written in the lock file.
        pid: Option<u32>,
    },
    /// The lock file was removed or replaced while this store was open, and another
    /// process now holds a lock on a new lock file at its path: the state is no longer
    /// this store's, and it refuses every save from then on.
    #[error(
        "state file `{path}` was taken over by another ms11-recovery process{} after its lock file `{lock_file}` was removed or replaced; this runner no longer saves it (its changes since are kept in memory only): stop one of the two runners",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    TakenOver {
        /// The state file.
        path: PathBuf,
        /// Its lock file.
        lock_file: PathBuf,
        /// The new holder's pid, as written in the new lock file.
        pid: Option<u32>,
    },
    /// The state to save breaks a rule; nothing was written.
    #[error("refusing to save an invalid state to `{path}`: {source}")]
    InvalidState {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: ms11_state::StateError,
    },
    /// `load_generation` asked for a generation that is not on disk or not valid.
    #[error("generation {generation} of `{path}` is not available: {reason}")]
    Generation {
        /// The state file.
        path: PathBuf,
        /// The generation asked for.
        generation: u64,
        /// Why.
        reason: String,
    },
}

impl PersistError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        PersistError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

fn io_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(code) if code == ENOSPC => {
            " (the disk is full: free some space; the previous state is intact)"
        }
        Some(code) if code == EROFS => {
            " (the file system is read-only; the previous state is intact)"
        }
        _ if err.kind() == io::ErrorKind::PermissionDenied => {
            " (permission denied: check the owner and mode of the state directory)"
        }
        _ => "",
    }
}

#[cfg(unix)]
const ENOSPC: i32 = 28;
#[cfg(unix)]
const EROFS: i32 = 30;
#[cfg(windows)]
const ENOSPC: i32 = 112; // ERROR_DISK_FULL
#[cfg(windows)]
const EROFS: i32 = 19; // ERROR_WRITE_PROTECT

fn format_list(files: &[(PathBuf, String)]) -> String {
    files
        .iter()
        .map(|(path, reason)| format!("  - `{}`: {reason}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
}
