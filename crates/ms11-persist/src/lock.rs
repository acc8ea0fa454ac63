//! One writer per state file: an advisory lock on `<state file>.lock`.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::PersistError;

/// Held while a process may write a state file; released on drop (and by the OS when
/// the process dies, so a killed runner never leaves a stale lock).
#[derive(Debug)]
pub struct StateLock {
    path: PathBuf,
    _file: File,
}

impl StateLock {
    /// Takes the lock for `state_path`, or says which pid holds it.
    pub fn acquire(state_path: &Path) -> Result<StateLock, PersistError> {
        let lock_path = lock_path_for(state_path);
        if let Some(dir) = lock_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::atomic::create_private_dir(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| PersistError::io("open the lock file", &lock_path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(PersistError::Locked {
                    path: state_path.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(PersistError::io("lock", &lock_path, e));
            }
        }
        let pid = std::process::id();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| writeln!(file, "{pid}"))
            .map_err(|e| PersistError::io("write the lock file", &lock_path, e))?;
        Ok(StateLock {
            path: lock_path,
            _file: file,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `<state file>.lock`.
pub fn lock_path_for(state_path: &Path) -> PathBuf {
    let mut s = state_path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}
