//! Answering jobs: each [`JobRequest`] is served without blocking the loop; requests
//! that wait for something (an exit, a `hello`, an acknowledgement, a command) keep
//! their reply until it happens or its deadline passes.

use std::time::{Duration, Instant};

use ms11_process::{ExitEvent, ProcessSpec, StdioMode};
use ms11_recover::Notification;
use tracing::{info, warn};

use super::SessionLoop;
use crate::command::Reply;
use crate::event::EventKind;
use crate::job::{JobReport, JobRequest};
use crate::settings::SessionSettings;
use crate::spawner::SupervisedChild;

/// How often an `ack_file` is looked for while a person is waited for.
const ACK_FILE_POLL: Duration = Duration::from_millis(250);

/// `manual` waits for a person.
pub(super) struct AckWaiter {
    pub(super) incident: String,
    deadline: Instant,
    next_file_poll: Instant,
    pub(super) reply: Reply<bool>,
}

impl AckWaiter {
    pub(super) fn due(&self, settings: &SessionSettings) -> Instant {
        if settings.recovery.notify.ack_file.is_some() {
            self.deadline.min(self.next_file_poll)
        } else {
            self.deadline
        }
    }
}

/// A command a strategy runs (`relog_command`).
pub(super) struct RunningCommand {
    pub(super) child: Box<dyn SupervisedChild>,
    pub(super) deadline: Instant,
    program: String,
    reply: Reply<Result<(), String>>,
}

impl SessionLoop {
    pub(super) fn on_job_report(&mut self, report: JobReport) {
        match report {
            JobReport::Request { job, request } => {
                if self
                    .recovery
                    .as_ref()
                    .is_some_and(|r| r.job == job && !r.cancelled())
                {
                    self.on_job_request(request);
                }
                // A cancelled job's request is dropped with its reply, which wakes it.
            }
            JobReport::Done {
                job,
                incident,
                policy,
                result,
            } => self.on_recovery_done(job, *incident, *policy, result),
            JobReport::Panicked { job, message } => self.on_job_panicked(job, message),
            JobReport::Screenshot { incident, result } => self.on_screenshot(&incident, result),
            JobReport::Delivered {
                channel,
                incident,
                result,
            } => match result {
                Ok(()) => {
                    info!(event = "notified", session = %self.settings.name, channel, incident = %incident, "notification delivered")
                }
                Err(e) => {
                    warn!(event = "notify_failed", session = %self.settings.name, channel, incident = %incident, error = %e, "notification not delivered")
                }
            },
        }
    }

    fn on_job_request(&mut self, request: JobRequest) {
        match request {
            JobRequest::ClientRunning(reply) => {
                let _ = reply.send(self.client.running());
            }
            JobRequest::StopClient(reply) => self.stop_client(reply),
            JobRequest::StartClient(reply) => {
                let _ = reply.send(self.start_client_now().map(|_| ()));
            }
            JobRequest::WaitClientReady { deadline, reply } => {
                self.wait_client_ready(deadline, reply);
            }
            JobRequest::Relog { deadline, reply } => self.relog_through_bot(deadline, reply),
            JobRequest::RunCommand {
                argv,
                deadline,
                reply,
            } => self.run_command(&argv, deadline, reply),
            JobRequest::RestartBot { deadline, reply } => self.restart_bot(deadline, reply),
            JobRequest::Notify(notification) => self.notify(&notification),
            JobRequest::WaitAck { deadline, reply } => {
                let incident = self
                    .recovery
                    .as_ref()
                    .map(|r| r.incident.id.clone())
                    .unwrap_or_default();
                self.emit(EventKind::WaitingForPerson {
                    incident: incident.clone(),
                });
                self.ack_waiter = Some(AckWaiter {
                    incident,
                    deadline,
                    next_file_poll: self.clock.now(),
                    reply,
                });
            }
            JobRequest::RollBack { generation, reply } => {
                let _ = reply.send(self.roll_back(generation));
            }
        }
    }

    /// Drops every answer a job waits for (cancellation): the job wakes at once.
    pub(super) fn drop_job_waiters(&mut self) {
        self.ack_waiter = None;
        self.deferred_stops.clear();
        self.bot.pending_relog = None;
        self.drop_client_waiters();
        self.drop_bot_restart_waiter();
        for running in self.commands_running.drain(..) {
            running.child.signal_group(9);
        }
    }

    fn run_command(
        &mut self,
        argv: &[String],
        deadline: Instant,
        reply: Reply<Result<(), String>>,
    ) {
        let Some(mut spec) = ProcessSpec::from_argv(argv) else {
            let _ = reply.send(Err("the command is empty".into()));
            return;
        };
        spec.stdin = StdioMode::Null;
        match self.spawner.spawn(&spec, "command", &self.exit_tx) {
            Ok(child) => self.commands_running.push(RunningCommand {
                child,
                deadline,
                program: spec.program.clone(),
                reply,
            }),
            Err(e) => {
                let _ = reply.send(Err(format!("cannot run `{}`: {e}", spec.program)));
            }
        }
    }

    /// The exit of a command, a notification helper or `wineserver -k`.
    pub(super) fn on_command_exit(&mut self, exit: ExitEvent) {
        if self.on_wine_prefix_ended(exit.pid, &exit.exit.to_string()) {
            return;
        }
        let Some(index) = self
            .commands_running
            .iter()
            .position(|c| c.child.pid() == exit.pid)
        else {
            return;
        };
        let running = self.commands_running.remove(index);
        running.child.signal_group(9);
        let result = if exit.exit.code == Some(0) {
            Ok(())
        } else {
            Err(format!("`{}` {}", running.program, exit.exit))
        };
        let _ = running.reply.send(result);
    }

    pub(super) fn command_timers(&mut self, now: Instant) {
        let mut index = 0;
        while index < self.commands_running.len() {
            if now >= self.commands_running[index].deadline {
                let running = self.commands_running.remove(index);
                running.child.signal_group(9);
                let _ = running.reply.send(Err(format!(
                    "`{}` did not finish before the deadline",
                    running.program
                )));
            } else {
                index += 1;
            }
        }
    }

    pub(super) fn ack_timers(&mut self, now: Instant) {
        let Some(waiter) = &mut self.ack_waiter else {
            return;
        };
        if let Some(file) = &self.settings.recovery.notify.ack_file
            && now >= waiter.next_file_poll
        {
            waiter.next_file_poll = now + ACK_FILE_POLL;
            if file.exists() {
                let _ = std::fs::remove_file(file);
                let _ = self.acknowledge(None);
                return;
            }
        }
        if now >= waiter.deadline
            && let Some(waiter) = self.ack_waiter.take()
        {
            let _ = waiter.reply.send(false);
        }
    }

    /// Tells a person: the desktop (a child like any other) and the webhook (a job
    /// thread that reports back); neither delays anything.
    fn notify(&mut self, notification: &Notification) {
        let settings = self.settings.recovery.notify.clone();
        if settings.desktop_notify
            && let Some(argv) = ms11_recover::desktop_command(notification)
            && let Some(spec) = ProcessSpec::from_argv(&argv)
            && let Err(e) = self.spawner.spawn(&spec, "notify", &self.exit_tx)
        {
            warn!(session = %self.settings.name, error = %e, "desktop notification not shown");
        }
        if let Some(url) = settings.webhook_url {
            let reports = self.job_tx.clone();
            let notification = notification.clone();
            let format = settings.webhook_format;
            let spawned = std::thread::Builder::new()
                .name("notify-webhook".into())
                .spawn(move || {
                    let mut result = Err("not tried".to_owned());
                    for attempt in 0..3u32 {
                        if attempt > 0 {
                            std::thread::sleep(Duration::from_secs(1 << attempt));
                        }
                        result = ms11_recover::send_webhook(&url, format, &notification);
                        if result.is_ok() {
                            break;
                        }
                    }
                    let _ = reports.send(JobReport::Delivered {
                        channel: "webhook",
                        incident: notification.incident.clone(),
                        result,
                    });
                });
            if let Err(e) = spawned {
                warn!(session = %self.settings.name, error = %e, "cannot start the webhook sender");
            }
        }
    }

    /// Restores the game fields of an older good generation; the ledger, incidents and
    /// counters stay (nothing acknowledged is lost).
    fn roll_back(&mut self, generation: Option<u64>) -> Result<u64, String> {
        let target = match generation {
            Some(g) => g,
            None => self
                .store
                .generations()
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|g| g.validity.is_ok())
                .filter_map(|g| g.generation)
                .filter(|&g| g < self.state.generation)
                .max()
                .ok_or_else(|| "no valid older generation on disk".to_owned())?,
        };
        let old = self
            .store
            .load_generation(target)
            .map_err(|e| e.to_string())?;
        let s = &mut self.state;
        s.planet = old.planet;
        s.zone = old.zone;
        s.coordinates = old.coordinates;
        s.current_quest = old.current_quest;
        s.quest_step = old.quest_step;
        s.xp_level = old.xp_level;
        s.xp_current = old.xp_current;
        s.xp_next_level = old.xp_next_level;
        s.equipped_weapon = old.equipped_weapon;
        s.active_modes = old.active_modes;
        info!(event = "restored", session = %self.settings.name, generation = target, "game fields rolled back to an older generation; task ledger kept");
        self.save_now("restore");
        Ok(target)
    }
}
