//! Moving unusable state files aside, never deleting them.

use std::fs;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::PersistError;
use crate::files::StateFiles;

/// A file moved to `quarantine/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedFile {
    /// Where it was.
    pub original: PathBuf,
    /// Where it is now.
    pub moved_to: PathBuf,
    /// Why it was moved (also written to `<moved_to>.reason.txt`).
    pub reason: String,
}

/// Moves `path` into the quarantine directory with a reason file beside it.
pub(crate) fn move_to_quarantine(
    files: &StateFiles,
    path: &Path,
    reason: &str,
) -> Result<QuarantinedFile, PersistError> {
    let dir = files.quarantine_dir();
    crate::atomic::create_private_subdir(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut n = 0u32;
    let moved_to = loop {
        let candidate = dir.join(format!("{name}.{stamp}.{n}"));
        if fs::symlink_metadata(&candidate).is_err() {
            break candidate;
        }
        n += 1;
    };
    fs::rename(path, &moved_to).map_err(|e| PersistError::io("move to quarantine", path, e))?;
    let note = format!("original: {}\nreason: {reason}\n", path.display());
    if let Err(e) = write_private_new(&reason_path(&moved_to), note.as_bytes()) {
        warn!(path = %moved_to.display(), error = %e, "could not write the quarantine reason file");
    }
    warn!(from = %path.display(), to = %moved_to.display(), %reason, "quarantined a state file");
    Ok(QuarantinedFile {
        original: path.to_path_buf(),
        moved_to,
        reason: reason.to_owned(),
    })
}

/// Writes a new file (never an existing one, never through a symbolic link), mode 0600.
fn write_private_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

fn reason_path(moved_to: &Path) -> PathBuf {
    let mut s = moved_to.as_os_str().to_owned();
    s.push(".reason.txt");
    PathBuf::from(s)
}
