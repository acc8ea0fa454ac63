//! The handle every detector returns: stopping it (or dropping it) ends and joins the
//! detector's thread.

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::error::DetectError;

/// A running (or disabled) detector. Dropping it stops the detector and joins its thread.
pub struct DetectorHandle {
    name: String,
    stop_tx: Option<Sender<()>>,
    wake: Option<Box<dyn Fn() + Send>>,
    thread: Option<JoinHandle<()>>,
    disabled: Option<String>,
}

impl std::fmt::Debug for DetectorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectorHandle")
            .field("name", &self.name)
            .field("running", &self.is_running())
            .field("disabled", &self.disabled)
            .finish()
    }
}

impl DetectorHandle {
    /// Starts `body` on a thread named `ms11-<name>`. `body` must return soon after its
    /// stop receiver becomes disconnected (it never receives a value).
    pub(crate) fn spawn<F>(name: &str, body: F) -> Result<Self, DetectError>
    where
        F: FnOnce(Receiver<()>) + Send + 'static,
    {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name(format!("ms11-{name}"))
            .spawn(move || body(stop_rx))
            .map_err(|source| DetectError::Spawn {
                name: name.to_owned(),
                source,
            })?;
        Ok(DetectorHandle {
            name: name.to_owned(),
            stop_tx: Some(stop_tx),
            wake: None,
            thread: Some(thread),
            disabled: None,
        })
    }

    /// Adds a function called on stop to wake a thread blocked outside crossbeam
    /// (e.g. in `poll(2)` on an X connection).
    pub(crate) fn with_waker(mut self, wake: Box<dyn Fn() + Send>) -> Self {
        self.wake = Some(wake);
        self
    }

    /// A handle for a detector that could not run here (no display, ...). `reason` says why.
    pub fn disabled(name: &str, reason: impl Into<String>) -> Self {
        DetectorHandle {
            name: name.to_owned(),
            stop_tx: None,
            wake: None,
            thread: None,
            disabled: Some(reason.into()),
        }
    }

    /// The detector's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why the detector is disabled, if it is.
    pub fn disabled_reason(&self) -> Option<&str> {
        self.disabled.as_deref()
    }

    /// Whether its thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the detector and waits for its thread to end.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        drop(self.stop_tx.take());
        if let Some(wake) = &self.wake {
            wake();
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(detector = %self.name, "detector thread panicked");
        }
    }
}

impl Drop for DetectorHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
