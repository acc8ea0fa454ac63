//! The plain backend: the state file is rewritten in place. No fsync, no generations:
//! for tests and for tools that share the file and expect exactly the seed's behaviour.

use std::fs;
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
    _lock: StateLock,
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
            _lock: lock,
        })
    }
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
        let stamped = stamp_and_serialize(state, self.last_generation, self.files.path())?;
        let path = self.files.path();
        let written = create_private_dir(self.files.dir()).and_then(|()| {
            if path.is_dir() {
                return Err(PersistError::NotAFile {
                    path: path.to_path_buf(),
                    what: "a directory",
                });
            }
            fs::write(path, &stamped.bytes).map_err(|e| PersistError::io("write", path, e))
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
        })
    }
}
