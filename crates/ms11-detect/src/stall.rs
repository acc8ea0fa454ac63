//! Stall detection: no heartbeat or progress from the bot within a configured time.
//!
//! [`StallTracker`] is the clock-free core (times are passed in); [`StallDetector`] runs it
//! on a thread that sleeps until the deadline and is fed by [`StallDetector::beat`].

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use ms11_state::{DetectorSource, Incident, IncidentKind, Severity};
use serde::Deserialize;

use crate::error::DetectError;
use crate::handle::DetectorHandle;
use crate::ids::{IncidentIds, unix_now};

/// Stall detector settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StallConfig {
    /// Run the detector.
    pub enabled: bool,
    /// Report a stall after this long without a heartbeat or progress (ms).
    pub timeout_ms: u64,
}

impl Default for StallConfig {
    fn default() -> Self {
        StallConfig {
            enabled: true,
            timeout_ms: 120_000,
        }
    }
}

/// Deadline bookkeeping: fires once per silence, re-armed by the next beat.
#[derive(Debug, Clone)]
pub struct StallTracker {
    timeout: Duration,
    last_beat: Instant,
    fired: bool,
}

impl StallTracker {
    /// Starts counting at `now` (the start counts as a beat).
    pub fn new(timeout: Duration, now: Instant) -> Self {
        StallTracker {
            timeout,
            last_beat: now,
            fired: false,
        }
    }

    /// A heartbeat or progress at `now`.
    pub fn beat(&mut self, now: Instant) {
        if now > self.last_beat {
            self.last_beat = now;
        }
        self.fired = false;
    }

    /// When the next check is due, or `None` after it fired (until the next beat).
    pub fn deadline(&self) -> Option<Instant> {
        (!self.fired).then(|| self.last_beat + self.timeout)
    }

    /// The silence so far if it just crossed the timeout (once per silence).
    pub fn check(&mut self, now: Instant) -> Option<Duration> {
        let silence = now.saturating_duration_since(self.last_beat);
        if !self.fired && silence >= self.timeout {
            self.fired = true;
            return Some(silence);
        }
        None
    }
}

/// A running stall detector for one source of heartbeats (e.g. the bot).
#[derive(Debug)]
pub struct StallDetector {
    handle: DetectorHandle,
    beats: Sender<Instant>,
}

impl StallDetector {
    /// Starts watching; `what` names the heartbeat source in the incident (`bot`). With
    /// `enabled = false` it runs nothing and `beat()` does nothing.
    pub fn spawn(
        config: &StallConfig,
        what: &str,
        ids: IncidentIds,
        tx: Sender<Incident>,
    ) -> Result<Self, DetectError> {
        if config.timeout_ms == 0 {
            return Err(DetectError::Config {
                field: "stall.timeout_ms".into(),
                message: "must be greater than 0".into(),
            });
        }
        let (beats, beat_rx) = crossbeam_channel::unbounded();
        if !config.enabled {
            // Beats are accepted and dropped with the receiver.
            drop(beat_rx);
            return Ok(StallDetector {
                handle: DetectorHandle::disabled("stall", "disabled in config"),
                beats,
            });
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let what = what.to_owned();
        let handle = DetectorHandle::spawn("stall", move |stop| {
            run(
                StallTracker::new(timeout, Instant::now()),
                &what,
                &ids,
                &tx,
                &stop,
                &beat_rx,
            );
        })?;
        Ok(StallDetector { handle, beats })
    }

    /// Records a heartbeat or progress now.
    pub fn beat(&self) {
        let _ = self.beats.send(Instant::now());
    }

    /// A cheap clonable sender for beats (for the agent-protocol reader thread).
    pub fn beat_sender(&self) -> Sender<Instant> {
        self.beats.clone()
    }

    /// The underlying handle (name, running, disabled reason).
    pub fn handle(&self) -> &DetectorHandle {
        &self.handle
    }

    /// Stops and joins the detector.
    pub fn stop(self) {
        self.handle.stop();
    }
}

fn run(
    mut tracker: StallTracker,
    what: &str,
    ids: &IncidentIds,
    tx: &Sender<Incident>,
    stop: &Receiver<()>,
    beats: &Receiver<Instant>,
) {
    let idle = Duration::from_secs(3600);
    loop {
        let timeout = tracker
            .deadline()
            .map_or(idle, |d| d.saturating_duration_since(Instant::now()));
        select! {
            recv(stop) -> _ => return,
            recv(beats) -> beat => match beat {
                Ok(at) => tracker.beat(at),
                Err(_) => return,
            },
            default(timeout) => {
                if let Some(silence) = tracker.check(Instant::now()) {
                    let mut incident = ids.incident(
                        IncidentKind::Stall,
                        DetectorSource::Stall,
                        format!("no heartbeat or progress from the {what} for {} ms", silence.as_millis()),
                        unix_now(),
                    );
                    incident.severity = Severity::Error;
                    tracing::warn!(id = %incident.id, what, silence_ms = silence.as_millis() as u64, "stall");
                    let _ = tx.send(incident);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_fires_once_per_silence_and_rearms_on_beat() {
        let t0 = Instant::now();
        let mut t = StallTracker::new(Duration::from_secs(10), t0);
        assert_eq!(t.check(t0 + Duration::from_secs(9)), None);
        assert_eq!(
            t.check(t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            t.check(t0 + Duration::from_secs(30)),
            None,
            "once per silence"
        );
        assert_eq!(t.deadline(), None);
        t.beat(t0 + Duration::from_secs(31));
        assert_eq!(t.deadline(), Some(t0 + Duration::from_secs(41)));
        assert_eq!(t.check(t0 + Duration::from_secs(40)), None);
        assert!(t.check(t0 + Duration::from_secs(41)).is_some());
    }

    #[test]
    fn detector_reports_a_stall_and_beats_prevent_it() {
        // Generous margins for a loaded machine: beats every 20 ms against a 1.5 s
        // timeout (a scheduling delay of over a second would be needed to fail), and
        // the timing of the stall itself is the tracker's, tested above on fake time.
        let timeout = Duration::from_millis(1500);
        let (tx, rx) = crossbeam_channel::unbounded();
        let cfg = StallConfig {
            enabled: true,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap(),
        };
        let det = StallDetector::spawn(&cfg, "bot", IncidentIds::new("s"), tx).unwrap();
        let start = Instant::now();
        while start.elapsed() < timeout * 2 {
            det.beat();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            rx.try_recv().is_err(),
            "beats every 20 ms must keep a 1.5 s stall away"
        );
        let quiet = Instant::now();
        let inc = rx.recv_timeout(timeout * 10).expect("stall reported");
        let waited = quiet.elapsed();
        assert_eq!(inc.kind, IncidentKind::Stall);
        assert!(waited >= timeout / 2, "reported after {waited:?}");
        assert!(rx.recv_timeout(timeout).is_err(), "reported once");
        det.stop();
    }
}
