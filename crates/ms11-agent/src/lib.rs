//! The agent protocol between the runner and the bot, and nothing else.
//!
//! The bot speaks JSON Lines on its stdin/stdout (`docs/agent-protocol.md`). This crate
//! has the message types ([`BotMessage`], [`RunnerMessage`]) and their wire form, a
//! decoder that never fails ([`decode_bot_line`] → [`Decoded`]), a reader thread with a
//! hard line-length limit that sends [`BotEvent`]s on a bounded crossbeam channel
//! ([`spawn_reader`]) and logs the bot's ordinary output rate-limited
//! ([`OutputLimiter`]), a writer that reports a vanished bot as an error
//! ([`AgentWriter`]), and the exactly-once rules as pure logic ([`ExactlyOnce`] →
//! [`Action`]): a `task_done` is saved durably before it is acknowledged.
//!
//! Wiring in the runner, per bot process:
//! ```text
//! let reader = spawn_reader(child_stdout, ReaderConfig::new(session))?;
//! let _stderr = spawn_output_reader(child_stderr, ReaderConfig::new(session))?;
//! let writer = spawn_writer(child_stdin, session, 64)?;   // never blocks the loop
//! let mut rules = ExactlyOnce::new();
//! loop { select! {
//!   recv(reader.events) -> event => match event {
//!     BotEvent::Message(msg) => match rules.handle(&mut state, &msg, unix_now()) {
//!       Action::SaveThenAck { seq } => {
//!         let mark = rules.change_mark();
//!         if store.save(&mut state).is_ok() {         // durable first
//!           rules.saved(mark);
//!           writer.send(RunnerMessage::Ack { seq })?;
//!         }                                            // else no ack: the bot resends
//!       }
//!       Action::Ack { seq } => writer.send(RunnerMessage::Ack { seq })?,
//!       Action::Save => { /* checkpoint: save now, then rules.saved(mark) */ }
//!       Action::SendResume | Action::Resync { .. } => writer.send(rules.resume(&state))?,
//!       Action::Incompatible(err) => { writer.send(RunnerMessage::Shutdown)?; /* report */ }
//!       Action::Log { level, msg } => level.emit(session, &msg),
//!       ...                                            // Beat, RelogResult, StateChanged
//!     },
//!     BotEvent::Ignored(_) => {}                       // already logged
//!     BotEvent::Closed(_) => { /* the bot's stdout closed: wait for its exit */ }
//!   },
//!   recv(writer.errors()) -> err => { /* the bot is gone */ }
//! }}
//! ```

mod decode;
mod exactly_once;
mod message;
mod output_log;
mod reader;
mod writer;

pub use decode::{Decoded, decode_bot_line, decode_line};
pub use exactly_once::{Action, BotHello, BotLogLevel, ChangeMark, ExactlyOnce, ProtocolError};
pub use message::{
    BOT_MESSAGE_TYPES, BotMessage, FieldKind, FieldSpec, PROTOCOL_VERSION, ProtocolMessage,
    RUNNER_MESSAGE_TYPES, RunnerMessage,
};
pub use output_log::{
    MAX_SHOWN_LINE_BYTES, OutputLimiter, OutputLimits, OutputNote, emit as emit_output_note,
    group_thousands,
};
pub use reader::{
    BotEvent, BotReader, DEFAULT_MAX_LINE_LEN, Ignored, LineReader, RawLine, ReaderConfig,
    ReaderSummary, spawn_output_reader, spawn_reader,
};
pub use writer::{AgentWriter, BotWriter, QueueError, WriteError, spawn_writer};
