//! Where command results go: text or JSON on stdout, and a copy to `--output FILE`.
//! A reader that went away (`ms11-recovery config show | head -1`) is not an error:
//! the rest of the output is dropped quietly.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// A command's output channel.
pub struct Output {
    json: bool,
    file: Option<PathBuf>,
    stdout: Box<dyn Write>,
    /// The reader of stdout went away: nothing more is written there.
    closed: bool,
}

impl Output {
    /// Text or JSON to stdout, optionally copied to `file`.
    pub fn new(json: bool, file: Option<PathBuf>) -> Self {
        Output {
            json,
            file,
            stdout: Box::new(std::io::stdout()),
            closed: false,
        }
    }

    /// Output into a buffer (tests).
    pub fn to_writer(json: bool, writer: Box<dyn Write>) -> Self {
        Output {
            json,
            file: None,
            stdout: writer,
            closed: false,
        }
    }

    /// Prints `text`, or `json` with `--json`. `--output FILE` gets the JSON (or the
    /// text, without `--json`) as well.
    pub fn emit(&mut self, text: &str, json: &serde_json::Value) -> Result<()> {
        let rendered = if self.json {
            serde_json::to_string_pretty(json)?
        } else {
            text.to_owned()
        };
        if !self.closed {
            let written = writeln!(self.stdout, "{rendered}").and_then(|()| self.stdout.flush());
            match written {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => self.closed = true,
                other => other.context("writing to stdout")?,
            }
        }
        if let Some(path) = &self.file {
            let body = if self.json {
                rendered
            } else {
                serde_json::to_string_pretty(json)?
            };
            std::fs::write(path, format!("{body}\n"))
                .with_context(|| format!("writing --output file `{}`", path.display()))?;
        }
        Ok(())
    }
}
