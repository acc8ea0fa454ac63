//! `cargo xtask run`: the demo.
//!
//! Works through a task queue with real atomic saves to a real state directory, damages
//! the newest generation on disk as a crash mid-write would on a file system without
//! ordering guarantees, and loads again: the store falls back to the previous
//! generation, quarantines the damaged file, and no acknowledged task is lost.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use ms11_persist::{AtomicStore, StateStore};
use ms11_state::{SessionState, TaskState};

/// Options of `cargo xtask run`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Number of tasks to work through.
    #[arg(long, default_value_t = 12)]
    tasks: usize,
    /// Keep the state directory here instead of a temporary one.
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let path = dir.join("tmp").join("session_state.json");
    println!("state file: {}", path.display());
    let mut store = AtomicStore::open(&path, 3)?;
    let mut state = match store.load()? {
        Some(report) => report.state,
        None => SessionState::new("demo", "naboo", "theed", now()),
    };
    for i in 0..args.tasks {
        state.add_task(&format!("t-{i}"), "hunt kaadu")?;
    }
    let mut acknowledged = Vec::new();
    for (seq, id) in (1u64..).zip(state.task_queue().to_vec()) {
        state.start_task(&id, now())?;
        state.xp_current = (state.xp_current + 120).min(state.xp_next_level);
        state.complete_task(&id, Some(seq), now())?;
        let saved = store.save(&mut state)?;
        acknowledged.push(id.clone());
        println!("task {id:>4} done, saved generation {}", saved.generation);
    }
    let newest = fs::read(&path)?;
    fs::write(&path, &newest[..newest.len() / 2]).context("damaging the newest generation")?;
    println!(
        "damaged the newest generation ({} of {} bytes kept)",
        newest.len() / 2,
        newest.len()
    );
    drop(store);
    let mut store = AtomicStore::open(&path, 3)?;
    let report = store.load()?.context("no state loaded")?;
    for skipped in &report.skipped {
        println!("passed over {}: {}", skipped.path.display(), skipped.reason);
    }
    println!(
        "loaded generation {} from {}",
        report.state.generation,
        report.loaded_from.display()
    );
    let done = report.state.count_tasks(TaskState::Done);
    let lost = acknowledged.len().saturating_sub(done);
    println!(
        "\nsummary: tasks acknowledged {}, done after reload {done}, rolled back to redo {lost}",
        acknowledged.len()
    );
    ensure!(lost <= 1, "more than the last save was lost");
    Ok(())
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
