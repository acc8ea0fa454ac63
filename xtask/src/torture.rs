//! `cargo xtask torture` and `cargo xtask fuzz`: the reliability tests, run longer.
//!
//! - torture: the save loop SIGKILLed at random moments (`--kills`, default 10 000;
//!   `--quick` 1 000), disk full / read-only / permission faults on real mounts, every
//!   misbehaving plugin (panic, abort, hang, bad headers, unsafe files), and the bot
//!   protocol torture (random bytes, huge lines, partial JSON, early close) plus the
//!   end-to-end fault tests. Exits non-zero on any failure, loss or duplicate.
//! - fuzz: the property tests (state parser, protocol decoder, log prefilter, config
//!   loader) with many
//!   more cases, repeated until `--minutes` are up.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::util;

/// Options of `cargo xtask torture`.
#[derive(clap::Args)]
pub struct TortureArgs {
    /// SIGKILLs of the save loop.
    #[arg(long, default_value_t = 10_000)]
    kills: usize,
    /// A short run (1 000 kills).
    #[arg(long)]
    quick: bool,
}

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// How long to run.
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Cases per property per round.
    #[arg(long, default_value_t = 5_000)]
    cases: u32,
}

/// One torture step: a test target run with some environment.
struct Step {
    what: &'static str,
    args: &'static [&'static str],
}

const STEPS: &[Step] = &[
    Step {
        what: "disk full, read-only, permission denied (real mounts)",
        args: &["-p", "ms11-persist", "--test", "disk_faults"],
    },
    Step {
        what: "corrupt state files of every kind",
        args: &["-p", "ms11-persist", "--test", "store"],
    },
    Step {
        what: "plugins: panic, abort, hang, bad headers, unsafe files",
        args: &["-p", "ms11-plugin-host", "--test", "plugins"],
    },
    Step {
        what: "bot protocol: random bytes, huge lines, partial JSON, early close",
        args: &["-p", "ms11-agent"],
    },
    Step {
        what: "every fault end to end (lost and duplicated tasks checked)",
        args: &["-p", "ms11-e2e"],
    },
];

fn cargo_test(args: &[&str], envs: &[(&str, String)], capture: bool) -> Result<(bool, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("test")
        .args(args)
        .current_dir(util::workspace_root());
    for (k, v) in envs {
        command.env(k, v);
    }
    if capture {
        let out = command.output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Ok((out.status.success(), text))
    } else {
        Ok((command.status()?.success(), String::new()))
    }
}

/// Runs the torture suite.
pub fn torture(args: &TortureArgs) -> Result<()> {
    let kills = if args.quick { 1_000 } else { args.kills };
    let mut failed = Vec::new();
    let started = Instant::now();
    println!("save loop: {kills} SIGKILLs at random moments ...");
    let (ok, out) = cargo_test(
        &[
            "-p",
            "ms11-persist",
            "--test",
            "kill9",
            "--",
            "kill9_loop",
            "--exact",
            "--nocapture",
        ],
        &[("MS11_KILL9_ITERATIONS", kills.to_string())],
        true,
    )?;
    match out.lines().find(|l| l.starts_with("torture kill9:")) {
        Some(line) if ok => println!("  {}", line.trim_start_matches("torture kill9: ")),
        _ => {
            println!("{out}");
            failed.push("save loop kills");
        }
    }
    for step in STEPS {
        println!("{} ...", step.what);
        let (ok, _) = cargo_test(step.args, &[], false)?;
        if !ok {
            failed.push(step.what);
        }
    }
    println!(
        "\ntorture finished in {:.0} s: {} step(s) failed",
        started.elapsed().as_secs_f64(),
        failed.len()
    );
    if !failed.is_empty() {
        bail!("failed: {}", failed.join("; "));
    }
    Ok(())
}

/// Property suites: (package, test target).
const PROPERTIES: &[(&str, &str)] = &[
    ("ms11-state", "compat"),
    ("ms11-agent", "wire"),
    ("ms11-detect", "prefilter_props"),
    ("ms11-config", "config"),
];

/// Runs the property tests with many cases until the time is up.
pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    let end = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    let mut rounds = 0u32;
    loop {
        for (package, target) in PROPERTIES {
            let (ok, _) = cargo_test(
                &["-p", package, "--test", target, "--quiet"],
                &[
                    ("PROPTEST_CASES", args.cases.to_string()),
                    ("PROPTEST_RNG_SEED", rounds.to_string()),
                ],
                false,
            )?;
            if !ok {
                bail!(
                    "{package}/{target} failed in round {rounds} (PROPTEST_CASES={}, PROPTEST_RNG_SEED={rounds})",
                    args.cases
                );
            }
        }
        rounds += 1;
        if Instant::now() >= end {
            break;
        }
    }
    println!(
        "fuzz: {rounds} round(s) of {} suites x {} cases, no failure",
        PROPERTIES.len(),
        args.cases
    );
    Ok(())
}
