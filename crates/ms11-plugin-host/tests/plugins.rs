//! Real cdylib plugins (plugins/ and plugins/fixtures/) loaded through real
//! `ms11-plugin-host` child processes: the happy path, the SWGEmu strategy against a
//! real TCP listener, and every way a plugin can be bad.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use ms11_plugin_host::{PluginHostConfig, PluginReport, PluginStrategy, load_all};
use ms11_recover::{Applicability, Notification, Outcome, RecoveryCtx, SessionControl, Strategy};
use ms11_state::{DetectorSource, Incident, IncidentKind};

/// Plugins never touch the session; this one only exists to build a `RecoveryCtx`.
struct NoSession;

impl SessionControl for NoSession {
    fn session_name(&self) -> &str {
        "test"
    }
    fn client_running(&self) -> bool {
        true
    }
    fn stop_client(&mut self) -> Result<String, String> {
        Err("not here".into())
    }
    fn start_client(&mut self) -> Result<(), String> {
        Err("not here".into())
    }
    fn wait_client_ready(&mut self, _: Instant, _: &AtomicBool) -> Result<String, String> {
        Err("not here".into())
    }
    fn request_relog(&mut self, _: Instant) -> Result<(), String> {
        Err("not here".into())
    }
    fn run_command(&mut self, _: &[String], _: Instant) -> Result<(), String> {
        Err("not here".into())
    }
    fn restart_bot(&mut self, _: Instant) -> Result<String, String> {
        Err("not here".into())
    }
    fn notify_human(&mut self, _: &Notification) {}
    fn wait_for_ack(&mut self, _: Instant, _: &AtomicBool) -> bool {
        false
    }
    fn roll_back_state(&mut self, _: Option<u64>) -> Result<u64, String> {
        Err("not here".into())
    }
}

/// The built library of a workspace plugin crate (built on demand).
/// The plugin library of `package`, built for this test run: Cargo gives tests no path
/// to another package's library, so it is built here every time (quick when up to
/// date, once per package and test process), never taken from a stale file.
fn library(package: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let file = dir.join(format!("lib{}.so", package.replace('-', "_")));
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.iter().any(|p| p == package) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        assert!(
            std::process::Command::new(cargo)
                .args(["build", "-p", package])
                .status()
                .unwrap()
                .success(),
            "building `{package}` failed"
        );
        built.push(package.to_owned());
    }
    assert!(
        file.exists(),
        "{} not found after the build",
        file.display()
    );
    file
}

/// A private plugin directory holding copies of `packages`.
fn plugin_dir(packages: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for p in packages {
        let src = library(p);
        let dst = dir.path().join(src.file_name().unwrap());
        std::fs::copy(&src, &dst).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

fn config(dir: &Path) -> PluginHostConfig {
    PluginHostConfig {
        dirs: vec![dir.to_path_buf()],
        host_binary: Some(PathBuf::from(env!("CARGO_BIN_EXE_ms11-plugin-host"))),
        call_timeout: Duration::from_secs(2),
        ..PluginHostConfig::default()
    }
}

fn incident(kind: IncidentKind) -> Incident {
    Incident::new("t-1", kind, DetectorSource::LogPattern, "test", 1.0)
}

fn run(strategy: &mut PluginStrategy, kind: IncidentKind, deadline: Duration) -> Outcome {
    let cancel = AtomicBool::new(false);
    let mut session = NoSession;
    let mut ctx = RecoveryCtx {
        deadline: Instant::now() + deadline,
        cancel: &cancel,
        session: &mut session,
    };
    strategy.recover(&incident(kind), &mut ctx)
}

fn only_error(reports: &[PluginReport]) -> String {
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports[0].result.clone().unwrap_err()
}

#[test]
fn the_example_plugin_loads_and_recovers_like_a_built_in_strategy() {
    let dir = plugin_dir(&["ms11-plugin-example"]);
    let mut cfg = config(dir.path());
    cfg.configs
        .insert("example".into(), serde_json::json!({"wait_ms": 50}));
    let (mut strategies, reports) = load_all(&cfg);
    let (id, _, names, sha) = reports[0].result.clone().unwrap();
    assert_eq!(
        (id.as_str(), names),
        ("example", vec!["example-wait".to_owned()])
    );
    assert_eq!(sha.len(), 64);
    let s = &mut strategies[0];
    assert_eq!(s.name(), "example-wait");
    assert_eq!(
        s.applies_to(&incident(IncidentKind::Disconnect), &NoSession),
        Applicability::Applies
    );
    assert!(
        matches!(s.applies_to(&incident(IncidentKind::Crash), &NoSession), Applicability::Skip(r) if r.contains("only handles disconnects"))
    );
    assert_eq!(
        run(s, IncidentKind::Disconnect, Duration::from_secs(5)),
        Outcome::Recovered
    );
}

#[test]
fn a_bad_plugin_configuration_is_reported() {
    let dir = plugin_dir(&["ms11-plugin-example"]);
    let mut cfg = config(dir.path());
    cfg.configs
        .insert("example".into(), serde_json::json!({"wait_ms": "soon"}));
    let (_, reports) = load_all(&cfg);
    assert!(only_error(&reports).contains("wait_ms"), "{reports:?}");
}

#[test]
fn swg_emu_waits_until_the_login_server_answers() {
    let dir = plugin_dir(&["ms11-plugin-swg-emu"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = config(dir.path());
    cfg.configs.insert(
        "swg-emu".into(),
        serde_json::json!({"host": "127.0.0.1", "port": port}),
    );
    let (mut strategies, _) = load_all(&cfg);
    let s = &mut strategies[0];
    assert_eq!(s.name(), "swg-emu-wait-login-server");
    // Nobody listens yet: it fails at its deadline.
    assert!(
        matches!(run(s, IncidentKind::ServerDown, Duration::from_millis(400)), Outcome::Failed(r) if r.contains("did not answer"))
    );
    // The server comes back while it waits.
    let server = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let _ = listener.accept();
    });
    assert_eq!(
        run(s, IncidentKind::ServerDown, Duration::from_secs(5)),
        Outcome::Recovered
    );
    server.join().unwrap();
    assert!(matches!(
        run(s, IncidentKind::Banned, Duration::from_secs(1)),
        Outcome::Terminal(_)
    ));
}

#[test]
fn a_panicking_plugin_fails_the_attempt_and_is_disabled() {
    let dir = plugin_dir(&["ms11-fixture-plugin-panics"]);
    let (mut strategies, _) = load_all(&config(dir.path()));
    let s = &mut strategies[0];
    let outcome = run(s, IncidentKind::Crash, Duration::from_secs(2));
    assert!(
        matches!(&outcome, Outcome::Failed(r) if r.contains("panicked") && r.contains("fixture plugin panics")),
        "{outcome:?}"
    );
    assert!(
        matches!(run(s, IncidentKind::Crash, Duration::from_secs(2)), Outcome::Failed(r) if r.contains("disabled"))
    );
}

#[test]
fn an_aborting_plugin_takes_down_only_its_host_process() {
    let dir = plugin_dir(&["ms11-fixture-plugin-aborts"]);
    let (mut strategies, _) = load_all(&config(dir.path()));
    let s = &mut strategies[0];
    let outcome = run(s, IncidentKind::Crash, Duration::from_secs(2));
    assert!(
        matches!(&outcome, Outcome::Failed(r) if r.contains("crashed")),
        "{outcome:?}"
    );
    assert!(
        matches!(run(s, IncidentKind::Crash, Duration::from_secs(2)), Outcome::Failed(r) if r.contains("disabled"))
    );
}

#[test]
fn a_hanging_plugin_is_killed_at_its_deadline() {
    let dir = plugin_dir(&["ms11-fixture-plugin-hangs"]);
    let mut cfg = config(dir.path());
    cfg.call_timeout = Duration::from_millis(200);
    let (mut strategies, _) = load_all(&cfg);
    let started = Instant::now();
    let outcome = run(
        &mut strategies[0],
        IncidentKind::Crash,
        Duration::from_millis(300),
    );
    assert!(
        matches!(&outcome, Outcome::Failed(r) if r.contains("did not answer")),
        "{outcome:?}"
    );
    assert!(
        // The fixture sleeps for an hour; a generous bound (for a loaded machine)
        // still proves the 300 ms deadline killed it.
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn wrong_magic_and_a_newer_abi_major_are_refused_with_clear_messages() {
    let dir = plugin_dir(&["ms11-fixture-plugin-bad-magic"]);
    assert!(only_error(&load_all(&config(dir.path())).1).contains("bad magic"));
    let dir = plugin_dir(&["ms11-fixture-plugin-abi-major-2"]);
    let err = only_error(&load_all(&config(dir.path())).1);
    assert!(err.contains("ABI 2.0") && err.contains("rebuild"), "{err}");
}

#[test]
fn unsafe_files_are_refused_before_anything_is_loaded() {
    // World-writable file.
    let dir = plugin_dir(&["ms11-plugin-example"]);
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(only_error(&load_all(&config(dir.path())).1).contains("writable by group or others"));
    // World-writable directory.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(only_error(&load_all(&config(dir.path())).1).contains("its directory"));
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A symlink.
    let other = plugin_dir(&[]);
    std::os::unix::fs::symlink(&file, other.path().join("libms11_linked.so")).unwrap();
    assert!(only_error(&load_all(&config(other.path())).1).contains("symbolic link"));
    // Not in the allow-list.
    let mut cfg = config(dir.path());
    cfg.allow = BTreeMap::from([("example".to_owned(), "00".repeat(32))]);
    assert!(only_error(&load_all(&cfg).1).contains("not in the allow-list"));
    // In the allow-list with its hash: loads.
    let sha = ms11_plugin_host::checks::sha256_hex(&file).unwrap();
    cfg.allow = BTreeMap::from([("example".to_owned(), sha)]);
    assert!(load_all(&cfg).1[0].result.is_ok());
}

#[test]
fn files_that_are_not_plugins_and_duplicate_ids_are_reported() {
    let dir = plugin_dir(&["ms11-plugin-example"]);
    let fake = dir.path().join("libnot_a_plugin.so");
    std::fs::write(&fake, b"not an ELF file").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(dir.path().join("README.txt"), b"ignored").unwrap();
    let copy = dir.path().join("libms11_plugin_example_copy.so");
    std::fs::copy(library("ms11-plugin-example"), &copy).unwrap();
    let (strategies, reports) = load_all(&config(dir.path()));
    assert_eq!(reports.len(), 3, "README.txt is not looked at: {reports:?}");
    assert_eq!(strategies.len(), 1);
    let errors: Vec<String> = reports
        .iter()
        .filter_map(|r| r.result.clone().err())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("cannot load")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("already provided")),
        "{errors:?}"
    );
}

#[test]
fn a_plugin_can_run_in_process_when_asked() {
    let dir = plugin_dir(&["ms11-plugin-example"]);
    let mut cfg = config(dir.path());
    cfg.in_process = vec!["example".into()];
    cfg.configs
        .insert("example".into(), serde_json::json!({"wait_ms": 10}));
    let (mut strategies, reports) = load_all(&cfg);
    assert!(reports[0].result.is_ok(), "{reports:?}");
    let s = &mut strategies[0];
    assert!(s.in_process());
    assert_eq!(
        run(s, IncidentKind::Disconnect, Duration::from_secs(2)),
        Outcome::Recovered
    );
    assert!(matches!(
        s.applies_to(&incident(IncidentKind::Crash), &NoSession),
        Applicability::Skip(_)
    ));
}
