//! The documented exit codes of `ms11-recovery`.

use std::fmt;

/// Why the program ended; the numeric value is the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// An error not covered below.
    Error = 1,
    /// Bad command-line usage (clap's own code).
    Usage = 2,
    /// `recover`: there is no saved session.
    NoSavedSession = 3,
    /// A control command found no running runner.
    NotRunning = 4,
    /// State files exist but none is usable (start with `--force` to start fresh).
    StateUnusable = 5,
    /// The configuration is invalid.
    Config = 6,
    /// Another runner holds the state file.
    Locked = 7,
    /// A session stopped on a terminal condition (banned, wrong password, ...): a
    /// person is needed.
    Terminal = 8,
    /// A second Ctrl-C stopped the runner at once, without the final save (128 +
    /// SIGINT, as a shell reports it).
    Interrupted = 130,
}

impl ExitCode {
    /// The process exit status.
    pub fn code(self) -> i32 {
        self as i32
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// An error that knows its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// The exit code.
    pub code: ExitCode,
    /// What to tell the user.
    pub message: String,
}

impl Failure {
    /// A failure with a code and a message.
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// Maps an error chain to its exit code (a [`Failure`] anywhere in the chain, or a
/// known error type, decides).
pub fn classify(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.code;
        }
        if let Some(p) = cause.downcast_ref::<ms11_persist::PersistError>() {
            return match p {
                ms11_persist::PersistError::Locked { .. } => ExitCode::Locked,
                ms11_persist::PersistError::NoValidState { .. } => ExitCode::StateUnusable,
                _ => ExitCode::Error,
            };
        }
        if let Some(crate::control::ControlError::NotRunning(_)) = cause.downcast_ref() {
            return ExitCode::NotRunning;
        }
    }
    ExitCode::Error
}
