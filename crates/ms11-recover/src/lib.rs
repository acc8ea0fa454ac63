//! Recovery: the [`Strategy`] trait, the built-in strategies (restart, relog, manual,
//! restore) and the [`Pipeline`] that runs them in order with attempts, timeouts,
//! exponential backoff with jitter, per-strategy budgets, a crash-loop breaker and
//! escalation. Nothing else.
//!
//! Strategies act on the live session only through [`SessionControl`], which the runner
//! implements (it owns the processes, the bot link and the state store); they get typed
//! settings and never read files or the command line. A plugin strategy is just another
//! `Box<dyn Strategy>`. The pipeline's counters live in
//! [`ms11_state::RecoveryPolicyState`], which the runner persists, so a runner restart
//! does not reset them into a retry storm.

mod clock;
mod notify;
mod pipeline;
mod settings;
mod strategies;

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ms11_state::Incident;

pub use clock::{Clock, RealClock};
pub use notify::{Notification, WebhookFormat, desktop_command, send_webhook};
pub use pipeline::{Pipeline, PipelineResult, Round};
pub use settings::{
    BreakerSettings, ManualSettings, RecoverySettings, RetrySettings, StrategySettings,
};
pub use strategies::{Manual, Relog, Restart, RestartBot, Restore, builtin};

/// Whether a strategy is worth trying for an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applicability {
    /// Try it.
    Applies,
    /// Skip it, and why.
    Skip(String),
}

/// How a recovery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The session is really back.
    Recovered,
    /// This attempt failed; retrying or another strategy may help.
    Failed(String),
    /// Nothing automatic can fix it (banned, wrong password).
    Terminal(String),
}

/// What a strategy gets while it runs.
pub struct RecoveryCtx<'a> {
    /// It must be done by then.
    pub deadline: Instant,
    /// Set when the runner shuts down: give up at once.
    pub cancel: &'a AtomicBool,
    /// The live session.
    pub session: &'a mut dyn SessionControl,
}

/// The live session as strategies see it; implemented by the runner.
pub trait SessionControl {
    /// The session's name (for logs and notifications).
    fn session_name(&self) -> &str;
    /// Whether the game client process is running.
    fn client_running(&self) -> bool;
    /// Stops the client in stages (configured signal, grace, kill the group). Returns
    /// how it ended, for the incident record.
    fn stop_client(&mut self) -> Result<String, String>;
    /// Starts the client with its configured command.
    fn start_client(&mut self) -> Result<(), String>;
    /// Waits until the client is ready (log line, window or delay as configured).
    /// Fails if it exits meanwhile or the deadline passes.
    fn wait_client_ready(
        &mut self,
        deadline: Instant,
        cancel: &AtomicBool,
    ) -> Result<String, String>;
    /// Asks the bot to log in again and waits for its answer.
    fn request_relog(&mut self, deadline: Instant) -> Result<(), String>;
    /// Runs a command to completion (the configured `relog_command`) and fails when it
    /// fails or outlives the deadline. The runner starts it like every child.
    fn run_command(&mut self, argv: &[String], deadline: Instant) -> Result<(), String>;
    /// Stops the bot in stages, starts it again and waits for its `hello`.
    fn restart_bot(&mut self, deadline: Instant) -> Result<String, String>;
    /// Tells a human (log, desktop, webhook). Returns at once: delivery runs in the
    /// background and never delays the recovery.
    fn notify_human(&mut self, notification: &Notification);
    /// Waits for a human's acknowledgement; `true` when it came.
    fn wait_for_ack(&mut self, deadline: Instant, cancel: &AtomicBool) -> bool;
    /// Rolls the state back to an older good generation (the newest valid one older
    /// than the current, or `generation`). Only the game fields go back: the task
    /// ledger, incident history and counters are kept, so nothing acknowledged is lost.
    /// Returns the generation restored from.
    fn roll_back_state(&mut self, generation: Option<u64>) -> Result<u64, String>;
}

/// A way to bring a session back.
pub trait Strategy: Send {
    /// Its name in the pipeline order and in incident records.
    fn name(&self) -> &str;
    /// Whether to try it for this incident.
    fn applies_to(&self, incident: &Incident, session: &dyn SessionControl) -> Applicability;
    /// Tries once. Must respect `ctx.deadline` and `ctx.cancel`.
    fn recover(&mut self, incident: &Incident, ctx: &mut RecoveryCtx<'_>) -> Outcome;
}
