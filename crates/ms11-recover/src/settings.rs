//! Typed settings of the pipeline and of each built-in strategy (embedded in the
//! runner's configuration; strategies never read files).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every recovery setting of one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RecoverySettings {
    /// Crash-loop breaker.
    pub breaker: BreakerSettings,
    /// Retry policy of `restart` (stop the client: signal, grace, kill the group; start
    /// it; wait until ready).
    pub restart: StrategySettings,
    /// Retry policy of `relog` (log in again without restarting the client).
    pub relog: StrategySettings,
    /// Retry policy of `manual` (`timeout_secs`: how long to wait for a human).
    pub manual: StrategySettings,
    /// Retry policy of `restore` (roll the game fields back to an older good
    /// generation, then restart).
    pub restore: StrategySettings,
    /// Retry policy of `restart-bot` (the bot's own pipeline: stop the bot, start it,
    /// wait for its `hello`, resume it from the saved state).
    #[serde(rename = "restart-bot")]
    pub restart_bot: StrategySettings,
    /// When no strategy brought the session back: how often the pipeline is tried
    /// again. The session is never left down for good; only a terminal incident or a
    /// person stops the retries.
    pub retry: RetrySettings,
    /// `relog` runs this command (exit status 0 = logged in) instead of asking the bot.
    /// A program with a slash written in the config file is relative to its directory.
    pub relog_command: Option<Vec<String>>,
    /// How `manual` reaches a human.
    pub notify: ManualSettings,
    /// `restore` uses this generation instead of the newest good older one.
    pub restore_generation: Option<u64>,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        RecoverySettings {
            breaker: BreakerSettings::default(),
            restart: StrategySettings::default(),
            relog: StrategySettings::default(),
            manual: StrategySettings {
                attempts: 1,
                timeout_secs: 900.0,
                ..StrategySettings::default()
            },
            restore: StrategySettings::default(),
            restart_bot: StrategySettings {
                attempts: 3,
                timeout_secs: 30.0,
                backoff_base_ms: 250,
                backoff_cap_ms: 30_000,
                ..StrategySettings::default()
            },
            retry: RetrySettings::default(),
            relog_command: None,
            notify: ManualSettings::default(),
            restore_generation: None,
        }
    }
}

impl RecoverySettings {
    /// The retry policy of a strategy by name.
    pub fn policy_of(&self, strategy: &str) -> StrategySettings {
        match strategy {
            "restart" => self.restart.clone(),
            "relog" => self.relog.clone(),
            "manual" => self.manual.clone(),
            "restore" => self.restore.clone(),
            "restart-bot" => self.restart_bot.clone(),
            _ => StrategySettings::default(),
        }
    }
}

/// Retries after an unrecovered incident: the delay doubles per round up to the cap
/// (with jitter), and is persisted, so a runner restart does not retry at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// The first retry comes this many seconds after the pipeline gave up.
    pub base_secs: f64,
    /// Retries never come further apart than this many seconds.
    pub cap_secs: f64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            base_secs: 30.0,
            cap_secs: 300.0,
        }
    }
}

impl RetrySettings {
    /// The delay before retry round `round` (0-based), without jitter.
    pub fn delay(&self, round: u32) -> std::time::Duration {
        let base = self.base_secs.max(0.01);
        let full = (base * 2f64.powi(round.min(30) as i32)).min(self.cap_secs.max(base));
        std::time::Duration::from_secs_f64(full)
    }
}

/// Too many incidents in a window go straight to `manual` (like OTP's restart
/// intensity or systemd's StartLimitBurst).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// More incidents than this within `window_secs` trip the breaker.
    pub max_incidents: usize,
    /// The sliding window, seconds.
    pub window_secs: f64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            max_incidents: 5,
            window_secs: 300.0,
        }
    }
}

/// Retry policy of one strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StrategySettings {
    /// Tries per incident before moving on to the next strategy.
    pub attempts: u32,
    /// Seconds one try may take.
    pub timeout_secs: f64,
    /// First backoff delay after a failure, milliseconds (doubles per failure).
    pub backoff_base_ms: u64,
    /// Longest backoff delay, milliseconds.
    pub backoff_cap_ms: u64,
    /// At most this many tries within `budget_window_secs` across incidents; then the
    /// strategy is skipped (escalation) until the window slides.
    pub budget: u32,
    /// The budget's sliding window, seconds.
    pub budget_window_secs: f64,
}

impl Default for StrategySettings {
    fn default() -> Self {
        StrategySettings {
            attempts: 2,
            timeout_secs: 60.0,
            backoff_base_ms: 500,
            backoff_cap_ms: 60_000,
            budget: 10,
            budget_window_secs: 600.0,
        }
    }
}

/// How the `manual` strategy reaches a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ManualSettings {
    /// POST a notification here (secrets in the URL are redacted from logs).
    pub webhook_url: Option<String>,
    /// `json` (`{"session", "incident", "kind", "message"}`), `discord` (`{"content"}`) or
    /// `ntfy` (text body, `Title` header).
    pub webhook_format: crate::notify::WebhookFormat,
    /// Also acknowledged when this file appears (it is removed after).
    pub ack_file: Option<std::path::PathBuf>,
    /// Run `notify-send` when it is installed and a desktop session is there.
    pub desktop_notify: bool,
}

impl Default for ManualSettings {
    fn default() -> Self {
        ManualSettings {
            webhook_url: None,
            webhook_format: crate::notify::WebhookFormat::Json,
            ack_file: None,
            desktop_notify: true,
        }
    }
}
