//! The control socket: how `save`, `status`, `restart`, `relog` and `ack` reach a
//! running runner. A Unix socket, owner-only (mode 0600, in the 0700 state directory);
//! one JSON request per line, one JSON response per line.
//!
//! One control thread sleeps in `poll(2)` on a wake-up pipe, the listener and every
//! connection still sending its request, so an idle or slow client never holds up
//! another; each complete request is answered on a thread of its own (bounded), with a
//! deadline for reading the request and one for writing the answer. The stop closes the
//! wake-up pipe (it never depends on the socket file, which may be gone). Every few
//! seconds the thread checks that the socket file is still the one it bound and binds a
//! new one when it was removed. Only a stale socket of this user is ever replaced.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, error, warn};

/// A request from a CLI command to the running runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Live status of every session.
    Status,
    /// Save now.
    Save {
        /// Only this session.
        #[serde(default)]
        session: Option<String>,
    },
    /// Restart the client.
    Restart {
        /// Only this session.
        #[serde(default)]
        session: Option<String>,
    },
    /// Relog the character.
    Relog {
        /// Only this session.
        #[serde(default)]
        session: Option<String>,
    },
    /// Take a screenshot of the client now.
    Screenshot {
        /// Only this session.
        #[serde(default)]
        session: Option<String>,
    },
    /// Acknowledge a manual escalation.
    Ack {
        /// Only this session.
        #[serde(default)]
        session: Option<String>,
        /// The incident (default: whichever waits).
        #[serde(default)]
        incident: Option<String>,
    },
}

/// The runner's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlResponse {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What happened, for people.
    pub message: String,
    /// Details, for machines.
    #[serde(default)]
    pub data: Value,
}

impl ControlResponse {
    /// A success.
    pub fn ok(message: impl Into<String>, data: Value) -> Self {
        ControlResponse {
            ok: true,
            message: message.into(),
            data,
        }
    }

    /// A refusal.
    pub fn error(message: impl Into<String>) -> Self {
        ControlResponse {
            ok: false,
            message: message.into(),
            data: Value::Null,
        }
    }
}

/// Handles one request (runs on a handler thread of the control socket).
pub type Handler = Arc<dyn Fn(ControlRequest) -> ControlResponse + Send + Sync>;

/// Connections open at once (reading their request); more are refused with "busy".
const MAX_OPEN: usize = 256;
/// Requests being handled at once (one thread each); more are refused with "busy".
const MAX_HANDLERS: usize = 32;
/// The longest request line.
const MAX_REQUEST: usize = 64 * 1024;
/// How long a client may take to send its request line.
const READ_DEADLINE: Duration = Duration::from_secs(5);
/// How long writing the answer may take.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// How often the socket file is checked (removed or replaced while the runner runs).
const CHECK_INTERVAL: Duration = Duration::from_secs(3);

/// The listening side; stops and removes the socket file on drop (only while the file
/// is still the one it bound).
pub struct ControlServer {
    path: PathBuf,
    /// Dropping the write end of the wake-up pipe stops the control thread.
    wake: Option<OwnedFd>,
    thread: Option<JoinHandle<Option<FileId>>>,
}

/// Why a client could not reach the runner.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens on the socket.
    #[error("no ms11-recovery runner is running (no control socket at `{0}`)")]
    NotRunning(PathBuf),
    /// Talking to it failed.
    #[error("control socket `{path}`: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The answer was not understood.
    #[error("control socket `{path}` answered something unexpected: {detail}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

/// Why the control socket could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The path holds something that is not a stale socket of ours; it is left alone.
    #[error(
        "control_socket `{path}` is {what}, not a control socket; it is left alone: choose another path for `control_socket`"
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
        /// What is there ("a regular file", "a directory", "a symbolic link", ...).
        what: String,
    },
    /// A live socket: another runner listens there.
    #[error("another runner already listens on the control socket `{0}`")]
    InUse(PathBuf),
    /// Binding or preparing the path failed.
    #[error("control socket `{path}`: {what}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Device and inode of the socket file the server bound, to tell it from a replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(path: &Path) -> std::io::Result<FileId> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl ControlServer {
    /// Binds the socket (replacing only a stale socket of ours left by a killed runner)
    /// and serves requests: one control thread reads every connection's request line
    /// without blocking on any of them, and each complete request is handled on a
    /// thread of its own (at most [`MAX_HANDLERS`] at once).
    pub fn start(path: &Path, handler: Handler) -> Result<ControlServer, StartError> {
        Self::start_checking_every(path, handler, CHECK_INTERVAL)
    }

    /// [`ControlServer::start`] with another interval between checks of the socket file.
    fn start_checking_every(
        path: &Path,
        handler: Handler,
        check_interval: Duration,
    ) -> Result<ControlServer, StartError> {
        let (listener, id) = bind(path)?;
        let (wake_read, wake_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| StartError::Io {
                path: path.to_path_buf(),
                what: "creating the wake-up pipe",
                source: e.into(),
            })?;
        let server = Server {
            path: path.to_path_buf(),
            listener,
            id: Some(id),
            handler,
            busy: Arc::new(AtomicUsize::new(0)),
            problem: None,
            check_interval,
        };
        let thread = std::thread::Builder::new()
            .name("control-socket".into())
            .spawn(move || server.serve(&wake_read))
            .map_err(|e| StartError::Io {
                path: path.to_path_buf(),
                what: "starting the control thread",
                source: e,
            })?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            wake: Some(wake_write),
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        // Closing the write end wakes the control thread's poll (no connection to the
        // path, which may be gone or someone else's by now).
        drop(self.wake.take());
        let bound = self.thread.take().and_then(|t| t.join().ok()).flatten();
        if bound.is_some() && FileId::of(&self.path).ok() == bound {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Describes what is at `path` when it is not a socket.
fn describe(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_fifo() {
        "a named pipe"
    } else {
        "a special file"
    }
}

/// Makes `path` free for binding: nothing there, or a stale socket of ours (owned by
/// this user, nobody listening), which is removed. Anything else is left alone.
fn clear(path: &Path) -> Result<(), StartError> {
    let io = |what, source| StartError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("examining the path", e)),
    };
    if !meta.file_type().is_socket() {
        return Err(StartError::NotASocket {
            path: path.to_path_buf(),
            what: describe(&meta).to_owned(),
        });
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(StartError::NotASocket {
            path: path.to_path_buf(),
            what: format!("a socket of another user (uid {})", meta.uid()),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(StartError::InUse(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            debug!(path = %path.display(), "removing the stale control socket of a killed runner");
            std::fs::remove_file(path).map_err(|e| io("removing the stale socket", e))
        }
        Err(e) => Err(io("checking whether the socket is in use", e)),
    }
}

/// Binds the socket at `path` (owner-only), after [`clear`].
fn bind(path: &Path) -> Result<(UnixListener, FileId), StartError> {
    let io = |what, source| StartError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    clear(path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io("creating its directory", e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| io("binding", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("restricting it to its owner", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| io("making it non-blocking", e))?;
    let id = FileId::of(path).map_err(|e| io("examining the bound socket", e))?;
    Ok((listener, id))
}

/// A connection whose request line is still being read.
struct Pending {
    stream: UnixStream,
    buf: Vec<u8>,
    deadline: Instant,
}

/// What the control thread owns.
struct Server {
    path: PathBuf,
    listener: UnixListener,
    /// The socket file bound; `None` while it could not be re-created.
    id: Option<FileId>,
    handler: Handler,
    busy: Arc<AtomicUsize>,
    /// The last problem with the socket file that was logged (said once, not every check).
    problem: Option<String>,
    check_interval: Duration,
}

impl Server {
    /// Serves until the wake-up pipe's write end is closed; returns the socket file it
    /// still owns. Sleeps in `poll` on the pipe, the listener and the pending
    /// connections, waking at the earliest read deadline or socket-file check.
    fn serve(mut self, wake: &OwnedFd) -> Option<FileId> {
        let mut pending: Vec<Pending> = Vec::new();
        let mut next_check = Instant::now() + self.check_interval;
        loop {
            let now = Instant::now();
            let wake_at = pending
                .iter()
                .map(|p| p.deadline)
                .fold(next_check, Instant::min);
            let timeout = rustix::event::Timespec::try_from(wake_at.saturating_duration_since(now))
                .unwrap_or(rustix::event::Timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                });
            let (woken, accept, readable) = {
                let mut fds = Vec::with_capacity(pending.len() + 2);
                fds.push(PollFd::new(wake, PollFlags::IN));
                fds.push(PollFd::new(&self.listener, PollFlags::IN));
                fds.extend(
                    pending
                        .iter()
                        .map(|p| PollFd::new(&p.stream, PollFlags::IN)),
                );
                match rustix::event::poll(&mut fds, Some(&timeout)) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => {
                        warn!(error = %e, "control socket poll failed");
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                }
                let ready = |fd: &PollFd<'_>| !fd.revents().is_empty();
                let readable: Vec<bool> = fds[2..].iter().map(ready).collect();
                (ready(&fds[0]), ready(&fds[1]), readable)
            };
            if woken {
                return self.id;
            }
            // Read what arrived; a complete request leaves the list for a handler.
            let mut kept = Vec::with_capacity(pending.len());
            for (mut p, ready) in pending.drain(..).zip(readable) {
                if !ready {
                    kept.push(p);
                    continue;
                }
                match read_some(&mut p) {
                    Step::Wait => kept.push(p),
                    Step::Request(line) => self.dispatch(p.stream, line),
                    Step::TooLong => refuse(p.stream, "bad request: longer than 64 KiB"),
                    Step::Gone => {}
                }
            }
            pending = kept;
            if accept {
                self.accept_all(&mut pending);
            }
            let now = Instant::now();
            pending.retain(|p| {
                let alive = p.deadline > now;
                if !alive {
                    debug!("control connection closed: no request within the deadline");
                }
                alive
            });
            if now >= next_check {
                self.check_socket_file();
                next_check = now + self.check_interval;
            }
        }
    }

    fn accept_all(&self, pending: &mut Vec<Pending>) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if pending.len() >= MAX_OPEN || stream.set_nonblocking(true).is_err() {
                        refuse(stream, "busy: too many open control connections; try again");
                        continue;
                    }
                    pending.push(Pending {
                        stream,
                        buf: Vec::new(),
                        deadline: Instant::now() + READ_DEADLINE,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    return;
                }
            }
        }
    }

    /// Handles a complete request on a thread of its own, or refuses it at once when
    /// [`MAX_HANDLERS`] requests are being handled.
    fn dispatch(&self, stream: UnixStream, line: Vec<u8>) {
        if self.busy.fetch_add(1, Ordering::SeqCst) >= MAX_HANDLERS {
            self.busy.fetch_sub(1, Ordering::SeqCst);
            refuse(stream, "busy: too many control requests at once; try again");
            return;
        }
        let handler = Arc::clone(&self.handler);
        let busy = Arc::clone(&self.busy);
        let spawned = std::thread::Builder::new()
            .name("control-request".into())
            .spawn(move || {
                if let Err(e) = answer(&stream, &line, &handler) {
                    debug!(error = %e, "control connection ended with an error");
                }
                busy.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            self.busy.fetch_sub(1, Ordering::SeqCst);
            warn!(error = %e, "cannot start a thread for a control request");
        }
    }

    /// Checks that the socket file is still the one bound; when it was removed or
    /// replaced, says so and binds a new one where that harms nothing.
    fn check_socket_file(&mut self) {
        let now = FileId::of(&self.path).ok();
        if self.id.is_some() && now == self.id {
            return;
        }
        let what = match (self.id, now) {
            (Some(_), None) => "was removed",
            (Some(_), Some(_)) => "was replaced by another file",
            (None, _) => "is still missing",
        };
        match bind(&self.path) {
            Ok((listener, id)) => {
                warn!(event = "control_socket_recreated", path = %self.path.display(), "the control socket file {what} while the runner ran; re-created it");
                self.listener = listener;
                self.id = Some(id);
                self.problem = None;
            }
            Err(e) => {
                let problem = e.to_string();
                if self.problem.as_deref() != Some(problem.as_str()) {
                    error!(event = "control_socket_lost", path = %self.path.display(), error = %problem, "the control socket file {what} while the runner ran and cannot be re-created; control commands cannot reach this runner until it can");
                    self.problem = Some(problem);
                }
                // Not ours any more: never removed on stop.
                self.id = None;
            }
        }
    }
}

/// What reading a pending connection came to.
enum Step {
    /// No complete line yet.
    Wait,
    /// A complete request line (without its newline).
    Request(Vec<u8>),
    /// More than [`MAX_REQUEST`] bytes without a newline.
    TooLong,
    /// The connection ended or failed without a request.
    Gone,
}

/// Reads what a connection sent, without blocking.
fn read_some(p: &mut Pending) -> Step {
    let mut chunk = [0u8; 4096];
    loop {
        match p.stream.read(&mut chunk) {
            // The client closed its side: what it sent is the request.
            Ok(0) if p.buf.is_empty() => return Step::Gone,
            Ok(0) => return Step::Request(std::mem::take(&mut p.buf)),
            Ok(n) => {
                p.buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = p.buf.iter().position(|b| *b == b'\n') {
                    p.buf.truncate(end);
                    return Step::Request(std::mem::take(&mut p.buf));
                }
                if p.buf.len() > MAX_REQUEST {
                    return Step::TooLong;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Step::Wait,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                debug!(error = %e, "control connection ended with an error");
                return Step::Gone;
            }
        }
    }
}

/// Answers "no" without waiting on the client (the write is non-blocking).
fn refuse(stream: UnixStream, message: &str) {
    let _ = stream.set_nonblocking(true);
    let mut text = serde_json::to_string(&ControlResponse::error(message))
        .unwrap_or_else(|_| "{\"ok\":false}".into());
    text.push('\n');
    let _ = (&stream).write_all(text.as_bytes());
}

fn answer(stream: &UnixStream, line: &[u8], handler: &Handler) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(WRITE_DEADLINE))?;
    let response = match serde_json::from_slice::<ControlRequest>(line.trim_ascii()) {
        Ok(request) => handler(request),
        Err(e) => ControlResponse::error(format!("bad request: {e}")),
    };
    let mut text = serde_json::to_string(&response).unwrap_or_else(|_| "{\"ok\":false}".into());
    text.push('\n');
    let mut writer = stream;
    writer.write_all(text.as_bytes())?;
    writer.flush()
}

/// Sends one request to the runner listening on `path` and waits for the answer.
pub fn request(
    path: &Path,
    request: &ControlRequest,
    timeout: Duration,
) -> Result<ControlResponse, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning(path.to_path_buf()));
        }
        Err(e) => return Err(io(e)),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let mut text = serde_json::to_string(request).map_err(|e| ControlError::Protocol {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    text.push('\n');
    stream.write_all(text.as_bytes()).map_err(io)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(io)?;
    serde_json::from_str(line.trim()).map_err(|e| ControlError::Protocol {
        path: path.to_path_buf(),
        detail: format!("{e}: {line}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reaches_the_handler_and_the_socket_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ms11-recovery.sock");
        let handler: Handler = Arc::new(|req| match req {
            ControlRequest::Save { session } => ControlResponse::ok(
                format!("saved {}", session.unwrap_or_default()),
                serde_json::json!({"generation": 7}),
            ),
            other => ControlResponse::error(format!("unexpected {other:?}")),
        });
        let server = ControlServer::start(&path, handler).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let response = request(
            &path,
            &ControlRequest::Save {
                session: Some("main".into()),
            },
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(response.ok);
        assert_eq!(response.message, "saved main");
        assert_eq!(response.data["generation"], 7);
        drop(server);
        assert!(!path.exists(), "socket removed on stop");
        let err = request(&path, &ControlRequest::Status, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, ControlError::NotRunning(_)), "{err}");
    }

    #[test]
    fn a_stale_socket_from_a_killed_runner_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ms11-recovery.sock");
        drop(UnixListener::bind(&path).unwrap()); // leaves the file, nobody listens
        let server =
            ControlServer::start(&path, Arc::new(|_| ControlResponse::ok("up", Value::Null)))
                .unwrap();
        assert!(
            request(&path, &ControlRequest::Status, Duration::from_secs(5))
                .unwrap()
                .ok
        );
        let second =
            ControlServer::start(&path, Arc::new(|_| ControlResponse::ok("x", Value::Null)));
        assert!(
            matches!(second, Err(StartError::InUse(_))),
            "a live socket is not stolen"
        );
        drop(server);
    }

    fn up() -> Handler {
        Arc::new(|_| ControlResponse::ok("up", Value::Null))
    }

    /// Drops the server on another thread; `true` when that returned within `limit`.
    fn stops_within(server: ControlServer, limit: Duration) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            drop(server);
            let _ = tx.send(());
        });
        rx.recv_timeout(limit).is_ok()
    }

    #[test]
    fn nothing_but_a_stale_socket_of_ours_is_ever_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "precious").unwrap();
        let subdir = dir.path().join("dir");
        std::fs::create_dir(&subdir).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        for (path, what) in [
            (&file, "a regular file"),
            (&subdir, "a directory"),
            (&link, "a symbolic link"),
            (&dangling, "a symbolic link"),
        ] {
            let err = ControlServer::start(path, up()).err().unwrap();
            assert!(
                matches!(&err, StartError::NotASocket { what: w, .. } if w == what),
                "{}: {err}",
                path.display()
            );
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
            assert!(std::fs::symlink_metadata(path).is_ok(), "{what} left alone");
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
        assert!(subdir.is_dir());
        // A live socket of another runner is left alone too (and still answers).
        let live = dir.path().join("live.sock");
        let other = ControlServer::start(&live, up()).unwrap();
        assert!(matches!(
            ControlServer::start(&live, up()),
            Err(StartError::InUse(_))
        ));
        assert!(
            request(&live, &ControlRequest::Status, Duration::from_secs(5))
                .unwrap()
                .ok
        );
        drop(other);
    }

    #[test]
    fn stopping_never_waits_for_the_socket_file_and_leaves_a_replacement_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ms11-recovery.sock");
        let server = ControlServer::start(&path, up()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(
            stops_within(server, Duration::from_secs(3)),
            "the stop waited for a removed socket file"
        );
        let server = ControlServer::start(&path, up()).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "someone else's").unwrap();
        assert!(stops_within(server, Duration::from_secs(3)));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "someone else's",
            "a replacement is not removed on stop"
        );
    }

    #[test]
    fn a_hundred_idle_connections_do_not_delay_a_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ms11-recovery.sock");
        let server = ControlServer::start(&path, up()).unwrap();
        let idle: Vec<UnixStream> = (0..100)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        // A client that sent half a line and stopped holds nobody up either.
        let mut half = UnixStream::connect(&path).unwrap();
        half.write_all(b"{\"cmd\":").unwrap();
        for _ in 0..5 {
            let started = Instant::now();
            let answer = request(&path, &ControlRequest::Status, Duration::from_secs(5)).unwrap();
            let took = started.elapsed();
            assert!(answer.ok, "{answer:?}");
            assert!(
                took < Duration::from_millis(100),
                "status took {took:?} with 100 idle connections open"
            );
        }
        drop(idle);
        drop(half);
        drop(server);
    }

    #[test]
    fn slow_requests_are_handled_side_by_side() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ms11-recovery.sock");
        let handler: Handler = Arc::new(|request| {
            if matches!(request, ControlRequest::Save { .. }) {
                std::thread::sleep(Duration::from_secs(2));
            }
            ControlResponse::ok("done", Value::Null)
        });
        let server = ControlServer::start(&path, handler).unwrap();
        let slow = {
            let path = path.clone();
            std::thread::spawn(move || {
                request(
                    &path,
                    &ControlRequest::Save { session: None },
                    Duration::from_secs(10),
                )
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        assert!(
            request(&path, &ControlRequest::Status, Duration::from_secs(5))
                .unwrap()
                .ok
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "status waited for a slow save: {:?}",
            started.elapsed()
        );
        assert!(slow.join().unwrap().unwrap().ok);
        drop(server);
    }

    #[test]
    fn a_client_that_never_finishes_its_line_is_closed_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ms11-recovery.sock");
        let server = ControlServer::start(&path, up()).unwrap();
        let mut slow = UnixStream::connect(&path).unwrap();
        slow.write_all(b"{").unwrap();
        slow.set_read_timeout(Some(READ_DEADLINE * 3)).unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        let took = started.elapsed();
        assert!(
            took >= READ_DEADLINE - Duration::from_millis(500) && took < READ_DEADLINE * 2,
            "closed after {took:?}"
        );
        drop(server);
    }

    #[test]
    fn a_removed_or_replaced_socket_file_is_noticed_and_re_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ms11-recovery.sock");
        let server =
            ControlServer::start_checking_every(&path, up(), Duration::from_millis(100)).unwrap();
        let answers = |limit: Duration| {
            let end = Instant::now() + limit;
            while Instant::now() < end {
                if request(&path, &ControlRequest::Status, Duration::from_secs(1))
                    .is_ok_and(|r| r.ok)
                {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        };
        std::fs::remove_file(&path).unwrap();
        assert!(
            answers(Duration::from_secs(5)),
            "not re-created after removal"
        );
        // Replaced by a stale socket nobody listens on: ours to replace.
        std::fs::remove_file(&path).unwrap();
        drop(UnixListener::bind(&path).unwrap());
        assert!(
            answers(Duration::from_secs(5)),
            "not re-created after replacement"
        );
        // Replaced by a regular file: left alone, and the server still stops at once.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "not a socket").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
        assert!(stops_within(server, Duration::from_secs(3)));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    }
}
