//! `cargo xtask bench`: runs the criterion benchmarks and the runner measurements (idle
//! cost, `idle.rs`; client exit → relaunch, `relaunch.rs`), then prints one table where each
//! figure stands next to its baseline from the same run, as a ratio, and writes it as
//! JSON and Markdown under `target/bench/`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::util;

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Only run benchmarks whose id contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Only measure the runner (idle cost, client exit → relaunch), skipping the criterion
    /// benchmarks; writes target/bench/runner.md and runner.json.
    #[arg(long)]
    runner_only: bool,
    /// Seconds each idle measurement lasts.
    #[arg(long, default_value_t = 20)]
    idle_secs: u64,
    /// Client exits for the exit-to-relaunch measurement.
    #[arg(long, default_value_t = 50)]
    exits: usize,
}

/// One row of the table: a measurement and the baseline it is compared with.
struct Comparison {
    what: &'static str,
    measured: &'static str,
    baseline: Option<&'static str>,
    goal: &'static str,
}

/// A row from a paired benchmark: measured and baseline alternate in one loop, so the
/// ratio holds even on a noisy machine.
struct PairedRow {
    what: &'static str,
    report: &'static str,
    measured: &'static str,
    baseline: &'static str,
    baseline_name: &'static str,
    goal: &'static str,
}

const PAIRED: &[PairedRow] = &[
    PairedRow {
        what: "screenshot of a 640x400 client window: find, capture, PNG, write (median)",
        report: "screenshot_capture",
        measured: "shot_median_ns",
        baseline: "bare_median_ns",
        baseline_name: "bare X GetImage of the same pixels",
        goal: "milliseconds, once per incident",
    },
    PairedRow {
        what: "atomic save, 5 KB, 3 generations kept (median)",
        report: "paired_save",
        measured: "keep3_median_ns",
        baseline: "bare_median_ns",
        baseline_name: "bare syscall sequence",
        goal: "one rename more than bare",
    },
    PairedRow {
        what: "atomic save, 5 KB, 1 generation kept (median)",
        report: "paired_save",
        measured: "keep1_median_ns",
        baseline: "bare_median_ns",
        baseline_name: "bare syscall sequence",
        goal: "ratio <= 1.1",
    },
    PairedRow {
        what: "atomic save, 1 MB state, during a patch flood (median)",
        report: "patch_flood",
        measured: "save_median_ns",
        baseline: "bare_median_ns",
        baseline_name: "bare syscall sequence, same bytes",
        goal: "validation and serialisation on top of bare",
    },
    PairedRow {
        what: "1 MB state, `state` patch handled, last 10 % of a 2000-message flood (median)",
        report: "patch_flood",
        measured: "patch_end_median_ns",
        baseline: "patch_start_median_ns",
        baseline_name: "first 10 % of the same flood",
        goal: "no growth per message (ratio <= 1.2)",
    },
    PairedRow {
        what: "1 MB state, save after task_done, last 10 % of a 2000-message flood (median)",
        report: "patch_flood",
        measured: "save_end_median_ns",
        baseline: "save_start_median_ns",
        baseline_name: "first 10 % of the same flood",
        goal: "no growth per message (ratio <= 1.2)",
    },
    PairedRow {
        what: "log matching, 5 patterns (ns per line)",
        report: "detect_match",
        measured: "ours5_ns_per_line",
        baseline: "grep5_ns_per_line",
        baseline_name: "grep -E -c, same file and patterns",
        goal: "not slower than grep (ratio <= 1)",
    },
    PairedRow {
        what: "log matching, 50 patterns (ns per line)",
        report: "detect_match",
        measured: "ours50_ns_per_line",
        baseline: "grep50_ns_per_line",
        baseline_name: "grep -E -c, same file and patterns",
        goal: "not slower than grep (ratio <= 1)",
    },
];

const COMPARISONS: &[Comparison] = &[
    Comparison {
        what: "load, 5 KB state",
        measured: "persist/load/5kb",
        baseline: None,
        goal: "< 100 us",
    },
    Comparison {
        what: "atomic save, 1 MB state",
        measured: "persist/atomic_save/1mb",
        baseline: Some("persist/atomic_save/5kb"),
        goal: "scaling",
    },
];

/// Runs the benchmarks and prints the table.
pub fn run(args: &BenchArgs) -> Result<()> {
    let bench_dir = util::target_dir().join("bench");
    fs::create_dir_all(&bench_dir)?;
    let release: Vec<String> = ["build", "--release", "-p", "ms11-runner", "-p", "ms11-sim"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    util::cargo(&release)?;
    println!("measuring the runner's idle cost (1, 10, 100 sessions) ...");
    let (idle_md, idle_json) = crate::idle::rows(std::time::Duration::from_secs(args.idle_secs))?;
    println!(
        "measuring the runner's overhead from client exit to relaunch ({} exits) ...",
        args.exits
    );
    let relaunch = crate::relaunch::measure(args.exits)?;
    if args.runner_only {
        // The criterion rows of an earlier full run stay in summary.md/json.
        let markdown = format!(
            "| what | measured | baseline | ratio | goal |\n|---|---|---|---|---|\n{idle_md}{}",
            relaunch.markdown
        );
        println!("\n{markdown}");
        let json = serde_json::json!({
            "comparisons": [relaunch.comparison],
            "reports": { "runner_idle": idle_json, "relaunch": relaunch.json },
        });
        fs::write(bench_dir.join("runner.md"), &markdown)?;
        fs::write(
            bench_dir.join("runner.json"),
            serde_json::to_string_pretty(&json)?,
        )?;
        println!("written: {}", bench_dir.join("runner.md").display());
        return Ok(());
    }
    let mut cargo_args: Vec<String> = ["bench", "--workspace", "--bench", "*", "--", "--noplot"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if let Some(filter) = &args.filter {
        cargo_args.push(filter.clone());
    }
    // Benchmarks write their scratch files on the same file system as the target dir.
    let scratch = bench_dir.join("scratch");
    fs::create_dir_all(&scratch)?;
    let mut child =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(&cargo_args)
            .env("MS11_BENCH_DIR", &scratch)
            .current_dir(util::workspace_root())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("could not run cargo bench")?;
    // Pass the output through, keeping the one-line JSON reports of the paired benches.
    let mut reports = serde_json::Map::new();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            println!("{line}");
            if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&line) {
                reports.extend(map);
            }
        }
    }
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "cargo bench failed ({status})");
    let estimates = read_estimates(&util::target_dir().join("criterion"))?;
    reports.insert("runner_idle".into(), idle_json);
    reports.insert("relaunch".into(), relaunch.json);
    let (mut markdown, json) = render(&estimates, &reports, vec![relaunch.comparison]);
    markdown.push_str(&idle_md);
    markdown.push_str(&relaunch.markdown);
    println!("\n{markdown}");
    fs::write(bench_dir.join("summary.md"), &markdown)?;
    fs::write(bench_dir.join("summary.json"), json)?;
    println!("written: {}", bench_dir.join("summary.md").display());
    Ok(())
}

/// Mean time in nanoseconds of every benchmark criterion has results for, by id.
fn read_estimates(criterion_dir: &Path) -> Result<Vec<(String, f64)>> {
    let mut found = Vec::new();
    let mut stack: Vec<PathBuf> = vec![criterion_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.ends_with("new/benchmark.json") {
                let meta: serde_json::Value = serde_json::from_slice(&fs::read(&path)?)
                    .with_context(|| format!("reading {}", path.display()))?;
                let estimates_path = path.with_file_name("estimates.json");
                let estimates: serde_json::Value =
                    serde_json::from_slice(&fs::read(&estimates_path)?)
                        .with_context(|| format!("reading {}", estimates_path.display()))?;
                if let (Some(id), Some(mean)) = (
                    meta["full_id"].as_str(),
                    estimates["mean"]["point_estimate"].as_f64(),
                ) {
                    found.push((id.to_owned(), mean));
                }
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

fn human(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn render(
    estimates: &[(String, f64)],
    reports: &serde_json::Map<String, serde_json::Value>,
    extra_rows: Vec<serde_json::Value>,
) -> (String, String) {
    let get = |id: &str| estimates.iter().find(|(k, _)| k == id).map(|(_, v)| *v);
    let mut md =
        String::from("| what | measured | baseline | ratio | goal |\n|---|---|---|---|---|\n");
    let mut rows = Vec::new();
    for row in PAIRED {
        let Some(report) = reports.get(row.report) else {
            continue;
        };
        let (Some(measured), Some(baseline)) =
            (report[row.measured].as_f64(), report[row.baseline].as_f64())
        else {
            continue;
        };
        let ratio = measured / baseline;
        let _ = writeln!(
            md,
            "| {} | {} | {} ({}) | {ratio:.2}x | {} |",
            row.what,
            human(measured),
            human(baseline),
            row.baseline_name,
            row.goal
        );
        rows.push(serde_json::json!({
            "what": row.what, "measured_ns": measured, "baseline": row.baseline_name,
            "baseline_ns": baseline, "ratio": ratio, "goal": row.goal, "paired": true,
        }));
    }
    for c in COMPARISONS {
        let Some(measured) = get(c.measured) else {
            continue;
        };
        let baseline = c.baseline.and_then(get);
        let ratio = baseline.map(|b| measured / b);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            c.what,
            human(measured),
            c.baseline.map_or_else(
                || "-".to_owned(),
                |id| format!("{} ({id})", baseline.map_or_else(|| "n/a".into(), human))
            ),
            ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}x")),
            c.goal
        );
        rows.push(serde_json::json!({
            "what": c.what, "measured_id": c.measured, "measured_ns": measured,
            "baseline_id": c.baseline, "baseline_ns": baseline, "ratio": ratio, "goal": c.goal,
        }));
    }
    rows.extend(extra_rows);
    let json = serde_json::to_string_pretty(
        &serde_json::json!({ "comparisons": rows, "all": estimates, "reports": reports }),
    )
    .unwrap_or_default();
    (md, json)
}
