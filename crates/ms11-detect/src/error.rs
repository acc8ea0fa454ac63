//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Why a detector could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A pattern's regex does not parse.
    #[error("log pattern `{name}`: invalid regex at column {column}: {message} (regex: `{regex}`)")]
    BadPattern {
        /// The pattern's name.
        name: String,
        /// The regex as written in the config.
        regex: String,
        /// 1-based column (in characters) where the error starts.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The patterns parse but cannot be compiled together (e.g. too large).
    #[error("log patterns: cannot compile the set: {0}")]
    PatternSet(String),
    /// A config value is out of range.
    #[error("detector config `{field}`: {message}")]
    Config {
        /// Dotted field name.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A detector thread could not be started.
    #[error("starting detector thread `{name}`: {source}")]
    Spawn {
        /// The thread's name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}
