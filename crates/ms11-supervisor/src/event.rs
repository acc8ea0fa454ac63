//! The loop's event stream: what happened, as data, for whoever listens (the control
//! socket, a journal, a dashboard, tests). Listeners never slow the loop: a full or
//! closed listener loses events, and the loss is counted.

use crossbeam_channel::{Sender, TrySendError};
use serde::Serialize;

/// Something that happened in a session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SupervisorEvent {
    /// The session.
    pub session: String,
    /// Unix seconds.
    pub at: f64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A child was started.
    ChildStarted {
        /// `client` or `bot`.
        role: String,
        /// Its pid.
        pid: u32,
        /// How many times this role was started in this run.
        generation: u64,
    },
    /// Starting a child failed.
    StartFailed {
        /// `client` or `bot`.
        role: String,
        /// The OS's reason.
        error: String,
    },
    /// A child ended.
    ChildExited {
        /// `client` or `bot`.
        role: String,
        /// Its pid.
        pid: u32,
        /// How it ended.
        exit: String,
        /// We stopped it (not an incident).
        expected: bool,
    },
    /// The client passed its readiness check, or the bot said `hello`.
    Ready {
        /// `client` or `bot`.
        role: String,
        /// What showed it.
        evidence: String,
    },
    /// A new incident.
    Incident {
        /// Its id.
        incident: String,
        /// Its kind.
        kind: String,
        /// What it is about.
        subject: String,
        /// Automatic recovery must not retry it.
        terminal: bool,
        /// What was seen.
        message: String,
    },
    /// A later signal was attached to the incident under recovery.
    Evidence {
        /// The incident.
        incident: String,
        /// The signal's kind.
        kind: String,
    },
    /// A signal caused by the runner's own action was ignored.
    OwnEffect {
        /// The signal's kind.
        kind: String,
        /// Why it is ours.
        reason: String,
    },
    /// The pipeline started for an incident.
    RecoveryStarted {
        /// The incident.
        incident: String,
        /// `first` or `retry`.
        round: String,
    },
    /// The pipeline finished.
    RecoveryFinished {
        /// The incident.
        incident: String,
        /// `recovered`, `escalated`, `gave_up`, `terminal`.
        status: String,
        /// The strategy that recovered it.
        strategy: Option<String>,
    },
    /// A person is asked to act.
    WaitingForPerson {
        /// The incident.
        incident: String,
    },
    /// A person acknowledged.
    Acknowledged {
        /// The incident.
        incident: String,
    },
    /// The next retry of an unrecovered incident is scheduled.
    RetryScheduled {
        /// The incident.
        incident: String,
        /// Seconds from now.
        in_secs: f64,
    },
    /// Automatic recovery of a subject stopped for good (terminal).
    Halted {
        /// `client` or `bot`.
        subject: String,
        /// Why.
        reason: String,
    },
    /// The state was saved.
    Saved {
        /// The new generation.
        generation: u64,
    },
    /// A save failed (the state is kept in memory and the next save retries).
    SaveFailed {
        /// The error.
        error: String,
    },
}

/// The listeners of one loop.
#[derive(Debug, Default)]
pub(crate) struct EventBus {
    listeners: Vec<Sender<SupervisorEvent>>,
    lost: u64,
}

impl EventBus {
    pub(crate) fn subscribe(&mut self, listener: Sender<SupervisorEvent>) {
        self.listeners.push(listener);
    }

    /// Sends to every listener without waiting; a closed listener is removed.
    pub(crate) fn publish(&mut self, event: &SupervisorEvent) {
        let mut lost = 0;
        self.listeners.retain(|l| match l.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                lost += 1;
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
        if lost > 0 {
            self.lost += lost;
            tracing::debug!(lost = self.lost, "a slow event listener lost events");
        }
    }
}
