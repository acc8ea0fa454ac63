//! The plain backend: the state file is rewritten in place. No fsync, no generations:
//! for tests and for tools that share the file and expect exactly the seed's behaviour.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ms11_state::SessionState;

use crate::atomic::{create_private_dir, stamp_and_serialize};
use crate::files::StateFiles;
use crate::lock::StateLock;
use crate::{LoadReport, PersistError, SaveReport, StateStore};

/// Plain writes of one file.
#[derive(Debug)]
pub struct JsonFileStore {
    files: StateFiles,
    last_generation: u64,
    lock: StateLock,
}

impl JsonFileStore {
    /// Opens the store and takes the lock.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, PersistError> {
        let files = StateFiles::new(path);
        let lock = StateLock::acquire(files.path())?;
        let last_generation = files.highest_generation();
        Ok(JsonFileStore {
            files,
            last_generation,
            lock,
        })
    }
}

/// Rewrites the state file in place: never through a symbolic link, never a file that
/// is not ours (another user's, a hard link); mode 0600.
fn rewrite_own_file(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(crate::atomic::NO_FOLLOW_FLAG);
    }
    let mut file = options.open(path).map_err(|e| {
        if crate::atomic::is_symlink(path) {
            PersistError::NotAFile {
                path: path.to_path_buf(),
                what: "a symbolic link",
            }
        } else {
            PersistError::io("open", path, e)
        }
    })?;
    crate::lock::check_is_ours(&file, path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| PersistError::io("make private", path, e))?;
    }
    file.set_len(0)
        .and_then(|()| file.write_all(bytes))
        .map_err(|e| PersistError::io("write", path, e))
}

impl StateStore for JsonFileStore {
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
        let stamped = stamp_and_serialize(state, self.last_generation, self.files.path())?;
        let path = self.files.path();
        let written = create_private_dir(self.files.dir()).and_then(|()| {
            if path.is_dir() {
                return Err(PersistError::NotAFile {
                    path: path.to_path_buf(),
                    what: "a directory",
                });
            }
            rewrite_own_file(path, &stamped.bytes)
        });
        if let Err(e) = written {
            stamped.previous.restore(state);
            return Err(e);
        }
        self.last_generation = state.generation;
        Ok(SaveReport {
            path: path.to_path_buf(),
            generation: state.generation,
            bytes: stamped.bytes.len(),
            duration: started.elapsed(),
            recreated,
        })
    }
}
