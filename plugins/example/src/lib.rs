//! The minimal ms11-recovery strategy plugin: copy this crate to start your own.
//!
//! It provides one strategy, `example-wait`, for disconnects: it waits the configured
//! number of milliseconds (`[plugins.config.example] wait_ms = 200`) and reports the
//! session recovered. Build with `cargo build --release -p ms11-plugin-example`, copy
//! `libms11_plugin_example.so` into a directory listed in `plugins.dirs`, and put
//! `example-wait` into a session's `pipeline`.

use std::time::Duration;

use ms11_plugin_api::serde_json::Value;
use ms11_plugin_api::{Plugin, PluginOutcome, export_plugin};

/// The plugin's state (its configuration).
pub struct Example {
    wait: Duration,
}

impl Plugin for Example {
    fn create(config: &Value) -> Result<Self, String> {
        let wait_ms = match config.get("wait_ms") {
            None => 200,
            Some(v) => v
                .as_u64()
                .ok_or("`wait_ms` must be a whole number of milliseconds")?,
        };
        Ok(Example {
            wait: Duration::from_millis(wait_ms),
        })
    }

    fn strategies(&self) -> Vec<String> {
        vec!["example-wait".into()]
    }

    fn applies_to(&self, _strategy: &str, incident: &Value) -> Result<(), String> {
        match incident["kind"].as_str() {
            Some("disconnect") => Ok(()),
            other => Err(format!(
                "example-wait only handles disconnects, not {}",
                other.unwrap_or("?")
            )),
        }
    }

    fn recover(&mut self, _strategy: &str, _incident: &Value, deadline: Duration) -> PluginOutcome {
        if self.wait > deadline {
            return PluginOutcome::Failed("the wait is longer than the deadline".into());
        }
        std::thread::sleep(self.wait);
        PluginOutcome::Recovered
    }
}

export_plugin!(Example, "example", "1.0.0");
