//! `cleanup --max-age HOURS`: removing what is old, never the newest valid state.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::info;

use crate::PersistError;
use crate::files::StateFiles;

/// What a cleanup did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Files removed.
    pub removed: Vec<PathBuf>,
    /// The newest valid state, which is never removed.
    pub kept_newest: Option<PathBuf>,
    /// Files that could not be removed, with the error.
    pub failed: Vec<(PathBuf, String)>,
}

/// Removes generations, stale temp files and quarantine entries last modified more than
/// `max_age` ago. The newest valid generation is always kept, however old. Call it
/// while no writer runs on the state (the runner calls it holding the lock).
pub fn cleanup(state_path: &Path, max_age: Duration) -> Result<CleanupReport, PersistError> {
    let files = StateFiles::new(state_path);
    let now = SystemTime::now();
    let is_old = |path: &Path| -> bool {
        fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age > max_age)
    };
    let newest = files
        .load_read_only()
        .ok()
        .flatten()
        .map(|report| report.loaded_from);
    let mut report = CleanupReport {
        kept_newest: newest.clone(),
        ..CleanupReport::default()
    };
    let remove = |path: PathBuf, report: &mut CleanupReport| {
        let result = if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match result {
            Ok(()) => {
                info!(path = %path.display(), "cleanup removed");
                report.removed.push(path);
            }
            Err(e) => report.failed.push((path, e.to_string())),
        }
    };
    for (_, path) in files.candidates()? {
        if Some(&path) != newest.as_ref() && is_old(&path) {
            remove(path, &mut report);
        }
    }
    for path in files.temp_files()? {
        if is_old(&path) {
            remove(path, &mut report);
        }
    }
    if let Ok(entries) = fs::read_dir(files.quarantine_dir()) {
        let mut old: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_old(p))
            .collect();
        old.sort();
        for path in old {
            remove(path, &mut report);
        }
    }
    Ok(report)
}
