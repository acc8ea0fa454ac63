//! The real client's platform: a Windows program (`crates/ms11-sim/win32`) under Wine
//! on Xvfb, supervised by the real runner. A crash brings up winedbg's "Program Error"
//! dialog and a "Wine Debugger" console in processes of their own; every crash must be
//! one incident and one restart, and leave no process or window behind.
//!
//! Needs Xvfb, Wine and mingw: without them these tests say why and skip, unless
//! `MS11_REQUIRE` names `wine` (CI), where they fail instead.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ms11_e2e::{Display, Session};
use ms11_sim::ScenarioOptions;
use ms11_sim::win32;
use ms11_test_support::Need;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// A display, a built test client and a fresh prefix, or why not.
struct WineSetup {
    display: Display,
    exe: PathBuf,
    prefix: PathBuf,
    _dir: tempfile::TempDir,
}

/// One Wine test at a time: the checks for leftover `winedbg` processes look at the
/// whole machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn wine_setup(test: &str, crash_dialog: bool) -> Option<WineSetup> {
    let display = match Display::start(400..500) {
        Ok(display) => display,
        Err(why) => {
            ms11_test_support::skip(test, Need::Xvfb, &why);
            return None;
        }
    };
    if let Some(why) = win32::missing_tools() {
        ms11_test_support::skip(test, Need::Wine, &why);
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = win32::build_test_client(dir.path()).unwrap();
    let prefix = dir.path().join("prefix");
    let started = Instant::now();
    win32::create_prefix(&prefix, &display.display, crash_dialog).unwrap();
    eprintln!("{test}: Wine prefix created in {:?}", started.elapsed());
    Some(WineSetup {
        display,
        exe,
        prefix,
        _dir: dir,
    })
}

fn count(s: &Session, pred: impl Fn(&Value) -> bool) -> usize {
    s.events().iter().filter(|v| pred(v)).count()
}

/// Waits until the client passed its readiness check.
fn wait_ready(s: &Session) {
    let end = Instant::now() + T;
    while s.status()["client"]["ready"] != true {
        assert!(
            Instant::now() < end,
            "the client did not become ready: {}",
            s.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a process runs in this Wine prefix (its environment names it). Other Wine
/// tests may run at the same time, with processes of the same names.
fn in_prefix(pid: u32, prefix: &Path) -> bool {
    let wanted = format!("WINEPREFIX={}", prefix.display());
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == wanted.as_bytes()))
}

/// What a crash of a Wine program leaves when nobody cleans up: the processes of this
/// prefix and the windows of this display.
fn leftovers(wine: &WineSetup) -> (Vec<(u32, String)>, Vec<String>) {
    let mut processes = win32::processes_named("winedbg");
    processes.extend(win32::processes_named("conhost.exe"));
    processes.retain(|(pid, _)| in_prefix(*pid, &wine.prefix));
    let windows = win32::window_titles(&wine.display.display)
        .unwrap()
        .into_iter()
        .filter(|t| t.contains("Program Error") || t.contains("Wine Debugger"))
        .collect();
    (processes, windows)
}

#[test]
fn ten_wine_crashes_are_ten_incidents_ten_restarts_and_leave_nothing_behind() {
    let test = "ten_wine_crashes_are_ten_incidents_ten_restarts_and_leave_nothing_behind";
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(wine) = wine_setup(test, true) else {
        return;
    };
    let options = ScenarioOptions {
        window: true,
        wine_client: Some((wine.exe.clone(), wine.prefix.clone())),
        breaker_max: 50,
        ..ScenarioOptions::default()
    };
    let mut s = Session::new(options).with_display(&wine.display.display);
    s.start_runner();
    wait_ready(&s);
    let crashes = 10;
    let mut recover_ms = Vec::new();
    let mut most_left_during = 0;
    for n in 1..=crashes {
        let before = count(&s, |v| v["event"] == "recovered");
        let crashed = Instant::now();
        s.client_command("crash");
        let end = Instant::now() + T;
        while count(&s, |v| v["event"] == "recovered") <= before {
            assert!(Instant::now() < end, "crash {n} was not recovered");
            std::thread::sleep(Duration::from_millis(50));
        }
        recover_ms.push(crashed.elapsed().as_millis());
        wait_ready(&s);
        let (processes, windows) = leftovers(&wine);
        most_left_during = most_left_during.max(processes.len() + windows.len());
        assert!(
            processes.is_empty() && windows.is_empty(),
            "after crash {n}: left behind {processes:?} {windows:?}"
        );
    }
    let incidents = count(&s, |v| v["event"] == "incident");
    let restarts = count(&s, |v| {
        v["event"] == "attempt" && v["strategy"] == "restart"
    });
    let starts = count(&s, |v| v["event"] == "client_started");
    let dialogs = count(&s, |v| {
        v["event"] == "evidence" && v["kind"] == "error_dialog"
    }) + count(&s, |v| {
        v["event"] == "incident" && v["kind"] == "error_dialog"
    });
    recover_ms.sort_unstable();
    eprintln!(
        "wine: {crashes} crashes, {incidents} incidents, {restarts} restarts, {starts} client starts, \
         {dialogs} crash dialogs seen, crash → recovered p50 {} ms max {} ms, leftovers after each: {most_left_during}",
        recover_ms[recover_ms.len() / 2],
        recover_ms[recover_ms.len() - 1]
    );
    assert_eq!(incidents, crashes, "one incident per crash");
    // Each incident carries a screenshot taken before the client was stopped.
    let state = s.state();
    for incident in &state.crash_history {
        let file = incident.screenshot.clone().unwrap_or_else(|| {
            panic!("incident {} has no screenshot", incident.id);
        });
        let png = std::fs::read(&file).unwrap();
        assert_eq!(&png[..4], b"\x89PNG", "{file}");
    }
    // The crash dialogs are recorded with the process that showed them.
    let dialogs_by_winedbg = state
        .crash_history
        .iter()
        .flat_map(|i| &i.evidence)
        .filter(|e| e.kind == ms11_state::IncidentKind::ErrorDialog)
        .filter(|e| e.detail.contains("shown by winedbg"))
        .count();
    assert!(dialogs_by_winedbg >= 1, "{:#?}", state.crash_history);
    let (code, text) = s.cli(&["screenshot"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(".png") && text.contains("Star Wars Galaxies"),
        "{text}"
    );
    assert_eq!(restarts, crashes, "one restart per crash");
    assert_eq!(starts, crashes + 1, "the first start and one per crash");
    assert_eq!(s.stop_runner(), Some(0));
    let (processes, windows) = leftovers(&wine);
    assert!(
        processes.is_empty() && windows.is_empty(),
        "{processes:?} {windows:?}"
    );
    let clients: Vec<_> = win32::processes_named("swg_test_client")
        .into_iter()
        .filter(|(pid, _)| in_prefix(*pid, &wine.prefix))
        .collect();
    assert!(
        clients.is_empty(),
        "the client is gone after the runner stopped: {clients:?}"
    );
    s.assert_nothing_lost_or_repeated();
}

#[test]
fn without_the_crash_dialog_a_wine_crash_is_an_exit_and_recovered_at_once() {
    let test = "without_the_crash_dialog_a_wine_crash_is_an_exit_and_recovered_at_once";
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(wine) = wine_setup(test, false) else {
        return;
    };
    let options = ScenarioOptions {
        window: true,
        wine_client: Some((wine.exe.clone(), wine.prefix.clone())),
        // Ready when the client's window is mapped, not at its login line.
        ready_kind: "window",
        ..ScenarioOptions::default()
    };
    let mut s = Session::new(options).with_display(&wine.display.display);
    s.start_runner();
    wait_ready(&s);
    s.client_command("crash");
    let incident = s.wait_for("the crash's incident", T, |v| v["event"] == "incident");
    let id = incident["incident"].as_str().unwrap().to_owned();
    let recovered = s.wait_event("recovered", &[("incident", &id)], T);
    assert_eq!(recovered["strategy"], "restart");
    wait_ready(&s);
    let record = s.resolved_incident(&id);
    assert_eq!(record.kind, ms11_state::IncidentKind::Crash, "{record:?}");
    let ready = s.wait_event("client_ready", &[], T);
    assert_eq!(
        ready["evidence"], "window \"Star Wars Galaxies\"",
        "readiness waited for the window: {ready}"
    );
    assert_eq!(count(&s, |v| v["event"] == "incident"), 1);
    let (processes, windows) = leftovers(&wine);
    assert!(
        processes.is_empty() && windows.is_empty(),
        "{processes:?} {windows:?}"
    );
    assert_eq!(s.stop_runner(), Some(0));
}

#[test]
fn a_hung_wine_client_stops_answering_pings_and_is_restarted() {
    let test = "a_hung_wine_client_stops_answering_pings_and_is_restarted";
    let Some(wine) = wine_setup(test, true) else {
        return;
    };
    // Short times for the test: a ping every second, unanswered for 3 s is a hang; the
    // frames check (for a window without _NET_WM_PING) after 5 s.
    let (ping_interval_ms, ping_timeout_ms): (u64, u64) = (1000, 3000);
    let options = ScenarioOptions {
        window: true,
        wine_client: Some((wine.exe.clone(), wine.prefix.clone())),
        window_toml: format!(
            "ping_interval_ms = {ping_interval_ms}\nping_timeout_ms = {ping_timeout_ms}\n\
             frame_interval_ms = 1000\nfrozen_after_ms = 5000\n"
        ),
        ..ScenarioOptions::default()
    };
    let mut s = Session::new(options).with_display(&wine.display.display);
    s.start_runner();
    wait_ready(&s);
    // A responsive client is never reported, whatever the checks see.
    std::thread::sleep(Duration::from_millis(ping_timeout_ms + 2000));
    assert_eq!(
        count(&s, |v| v["event"] == "incident"),
        0,
        "{:?}",
        s.events()
    );

    let hung = Instant::now();
    s.client_command("hang");
    let incident = s.wait_for("the hang's incident", T, |v| v["event"] == "incident");
    let detected = hung.elapsed();
    assert_eq!(incident["kind"], "not_responding", "{incident}");
    assert_eq!(incident["subject"], "client", "{incident}");
    let message = incident["message"].as_str().unwrap_or_default();
    assert!(message.contains("_NET_WM_PING"), "{message}");
    let id = incident["incident"].as_str().unwrap().to_owned();
    let recovered = s.wait_event("recovered", &[("incident", &id)], T);
    assert_eq!(recovered["strategy"], "restart");
    let recovered_after = hung.elapsed();
    wait_ready(&s);
    let record = s.resolved_incident(&id);
    assert_eq!(record.pattern.as_deref(), Some("ping"), "{record:?}");
    eprintln!(
        "wine hang: `hang` command → not_responding incident in {} ms (ping every {ping_interval_ms} ms, \
         timeout {ping_timeout_ms} ms), → recovered in {} ms; {message}",
        detected.as_millis(),
        recovered_after.as_millis()
    );
    // The command is read within 100 ms; the last answered ping was at most one interval
    // before the hang; the fuser waits 250 ms at most.
    assert!(
        detected >= Duration::from_millis(ping_timeout_ms - ping_interval_ms)
            && detected < Duration::from_millis(ping_timeout_ms + ping_interval_ms + 2000),
        "detected after {detected:?}"
    );
    assert_eq!(
        count(&s, |v| v["event"] == "incident"),
        1,
        "one hang, one incident"
    );
    assert_eq!(
        count(&s, |v| v["event"] == "client_started"),
        2,
        "the first start and the restart"
    );
    assert_eq!(s.stop_runner(), Some(0));
    let left: Vec<_> = win32::processes_named("swg_test_client")
        .into_iter()
        .filter(|(pid, _)| in_prefix(*pid, &wine.prefix))
        .collect();
    assert!(left.is_empty(), "the hung client is gone: {left:?}");
}
