//! A child's exit turned into an incident.
//!
//! Whoever waits on the child (the supervisor's waiter thread) calls [`incident_for_exit`];
//! [`ExitWatcher`] does the waiting itself for tests and benchmarks.

use std::process::Child;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use ms11_state::{DetectorSource, ExitInfo, Incident, IncidentKind, Severity};

use crate::error::DetectError;
use crate::ids::{IncidentIds, unix_now};

/// Signals that mean the process crashed (not that it was told to stop).
const CRASH_SIGNALS: [i32; 6] = [4, 5, 6, 7, 8, 11]; // ILL TRAP ABRT BUS FPE SEGV

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// Whether an exit code is a Windows NTSTATUS error (0xC0000005 access violation, ...).
fn is_ntstatus_crash(code: i32) -> bool {
    (code as u32) & 0xF000_0000 == 0xC000_0000
}

/// The incident for `role`'s exit: a crash signal (SEGV, ABRT, BUS, ILL, FPE, TRAP), a
/// core dump or a Windows NTSTATUS error code is a `crash`; anything else (non-zero
/// code, other signals, even code 0: the client is not supposed to exit) is a
/// `process_exit`, with severity `warning` for code 0 and `error` otherwise.
pub fn incident_for_exit(ids: &IncidentIds, role: &str, exit: ExitInfo, at: f64) -> Incident {
    let crashed = exit.core_dumped
        || exit.signal.is_some_and(|s| CRASH_SIGNALS.contains(&s))
        || exit.code.is_some_and(is_ntstatus_crash);
    let kind = if crashed {
        IncidentKind::Crash
    } else {
        IncidentKind::ProcessExit
    };
    let status = match (exit.code, exit.signal) {
        (None, Some(sig)) => format!("{exit} ({})", signal_name(sig)),
        (Some(code), _) if is_ntstatus_crash(code) => format!("exit code {:#010x}", code as u32),
        _ => exit.to_string(),
    };
    let message = format!("{role} exited: {status}");
    let mut incident = ids.incident(kind, DetectorSource::ProcessExit, message, at);
    incident.severity = if exit.code == Some(0) {
        Severity::Warning
    } else {
        Severity::Error
    };
    incident.exit = Some(exit);
    incident
}

/// Waits on a child on its own thread and sends its exit incident at once.
#[derive(Debug)]
pub struct ExitWatcher {
    pid: u32,
    thread: Option<JoinHandle<()>>,
}

impl ExitWatcher {
    /// Takes the child and waits for it on a thread named `ms11-exit-<role>`.
    pub fn spawn(
        mut child: Child,
        role: &str,
        ids: IncidentIds,
        tx: Sender<Incident>,
    ) -> Result<Self, DetectError> {
        let pid = child.id();
        let role = role.to_owned();
        let name = format!("ms11-exit-{role}");
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || match child.wait() {
                Ok(status) => {
                    let incident = incident_for_exit(&ids, &role, ExitInfo::from(status), unix_now());
                    tracing::info!(id = %incident.id, pid, %role, msg = %incident.crash.error_message, "child exited");
                    let _ = tx.send(incident);
                }
                Err(err) => tracing::error!(pid, %role, %err, "waiting on child failed"),
            })
            .map_err(|source| DetectError::Spawn { name, source })?;
        Ok(ExitWatcher {
            pid,
            thread: Some(thread),
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the child has been reaped.
    pub fn has_exited(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits until the child has exited and its incident was sent.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ExitWatcher {
    fn drop(&mut self) {
        // The thread only waits for the child; if it is still running we leave it
        // detached rather than block (the owner stops the child, not the watcher).
        drop(self.thread.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> IncidentIds {
        IncidentIds::new("s")
    }

    #[test]
    fn kinds_and_severities_follow_the_exit() {
        let segv = incident_for_exit(
            &ids(),
            "client",
            ExitInfo {
                code: None,
                signal: Some(11),
                core_dumped: false,
            },
            1.0,
        );
        assert_eq!(
            (segv.kind, segv.severity),
            (IncidentKind::Crash, Severity::Error)
        );
        assert!(
            segv.crash.error_message.contains("SIGSEGV"),
            "{}",
            segv.crash.error_message
        );
        let abrt = incident_for_exit(
            &ids(),
            "client",
            ExitInfo {
                code: None,
                signal: Some(6),
                core_dumped: true,
            },
            1.0,
        );
        assert_eq!(abrt.kind, IncidentKind::Crash);
        let term = incident_for_exit(
            &ids(),
            "client",
            ExitInfo {
                code: None,
                signal: Some(15),
                core_dumped: false,
            },
            1.0,
        );
        assert_eq!(term.kind, IncidentKind::ProcessExit);
        let code3 = incident_for_exit(
            &ids(),
            "bot",
            ExitInfo {
                code: Some(3),
                signal: None,
                core_dumped: false,
            },
            1.0,
        );
        assert_eq!(
            (code3.kind, code3.severity),
            (IncidentKind::ProcessExit, Severity::Error)
        );
        assert_eq!(code3.crash.error_message, "bot exited: exit code 3");
        let clean = incident_for_exit(
            &ids(),
            "client",
            ExitInfo {
                code: Some(0),
                signal: None,
                core_dumped: false,
            },
            1.0,
        );
        assert_eq!(
            (clean.kind, clean.severity),
            (IncidentKind::ProcessExit, Severity::Warning)
        );
        let av = incident_for_exit(
            &ids(),
            "client",
            ExitInfo {
                code: Some(0xC000_0005_u32 as i32),
                signal: None,
                core_dumped: false,
            },
            1.0,
        );
        assert_eq!(av.kind, IncidentKind::Crash);
        assert!(
            av.crash.error_message.contains("0xc0000005"),
            "{}",
            av.crash.error_message
        );
        assert!(!av.terminal && av.exit.is_some());
    }
}
