//! Detector benchmarks: pattern-matching throughput against `grep -E -c` on the same file
//! and patterns (same run, printed as a ratio), line-appended → incident latency and
//! process-exit → incident latency (p50/p99), and the idle CPU cost of the detectors.
//!
//! Sizes are small by default; `MS11_BENCH_LINES` (synthetic log lines, default 400000),
//! `MS11_BENCH_APPENDS` (default 1000) and `MS11_BENCH_IDLE_SECS` (default 5) scale them.
#![allow(clippy::print_stdout, clippy::unwrap_used)]
// criterion_group! generates an undocumented pub fn.
#![allow(missing_docs)]

use std::fs::OpenOptions;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ms11_detect::{
    CrashDumpConfig, ExitWatcher, IncidentIds, LogPatternConfig, PatternSet, PatternSpec,
    StallConfig, StallDetector, WindowProbeConfig, spawn_crash_dump_watcher, spawn_log_detector,
    spawn_window_probe,
};
use ms11_state::IncidentKind;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Patterns in the syntax common to Rust `regex` and POSIX ERE (so grep gets the same).
fn bench_patterns(n: usize) -> Vec<String> {
    let seed = [
        "connection lost",
        "server disconnected",
        "game crashed",
        "memory error",
        "graphics error",
    ];
    if n <= 5 {
        return seed.iter().map(|s| s.to_string()).collect();
    }
    let mut p: Vec<String> = vec![
        r"\baccount (has been )?banned\b".into(),
        r"\byou are banned from this galaxy\b".into(),
        r"\bwrong password\b".into(),
        r"\baccount (has been )?disabled\b".into(),
        r"\bdoes not match that required by the server\b".into(),
        r"\bsession key is (invalid|expired)\b".into(),
        r"\b(server|galaxy) (is )?(currently )?(down|offline|unavailable)\b".into(),
        r"\b(down|closed) for (scheduled )?maintenance\b".into(),
        r"\bserver forced fatal\b".into(),
        r"\b(game|client|application) (has )?crashed\b".into(),
        r"\bconnection (to (the )?(game |login )?(server|galaxy) )?(was |has been )?(lost|closed|dropped)\b".into(),
        r"\bserver disconnected\b".into(),
        r"\bout of memory\b".into(),
        r"\bgraphics subsystem could not be initiali[sz]ed\b".into(),
        r"\banother instance of this application is already running\b".into(),
    ];
    let mut i = 0;
    while p.len() < n {
        p.push(format!(
            r"\berror code {}[0-9]{{2}} in module [a-z]+{i}\b",
            10 + i
        ));
        i += 1;
    }
    p
}

/// A synthetic SWG-like client log: combat, chat, zone loads, and a few errors.
fn write_log(path: &Path, lines: usize) -> u64 {
    let mut w = BufWriter::new(std::fs::File::create(path).unwrap());
    let targets = [
        "a Kreetle",
        "a Gurk",
        "a Tusken Raider",
        "a stormtrooper",
        "a Krayt Dragon",
    ];
    let zones = ["naboo", "tatooine", "corellia", "dantooine", "lok", "rori"];
    let mut bytes = 0u64;
    for i in 0..lines {
        let ts = format!(
            "2026-11-25 {:02}:{:02}:{:02}.{:03}",
            (i / 3_600_000) % 24,
            (i / 60_000) % 60,
            (i / 1000) % 60,
            i % 1000
        );
        let line = match i % 10 {
            0..=4 => format!(
                "{ts} [Combat] You hit {} for {} points of damage.",
                targets[i % 5],
                i % 997
            ),
            5 | 6 => format!(
                "{ts} [Chat] Spatial: Player{}: anyone selling krayt pearls? {}",
                i % 77,
                i
            ),
            7 => format!(
                "{ts} [Zone] Loading terrain/{}.trn ({} objects)",
                zones[i % 6],
                i % 5000
            ),
            8 => format!("{ts} [Net] Ping: {} ms", i % 300),
            _ if i % 10_000 == 9 => {
                format!("{ts} [Net] Connection to server lost. Please reconnect.")
            }
            _ if i % 10_000 == 19 => {
                format!("{ts} [Client] Game has crashed; memory error at 0x{i:08x}")
            }
            _ => format!("{ts} [UI] Mission terminal: {} missions available", i % 40),
        };
        bytes += line.len() as u64 + 1;
        writeln!(w, "{line}").unwrap();
    }
    w.flush().unwrap();
    bytes
}

fn compile(patterns: &[String]) -> PatternSet {
    let specs: Vec<PatternSpec> = patterns
        .iter()
        .enumerate()
        .map(|(i, p)| PatternSpec::new(&format!("p{i}"), p, IncidentKind::Other))
        .collect();
    PatternSet::compile(&specs, &[], true, Duration::ZERO).unwrap()
}

/// Reads the file in 1 MiB chunks (split at the last newline) and counts matching lines.
fn count_matches(set: &PatternSet, path: &Path) -> u64 {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut carry: Vec<u8> = Vec::new();
    let mut hits = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        let data = &buf[..n];
        let cut = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if carry.is_empty() {
            set.scan(&data[..cut], |_, _| hits += 1);
        } else {
            carry.extend_from_slice(&data[..cut]);
            set.scan(&carry, |_, _| hits += 1);
            carry.clear();
        }
        carry.extend_from_slice(&data[cut..]);
    }
    set.scan(&carry, |_, _| hits += 1);
    hits
}

fn grep_count(patterns: &[String], path: &Path, pat_file: &Path) -> Option<(u64, Duration)> {
    std::fs::write(pat_file, patterns.join("\n")).unwrap();
    let t = Instant::now();
    let out = Command::new("grep")
        .arg("-E")
        .arg("-c")
        .arg("-i")
        .arg("-f")
        .arg(pat_file)
        .arg(path)
        .env("LC_ALL", "C")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let took = t.elapsed();
    let n = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((n, took))
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (T, Duration) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed());
        last = Some(v);
    }
    (last.unwrap(), best)
}

fn throughput(c: &mut Criterion) {
    let lines = env_usize("MS11_BENCH_LINES", 400_000);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("client.log");
    let bytes = write_log(&log, lines);
    println!(
        "\nsynthetic log: {lines} lines, {:.1} MB",
        bytes as f64 / 1e6
    );
    let mut group = c.benchmark_group("match");
    group.throughput(Throughput::Elements(lines as u64));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    let mut report = serde_json::Map::new();
    for n in [5usize, 50] {
        let patterns = bench_patterns(n);
        let set = compile(&patterns);
        let (ours, ours_t) = best_of(3, || count_matches(&set, &log));
        let ours_rate = lines as f64 / ours_t.as_secs_f64();
        match (0..3)
            .filter_map(|_| grep_count(&patterns, &log, &dir.path().join("patterns.txt")))
            .min_by_key(|(_, t)| *t)
        {
            Some((grep_n, grep_t)) => {
                let grep_rate = lines as f64 / grep_t.as_secs_f64();
                println!(
                    "{n:>2} patterns: ms11-detect {:.2} M lines/s ({ours} matching lines), grep -E -c {:.2} M lines/s ({grep_n}); ratio ours/grep = {:.2}",
                    ours_rate / 1e6,
                    grep_rate / 1e6,
                    ours_rate / grep_rate
                );
                assert_eq!(
                    ours, grep_n,
                    "ms11-detect and grep disagree on the matching line count"
                );
                report.insert(
                    format!("grep{n}_ns_per_line"),
                    (grep_t.as_nanos() as f64 / lines as f64).into(),
                );
            }
            None => println!(
                "{n:>2} patterns: ms11-detect {:.2} M lines/s ({ours} matching lines); grep baseline skipped (grep not found)",
                ours_rate / 1e6
            ),
        }
        report.insert(
            format!("ours{n}_ns_per_line"),
            (ours_t.as_nanos() as f64 / lines as f64).into(),
        );
        group.bench_function(format!("{n}_patterns"), |b| {
            b.iter(|| count_matches(&set, &log))
        });
    }
    group.finish();
    // One-line JSON report for `cargo xtask bench`.
    println!("{}", serde_json::json!({ "detect_match": report }));
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn latency(_c: &mut Criterion) {
    let appends = env_usize("MS11_BENCH_APPENDS", 1000);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("client.log");
    std::fs::write(&log, b"").unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let cfg = LogPatternConfig {
        default_cooldown_ms: 0,
        ..Default::default()
    };
    let det = spawn_log_detector(&log, &cfg, None, IncidentIds::new("bench"), tx).unwrap();
    let mut f = OpenOptions::new().append(true).open(&log).unwrap();
    let mut samples = Vec::with_capacity(appends);
    for i in 0..appends {
        let t = Instant::now();
        writeln!(
            f,
            "2026-11-25 03:00:00.{i:03} [Net] Connection to server lost. Please reconnect."
        )
        .unwrap();
        f.flush().unwrap();
        rx.recv_timeout(Duration::from_secs(5)).expect("incident");
        samples.push(t.elapsed());
    }
    samples.sort();
    let mut report = serde_json::Map::new();
    report.insert(
        "line_p50_ns".into(),
        (percentile(&samples, 0.5).as_nanos() as f64).into(),
    );
    report.insert(
        "line_p99_ns".into(),
        (percentile(&samples, 0.99).as_nanos() as f64).into(),
    );
    println!(
        "line appended -> incident ({appends} appends): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    );
    det.handle.stop();

    #[cfg(unix)]
    {
        use rustix::process::{Pid, Signal, kill_process};
        let runs = env_usize("MS11_BENCH_EXITS", 200);
        let (tx, rx) = crossbeam_channel::unbounded();
        let ids = IncidentIds::new("bench");
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let child = Command::new("sleep").arg("30").spawn().unwrap();
            let pid = Pid::from_raw(child.id() as i32).unwrap();
            let w = ExitWatcher::spawn(child, "client", ids.clone(), tx.clone()).unwrap();
            let t = Instant::now();
            kill_process(pid, Signal::KILL).unwrap();
            rx.recv_timeout(Duration::from_secs(5))
                .expect("exit incident");
            samples.push(t.elapsed());
            w.join();
        }
        samples.sort();
        println!(
            "process killed -> incident ({runs} exits): p50 {:.3} ms, p99 {:.3} ms",
            percentile(&samples, 0.5).as_secs_f64() * 1e3,
            percentile(&samples, 0.99).as_secs_f64() * 1e3
        );
        report.insert(
            "exit_p50_ns".into(),
            (percentile(&samples, 0.5).as_nanos() as f64).into(),
        );
        report.insert(
            "exit_p99_ns".into(),
            (percentile(&samples, 0.99).as_nanos() as f64).into(),
        );
    }
    println!("{}", serde_json::json!({ "detect_latency": report }));
}

/// CPU time (user + system) of this process, from /proc (Linux only).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10)) // USER_HZ is 100 on Linux
}

fn idle_cost(_c: &mut Criterion) {
    let secs = env_usize("MS11_BENCH_IDLE_SECS", 5) as u64;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("client.log");
    std::fs::write(&log, b"").unwrap();
    let (tx, _rx) = crossbeam_channel::unbounded();
    let ids = IncidentIds::new("idle");
    let _log = spawn_log_detector(
        &log,
        &LogPatternConfig::default(),
        None,
        ids.clone(),
        tx.clone(),
    )
    .unwrap();
    let _dump = spawn_crash_dump_watcher(
        &CrashDumpConfig::default(),
        dir.path(),
        ids.clone(),
        tx.clone(),
    )
    .unwrap();
    let _stall =
        StallDetector::spawn(&StallConfig::default(), "bot", ids.clone(), tx.clone()).unwrap();
    let _win = spawn_window_probe(&WindowProbeConfig::default(), ids, tx).unwrap();
    let Some(before) = cpu_time() else {
        println!("idle cost: skipped (no /proc/self/stat)");
        return;
    };
    std::thread::sleep(Duration::from_secs(secs));
    let used = cpu_time().unwrap() - before;
    println!(
        "idle cost of log+crash-dump+stall+window detectors over {secs} s: {} ms CPU = {:.3} % (10 ms clock resolution)",
        used.as_millis(),
        used.as_secs_f64() / secs as f64 * 100.0
    );
}

criterion_group!(benches, throughput, latency, idle_cost);
criterion_main!(benches);
