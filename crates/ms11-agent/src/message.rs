//! The messages of the agent protocol, bot → runner and runner → bot, and their wire form
//! (one JSON object per line with a `"type"` field).

use ms11_state::SessionState;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol major version this crate speaks. A bot announcing a newer major is
/// refused with a clear error; additions within a major are forward compatible
/// (unknown fields and unknown types are ignored).
pub const PROTOCOL_VERSION: u32 = 1;

/// A message from the bot to the runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BotMessage {
    /// First message of a bot: who it is and which protocol major it speaks.
    Hello {
        /// Protocol major version (`1`).
        #[serde(alias = "protocol_version")]
        protocol: u32,
        /// Name of the bot (`ms11`).
        #[serde(default)]
        bot: String,
        /// Version of the bot.
        #[serde(default)]
        version: String,
    },
    /// Top-level session state fields changed (`planet`, `zone`, `xp_current`, ...).
    State {
        /// Field name → new value.
        patch: Map<String, Value>,
    },
    /// The bot adds a task to the end of the queue.
    TaskAdded {
        /// Stable task id.
        id: String,
        /// Human-readable name.
        #[serde(default)]
        name: String,
    },
    /// The bot starts (or re-runs) a task.
    TaskStarted {
        /// Task id.
        id: String,
        /// Optional: when present the bot waits for `ack{seq}` before it acts, so the
        /// runner records the task in flight durably first (a crash then always
        /// reports it as a re-run).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// The bot finished a task and waits for `ack{seq}` before its next task.
    TaskDone {
        /// Task id.
        id: String,
        /// The bot's own increasing counter.
        seq: u64,
    },
    /// The bot is alive.
    Heartbeat,
    /// A log line of the bot, logged by the runner under the bot's name.
    Log {
        /// `error`, `warn`, `info`, `debug` or `trace` (anything else counts as `info`).
        #[serde(default = "default_level")]
        level: String,
        /// The text.
        msg: String,
    },
    /// Answer to the runner's `relog`.
    RelogResult {
        /// Whether the character is logged in again.
        ok: bool,
        /// Why not (or a note).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

fn default_level() -> String {
    "info".to_owned()
}

/// A message from the runner to the bot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunnerMessage {
    /// Start (or restart) working from this state: first the `rerun` tasks, verifying
    /// whether their effect already happened, then `state.task_queue` in order.
    Resume {
        /// The whole session state (boxed: it is much larger than the other messages).
        state: Box<SessionState>,
        /// Tasks that were in flight when the session stopped.
        rerun: Vec<String>,
    },
    /// The message with this `seq` is durably recorded.
    Ack {
        /// The bot's `seq`.
        seq: u64,
    },
    /// Log the character in again; answer with `relog_result`.
    Relog,
    /// Stop and exit 0.
    Shutdown,
    /// A message of the bot was refused and changed nothing (a patch or task over the
    /// size limits, an invalid field, a duplicate task). Bots that do not know this type
    /// ignore it.
    Rejected {
        /// The `type` of the refused message (`state`, `task_added`, ...).
        of: String,
        /// Why, naming the field or task.
        reason: String,
    },
}

/// Names of the `type`s of [`BotMessage`].
pub const BOT_MESSAGE_TYPES: &[&str] = &[
    "hello",
    "state",
    "task_added",
    "task_started",
    "task_done",
    "heartbeat",
    "log",
    "relog_result",
];

/// Names of the `type`s of [`RunnerMessage`].
pub const RUNNER_MESSAGE_TYPES: &[&str] = &["resume", "ack", "relog", "shutdown", "rejected"];

/// The JSON kind a field must have (used to name the field in decode errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A string.
    String,
    /// A non-negative integer.
    Unsigned,
    /// `true`/`false`.
    Bool,
    /// An object.
    Object,
    /// An array of strings.
    StringArray,
}

impl FieldKind {
    /// Whether `value` has this kind.
    pub fn matches(self, value: &Value) -> bool {
        match self {
            FieldKind::String => value.is_string(),
            FieldKind::Unsigned => value.is_u64(),
            FieldKind::Bool => value.is_boolean(),
            FieldKind::Object => value.is_object(),
            FieldKind::StringArray => value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string)),
        }
    }

    /// Description for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            FieldKind::String => "a string",
            FieldKind::Unsigned => "a non-negative integer",
            FieldKind::Bool => "true or false",
            FieldKind::Object => "an object",
            FieldKind::StringArray => "an array of strings",
        }
    }
}

/// A field of a message type: (type, field, kind, required).
pub type FieldSpec = (&'static str, &'static str, FieldKind, bool);

/// A message type of the protocol, one direction.
pub trait ProtocolMessage: Serialize + for<'de> Deserialize<'de> {
    /// The `type` values this direction knows.
    const TYPES: &'static [&'static str];

    /// The fields of every type, checked before decoding so errors name the field.
    const FIELDS: &'static [FieldSpec];

    /// The `type` of this message.
    fn type_name(&self) -> &'static str;

    /// The wire form: one JSON object, `\n`-terminated.
    fn to_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut line = serde_json::to_vec(self)?;
        line.push(b'\n');
        Ok(line)
    }
}

impl ProtocolMessage for BotMessage {
    const TYPES: &'static [&'static str] = BOT_MESSAGE_TYPES;
    const FIELDS: &'static [FieldSpec] = &[
        ("hello", "protocol", FieldKind::Unsigned, false),
        ("hello", "protocol_version", FieldKind::Unsigned, false),
        ("hello", "bot", FieldKind::String, false),
        ("hello", "version", FieldKind::String, false),
        ("state", "patch", FieldKind::Object, true),
        ("task_added", "id", FieldKind::String, true),
        ("task_added", "name", FieldKind::String, false),
        ("task_started", "id", FieldKind::String, true),
        ("task_started", "seq", FieldKind::Unsigned, false),
        ("task_done", "id", FieldKind::String, true),
        ("task_done", "seq", FieldKind::Unsigned, true),
        ("log", "level", FieldKind::String, false),
        ("log", "msg", FieldKind::String, true),
        ("relog_result", "ok", FieldKind::Bool, true),
        ("relog_result", "reason", FieldKind::String, false),
    ];

    fn type_name(&self) -> &'static str {
        match self {
            BotMessage::Hello { .. } => "hello",
            BotMessage::State { .. } => "state",
            BotMessage::TaskAdded { .. } => "task_added",
            BotMessage::TaskStarted { .. } => "task_started",
            BotMessage::TaskDone { .. } => "task_done",
            BotMessage::Heartbeat => "heartbeat",
            BotMessage::Log { .. } => "log",
            BotMessage::RelogResult { .. } => "relog_result",
        }
    }
}

impl ProtocolMessage for RunnerMessage {
    const TYPES: &'static [&'static str] = RUNNER_MESSAGE_TYPES;
    const FIELDS: &'static [FieldSpec] = &[
        ("resume", "state", FieldKind::Object, true),
        ("resume", "rerun", FieldKind::StringArray, true),
        ("ack", "seq", FieldKind::Unsigned, true),
    ];

    fn type_name(&self) -> &'static str {
        match self {
            RunnerMessage::Resume { .. } => "resume",
            RunnerMessage::Ack { .. } => "ack",
            RunnerMessage::Relog => "relog",
            RunnerMessage::Shutdown => "shutdown",
            RunnerMessage::Rejected { .. } => "rejected",
        }
    }
}

impl RunnerMessage {
    /// The `resume` for a state: the state itself and, as `rerun`, the ids of the tasks
    /// that are in flight in it (in ledger order).
    pub fn resume(state: &SessionState) -> RunnerMessage {
        RunnerMessage::Resume {
            rerun: state.in_flight_tasks().map(|t| t.id.clone()).collect(),
            state: Box::new(state.clone()),
        }
    }
}
