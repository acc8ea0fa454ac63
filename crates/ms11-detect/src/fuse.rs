//! Fusion: one failure is usually seen several times (exit code, log line, window gone,
//! dump file). Incidents arriving within a window after the first are merged into it with
//! [`Incident::fuse`], so the recovery pipeline runs once.
//!
//! The window opens with the first incident and is never extended, so no signal
//! (terminal ones included) is delayed by more than the window.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use ms11_state::Incident;
use serde::Deserialize;

use crate::error::DetectError;
use crate::handle::DetectorHandle;

/// Fuser settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FuseConfig {
    /// Incidents within this many milliseconds of the first are merged (0: no fusion).
    pub window_ms: u64,
}

impl Default for FuseConfig {
    fn default() -> Self {
        FuseConfig { window_ms: 250 }
    }
}

/// The clock-free fusion core: times are passed in.
#[derive(Debug)]
pub struct Fuser {
    window: Duration,
    open: Option<(Instant, Incident)>,
}

impl Fuser {
    /// A fuser with the given window.
    pub fn new(window: Duration) -> Self {
        Fuser { window, open: None }
    }

    /// Takes an incident at `now`. Returns a finished incident: the previous window's if
    /// it had already closed, or this one at once when the window is zero.
    pub fn push(&mut self, incident: Incident, now: Instant) -> Option<Incident> {
        if self.window.is_zero() {
            return Some(incident);
        }
        let done = self.poll(now);
        match &mut self.open {
            Some((_, base)) => base.fuse(incident),
            None => self.open = Some((now + self.window, incident)),
        }
        done
    }

    /// When the open window closes.
    pub fn deadline(&self) -> Option<Instant> {
        self.open.as_ref().map(|(d, _)| *d)
    }

    /// The fused incident if its window has closed at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Incident> {
        match &self.open {
            Some((deadline, _)) if now >= *deadline => self.open.take().map(|(_, i)| i),
            _ => None,
        }
    }

    /// The pending incident, window closed or not (shutdown).
    pub fn flush(&mut self) -> Option<Incident> {
        self.open.take().map(|(_, i)| i)
    }
}

/// Runs a [`Fuser`] between the detectors' channel and the pipeline's. When every
/// sender of `input` is gone, the pending incident is flushed and the thread ends.
pub fn spawn_fuser(
    config: &FuseConfig,
    input: Receiver<Incident>,
    output: Sender<Incident>,
) -> Result<DetectorHandle, DetectError> {
    let window = Duration::from_millis(config.window_ms);
    DetectorHandle::spawn("fuse", move |stop| {
        let mut fuser = Fuser::new(window);
        let idle = Duration::from_secs(3600);
        let send = |i: Incident| {
            tracing::info!(id = %i.id, kind = %i.kind, signals = i.evidence.len(), "incident");
            let _ = output.send(i);
        };
        loop {
            let timeout = fuser
                .deadline()
                .map_or(idle, |d| d.saturating_duration_since(Instant::now()));
            select! {
                recv(stop) -> _ => break,
                recv(input) -> msg => match msg {
                    Ok(incident) => {
                        if let Some(done) = fuser.push(incident, Instant::now()) {
                            send(done);
                        }
                    }
                    Err(_) => break,
                },
                default(timeout) => {
                    if let Some(done) = fuser.poll(Instant::now()) {
                        send(done);
                    }
                }
            }
        }
        if let Some(done) = fuser.flush() {
            send(done);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ms11_state::{DetectorSource, ExitInfo, IncidentKind};

    fn inc(id: &str, kind: IncidentKind, source: DetectorSource) -> Incident {
        Incident::new(id, kind, source, id, 1.0)
    }

    #[test]
    fn signals_within_the_window_become_one_incident() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut f = Fuser::new(ms(1500));
        let mut exit = inc(
            "s-1",
            IncidentKind::ProcessExit,
            DetectorSource::ProcessExit,
        );
        exit.exit = Some(ExitInfo {
            code: None,
            signal: Some(11),
            core_dumped: false,
        });
        assert!(f.push(exit, t0).is_none());
        assert!(
            f.push(
                inc("s-2", IncidentKind::WindowGone, DetectorSource::Window),
                t0 + ms(40)
            )
            .is_none()
        );
        assert!(
            f.push(
                inc("s-3", IncidentKind::CrashDump, DetectorSource::CrashDump),
                t0 + ms(900)
            )
            .is_none()
        );
        assert_eq!(f.deadline(), Some(t0 + ms(1500)), "window is not extended");
        assert!(f.poll(t0 + ms(1499)).is_none());
        let fused = f.poll(t0 + ms(1500)).expect("closed");
        assert_eq!(fused.id, "s-1");
        assert_eq!(fused.kind, IncidentKind::CrashDump);
        assert_eq!(fused.evidence.len(), 3);
        assert!(fused.exit.is_some());
        assert!(f.poll(t0 + ms(5000)).is_none());
    }

    #[test]
    fn a_late_signal_opens_a_new_window_and_terminal_is_not_delayed_past_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut f = Fuser::new(ms(1000));
        assert!(
            f.push(
                inc("s-1", IncidentKind::Disconnect, DetectorSource::LogPattern),
                t0
            )
            .is_none()
        );
        assert!(
            f.push(
                inc("s-2", IncidentKind::Banned, DetectorSource::LogPattern),
                t0 + ms(999)
            )
            .is_none()
        );
        let first = f
            .push(
                inc(
                    "s-3",
                    IncidentKind::ProcessExit,
                    DetectorSource::ProcessExit,
                ),
                t0 + ms(1200),
            )
            .expect("old window closed");
        assert_eq!(first.id, "s-1");
        assert!(first.terminal);
        assert_eq!(first.kind, IncidentKind::Banned);
        assert_eq!(f.deadline(), Some(t0 + ms(2200)));
        assert_eq!(f.flush().map(|i| i.id), Some("s-3".to_owned()));
    }

    #[test]
    fn zero_window_passes_incidents_through() {
        let mut f = Fuser::new(Duration::ZERO);
        let out = f.push(
            inc("s-1", IncidentKind::Stall, DetectorSource::Stall),
            Instant::now(),
        );
        assert_eq!(out.map(|i| i.id), Some("s-1".to_owned()));
    }

    #[test]
    fn the_thread_fuses_and_flushes_when_inputs_close() {
        let (in_tx, in_rx) = crossbeam_channel::unbounded();
        let (out_tx, out_rx) = crossbeam_channel::unbounded();
        let h = spawn_fuser(&FuseConfig { window_ms: 200 }, in_rx, out_tx).unwrap();
        let t = Instant::now();
        in_tx
            .send(inc(
                "s-1",
                IncidentKind::ProcessExit,
                DetectorSource::ProcessExit,
            ))
            .unwrap();
        in_tx
            .send(inc("s-2", IncidentKind::Crash, DetectorSource::LogPattern))
            .unwrap();
        let fused = out_rx.recv_timeout(Duration::from_secs(2)).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(190),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(fused.evidence.len(), 2);
        in_tx
            .send(inc("s-3", IncidentKind::Stall, DetectorSource::Stall))
            .unwrap();
        drop(in_tx);
        let flushed = out_rx.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(flushed.id, "s-3");
        h.stop();
    }
}
