//! The pipeline: strategies in order; for each, applicability, budget, attempts,
//! timeout and backoff; the crash-loop breaker; escalation to `manual`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ms11_state::{
    Attempt, AttemptOutcome, Incident, RecoveryPolicyState, Resolution, ResolutionStatus,
    StormState, StrategyPolicyState,
};
use rand::{Rng, SeedableRng};
use tracing::{info, warn};

use crate::clock::Clock;
use crate::settings::{BreakerSettings, RecoverySettings, StrategySettings};
use crate::{Applicability, Outcome, RecoveryCtx, SessionControl, Strategy};

/// How a pipeline run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineResult {
    /// The final status (also written on the incident).
    pub status: ResolutionStatus,
    /// The strategy that recovered the session, if one did.
    pub strategy: Option<String>,
}

/// Which kind of pass over the pipeline this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// The first pass for a new incident: it counts for the breaker and the storm, and
    /// each strategy gets its attempts within its budget.
    First,
    /// A scheduled retry of an incident no strategy recovered. The retry schedule's
    /// capped backoff paces it, so budgets, the breaker and strategy backoff do not
    /// apply; each automatic strategy gets one attempt; `manual` runs only when no
    /// person was told about this storm yet.
    Retry,
}

/// Strategies in order with their retry policies.
pub struct Pipeline {
    steps: Vec<(Box<dyn Strategy>, StrategySettings)>,
    breaker: BreakerSettings,
    clock: Arc<dyn Clock>,
    rng: rand::rngs::StdRng,
}

impl Pipeline {
    /// A pipeline over `strategies` (in order), each with its policy from `settings`.
    pub fn new(
        strategies: Vec<Box<dyn Strategy>>,
        settings: &RecoverySettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let steps = strategies
            .into_iter()
            .map(|s| {
                let policy = settings.policy_of(s.name());
                (s, policy)
            })
            .collect();
        Pipeline {
            steps,
            breaker: settings.breaker.clone(),
            clock,
            rng: rand::rngs::StdRng::from_os_rng(),
        }
    }

    /// Makes backoff jitter reproducible (tests).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = rand::rngs::StdRng::seed_from_u64(seed);
        self
    }

    /// Names in order.
    pub fn names(&self) -> Vec<String> {
        self.steps
            .iter()
            .map(|(s, _)| s.name().to_owned())
            .collect()
    }

    /// Runs the pipeline for `incident`: records every attempt on it, resolves it, and
    /// updates the persisted counters in `policy`.
    pub fn run(
        &mut self,
        incident: &mut Incident,
        policy: &mut RecoveryPolicyState,
        session: &mut dyn SessionControl,
        cancel: &AtomicBool,
    ) -> PipelineResult {
        self.run_round(incident, policy, session, cancel, Round::First)
    }

    /// Runs one pass of the pipeline for `incident` (see [`Round`]).
    pub fn run_round(
        &mut self,
        incident: &mut Incident,
        policy: &mut RecoveryPolicyState,
        session: &mut dyn SessionControl,
        cancel: &AtomicBool,
        round: Round,
    ) -> PipelineResult {
        let started = self.clock.now();
        let now_unix = self.clock.unix();
        let breaker_tripped = round == Round::First && self.count_for_breaker(policy, now_unix);
        if round == Round::First {
            let storm = policy.storm.get_or_insert_with(|| StormState {
                since: incident.detected_at(),
                incidents: 0,
                person_told: false,
            });
            storm.incidents = storm.incidents.saturating_add(1);
        }
        if breaker_tripped {
            policy.breaker.tripped_at = Some(now_unix);
            warn!(event = "breaker", incident = %incident.id, max = self.breaker.max_incidents, window_s = self.breaker.window_secs, "crash loop: too many incidents; going straight to manual");
        }
        let escalate_only = breaker_tripped || incident.terminal;
        let mut tried_manual = false;
        for index in 0..self.steps.len() {
            if cancel.load(Ordering::SeqCst) {
                break;
            }
            let name = self.steps[index].0.name().to_owned();
            if escalate_only && name != "manual" {
                let why = if incident.terminal {
                    "terminal condition: escalated to manual"
                } else {
                    "crash-loop breaker tripped: escalated to manual"
                };
                self.skip(incident, &name, why);
                continue;
            }
            if let Applicability::Skip(why) = self.steps[index].0.applies_to(incident, session) {
                self.skip(incident, &name, &why);
                continue;
            }
            if name == "manual"
                && !incident.terminal
                && let Some(storm) = policy.storm.as_ref().filter(|s| s.person_told)
            {
                {
                    let why = format!(
                        "a person was already told about this run of failures ({} incident(s) since {:.0}); automatic retries go on, and `ack` resets them",
                        storm.incidents, storm.since
                    );
                    self.skip(incident, &name, &why);
                    tried_manual = true;
                    continue;
                }
            }
            if name == "manual" {
                tried_manual = true;
                if let Some(storm) = policy.storm.as_mut() {
                    storm.person_told = true;
                }
            }
            match self.run_strategy(index, incident, policy, session, cancel, round) {
                Some(Outcome::Recovered) => {
                    let ms = self.time_to_recover(incident, started, round);
                    let status = ResolutionStatus::Recovered;
                    incident.resolve(Resolution {
                        status,
                        strategy: Some(name.clone()),
                        at: self.clock.unix(),
                        time_to_recover_ms: Some(ms),
                        note: None,
                    });
                    info!(event = "recovered", incident = %incident.id, strategy = %name, ms, "session recovered");
                    policy.storm = None;
                    return PipelineResult {
                        status,
                        strategy: Some(name),
                    };
                }
                Some(Outcome::Terminal(reason)) => {
                    incident.terminal = true;
                    warn!(event = "terminal", incident = %incident.id, strategy = %name, %reason, "terminal condition");
                    // Escalate at once: only manual may still run.
                    return self.escalate_after_terminal(
                        index, incident, policy, session, cancel, &reason, started,
                    );
                }
                Some(Outcome::Failed(_)) | None => {}
            }
        }
        let status = if incident.terminal {
            ResolutionStatus::Terminal
        } else if tried_manual || breaker_tripped {
            ResolutionStatus::Escalated
        } else {
            ResolutionStatus::GaveUp
        };
        incident.resolve(Resolution {
            status,
            strategy: None,
            at: self.clock.unix(),
            time_to_recover_ms: None,
            note: Some("no strategy brought the session back".into()),
        });
        warn!(event = "unrecovered", incident = %incident.id, status = status.as_str(), "recovery did not bring the session back");
        PipelineResult {
            status,
            strategy: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn escalate_after_terminal(
        &mut self,
        after: usize,
        incident: &mut Incident,
        policy: &mut RecoveryPolicyState,
        session: &mut dyn SessionControl,
        cancel: &AtomicBool,
        reason: &str,
        started: std::time::Instant,
    ) -> PipelineResult {
        let manual = self.steps.iter().position(|(s, _)| s.name() == "manual");
        if let Some(index) = manual.filter(|&i| i != after)
            && let Some(Outcome::Recovered) =
                self.run_strategy(index, incident, policy, session, cancel, Round::First)
        {
            policy.storm = None;
            {
                let ms = u64::try_from(self.clock.now().duration_since(started).as_millis())
                    .unwrap_or(u64::MAX);
                incident.resolve(Resolution {
                    status: ResolutionStatus::Recovered,
                    strategy: Some("manual".into()),
                    at: self.clock.unix(),
                    time_to_recover_ms: Some(ms),
                    note: Some(format!("a person handled: {reason}")),
                });
                return PipelineResult {
                    status: ResolutionStatus::Recovered,
                    strategy: Some("manual".into()),
                };
            }
        }
        incident.resolve(Resolution {
            status: ResolutionStatus::Terminal,
            strategy: None,
            at: self.clock.unix(),
            time_to_recover_ms: None,
            note: Some(reason.to_owned()),
        });
        PipelineResult {
            status: ResolutionStatus::Terminal,
            strategy: None,
        }
    }

    /// From the detection to now: a first round measures its own run (monotonic), a
    /// retry round the wall time since the incident was detected.
    fn time_to_recover(
        &self,
        incident: &Incident,
        started: std::time::Instant,
        round: Round,
    ) -> u64 {
        let ms = match round {
            Round::First => self.clock.now().duration_since(started).as_secs_f64() * 1000.0,
            Round::Retry => (self.clock.unix() - incident.detected_at()).max(0.0) * 1000.0,
        };
        ms as u64
    }

    /// Adds this incident to the breaker's window; true when it trips.
    fn count_for_breaker(&self, policy: &mut RecoveryPolicyState, now: f64) -> bool {
        let window = self.breaker.window_secs;
        let recent = &mut policy.breaker.recent_incidents;
        recent.retain(|t| now - t < window && *t <= now + 1.0);
        recent.push(now);
        recent.len() > self.breaker.max_incidents
    }

    fn skip(&self, incident: &mut Incident, name: &str, why: &str) {
        info!(event = "skipped", incident = %incident.id, strategy = %name, reason = %why, "strategy skipped");
        incident.record_attempt(Attempt {
            strategy: name.to_owned(),
            started_at: self.clock.unix(),
            duration_ms: 0,
            outcome: AttemptOutcome::Skipped,
            reason: Some(why.to_owned()),
        });
    }

    /// Tries one strategy up to its attempts; `None` when its budget is spent.
    fn run_strategy(
        &mut self,
        index: usize,
        incident: &mut Incident,
        policy: &mut RecoveryPolicyState,
        session: &mut dyn SessionControl,
        cancel: &AtomicBool,
        round: Round,
    ) -> Option<Outcome> {
        let name = self.steps[index].0.name().to_owned();
        let settings = self.steps[index].1.clone();
        // A person is never left untold because a budget ran out, and a retry round is
        // paced by the retry schedule: neither counts against a budget or backs off.
        let paced = name != "manual" && round == Round::First;
        let attempts = if round == Round::Retry {
            1
        } else {
            settings.attempts.max(1)
        };
        let mut last = None;
        for attempt in 1..=attempts {
            if cancel.load(Ordering::SeqCst) {
                return last;
            }
            let now_unix = self.clock.unix();
            let state = policy.strategies.entry(name.clone()).or_default();
            state
                .recent_attempts
                .retain(|t| now_unix - t < settings.budget_window_secs);
            if paced && state.recent_attempts.len() >= settings.budget as usize {
                let why = format!(
                    "budget spent: {} tries within {} s; escalating",
                    state.recent_attempts.len(),
                    settings.budget_window_secs
                );
                self.skip(incident, &name, &why);
                return last;
            }
            if let Some(not_before) = state.not_before.filter(|_| paced) {
                let wait =
                    (not_before - now_unix).clamp(0.0, settings.backoff_cap_ms as f64 / 1000.0);
                if wait > 0.0 {
                    info!(event = "backoff", incident = %incident.id, strategy = %name, wait_ms = (wait * 1000.0) as u64, "backing off before the next try");
                    if !self.clock.sleep(Duration::from_secs_f64(wait), cancel) {
                        return last;
                    }
                }
            }
            let started = self.clock.now();
            let started_unix = self.clock.unix();
            let deadline = started + Duration::from_secs_f64(settings.timeout_secs.max(0.001));
            info!(event = "attempt", incident = %incident.id, strategy = %name, attempt, "trying");
            let outcome = {
                let mut ctx = RecoveryCtx {
                    deadline,
                    cancel,
                    session: &mut *session,
                };
                self.steps[index].0.recover(incident, &mut ctx)
            };
            let elapsed = self.clock.now().duration_since(started);
            let timed_out = self.clock.now() > deadline && outcome != Outcome::Recovered;
            let (attempt_outcome, reason) = match &outcome {
                Outcome::Recovered => (AttemptOutcome::Recovered, None),
                Outcome::Failed(r) if timed_out => (AttemptOutcome::TimedOut, Some(r.clone())),
                Outcome::Failed(r) => (AttemptOutcome::Failed, Some(r.clone())),
                Outcome::Terminal(r) => (AttemptOutcome::Terminal, Some(r.clone())),
            };
            incident.record_attempt(Attempt {
                strategy: name.clone(),
                started_at: started_unix,
                duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                outcome: attempt_outcome,
                reason: reason.clone(),
            });
            let state = policy.strategies.entry(name.clone()).or_default();
            // Counters come back from the state file: they saturate, never overflow.
            state.total_attempts = state.total_attempts.saturating_add(1);
            state.recent_attempts.push(started_unix);
            match &outcome {
                Outcome::Recovered => {
                    state.consecutive_failures = 0;
                    state.total_successes = state.total_successes.saturating_add(1);
                    state.not_before = None;
                    state.last_backoff_ms = 0;
                    return Some(outcome);
                }
                Outcome::Terminal(_) => return Some(outcome),
                Outcome::Failed(reason) => {
                    let delay = backoff(state, &settings, &mut self.rng);
                    state.not_before = Some(self.clock.unix() + delay.as_secs_f64());
                    warn!(event = "attempt_failed", incident = %incident.id, strategy = %name, attempt, %reason, backoff_ms = delay.as_millis() as u64, "attempt failed");
                    last = Some(outcome);
                }
            }
        }
        last
    }
}

/// Exponential backoff with jitter: the delay doubles per consecutive failure up to the
/// cap, and a random part (half of it) spreads retries of many sessions apart.
fn backoff(
    state: &mut StrategyPolicyState,
    settings: &StrategySettings,
    rng: &mut impl Rng,
) -> Duration {
    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
    let exp = state.consecutive_failures.saturating_sub(1).min(30);
    let full = settings
        .backoff_base_ms
        .saturating_mul(1u64 << exp)
        .min(settings.backoff_cap_ms);
    let half = full / 2;
    let ms = half
        + if half > 0 {
            rng.random_range(0..=half)
        } else {
            0
        };
    state.last_backoff_ms = ms;
    Duration::from_millis(ms)
}
