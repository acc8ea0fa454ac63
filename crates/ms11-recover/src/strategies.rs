//! The built-in strategies, in the seed's order: restart, relog, manual, restore.

use ms11_state::{Incident, IncidentKind};
use tracing::info;

use crate::notify::Notification;
use crate::settings::RecoverySettings;
use crate::{Applicability, Outcome, RecoveryCtx, SessionControl, Strategy};

/// Kinds a relog fixes while the client keeps running.
fn is_connection_problem(kind: IncidentKind) -> bool {
    matches!(
        kind,
        IncidentKind::Disconnect | IncidentKind::SessionExpired | IncidentKind::ServerDown
    )
}

/// The built-in strategies by name.
pub fn builtin(name: &str, settings: &RecoverySettings) -> Option<Box<dyn Strategy>> {
    Some(match name {
        "restart" => Box::new(Restart),
        "relog" => Box::new(Relog {
            command: settings.relog_command.clone(),
        }),
        "manual" => Box::new(Manual::default()),
        "restart-bot" => Box::new(RestartBot),
        "restore" => Box::new(Restore {
            generation: settings.restore_generation,
        }),
        _ => return None,
    })
}

/// Stops the client in stages, starts it again, waits until it is ready.
#[derive(Debug, Default)]
pub struct Restart;

impl Strategy for Restart {
    fn name(&self) -> &str {
        "restart"
    }

    fn applies_to(&self, incident: &Incident, session: &dyn SessionControl) -> Applicability {
        if incident.kind == IncidentKind::Operator && incident.pattern.as_deref() == Some("relog") {
            return Applicability::Skip("the operator asked for a relog".into());
        }
        if is_connection_problem(incident.kind) && session.client_running() {
            return Applicability::Skip("client is running; a relog is enough".into());
        }
        Applicability::Applies
    }

    fn recover(&mut self, _incident: &Incident, ctx: &mut RecoveryCtx<'_>) -> Outcome {
        let stopped = match ctx.session.stop_client() {
            Ok(how) => how,
            Err(e) => return Outcome::Failed(format!("could not stop the client: {e}")),
        };
        info!(session = ctx.session.session_name(), %stopped, "client stopped; starting it again");
        if let Err(e) = ctx.session.start_client() {
            return Outcome::Failed(format!("could not start the client: {e}"));
        }
        match ctx.session.wait_client_ready(ctx.deadline, ctx.cancel) {
            Ok(_) => Outcome::Recovered,
            Err(e) => Outcome::Failed(format!("client not ready: {e}")),
        }
    }
}

/// Logs the character in again without restarting the client: through the bot, or a
/// configured command.
#[derive(Debug, Default)]
pub struct Relog {
    /// External command; `None`: ask the bot.
    pub command: Option<Vec<String>>,
}

impl Strategy for Relog {
    fn name(&self) -> &str {
        "relog"
    }

    fn applies_to(&self, incident: &Incident, session: &dyn SessionControl) -> Applicability {
        let operator_relog =
            incident.kind == IncidentKind::Operator && incident.pattern.as_deref() == Some("relog");
        if !(is_connection_problem(incident.kind) || operator_relog) {
            return Applicability::Skip(format!("a relog does not fix {}", incident.kind));
        }
        if !session.client_running() {
            return Applicability::Skip("the client is not running".into());
        }
        Applicability::Applies
    }

    fn recover(&mut self, _incident: &Incident, ctx: &mut RecoveryCtx<'_>) -> Outcome {
        match &self.command {
            Some(argv) => match ctx.session.run_command(argv, ctx.deadline) {
                Ok(()) => Outcome::Recovered,
                Err(e) => Outcome::Failed(format!("relog command failed: {e}")),
            },
            None => match ctx.session.request_relog(ctx.deadline) {
                Ok(()) => Outcome::Recovered,
                Err(e) => Outcome::Failed(format!("relog failed: {e}")),
            },
        }
    }
}

/// Tells a human and waits for an acknowledgement. Where the notification goes (log,
/// desktop, webhook) is the runner's business: it delivers in the background. Further
/// attempts for the same incident wait again without telling the person again.
#[derive(Debug, Default)]
pub struct Manual {
    told_about: Option<String>,
}

impl Strategy for Manual {
    fn name(&self) -> &str {
        "manual"
    }

    fn applies_to(&self, _incident: &Incident, _session: &dyn SessionControl) -> Applicability {
        Applicability::Applies
    }

    fn recover(&mut self, incident: &Incident, ctx: &mut RecoveryCtx<'_>) -> Outcome {
        let notification = Notification {
            session: ctx.session.session_name().to_owned(),
            incident: incident.id.clone(),
            kind: incident.kind.as_str().to_owned(),
            title: format!(
                "ms11-recovery: session `{}` needs a person",
                ctx.session.session_name()
            ),
            message: format!(
                "{} ({}): {}. Fix it, then run `ms11-recovery ack {}`.",
                incident.kind,
                if incident.terminal {
                    "terminal"
                } else {
                    "automatic recovery exhausted"
                },
                incident.crash.error_message,
                incident.id
            ),
        };
        if self.told_about.as_deref() != Some(incident.id.as_str()) {
            crate::notify::log(&notification);
            ctx.session.notify_human(&notification);
            self.told_about = Some(incident.id.clone());
        }
        if ctx.session.wait_for_ack(ctx.deadline, ctx.cancel) {
            Outcome::Recovered
        } else {
            Outcome::Failed("no acknowledgement before the timeout".into())
        }
    }
}

/// Restarts the bot: a staged stop, a new bot, and its `hello` (the runner then resumes
/// it from the saved state, so an in-flight task runs once more and nothing done runs
/// again).
#[derive(Debug, Default)]
pub struct RestartBot;

impl Strategy for RestartBot {
    fn name(&self) -> &str {
        "restart-bot"
    }

    fn applies_to(&self, incident: &Incident, _session: &dyn SessionControl) -> Applicability {
        if incident.terminal {
            return Applicability::Skip(format!(
                "{} is not fixed by restarting the bot",
                incident.kind
            ));
        }
        Applicability::Applies
    }

    fn recover(&mut self, _incident: &Incident, ctx: &mut RecoveryCtx<'_>) -> Outcome {
        match ctx.session.restart_bot(ctx.deadline) {
            Ok(_) => Outcome::Recovered,
            Err(e) => Outcome::Failed(format!("bot not back: {e}")),
        }
    }
}

/// Rolls the game fields back to an older good generation and restarts the client.
#[derive(Debug, Default)]
pub struct Restore {
    /// A chosen generation; `None`: the newest good older one.
    pub generation: Option<u64>,
}

impl Strategy for Restore {
    fn name(&self) -> &str {
        "restore"
    }

    fn applies_to(&self, incident: &Incident, _session: &dyn SessionControl) -> Applicability {
        if incident.terminal {
            return Applicability::Skip("a terminal condition is not fixed by older state".into());
        }
        Applicability::Applies
    }

    fn recover(&mut self, _incident: &Incident, ctx: &mut RecoveryCtx<'_>) -> Outcome {
        let generation = match ctx.session.roll_back_state(self.generation) {
            Ok(g) => g,
            Err(e) => return Outcome::Failed(format!("no state to roll back to: {e}")),
        };
        info!(
            session = ctx.session.session_name(),
            generation, "state rolled back; restarting the client"
        );
        if let Err(e) = ctx.session.stop_client() {
            return Outcome::Failed(format!("could not stop the client: {e}"));
        }
        if let Err(e) = ctx.session.start_client() {
            return Outcome::Failed(format!("could not start the client: {e}"));
        }
        match ctx.session.wait_client_ready(ctx.deadline, ctx.cancel) {
            Ok(_) => Outcome::Recovered,
            Err(e) => Outcome::Failed(format!("client not ready after restore: {e}")),
        }
    }
}
