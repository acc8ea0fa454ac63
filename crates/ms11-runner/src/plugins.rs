//! Strategy plugins in the runner: loading them (each in its own `ms11-plugin-host`
//! child) from the configuration, and `ms11-recovery plugins list|check`.

use std::time::Duration;

use anyhow::Result;
use ms11_config::Config;
use ms11_plugin_host::{PluginHostConfig, PluginReport, PluginStrategy};
use serde_json::json;

use crate::exit_code::ExitCode;
use crate::output::Output;

/// The plugin host settings from the configuration.
pub fn host_config(config: &Config) -> PluginHostConfig {
    PluginHostConfig {
        dirs: config.plugins.dirs.clone(),
        allow: config.plugins.allow.clone(),
        host_binary: config.plugins.host.clone(),
        call_timeout: Duration::from_secs_f64(config.plugins.call_timeout_secs.max(0.0)),
        configs: config.plugins.config.clone(),
        in_process: config.plugins.in_process.clone(),
    }
}

/// Loads every configured plugin (nothing when no directory is configured).
pub fn load(config: &Config) -> (Vec<PluginStrategy>, Vec<PluginReport>) {
    if config.plugins.dirs.is_empty() {
        return (Vec::new(), Vec::new());
    }
    ms11_plugin_host::load_all(&host_config(config))
}

/// Strategy names the loaded plugins provide.
pub fn strategy_names(strategies: &[PluginStrategy]) -> Vec<String> {
    strategies
        .iter()
        .map(|s| ms11_recover::Strategy::name(s).to_owned())
        .collect()
}

/// `plugins list` (what loaded) and `plugins check` (the same, exit 1 if any failed).
pub fn command(config: &Config, check: bool, out: &mut Output) -> Result<ExitCode> {
    let (_, reports) = load(config);
    let mut lines = Vec::new();
    let mut entries = Vec::new();
    if config.plugins.dirs.is_empty() {
        lines.push("no plugin directories configured (plugins.dirs)".to_owned());
    }
    let mut failed = 0;
    for r in &reports {
        match &r.result {
            Ok((id, version, strategies, sha)) => {
                lines.push(format!(
                    "loaded  {id} {version}: {} ({})",
                    strategies.join(", "),
                    r.path.display()
                ));
                entries.push(json!({"path": r.path, "ok": true, "id": id, "version": version, "strategies": strategies, "sha256": sha}));
            }
            Err(e) => {
                failed += 1;
                lines.push(format!("refused {}: {e}", r.path.display()));
                entries.push(json!({"path": r.path, "ok": false, "error": e}));
            }
        }
    }
    out.emit(&lines.join("\n"), &json!({"plugins": entries}))?;
    Ok(if check && failed > 0 {
        ExitCode::Error
    } else {
        ExitCode::Ok
    })
}
