//! Log output: human-readable on a terminal, JSON lines otherwise (or as asked), an
//! optional size-rotated log file, and secrets (passwords, session keys, webhook
//! tokens) redacted from every line whatever its destination.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use regex::Regex;
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

/// Replaces secrets in a line of log text.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    static PATTERNS: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        [
            // key=value and "key": "value" forms of secret-looking keys
            (
                r#"(?i)((?:password|passwd|pwd|secret|token|session[_-]?key|api[_-]?key|auth)"?\s*[=:]\s*"?)[^\s"&,}]+"#,
                "${1}[redacted]",
            ),
            // URL credentials: scheme://user:pass@host
            (r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@", "${1}[redacted]@"),
            // Discord webhook tokens: /api/webhooks/<id>/<token>
            (r"(?i)(/api/webhooks/\d+/)[A-Za-z0-9_-]+", "${1}[redacted]"),
            // Telegram-style bot tokens: bot123456:ABC...
            (r"(?i)(bot\d+:)[A-Za-z0-9_-]{20,}", "${1}[redacted]"),
        ]
        .into_iter()
        .filter_map(|(re, with)| Regex::new(re).ok().map(|r| (r, with)))
        .collect()
    });
    let mut out = std::borrow::Cow::Borrowed(text);
    for (re, with) in patterns {
        if re.is_match(&out) {
            out = std::borrow::Cow::Owned(re.replace_all(&out, *with).into_owned());
        }
    }
    out
}

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

/// A log file rotated by size: `FILE` → `FILE.1` → ... → `FILE.5`.
struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
}

impl RotatingFile {
    fn open(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
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
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
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
