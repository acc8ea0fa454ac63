//! The configuration of one session as the supervisor's typed settings.

use std::sync::Arc;
use std::time::Duration;

use ms11_config::{Config, ProcessConfig, ReadyKind, SessionConfig};
use ms11_plugin_host::PluginStrategy;
use ms11_process::ProcessSpec;
use ms11_recover::Strategy;
use ms11_supervisor::{ChildSettings, ReadySettings, SessionSettings, StrategyFactory, Tracking};

/// The settings of `session`, with the runner-wide keys that apply to it.
pub fn session_settings(
    config: &Config,
    session: &SessionConfig,
    plugins: &[PluginStrategy],
) -> SessionSettings {
    let extra_strategies = plugins
        .iter()
        .map(|p| {
            let strategy = p.clone();
            let make: StrategyFactory =
                Arc::new(move || Box::new(strategy.clone()) as Box<dyn Strategy>);
            (Strategy::name(p).to_owned(), make)
        })
        .collect();
    let mut settings = SessionSettings::new(&session.name);
    settings.client = session.client.as_ref().and_then(child_settings);
    settings.bot = session.bot.as_ref().and_then(child_settings);
    settings.client_log = session.client_log.clone();
    settings.ready = ReadySettings {
        kind: match session.ready.kind {
            ReadyKind::LogLine => ms11_supervisor::ReadyKind::LogLine,
            ReadyKind::Window => ms11_supervisor::ReadyKind::Window,
            ReadyKind::Delay => ms11_supervisor::ReadyKind::Delay,
        },
        pattern: session.ready.pattern.clone(),
        delay: Duration::from_millis(session.ready.delay_ms),
        timeout: Duration::from_secs_f64(session.ready.timeout_secs.max(0.0)),
    };
    settings.log_patterns = config.log_patterns_of(session);
    settings.window = session.window.clone();
    settings.crash_dump = session.crash_dump.clone();
    settings.stall = session.stall.clone();
    settings.fuse_window = Duration::from_millis(session.fuse.window_ms);
    settings.client_pipeline = session.pipeline.clone();
    settings.recovery = session.recovery.clone();
    settings.extra_strategies = extra_strategies;
    settings.recovery_enabled = config.recovery_enabled;
    settings.auto_restart = config.auto_restart;
    settings.auto_relog = config.auto_relog;
    settings.save_interval = Duration::from_secs(config.save_interval.max(1));
    settings.tracking = tracking(&config.session_tracking);
    settings
}

/// The seed's `session_tracking` as the fields of the bot's patches that are dropped
/// (the configuration's own rule, [`ms11_config::SessionTracking::allows`], decides).
fn tracking(t: &ms11_config::SessionTracking) -> Tracking {
    const GAME_FIELDS: [&str; 9] = [
        "current_quest",
        "quest_step",
        "xp_level",
        "xp_current",
        "xp_next_level",
        "planet",
        "zone",
        "coordinates",
        "equipped_weapon",
    ];
    Tracking {
        off: !t.enabled,
        untracked: GAME_FIELDS
            .iter()
            .filter(|f| t.enabled && !t.allows(f))
            .map(|f| (*f).to_owned())
            .collect(),
    }
}

fn child_settings(process: &ProcessConfig) -> Option<ChildSettings> {
    let mut spec = ProcessSpec::from_argv(&process.command)?;
    spec.cwd = process.cwd.clone();
    spec.env = process
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some(ChildSettings {
        spec,
        stop_signal: ms11_config::signal_number(&process.stop_signal).unwrap_or(15),
        stop_grace: Duration::from_secs_f64(process.stop_grace_secs.max(0.0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_tracking_switches_become_the_fields_a_patch_may_not_set() {
        let mut config = ms11_config::SessionTracking::default();
        assert!(tracking(&config).tracks_everything());
        config.track_xp = false;
        config.track_equipment = false;
        let t = tracking(&config);
        for field in ["xp_level", "xp_current", "xp_next_level", "equipped_weapon"] {
            assert!(!t.tracks(field), "{field}");
        }
        for field in ["planet", "quest_step", "my_own_field"] {
            assert!(t.tracks(field), "{field}");
        }
        config.enabled = false;
        assert!(!tracking(&config).tracks("planet"));
    }
}
