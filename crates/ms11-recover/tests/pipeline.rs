//! The pipeline's rules, driven deterministically: a fake clock (backoff sleeps advance
//! it instead of sleeping) and a scripted session that records what the strategies did.
//! Real processes are exercised by the end-to-end tests (tests/).

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ms11_recover::{Clock, Notification, Pipeline, RecoverySettings, SessionControl, builtin};
use ms11_state::{
    AttemptOutcome, DetectorSource, Incident, IncidentKind, RecoveryPolicyState, ResolutionStatus,
};

#[derive(Default)]
struct FakeClock {
    elapsed: Mutex<Duration>,
    sleeps: Mutex<Vec<Duration>>,
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now) + *self.elapsed.lock().unwrap()
    }
    fn unix(&self) -> f64 {
        1_700_000_000.0 + self.elapsed.lock().unwrap().as_secs_f64()
    }
    fn sleep(&self, d: Duration, _cancel: &AtomicBool) -> bool {
        *self.elapsed.lock().unwrap() += d;
        self.sleeps.lock().unwrap().push(d);
        true
    }
}

#[derive(Default)]
struct Script {
    client_running: bool,
    ready: VecDeque<Result<String, String>>,
    relog: VecDeque<Result<(), String>>,
    ack: bool,
    calls: Vec<String>,
}

impl SessionControl for Script {
    fn session_name(&self) -> &str {
        "main"
    }
    fn client_running(&self) -> bool {
        self.client_running
    }
    fn stop_client(&mut self) -> Result<String, String> {
        self.calls.push("stop".into());
        self.client_running = false;
        Ok("exited after the stop signal".into())
    }
    fn start_client(&mut self) -> Result<(), String> {
        self.calls.push("start".into());
        self.client_running = true;
        Ok(())
    }
    fn wait_client_ready(&mut self, _d: Instant, _c: &AtomicBool) -> Result<String, String> {
        self.calls.push("ready".into());
        self.ready
            .pop_front()
            .unwrap_or(Ok("Login successful".into()))
    }
    fn request_relog(&mut self, _d: Instant) -> Result<(), String> {
        self.calls.push("relog".into());
        self.relog.pop_front().unwrap_or(Ok(()))
    }
    fn run_command(&mut self, argv: &[String], _d: Instant) -> Result<(), String> {
        self.calls.push(format!("run {}", argv.join(" ")));
        Ok(())
    }
    fn restart_bot(&mut self, _d: Instant) -> Result<String, String> {
        self.calls.push("restart_bot".into());
        Ok("hello".into())
    }
    fn notify_human(&mut self, n: &Notification) {
        self.calls.push(format!("notify {}", n.incident));
    }
    fn wait_for_ack(&mut self, _d: Instant, _c: &AtomicBool) -> bool {
        self.calls.push("wait_ack".into());
        self.ack
    }
    fn roll_back_state(&mut self, _g: Option<u64>) -> Result<u64, String> {
        self.calls.push("roll_back".into());
        Ok(7)
    }
}

fn pipeline(settings: &RecoverySettings, clock: &Arc<FakeClock>) -> Pipeline {
    let strategies = ["restart", "relog", "manual", "restore"]
        .iter()
        .filter_map(|n| builtin(n, settings))
        .collect();
    Pipeline::new(strategies, settings, Arc::clone(clock) as Arc<dyn Clock>).with_seed(1)
}

/// One first round of the standard pipeline.
fn run_once(
    settings: &RecoverySettings,
    clock: &Arc<FakeClock>,
    incident: &mut Incident,
    policy: &mut RecoveryPolicyState,
    session: &mut Script,
) -> ms11_recover::PipelineResult {
    pipeline(settings, clock).run(incident, policy, session, &AtomicBool::new(false))
}

fn incident(kind: IncidentKind) -> Incident {
    Incident::new(
        "main-1",
        kind,
        DetectorSource::LogPattern,
        "something",
        1_700_000_000.0,
    )
}

#[test]
fn a_disconnect_skips_restart_and_is_recovered_by_relog() {
    let clock = Arc::new(FakeClock::default());
    let mut session = Script {
        client_running: true,
        ..Script::default()
    };
    let mut inc = incident(IncidentKind::Disconnect);
    let mut policy = RecoveryPolicyState::default();
    let result = pipeline(&RecoverySettings::default(), &clock).run(
        &mut inc,
        &mut policy,
        &mut session,
        &AtomicBool::new(false),
    );
    assert_eq!(
        (result.status, result.strategy.as_deref()),
        (ResolutionStatus::Recovered, Some("relog"))
    );
    let outcomes: Vec<(&str, AttemptOutcome)> = inc
        .attempts
        .iter()
        .map(|a| (a.strategy.as_str(), a.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("restart", AttemptOutcome::Skipped),
            ("relog", AttemptOutcome::Recovered)
        ]
    );
    assert_eq!(session.calls, ["relog"]);
    assert!(inc.crash.recovery_successful);
    assert_eq!(policy.strategies["relog"].total_successes, 1);
}

#[test]
fn failures_back_off_exponentially_then_escalate_to_the_next_strategy() {
    let clock = Arc::new(FakeClock::default());
    let mut session = Script {
        ready: VecDeque::from([Err("no login".into()), Err("no login".into())]),
        ack: true,
        ..Script::default()
    };
    let mut inc = incident(IncidentKind::Crash);
    let mut policy = RecoveryPolicyState::default();
    let result = pipeline(&RecoverySettings::default(), &clock).run(
        &mut inc,
        &mut policy,
        &mut session,
        &AtomicBool::new(false),
    );
    // restart failed twice (its attempts), relog does not apply to a crash, manual was acked.
    assert_eq!(
        (result.status, result.strategy.as_deref()),
        (ResolutionStatus::Recovered, Some("manual"))
    );
    let outcomes: Vec<(&str, AttemptOutcome)> = inc
        .attempts
        .iter()
        .map(|a| (a.strategy.as_str(), a.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("restart", AttemptOutcome::Failed),
            ("restart", AttemptOutcome::Failed),
            ("relog", AttemptOutcome::Skipped),
            ("manual", AttemptOutcome::Recovered),
        ]
    );
    let sleeps = clock.sleeps.lock().unwrap().clone();
    assert_eq!(
        sleeps.len(),
        1,
        "one backoff between the two restart tries: {sleeps:?}"
    );
    // base 500 ms, first failure: between half and all of it.
    assert!(
        sleeps[0] >= Duration::from_millis(250) && sleeps[0] <= Duration::from_millis(500),
        "{sleeps:?}"
    );
    let restart = &policy.strategies["restart"];
    assert_eq!(
        (restart.consecutive_failures, restart.total_attempts),
        (2, 2)
    );
    assert!(
        restart.last_backoff_ms >= 500 && restart.last_backoff_ms <= 1000,
        "the delay doubles: {}",
        restart.last_backoff_ms
    );
}

#[test]
fn a_crash_loop_trips_the_breaker_and_goes_straight_to_manual() {
    let clock = Arc::new(FakeClock::default());
    let settings = RecoverySettings::default();
    let mut policy = RecoveryPolicyState::default();
    for n in 0..settings.breaker.max_incidents {
        let mut session = Script::default();
        let mut inc = incident(IncidentKind::Crash);
        let r = run_once(&settings, &clock, &mut inc, &mut policy, &mut session);
        assert_eq!(r.strategy.as_deref(), Some("restart"), "incident {n}");
    }
    let mut session = Script {
        ack: false,
        ..Script::default()
    };
    let mut inc = incident(IncidentKind::Crash);
    let r = run_once(&settings, &clock, &mut inc, &mut policy, &mut session);
    assert_eq!(r.status, ResolutionStatus::Escalated);
    assert!(policy.breaker.tripped_at.is_some());
    assert!(
        !session.calls.contains(&"start".to_owned()),
        "no restart while the breaker is open: {:?}",
        session.calls
    );
    assert!(session.calls.contains(&"wait_ack".to_owned()));
}

#[test]
fn a_terminal_condition_is_never_retried() {
    let clock = Arc::new(FakeClock::default());
    let mut session = Script {
        client_running: true,
        ack: false,
        ..Script::default()
    };
    let mut inc = incident(IncidentKind::Banned);
    assert!(inc.terminal);
    let mut policy = RecoveryPolicyState::default();
    let r = pipeline(&RecoverySettings::default(), &clock).run(
        &mut inc,
        &mut policy,
        &mut session,
        &AtomicBool::new(false),
    );
    assert_eq!(r.status, ResolutionStatus::Terminal);
    assert_eq!(session.calls, ["notify main-1", "wait_ack"]);
}

#[test]
fn budgets_survive_a_new_pipeline_so_a_runner_restart_is_no_retry_storm() {
    let clock = Arc::new(FakeClock::default());
    let mut settings = RecoverySettings::default();
    settings.restart.budget = 2;
    settings.breaker.max_incidents = 100;
    let mut policy = RecoveryPolicyState::default();
    for _ in 0..2 {
        let mut session = Script::default();
        let r = pipeline(&settings, &clock).run(
            &mut incident(IncidentKind::Crash),
            &mut policy,
            &mut session,
            &AtomicBool::new(false),
        );
        assert_eq!(r.strategy.as_deref(), Some("restart"));
    }
    // The persisted policy goes through JSON like a runner restart would.
    let policy_json = serde_json::to_string(&policy).unwrap();
    let mut policy: RecoveryPolicyState = serde_json::from_str(&policy_json).unwrap();
    let mut session = Script::default();
    let mut inc = incident(IncidentKind::Crash);
    let r = run_once(&settings, &clock, &mut inc, &mut policy, &mut session);
    assert_eq!(
        r.strategy.as_deref(),
        Some("restore"),
        "restart's budget is spent: escalated past it"
    );
    assert!(
        inc.attempts.iter().any(|a| a.strategy == "restart"
            && a.reason.as_deref().is_some_and(|r| r.contains("budget")))
    );
}

#[test]
fn a_person_is_told_once_per_storm_and_never_skipped_for_budget() {
    let clock = Arc::new(FakeClock::default());
    let mut settings = RecoverySettings::default();
    settings.restart.budget = 1;
    settings.manual.budget = 0; // even a zero budget never silences the person
    let mut session = Script {
        ready: (0..8).map(|_| Err("quits at login".into())).collect(),
        ..Script::default()
    };
    let mut policy = RecoveryPolicyState::default();
    let mut first = incident(IncidentKind::ProcessExit);
    let result = run_once(&settings, &clock, &mut first, &mut policy, &mut session);
    assert_eq!(result.status, ResolutionStatus::Escalated);
    assert!(
        session.calls.contains(&"notify main-1".to_owned()),
        "{:?}",
        session.calls
    );
    assert!(
        policy
            .storm
            .as_ref()
            .is_some_and(|s| s.person_told && s.incidents == 1)
    );

    // The second failure of the same storm: restart's budget is spent, and the person
    // was told already: nobody is told again, and the result is still "escalated".
    session.calls.clear();
    let mut second = incident(IncidentKind::ProcessExit);
    second.id = "main-2".into();
    let result = run_once(&settings, &clock, &mut second, &mut policy, &mut session);
    assert_eq!(result.status, ResolutionStatus::Escalated);
    assert!(
        !session.calls.iter().any(|c| c.starts_with("notify")),
        "{:?}",
        session.calls
    );
    let manual = second
        .attempts
        .iter()
        .find(|a| a.strategy == "manual")
        .unwrap();
    assert_eq!(manual.outcome, AttemptOutcome::Skipped);
    assert!(manual.reason.as_deref().unwrap().contains("already told"));
    assert_eq!(policy.storm.as_ref().map(|s| s.incidents), Some(2));
}

#[test]
fn a_retry_round_ignores_spent_budgets_and_backoff_and_a_recovery_ends_the_storm() {
    let clock = Arc::new(FakeClock::default());
    let mut settings = RecoverySettings::default();
    settings.restart.budget = 1;
    let mut session = Script {
        ready: (0..5).map(|_| Err("down".into())).collect(),
        ..Script::default()
    };
    let mut policy = RecoveryPolicyState::default();
    let mut inc = incident(IncidentKind::ProcessExit);
    let cancel = AtomicBool::new(false);
    let _ = pipeline(&settings, &clock).run(&mut inc, &mut policy, &mut session, &cancel);
    let restarts = |i: &Incident| {
        i.attempts
            .iter()
            .filter(|a| a.strategy == "restart" && a.outcome != AttemptOutcome::Skipped)
            .count()
    };
    assert_eq!(restarts(&inc), 1, "budget 1: one try in the first round");

    session.calls.clear();
    let sleeps_before = clock.sleeps.lock().unwrap().len();
    let result = pipeline(&settings, &clock).run_round(
        &mut inc,
        &mut policy,
        &mut session,
        &cancel,
        ms11_recover::Round::Retry,
    );
    assert_eq!(restarts(&inc), 2, "one try per retry round, budget or not");
    assert_eq!(
        clock.sleeps.lock().unwrap().len(),
        sleeps_before,
        "no backoff sleep"
    );
    assert_eq!(
        result.status,
        ResolutionStatus::Escalated,
        "{:?}",
        session.calls
    );

    session.calls.clear();
    let result = pipeline(&settings, &clock).run_round(
        &mut inc,
        &mut policy,
        &mut session,
        &cancel,
        ms11_recover::Round::Retry,
    );
    assert_eq!(result.status, ResolutionStatus::Recovered);
    assert_eq!(policy.storm, None, "a recovery ends the storm");
    assert_eq!(
        policy.breaker.recent_incidents.len(),
        1,
        "retries are not new incidents"
    );
}

#[test]
fn restart_bot_is_a_strategy_like_any_other() {
    let clock = Arc::new(FakeClock::default());
    let settings = RecoverySettings::default();
    let strategies = ["restart-bot", "manual"]
        .iter()
        .filter_map(|n| builtin(n, &settings))
        .collect();
    let mut p = Pipeline::new(strategies, &settings, Arc::clone(&clock) as Arc<dyn Clock>);
    let mut session = Script::default();
    let mut inc = Incident::new(
        "main-3",
        IncidentKind::Stall,
        DetectorSource::Stall,
        "quiet",
        1.0,
    );
    let mut policy = RecoveryPolicyState::default();
    let result = p.run(&mut inc, &mut policy, &mut session, &AtomicBool::new(false));
    assert_eq!(result.strategy.as_deref(), Some("restart-bot"));
    assert_eq!(session.calls, ["restart_bot"]);
    assert_eq!(policy.strategies["restart-bot"].total_successes, 1);

    let mut mismatch = Incident::new(
        "main-4",
        IncidentKind::ProtocolMismatch,
        DetectorSource::Agent,
        "protocol 2",
        2.0,
    );
    assert!(
        mismatch.terminal,
        "a protocol mismatch is terminal for the bot"
    );
    session.calls.clear();
    let result = p.run(
        &mut mismatch,
        &mut policy,
        &mut session,
        &AtomicBool::new(false),
    );
    assert_eq!(result.status, ResolutionStatus::Terminal);
    assert_eq!(
        session.calls,
        ["notify main-4", "wait_ack"],
        "no restart storm"
    );
}

#[test]
fn counters_at_their_maximum_in_a_loaded_policy_saturate_instead_of_panicking() {
    // A state file (hand-edited, damaged, hostile) can hold any number.
    let policy_json = format!(
        r#"{{"strategies":{{"restart":{{"consecutive_failures":{},"total_attempts":{max},"total_successes":{max}}}}}}}"#,
        u32::MAX,
        max = u64::MAX
    );
    let mut policy: RecoveryPolicyState = serde_json::from_str(&policy_json).unwrap();
    let clock = Arc::new(FakeClock::default());
    let mut settings = RecoverySettings::default();
    settings.breaker.max_incidents = 100;
    let mut session = Script::default();
    let r = pipeline(&settings, &clock).run(
        &mut incident(IncidentKind::Crash),
        &mut policy,
        &mut session,
        &AtomicBool::new(false),
    );
    assert_eq!(r.strategy.as_deref(), Some("restart"));
    let restart = &policy.strategies["restart"];
    assert_eq!(
        (restart.total_attempts, restart.total_successes),
        (u64::MAX, u64::MAX)
    );
}
