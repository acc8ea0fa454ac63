//! The runner's idle cost: CPU share and memory of `ms11-recovery run` supervising N
//! quiet sessions (each a real client process that does nothing), measured from
//! `/proc` over a fixed window. Part of `cargo xtask bench`.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::util;

/// CPU percent (of one core) and resident memory of the runner with `sessions` sessions.
pub fn measure(sessions: usize, window: Duration) -> Result<(f64, u64)> {
    let dir = tempfile::tempdir()?;
    let mut config = format!(
        "state_file = {:?}\ncontinue_previous = \"yes\"\nauto_restart = true\n",
        dir.path()
            .join("state/session_state.json")
            .display()
            .to_string()
    );
    for n in 0..sessions {
        let _ = write!(
            config,
            "\n[[session]]\nname = \"s{n}\"\n[session.client]\ncommand = [\"sleep\", \"3600\"]\n[session.ready]\nkind = \"delay\"\n[session.window]\nenabled = false\n"
        );
    }
    let path = dir.path().join("ms11.toml");
    std::fs::write(&path, config)?;
    let mut runner = Command::new(util::target_dir().join("release").join("ms11-recovery"))
        .args(["--config"])
        .arg(&path)
        .args(["--log-format", "json", "run"])
        .env_remove("DISPLAY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the release ms11-recovery")?;
    std::thread::sleep(Duration::from_secs(3));
    let pid = runner.id();
    let ticks = || -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(field(11) + field(12)) // utime + stime
    };
    let before = ticks()?;
    std::thread::sleep(window);
    let after = ticks()?;
    let rss_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = runner.wait();
    // Clock ticks are 1/100 s on Linux.
    #[allow(clippy::cast_precision_loss)]
    let cpu = (after - before) as f64 / 100.0 / window.as_secs_f64() * 100.0;
    Ok((cpu, rss_kb))
}

/// The table rows for 1, 10 and 100 sessions.
pub fn rows(window: Duration) -> Result<(String, serde_json::Value)> {
    let mut md = String::new();
    let mut json = serde_json::Map::new();
    for sessions in [1usize, 10, 100] {
        let (cpu, rss) = measure(sessions, window)?;
        let _ = writeln!(
            md,
            "| runner idle, {sessions} quiet session(s), {} s | {cpu:.3} % CPU, {:.1} MB RSS | - | - | 100 sessions < 1 % CPU |",
            window.as_secs(),
            rss as f64 / 1024.0
        );
        json.insert(
            format!("sessions_{sessions}"),
            serde_json::json!({"cpu_percent": cpu, "rss_kb": rss}),
        );
    }
    Ok((md, serde_json::Value::Object(json)))
}
