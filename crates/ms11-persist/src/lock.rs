//! One writer per state file: an advisory lock on `<state file>.lock`.
//!
//! The lock file is opened without following a symbolic link (`O_NOFOLLOW`) and with
//! mode 0600, and it is only rewritten (truncated, our pid written) when it is a regular
//! file of this user with one link whose content is a pid or nothing: a symlink or a hard
//! link planted in the state directory never makes a writer write elsewhere.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::PersistError;

/// The most a lock file of ours holds: a pid and a newline.
const MAX_LOCK_BYTES: u64 = 32;

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
            crate::atomic::warn_if_shared_dir(dir);
        }
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options
                .mode(0o600)
                .custom_flags(crate::atomic::NO_FOLLOW_FLAG);
        }
        let mut file = options.open(&lock_path).map_err(|e| {
            if crate::atomic::is_symlink(&lock_path) {
                PersistError::NotAFile {
                    path: lock_path.clone(),
                    what: "a symbolic link",
                }
            } else {
                PersistError::io("open the lock file", &lock_path, e)
            }
        })?;
        check_is_ours(&file, &lock_path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = (&file).take(MAX_LOCK_BYTES).read_to_string(&mut text);
                return Err(PersistError::Locked {
                    path: state_path.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(PersistError::io("lock", &lock_path, e));
            }
        }
        let mut text = Vec::new();
        (&file)
            .take(MAX_LOCK_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| PersistError::io("read the lock file", &lock_path, e))?;
        let is_pid_or_empty = text.len() as u64 <= MAX_LOCK_BYTES
            && text
                .iter()
                .all(|b| b.is_ascii_digit() || b.is_ascii_whitespace());
        if !is_pid_or_empty {
            return Err(PersistError::NotOurs {
                path: lock_path,
                why: "it holds something other than a pid".into(),
            });
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

/// Refuses an opened file (the lock, the json-file backend's state) that is not a
/// regular file of this user with a single link.
#[cfg(unix)]
pub(crate) fn check_is_ours(file: &File, path: &Path) -> Result<(), PersistError> {
    use std::os::unix::fs::MetadataExt;
    let meta = file
        .metadata()
        .map_err(|e| PersistError::io("stat", path, e))?;
    if !meta.file_type().is_file() {
        return Err(PersistError::NotAFile {
            path: path.to_path_buf(),
            what: "a special file",
        });
    }
    let me = rustix::process::geteuid().as_raw();
    let why = if meta.uid() != me {
        format!(
            "it belongs to uid {}, not to this user (uid {me})",
            meta.uid()
        )
    } else if meta.nlink() > 1 {
        format!(
            "it has {} hard links (another name points at the same file)",
            meta.nlink()
        )
    } else {
        return Ok(());
    };
    Err(PersistError::NotOurs {
        path: path.to_path_buf(),
        why,
    })
}

#[cfg(not(unix))]
pub(crate) fn check_is_ours(_file: &File, _path: &Path) -> Result<(), PersistError> {
    Ok(())
}

/// `<state file>.lock`.
pub fn lock_path_for(state_path: &Path) -> PathBuf {
    let mut s = state_path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}
