//! The runner's core as a user meets it, with real processes: the loop never blocks on
//! a recovery, every failure goes through the pipeline, and a session whose client or
//! bot is down is never left for good.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::time::{Duration, Instant};

use ms11_e2e::Session;
use ms11_sim::ScenarioOptions;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

fn count(s: &Session, pred: impl Fn(&Value) -> bool) -> usize {
    s.events().iter().filter(|v| pred(v)).count()
}

#[test]
fn acks_and_status_keep_flowing_while_a_client_ignores_sigterm() {
    let options = ScenarioOptions {
        client_args: vec!["--ignore-term".into()],
        task_ms: 100,
        ..ScenarioOptions::default()
    };
    let mut s = Session::new(options);
    s.start_runner();
    s.wait_tasks(3, T);
    let (answer, _) = s.control(&json!({"cmd": "restart"}));
    assert_eq!(answer["ok"], true, "{answer}");
    let id = answer["data"]["main"]["incident"]
        .as_str()
        .unwrap()
        .to_owned();
    s.wait_event("client_stopping", &[], T);
    // The grace is 2 s: the client ignores SIGTERM for all of it.
    let started = Instant::now();
    let done_before = s.state().count_tasks(ms11_state::TaskState::Done);
    let mut slowest = Duration::ZERO;
    let mut asked = 0;
    while started.elapsed() < Duration::from_millis(1800) {
        let (answer, took) = s.control(&json!({"cmd": "status"}));
        assert_eq!(
            answer["data"]["main"]["recovering"],
            id.as_str(),
            "{answer}"
        );
        slowest = slowest.max(took);
        asked += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let acked_meanwhile = count(&s, |v| v["event"] == "task_done").saturating_sub(done_before);
    eprintln!(
        "status answered {asked} times, slowest {slowest:?}; {acked_meanwhile} task(s) acknowledged during the stop"
    );
    assert!(
        slowest < Duration::from_millis(100),
        "status took {slowest:?} during a staged stop"
    );
    assert!(
        acked_meanwhile >= 3,
        "the bot's acks stalled during the staged stop"
    );
    let recovered = s.wait_event("recovered", &[("incident", &id)], T);
    assert_eq!(recovered["strategy"], "restart");
    let incident = s.resolved_incident(&id);
    assert!(
        incident.attempts.iter().any(|a| a.strategy == "restart"),
        "{incident:?}"
    );
    assert_eq!(s.stop_runner(), Some(0));
    s.assert_nothing_lost_or_repeated();
}

#[test]
fn a_client_that_quits_at_login_is_retried_until_it_runs() {
    let mut s = Session::new(ScenarioOptions::default());
    let server_down = s.scenario.root.join("server-down");
    s.scenario.options.client_args = vec![
        "--quit-at-login-while".into(),
        server_down.display().to_string(),
    ];
    s.scenario.options.manual_timeout_secs = 1.0;
    s.scenario.options.extra_toml =
        "[session.recovery.retry]\nbase_secs = 1.0\ncap_secs = 2.0\n".into();
    std::fs::write(s.scenario.config(), s.scenario.config_toml()).unwrap();
    s.start_runner();
    s.wait_tasks(3, T);
    std::fs::write(&server_down, "maintenance").unwrap();
    s.client_command("exit-3");
    let incident = s.wait_event("incident", &[("kind", "process_exit")], T);
    let id = incident["incident"].as_str().unwrap().to_owned();
    // The restarts fail at login, the person is told once, and the session is retried.
    s.wait_event("manual", &[("incident", &id)], T);
    s.wait_event("retry_scheduled", &[("incident", &id)], T);
    let status = s.status();
    assert_eq!(status["health"], "down", "{status}");
    assert!(status["client"]["running"] == false, "{status}");
    let (code, text) = s.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(text.contains("retrying in"), "{text}");
    // Two more rounds while the server stays down: retries go on, nobody is told again.
    s.wait_for("a second retry round", T, |v| {
        v["event"] == "retry" && v["round"].as_u64() >= Some(2)
    });
    let told = count(&s, |v| v["event"] == "manual");
    assert_eq!(told, 1, "a person is told once per storm");
    std::fs::remove_file(&server_down).unwrap();
    let recovered = s.wait_event("recovered", &[("incident", &id)], T);
    assert_eq!(recovered["strategy"], "restart");
    s.wait_for("a healthy status", T, |_| s.status()["health"] == "healthy");
    let done = s.state().count_tasks(ms11_state::TaskState::Done);
    s.wait_tasks(done + 2, T);
    assert_eq!(s.stop_runner(), Some(0));
    s.assert_nothing_lost_or_repeated();
}

#[test]
fn a_client_that_cannot_be_started_is_an_incident_retried_until_it_can() {
    let mut s = Session::new(ScenarioOptions::default());
    let wrapper = s.scenario.root.join("client-wrapper.sh");
    let sim_client = s.scenario.bin_dir.join("sim-client");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {:?} \"$@\"\n",
            sim_client.display().to_string()
        ),
    )
    .unwrap();
    // Not executable: the start fails with EACCES.
    set_mode(&wrapper, 0o644);
    s.scenario.options.client_program = Some(wrapper.clone());
    s.scenario.options.manual_timeout_secs = 1.0;
    s.scenario.options.extra_toml =
        "[session.recovery.retry]\nbase_secs = 1.0\ncap_secs = 2.0\n".into();
    std::fs::write(s.scenario.config(), s.scenario.config_toml()).unwrap();
    s.start_runner();
    let incident = s.wait_event("incident", &[("kind", "start_failed")], T);
    let id = incident["incident"].as_str().unwrap().to_owned();
    s.wait_event("retry_scheduled", &[("incident", &id)], T);
    let status = s.status();
    assert_eq!(status["health"], "down", "{status}");
    assert!(
        status["client"]["start_error"]
            .as_str()
            .is_some_and(|e| e.contains("ermission denied")),
        "{status}"
    );
    set_mode(&wrapper, 0o755);
    let recovered = s.wait_event("recovered", &[("incident", &id)], T);
    assert_eq!(recovered["strategy"], "restart");
    s.wait_tasks(3, T);
    assert_eq!(s.stop_runner(), Some(0));
    s.assert_nothing_lost_or_repeated();
}

#[test]
fn a_bot_speaking_another_protocol_goes_to_a_person_not_a_restart_storm() {
    let options = ScenarioOptions {
        bot_args: vec!["--protocol".into(), "2".into()],
        manual_timeout_secs: 2.0,
        ..ScenarioOptions::default()
    };
    let mut s = Session::new(options);
    s.start_runner();
    let incident = s.wait_event("incident", &[("kind", "protocol_mismatch")], T);
    assert_eq!(incident["subject"], "bot");
    assert_eq!(incident["terminal"], true);
    let id = incident["incident"].as_str().unwrap().to_owned();
    s.wait_event("manual", &[("incident", &id)], T);
    s.wait_event("halted", &[("incident", &id)], T);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        count(&s, |v| v["event"] == "bot_started"),
        1,
        "the bot is not restarted into the same mismatch"
    );
    assert_eq!(
        count(&s, |v| v["event"] == "attempt"
            && v["strategy"] == "restart-bot"),
        0
    );
    let status = s.status();
    assert_eq!(status["health"], "stopped", "{status}");
    assert!(
        status["bot"]["stopped"]
            .as_str()
            .is_some_and(|why| why.contains("protocol")),
        "{status}"
    );
    assert_eq!(
        status["client"]["running"], true,
        "the client keeps running"
    );
    assert_eq!(
        s.stop_runner(),
        Some(8),
        "stopped with a terminal incident open"
    );
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn fields_the_session_does_not_track_are_not_taken_from_the_bots_patches() {
    let mut s = Session::new(ScenarioOptions {
        task_ms: 100,
        extra_toml: "[session_tracking]\ntrack_location = false\n".into(),
        ..ScenarioOptions::default()
    });
    s.start_runner();
    s.wait_tasks(4, T);
    assert_eq!(s.stop_runner(), Some(0));
    let state = s.state();
    // sim-bot patches its planet, zone and xp with every task.
    assert_eq!(
        (state.planet.as_str(), state.zone.as_str()),
        ("unknown", "unknown"),
        "location untracked"
    );
    assert!(
        state.xp_current > 0,
        "xp is still tracked: {}",
        state.xp_current
    );
}
