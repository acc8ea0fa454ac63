//! A simulated Star Wars Galaxies session for the demo and the end-to-end tests:
//! `sim-client` behaves like the game client from the runner's point of view (a log
//! with realistic lines, an X11 window, crashes, dumps, hangs, dialogs, disconnects on
//! command) and `sim-bot` is a bot speaking the agent protocol with a task plan and an
//! effect ledger that shows whether any task ran twice. `win32/` holds a real Windows
//! test client, run under Wine (see [`win32`]).

pub mod control;
pub mod crash_dump;
pub mod ledger;
pub mod lines;
pub mod scenario;
pub mod timestamps;
pub mod win32;
pub mod xvfb;

pub use control::{poll_commands, send_command};
pub use ledger::{LedgerCheck, check_ledger};
pub use scenario::{Scenario, ScenarioOptions};
pub use xvfb::Xvfb;

/// Where `program` is on PATH.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
