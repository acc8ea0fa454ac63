//! The `ms11-recovery` runner: the command line, the supervisor loop that keeps each
//! session alive, the control socket, and the wiring of every other crate. The binary
//! (`main.rs`) only parses arguments and calls [`run_cli`].

pub mod cli;
pub mod commands;
pub mod control;
pub mod exit_code;
pub mod logging;
pub mod output;
pub mod plugins;
pub mod prompt;
pub mod sd_notify;
pub mod signals;
pub mod stats;
pub mod supervisor;

use std::ffi::OsString;

use anyhow::Result;
use clap::Parser;
use ms11_config::{ConfigSources, LoadedConfig};

use crate::cli::{Cli, Command, ConfigAction, GlobalArgs, PluginsAction};
use crate::control::ControlRequest;
use crate::exit_code::{ExitCode, Failure};
use crate::output::Output;

/// Seconds since the unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Parses `args` (the seed's spellings included), runs the command, and returns the
/// exit code. Errors are printed to stderr here.
pub fn run_cli(args: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(cli::rewrite_seed_flags(args)) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::Usage
            } else {
                ExitCode::Ok
            };
        }
    };
    if let Err(e) = logging::init(
        cli.global.log_format,
        cli.global.verbose,
        cli.global.log_file.as_deref(),
    ) {
        eprintln_error(&format!("cannot set up logging: {e}"));
    }
    match dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            let code = exit_code::classify(&e);
            eprintln_error(&format!("{e:#}"));
            code
        }
    }
}

/// Prints an error to stderr, secrets redacted (an error may echo a config line or a
/// `--set` value). A closed stderr is ignored.
fn eprintln_error(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr().lock(),
        "ms11-recovery: error: {}",
        ms11_redact::redact(message)
    );
}

/// Loads the configuration the way the command line says (also on SIGHUP).
pub(crate) fn load_config(global: &GlobalArgs) -> Result<LoadedConfig> {
    ms11_config::load(&ConfigSources {
        file: global.config.clone(),
        overrides: global.overrides.clone(),
        use_env: true,
        env: Vec::new(),
    })
    .map_err(|e| Failure::new(ExitCode::Config, e.to_string()).into())
}

fn dispatch(cli: &Cli) -> Result<ExitCode> {
    let global = &cli.global;
    let mut out = Output::new(global.json, global.output.clone());
    let loaded = load_config(global)?;
    let config = &loaded.config;
    let only = global.session.as_deref();
    match &cli.command {
        Command::Run => supervisor::run(&loaded, global),
        Command::Recover => commands::recover(config, only, &mut out),
        Command::Stats => commands::stats(config, only, &mut out),
        Command::Cleanup { max_age } => commands::cleanup(config, only, *max_age, &mut out),
        Command::DetectCrashes { from_start } => {
            commands::detect_crashes(config, only, *from_start, &mut out)
        }
        Command::Status => commands::status(config, only, &mut out),
        Command::AutoSave => commands::auto_save(config, &mut out),
        Command::Save => commands::control(
            config,
            ControlRequest::Save {
                session: global.session.clone(),
            },
            &mut out,
        ),
        Command::Restart => commands::control(
            config,
            ControlRequest::Restart {
                session: global.session.clone(),
            },
            &mut out,
        ),
        Command::Relog => commands::control(
            config,
            ControlRequest::Relog {
                session: global.session.clone(),
            },
            &mut out,
        ),
        Command::Screenshot => commands::control(
            config,
            ControlRequest::Screenshot {
                session: global.session.clone(),
            },
            &mut out,
        ),
        Command::Ack { incident } => commands::control(
            config,
            ControlRequest::Ack {
                session: global.session.clone(),
                incident: incident.clone(),
            },
            &mut out,
        ),
        Command::Config {
            action: ConfigAction::Show { show_secrets },
        } => commands::config_show(&loaded, *show_secrets, &mut out),
        Command::Config {
            action: ConfigAction::Check,
        } => {
            let names = plugins::strategy_names(&plugins::load(config).0);
            commands::config_check(&loaded, &names, &mut out)
        }
        Command::Plugins { action } => {
            plugins::command(config, matches!(action, PluginsAction::Check), &mut out)
        }
    }
}
