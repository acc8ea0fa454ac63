//! Runner-wide supervision of one session loop: a panic is caught, the session is
//! reopened from disk (its last durable state) and run again, once; a second panic
//! within the window ends the session with an error so that the runner exits non-zero
//! and its service manager restarts it.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tracing::error;

use crate::command::SessionCommand;
use crate::session::{SessionEnd, SessionLoop};

/// How a supervised session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisedEnd {
    /// The loop ended (asked to stop).
    Ended(SessionEnd),
    /// The loop panicked twice within the window, or could not be reopened.
    Failed(String),
}

/// Runs the loop that `open` makes until it ends. When it panics, `open` is called
/// again with the panic message (it reopens the session from disk and records the
/// panic as an incident) and the new loop runs; a second panic within `window` ends
/// supervision with [`SupervisedEnd::Failed`].
pub fn supervise_session(
    mut open: impl FnMut(Option<&str>) -> Result<SessionLoop, String>,
    stop: &Receiver<()>,
    commands: &Receiver<SessionCommand>,
    window: Duration,
) -> SupervisedEnd {
    let mut last_panic: Option<(Instant, String)> = None;
    loop {
        let previous = last_panic.as_ref().map(|(_, m)| m.as_str());
        let session = match open(previous) {
            Ok(session) => session,
            Err(e) => return SupervisedEnd::Failed(e),
        };
        let name = session.name().to_owned();
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| session.run(stop, commands)));
        let message = match run {
            Ok(end) => return SupervisedEnd::Ended(end),
            Err(panic) => crate::panic_message(panic.as_ref()),
        };
        let now = Instant::now();
        error!(event = "session_panicked", session = %name, panic = %message, "the session loop panicked");
        if let Some((at, first)) = &last_panic
            && now.duration_since(*at) < window
        {
            return SupervisedEnd::Failed(format!(
                "session `{name}` panicked twice within {} s: {first}; then: {message}",
                window.as_secs()
            ));
        }
        last_panic = Some((now, message));
    }
}
