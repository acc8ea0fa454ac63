//! How the session loop starts children. The real [`ProcessSpawner`] goes through
//! `ms11-process` (process group, parent-death signal from the long-lived spawner
//! thread, a waiter that reports the exit at once); tests inject fake children.

use std::io::{Read, Write};
use std::time::Duration;

use crossbeam_channel::Sender;
use ms11_process::{ExitEvent, ManagedChild, ProcessSpec, StopOutcome};
use ms11_state::ChildRecord;

/// A started child, as the loop sees it. Its exit arrives as an [`ExitEvent`] on the
/// channel given at spawn; nothing here blocks except [`SupervisedChild::stop_blocking`],
/// which only shutdown uses.
pub trait SupervisedChild: Send {
    /// Its pid (also its process group).
    fn pid(&self) -> u32;
    /// Sends `signal` to its process group and returns at once.
    fn signal_group(&self, signal: i32);
    /// What to persist so that a restarted runner can kill it.
    fn record(&self) -> ChildRecord;
    /// Its stdin, when piped (once).
    fn take_stdin(&mut self) -> Option<Box<dyn Write + Send>>;
    /// Its stdout, when piped (once).
    fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>>;
    /// Its stderr, when piped (once).
    fn take_stderr(&mut self) -> Option<Box<dyn Read + Send>>;
    /// A staged stop that waits (signal, grace, kill the group): for shutdown, when
    /// nothing else needs the loop any more.
    fn stop_blocking(&self, signal: i32, grace: Duration) -> StopOutcome;
    /// Waits up to `timeout` for it to end on its own (shutdown only); true when it did.
    fn wait_exit_blocking(&self, timeout: Duration) -> bool;
}

/// Starts children for the loop.
pub trait Spawner: Send {
    /// Starts `spec` as `role`; its exit is sent on `exits`.
    fn spawn(
        &mut self,
        spec: &ProcessSpec,
        role: &str,
        exits: &Sender<ExitEvent>,
    ) -> Result<Box<dyn SupervisedChild>, String>;
}

/// The real spawner: every child through `ms11-process`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessSpawner;

impl Spawner for ProcessSpawner {
    fn spawn(
        &mut self,
        spec: &ProcessSpec,
        role: &str,
        exits: &Sender<ExitEvent>,
    ) -> Result<Box<dyn SupervisedChild>, String> {
        ManagedChild::spawn(spec, role, exits.clone())
            .map(|child| Box::new(child) as Box<dyn SupervisedChild>)
            .map_err(|e| e.to_string())
    }
}

impl SupervisedChild for ManagedChild {
    fn pid(&self) -> u32 {
        ManagedChild::pid(self)
    }

    fn signal_group(&self, signal: i32) {
        ManagedChild::signal_group(self, signal);
    }

    fn record(&self) -> ChildRecord {
        ManagedChild::record(self)
    }

    fn take_stdin(&mut self) -> Option<Box<dyn Write + Send>> {
        ManagedChild::take_stdin(self).map(|s| Box::new(s) as Box<dyn Write + Send>)
    }

    fn take_stdout(&mut self) -> Option<Box<dyn Read + Send>> {
        ManagedChild::take_stdout(self).map(|s| Box::new(s) as Box<dyn Read + Send>)
    }

    fn take_stderr(&mut self) -> Option<Box<dyn Read + Send>> {
        ManagedChild::take_stderr(self).map(|s| Box::new(s) as Box<dyn Read + Send>)
    }

    fn stop_blocking(&self, signal: i32, grace: Duration) -> StopOutcome {
        ManagedChild::stop(self, signal, grace)
    }

    fn wait_exit_blocking(&self, timeout: Duration) -> bool {
        ManagedChild::wait_exit(self, timeout).is_some()
    }
}
