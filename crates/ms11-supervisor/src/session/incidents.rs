//! Incidents: from a signal to a recovery and what follows it. The rules, in order:
//!
//! 1. A signal caused by the runner's own action (the exit of a client it stopped, the
//!    window or log of a client it is replacing) is never an incident.
//! 2. While a recovery runs, a signal about the same subject is evidence for it (a
//!    terminal one stops its pipeline and escalates at once); a failure of the
//!    restarted process after it became ready, or a signal about another subject, is
//!    queued and handled when the recovery ends. Nothing is dropped.
//! 3. Otherwise a definitive signal (a process exit, an error dialog, a failed start, a
//!    terminal condition, an operator) starts recovery at once; other signals wait out
//!    the fusion window for their subject and process generation.
//! 4. An incident no strategy recovered is retried on a capped, persisted schedule until
//!    the session runs again; only a terminal incident stops that, until a person
//!    acknowledges.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ms11_recover::{Pipeline, PipelineResult, Round, Strategy};
use ms11_state::{
    DetectorSource, Incident, IncidentKind, IncidentSubject, RecoveryPolicyState, Resolution,
    ResolutionStatus, RetryState,
};
use rand::Rng;
use tracing::{debug, error, info, warn};

use super::SessionLoop;
use crate::event::EventKind;
use crate::job::RecoveryJob;

/// A recovery job the loop started, as the loop keeps it.
pub(super) struct RunningRecovery {
    pub(super) job: u64,
    pub(super) subject: IncidentSubject,
    /// The incident as it was when the job started (the job has its own copy).
    pub(super) incident: Incident,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The generation of the subject's process when the job started.
    generation_at_start: u64,
    /// Later evidence, fused into the incident when the job reports.
    attached: Vec<Incident>,
    /// A terminal signal that arrived meanwhile: the job was cancelled for it.
    superseded_by: Option<Incident>,
}

impl RunningRecovery {
    /// The loop told the job to stop.
    pub(super) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

/// Which process an incident's recovery acts on.
pub(super) fn resource_of(subject: IncidentSubject) -> IncidentSubject {
    match subject {
        IncidentSubject::Bot => IncidentSubject::Bot,
        IncidentSubject::Client
        | IncidentSubject::Operator
        | IncidentSubject::Network
        | IncidentSubject::State => IncidentSubject::Client,
    }
}

/// A signal that needs no further evidence: recovery starts at once.
fn is_definitive(incident: &Incident) -> bool {
    incident.terminal
        || incident.source == DetectorSource::ProcessExit
        || matches!(
            incident.kind,
            IncidentKind::ErrorDialog
                | IncidentKind::StartFailed
                | IncidentKind::Operator
                | IncidentKind::ProtocolMismatch
        )
}

impl SessionLoop {
    /// The session's processes' current generation for a subject.
    fn generation_of(&self, subject: IncidentSubject) -> u64 {
        match resource_of(subject) {
            IncidentSubject::Bot => self.bot.generation,
            _ => self.client.generation,
        }
    }

    pub(super) fn policy_mut(&mut self, subject: IncidentSubject) -> &mut RecoveryPolicyState {
        match resource_of(subject) {
            IncidentSubject::Bot => &mut self.state.runtime.bot_recovery,
            _ => &mut self.state.runtime.recovery,
        }
    }

    pub(super) fn policy(&self, subject: IncidentSubject) -> &RecoveryPolicyState {
        match resource_of(subject) {
            IncidentSubject::Bot => &self.state.runtime.bot_recovery,
            _ => &self.state.runtime.recovery,
        }
    }

    fn recovery_enabled(&self) -> bool {
        self.settings.recovery_enabled && self.state.recovery_enabled
    }

    /// Whether a scheduled retry for `subject` may start now.
    pub(super) fn retry_allowed(&self, subject: IncidentSubject) -> bool {
        self.recovery.is_none()
            && !self.halted.contains_key(&resource_of(subject))
            && self.recovery_enabled()
    }

    /// A detector's signal, an exit, a stall, a failed start: rules 1 to 3.
    pub(super) fn on_signal(&mut self, mut incident: Incident) {
        incident.session = self.settings.name.clone();
        let subject = incident.subject();
        let own = match resource_of(subject) {
            IncidentSubject::Bot => self.bot_own_effect(&incident),
            _ if subject == IncidentSubject::Client => self.client_own_effect(&incident),
            _ => None,
        };
        if let Some(reason) = own {
            debug!(event = "own_effect", session = %self.settings.name, kind = %incident.kind, %reason, "a signal caused by our own action; not an incident");
            self.emit(EventKind::OwnEffect {
                kind: incident.kind.as_str().to_owned(),
                reason,
            });
            return;
        }
        let current_generation = self.generation_of(subject);
        let new_process_ready = match resource_of(subject) {
            IncidentSubject::Bot => self.bot.connected(),
            _ => self.client.running() && self.client.ready.is_some(),
        };
        if let Some(running) = &mut self.recovery {
            let same = resource_of(running.subject) == resource_of(subject);
            if same && incident.terminal && !running.incident.terminal {
                warn!(event = "escalating", session = %self.settings.name, incident = %running.incident.id, kind = %incident.kind, "a terminal signal during the recovery: stopping its pipeline and escalating");
                match &mut running.superseded_by {
                    Some(base) => base.fuse(incident),
                    None => running.superseded_by = Some(incident),
                }
                running.cancel.store(true, Ordering::SeqCst);
                self.drop_job_waiters();
                return;
            }
            let restarted = current_generation != running.generation_at_start;
            if same && !(restarted && new_process_ready) {
                info!(event = "evidence", session = %self.settings.name, incident = %running.incident.id, kind = %incident.kind, "a later signal of the failure under recovery; attached to it");
                let id = running.incident.id.clone();
                running.attached.push(incident.clone());
                self.emit(EventKind::Evidence {
                    incident: id,
                    kind: incident.kind.as_str().to_owned(),
                });
                return;
            }
            info!(event = "queued", session = %self.settings.name, during = %running.incident.id, kind = %incident.kind, subject = %subject, "a signal during a recovery; queued until it ends");
            self.queued.push_back(incident);
            return;
        }
        let key = (resource_of(subject), current_generation);
        let now = self.clock.now();
        if is_definitive(&incident) {
            let merged = match self.fuser.take(&key) {
                Some(mut base) => {
                    base.fuse(incident);
                    base
                }
                None => incident,
            };
            self.on_fused(merged);
        } else {
            for done in self.fuser.push(key, incident, now) {
                self.on_fused(done);
            }
        }
    }

    /// A fused incident: it becomes an incident and its recovery starts (or waits for
    /// the running one).
    pub(super) fn on_fused(&mut self, mut incident: Incident) {
        if self.recovery.is_some() {
            self.queued.push_back(incident);
            return;
        }
        incident.id = self.new_incident_id();
        let subject = incident.subject();
        let name = self.settings.name.clone();
        info!(event = "incident", session = %name, incident = %incident.id, kind = %incident.kind, subject = %subject, source = %incident.source, terminal = incident.terminal, signals = incident.evidence.len(), message = %incident.crash.error_message, "incident");
        self.emit(EventKind::Incident {
            incident: incident.id.clone(),
            kind: incident.kind.as_str().to_owned(),
            subject: subject.as_str().to_owned(),
            terminal: incident.terminal,
            message: incident.crash.error_message.clone(),
        });
        self.state.record_incident(incident.clone());
        self.save_soon();
        let resource = resource_of(subject);
        if resource == IncidentSubject::Client {
            let dialog = matches!(
                incident.kind,
                IncidentKind::ErrorDialog | IncidentKind::DuplicateInstance
            );
            self.screenshot_incident(&incident.id, dialog);
        }
        if subject == IncidentSubject::Operator {
            self.halted.remove(&resource); // a person acts
        }
        if let Some(halt) = self.halted.get(&resource) {
            warn!(session = %name, incident = %incident.id, halted_by = %halt, "automatic recovery is stopped by a terminal incident; recorded only (`ms11-recovery ack` resumes it)");
            return;
        }
        if !self.recovery_enabled() {
            warn!(session = %name, incident = %incident.id, "recovery is disabled; incident recorded only");
            return;
        }
        self.start_recovery(incident, Round::First);
    }

    fn pipeline_for(&self, subject: IncidentSubject) -> Pipeline {
        let names = match resource_of(subject) {
            IncidentSubject::Bot => &self.settings.bot_pipeline,
            _ => &self.settings.client_pipeline,
        };
        let mut strategies: Vec<Box<dyn Strategy>> = Vec::new();
        for name in names {
            let allowed = match name.as_str() {
                "restart" | "restore" => self.settings.auto_restart,
                "relog" => self.settings.auto_relog,
                _ => true,
            };
            if !allowed {
                continue;
            }
            if let Some(s) = ms11_recover::builtin(name, &self.settings.recovery) {
                strategies.push(s);
            } else if let Some((_, make)) = self
                .settings
                .extra_strategies
                .iter()
                .find(|(n, _)| n == name)
            {
                strategies.push(make());
            } else {
                warn!(session = %self.settings.name, strategy = %name, "unknown strategy in the pipeline; skipped");
            }
        }
        Pipeline::new(strategies, &self.settings.recovery, Arc::clone(&self.clock))
    }

    pub(super) fn start_recovery(&mut self, incident: Incident, round: Round) {
        let subject = incident.subject();
        let pipeline = self.pipeline_for(subject);
        let job = self.next_job;
        self.next_job += 1;
        let cancel = Arc::new(AtomicBool::new(false));
        let round_name = match round {
            Round::First => "first",
            Round::Retry => "retry",
        };
        info!(event = "recovery", session = %self.settings.name, incident = %incident.id, subject = %subject, round = round_name, order = ?pipeline.names(), "recovering");
        let spawned = RecoveryJob {
            job,
            session: self.settings.name.clone(),
            pipeline,
            incident: incident.clone(),
            policy: self.policy_mut(subject).clone(),
            round,
            cancel: Arc::clone(&cancel),
            reports: self.job_tx.clone(),
        }
        .spawn();
        match spawned {
            Ok(thread) => {
                self.emit(EventKind::RecoveryStarted {
                    incident: incident.id.clone(),
                    round: round_name.to_owned(),
                });
                self.recovery = Some(RunningRecovery {
                    job,
                    subject,
                    generation_at_start: self.generation_of(subject),
                    incident,
                    cancel,
                    thread: Some(thread),
                    attached: Vec::new(),
                    superseded_by: None,
                });
            }
            Err(e) => {
                error!(session = %self.settings.name, error = %e, "cannot start the recovery job; retrying on schedule");
                self.schedule_retry(subject, &incident.id);
            }
        }
    }

    pub(super) fn on_recovery_done(
        &mut self,
        job: u64,
        mut incident: Incident,
        policy: RecoveryPolicyState,
        result: PipelineResult,
    ) {
        if self.recovery.as_ref().is_none_or(|r| r.job != job) {
            return;
        }
        let Some(running) = self.recovery.take() else {
            return;
        };
        drop(running.thread); // it has sent its last message; detach
        self.drop_job_waiters();
        let subject = running.subject;
        for evidence in running.attached {
            incident.fuse(evidence);
        }
        if incident.screenshot.is_none() {
            incident.screenshot = running.incident.screenshot.clone();
        }
        *self.policy_mut(subject) = policy;
        let name = self.settings.name.clone();
        if let Some(terminal) = running.superseded_by {
            incident.fuse(terminal);
            incident.resolution = None;
            self.state.update_incident(incident.clone());
            info!(event = "escalated", session = %name, incident = %incident.id, kind = %incident.kind, "the recovery was stopped by a terminal signal; escalating");
            self.start_recovery(incident, Round::Retry);
            return;
        }
        self.state.update_incident(incident.clone());
        self.emit(EventKind::RecoveryFinished {
            incident: incident.id.clone(),
            status: result.status.as_str().to_owned(),
            strategy: result.strategy.clone(),
        });
        let resource = resource_of(subject);
        match result.status {
            ResolutionStatus::Recovered => {
                self.policy_mut(subject).retry = None;
                let connection_problem = matches!(
                    incident.kind,
                    IncidentKind::Disconnect
                        | IncidentKind::SessionExpired
                        | IncidentKind::ServerDown
                );
                let acknowledged = result.strategy.as_deref() == Some("manual");
                if !self.healthy(resource) || (acknowledged && connection_problem) {
                    // A person acknowledged, but the process is not back (not running,
                    // a bot still silent) or still disconnected: go on at once.
                    info!(event = "retry_now", session = %name, incident = %incident.id, "acknowledged, but the {} is not back: recovering it now", resource);
                    self.reset_policy(subject);
                    self.schedule_retry_at(subject, &incident.id, 0, Duration::ZERO);
                } else if resource == IncidentSubject::Client {
                    self.send_resume();
                }
            }
            ResolutionStatus::Terminal => {
                let reason = format!("{}: {}", incident.kind, incident.crash.error_message);
                error!(event = "halted", session = %name, incident = %incident.id, subject = %resource, %reason, "terminal: automatic recovery stops until a person acknowledges (`ms11-recovery ack {}`)", incident.id);
                self.halted
                    .insert(resource, format!("{reason} (incident {})", incident.id));
                self.policy_mut(subject).retry = Some(RetryState {
                    incident: incident.id.clone(),
                    rounds: 0,
                    next_at: f64::MAX,
                });
                self.emit(EventKind::Halted {
                    subject: resource.as_str().to_owned(),
                    reason,
                });
            }
            ResolutionStatus::Escalated | ResolutionStatus::GaveUp | ResolutionStatus::Other => {
                self.schedule_retry(subject, &incident.id);
            }
        }
        self.save_now("recovery");
        self.next_queued();
    }

    /// Whether the process a subject's recovery acts on runs and works: the client runs,
    /// the bot runs, said `hello` and is not silent past its heartbeat deadline.
    fn healthy(&self, resource: IncidentSubject) -> bool {
        match resource {
            IncidentSubject::Bot => !self.bot.configured() || self.bot.alive(),
            _ => !self.client.configured() || self.client.running(),
        }
    }

    pub(super) fn on_job_panicked(&mut self, job: u64, message: String) {
        if self.recovery.as_ref().is_none_or(|r| r.job != job) {
            return;
        }
        let Some(running) = self.recovery.take() else {
            return;
        };
        self.drop_job_waiters();
        let name = self.settings.name.clone();
        error!(event = "job_panicked", session = %name, incident = %running.incident.id, panic = %message, "the recovery job panicked; retrying on schedule");
        let mut incident = running.incident;
        let now = self.clock.unix();
        incident.resolve(Resolution {
            status: ResolutionStatus::GaveUp,
            strategy: None,
            at: now,
            time_to_recover_ms: None,
            note: Some(format!("the recovery job panicked: {message}")),
        });
        let id = incident.id.clone();
        self.state.update_incident(incident);
        let internal_id = self.new_incident_id();
        let mut internal = self
            .ids
            .incident(
                IncidentKind::InternalError,
                DetectorSource::Other,
                format!("the recovery job of {id} panicked: {message}"),
                now,
            )
            .with_subject(IncidentSubject::State);
        internal.id = internal_id;
        internal.session = name;
        internal.resolve(Resolution {
            status: ResolutionStatus::Recovered,
            strategy: None,
            at: now,
            time_to_recover_ms: Some(0),
            note: Some("the session loop caught it and goes on".into()),
        });
        self.state.record_incident(internal);
        self.schedule_retry(running.subject, &id);
        self.save_now("job panicked");
        self.next_queued();
    }

    /// Schedules the next retry round of an unrecovered incident (rule 4).
    pub(super) fn schedule_retry(&mut self, subject: IncidentSubject, incident: &str) {
        let rounds = self
            .policy_mut(subject)
            .retry
            .as_ref()
            .map_or(0, |r| r.rounds.saturating_add(1));
        let full = self.settings.recovery.retry.delay(rounds);
        let jitter = rand::rng().random_range(0.9..=1.0);
        self.schedule_retry_at(subject, incident, rounds, full.mul_f64(jitter));
    }

    pub(super) fn schedule_retry_at(
        &mut self,
        subject: IncidentSubject,
        incident: &str,
        rounds: u32,
        delay: Duration,
    ) {
        let next_at = self.clock.unix() + delay.as_secs_f64();
        self.policy_mut(subject).retry = Some(RetryState {
            incident: incident.to_owned(),
            rounds,
            next_at,
        });
        info!(event = "retry_scheduled", session = %self.settings.name, incident, subject = %resource_of(subject), in_s = delay.as_secs_f64(), round = rounds.saturating_add(1), "the session is down: trying again on schedule");
        self.emit(EventKind::RetryScheduled {
            incident: incident.to_owned(),
            in_secs: delay.as_secs_f64(),
        });
    }

    /// Starts a due retry round.
    pub(super) fn retry_timers(&mut self) {
        let now_unix = self.clock.unix();
        for subject in [IncidentSubject::Client, IncidentSubject::Bot] {
            if !self.retry_allowed(subject) {
                continue;
            }
            let Some(retry) = self.policy_mut(subject).retry.clone() else {
                continue;
            };
            if retry.next_at > now_unix {
                continue;
            }
            let recorded = self
                .state
                .crash_history
                .iter()
                .find(|i| i.id == retry.incident)
                .cloned();
            let mut incident = match recorded {
                Some(incident) => incident,
                None => {
                    // Older than the kept history: a new record for what is still down.
                    let mut incident = self
                        .ids
                        .incident(
                            IncidentKind::ProcessExit,
                            DetectorSource::Other,
                            format!("the {subject} is still down"),
                            now_unix,
                        )
                        .with_subject(subject);
                    incident.id = self.new_incident_id();
                    self.state.record_incident(incident.clone());
                    incident
                }
            };
            incident.session = self.settings.name.clone();
            incident.resolution = None;
            info!(event = "retry", session = %self.settings.name, incident = %incident.id, round = retry.rounds.saturating_add(1), "retrying the recovery of an unrecovered incident");
            self.start_recovery(incident, Round::Retry);
            return;
        }
    }

    /// Forgets budgets, backoff, the breaker's count and the storm (a person acted).
    pub(super) fn reset_policy(&mut self, subject: IncidentSubject) {
        let policy = self.policy_mut(subject);
        for strategy in policy.strategies.values_mut() {
            strategy.recent_attempts.clear();
            strategy.not_before = None;
            strategy.consecutive_failures = 0;
            strategy.last_backoff_ms = 0;
        }
        policy.breaker.recent_incidents.clear();
        policy.storm = None;
    }

    /// A person's acknowledgement: of the incident `manual` waits for, or of a halted or
    /// retrying subject (budgets and backoff reset, retried at once).
    pub(super) fn acknowledge(&mut self, wanted: Option<&str>) -> Result<String, String> {
        if let Some(waiter) = &self.ack_waiter
            && wanted.is_none_or(|w| w == waiter.incident)
            && let Some(waiter) = self.ack_waiter.take()
        {
            let id = waiter.incident.clone();
            let _ = waiter.reply.send(true);
            info!(event = "acknowledged", session = %self.settings.name, incident = %id, "a person acknowledged");
            if let Some(running) = &self.recovery {
                let subject = running.subject;
                self.reset_policy(subject);
            }
            self.emit(EventKind::Acknowledged {
                incident: id.clone(),
            });
            return Ok(id);
        }
        let candidates: Vec<(IncidentSubject, String)> =
            [IncidentSubject::Client, IncidentSubject::Bot]
                .into_iter()
                .filter_map(|s| {
                    let retry = self.policy(s).retry.as_ref()?.incident.clone();
                    Some((s, retry))
                })
                .collect();
        let chosen = candidates
            .iter()
            .find(|(_, id)| wanted.is_none_or(|w| w == id))
            .cloned();
        let Some((subject, id)) = chosen else {
            let waiting: Vec<String> = self
                .ack_waiter
                .iter()
                .map(|w| w.incident.clone())
                .chain(candidates.into_iter().map(|(_, id)| id))
                .collect();
            return Err(match (wanted, waiting.is_empty()) {
                (_, true) => format!(
                    "session `{}`: nothing is waiting for an acknowledgement",
                    self.settings.name
                ),
                (Some(w), false) => format!(
                    "session `{}`: incident {w} is not waiting for an acknowledgement (waiting: {})",
                    self.settings.name,
                    waiting.join(", ")
                ),
                (None, false) => format!(
                    "session `{}`: nothing matched (waiting: {})",
                    self.settings.name,
                    waiting.join(", ")
                ),
            });
        };
        self.halted.remove(&resource_of(subject));
        self.reset_policy(subject);
        self.schedule_retry_at(subject, &id, 0, Duration::ZERO);
        info!(event = "acknowledged", session = %self.settings.name, incident = %id, "a person acknowledged; retrying now with budgets reset");
        self.emit(EventKind::Acknowledged {
            incident: id.clone(),
        });
        Ok(id)
    }

    /// `restart` / `relog` from an operator: an incident of its own, at once.
    pub(super) fn operator_recovery(&mut self, what: &str) -> Result<String, String> {
        if let Some(running) = &self.recovery {
            return Err(format!(
                "session `{}` is already recovering ({})",
                self.settings.name, running.incident.id
            ));
        }
        let mut incident = self
            .ids
            .incident(
                IncidentKind::Operator,
                DetectorSource::Operator,
                format!("operator asked for a {what}"),
                self.clock.unix(),
            )
            .with_subject(IncidentSubject::Operator);
        incident.pattern = Some(what.into());
        incident.session = self.settings.name.clone();
        self.on_fused(incident);
        Ok(self
            .state
            .crash_history
            .last()
            .map(|i| i.id.clone())
            .unwrap_or_default())
    }

    /// Handles queued signals once no recovery runs.
    fn next_queued(&mut self) {
        while self.recovery.is_none() {
            let Some(incident) = self.queued.pop_front() else {
                break;
            };
            self.on_signal(incident);
        }
    }

    /// Stops the running job (shutdown): it is told to cancel, its pending answers are
    /// dropped (which wakes it), and it gets a moment to end.
    pub(super) fn cancel_recovery(&mut self, why: &str) {
        let Some(mut running) = self.recovery.take() else {
            return;
        };
        info!(session = %self.settings.name, incident = %running.incident.id, why, "cancelling the running recovery");
        running.cancel.store(true, Ordering::SeqCst);
        self.drop_job_waiters();
        if let Some(thread) = running.thread.take() {
            let end = std::time::Instant::now() + Duration::from_secs(5);
            while !thread.is_finished() && std::time::Instant::now() < end {
                // Jobs may still be sending requests; drop them so they wake.
                while let Ok(report) = self.job_rx.try_recv() {
                    drop(report);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    pub(super) fn log_pending_retries(&mut self) {
        let now = self.clock.unix();
        for subject in [IncidentSubject::Client, IncidentSubject::Bot] {
            if let Some(retry) = &self.policy(subject).retry {
                info!(session = %self.settings.name, incident = %retry.incident, subject = %subject, in_s = (retry.next_at - now).max(0.0), "a retry scheduled before the restart is kept");
            }
        }
    }
}
