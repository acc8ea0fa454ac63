//! The control socket: how `save`, `status`, `restart`, `relog` and `ack` reach a
//! running runner. A Unix socket, owner-only (mode 0600, in the 0700 state directory);
//! one JSON request per line, one JSON response per line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, warn};

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

/// Handles one request (runs on the control thread).
pub type Handler = Arc<dyn Fn(ControlRequest) -> ControlResponse + Send + Sync>;

/// The listening side; stops and removes the socket file on drop.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
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

impl ControlServer {
    /// Binds the socket (replacing a stale one left by a killed runner) and serves
    /// requests on a thread.
    pub fn start(path: &Path, handler: Handler) -> Result<ControlServer> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                bail!(
                    "another runner already listens on the control socket `{}`",
                    path.display()
                );
            }
            std::fs::remove_file(path).with_context(|| {
                format!("removing the stale control socket `{}`", path.display())
            })?;
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the directory of `{}`", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("binding the control socket `{}`", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting `{}` to its owner", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("control-socket".into())
            .spawn(move || serve(&listener, &handler, &stop_flag))?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
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
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Blocks in `accept` (no polling: an idle runner wakes for nothing); `Drop` connects
/// once to wake it for the stop.
fn serve(listener: &UnixListener, handler: &Handler, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Err(e) = answer(stream, handler) {
                    debug!(error = %e, "control connection ended with an error");
                }
            }
            Err(e) => {
                warn!(error = %e, "control socket accept failed");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn answer(stream: UnixStream, handler: &Handler) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = stream.try_clone()?;
    let mut line = String::new();
    BufReader::new(stream.take(64 * 1024)).read_line(&mut line)?;
    let response = match serde_json::from_str::<ControlRequest>(line.trim()) {
        Ok(request) => handler(request),
        Err(e) => ControlResponse::error(format!("bad request: {e}")),
    };
    let mut text = serde_json::to_string(&response).unwrap_or_else(|_| "{\"ok\":false}".into());
    text.push('\n');
    writer.write_all(text.as_bytes())?;
    writer.flush()
}

use std::io::Read as _;

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
        assert!(second.is_err(), "a live socket is not stolen");
        drop(server);
    }
}
