//! One writer per state file: an advisory lock on `<state file>.lock`.
//!
//! The lock file is opened without following a symbolic link (`O_NOFOLLOW`) and with
//! mode 0600, and it is only rewritten (truncated, our pid written) when it is a regular
//! file of this user with one link whose content is a pid or nothing: a symbolic link
//! or a hard link planted in the state directory never makes a writer write elsewhere.
//!
//! A lock is only as good as its file: when the lock file (or the whole state
//! directory) is removed while the runner runs, a second runner would create a new one
//! and lock it too. So every save first checks, with two `stat`s, that the lock file
//! and the state directory are still the ones taken at open ([`StateLock::ensure_held`]).
//! When either was removed or replaced, the directory (0700) and the lock file are
//! re-created and the lock taken again under the same rules; when another process
//! already holds a lock on a new lock file there, the state is no longer ours and this
//! store refuses every save from then on ([`PersistError::TakenOver`]).

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tracing::{error, warn};

use crate::PersistError;

/// The most a lock file of ours holds: a pid and a newline.
const MAX_LOCK_BYTES: u64 = 32;

/// Held while a process may write a state file; released on drop (and by the OS when
/// the process dies, so a killed runner never leaves a stale lock).
#[derive(Debug)]
pub struct StateLock {
    path: PathBuf,
    state_path: PathBuf,
    dir: PathBuf,
    file: File,
    /// The lock file's and the state directory's identities when the lock was taken.
    taken: Option<Identities>,
    /// Set once another process took the state over: no save is allowed any more.
    taken_over: Option<TakenOver>,
}

/// The identities checked at each save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identities {
    lock: FileId,
    dir: FileId,
}

/// A file's (device, inode): equal only for the very same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(unix), allow(dead_code))]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> Option<FileId> {
        use std::os::unix::fs::MetadataExt;
        Some(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Windows keeps an open file from being deleted, and std has no stable file id
    /// there: nothing is checked.
    #[cfg(not(unix))]
    fn of(_meta: &std::fs::Metadata) -> Option<FileId> {
        None
    }
}

/// The pid of the process that took the state over, when its lock file says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TakenOver {
    pid: Option<u32>,
}

/// What happened to a file or directory of the store while it was open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It is gone.
    Removed,
    /// Another file or directory now has its name.
    Replaced,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Removed => "was removed",
            Change::Replaced => "was replaced",
        }
    }
}

/// What a save found removed or replaced under it, and re-created before it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recreated {
    /// The state directory.
    pub dir: PathBuf,
    /// What happened to it, when anything did.
    pub dir_change: Option<Change>,
    /// The lock file, re-created (when it was missing) and locked again.
    pub lock_file: PathBuf,
    /// What happened to it.
    pub lock_change: Change,
}

impl fmt::Display for Recreated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dir_change {
            Some(Change::Removed) => write!(
                f,
                "the state directory `{}` was removed while the runner ran; re-created it (0700) and took the lock `{}` again",
                self.dir.display(),
                self.lock_file.display()
            ),
            Some(Change::Replaced) => write!(
                f,
                "the state directory `{}` was replaced by another directory while the runner ran; took the lock `{}` again in it",
                self.dir.display(),
                self.lock_file.display()
            ),
            None => write!(
                f,
                "the lock file `{}` {} while the runner ran; took the lock again on a new lock file",
                self.lock_file.display(),
                self.lock_change.as_str()
            ),
        }
    }
}

impl StateLock {
    /// Takes the lock for `state_path`, or says which pid holds it.
    pub fn acquire(state_path: &Path) -> Result<StateLock, PersistError> {
        let lock_path = lock_path_for(state_path);
        let dir = dir_of(&lock_path);
        crate::atomic::create_private_dir(&dir)?;
        crate::atomic::warn_if_shared_dir(&dir);
        let file = take(&lock_path, state_path)?;
        let taken = identities(&file, &dir, &lock_path)?;
        Ok(StateLock {
            path: lock_path,
            state_path: state_path.to_path_buf(),
            dir,
            file,
            taken,
            taken_over: None,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks that the lock file and the state directory are still the ones the lock
    /// was taken on (two `stat`s, called by every save before it writes).
    ///
    /// `Ok(None)`: nothing changed. `Ok(Some(_))`: one of them was removed or replaced;
    /// the directory and the lock file were re-created and the lock taken again (and
    /// the change logged). [`PersistError::TakenOver`]: another process holds a lock on
    /// a new lock file at that path; this store refuses every save from now on. Any
    /// other error (a symbolic link now sits at the lock's name, ...) fails this save
    /// and is checked again at the next one.
    pub fn ensure_held(&mut self) -> Result<Option<Recreated>, PersistError> {
        if let Some(taken_over) = self.taken_over {
            return Err(self.taken_over_error(taken_over));
        }
        let Some(taken) = self.taken else {
            return Ok(None);
        };
        let dir_now = std::fs::metadata(&self.dir)
            .ok()
            .filter(std::fs::Metadata::is_dir)
            .and_then(|m| FileId::of(&m));
        let lock_now = std::fs::symlink_metadata(&self.path)
            .ok()
            .and_then(|m| FileId::of(&m));
        if lock_now == Some(taken.lock) {
            if dir_now != Some(taken.dir) {
                // The very same lock file under a directory that stats differently (a
                // remount): the lock is still ours and nothing needs re-creating.
                self.taken = identities(&self.file, &self.dir, &self.path)?;
            }
            return Ok(None);
        }
        let change = |now: Option<FileId>| match now {
            None => Change::Removed,
            Some(_) => Change::Replaced,
        };
        let dir_change = (dir_now != Some(taken.dir)).then(|| change(dir_now));
        let lock_change = change(lock_now);
        crate::atomic::create_private_dir(&self.dir)?;
        if dir_change.is_some() {
            crate::atomic::warn_if_shared_dir(&self.dir);
        }
        let file = match take(&self.path, &self.state_path) {
            Ok(file) => file,
            Err(PersistError::Locked { pid, .. }) => {
                let taken_over = TakenOver { pid };
                self.taken_over = Some(taken_over);
                let err = self.taken_over_error(taken_over);
                error!(
                    event = "state_taken_over",
                    path = %self.path.display(),
                    pid,
                    "the lock file `{}` {} while the runner ran and another process now holds a lock on a new one: {err}",
                    self.path.display(),
                    lock_change.as_str()
                );
                return Err(err);
            }
            Err(e) => return Err(e),
        };
        self.taken = identities(&file, &self.dir, &self.path)?;
        // The old descriptor locks a file that is no longer at the lock's path: let it go.
        self.file = file;
        let recreated = Recreated {
            dir: self.dir.clone(),
            dir_change,
            lock_file: self.path.clone(),
            lock_change,
        };
        let event = if dir_change.is_some() {
            "state_dir_recreated"
        } else {
            "lock_file_recreated"
        };
        warn!(event, path = %self.path.display(), "{recreated}");
        Ok(Some(recreated))
    }

    fn taken_over_error(&self, taken_over: TakenOver) -> PersistError {
        PersistError::TakenOver {
            path: self.state_path.clone(),
            lock_file: self.path.clone(),
            pid: taken_over.pid,
        }
    }
}

/// The directory holding `path` (`.` for a bare name), as [`crate::StateFiles`] has it.
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The identities of the lock file just taken (from its descriptor) and of the state
/// directory.
fn identities(
    file: &File,
    dir: &Path,
    lock_path: &Path,
) -> Result<Option<Identities>, PersistError> {
    let lock = file
        .metadata()
        .map_err(|e| PersistError::io("stat", lock_path, e))?;
    let dir_meta =
        std::fs::metadata(dir).map_err(|e| PersistError::io("stat the state directory", dir, e))?;
    Ok(FileId::of(&lock)
        .zip(FileId::of(&dir_meta))
        .map(|(lock, dir)| Identities { lock, dir }))
}

/// Opens (creating it, 0600, never through a symbolic link) and locks the lock file,
/// then writes our pid in it when it is ours to rewrite.
fn take(lock_path: &Path, state_path: &Path) -> Result<File, PersistError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(crate::atomic::NO_FOLLOW_FLAG);
    }
    let mut file = options.open(lock_path).map_err(|e| {
        if crate::atomic::is_symlink(lock_path) {
            PersistError::NotAFile {
                path: lock_path.to_path_buf(),
                what: "a symbolic link",
            }
        } else {
            PersistError::io("open the lock file", lock_path, e)
        }
    })?;
    check_is_ours(&file, lock_path)?;
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
            return Err(PersistError::io("lock", lock_path, e));
        }
    }
    let mut text = Vec::new();
    (&file)
        .take(MAX_LOCK_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| PersistError::io("read the lock file", lock_path, e))?;
    let is_pid_or_empty = text.len() as u64 <= MAX_LOCK_BYTES
        && text
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_whitespace());
    if !is_pid_or_empty {
        return Err(PersistError::NotOurs {
            path: lock_path.to_path_buf(),
            why: "it holds something other than a pid".into(),
        });
    }
    let pid = std::process::id();
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
        .and_then(|()| writeln!(file, "{pid}"))
        .map_err(|e| PersistError::io("write the lock file", lock_path, e))?;
    Ok(file)
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
