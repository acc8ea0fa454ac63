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

/// The clock-free fusion core: times are passed in. One window per key: signals are
/// merged only with signals of the same key (the runner keys on the incident's subject
/// and the process generation it is about, so a bot stall never merges into a client
/// exit).
#[derive(Debug)]
pub struct Fuser<K = ms11_state::IncidentSubject> {
    window: Duration,
    open: Vec<(K, Instant, Incident)>,
}

impl<K: PartialEq + Clone> Fuser<K> {
    /// A fuser with the given window.
    pub fn new(window: Duration) -> Self {
        Fuser {
            window,
            open: Vec::new(),
        }
    }

    /// Takes an incident about `key` at `now`. Returns the finished incidents: those
    /// whose window had already closed, or this one at once when the window is zero.
    pub fn push(&mut self, key: K, incident: Incident, now: Instant) -> Vec<Incident> {
        if self.window.is_zero() {
            return vec![incident];
        }
        let done = self.poll(now);
        match self.open.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, _, base)) => base.fuse(incident),
            None => self.open.push((key, now + self.window, incident)),
        }
        done
    }

    /// Whether a window is open for `key`.
    pub fn is_open(&self, key: &K) -> bool {
        self.open.iter().any(|(k, _, _)| k == key)
    }

    /// When the first open window closes.
    pub fn deadline(&self) -> Option<Instant> {
        self.open.iter().map(|(_, d, _)| *d).min()
    }

    /// The fused incidents whose windows have closed at `now`, oldest first.
    pub fn poll(&mut self, now: Instant) -> Vec<Incident> {
        let mut done = Vec::new();
        let mut index = 0;
        while index < self.open.len() {
            if now >= self.open[index].1 {
                done.push(self.open.remove(index).2);
            } else {
                index += 1;
            }
        }
        done
    }

    /// Closes the window of `key` now (a definitive signal needs no more evidence).
    pub fn take(&mut self, key: &K) -> Option<Incident> {
        let index = self.open.iter().position(|(k, _, _)| k == key)?;
        Some(self.open.remove(index).2)
    }

    /// Every pending incident, windows closed or not (shutdown).
    pub fn flush(&mut self) -> Vec<Incident> {
        self.open.drain(..).map(|(_, _, i)| i).collect()
    }
}

/// Runs a [`Fuser`] keyed on the incident's subject between the detectors' channel and
/// the pipeline's. When every sender of `input` is gone, the pending incidents are
/// flushed and the thread ends.
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
                        let key = incident.subject();
                        fuser.push(key, incident, Instant::now()).into_iter().for_each(send);
                    }
                    Err(_) => break,
                },
                default(timeout) => fuser.poll(Instant::now()).into_iter().for_each(send),
            }
        }
        fuser.flush().into_iter().for_each(send);
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
        let key = ms11_state::IncidentSubject::Client;
        assert!(f.push(key, exit, t0).is_empty());
        assert!(
            f.push(
                key,
                inc("s-2", IncidentKind::WindowGone, DetectorSource::Window),
                t0 + ms(40)
            )
            .is_empty()
        );
        assert!(
            f.push(
                key,
                inc("s-3", IncidentKind::CrashDump, DetectorSource::CrashDump),
                t0 + ms(900)
            )
            .is_empty()
        );
        assert_eq!(f.deadline(), Some(t0 + ms(1500)), "window is not extended");
        assert!(f.poll(t0 + ms(1499)).is_empty());
        let fused = f.poll(t0 + ms(1500)).pop().expect("closed");
        assert_eq!(fused.id, "s-1");
        assert_eq!(fused.kind, IncidentKind::CrashDump);
        assert_eq!(fused.evidence.len(), 3);
        assert!(fused.exit.is_some());
        assert!(f.poll(t0 + ms(5000)).is_empty());
    }

    #[test]
    fn signals_about_different_subjects_are_never_merged() {
        use ms11_state::IncidentSubject::{Bot, Client};
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut f = Fuser::new(ms(250));
        let stall = inc("s-1", IncidentKind::Stall, DetectorSource::Stall);
        let exit = inc(
            "s-2",
            IncidentKind::ProcessExit,
            DetectorSource::ProcessExit,
        );
        assert!(f.push(Bot, stall, t0).is_empty());
        assert!(f.push(Client, exit, t0 + ms(10)).is_empty());
        assert!(f.is_open(&Client));
        let client = f.take(&Client).expect("the exit's own window");
        assert_eq!(client.kind, IncidentKind::ProcessExit);
        assert_eq!(client.evidence.len(), 1);
        let rest = f.poll(t0 + ms(250));
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].kind, IncidentKind::Stall);
    }

    #[test]
    fn a_late_signal_opens_a_new_window_and_terminal_is_not_delayed_past_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut f = Fuser::new(ms(1000));
        let key = ms11_state::IncidentSubject::Client;
        assert!(
            f.push(
                key,
                inc("s-1", IncidentKind::Disconnect, DetectorSource::LogPattern),
                t0
            )
            .is_empty()
        );
        assert!(
            f.push(
                key,
                inc("s-2", IncidentKind::Banned, DetectorSource::LogPattern),
                t0 + ms(999)
            )
            .is_empty()
        );
        let first = f
            .push(
                key,
                inc(
                    "s-3",
                    IncidentKind::ProcessExit,
                    DetectorSource::ProcessExit,
                ),
                t0 + ms(1200),
            )
            .pop()
            .expect("old window closed");
        assert_eq!(first.id, "s-1");
        assert!(first.terminal);
        assert_eq!(first.kind, IncidentKind::Banned);
        assert_eq!(f.deadline(), Some(t0 + ms(2200)));
        assert_eq!(f.flush().pop().map(|i| i.id), Some("s-3".to_owned()));
    }

    #[test]
    fn zero_window_passes_incidents_through() {
        let mut f = Fuser::new(Duration::ZERO);
        let out = f.push(
            ms11_state::IncidentSubject::Bot,
            inc("s-1", IncidentKind::Stall, DetectorSource::Stall),
            Instant::now(),
        );
        assert_eq!(out.into_iter().map(|i| i.id).collect::<Vec<_>>(), ["s-1"]);
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
