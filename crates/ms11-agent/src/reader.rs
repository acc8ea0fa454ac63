//! Reading the bot's stdout: a line reader with a hard maximum line length, and a thread
//! that decodes each line and sends the protocol events on a bounded crossbeam channel.
//! Non-protocol output is logged (rate-limited) on the thread itself, so a flood of output
//! never reaches the runner's event loop and never grows memory.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::decode::{Decoded, decode_bot_line};
use crate::message::BotMessage;
use crate::output_log::{OutputLimiter, OutputLimits, OutputNote, emit, group_thousands};

/// Default longest line (1 MiB); longer lines are cut.
pub const DEFAULT_MAX_LINE_LEN: usize = 1 << 20;

/// One line read by [`LineReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    /// The line without its `\n`, at most `max_line_len` bytes.
    pub bytes: Vec<u8>,
    /// The length the line really had (without `\n`); larger than `bytes.len()` when
    /// the line was cut.
    pub full_len: u64,
}

impl RawLine {
    /// Whether the line was longer than the limit and was cut.
    pub fn is_cut(&self) -> bool {
        self.full_len > self.bytes.len() as u64
    }
}

/// Splits a byte stream into lines, holding at most `max_line_len` bytes of a line in
/// memory; the rest of a longer line is skipped (and counted in `full_len`).
#[derive(Debug)]
pub struct LineReader<R> {
    inner: BufReader<R>,
    max_line_len: usize,
}

impl<R: Read> LineReader<R> {
    /// A reader cutting lines at `max_line_len` bytes (at least 1).
    pub fn new(inner: R, max_line_len: usize) -> Self {
        LineReader {
            inner: BufReader::with_capacity(64 * 1024, inner),
            max_line_len: max_line_len.max(1),
        }
    }

    /// The next line; `None` at end of stream. A last line without `\n` is returned too.
    pub fn next_line(&mut self) -> io::Result<Option<RawLine>> {
        let mut bytes = Vec::new();
        let mut full_len: u64 = 0;
        let mut saw_any = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(saw_any.then_some(RawLine { bytes, full_len }));
            }
            saw_any = true;
            let (chunk, found_newline) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], true),
                None => (available, false),
            };
            let room = self.max_line_len.saturating_sub(bytes.len());
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            full_len = full_len.saturating_add(chunk.len() as u64);
            let used = chunk.len() + usize::from(found_newline);
            self.inner.consume(used);
            if found_newline {
                return Ok(Some(RawLine { bytes, full_len }));
            }
        }
    }
}

/// Settings of the reader thread.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// Name of the bot in logs (the session name).
    pub label: String,
    /// Longest line kept; longer ones are cut and never decoded.
    pub max_line_len: usize,
    /// Capacity of the event channel; when it is full the thread stops reading, and the
    /// bot blocks on its writes (back-pressure instead of unbounded buffering).
    pub channel_capacity: usize,
    /// Rate limits of the non-protocol output in the log.
    pub output: OutputLimits,
}

impl ReaderConfig {
    /// The defaults (1 MiB lines, 1024 events, 20 output lines per 10 s) for a bot.
    pub fn new(label: impl Into<String>) -> Self {
        ReaderConfig {
            label: label.into(),
            max_line_len: DEFAULT_MAX_LINE_LEN,
            channel_capacity: 1024,
            output: OutputLimits::default(),
        }
    }
}

/// What the reader thread reports.
#[derive(Debug, Clone, PartialEq)]
pub enum BotEvent {
    /// A protocol message to act on.
    Message(BotMessage),
    /// A line that looked like protocol but was ignored (already logged by the reader).
    Ignored(Ignored),
    /// The bot's stdout is closed (the bot exited or closed it) or unreadable. Last event.
    Closed(ReaderSummary),
}

/// A protocol line that was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// A `type` this version does not know.
    UnknownType(String),
    /// A known `type` with bad fields.
    Malformed {
        /// The `type`.
        type_name: String,
        /// What is wrong, naming the field.
        error: String,
    },
}

/// Counts over the whole life of the reader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReaderSummary {
    /// Lines read.
    pub lines: u64,
    /// Protocol messages sent on the channel.
    pub messages: u64,
    /// Lines of ordinary (non-protocol) output.
    pub output_lines: u64,
    /// Lines longer than the limit (cut, not decoded).
    pub cut_lines: u64,
    /// Protocol lines ignored (unknown type or bad fields).
    pub ignored: u64,
    /// The read error that ended reading, if it was not a clean end of stream.
    pub error: Option<String>,
}

/// The running reader thread.
#[derive(Debug)]
pub struct BotReader {
    /// Protocol events, ending with [`BotEvent::Closed`].
    pub events: Receiver<BotEvent>,
    output: Arc<Mutex<OutputLimiter>>,
    thread: JoinHandle<()>,
}

impl BotReader {
    /// The bot's most recent non-protocol output lines (for incident evidence).
    pub fn recent_output(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tail()
    }

    /// Waits for the thread to end (after it sent `Closed`, or when the receiver is
    /// gone). Returns false if it panicked.
    pub fn join(self) -> bool {
        self.thread.join().is_ok()
    }
}

/// Starts a thread that reads the bot's stdout (`stream`) until end of stream.
pub fn spawn_reader<R: Read + Send + 'static>(
    stream: R,
    config: ReaderConfig,
) -> io::Result<BotReader> {
    spawn(stream, config, Mode::Protocol)
}

/// Starts a thread that logs a stream that carries no protocol (the bot's stderr) as the
/// bot's output, with the same line limit and rate limits. Its only event is `Closed`.
pub fn spawn_output_reader<R: Read + Send + 'static>(
    stream: R,
    config: ReaderConfig,
) -> io::Result<BotReader> {
    spawn(stream, config, Mode::OutputOnly)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Protocol,
    OutputOnly,
}

fn spawn<R: Read + Send + 'static>(
    stream: R,
    config: ReaderConfig,
    mode: Mode,
) -> io::Result<BotReader> {
    let (tx, rx) = crossbeam_channel::bounded(config.channel_capacity.max(1));
    let output = Arc::new(Mutex::new(OutputLimiter::new(config.output)));
    let shared = Arc::clone(&output);
    let thread = std::thread::Builder::new()
        .name(format!("bot-reader-{}", config.label))
        .spawn(move || read_loop(stream, &config, mode, &tx, &shared))?;
    Ok(BotReader {
        events: rx,
        output,
        thread,
    })
}

/// Remembers which unknown types were already logged (bounded).
const MAX_REMEMBERED_TYPES: usize = 64;

fn read_loop<R: Read>(
    stream: R,
    config: &ReaderConfig,
    mode: Mode,
    tx: &Sender<BotEvent>,
    output: &Mutex<OutputLimiter>,
) {
    let label = config.label.as_str();
    let mut reader = LineReader::new(stream, config.max_line_len);
    let mut problems = OutputLimiter::new(config.output).with_noun("ignored protocol lines");
    let mut seen_types = BTreeSet::new();
    let mut summary = ReaderSummary::default();
    let log_output = |now: Instant, line: &str| {
        let notes = output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(now, line);
        for note in &notes {
            emit(label, note);
        }
    };
    loop {
        let line = match reader.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(bot = label, "reading the bot's stdout failed: {e}");
                summary.error = Some(e.to_string());
                break;
            }
        };
        summary.lines += 1;
        let now = Instant::now();
        if line.is_cut() {
            summary.cut_lines += 1;
            if summary.cut_lines == 1 {
                tracing::warn!(
                    bot = label,
                    "bot wrote a line of {} bytes, longer than the limit of {} bytes: it is cut \
                     and not decoded; further long lines are only counted",
                    group_thousands(line.full_len),
                    group_thousands(config.max_line_len as u64)
                );
            }
            summary.output_lines += 1;
            log_output(now, &String::from_utf8_lossy(&line.bytes));
            continue;
        }
        if mode == Mode::OutputOnly {
            summary.output_lines += 1;
            log_output(now, &String::from_utf8_lossy(&line.bytes));
            continue;
        }
        let event = match decode_bot_line(&line.bytes) {
            Decoded::Message(message) => {
                summary.messages += 1;
                BotEvent::Message(message)
            }
            Decoded::NotProtocol(text) => {
                summary.output_lines += 1;
                log_output(now, &text);
                continue;
            }
            Decoded::UnknownType(name) => {
                summary.ignored += 1;
                if seen_types.len() < MAX_REMEMBERED_TYPES && seen_types.insert(name.clone()) {
                    tracing::info!(
                        bot = label,
                        "ignoring message type `{name}`, unknown to this runner (protocol {})",
                        crate::PROTOCOL_VERSION
                    );
                }
                BotEvent::Ignored(Ignored::UnknownType(name))
            }
            Decoded::Malformed { type_name, error } => {
                summary.ignored += 1;
                let text = format!("ignoring a malformed `{type_name}` message: {error}");
                for note in problems.observe(now, &text) {
                    match note {
                        OutputNote::Line(line) => tracing::warn!(bot = label, "{line}"),
                        other => tracing::warn!(bot = label, "{}", other.message()),
                    }
                }
                BotEvent::Ignored(Ignored::Malformed { type_name, error })
            }
        };
        if tx.send(event).is_err() {
            // The runner dropped the receiver: nobody listens any more.
            return;
        }
    }
    let mut output = output.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(note) = output.finish_window() {
        emit(label, &note);
    }
    drop(output);
    if let Some(note) = problems.finish_window() {
        tracing::warn!(bot = label, "{}", note.message());
    }
    if summary.cut_lines > 1 {
        tracing::warn!(
            bot = label,
            "bot wrote {} lines longer than {} bytes (cut, not decoded)",
            group_thousands(summary.cut_lines),
            group_thousands(config.max_line_len as u64)
        );
    }
    // The receiver may already be gone; then nobody needs the summary.
    let _ = tx.send(BotEvent::Closed(summary));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<RawLine> {
        let mut reader = LineReader::new(input, max);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            out.push(line);
        }
        out
    }

    #[test]
    fn lines_are_split_and_a_last_line_without_newline_is_kept() {
        let got = lines(b"a\n\nbc\nlast", 10);
        let texts: Vec<_> = got.iter().map(|l| l.bytes.as_slice()).collect();
        assert_eq!(texts, [&b"a"[..], b"", b"bc", b"last"]);
        assert!(got.iter().all(|l| !l.is_cut()));
        assert!(lines(b"", 10).is_empty());
    }

    #[test]
    fn long_lines_are_cut_and_the_next_line_is_intact() {
        let mut input = vec![b'x'; 100_000];
        input.extend_from_slice(b"\nnext\n");
        let got = lines(&input, 1000);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].bytes.len(), 1000);
        assert_eq!(got[0].full_len, 100_000);
        assert!(got[0].is_cut());
        assert_eq!(got[1].bytes, b"next");
    }

    #[test]
    fn an_output_reader_never_decodes() {
        let input = b"{\"type\":\"heartbeat\"}\nTraceback (most recent call last):\n".to_vec();
        let reader =
            spawn_output_reader(std::io::Cursor::new(input), ReaderConfig::new("t")).unwrap();
        let events: Vec<_> = reader.events.iter().collect();
        assert!(
            matches!(&events[..], [BotEvent::Closed(s)] if s.output_lines == 2 && s.messages == 0)
        );
        assert_eq!(
            reader.recent_output()[1],
            "Traceback (most recent call last):"
        );
    }

    #[test]
    fn the_thread_sends_messages_and_closed_with_counts() {
        let mut input = Vec::new();
        input.extend_from_slice(b"{\"type\":\"hello\",\"protocol\":1}\n");
        for i in 0..500 {
            input.extend_from_slice(format!("noise {i}\n").as_bytes());
        }
        input.extend_from_slice(b"{\"type\":\"warp\"}\n{\"type\":\"task_done\",\"id\":\"a\"}\n");
        input.extend_from_slice(&vec![b'{'; 3000]);
        input.extend_from_slice(b"\n{\"type\":\"heartbeat\"}");
        let mut config = ReaderConfig::new("test");
        config.max_line_len = 2048;
        let reader = spawn_reader(std::io::Cursor::new(input), config).unwrap();
        let events: Vec<_> = reader.events.iter().collect();
        assert!(matches!(
            events[0],
            BotEvent::Message(BotMessage::Hello { protocol: 1, .. })
        ));
        assert_eq!(
            events[1],
            BotEvent::Ignored(Ignored::UnknownType("warp".into()))
        );
        assert!(
            matches!(&events[2], BotEvent::Ignored(Ignored::Malformed { type_name, .. }) if type_name == "task_done")
        );
        assert_eq!(events[3], BotEvent::Message(BotMessage::Heartbeat));
        assert_eq!(
            events[4],
            BotEvent::Closed(ReaderSummary {
                lines: 505,
                messages: 2,
                output_lines: 501,
                cut_lines: 1,
                ignored: 2,
                error: None
            })
        );
        assert_eq!(events.len(), 5);
        let tail = reader.recent_output();
        assert_eq!(tail.len(), 50);
        assert_eq!(tail[0], "noise 451");
        assert!(tail[49].starts_with("{{{{"));
        assert!(reader.join());
    }
}
