//! The exactly-once rules, as pure logic: given the session state and a message from the
//! bot, update the state in memory and say what the runner must do (save, acknowledge,
//! resume, refuse). No I/O: the runner performs the [`Action`]s.
//!
//! The guarantee rests on one rule: an `ack{seq}` is only sent when the change it confirms
//! is durable. [`ExactlyOnce`] counts in-memory changes; the runner tells it which changes
//! a successful save covered ([`ExactlyOnce::change_mark`] before the save,
//! [`ExactlyOnce::saved`] after it). A repeated `task_done` is acknowledged at once only
//! when nothing is waiting to be saved; otherwise it needs a save first as well.

use ms11_state::{CompleteOutcome, PatchError, SessionState, StateLimits, TaskError};
use thiserror::Error;

use crate::message::{BotMessage, PROTOCOL_VERSION, ProtocolMessage, RunnerMessage};

/// What the runner must do after a bot message.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing to save or send.
    None,
    /// Send `resume` for the current state ([`ExactlyOnce::resume`]).
    SendResume,
    /// Fields of the state changed in memory; the periodic autosave persists them.
    StateChanged {
        /// The fields that changed.
        fields: Vec<String>,
    },
    /// A task checkpoint (task added, or started without `seq`): save now; send nothing.
    Save,
    /// Save durably; only when the save succeeded send `ack{seq}`. When it fails, send
    /// nothing: the bot sends the message again after 5 s, and it leads here again.
    SaveThenAck {
        /// The seq to acknowledge.
        seq: u64,
    },
    /// Send `ack{seq}` now: what it confirms is already durable.
    Ack {
        /// The seq to acknowledge.
        seq: u64,
    },
    /// The bot is about to repeat a task that is done. Send no ack; send a fresh `resume`
    /// (the done task is not in it), which makes the bot drop its current work.
    Resync {
        /// Why, for the log.
        reason: String,
    },
    /// A heartbeat: the bot is alive (every message is, the heartbeat says nothing else).
    Beat,
    /// The bot's own log line; log it under the bot's name.
    Log {
        /// Level given by the bot.
        level: BotLogLevel,
        /// The text.
        msg: String,
    },
    /// The bot's answer to `relog`.
    RelogResult {
        /// Logged in again.
        ok: bool,
        /// Why not.
        reason: Option<String>,
    },
    /// The message was refused and logged; the state is unchanged.
    Rejected {
        /// Why, naming the task or field.
        reason: String,
    },
    /// The bot speaks a protocol this runner cannot: stop it (`shutdown`) and report.
    Incompatible(ProtocolError),
}

/// A bot that cannot be worked with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// The bot's `hello` announced an unsupported protocol major.
    #[error(
        "bot `{bot}` {version} speaks agent protocol {found}, this runner speaks protocol {supported}; {advice}"
    )]
    UnsupportedProtocol {
        /// The bot's name.
        bot: String,
        /// The bot's version.
        version: String,
        /// The protocol it announced.
        found: u32,
        /// The protocol this runner speaks.
        supported: u32,
        /// What to do about it.
        advice: &'static str,
    },
}

/// Levels of the bot's `log` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotLogLevel {
    /// `error`.
    Error,
    /// `warn` / `warning`.
    Warn,
    /// `info` and anything unknown.
    Info,
    /// `debug`.
    Debug,
    /// `trace`.
    Trace,
}

impl BotLogLevel {
    /// Parses a level name (case-insensitive); unknown names are `Info`.
    pub fn parse(level: &str) -> Self {
        match level.to_ascii_lowercase().as_str() {
            "error" | "err" | "critical" | "fatal" => BotLogLevel::Error,
            "warn" | "warning" => BotLogLevel::Warn,
            "debug" => BotLogLevel::Debug,
            "trace" => BotLogLevel::Trace,
            _ => BotLogLevel::Info,
        }
    }

    /// Logs `msg` at this level as a line of the bot named `bot`.
    pub fn emit(self, bot: &str, msg: &str) {
        match self {
            BotLogLevel::Error => tracing::error!(target: "ms11::bot", bot, "{msg}"),
            BotLogLevel::Warn => tracing::warn!(target: "ms11::bot", bot, "{msg}"),
            BotLogLevel::Info => tracing::info!(target: "ms11::bot", bot, "{msg}"),
            BotLogLevel::Debug => tracing::debug!(target: "ms11::bot", bot, "{msg}"),
            BotLogLevel::Trace => tracing::trace!(target: "ms11::bot", bot, "{msg}"),
        }
    }
}

/// What a save covered: take it with [`ExactlyOnce::change_mark`] right before the state
/// is serialised, give it back to [`ExactlyOnce::saved`] when the save succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChangeMark(u64);

/// The bot's `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotHello {
    /// Protocol major.
    pub protocol: u32,
    /// Bot name.
    pub bot: String,
    /// Bot version.
    pub version: String,
}

/// The exactly-once bookkeeping of one bot connection (make a new one per bot process).
#[derive(Debug, Clone, Default)]
pub struct ExactlyOnce {
    changes: u64,
    saved_through: u64,
    hello: Option<BotHello>,
    warned_before_hello: bool,
    /// The last `task_started` with a seq: (id, seq), to recognise a resend.
    last_claim: Option<(String, u64)>,
    /// How large a patch and the whole state may grow.
    limits: StateLimits,
}

impl ExactlyOnce {
    /// Bookkeeping for a newly started bot, with the default size limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bookkeeping for a newly started bot whose patches and tasks must keep the state
    /// within `limits`; what would exceed them is refused ([`Action::Rejected`]) and the
    /// state is unchanged.
    pub fn with_limits(limits: StateLimits) -> Self {
        ExactlyOnce {
            limits,
            ..Self::default()
        }
    }

    /// The `hello` the bot sent, if any.
    pub fn hello(&self) -> Option<&BotHello> {
        self.hello.as_ref()
    }

    /// Whether changes made through [`handle`](Self::handle) are not yet durable.
    pub fn has_unsaved_changes(&self) -> bool {
        self.changes > self.saved_through
    }

    /// The current change count, to pass to [`saved`](Self::saved) after a save.
    pub fn change_mark(&self) -> ChangeMark {
        ChangeMark(self.changes)
    }

    /// A save of the state as it was at `mark` succeeded.
    pub fn saved(&mut self, mark: ChangeMark) {
        self.saved_through = self.saved_through.max(mark.0);
    }

    /// The `resume` for the state: the state and the in-flight task ids as `rerun`.
    pub fn resume(&self, state: &SessionState) -> RunnerMessage {
        RunnerMessage::resume(state)
    }

    /// Applies one bot message to the state (`now` in unix seconds) and says what to do.
    /// Refusals are logged here (`tracing`) and returned as [`Action::Rejected`] or
    /// [`Action::Resync`]; the runner need not log them again.
    pub fn handle(&mut self, state: &mut SessionState, message: &BotMessage, now: f64) -> Action {
        if self.hello.is_none() && !self.warned_before_hello && !is_hello(message) {
            self.warned_before_hello = true;
            tracing::warn!(
                "bot sent `{}` before `hello`; processing it, but a bot should start with hello",
                message.type_name()
            );
        }
        match message {
            BotMessage::Hello {
                protocol,
                bot,
                version,
            } => self.on_hello(*protocol, bot, version),
            BotMessage::State { patch } => match state.apply_patch_within(patch, self.limits) {
                Ok(fields) if fields.is_empty() => Action::None,
                Ok(fields) => {
                    self.changed();
                    Action::StateChanged { fields }
                }
                Err(err) => reject(format!(
                    "state patch refused, state unchanged: {}",
                    patch_reason(&err)
                )),
            },
            BotMessage::TaskAdded { id, name } if self.would_overflow(state, &[id, name]) => {
                reject(format!(
                    "task_added `{}` refused: {}",
                    shorten(id),
                    self.overflow_reason(state, &[id, name])
                ))
            }
            BotMessage::TaskStarted { id, .. }
                if state.task(id).is_none() && self.would_overflow(state, &[id]) =>
            {
                reject(format!(
                    "task_started `{}` refused: {}",
                    shorten(id),
                    self.overflow_reason(state, &[id])
                ))
            }
            BotMessage::TaskAdded { id, name } => match state.add_task(id, name) {
                Ok(()) => {
                    self.changed();
                    Action::Save
                }
                Err(TaskError::Duplicate { id, state }) => {
                    let reason =
                        format!("task_added `{id}` ignored: the task exists already ({state:?})");
                    tracing::info!("{reason}");
                    Action::Rejected { reason }
                }
                Err(err) => reject(format!("task_added refused: {err}")),
            },
            BotMessage::TaskStarted { id, seq } => self.on_started(state, id, *seq, now),
            BotMessage::TaskDone { id, seq } => self.on_done(state, id, *seq, now),
            BotMessage::Heartbeat => Action::Beat,
            BotMessage::Log { level, msg } => Action::Log {
                level: BotLogLevel::parse(level),
                msg: msg.clone(),
            },
            BotMessage::RelogResult { ok, reason } => Action::RelogResult {
                ok: *ok,
                reason: reason.clone(),
            },
        }
    }

    fn on_hello(&mut self, protocol: u32, bot: &str, version: &str) -> Action {
        if protocol != PROTOCOL_VERSION {
            let advice = if protocol > PROTOCOL_VERSION {
                "upgrade ms11-recovery or run a bot release that speaks this protocol"
            } else {
                "upgrade the bot"
            };
            let error = ProtocolError::UnsupportedProtocol {
                bot: bot.to_owned(),
                version: version.to_owned(),
                found: protocol,
                supported: PROTOCOL_VERSION,
                advice,
            };
            tracing::error!("{error}");
            return Action::Incompatible(error);
        }
        if self.hello.is_some() {
            tracing::info!("bot `{bot}` said hello again; sending resume again");
        } else {
            tracing::info!("bot `{bot}` {version} connected (agent protocol {protocol})");
        }
        self.hello = Some(BotHello {
            protocol,
            bot: bot.to_owned(),
            version: version.to_owned(),
        });
        Action::SendResume
    }

    fn on_started(
        &mut self,
        state: &mut SessionState,
        id: &str,
        seq: Option<u64>,
        now: f64,
    ) -> Action {
        let resent_claim = seq.filter(|&seq| {
            self.last_claim.as_ref() == Some(&(id.to_owned(), seq)) && is_in_flight(state, id)
        });
        if let Some(seq) = resent_claim {
            // A resend of the claim we already recorded: do not count another attempt.
            return self.ack_when_durable(seq);
        }
        match state.start_task(id, now) {
            Ok(outcome) => {
                self.changed();
                if outcome.attempt > 1 {
                    tracing::info!("task `{id}` runs again (attempt {})", outcome.attempt);
                }
                match seq {
                    Some(seq) => {
                        self.last_claim = Some((id.to_owned(), seq));
                        Action::SaveThenAck { seq }
                    }
                    None => Action::Save,
                }
            }
            Err(TaskError::AlreadyDone { id, seq: done_seq }) => {
                let reason = format!(
                    "bot started task `{id}`, which is already done (seq {}); it must not run again: \
                     sending resume without it",
                    done_seq.map_or_else(|| "unknown".to_owned(), |s| s.to_string())
                );
                tracing::warn!("{reason}");
                Action::Resync { reason }
            }
            Err(err) => reject(format!("task_started refused: {err}")),
        }
    }

    fn on_done(&mut self, state: &mut SessionState, id: &str, seq: u64, now: f64) -> Action {
        match state.complete_task(id, Some(seq), now) {
            Ok(CompleteOutcome::Completed) => {
                self.changed();
                Action::SaveThenAck { seq }
            }
            Ok(CompleteOutcome::AlreadyDone) => self.ack_when_durable(seq),
            Err(err @ TaskError::Unknown { .. }) => {
                // Never handed out: not acknowledged, not recorded. A fresh `resume` makes
                // the bot drop it (a bot waiting for the ack would otherwise resend forever).
                let reason =
                    format!("task_done refused (seq {seq}): {err}; sending resume without it");
                tracing::warn!("{reason}");
                Action::Resync { reason }
            }
            Err(err) => reject(format!("task_done refused: {err}")),
        }
    }

    fn ack_when_durable(&self, seq: u64) -> Action {
        if self.has_unsaved_changes() {
            Action::SaveThenAck { seq }
        } else {
            Action::Ack { seq }
        }
    }

    fn changed(&mut self) {
        self.changes += 1;
    }

    /// The state's size with a new task of these strings added: the id is saved twice
    /// (ledger and queue), plus the entry's fixed fields.
    fn size_with_task(state: &SessionState, strings: &[&String]) -> u64 {
        const TASK_ENTRY_OVERHEAD: u64 = 256;
        let strings: u64 = strings
            .iter()
            .map(|s| 2 * ms11_state::pretty_json_len(s))
            .sum();
        ms11_state::pretty_json_len(state)
            .saturating_add(strings)
            .saturating_add(TASK_ENTRY_OVERHEAD)
    }

    fn would_overflow(&self, state: &SessionState, strings: &[&String]) -> bool {
        Self::size_with_task(state, strings) > self.limits.max_state_bytes
    }

    fn overflow_reason(&self, state: &SessionState, strings: &[&String]) -> String {
        PatchError::TooLarge {
            what: "the session state",
            bytes: Self::size_with_task(state, strings),
            limit: self.limits.max_state_bytes,
        }
        .to_string()
    }
}

/// An id as quoted in a log line: at most 80 characters.
fn shorten(id: &str) -> String {
    if id.chars().count() <= 80 {
        id.to_owned()
    } else {
        format!("{}...", id.chars().take(80).collect::<String>())
    }
}

fn is_hello(message: &BotMessage) -> bool {
    matches!(message, BotMessage::Hello { .. })
}

fn is_in_flight(state: &SessionState, id: &str) -> bool {
    state
        .task(id)
        .is_some_and(|t| t.state == ms11_state::TaskState::InFlight)
}

fn patch_reason(err: &PatchError) -> String {
    err.to_string()
}

fn reject(reason: String) -> Action {
    tracing::warn!("{reason}");
    Action::Rejected { reason }
}
