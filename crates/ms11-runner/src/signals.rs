//! SIGTERM, SIGINT and SIGHUP as messages on a channel, so the supervisor loop can save,
//! stop the children gracefully and exit 0 instead of dying mid-save, and reload its
//! configuration on SIGHUP instead of stopping.

use crossbeam_channel::{Receiver, bounded};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A signal the runner acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerSignal {
    /// SIGTERM (systemd stop, `kill`): stop gracefully.
    Term,
    /// SIGINT (Ctrl-C): stop gracefully; a second one stops at once.
    Interrupt,
    /// SIGHUP (`systemctl reload`, `kill -HUP`): read the configuration again.
    Reload,
}

/// Starts a thread that turns the runner's signals into messages.
pub fn signal_channel() -> std::io::Result<Receiver<RunnerSignal>> {
    let (tx, rx) = bounded(8);
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let what = match signal {
                    SIGTERM => RunnerSignal::Term,
                    SIGINT => RunnerSignal::Interrupt,
                    _ => RunnerSignal::Reload,
                };
                if tx.send(what).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}
