//! The files of one state: where they are, which generation each holds, and which one
//! to load.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ms11_state::{LoadedState, SessionState};
use tracing::{info, warn};

use crate::integrity::{self, Seal};
use crate::quarantine::{self, QuarantinedFile};
use crate::{LoadReport, PersistError, SkippedFile};

/// A state file read for a load: peeked generation, slot, path, bytes or why unreadable.
type Candidate = (Option<u64>, usize, PathBuf, Result<Vec<u8>, String>);

/// Just the generation number of a state file, read without building the state.
#[derive(serde::Deserialize)]
struct GenerationOnly {
    #[serde(default)]
    generation: u64,
}

/// The generation number a file's bytes claim, if they are a JSON object.
fn peek_generation(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<GenerationOnly>(bytes)
        .ok()
        .map(|g| g.generation)
}

/// Reads a state file after checking it is a regular file of a sane size.
fn read_checked(path: &Path) -> Result<Vec<u8>, String> {
    let meta = fs::symlink_metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        let target = fs::read_link(path)
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(format!(
            "is a symbolic link (to `{target}`); state files must be regular files"
        ));
    }
    if file_type.is_dir() {
        return Err("is a directory, not a state file".into());
    }
    if !file_type.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() == 0 {
        return Err("is empty (0 bytes): a save was cut short".into());
    }
    if meta.len() > MAX_STATE_BYTES {
        return Err(format!(
            "is {} bytes, larger than the {MAX_STATE_BYTES}-byte limit for a state file",
            meta.len()
        ));
    }
    fs::read(path).map_err(|e| format!("cannot read: {e}"))
}

/// Checks the checksum line, parses, migrates and validates.
fn parse_checked(bytes: &[u8]) -> Result<LoadedState, String> {
    if let Seal::Mismatch { stored, actual } = integrity::check(bytes) {
        return Err(format!(
            "checksum mismatch (stored crc32c {stored}, content {actual}): the file is damaged or was edited by hand (to accept an edit, delete its \"integrity\" line)"
        ));
    }
    let mut loaded = SessionState::from_json_slice(bytes).map_err(|e| e.to_string())?;
    loaded.state.extra.remove("integrity");
    Ok(loaded)
}

/// A state file larger than this is refused by a load (a state is a few KB), so a save
/// refuses to write one.
pub const MAX_STATE_BYTES: u64 = 64 * 1024 * 1024;

/// One file found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationInfo {
    /// The file.
    pub path: PathBuf,
    /// 0 for the main file, `n` for `<name>.n`.
    pub slot: usize,
    /// The generation inside, when it could be read.
    pub generation: Option<u64>,
    /// `Ok` when the file loads; otherwise why not.
    pub validity: Result<(), String>,
    /// Last modification time.
    pub modified: Option<SystemTime>,
    /// Size in bytes.
    pub bytes: u64,
}

/// The layout of one state's files: `<dir>/<name>`, `<dir>/<name>.<n>`, temp files
/// `<dir>/.<name>.<pid>.<n>.tmp`, and `<dir>/quarantine/`.
#[derive(Debug, Clone)]
pub struct StateFiles {
    path: PathBuf,
    dir: PathBuf,
    file_name: String,
}

impl StateFiles {
    /// The layout around a main state file path.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "session_state.json".to_owned());
        StateFiles {
            path,
            dir,
            file_name,
        }
    }

    /// The main state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where invalid files are moved.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.dir.join("quarantine")
    }

    /// Path of generation slot `slot` (0 = the main file).
    pub fn slot_path(&self, slot: usize) -> PathBuf {
        if slot == 0 {
            self.path.clone()
        } else {
            self.dir.join(format!("{}.{slot}", self.file_name))
        }
    }

    /// A fresh temp file name in the state directory.
    pub(crate) fn temp_path(&self, counter: u64) -> PathBuf {
        self.dir.join(format!(
            ".{}.{}.{counter}.tmp",
            self.file_name,
            std::process::id()
        ))
    }

    pub(crate) fn is_temp_name(&self, name: &str) -> bool {
        name.starts_with(&format!(".{}.", self.file_name)) && name.ends_with(".tmp")
    }

    fn slot_of(&self, name: &str) -> Option<usize> {
        if name == self.file_name {
            return Some(0);
        }
        let suffix = name.strip_prefix(&self.file_name)?.strip_prefix('.')?;
        if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        suffix.parse().ok().filter(|&n: &usize| n > 0)
    }

    /// Every state file present (main and generations), by slot.
    pub(crate) fn candidates(&self) -> Result<Vec<(usize, PathBuf)>, PersistError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(PersistError::io("list the state directory", &self.dir, e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| PersistError::io("list the state directory", &self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(slot) = self.slot_of(&name) {
                found.push((slot, entry.path()));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Temp files left by a writer that died mid-save.
    pub(crate) fn temp_files(&self) -> Result<Vec<PathBuf>, PersistError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(PersistError::io("list the state directory", &self.dir, e)),
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            if self.is_temp_name(&entry.file_name().to_string_lossy()) {
                found.push(entry.path());
            }
        }
        found.sort();
        Ok(found)
    }

    /// Removes stale temp files (call only while holding the lock).
    pub(crate) fn remove_stale_temps(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for path in self.temp_files().unwrap_or_default() {
            match fs::remove_file(&path) {
                Ok(()) => {
                    info!(path = %path.display(), "removed a temp file left by an interrupted save");
                    removed.push(path);
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "could not remove a stale temp file")
                }
            }
        }
        removed
    }

    /// Reads and checks one file: its state, or why it cannot be used.
    pub(crate) fn examine(&self, path: &Path) -> Result<LoadedState, String> {
        parse_checked(&read_checked(path)?)
    }

    /// Every state file with its generation and validity, newest generation first
    /// (unreadable ones last).
    pub fn generations(&self) -> Result<Vec<GenerationInfo>, PersistError> {
        let mut infos = Vec::new();
        for (slot, path) in self.candidates()? {
            let meta = fs::symlink_metadata(&path).ok();
            let examined = self.examine(&path);
            infos.push(GenerationInfo {
                slot,
                generation: examined.as_ref().ok().map(|l| l.state.generation),
                validity: examined.map(|_| ()),
                modified: meta.as_ref().and_then(|m| m.modified().ok()),
                bytes: meta.map_or(0, |m| m.len()),
                path,
            });
        }
        infos.sort_by(|a, b| {
            b.generation
                .cmp(&a.generation)
                .then_with(|| a.slot.cmp(&b.slot))
        });
        Ok(infos)
    }

    /// Loads one generation by number.
    pub fn load_generation(&self, generation: u64) -> Result<SessionState, PersistError> {
        let mut last_reason = "no state file holds it".to_owned();
        for (_, path) in self.candidates()? {
            match self.examine(&path) {
                Ok(loaded) if loaded.state.generation == generation => return Ok(loaded.state),
                Ok(_) => {}
                Err(reason) => {
                    last_reason = format!("no valid file holds it (`{}` {reason})", path.display())
                }
            }
        }
        Err(PersistError::Generation {
            path: self.path.clone(),
            generation,
            reason: last_reason,
        })
    }

    /// Loads the newest valid generation without moving anything.
    pub fn load_read_only(&self) -> Result<Option<LoadReport>, PersistError> {
        self.load_inner(false)
    }

    /// Loads the newest valid generation and quarantines the invalid files.
    pub(crate) fn load_and_quarantine(&self) -> Result<Option<LoadReport>, PersistError> {
        self.load_inner(true)
    }

    fn load_inner(&self, quarantine_bad: bool) -> Result<Option<LoadReport>, PersistError> {
        let candidates = self.candidates()?;
        if candidates.is_empty() {
            return Ok(None);
        }
        // A cheap look at each file's generation number orders the full checks, so a
        // normal load parses and validates one file, not every generation kept.
        let mut ordered: Vec<Candidate> = candidates
            .into_iter()
            .map(|(slot, path)| {
                let bytes = read_checked(&path);
                let peeked = bytes.as_deref().ok().and_then(peek_generation);
                (peeked, slot, path, bytes)
            })
            .collect();
        ordered.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut invalid: Vec<(PathBuf, String)> = Vec::new();
        let mut chosen: Option<(u64, PathBuf, LoadedState)> = None;
        for (peeked, slot, path, bytes) in ordered {
            let examined = || bytes.and_then(|b| parse_checked(&b));
            if chosen.is_some() {
                if peeked.is_none() || slot == 0 {
                    // Unreadable even for its generation number, or the main file (which
                    // should be the newest): check it fully and report it if bad.
                    if let Err(reason) = examined() {
                        invalid.push((path, reason));
                    }
                }
                continue;
            }
            match examined() {
                Ok(loaded) => chosen = Some((loaded.state.generation, path, loaded)),
                Err(reason) => invalid.push((path, reason)),
            }
        }
        let Some((generation, loaded_from, loaded)) = chosen else {
            return Err(PersistError::NoValidState {
                dir: self.dir.clone(),
                files: invalid,
            });
        };
        let mut skipped = Vec::new();
        for (path, reason) in invalid {
            let quarantined_to = if quarantine_bad {
                match quarantine::move_to_quarantine(self, &path, &reason) {
                    Ok(q) => Some(q.moved_to),
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "could not quarantine an invalid state file");
                        None
                    }
                }
            } else {
                None
            };
            warn!(path = %path.display(), %reason, "passed over an invalid state file");
            skipped.push(SkippedFile {
                path,
                reason,
                quarantined_to,
            });
        }
        info!(
            path = %loaded_from.display(),
            generation,
            skipped = skipped.len(),
            "loaded session state"
        );
        Ok(Some(LoadReport {
            state: loaded.state,
            loaded_from,
            skipped,
            migration: loaded.migration,
            tasks_added_from_queue: loaded.tasks_added_from_queue,
        }))
    }

    /// Moves every invalid state file to quarantine.
    pub fn quarantine_invalid(&self) -> Result<Vec<QuarantinedFile>, PersistError> {
        let mut moved = Vec::new();
        for (_, path) in self.candidates()? {
            if let Err(reason) = self.examine(&path) {
                moved.push(quarantine::move_to_quarantine(self, &path, &reason)?);
            }
        }
        Ok(moved)
    }

    /// The highest generation number of any readable file (valid or not is not
    /// checked beyond parsing), so that new saves always number above it.
    pub(crate) fn highest_generation(&self) -> u64 {
        self.candidates()
            .unwrap_or_default()
            .iter()
            .filter_map(|(_, path)| self.examine(path).ok())
            .map(|l| l.state.generation)
            .max()
            .unwrap_or(0)
    }
}
