//! Where command results go: text or JSON on stdout, and a copy to `--output FILE`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// A command's output channel.
pub struct Output {
    json: bool,
    file: Option<PathBuf>,
    stdout: Box<dyn Write>,
}

impl Output {
    /// Text or JSON to stdout, optionally copied to `file`.
    pub fn new(json: bool, file: Option<PathBuf>) -> Self {
        Output {
            json,
            file,
            stdout: Box::new(std::io::stdout()),
        }
    }

    /// Output into a buffer (tests).
    pub fn to_writer(json: bool, writer: Box<dyn Write>) -> Self {
        Output {
            json,
            file: None,
            stdout: writer,
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
        writeln!(self.stdout, "{rendered}")?;
        self.stdout.flush()?;
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
