//! Detectors that observe a game session and report what goes wrong as
//! [`ms11_state::Incident`]s, and nothing else: they never decide or start recovery.
//!
//! Every detector runs on its own thread and sends incidents on a
//! `crossbeam_channel::Sender<Incident>`; each returns a [`DetectorHandle`] whose
//! `stop()` (or drop) ends and joins the thread. The detectors:
//!
//! - [`log_detector`] (over [`log_follow`] and [`patterns`]): a `tail -F` follower of the
//!   client log matched against named, typed patterns;
//! - [`window`]: the client's top-level windows, error dialogs and hung windows (X11 via
//!   x11rb: `_NET_WM_PING` and a frozen image; Win32: titles);
//! - [`stall`]: no heartbeat or progress from the bot within a configured time;
//! - [`crash_dump`]: a new `*.mdmp` or crash report appearing in the client directory;
//! - [`process_exit`]: a child's exit turned into an incident;
//! - [`fuse`]: merges incidents that arrive within a window into one.
//!
//! Incident ids come from a shared [`IncidentIds`] counter (`<session>-<n>`).
//!
//! Wiring one session (what the runner does):
//!
//! ```no_run
//! use std::path::Path;
//! use ms11_detect::*;
//! # fn main() -> Result<(), DetectError> {
//! let ids = IncidentIds::starting_at("main", 1);
//! let (raw_tx, raw_rx) = crossbeam_channel::unbounded();
//! let (pipeline_tx, pipeline_rx) = crossbeam_channel::unbounded();
//! let _fuser = spawn_fuser(&FuseConfig::default(), raw_rx, pipeline_tx)?;
//! let saved_cursor = None; // RuntimeState::log_cursors["logs/client.log"]
//! let log = spawn_log_detector(
//!     Path::new("logs/client.log"), &LogPatternConfig::default(), saved_cursor,
//!     ids.clone(), raw_tx.clone())?;
//! let _window = spawn_window_probe(&WindowProbeConfig::default(), ids.clone(), raw_tx.clone())?;
//! let _dumps = spawn_crash_dump_watcher(&CrashDumpConfig::default(), Path::new("."),
//!     ids.clone(), raw_tx.clone())?;
//! let stall = StallDetector::spawn(&StallConfig::default(), "bot", ids.clone(), raw_tx.clone())?;
//! // On each bot heartbeat: stall.beat();
//! // In the supervisor's exit callback:
//! //   raw_tx.send(incident_for_exit(&ids, "client", ExitInfo::from(status), unix_now()))
//! // With every state save: runtime.log_cursors.insert(path, log.cursor.get()).
//! # let _ = (pipeline_rx, log, stall);
//! # Ok(())
//! # }
//! ```

pub mod crash_dump;
mod error;
pub mod fuse;
mod handle;
mod ids;
pub mod log_detector;
pub mod log_follow;
pub mod patterns;
pub mod process_exit;
pub mod stall;
pub mod window;

pub use crash_dump::{CrashDumpConfig, spawn_crash_dump_watcher};
pub use error::DetectError;
pub use fuse::{FuseConfig, Fuser, spawn_fuser};
pub use handle::DetectorHandle;
pub use ids::{IncidentIds, unix_now};
pub use log_detector::{LogDetectorHandle, spawn_log_detector};
pub use log_follow::{CursorCell, FileTail, FollowSettings, FollowStats};
pub use patterns::{
    LogPatternConfig, PatternInfo, PatternMatcher, PatternSet, PatternSpec, StartAt,
    default_ignore, default_patterns,
};
pub use process_exit::{ExitWatcher, incident_for_exit};
pub use stall::{StallConfig, StallDetector, StallTracker};
pub use window::{WindowLister, WindowProbeConfig, spawn_window_probe};
