//! What the outside world can ask of a session loop, and what it answers. The control
//! socket, the dashboard and the runner's own watchdog all speak this; none of them
//! touches the loop's resources.

use crossbeam_channel::Sender;

use crate::event::SupervisorEvent;
use crate::settings::SessionSettings;
use crate::status::SessionStatus;

/// Where an answer goes.
pub type Reply<T> = Sender<T>;

/// A request to one session loop. Each is answered at once (the loop never waits for
/// a recovery to answer).
#[derive(Debug)]
pub enum SessionCommand {
    /// A snapshot of the session.
    Status(Reply<SessionStatus>),
    /// Save now; answers the new generation.
    Save(Reply<Result<u64, String>>),
    /// An operator asks for a client restart; answers the incident id.
    Restart(Reply<Result<String, String>>),
    /// An operator asks for a relog; answers the incident id.
    Relog(Reply<Result<String, String>>),
    /// A person acknowledges an incident (or whatever waits for a person when
    /// `incident` is `None`); answers the incident acknowledged.
    Ack {
        /// The incident id the person means.
        incident: Option<String>,
        /// The answer.
        reply: Reply<Result<String, String>>,
    },
    /// Sends every later event to this channel (dropped when it is full or gone).
    Subscribe(Sender<SupervisorEvent>),
    /// Takes a screenshot of the client now; answers the file (from the capture job).
    Screenshot(Reply<Result<String, String>>),
    /// Answers at once: the loop is alive (the runner's watchdog).
    Ping(Reply<()>),
    /// New settings (the runner re-read its configuration). What can change while the
    /// session runs is applied at once: recovery policies, pipelines, the save interval,
    /// the stall timeout, readiness and notifications (a recovery under way keeps its
    /// pipeline; the next one uses the new settings). Answers the names of the other
    /// settings that changed, which take effect only after a restart of the runner.
    Reconfigure(Box<SessionSettings>, Reply<Vec<String>>),
}
