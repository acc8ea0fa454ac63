//! Screenshots as evidence: at each incident about the client a job captures its window
//! (or the whole screen) before the client is stopped, and a person can ask for one at
//! any time. The capture runs on a thread of its own and reports back; a stop of a
//! running client waits for it (2 s at most), so a crash dialog is on the picture.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::SessionLoop;
use crate::command::Reply;
use crate::job::JobReport;
use crate::settings::ScreenshotSettings;

/// How long a stop waits for the incident's screenshot.
const CAPTURE_WAIT: Duration = Duration::from_secs(2);

/// Takes one screenshot and saves it in the settings' folder.
fn take(
    settings: &ScreenshotSettings,
    name: &str,
    whole_screen: bool,
) -> Result<ms11_screenshot::Saved, String> {
    let titles: &[regex::Regex] = if whole_screen { &[] } else { &settings.titles };
    let image =
        ms11_screenshot::capture(settings.display.as_deref(), titles).map_err(|e| e.to_string())?;
    ms11_screenshot::Shots::new(settings.dir.clone(), settings.keep)
        .save(name, &image)
        .map_err(|e| e.to_string())
}

impl SessionLoop {
    /// Starts the screenshot of a new incident about the client: its window, or the
    /// whole screen when the incident is a dialog (which lies beside the window).
    pub(super) fn screenshot_incident(&mut self, incident: &str, whole_screen: bool) {
        let Some(settings) = self.settings.screenshots.clone() else {
            return;
        };
        let reports = self.job_tx.clone();
        let incident = incident.to_owned();
        let name = incident.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("screenshot-{incident}"))
            .spawn(move || {
                let result = take(&settings, &name, whole_screen);
                let _ = reports.send(JobReport::Screenshot { incident, result });
            });
        match spawned {
            Ok(_) => self.capture_until = Some(self.clock.now() + CAPTURE_WAIT),
            Err(e) => {
                warn!(session = %self.settings.name, error = %e, "cannot start the screenshot")
            }
        }
    }

    /// A screenshot now, for a person; the answer comes from the capture job.
    pub(super) fn screenshot_now(&mut self, reply: Reply<Result<String, String>>) {
        let Some(settings) = self.settings.screenshots.clone() else {
            let _ = reply.send(Err(format!(
                "session `{}` takes no screenshots (no X display, or the window probe is off)",
                self.settings.name
            )));
            return;
        };
        let name = format!("{}-requested", self.settings.name);
        let spawned = std::thread::Builder::new()
            .name("screenshot".into())
            .spawn(move || {
                let result = take(&settings, &name, false).map(|saved| {
                    format!(
                        "{} ({}, {} bytes)",
                        saved.path.display(),
                        saved.what,
                        saved.bytes
                    )
                });
                let _ = reply.send(result);
            });
        if let Err(e) = spawned {
            warn!(session = %self.settings.name, error = %e, "cannot start the screenshot");
        }
    }

    /// An incident's screenshot was taken (or not): recorded on the incident, and the
    /// stops that waited for it go on.
    pub(super) fn on_screenshot(
        &mut self,
        incident: &str,
        result: Result<ms11_screenshot::Saved, String>,
    ) {
        match result {
            Ok(saved) => {
                info!(event = "screenshot", session = %self.settings.name, incident, file = %saved.path.display(), what = %saved.what, bytes = saved.bytes, "screenshot taken");
                let path = saved.path.display().to_string();
                if let Some(recorded) = self
                    .state
                    .crash_history
                    .iter_mut()
                    .find(|i| i.id == incident)
                {
                    recorded.screenshot = Some(path.clone());
                }
                if let Some(running) = self.recovery.as_mut().filter(|r| r.incident.id == incident)
                {
                    running.incident.screenshot = Some(path);
                }
                self.save_soon();
            }
            Err(e) => warn!(session = %self.settings.name, incident, error = %e, "no screenshot"),
        }
        self.release_deferred_stops();
    }

    /// Stops that waited for a screenshot go on (it came, or took too long).
    pub(super) fn release_deferred_stops(&mut self) {
        self.capture_until = None;
        for reply in std::mem::take(&mut self.deferred_stops) {
            self.stop_client(reply);
        }
    }

    /// Whether a stop of the running client must wait for a screenshot first.
    pub(super) fn defer_stop_for_screenshot(
        &mut self,
        reply: Reply<Result<String, String>>,
    ) -> Option<Reply<Result<String, String>>> {
        if self.capture_until.is_some() && self.client.running() {
            self.deferred_stops.push(reply);
            return None;
        }
        Some(reply)
    }

    pub(super) fn evidence_timers(&mut self, now: Instant) {
        if self.capture_until.is_some_and(|until| now >= until) {
            warn!(session = %self.settings.name, "the screenshot takes too long; stopping the client without waiting for it");
            self.release_deferred_stops();
        }
    }
}
