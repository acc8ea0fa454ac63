//! The snapshot `status` shows: what is true now, in one place.

use serde::Serialize;

/// One session's state as a person needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionStatus {
    /// The session's name.
    pub session: String,
    /// The one-word verdict.
    pub health: Health,
    /// The game client.
    pub client: ChildStatus,
    /// The bot.
    pub bot: ChildStatus,
    /// The incident being recovered.
    pub recovering: Option<String>,
    /// The incident a person is asked to acknowledge.
    pub waiting_for_ack: Option<String>,
    /// The next automatic retry of an unrecovered incident.
    pub retry: Option<RetryStatus>,
    /// The last save's error, while saves fail.
    pub saves_failing: Option<String>,
    /// The generation of the last saved state.
    pub generation: u64,
    /// `planet / zone`.
    pub location: String,
    /// The task ledger.
    pub tasks: TaskCounts,
    /// Incidents ever recorded.
    pub crash_count: u64,
}

/// The verdict, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// A terminal incident stopped automatic recovery: a person must act.
    Stopped,
    /// A person is asked to acknowledge an incident.
    WaitingForPerson,
    /// A child is down and the next retry is scheduled.
    Down,
    /// A recovery is running.
    Recovering,
    /// Saving the state fails (kept in memory, retried).
    SavesFailing,
    /// The client was started and is not ready yet.
    Starting,
    /// Everything configured runs.
    Healthy,
}

impl Health {
    /// The word `status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Stopped => "stopped",
            Health::WaitingForPerson => "waiting for a person",
            Health::Down => "down",
            Health::Recovering => "recovering",
            Health::SavesFailing => "saves failing",
            Health::Starting => "starting",
            Health::Healthy => "healthy",
        }
    }
}

/// One child.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ChildStatus {
    /// The session runs one.
    pub configured: bool,
    /// It runs now.
    pub running: bool,
    /// Its pid while it runs.
    pub pid: Option<u32>,
    /// It passed its readiness check (the client) or said `hello` (the bot).
    pub ready: bool,
    /// Why starting it failed last, if it did.
    pub start_error: Option<String>,
    /// Why automatic recovery of it stopped (a terminal incident).
    pub stopped: Option<String>,
}

/// A scheduled retry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryStatus {
    /// The incident retried.
    pub incident: String,
    /// What it is about (`client`, `bot`).
    pub subject: String,
    /// Seconds until the retry.
    pub in_secs: f64,
    /// Retry rounds made so far.
    pub rounds: u32,
}

/// The task ledger's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TaskCounts {
    /// Done and acknowledged.
    pub done: usize,
    /// Handed out, not done.
    pub in_flight: usize,
    /// Not handed out yet.
    pub pending: usize,
}

impl SessionStatus {
    /// One line for a terminal.
    pub fn summary(&self) -> String {
        let child = |name: &str, c: &ChildStatus| {
            if !c.configured {
                return format!("no {name}");
            }
            match (&c.stopped, c.running, &c.start_error) {
                (Some(why), _, _) => format!("{name} stopped ({why})"),
                (None, true, _) if !c.ready => format!("{name} starting"),
                (None, true, _) => format!("{name} running"),
                (None, false, Some(e)) => format!("{name} not running (cannot start: {e})"),
                (None, false, None) => format!("{name} not running"),
            }
        };
        let verdict = match self.health {
            Health::WaitingForPerson => format!(
                "waiting for `ms11-recovery ack` ({})",
                self.waiting_for_ack.as_deref().unwrap_or("?")
            ),
            Health::Recovering => {
                format!("recovering ({})", self.recovering.as_deref().unwrap_or("?"))
            }
            Health::Down => match &self.retry {
                Some(r) => format!(
                    "down, retrying in {:.0} s ({}, round {})",
                    r.in_secs.max(0.0).ceil(),
                    r.incident,
                    r.rounds.saturating_add(1)
                ),
                None => "down".to_owned(),
            },
            Health::Stopped => "stopped: a person must act, then `ms11-recovery ack`".to_owned(),
            Health::SavesFailing => format!(
                "saves failing ({})",
                self.saves_failing.as_deref().unwrap_or("?")
            ),
            Health::Starting | Health::Healthy => self.health.as_str().to_owned(),
        };
        format!(
            "session `{}`: {}, {}, {}; generation {}; {}; tasks {} done, {} in flight, {} pending; {} incident(s)",
            self.session,
            child("client", &self.client),
            child("bot", &self.bot),
            verdict,
            self.generation,
            self.location,
            self.tasks.done,
            self.tasks.in_flight,
            self.tasks.pending,
            self.crash_count,
        )
    }
}
