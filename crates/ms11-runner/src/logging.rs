//! Log output: human-readable on a terminal, JSON lines otherwise (or as asked), an
//! optional size-rotated log file, and secrets (passwords, session keys, webhook
//! tokens) redacted from every line whatever its destination. The log file is created
//! readable by its owner only (0600), and the directories created for it 0700.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::LogFormat;

/// Size at which the log file is rotated.
const ROTATE_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated files kept (`FILE.1` .. `FILE.5`).
const ROTATE_KEEP: usize = 5;

/// Installs the global subscriber. `verbose`: 0 info, 1 debug, 2+ trace; `RUST_LOG`
/// overrides.
pub fn init(format: LogFormat, verbose: u8, file: Option<&Path>) -> io::Result<()> {
    let default_level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !io::stderr().is_terminal(),
    };
    let rotating = match file {
        Some(path) => Some(Arc::new(Mutex::new(RotatingFile::open(path)?))),
        None => None,
    };
    let writer = RedactingMakeWriter { file: rotating };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder
            .with_ansi(io::stderr().is_terminal() && file.is_none())
            .try_init()
    };
    result.map_err(|e| io::Error::other(e.to_string()))
}

/// Replaces secrets in a line of log text (the one redaction of the project, shared with
/// `config show`, error messages, stored incidents and webhook payloads).
pub use ms11_redact::redact;

#[derive(Clone)]
struct RedactingMakeWriter {
    file: Option<Arc<Mutex<RotatingFile>>>,
}

/// Buffers one event and writes it, redacted, on drop.
struct RedactingWriter {
    buffer: Vec<u8>,
    file: Option<Arc<Mutex<RotatingFile>>>,
}

impl<'a> MakeWriter<'a> for RedactingMakeWriter {
    type Writer = RedactingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            buffer: Vec::with_capacity(256),
            file: self.file.clone(),
        }
    }
}

impl Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingWriter {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buffer);
        let clean = redact(&text);
        match &self.file {
            Some(file) => {
                if let Ok(mut file) = file.lock() {
                    let _ = file.write_all(clean.as_bytes());
                }
            }
            None => {
                let _ = io::stderr().lock().write_all(clean.as_bytes());
            }
        }
    }
}

/// Opens `path` for appending, creating it readable and writable by its owner only.
fn private_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Creates missing directories (recursively) accessible by their owner only.
fn private_dir_builder() -> std::fs::DirBuilder {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
}

/// A log file rotated by size: `FILE` → `FILE.1` → ... → `FILE.5`.
struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
}

impl RotatingFile {
    fn open(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_dir_builder().create(dir)?;
        }
        let file = private_append(path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            written,
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        for n in (1..ROTATE_KEEP).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = private_append(&self.path)?;
        self.written = 0;
        Ok(())
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.written + bytes.len() as u64 > ROTATE_BYTES && self.written > 0 {
            self.rotate()?;
        }
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let cases = [
            (
                "login password=hunter2 user=bob",
                "login password=[redacted] user=bob",
            ),
            (
                r#"{"session_key": "abc123", "x": 1}"#,
                r#"{"session_key": "[redacted]", "x": 1}"#,
            ),
            (
                "POST https://discord.com/api/webhooks/123456/AbC-dEf_123 failed",
                "POST https://discord.com/api/webhooks/123456/[redacted] failed",
            ),
            (
                "url http://user:pa55@host:8080/x",
                "url http://user:[redacted]@host:8080/x",
            ),
            ("nothing secret here", "nothing secret here"),
        ];
        for (input, expected) in cases {
            assert_eq!(redact(input), expected, "{input}");
        }
    }

    #[test]
    fn every_event_written_to_the_log_file_is_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runner.log");
        let file = Arc::new(Mutex::new(RotatingFile::open(&path).unwrap()));
        let make = RedactingMakeWriter { file: Some(file) };
        let lines: [&[u8]; 3] = [
            b"{\"message\":\"relog: login bob password hunter2\"}\n",
            b"notify https://ntfy.sh/alerts?auth=SECRETTOKEN failed\n",
            b"{\"error\":\"POST https://discord.com/api/webhooks/1/SECRETTOKEN: 404\"}\n",
        ];
        for line in lines {
            let mut writer = make.make_writer();
            writer.write_all(line).unwrap();
        }
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written.lines().count(), 3, "{written}");
        assert!(
            !written.contains("hunter2") && !written.contains("SECRETTOKEN"),
            "{written}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn log_files_are_private_and_so_are_the_directories_made_for_them() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/runner/runner.log");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let mut file = RotatingFile::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("logs")), 0o700);
        assert_eq!(mode(&dir.path().join("logs/runner")), 0o700);
        file.write_all(b"x\n").unwrap();
        file.rotate().unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("logs/runner/runner.log.1")), 0o600);
    }

    #[test]
    fn the_log_file_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runner.log");
        let mut file = RotatingFile::open(&path).unwrap();
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..25 {
            file.write_all(&chunk).unwrap();
        }
        assert!(path.exists());
        assert!(dir.path().join("runner.log.1").exists());
        assert!(dir.path().join("runner.log.2").exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= ROTATE_BYTES);
    }
}
