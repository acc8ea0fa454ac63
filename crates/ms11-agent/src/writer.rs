//! Writing runner messages to the bot's stdin: one JSON line each, flushed at once. A bot
//! that is gone (broken pipe) is an error the runner handles, never a panic.

use std::io::{self, Write};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
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

/// Why [`BotWriter::send`] could not queue a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueueError {
    /// The queue is full: the bot has not read its stdin for a while (hung or stuck).
    #[error("bot `{label}` is not reading its stdin: {capacity} messages are waiting")]
    Full {
        /// The bot's name in logs.
        label: String,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The writer thread stopped (the bot is gone; the reason is on `errors`).
    #[error("bot `{label}` is gone: its stdin is closed")]
    Gone {
        /// The bot's name in logs.
        label: String,
    },
}

/// A writer on its own thread, so the runner's event loop never blocks on a bot that
/// does not read its stdin. Messages are written in order; the first write error ends
/// the thread and is reported on [`errors`](Self::errors).
#[derive(Debug)]
pub struct BotWriter {
    queue: Sender<RunnerMessage>,
    errors: Receiver<WriteError>,
    label: String,
    capacity: usize,
    thread: JoinHandle<u64>,
}

impl BotWriter {
    /// Queues a message without blocking.
    pub fn send(&self, message: RunnerMessage) -> Result<(), QueueError> {
        self.queue.try_send(message).map_err(|e| match e {
            TrySendError::Full(_) => QueueError::Full {
                label: self.label.clone(),
                capacity: self.capacity,
            },
            TrySendError::Disconnected(_) => QueueError::Gone {
                label: self.label.clone(),
            },
        })
    }

    /// Write errors (at most one: the thread stops after it). Select on it with the
    /// reader's events.
    pub fn errors(&self) -> &Receiver<WriteError> {
        &self.errors
    }

    /// Writes what is queued, closes the bot's stdin and returns the number of messages
    /// written. Blocks until the queue is written or the write fails.
    pub fn close(self) -> u64 {
        drop(self.queue);
        self.thread.join().unwrap_or(0)
    }
}

/// Starts the writer thread for the bot's stdin, with a queue of `capacity` messages.
pub fn spawn_writer<W: Write + Send + 'static>(
    stdin: W,
    label: impl Into<String>,
    capacity: usize,
) -> io::Result<BotWriter> {
    let label = label.into();
    let capacity = capacity.max(1);
    let (queue, messages) = crossbeam_channel::bounded::<RunnerMessage>(capacity);
    let (error_tx, errors) = crossbeam_channel::bounded(1);
    let mut writer = AgentWriter::new(stdin, label.clone());
    let thread = std::thread::Builder::new()
        .name(format!("bot-writer-{label}"))
        .spawn(move || {
            for message in messages.iter() {
                if let Err(e) = writer.send(&message) {
                    // Capacity 1 and only one error is ever sent: this cannot block.
                    let _ = error_tx.send(e);
                    break;
                }
            }
            writer.sent()
        })?;
    Ok(BotWriter {
        queue,
        errors,
        label,
        capacity,
        thread,
    })
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
    fn the_thread_writer_never_blocks_on_a_bot_that_does_not_read() {
        // A real child that never reads its stdin: the pipe fills, then the queue.
        // `sleep`, `cat` and `true` are on every machine the tests run on: a failure
        // to start them is a failure, not a skip.
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::piped())
            .spawn()
            .expect("running `sleep`");
        let stdin = child.stdin.take().unwrap();
        let writer = spawn_writer(stdin, "stuck-bot", 8).unwrap();
        let big = RunnerMessage::Resume {
            state: Box::new(ms11_state::SessionState::new("s", "naboo", "theed", 1.0)),
            rerun: vec!["x".repeat(10_000)],
        };
        let mut full = None;
        for _ in 0..1000 {
            if let Err(e) = writer.send(big.clone()) {
                full = Some(e);
                break;
            }
        }
        assert_eq!(
            full,
            Some(QueueError::Full {
                label: "stuck-bot".into(),
                capacity: 8
            })
        );
        // The bot dies: the blocked write fails, the error is reported, sends say gone.
        child.kill().unwrap();
        child.wait().unwrap();
        let err = writer
            .errors()
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        assert!(err.is_bot_gone(), "{err}");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match writer.send(RunnerMessage::Relog) {
                Err(QueueError::Gone { .. }) => break,
                _ => assert!(std::time::Instant::now() < until, "never reported gone"),
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // How many fit into the pipe depends on its size (4 KiB under pipe quotas).
        writer.close();
    }

    #[test]
    fn the_thread_writer_writes_in_order_and_closes_stdin() {
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running `cat`");
        let writer = spawn_writer(child.stdin.take().unwrap(), "cat", 4).unwrap();
        writer.send(RunnerMessage::Ack { seq: 1 }).unwrap();
        writer.send(RunnerMessage::Shutdown).unwrap();
        assert_eq!(writer.close(), 2);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "{\"type\":\"ack\",\"seq\":1}\n{\"type\":\"shutdown\"}\n"
        );
    }

    #[test]
    fn a_bot_that_exited_is_reported_as_gone() {
        // A real child that exits at once without reading its stdin.
        let mut child = Command::new("true")
            .stdin(Stdio::piped())
            .spawn()
            .expect("running `true`");
        let stdin = child.stdin.take().unwrap();
        child.wait().unwrap();
        let mut writer = AgentWriter::new(stdin, "gone-bot");
        // The first write may land in the pipe buffer only if the reader still existed;
        // after the child is reaped the read end is closed, so writes fail.
        let err = writer.send(&RunnerMessage::Relog).unwrap_err();
        assert!(err.is_bot_gone(), "{err}");
        assert_eq!(
            err.to_string(),
            "bot `gone-bot` is gone: its stdin is closed (while sending `relog`)"
        );
    }
}
