//! Follows a log file the way `tail -F` does and hands out complete lines.
//!
//! [`FileTail`] is the synchronous core (one `poll` reads whatever is new); [`spawn_follower`]
//! runs it on a thread woken by file notifications on the file's directory (inotify through
//! `notify`), with a timer as polling fallback when notification is unavailable.
//!
//! Handled: the file missing at start (read from 0 when it appears), rename rotation and
//! delete + recreate (the old file is drained, then the new one is read from 0),
//! copy-truncate (size below the read offset: read again from 0), partial lines (only
//! complete lines are handed out; an unterminated final line is flushed after a quiet
//! period), over-long lines (cut at `max_line_bytes`, counted, reported once; the rest of
//! the line is skipped, memory stays bounded). Bytes are handed out as they are: invalid
//! UTF-8 is the matcher's business (it decodes lossily).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use ms11_state::LogCursor;
use notify::Watcher;

use crate::error::DetectError;
use crate::handle::DetectorHandle;
use crate::patterns::{LogPatternConfig, StartAt};

/// Bytes read from the file per `poll` before the follower checks for a stop request.
const MAX_BYTES_PER_POLL: u64 = 16 << 20;
const READ_BUF: usize = 64 << 10;

/// How a follower behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowSettings {
    /// Longer lines are cut to this many bytes.
    pub max_line_bytes: usize,
    /// An unterminated final line is handed out after this quiet time.
    pub partial_line_flush: Duration,
    /// Timer interval when notification is unavailable (8x this as a safety re-check
    /// when it is).
    pub poll_interval: Duration,
    /// Where to start in a file present at start without a matching cursor.
    pub start_at: StartAt,
}

impl From<&LogPatternConfig> for FollowSettings {
    fn from(c: &LogPatternConfig) -> Self {
        FollowSettings {
            max_line_bytes: c.max_line_bytes.max(1),
            partial_line_flush: Duration::from_millis(c.partial_line_flush_ms),
            poll_interval: Duration::from_millis(c.poll_interval_ms.max(1)),
            start_at: c.start_at,
        }
    }
}

/// Counters of one follower, shared with its handle.
#[derive(Debug, Default)]
pub struct FollowStats {
    /// Bytes read from files.
    pub bytes_read: AtomicU64,
    /// Lines cut at `max_line_bytes`.
    pub cut_lines: AtomicU64,
    /// Files switched to (appearance, rotation, recreation).
    pub files_opened: AtomicU64,
    /// Truncations seen (copy-truncate).
    pub truncations: AtomicU64,
    /// Times the follower thread woke up and looked at the file (idle cost check).
    pub wakeups: AtomicU64,
}

/// The follower's current position, shared between its thread and the runner (which
/// persists it into `RuntimeState::log_cursors`).
#[derive(Debug, Clone, Default)]
pub struct CursorCell(Arc<Mutex<Option<LogCursor>>>);

impl CursorCell {
    /// The position of the first byte not yet handed out (a line start), or `None`
    /// while no file has been opened.
    pub fn get(&self) -> Option<LogCursor> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, cursor: Option<LogCursor>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = cursor;
    }
}

#[cfg(unix)]
fn file_ident(md: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (md.dev(), md.ino())
}

#[cfg(not(unix))]
fn file_ident(md: &std::fs::Metadata) -> (u64, u64) {
    // No stable inode on this platform: the creation time stands in for the identity.
    let created = md
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    (0, created)
}

/// The synchronous `tail -F` core.
#[derive(Debug)]
pub struct FileTail {
    path: PathBuf,
    settings: FollowSettings,
    file: Option<File>,
    ident: Option<(u64, u64)>,
    read_offset: u64,
    partial: Vec<u8>,
    discarding: bool,
    last_data: Instant,
    resume: Option<LogCursor>,
    opened_once: bool,
    cut_reported: bool,
    stats: Arc<FollowStats>,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl FileTail {
    /// Opens `path` if it exists and positions the reader: at `resume`'s offset if it
    /// names this file (same device and inode), at 0 if it names another file (the log
    /// was rotated while nobody read it), else per `settings.start_at`. A file that
    /// appears later is read from 0.
    pub fn new(path: &Path, settings: FollowSettings, resume: Option<LogCursor>) -> Self {
        let mut tail = FileTail {
            path: path.to_path_buf(),
            settings,
            file: None,
            ident: None,
            read_offset: 0,
            partial: Vec::new(),
            discarding: false,
            last_data: Instant::now(),
            resume,
            opened_once: false,
            cut_reported: false,
            stats: Arc::new(FollowStats::default()),
            buf: vec![0; READ_BUF],
            out: Vec::new(),
        };
        if let Err(err) = tail.open_current(true) {
            tracing::debug!(path = %tail.path.display(), %err, "log file not readable yet");
        }
        tail
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Shared counters.
    pub fn stats(&self) -> Arc<FollowStats> {
        Arc::clone(&self.stats)
    }

    /// Position of the first byte not yet handed out, or `None` before any file was opened.
    pub fn cursor(&self) -> Option<LogCursor> {
        let (dev, inode) = self.ident?;
        let offset = if self.discarding {
            self.read_offset
        } else {
            self.read_offset - self.partial.len() as u64
        };
        Some(LogCursor { dev, inode, offset })
    }

    /// Whether an unterminated line is waiting for its newline (or the quiet period).
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// When the pending partial line is due to be flushed.
    pub fn partial_deadline(&self) -> Option<Instant> {
        self.has_partial()
            .then(|| self.last_data + self.settings.partial_line_flush)
    }

    fn open_current(&mut self, at_start: bool) -> io::Result<()> {
        let mut file = File::open(&self.path)?;
        let md = file.metadata()?;
        let ident = file_ident(&md);
        let len = md.len();
        let offset = if self.opened_once {
            0
        } else {
            match self.resume.take() {
                Some(c) if (c.dev, c.inode) == ident && c.offset <= len => c.offset,
                Some(_) => 0,
                None if at_start && self.settings.start_at == StartAt::End => len,
                None => 0,
            }
        };
        file.seek(SeekFrom::Start(offset))?;
        self.opened_once = true;
        self.file = Some(file);
        self.ident = Some(ident);
        self.read_offset = offset;
        self.partial.clear();
        self.discarding = false;
        self.stats.files_opened.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(path = %self.path.display(), offset, "following log file");
        Ok(())
    }

    /// Reads what is new and calls `sink` with chunks of complete lines (each ending in
    /// `\n`). Returns `true` when it stopped early with more to read.
    pub fn poll(&mut self, now: Instant, sink: &mut dyn FnMut(&[u8])) -> bool {
        let mut budget = MAX_BYTES_PER_POLL;
        if self.drain_open(&mut budget, now, sink) {
            return true;
        }
        match std::fs::metadata(&self.path) {
            Ok(md) => {
                let ident = file_ident(&md);
                if self.ident != Some(ident) || self.file.is_none() {
                    // A new file at the path: appearance, rotation or recreation. The
                    // old one was drained above; its unterminated last line is complete.
                    self.flush_partial(sink);
                    match self.open_current(false) {
                        Ok(()) => {
                            if self.drain_open(&mut budget, now, sink) {
                                return true;
                            }
                        }
                        Err(err) => {
                            tracing::debug!(path = %self.path.display(), %err, "cannot open log file yet");
                        }
                    }
                } else if md.len() < self.read_offset {
                    self.stats.truncations.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(path = %self.path.display(), "log file truncated; reading from its start");
                    self.partial.clear();
                    self.discarding = false;
                    if let Some(file) = self.file.as_mut()
                        && file.seek(SeekFrom::Start(0)).is_ok()
                    {
                        self.read_offset = 0;
                    }
                    if self.drain_open(&mut budget, now, sink) {
                        return true;
                    }
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::debug!(path = %self.path.display(), %err, "cannot stat log file");
            }
        }
        if self.has_partial()
            && now.saturating_duration_since(self.last_data) >= self.settings.partial_line_flush
        {
            self.flush_partial(sink);
        }
        false
    }

    /// Reads the open file to its end (or until the budget runs out: returns `true`).
    fn drain_open(&mut self, budget: &mut u64, now: Instant, sink: &mut dyn FnMut(&[u8])) -> bool {
        loop {
            let Some(file) = self.file.as_mut() else {
                return false;
            };
            if *budget == 0 {
                return true;
            }
            let n = match file.read(&mut self.buf) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    tracing::warn!(path = %self.path.display(), %err, "reading log file failed");
                    return false;
                }
            };
            *budget = budget.saturating_sub(n as u64);
            self.read_offset += n as u64;
            self.last_data = now;
            self.stats.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
            let mut out = std::mem::take(&mut self.out);
            out.clear();
            let data = std::mem::take(&mut self.buf);
            self.feed(&data[..n], &mut out);
            self.buf = data;
            if !out.is_empty() {
                sink(&out);
            }
            self.out = out;
        }
    }

    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let max = self.settings.max_line_bytes;
        for piece in data.split_inclusive(|&b| b == b'\n') {
            let complete = piece.last() == Some(&b'\n');
            if self.discarding {
                if complete {
                    self.discarding = false;
                }
                continue;
            }
            let body = if complete {
                &piece[..piece.len() - 1]
            } else {
                piece
            };
            if self.partial.len() + body.len() > max {
                let room = max - self.partial.len();
                out.extend_from_slice(&self.partial);
                out.extend_from_slice(&body[..room]);
                out.push(b'\n');
                self.partial.clear();
                self.note_cut();
                self.discarding = !complete;
            } else if complete {
                if self.partial.is_empty() {
                    out.extend_from_slice(piece);
                } else {
                    out.extend_from_slice(&self.partial);
                    out.extend_from_slice(piece);
                    self.partial.clear();
                }
            } else {
                self.partial.extend_from_slice(body);
            }
        }
    }

    fn note_cut(&mut self) {
        let n = self.stats.cut_lines.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.cut_reported {
            self.cut_reported = true;
            tracing::warn!(
                path = %self.path.display(),
                max_line_bytes = self.settings.max_line_bytes,
                "log line longer than max_line_bytes cut (reported once; see cut_lines count)"
            );
        }
        tracing::trace!(cut_lines = n, "cut a long log line");
    }

    fn flush_partial(&mut self, sink: &mut dyn FnMut(&[u8])) {
        if self.partial.is_empty() {
            return;
        }
        let mut line = std::mem::take(&mut self.partial);
        line.push(b'\n');
        sink(&line);
        line.clear();
        self.partial = line;
    }
}

/// A running follower: its handle, shared cursor and counters.
#[derive(Debug)]
pub struct FollowerHandle {
    /// Stops the thread on drop.
    pub handle: DetectorHandle,
    /// The current position (persist it for the next start).
    pub cursor: CursorCell,
    /// Counters.
    pub stats: Arc<FollowStats>,
}

/// Follows `path` on a thread named `ms11-<name>`, calling `sink(chunk, now)` with chunks
/// of complete lines. The file is opened (and its start position fixed) before this
/// returns, so lines written afterwards are never missed.
pub fn spawn_follower<S>(
    name: &str,
    path: &Path,
    settings: FollowSettings,
    resume: Option<LogCursor>,
    mut sink: S,
) -> Result<FollowerHandle, DetectError>
where
    S: FnMut(&[u8], Instant) + Send + 'static,
{
    let mut tail = FileTail::new(path, settings.clone(), resume);
    let cursor = CursorCell::default();
    cursor.set(tail.cursor());
    let stats = tail.stats();
    let cell = cursor.clone();
    let handle = DetectorHandle::spawn(name, move |stop| {
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded::<()>();
        let mut watcher = watch_parent(&tail.path, &ev_tx);
        let mut warned = false;
        loop {
            let now = Instant::now();
            tail.stats.wakeups.fetch_add(1, Ordering::Relaxed);
            let more = tail.poll(now, &mut |chunk| sink(chunk, now));
            cell.set(tail.cursor());
            if more {
                if stopped(&stop) {
                    break;
                }
                continue;
            }
            if watcher.is_none() {
                watcher = watch_parent(&tail.path, &ev_tx);
                if watcher.is_none() && !warned {
                    warned = true;
                    tracing::info!(path = %tail.path.display(), interval_ms = settings.poll_interval.as_millis() as u64,
                        "file notification unavailable for the log's directory; polling");
                }
            }
            let mut timeout = if watcher.is_some() {
                settings.poll_interval * 8
            } else {
                settings.poll_interval
            };
            if let Some(deadline) = tail.partial_deadline() {
                timeout = timeout.min(
                    deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(1),
                );
            }
            select! {
                recv(stop) -> _ => break,
                recv(ev_rx) -> _ => {
                    while ev_rx.try_recv().is_ok() {}
                }
                default(timeout) => {}
            }
        }
    })?;
    Ok(FollowerHandle {
        handle,
        cursor,
        stats,
    })
}

fn stopped(stop: &Receiver<()>) -> bool {
    matches!(
        stop.try_recv(),
        Err(crossbeam_channel::TryRecvError::Disconnected)
    )
}

/// Watches the directory holding `path` (non-recursive); each event sends `()`.
fn watch_parent(
    path: &Path,
    tx: &crossbeam_channel::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return None;
    }
    let tx = tx.clone();
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let relevant = match &res {
            // Reads and opens (ours included) would wake us in a loop.
            Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => false,
            Ok(ev) => {
                ev.paths.is_empty() || ev.paths.iter().any(|p| p.file_name() == name.as_deref())
            }
            Err(err) => {
                tracing::debug!(%err, "file notification error");
                true
            }
        };
        if relevant {
            let _ = tx.send(());
        }
    })
    .ok()?;
    match watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        Ok(()) => Some(watcher),
        Err(err) => {
            tracing::debug!(dir = %dir.display(), %err, "cannot watch log directory");
            None
        }
    }
}
