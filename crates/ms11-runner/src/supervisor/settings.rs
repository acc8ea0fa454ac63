//! The configuration of one session as the supervisor's typed settings.

use std::sync::Arc;
use std::time::Duration;

use ms11_config::{Config, ProcessConfig, ReadyKind, SessionConfig};
use ms11_plugin_host::PluginStrategy;
use ms11_process::ProcessSpec;
use ms11_recover::Strategy;
use ms11_supervisor::{
    ChildSettings, ReadySettings, ScreenshotSettings, SessionSettings, StrategyFactory, Tracking,
    WineSettings,
};

/// The settings of `session`, with the runner-wide keys that apply to it.
pub fn session_settings(
    config: &Config,
    index: usize,
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
    settings.screenshots = screenshot_settings(config, index, session);
    settings.client = session.client.as_ref().and_then(child_settings);
    settings.bot = session.bot.as_ref().and_then(child_settings);
    settings.client_log = session.client_log.clone();
    let has_display = session.window.display.is_some() || std::env::var_os("DISPLAY").is_some();
    settings.ready = ReadySettings {
        kind: match session.ready.kind {
            ReadyKind::Auto if session.window.enabled && has_display => {
                ms11_supervisor::ReadyKind::Window
            }
            ReadyKind::Auto => ms11_supervisor::ReadyKind::Delay,
            ReadyKind::LogLine => ms11_supervisor::ReadyKind::LogLine,
            ReadyKind::Window => ms11_supervisor::ReadyKind::Window,
            ReadyKind::Delay => ms11_supervisor::ReadyKind::Delay,
        },
        pattern: session.ready.pattern.clone(),
        window_titles: session.window.main_titles.clone(),
        display: session.window.display.clone(),
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
    settings.state_limits = ms11_state::StateLimits {
        max_patch_bytes: config.max_patch_bytes,
        max_state_bytes: config.max_state_bytes,
    };
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
    let wine = process.wine.as_ref().map(|wine| {
        // `wine PROGRAM ARGS...` in the session's own prefix, quiet, without the
        // Mono/Gecko installers a fresh prefix would ask for.
        spec.args
            .insert(0, std::mem::replace(&mut spec.program, wine.binary.clone()));
        let mut env = vec![("WINEPREFIX".to_owned(), wine.prefix.display().to_string())];
        for (key, value) in [
            ("WINEDEBUG", "-all"),
            ("WINEDLLOVERRIDES", "mscoree,mshtml="),
        ] {
            if !process.env.contains_key(key) {
                env.push((key.to_owned(), value.to_owned()));
            }
        }
        spec.env.extend(env);
        WineSettings {
            prefix: wine.prefix.clone(),
            server: wine
                .server
                .clone()
                .unwrap_or_else(|| wineserver_next_to(&wine.binary)),
        }
    });
    Some(ChildSettings {
        spec,
        stop_signal: ms11_config::signal_number(&process.stop_signal).unwrap_or(15),
        stop_grace: Duration::from_secs_f64(process.stop_grace_secs.max(0.0)),
        wine,
    })
}

/// `wineserver` beside a Wine loader given by path, else the one on PATH.
fn wineserver_next_to(binary: &str) -> String {
    let path = std::path::Path::new(binary);
    if binary.contains('/')
        && let Some(server) = path.parent().map(|dir| dir.join("wineserver"))
        && server.exists()
    {
        return server.display().to_string();
    }
    "wineserver".to_owned()
}

/// Screenshots go to `screenshots/` next to the session's state file, from the window
/// probe's display; none without a display (or when turned off).
fn screenshot_settings(
    config: &Config,
    index: usize,
    session: &SessionConfig,
) -> Option<ScreenshotSettings> {
    let has_display = session.window.display.is_some() || std::env::var_os("DISPLAY").is_some();
    if !(session.screenshots.enabled && session.window.enabled && has_display) {
        return None;
    }
    let state_file = config.state_file_of(index, session);
    let dir = state_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .join("screenshots");
    let titles = session
        .window
        .main_titles
        .iter()
        .filter_map(|t| {
            regex::RegexBuilder::new(t)
                .case_insensitive(true)
                .build()
                .ok()
        })
        .collect();
    Some(ScreenshotSettings {
        dir,
        keep: session.screenshots.keep.max(1),
        display: session.window.display.clone(),
        titles,
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
