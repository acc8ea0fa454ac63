//! Window probe: finds the client's top-level windows by title and reports the main
//! window vanishing, an error dialog appearing, a title turning "(Not Responding)", and
//! (X11) a main window that no longer answers `_NET_WM_PING` or no longer changes.
//!
//! [`WindowTracker`] is the platform-free core: it compares successive snapshots
//! (`(window id, title)` lists). [`hang::HangTracker`] is the clock-free core of the hang
//! checks (ping and frames). The platform part feeds them: X11 via x11rb (event-driven:
//! SubstructureNotify on the root, PropertyNotify on each window; EWMH `_NET_CLIENT_LIST`
//! when a window manager provides it, else a walk of the window tree; a timer only while
//! a main window is watched for hangs), Win32 via `EnumWindows`/`GetWindowTextW` on a
//! timer (titles only). Without a display the probe says once why it is disabled and
//! returns a disabled handle.

use std::collections::{HashMap, HashSet};

use crossbeam_channel::Sender;
use ms11_state::{DetectorSource, Incident, IncidentKind, Severity};
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Deserializer};

use crate::error::DetectError;
use crate::handle::DetectorHandle;
use crate::ids::{IncidentIds, unix_now};

pub mod hang;
#[cfg(windows)]
mod win32;
#[cfg(unix)]
mod x11;

/// One error-dialog rule.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DialogRule {
    /// Rule name, shown in incidents.
    pub name: String,
    /// Case-insensitive regex on the dialog's title.
    pub title: String,
    /// What such a dialog means.
    #[serde(deserialize_with = "kind_from_str")]
    #[schemars(with = "String")]
    pub kind: IncidentKind,
}

fn kind_from_str<'de, D: Deserializer<'de>>(d: D) -> Result<IncidentKind, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// Window-probe settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WindowProbeConfig {
    /// Run the probe.
    pub enabled: bool,
    /// Case-insensitive regexes for the client's main window title (the hung marker is
    /// removed before matching).
    pub main_titles: Vec<String>,
    /// Error dialogs to report.
    pub dialogs: Vec<DialogRule>,
    /// Title suffix a hung window gets.
    pub hung_marker: String,
    /// Safety re-scan interval (ms) on X11, where events drive the probe; the polling
    /// interval on Windows. 0 on X11: events only.
    pub rescan_interval_ms: u64,
    /// X display to use instead of `$DISPLAY`.
    pub display: Option<String>,
    /// How often (ms) the client's main window is pinged with the EWMH `_NET_WM_PING`
    /// protocol, as a window manager does, when the window supports it (its
    /// `WM_PROTOCOLS` lists `_NET_WM_PING`). 0: no pings (the frames check then watches
    /// every main window). X11 only.
    pub ping_interval_ms: u64,
    /// A ping unanswered for this long (ms) is `not_responding` (pattern `ping`): the
    /// client's message loop is blocked. Reported once, until the window answers again.
    /// Set it above the longest pause of the client's message loop while it loads.
    /// 0: no pings.
    pub ping_timeout_ms: u64,
    /// How often (ms) the image of a main window that is not pinged is taken for the
    /// "no new frames" check (hashed, never kept). 0: no frames check. X11 only.
    pub frame_interval_ms: u64,
    /// The image of a main window that is not pinged (it does not support
    /// `_NET_WM_PING`, or pings are off) unchanged for this long (ms) is
    /// `not_responding` (pattern `frozen`). Reported once, until the image changes
    /// again. A client that may show a still screen this long must not use it.
    /// 0: no frames check.
    pub frozen_after_ms: u64,
}

impl Default for WindowProbeConfig {
    fn default() -> Self {
        WindowProbeConfig {
            enabled: true,
            main_titles: vec![r"^Star Wars Galaxies$".into(), r"^SwgClient\b".into()],
            dialogs: vec![
                DialogRule {
                    name: "fatal_report".into(),
                    title: r"^Fatal Report\b".into(),
                    kind: IncidentKind::ErrorDialog,
                },
                DialogRule {
                    name: "wine_program_error".into(),
                    title: r"^Program Error\b".into(),
                    kind: IncidentKind::ErrorDialog,
                },
                DialogRule {
                    name: "duplicate_instance".into(),
                    title: r"another instance of this application is already running".into(),
                    kind: IncidentKind::DuplicateInstance,
                },
            ],
            hung_marker: "(Not Responding)".into(),
            rescan_interval_ms: 5_000,
            display: None,
            ping_interval_ms: 5_000,
            ping_timeout_ms: 10_000,
            frame_interval_ms: 5_000,
            frozen_after_ms: 60_000,
        }
    }
}

/// What changed between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowEvent {
    /// A main window appeared (not an incident; logged).
    MainAppeared {
        /// Its title.
        title: String,
    },
    /// Every main window is gone after one was seen.
    MainGone {
        /// The last title seen.
        title: String,
    },
    /// A main window's title got the hung marker.
    NotResponding {
        /// The title.
        title: String,
    },
    /// An error dialog appeared.
    Dialog {
        /// Its window.
        id: u64,
        /// Index into the config's dialog rules.
        rule: usize,
        /// The dialog's title.
        title: String,
    },
}

/// Compares snapshots of top-level windows.
#[derive(Debug)]
pub struct WindowTracker {
    main: Vec<Regex>,
    dialogs: Vec<(DialogRule, Regex)>,
    hung_marker: String,
    mains: HashMap<u64, String>,
    last_main_title: Option<String>,
    hung: HashSet<u64>,
    dialogs_seen: HashSet<u64>,
}

fn compile(field: &str, re: &str) -> Result<Regex, DetectError> {
    RegexBuilder::new(re)
        .case_insensitive(true)
        .build()
        .map_err(|e| DetectError::Config {
            field: field.to_owned(),
            message: format!("invalid regex `{re}`: {e}"),
        })
}

impl WindowTracker {
    /// Compiles the config's title rules.
    pub fn new(config: &WindowProbeConfig) -> Result<Self, DetectError> {
        let main = config
            .main_titles
            .iter()
            .map(|r| compile("window.main_titles", r))
            .collect::<Result<_, _>>()?;
        let dialogs = config
            .dialogs
            .iter()
            .map(|d| {
                Ok((
                    d.clone(),
                    compile(&format!("window.dialogs.{}", d.name), &d.title)?,
                ))
            })
            .collect::<Result<_, DetectError>>()?;
        Ok(WindowTracker {
            main,
            dialogs,
            hung_marker: config.hung_marker.clone(),
            mains: HashMap::new(),
            last_main_title: None,
            hung: HashSet::new(),
            dialogs_seen: HashSet::new(),
        })
    }

    /// The dialog rules.
    pub fn dialog_rules(&self) -> impl Iterator<Item = &DialogRule> {
        self.dialogs.iter().map(|(d, _)| d)
    }

    fn strip_hung<'a>(&self, title: &'a str) -> (&'a str, bool) {
        if !self.hung_marker.is_empty()
            && let Some(pos) = title.find(&self.hung_marker)
        {
            return (title[..pos].trim_end(), true);
        }
        (title, false)
    }

    /// The main windows of the last snapshot: `(id, title)`.
    pub fn main_windows(&self) -> impl Iterator<Item = (u64, &str)> {
        self.mains.iter().map(|(id, t)| (*id, t.as_str()))
    }

    /// Whether a title is the client's main window.
    pub fn is_main(&self, title: &str) -> bool {
        let (bare, _) = self.strip_hung(title);
        self.main.iter().any(|r| r.is_match(bare))
    }

    /// Takes the current `(id, title)` list of top-level windows; returns the changes.
    pub fn update(&mut self, windows: &[(u64, String)]) -> Vec<WindowEvent> {
        let mut events = Vec::new();
        let mut mains = HashMap::new();
        let mut dialogs_now = HashSet::new();
        for (id, title) in windows {
            let (bare, hung) = self.strip_hung(title);
            if self.main.iter().any(|r| r.is_match(bare)) {
                if !self.mains.contains_key(id) {
                    events.push(WindowEvent::MainAppeared {
                        title: title.clone(),
                    });
                }
                if hung {
                    if self.hung.insert(*id) {
                        events.push(WindowEvent::NotResponding {
                            title: title.clone(),
                        });
                    }
                } else {
                    self.hung.remove(id);
                }
                mains.insert(*id, title.clone());
                continue;
            }
            if let Some(rule) = self.dialogs.iter().position(|(_, r)| r.is_match(bare)) {
                dialogs_now.insert(*id);
                if !self.dialogs_seen.contains(id) {
                    events.push(WindowEvent::Dialog {
                        id: *id,
                        rule,
                        title: title.clone(),
                    });
                }
            }
        }
        if mains.is_empty()
            && !self.mains.is_empty()
            && let Some(title) = self
                .mains
                .values()
                .next()
                .cloned()
                .or(self.last_main_title.clone())
        {
            events.push(WindowEvent::MainGone { title });
        }
        if let Some(t) = mains.values().next() {
            self.last_main_title = Some(t.clone());
        }
        self.hung.retain(|id| mains.contains_key(id));
        self.mains = mains;
        self.dialogs_seen = dialogs_now;
        events
    }

    /// The incident for an event (`None` for a window appearing).
    pub fn incident(&self, event: &WindowEvent, ids: &IncidentIds) -> Option<Incident> {
        let (kind, message, pattern, title) = match event {
            WindowEvent::MainAppeared { .. } => return None,
            WindowEvent::MainGone { title } => (
                IncidentKind::WindowGone,
                format!("client window \"{title}\" is gone"),
                "main_window".to_owned(),
                title,
            ),
            WindowEvent::NotResponding { title } => (
                IncidentKind::NotResponding,
                format!("client window is not responding: \"{title}\""),
                "hung_marker".to_owned(),
                title,
            ),
            WindowEvent::Dialog { rule, title, .. } => {
                let (r, _) = self.dialogs.get(*rule)?;
                (
                    r.kind,
                    format!("error dialog \"{title}\" appeared"),
                    r.name.clone(),
                    title,
                )
            }
        };
        let mut incident = ids.incident(kind, DetectorSource::Window, message, unix_now());
        incident.pattern = Some(pattern);
        incident.matched_text = Some(title.clone());
        if kind == IncidentKind::NotResponding {
            incident.severity = Severity::Warning;
        }
        Some(incident)
    }
}

/// Starts the probe for this platform. Without a display (or on a platform without a
/// probe) it logs once why and returns a disabled handle; that is not an error.
pub fn spawn_window_probe(
    config: &WindowProbeConfig,
    ids: IncidentIds,
    tx: Sender<Incident>,
) -> Result<DetectorHandle, DetectError> {
    let tracker = WindowTracker::new(config)?;
    if !config.enabled {
        return Ok(DetectorHandle::disabled("window", "disabled in config"));
    }
    #[cfg(unix)]
    {
        x11::spawn(config, tracker, ids, tx)
    }
    #[cfg(windows)]
    {
        win32::spawn(config, tracker, ids, tx)
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = (tracker, ids, tx);
        let reason = "no window probe on this platform";
        tracing::info!(reason, "window probe disabled");
        Ok(DetectorHandle::disabled("window", reason))
    }
}

/// The titles of the top-level windows on a display, over one kept connection: what a
/// `window` readiness check polls while a client starts.
pub struct WindowLister {
    #[cfg(unix)]
    probe: x11::XProbe,
}

impl WindowLister {
    /// Connects to `display` (`None`: `$DISPLAY`).
    pub fn connect(display: Option<&str>) -> Result<Self, String> {
        #[cfg(unix)]
        {
            Ok(WindowLister {
                probe: x11::XProbe::connect(display)?,
            })
        }
        #[cfg(not(unix))]
        {
            let _ = display;
            Err("window readiness needs X11".into())
        }
    }

    /// The titles of the mapped top-level windows now.
    pub fn titles(&mut self) -> Result<Vec<String>, String> {
        #[cfg(unix)]
        {
            self.probe
                .snapshot()
                .map(|windows| windows.into_iter().map(|(_, title)| title).collect())
                .map_err(|e| e.to_string())
        }
        #[cfg(not(unix))]
        {
            Err("window readiness needs X11".into())
        }
    }
}

/// Feeds a snapshot to the tracker and sends the incidents for what changed.
///
/// `owner` names the process that shows a window (its program and pid, where the
/// platform says): a dialog's incident records it, since a crash dialog under Wine
/// belongs to `winedbg`, not to the client.
fn observe(
    tracker: &mut WindowTracker,
    windows: &[(u64, String)],
    ids: &IncidentIds,
    tx: &Sender<Incident>,
    owner: &dyn Fn(u64) -> Option<String>,
) {
    for event in &tracker.update(windows) {
        match tracker.incident(event, ids) {
            Some(mut incident) => {
                if let WindowEvent::Dialog { id, .. } = event
                    && let Some(owner) = owner(*id)
                {
                    let shown_by = format!(" (shown by {owner})");
                    incident.crash.error_message.push_str(&shown_by);
                    if let Some(first) = incident.evidence.first_mut() {
                        first.detail.push_str(&shown_by);
                    }
                }
                tracing::warn!(id = %incident.id, kind = %incident.kind, msg = %incident.crash.error_message, "window probe");
                let _ = tx.send(incident);
            }
            None => tracing::info!(?event, "window probe"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: u64, t: &str) -> (u64, String) {
        (id, t.to_owned())
    }

    #[test]
    fn tracker_reports_gone_hung_and_dialogs_once() {
        let mut t = WindowTracker::new(&WindowProbeConfig::default()).unwrap();
        assert_eq!(
            t.update(&[w(1, "xterm")]),
            vec![],
            "no main window yet: nothing gone"
        );
        assert_eq!(
            t.update(&[w(2, "Star Wars Galaxies")]),
            vec![WindowEvent::MainAppeared {
                title: "Star Wars Galaxies".into()
            }]
        );
        assert_eq!(
            t.update(&[w(2, "Star Wars Galaxies (Not Responding)")]),
            vec![WindowEvent::NotResponding {
                title: "Star Wars Galaxies (Not Responding)".into()
            }]
        );
        assert_eq!(
            t.update(&[w(2, "Star Wars Galaxies (Not Responding)")]),
            vec![]
        );
        assert_eq!(
            t.update(&[w(2, "Star Wars Galaxies"), w(3, "Fatal Report")]),
            vec![WindowEvent::Dialog {
                id: 3,
                rule: 0,
                title: "Fatal Report".into()
            }]
        );
        assert_eq!(
            t.update(&[w(2, "Star Wars Galaxies"), w(3, "Fatal Report")]),
            vec![]
        );
        assert_eq!(
            t.update(&[w(3, "Fatal Report")]),
            vec![WindowEvent::MainGone {
                title: "Star Wars Galaxies".into()
            }]
        );
        assert_eq!(t.update(&[]), vec![]);
        assert!(t.is_main("SwgClient (main.1.2)"));
        assert!(!t.is_main("Star Wars Galaxies wiki - Firefox"));
    }
}
