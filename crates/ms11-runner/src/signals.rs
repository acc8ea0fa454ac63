//! SIGTERM, SIGINT and SIGHUP as messages on a channel, so the supervisor loop can save,
//! stop the children gracefully and exit 0 instead of dying mid-save.

use crossbeam_channel::{Receiver, bounded};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A termination request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// SIGTERM (systemd stop, `kill`).
    Term,
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGHUP (terminal closed).
    Hangup,
}

/// Starts a thread that turns termination signals into messages.
pub fn termination_channel() -> std::io::Result<Receiver<Termination>> {
    let (tx, rx) = bounded(8);
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let what = match signal {
                    SIGTERM => Termination::Term,
                    SIGINT => Termination::Interrupt,
                    _ => Termination::Hangup,
                };
                if tx.send(what).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}
