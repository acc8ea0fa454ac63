//! Crash-dump watcher: a new `*.mdmp` or SWG crash report `.txt` appearing in the client's
//! directory (non-recursive). Files present at start are not reported.
//!
//! The SOE client writes `<prog>-<ver>-<YYYYMMDDhhmmss>.txt/.mdmp/.log` into its working
//! directory; the `.txt` starts with "automated crash dump from ". A `.txt` whose name does
//! not follow that scheme is reported once its first bytes show that text.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::{Sender, select};
use ms11_state::{DetectorSource, Incident, IncidentKind};
use notify::Watcher;
use serde::Deserialize;

use crate::error::DetectError;
use crate::handle::DetectorHandle;
use crate::ids::{IncidentIds, unix_now};

const REPORT_MAGIC: &[u8] = b"automated crash dump from ";

/// Crash-dump watcher settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CrashDumpConfig {
    /// Run the watcher.
    pub enabled: bool,
    /// Directory to watch; defaults to the client's working directory.
    pub dir: Option<PathBuf>,
    /// Re-scan interval when file notification is unavailable; 8x this as a safety
    /// re-scan when it is (ms).
    pub poll_interval_ms: u64,
}

impl Default for CrashDumpConfig {
    fn default() -> Self {
        CrashDumpConfig {
            enabled: true,
            dir: None,
            poll_interval_ms: 1_000,
        }
    }
}

/// What a file in the directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Dump,
    Report,
    NotACrash,
    Undecided,
}

/// `<prog>-<ver>-<14 digits>` (the SOE client's crash file stem).
fn swg_crash_stem(stem: &str) -> bool {
    let Some((head, stamp)) = stem.rsplit_once('-') else {
        return false;
    };
    stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit()) && head.contains('-')
}

fn classify(path: &Path) -> Verdict {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".mdmp") || lower.ends_with(".dmp") {
        return Verdict::Dump;
    }
    let Some(stem) = lower.strip_suffix(".txt") else {
        return Verdict::NotACrash;
    };
    if swg_crash_stem(stem) {
        return Verdict::Report;
    }
    let mut head = [0u8; REPORT_MAGIC.len()];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    if n < REPORT_MAGIC.len() {
        Verdict::Undecided
    } else if head.eq_ignore_ascii_case(REPORT_MAGIC) {
        Verdict::Report
    } else {
        Verdict::NotACrash
    }
}

/// The first lines of a crash report (what crashed, the exception), for the incident.
fn report_summary(path: &Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("automated crash dump") || l.contains("exception")
        })
        .take(2)
        .collect();
    (!lines.is_empty()).then(|| lines.join(" | "))
}

/// Directory state: names already known and `.txt` files still too short to judge.
#[derive(Debug, Default)]
struct DirScan {
    known: HashSet<OsString>,
    undecided: HashSet<OsString>,
}

impl DirScan {
    fn snapshot(dir: &Path) -> Self {
        let known = std::fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        DirScan {
            known,
            undecided: HashSet::new(),
        }
    }

    /// New crash files since the last scan.
    fn scan(&mut self, dir: &Path) -> Vec<(PathBuf, Verdict)> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in rd.filter_map(|e| e.ok()) {
            let name = entry.file_name();
            if self.known.contains(&name) && !self.undecided.contains(&name) {
                continue;
            }
            let path = entry.path();
            match classify(&path) {
                Verdict::Undecided => {
                    self.known.insert(name.clone());
                    self.undecided.insert(name);
                }
                v => {
                    self.undecided.remove(&name);
                    self.known.insert(name);
                    if v != Verdict::NotACrash {
                        found.push((path, v));
                    }
                }
            }
        }
        found
    }
}

/// Watches `config.dir` (or `default_dir`) and sends a `crash_dump` incident for each new
/// crash file. Files present now are not reported. With `enabled = false` it returns a
/// disabled handle.
pub fn spawn_crash_dump_watcher(
    config: &CrashDumpConfig,
    default_dir: &Path,
    ids: IncidentIds,
    tx: Sender<Incident>,
) -> Result<DetectorHandle, DetectError> {
    if !config.enabled {
        return Ok(DetectorHandle::disabled("crash-dump", "disabled in config"));
    }
    let dir = config
        .dir
        .clone()
        .unwrap_or_else(|| default_dir.to_path_buf());
    let interval = Duration::from_millis(config.poll_interval_ms.max(1));
    let mut state = DirScan::snapshot(&dir);
    DetectorHandle::spawn("crash-dump", move |stop| {
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded::<()>();
        let mut watcher = watch(&dir, &ev_tx);
        loop {
            for (path, verdict) in state.scan(&dir) {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let what = if verdict == Verdict::Dump {
                    "crash dump"
                } else {
                    "crash report"
                };
                let mut message = format!("{what} {name} appeared in {}", dir.display());
                if verdict == Verdict::Report
                    && let Some(summary) = report_summary(&path)
                {
                    message = format!("{message}: {summary}");
                }
                let mut incident = ids.incident(
                    IncidentKind::CrashDump,
                    DetectorSource::CrashDump,
                    message,
                    unix_now(),
                );
                incident.matched_text = Some(name);
                tracing::warn!(id = %incident.id, file = %path.display(), "crash file appeared");
                let _ = tx.send(incident);
            }
            if watcher.is_none() {
                watcher = watch(&dir, &ev_tx);
            }
            let timeout = if watcher.is_some() && state.undecided.is_empty() {
                interval * 8
            } else {
                interval
            };
            select! {
                recv(stop) -> _ => break,
                recv(ev_rx) -> _ => { while ev_rx.try_recv().is_ok() {} }
                default(timeout) => {}
            }
        }
    })
}

fn watch(dir: &Path, tx: &Sender<()>) -> Option<notify::RecommendedWatcher> {
    if !dir.is_dir() {
        return None;
    }
    let tx = tx.clone();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Opens and reads (our own directory scans included) are no news.
        if !matches!(&res, Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_))) {
            let _ = tx.send(());
        }
    })
    .ok()?;
    w.watch(dir, notify::RecursiveMode::NonRecursive).ok()?;
    Some(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_file_names_are_recognised() {
        assert!(swg_crash_stem("swgclient_r-0.1-20261125031244"));
        assert!(!swg_crash_stem("notes-20261125031244"));
        assert!(!swg_crash_stem("swgclient_r-0.1-2026112503"));
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("a.mdmp"), b"MDMP").unwrap();
        std::fs::write(p("SwgClient_r-1.0-20261125031244.txt"), b"").unwrap();
        std::fs::write(
            p("report.txt"),
            b"automated crash dump from SwgClient_r.exe\n",
        )
        .unwrap();
        std::fs::write(p("readme.txt"), b"this is not a crash report at all").unwrap();
        std::fs::write(p("short.txt"), b"auto").unwrap();
        assert_eq!(classify(&p("a.mdmp")), Verdict::Dump);
        assert_eq!(
            classify(&p("SwgClient_r-1.0-20261125031244.txt")),
            Verdict::Report
        );
        assert_eq!(classify(&p("report.txt")), Verdict::Report);
        assert_eq!(classify(&p("readme.txt")), Verdict::NotACrash);
        assert_eq!(classify(&p("short.txt")), Verdict::Undecided);
        assert_eq!(classify(&p("client.log")), Verdict::NotACrash);
    }
}
