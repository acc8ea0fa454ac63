//! Writing runner messages to the bot's stdin: one JSON line each, flushed at once. A bot
//! that is gone (broken pipe) is an error the runner handles, never a panic.

use std::io::{self, Write};

use thiserror::Error;

use crate::message::{ProtocolMessage, RunnerMessage};

/// Why a message could not be delivered to the bot.
#[derive(Debug, Error)]
pub enum WriteError {
    /// The bot closed its stdin or exited (broken pipe).
    #[error("bot `{label}` is gone: its stdin is closed (while sending `{message}`)")]
    BotGone {
        /// The bot's name in logs.
        label: String,
        /// The `type` of the message that was not delivered.
        message: &'static str,
    },
    /// Any other write error.
    #[error("writing `{message}` to the stdin of bot `{label}` failed: {source}")]
    Io {
        /// The bot's name in logs.
        label: String,
        /// The `type` of the message that was not delivered.
        message: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The message could not be serialised (a state with a non-finite number).
    #[error("could not encode `{message}` for bot `{label}`: {source}")]
    Encode {
        /// The bot's name in logs.
        label: String,
        /// The `type` of the message.
        message: &'static str,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
}

impl WriteError {
    /// Whether the bot is gone (no later write can succeed).
    pub fn is_bot_gone(&self) -> bool {
        matches!(self, WriteError::BotGone { .. })
    }
}

/// Sends [`RunnerMessage`]s to the bot.
#[derive(Debug)]
pub struct AgentWriter<W> {
    inner: W,
    label: String,
    sent: u64,
}

impl<W: Write> AgentWriter<W> {
    /// A writer to the bot named `label` (for error messages).
    pub fn new(inner: W, label: impl Into<String>) -> Self {
        AgentWriter {
            inner,
            label: label.into(),
            sent: 0,
        }
    }

    /// Writes one message as one line and flushes it.
    ///
    /// This blocks while the pipe is full (a bot that does not read its stdin); the
    /// runner's stall detection covers a bot that stopped working.
    pub fn send(&mut self, message: &RunnerMessage) -> Result<(), WriteError> {
        let kind = message.type_name();
        let line = message.to_line().map_err(|source| WriteError::Encode {
            label: self.label.clone(),
            message: kind,
            source,
        })?;
        let result = self
            .inner
            .write_all(&line)
            .and_then(|()| self.inner.flush());
        match result {
            Ok(()) => {
                self.sent += 1;
                tracing::debug!(bot = %self.label, "sent `{kind}` ({} bytes)", line.len());
                Ok(())
            }
            Err(e) if is_gone(&e) => Err(WriteError::BotGone {
                label: self.label.clone(),
                message: kind,
            }),
            Err(source) => Err(WriteError::Io {
                label: self.label.clone(),
                message: kind,
                source,
            }),
        }
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The underlying writer (to close the bot's stdin, drop it).
    pub fn into_inner(self) -> W {
        self.inner
    }
}

fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::WriteZero
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn each_message_is_one_flushed_line() {
        let mut writer = AgentWriter::new(Vec::new(), "test");
        writer.send(&RunnerMessage::Ack { seq: 4 }).unwrap();
        writer.send(&RunnerMessage::Shutdown).unwrap();
        assert_eq!(writer.sent(), 2);
        assert_eq!(
            String::from_utf8(writer.into_inner()).unwrap(),
            "{\"type\":\"ack\",\"seq\":4}\n{\"type\":\"shutdown\"}\n"
        );
    }

    #[test]
    fn a_bot_that_exited_is_reported_as_gone() {
        // A real child that exits at once without reading its stdin.
        let Ok(mut child) = Command::new("true").stdin(Stdio::piped()).spawn() else {
            eprintln!("skipped: cannot run `true`");
            return;
        };
        let stdin = child.stdin.take().unwrap();
        child.wait().unwrap();
        let mut writer = AgentWriter::new(stdin, "gone-bot");
        // The first write may land in the pipe buffer only if the reader still existed;
        // after the child is reaped the read end is closed, so writes fail.
        let err = writer.send(&RunnerMessage::Pause).unwrap_err();
        assert!(err.is_bot_gone(), "{err}");
        assert_eq!(
            err.to_string(),
            "bot `gone-bot` is gone: its stdin is closed (while sending `pause`)"
        );
    }
}
