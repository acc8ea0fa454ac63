//! Hangs the bot cannot see: a client whose message loop is blocked still has its
//! window, but the window no longer answers and no longer changes.
//!
//! Two checks, one per main window:
//!
//! - **ping**, for a window whose `WM_PROTOCOLS` lists `_NET_WM_PING`: the probe pings it
//!   every `ping_interval_ms` as a window manager does; a ping unanswered for
//!   `ping_timeout_ms` is `not_responding` (pattern `ping`);
//! - **frames**, for any other main window (or every one when pings are off): the
//!   window's image is sampled every `frame_interval_ms` (hashed, never kept); an image
//!   unchanged for `frozen_after_ms` is `not_responding` (pattern `frozen`).
//!
//! [`HangTracker`] is the clock-free core (times are passed in, as for
//! [`crate::StallTracker`]): it says what to do when (ping, sample), takes the answers and
//! samples, and reports each hang once, until the window answers or changes again. The
//! platform part (X11) sends the pings, takes the images and owns the timer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use ms11_state::{DetectorSource, Incident, IncidentKind, Severity};

use super::WindowProbeConfig;
use crate::ids::{IncidentIds, unix_now};

/// The hang checks' settings, from [`WindowProbeConfig`]; a check is off when one of
/// its times is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HangSettings {
    /// Ping interval, `None` when pings are off.
    pub ping_interval: Option<Duration>,
    /// How long a ping may stay unanswered.
    pub ping_timeout: Duration,
    /// Image sampling interval, `None` when the frames check is off.
    pub frame_interval: Option<Duration>,
    /// How long an image may stay unchanged.
    pub frozen_after: Duration,
}

impl HangSettings {
    /// The settings of a probe configuration.
    pub fn from_config(config: &WindowProbeConfig) -> Self {
        let ms = Duration::from_millis;
        HangSettings {
            ping_interval: (config.ping_interval_ms > 0 && config.ping_timeout_ms > 0)
                .then(|| ms(config.ping_interval_ms)),
            ping_timeout: ms(config.ping_timeout_ms),
            frame_interval: (config.frame_interval_ms > 0 && config.frozen_after_ms > 0)
                .then(|| ms(config.frame_interval_ms)),
            frozen_after: ms(config.frozen_after_ms),
        }
    }

    /// Whether any check is on.
    pub fn any(&self) -> bool {
        self.ping_interval.is_some() || self.frame_interval.is_some()
    }

    /// Whether pings are on.
    pub fn pings(&self) -> bool {
        self.ping_interval.is_some()
    }

    fn check_for(&self, supports_ping: bool) -> Option<Check> {
        if supports_ping && self.ping_interval.is_some() {
            Some(Check::Ping)
        } else if self.frame_interval.is_some() {
            Some(Check::Frames)
        } else {
            None
        }
    }
}

/// Which check watches a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Ping,
    Frames,
}

/// What the platform part should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangAction {
    /// Send `_NET_WM_PING` to this window.
    Ping(u64),
    /// Take this window's image and pass its hash to [`HangTracker::sampled`].
    Sample(u64),
}

/// A change in a window's liveness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HangEvent {
    /// A ping stayed unanswered for `ping_timeout` (an incident).
    NoPingAnswer {
        /// The window.
        window: u64,
        /// Its title.
        title: String,
        /// How long the oldest unanswered ping has waited.
        waited: Duration,
    },
    /// The window's image stayed unchanged for `frozen_after` (an incident).
    Frozen {
        /// The window.
        window: u64,
        /// Its title.
        title: String,
        /// How long the image has been the same.
        unchanged: Duration,
    },
    /// A window reported hung answers a ping again (logged, not an incident).
    Answering {
        /// The window.
        window: u64,
        /// Its title.
        title: String,
    },
    /// A window reported frozen shows a new image again (logged, not an incident).
    Repainting {
        /// The window.
        window: u64,
        /// Its title.
        title: String,
    },
}

impl HangEvent {
    /// The incident for a hang (`None` for a window that came back).
    pub fn incident(&self, ids: &IncidentIds) -> Option<Incident> {
        let (message, pattern, title) = match self {
            HangEvent::NoPingAnswer { title, waited, .. } => (
                format!(
                    "client window \"{title}\" is not responding: no answer to _NET_WM_PING for {:.1} s",
                    waited.as_secs_f64()
                ),
                "ping",
                title,
            ),
            HangEvent::Frozen {
                title, unchanged, ..
            } => (
                format!(
                    "client window \"{title}\" is not responding: its image has not changed for {:.1} s (frozen)",
                    unchanged.as_secs_f64()
                ),
                "frozen",
                title,
            ),
            HangEvent::Answering { .. } | HangEvent::Repainting { .. } => return None,
        };
        let mut incident = ids.incident(
            IncidentKind::NotResponding,
            DetectorSource::Window,
            message,
            unix_now(),
        );
        incident.pattern = Some(pattern.to_owned());
        incident.matched_text = Some(title.clone());
        incident.severity = Severity::Warning;
        Some(incident)
    }
}

/// Logs a hang event and sends its incident, if it is one.
pub(super) fn report(event: &HangEvent, ids: &IncidentIds, tx: &Sender<Incident>) {
    match event.incident(ids) {
        Some(incident) => {
            tracing::warn!(id = %incident.id, kind = %incident.kind, pattern = incident.pattern.as_deref().unwrap_or_default(), msg = %incident.crash.error_message, "window probe");
            let _ = tx.send(incident);
        }
        None => tracing::info!(?event, "window probe: the client window is alive again"),
    }
}

/// One watched main window.
#[derive(Debug, Clone)]
struct Watched {
    title: String,
    check: Check,
    /// When the next ping or sample is due.
    next_due: Instant,
    /// When the oldest unanswered ping was sent.
    unanswered_since: Option<Instant>,
    /// The last image's hash (`None`: none yet, or it could not be taken).
    last_hash: Option<u64>,
    /// When the current image was first seen.
    changed_at: Instant,
    /// The current hang was reported.
    reported: bool,
}

impl Watched {
    fn new(title: String, check: Check, now: Instant) -> Self {
        Watched {
            title,
            check,
            next_due: now,
            unanswered_since: None,
            last_hash: None,
            changed_at: now,
            reported: false,
        }
    }
}

/// Deadlines of the hang checks of the current main windows.
#[derive(Debug, Clone)]
pub struct HangTracker {
    settings: HangSettings,
    windows: HashMap<u64, Watched>,
}

impl HangTracker {
    /// A tracker watching no window yet.
    pub fn new(settings: HangSettings) -> Self {
        HangTracker {
            settings,
            windows: HashMap::new(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &HangSettings {
        &self.settings
    }

    /// Takes the current main windows (`id`, title, whether it supports `_NET_WM_PING`).
    /// A new window is pinged or sampled at once; a window that is gone is forgotten; a
    /// window whose check changes (it gained or lost `_NET_WM_PING`) starts afresh.
    pub fn set_windows(&mut self, mains: &[(u64, String, bool)], now: Instant) {
        self.windows
            .retain(|id, _| mains.iter().any(|(m, _, _)| m == id));
        for (id, title, supports_ping) in mains {
            let Some(check) = self.settings.check_for(*supports_ping) else {
                self.windows.remove(id);
                continue;
            };
            match self.windows.get_mut(id) {
                Some(w) if w.check == check => w.title.clone_from(title),
                _ => {
                    self.windows
                        .insert(*id, Watched::new(title.clone(), check, now));
                }
            }
        }
    }

    /// Whether a window is watched.
    pub fn is_watching(&self, window: u64) -> bool {
        self.windows.contains_key(&window)
    }

    /// When something is due next: a ping, a sample or a ping's timeout. `None` while no
    /// main window is watched (the probe then needs no timer).
    pub fn deadline(&self) -> Option<Instant> {
        self.windows
            .values()
            .flat_map(|w| {
                let timeout = match (w.check, w.unanswered_since, w.reported) {
                    (Check::Ping, Some(since), false) => Some(since + self.settings.ping_timeout),
                    _ => None,
                };
                [Some(w.next_due), timeout]
            })
            .flatten()
            .min()
    }

    /// The pings and samples due at `now`. A ping returned here counts as sent.
    pub fn due(&mut self, now: Instant) -> Vec<HangAction> {
        let mut actions = Vec::new();
        for (id, w) in &mut self.windows {
            if w.next_due > now {
                continue;
            }
            match w.check {
                Check::Ping => {
                    w.unanswered_since.get_or_insert(now);
                    w.next_due = now + self.settings.ping_interval.unwrap_or_default();
                    actions.push(HangAction::Ping(*id));
                }
                Check::Frames => {
                    w.next_due = now + self.settings.frame_interval.unwrap_or_default();
                    actions.push(HangAction::Sample(*id));
                }
            }
        }
        actions.sort_unstable_by_key(|a| match a {
            HangAction::Ping(id) | HangAction::Sample(id) => *id,
        });
        actions
    }

    /// A ping answer from `window` at `now`.
    pub fn answered(&mut self, window: u64, _now: Instant) -> Option<HangEvent> {
        let w = self.windows.get_mut(&window)?;
        if w.check != Check::Ping {
            return None;
        }
        w.unanswered_since = None;
        if std::mem::take(&mut w.reported) {
            return Some(HangEvent::Answering {
                window,
                title: w.title.clone(),
            });
        }
        None
    }

    /// The hash of `window`'s image taken at `now` (`None`: it could not be taken, e.g.
    /// the window is not viewable; the count starts again at the next image). Returns the
    /// window's hang when its image has now been unchanged for `frozen_after`, or its
    /// return when a window reported frozen changed.
    pub fn sampled(&mut self, window: u64, hash: Option<u64>, now: Instant) -> Option<HangEvent> {
        let frozen_after = self.settings.frozen_after;
        let w = self.windows.get_mut(&window)?;
        if w.check != Check::Frames {
            return None;
        }
        let Some(hash) = hash else {
            w.last_hash = None;
            w.changed_at = now;
            return None;
        };
        match w.last_hash {
            Some(last) if last == hash => {
                let unchanged = now.saturating_duration_since(w.changed_at);
                if !w.reported && unchanged >= frozen_after {
                    w.reported = true;
                    return Some(HangEvent::Frozen {
                        window,
                        title: w.title.clone(),
                        unchanged,
                    });
                }
                None
            }
            Some(_) => {
                w.last_hash = Some(hash);
                w.changed_at = now;
                if std::mem::take(&mut w.reported) {
                    return Some(HangEvent::Repainting {
                        window,
                        title: w.title.clone(),
                    });
                }
                None
            }
            None => {
                // A first image (or the first after one that could not be taken): the
                // count starts here.
                w.last_hash = Some(hash);
                w.changed_at = now;
                None
            }
        }
    }

    /// The pings that have now waited `ping_timeout` unanswered (each hang once).
    pub fn check(&mut self, now: Instant) -> Vec<HangEvent> {
        let timeout = self.settings.ping_timeout;
        let mut events = Vec::new();
        for (id, w) in &mut self.windows {
            let Some(since) = w.unanswered_since else {
                continue;
            };
            let waited = now.saturating_duration_since(since);
            if w.check == Check::Ping && !w.reported && waited >= timeout {
                w.reported = true;
                events.push(HangEvent::NoPingAnswer {
                    window: *id,
                    title: w.title.clone(),
                    waited,
                });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ping: u64, timeout: u64, frame: u64, frozen: u64) -> HangSettings {
        HangSettings::from_config(&WindowProbeConfig {
            ping_interval_ms: ping,
            ping_timeout_ms: timeout,
            frame_interval_ms: frame,
            frozen_after_ms: frozen,
            ..WindowProbeConfig::default()
        })
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn main(id: u64, ping: bool) -> (u64, String, bool) {
        (id, "Star Wars Galaxies".into(), ping)
    }

    #[test]
    fn defaults_ping_every_5_s_unanswered_10_s_frozen_after_60_s() {
        let d = HangSettings::from_config(&WindowProbeConfig::default());
        assert_eq!(d.ping_interval, Some(s(5)));
        assert_eq!(d.ping_timeout, s(10));
        assert_eq!(d.frame_interval, Some(s(5)));
        assert_eq!(d.frozen_after, s(60));
        assert!(!settings(0, 10_000, 0, 60_000).any());
        assert!(
            !settings(5_000, 0, 5_000, 0).any(),
            "a 0 time turns its check off"
        );
    }

    #[test]
    fn no_timer_without_a_main_window() {
        let t0 = Instant::now();
        let mut t = HangTracker::new(settings(5_000, 10_000, 5_000, 60_000));
        assert_eq!(t.deadline(), None);
        t.set_windows(&[main(1, true)], t0);
        assert_eq!(t.deadline(), Some(t0), "a new window is pinged at once");
        t.set_windows(&[], t0 + s(1));
        assert_eq!(t.deadline(), None, "the window is gone: no timer");
        let mut off = HangTracker::new(settings(0, 0, 0, 0));
        off.set_windows(&[main(1, true), main(2, false)], t0);
        assert_eq!(off.deadline(), None, "both checks off: nothing to watch");
    }

    #[test]
    fn an_unanswered_ping_is_reported_once_after_the_timeout_and_rearmed_by_an_answer() {
        let t0 = Instant::now();
        let mut t = HangTracker::new(settings(5_000, 10_000, 5_000, 60_000));
        t.set_windows(&[main(7, true)], t0);
        // Answered pings: never a hang.
        for n in 0..5 {
            let at = t0 + s(5 * n);
            assert_eq!(t.due(at), vec![HangAction::Ping(7)]);
            assert_eq!(t.answered(7, at + Duration::from_millis(3)), None);
            assert_eq!(t.check(at + s(4)), vec![]);
        }
        // The loop hangs after the ping at 20 s was answered: the ping at 25 s is the
        // first without an answer; the one at 30 s keeps the oldest one's time.
        assert_eq!(t.due(t0 + s(25)), vec![HangAction::Ping(7)]);
        assert_eq!(t.deadline(), Some(t0 + s(30)), "the next ping");
        assert_eq!(t.due(t0 + s(30)), vec![HangAction::Ping(7)]);
        assert_eq!(
            t.deadline(),
            Some(t0 + s(35)),
            "the timeout and the next ping"
        );
        assert_eq!(t.check(t0 + s(34)), vec![]);
        assert_eq!(
            t.check(t0 + s(35)),
            vec![HangEvent::NoPingAnswer {
                window: 7,
                title: "Star Wars Galaxies".into(),
                waited: s(10)
            }]
        );
        assert_eq!(t.due(t0 + s(35)), vec![HangAction::Ping(7)], "pings go on");
        assert_eq!(t.check(t0 + s(60)), vec![], "reported once per hang");
        assert_eq!(t.deadline(), Some(t0 + s(40)), "only the next ping");
        assert_eq!(
            t.answered(7, t0 + s(61)),
            Some(HangEvent::Answering {
                window: 7,
                title: "Star Wars Galaxies".into()
            })
        );
        // Hung again: reported again.
        assert_eq!(t.due(t0 + s(65)), vec![HangAction::Ping(7)]);
        assert_eq!(t.check(t0 + s(75)).len(), 1);
    }

    #[test]
    fn an_image_unchanged_for_frozen_after_is_reported_once_and_rearmed_by_a_change() {
        let t0 = Instant::now();
        let mut t = HangTracker::new(settings(5_000, 10_000, 5_000, 60_000));
        t.set_windows(&[main(3, false)], t0);
        let mut at = t0;
        // Repainting: a new image at every sample.
        for hash in 0..20 {
            assert_eq!(t.due(at), vec![HangAction::Sample(3)]);
            assert_eq!(t.sampled(3, Some(hash), at), None);
            at += s(5);
        }
        // Frozen from the last sample (hash 19, 95 s) on.
        let frozen_since = at - s(5);
        let mut reported = Vec::new();
        while at <= frozen_since + s(80) {
            assert_eq!(t.due(at), vec![HangAction::Sample(3)]);
            if let Some(event) = t.sampled(3, Some(19), at) {
                reported.push((at - frozen_since, event));
            }
            at += s(5);
        }
        assert_eq!(
            reported,
            vec![(
                s(60),
                HangEvent::Frozen {
                    window: 3,
                    title: "Star Wars Galaxies".into(),
                    unchanged: s(60)
                }
            )],
            "once, at the first sample 60 s after the image last changed"
        );
        assert_eq!(t.check(at), vec![], "the ping check does not watch it");
        assert_eq!(
            t.sampled(3, Some(20), at),
            Some(HangEvent::Repainting {
                window: 3,
                title: "Star Wars Galaxies".into()
            })
        );
    }

    #[test]
    fn an_image_that_cannot_be_taken_restarts_the_count() {
        let t0 = Instant::now();
        let mut t = HangTracker::new(settings(5_000, 10_000, 5_000, 20_000));
        t.set_windows(&[main(3, false)], t0);
        assert_eq!(t.sampled(3, Some(1), t0), None);
        assert_eq!(t.sampled(3, Some(1), t0 + s(15)), None);
        // Unmapped (minimized): nothing can be said, and the count starts afresh.
        assert_eq!(t.sampled(3, None, t0 + s(20)), None);
        assert_eq!(t.sampled(3, Some(1), t0 + s(25)), None);
        assert_eq!(t.sampled(3, Some(1), t0 + s(40)), None);
        assert!(matches!(
            t.sampled(3, Some(1), t0 + s(45)),
            Some(HangEvent::Frozen { unchanged, .. }) if unchanged == s(20)
        ));
    }

    #[test]
    fn the_frames_check_is_the_fallback_for_windows_without_ping_or_with_pings_off() {
        let t0 = Instant::now();
        let mut t = HangTracker::new(settings(5_000, 10_000, 5_000, 60_000));
        t.set_windows(&[main(1, true), main(2, false)], t0);
        assert_eq!(t.due(t0), vec![HangAction::Ping(1), HangAction::Sample(2)]);
        assert_eq!(
            t.sampled(1, Some(5), t0),
            None,
            "a pinged window is not sampled"
        );
        // The window gains _NET_WM_PING: pinged from now on.
        t.set_windows(&[main(1, true), main(2, true)], t0 + s(1));
        assert_eq!(
            t.due(t0 + s(1)),
            vec![HangAction::Ping(2)],
            "a changed check starts afresh"
        );
        let mut no_pings = HangTracker::new(settings(0, 10_000, 5_000, 60_000));
        no_pings.set_windows(&[main(1, true)], t0);
        assert_eq!(no_pings.due(t0), vec![HangAction::Sample(1)]);
        let mut no_frames = HangTracker::new(settings(5_000, 10_000, 0, 60_000));
        no_frames.set_windows(&[main(1, true), main(2, false)], t0);
        assert_eq!(no_frames.due(t0), vec![HangAction::Ping(1)]);
        assert!(!no_frames.is_watching(2));
    }

    #[test]
    fn incidents_name_the_check_in_pattern_and_message() {
        let ids = IncidentIds::new("s");
        let ping = HangEvent::NoPingAnswer {
            window: 1,
            title: "Star Wars Galaxies".into(),
            waited: Duration::from_millis(10_200),
        }
        .incident(&ids)
        .unwrap();
        assert_eq!(ping.kind, IncidentKind::NotResponding);
        assert_eq!(ping.source, DetectorSource::Window);
        assert_eq!(ping.pattern.as_deref(), Some("ping"));
        assert_eq!(ping.matched_text.as_deref(), Some("Star Wars Galaxies"));
        assert!(
            ping.crash.error_message.contains("_NET_WM_PING for 10.2 s"),
            "{}",
            ping.crash.error_message
        );
        let frozen = HangEvent::Frozen {
            window: 1,
            title: "Star Wars Galaxies".into(),
            unchanged: s(60),
        }
        .incident(&ids)
        .unwrap();
        assert_eq!(frozen.pattern.as_deref(), Some("frozen"));
        assert!(
            frozen.crash.error_message.contains("frozen"),
            "{}",
            frozen.crash.error_message
        );
        let back = HangEvent::Answering {
            window: 1,
            title: String::new(),
        };
        assert!(back.incident(&ids).is_none());
    }
}
