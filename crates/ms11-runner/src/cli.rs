//! The command line: subcommands, global flags, and the seed's flag spellings
//! (`--recover`, `--stats`, `--cleanup --max-age 24`, ...) kept as aliases.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Session recovery and continuation engine for unattended game bots.
#[derive(Debug, Parser)]
#[command(
    name = "ms11-recovery",
    version,
    about = "Session recovery and continuation engine for unattended game bots",
    long_about = "Supervises a game client and the bot driving it, detects crashes, disconnects, \
hangs and error dialogs, recovers through an ordered chain of strategies (restart, relog, \
manual, restore, plugins) and continues the task queue exactly where it stopped.",
    after_help = "The seed's spellings work too: --recover, --save, --stats, --auto-save, \
--detect-crashes, --cleanup --max-age HOURS, --restart, --relog.\n\
Exit codes: 0 ok, 1 error, 2 usage, 3 no saved session, 4 no runner running, \
5 state unusable, 6 configuration error, 7 state file in use, 8 stopped by a terminal condition."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Options that apply to every command.
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Options that apply to every command.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Configuration file (TOML, or the seed's YAML).
    #[arg(
        long,
        short = 'c',
        global = true,
        value_name = "FILE",
        env = "MS11_CONFIG"
    )]
    pub config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Start even when the saved state is unusable (the bad files are kept in quarantine/).
    #[arg(long, global = true)]
    pub force: bool,
    /// Write the command's result to FILE as well.
    #[arg(long, global = true, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print results as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Continue the previous session without asking.
    #[arg(long, global = true, conflicts_with = "no")]
    pub yes: bool,
    /// Start a new session without asking (the previous one is kept as an older generation).
    #[arg(long, global = true)]
    pub no: bool,
    /// Only this session (by name) when several are configured.
    #[arg(long, global = true, value_name = "NAME")]
    pub session: Option<String>,
    /// Override a configuration value (`KEY=VALUE`, TOML syntax for the value); repeatable.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Also write logs to FILE (rotated at 10 MB, 5 files kept).
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

/// How logs look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    #[default]
    Auto,
    /// Human-readable.
    Human,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Supervise the configured sessions until stopped (SIGTERM/SIGINT save and stop)
    ///
    /// SIGTERM or Ctrl-C: save, stop the bot and the client gracefully, exit 0. A second
    /// Ctrl-C stops at once (exit 130). SIGHUP reads the configuration again: what can
    /// change live is applied, what needs a restart is logged (docs/operations.md).
    Run,
    /// Load the saved session and show what would continue; fails if there is none.
    Recover,
    /// Ask the running runner to save now.
    Save,
    /// Print session statistics.
    Stats,
    /// Show the running runner's auto-save schedule.
    AutoSave,
    /// Scan the client log once with the configured patterns and list what matches.
    DetectCrashes {
        /// Scan the whole file instead of only what the runner has not read yet.
        #[arg(long)]
        from_start: bool,
    },
    /// Remove generations, temp files and quarantined files older than HOURS.
    Cleanup {
        /// Age in hours.
        #[arg(long, value_name = "HOURS", default_value_t = 24.0)]
        max_age: f64,
    },
    /// Ask the running runner to restart the game client.
    Restart,
    /// Ask the running runner to log the character in again.
    Relog,
    /// Ask the running runner for a screenshot of the client's window now (PNG in the
    /// state directory's `screenshots/`).
    Screenshot,
    /// Acknowledge a manual escalation so recovery goes on.
    Ack {
        /// The incident id (default: the one waiting).
        incident: Option<String>,
    },
    /// Show the running runner's live status (or the saved state when none runs).
    Status,
    /// Show or check the configuration.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// List or check strategy plugins.
    Plugins {
        /// What to do with them.
        #[command(subcommand)]
        action: PluginsAction,
    },
}

/// `config` actions.
#[derive(Debug, Subcommand, Clone, Copy)]
pub enum ConfigAction {
    /// Print the merged configuration and where each value came from. Values of keys
    /// named like secrets (password, token, secret, key, webhook URLs) are shown as
    /// `[redacted]`.
    Show {
        /// Show secret values as they are.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Validate the configuration; exit 6 when something is wrong.
    Check,
}

/// `plugins` actions.
#[derive(Debug, Subcommand, Clone, Copy)]
pub enum PluginsAction {
    /// List the plugins found and what they provide.
    List,
    /// Load every plugin (each in an isolated host process) and say what failed and
    /// why; exit 1 if any did.
    Check,
}

/// The seed's flags and the subcommands they mean.
const SEED_FLAGS: &[(&str, &str)] = &[
    ("--recover", "recover"),
    ("--save", "save"),
    ("--stats", "stats"),
    ("--auto-save", "auto-save"),
    ("--detect-crashes", "detect-crashes"),
    ("--cleanup", "cleanup"),
    ("--restart", "restart"),
    ("--relog", "relog"),
];

/// Rewrites the seed's spellings into subcommands: `ms11-recovery --cleanup --max-age 24`
/// becomes `ms11-recovery cleanup --max-age 24`. Only when no subcommand is given.
pub fn rewrite_seed_flags(args: Vec<OsString>) -> Vec<OsString> {
    let is_subcommand = |a: &OsString| {
        let s = a.to_string_lossy();
        !s.starts_with('-') && SUBCOMMANDS.contains(&s.as_ref())
    };
    if args.iter().skip(1).any(is_subcommand) {
        return args;
    }
    let position = args.iter().enumerate().skip(1).find_map(|(i, a)| {
        SEED_FLAGS
            .iter()
            .find(|(flag, _)| a.to_string_lossy() == *flag)
            .map(|(_, cmd)| (i, *cmd))
    });
    match position {
        Some((i, command)) => {
            let mut out = args;
            out.remove(i);
            out.insert(1, OsString::from(command));
            out
        }
        None => args,
    }
}

const SUBCOMMANDS: &[&str] = &[
    "run",
    "recover",
    "save",
    "stats",
    "auto-save",
    "detect-crashes",
    "cleanup",
    "restart",
    "relog",
    "ack",
    "status",
    "config",
    "plugins",
    "help",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        rewrite_seed_flags(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn seed_flags_become_subcommands() {
        assert_eq!(
            rewrite(&["ms11-recovery", "--stats"]),
            ["ms11-recovery", "stats"]
        );
        assert_eq!(
            rewrite(&[
                "ms11-recovery",
                "--config",
                "c.yaml",
                "--cleanup",
                "--max-age",
                "24"
            ]),
            [
                "ms11-recovery",
                "cleanup",
                "--config",
                "c.yaml",
                "--max-age",
                "24"
            ]
        );
        assert_eq!(
            rewrite(&["ms11-recovery", "stats", "--json"]),
            ["ms11-recovery", "stats", "--json"]
        );
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        for name in SUBCOMMANDS {
            if *name != "help" {
                assert!(Cli::command().find_subcommand(name).is_some(), "{name}");
            }
        }
    }
}
