//! The session supervisor: one loop per session that alone owns the session's
//! children, state, store and bot link, recovery jobs that act on the session only by
//! message, and runner-wide supervision that contains panics.
//!
//! It takes typed settings ([`SessionSettings`]), answers [`SessionCommand`]s with a
//! [`SessionStatus`] snapshot or a result, and publishes a stream of
//! [`SupervisorEvent`]s. It knows nothing of the command line, the configuration file
//! format or the control socket's wire form: `ms11-runner` is the glue.
//!
//! # Usage
//!
//! ```no_run
//! use std::sync::Arc;
//! use ms11_supervisor::{ProcessSpawner, SessionLoop, SessionSettings};
//!
//! # fn demo(state: ms11_state::SessionState, store: Box<dyn ms11_persist::StateStore>) {
//! let settings = SessionSettings::new("main");
//! let session = SessionLoop::new(
//!     settings,
//!     state,
//!     store,
//!     Arc::new(ms11_recover::RealClock),
//!     Box::new(ProcessSpawner),
//! );
//! let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
//! let (_commands_tx, commands_rx) = crossbeam_channel::bounded(16);
//! std::thread::spawn(move || session.run(&stop_rx, &commands_rx));
//! let _ = stop_tx.send(());
//! # }
//! ```
//!
//! # Theory of operation
//!
//! Everything that happens to a session reaches its loop as a message on a channel: a
//! child's exit (from the waiter thread `ms11-process` starts for every child), a
//! detector's signal (log follower, window probe, crash-dump watcher), a line from the
//! bot, a command, a job's report, or a timer. The loop handles one message at a time,
//! decides, acts without blocking (a signal to a process group, a spawn, a save, a line
//! to the bot), and records what it is waiting for with a deadline. Its only timer is
//! the earliest of those deadlines, so an idle session wakes for nothing.
//!
//! Anything long-running is a job on a thread of its own that reports back by message:
//! the recovery pipeline (which may wait minutes for a person), webhook delivery.
//! A job never touches the session: each `SessionControl` call of a strategy becomes a
//! request that the loop answers when it can. A staged stop is the loop's own state
//! machine (signal now, SIGKILL when the grace timer fires), so saves, the bot's acks
//! and `status` keep flowing while a client takes its time to die.
//!
//! Signals are turned into incidents by four rules (see `session/incidents.rs`): the
//! effects of the runner's own actions are ignored; during a recovery, signals about
//! the same subject are evidence for it, a terminal one escalates at once, and others
//! are queued; definitive signals (an exit, an error dialog, a failed start) start
//! recovery at once while others are fused per subject and process generation; and an
//! unrecovered incident is retried on a capped, persisted schedule until the session
//! runs again or a terminal incident stops it for a person.
//!
//! A panic in a job is caught and recorded; a panic in a loop unwinds it (its children
//! are killed as its slots drop), and [`supervise_session`] reopens the session from
//! disk once; a second panic within the window ends the runner with an error.

mod command;
mod event;
mod job;
mod readiness;
mod session;
mod settings;
mod spawner;
mod status;
mod supervise;

pub use command::{Reply, SessionCommand};
pub use event::{EventKind, SupervisorEvent};
pub use session::{SessionEnd, SessionLoop, next_incident_number};
pub use settings::{
    ChildSettings, ReadyKind, ReadySettings, ScreenshotSettings, SessionSettings, StrategyFactory,
    Tracking, WineSettings,
};
pub use spawner::{ProcessSpawner, Spawner, SupervisedChild};
pub use status::{ChildStatus, Health, RetryStatus, SessionStatus, TaskCounts};
pub use supervise::{SupervisedEnd, supervise_session};

/// The text of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
