//! The log-pattern detector: a [`crate::log_follow`] follower whose lines go through a
//! [`PatternMatcher`]; each admitted match becomes an [`Incident`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::Sender;
use ms11_state::{DetectorSource, Incident, LogCursor};

use crate::error::DetectError;
use crate::handle::DetectorHandle;
use crate::ids::{IncidentIds, unix_now};
use crate::log_follow::{CursorCell, FollowSettings, FollowStats, spawn_follower};
use crate::patterns::{LogPatternConfig, PatternMatcher, PatternSet};

/// A running log-pattern detector.
#[derive(Debug)]
pub struct LogDetectorHandle {
    /// Stops the detector on drop.
    pub handle: DetectorHandle,
    /// Current read position; the runner persists it in `RuntimeState::log_cursors`.
    pub cursor: CursorCell,
    /// Follower counters (bytes read, cut lines, rotations, truncations).
    pub stats: Arc<FollowStats>,
    /// Number of incidents sent.
    pub incidents: Arc<AtomicU64>,
}

/// Follows `path`, matches each complete line against the config's patterns and sends
/// an incident (source `log_pattern`) for every match that is not cooling down.
///
/// The patterns are compiled (and checked) even with `enabled = false`, which returns a
/// disabled handle. `resume` is the cursor persisted by the previous run (see [`crate::log_follow::FileTail::new`]).
pub fn spawn_log_detector(
    path: &Path,
    config: &LogPatternConfig,
    resume: Option<LogCursor>,
    ids: IncidentIds,
    tx: Sender<Incident>,
) -> Result<LogDetectorHandle, DetectError> {
    let set = PatternSet::from_config(config)?;
    if !config.enabled {
        return Ok(LogDetectorHandle {
            handle: DetectorHandle::disabled("log-pattern", "disabled in config"),
            cursor: CursorCell::default(),
            stats: Arc::default(),
            incidents: Arc::default(),
        });
    }
    let mut matcher = PatternMatcher::new(set);
    let incidents = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&incidents);
    let shown_path = path.display().to_string();
    let follower = spawn_follower(
        "log-pattern",
        path,
        FollowSettings::from(config),
        resume,
        move |chunk, now| {
            for (line, idx) in matcher.scan(chunk, now) {
                let Some(info) = matcher.set().patterns().get(idx) else {
                    continue;
                };
                let mut incident: Incident = ids.incident(
                    info.kind,
                    DetectorSource::LogPattern,
                    line.clone(),
                    unix_now(),
                );
                incident.severity = info.severity;
                incident.terminal = info.terminal;
                incident.pattern = Some(info.name.clone());
                incident.matched_text = Some(line);
                tracing::info!(id = %incident.id, pattern = %info.name, kind = %info.kind, log = %shown_path, "log pattern matched");
                count.fetch_add(1, Ordering::Relaxed);
                if tx.send(incident).is_err() {
                    tracing::debug!("incident receiver gone; log detector keeps reading");
                }
            }
        },
    )?;
    Ok(LogDetectorHandle {
        handle: follower.handle,
        cursor: follower.cursor,
        stats: follower.stats,
        incidents,
    })
}
