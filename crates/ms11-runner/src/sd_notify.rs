//! systemd's notification protocol (`Type=notify`): `READY=1` once every session runs,
//! `WATCHDOG=1` at half of `WATCHDOG_USEC` while the main loop is alive, `STOPPING=1`
//! on the way out. Without `NOTIFY_SOCKET` nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use tracing::debug;

/// A connection to systemd's notification socket, if the runner was started by it.
pub struct Notifier {
    socket: UnixDatagram,
    path: String,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (abstract sockets, `@...`, are not supported).
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|p| p.starts_with('/'))?;
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, path })
    }

    /// Sends one state line (`READY=1`, ...).
    pub fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to(state.as_bytes(), &self.path) {
            debug!(error = %e, state, "sd_notify failed");
        }
    }
}

/// Half of `WATCHDOG_USEC`, when systemd asked for a watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
