//! Project automation for ms11-recovery, run as `cargo xtask <command>`.
//!
//! - `run`: the demo (see `demo.rs`).
//! - `test`: every test of the workspace, saying which ones will skip and why.
//! - `bench`: the benchmark suite, each figure next to its same-run baseline.
//! - `soak`: a long randomized fault schedule with recovered/escalated/lost counts.
//! - `torture`, `fuzz`: the reliability and property tests, run longer.
//! - `dist`: release binaries, shell completions and the man page.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod demo;
mod dist;
mod idle;
mod relaunch;
mod torture;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "ms11-recovery project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the demo session.
    Run(demo::DemoArgs),
    /// Run every test of the workspace (`cargo test --workspace`).
    Test {
        /// Extra arguments passed to `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the benchmarks and print each figure with its baseline and ratio.
    Bench(bench::BenchArgs),
    /// Run a long randomized fault schedule and count recovered, escalated, lost, duplicated.
    Soak(demo::SoakArgs),
    /// Run the reliability tests longer: save-loop SIGKILLs, disk faults, bad plugins, protocol abuse.
    Torture(torture::TortureArgs),
    /// Run the property tests with many more cases until the time is up.
    Fuzz(torture::FuzzArgs),
    /// Build the release binaries with shell completions and a man page under target/dist/.
    Dist,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(args) => demo::run(&args),
        Command::Test { args } => test(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Soak(args) => demo::soak(&args),
        Command::Torture(args) => torture::torture(&args),
        Command::Fuzz(args) => torture::fuzz(&args),
        Command::Dist => dist::run(),
    }
}

fn test(extra: &[String]) -> Result<()> {
    if util::which("Xvfb").is_none() {
        eprintln!(
            "note: Xvfb is not installed: the window tests will print 'skipped' and pass without running\n      (they fail instead when MS11_REQUIRE names `xvfb`, as in CI).\n      Install it with `apt-get install xvfb` (CI does) to run them."
        );
    }
    if util::which("python3").is_none() {
        eprintln!(
            "note: python3 is not installed: the example Python bot test will be skipped (it fails instead when MS11_REQUIRE names `python3`)."
        );
    }
    let mut args: Vec<String> = vec!["test".into(), "--workspace".into()];
    args.extend(extra.iter().cloned());
    util::cargo(&args)
}
