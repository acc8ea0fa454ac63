//! The framed protocol between the runner and an `ms11-plugin-host` child: one JSON
//! object per line each way. The child says `loaded` (or an error, and exits), the runner
//! sends `create` with the plugin's configuration, the child answers `hello` with the
//! strategies; then `applies_to` and `recover` requests follow, one at a time.

use serde::{Deserialize, Serialize};

/// Version of this protocol (checked in `hello`).
pub const HOST_PROTOCOL: u32 = 1;

/// Runner → child.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Create the instance with this configuration (answered with `hello`).
    Create {
        /// The plugin's configuration.
        config: serde_json::Value,
    },
    /// Does `strategy` apply to `incident`?
    AppliesTo {
        /// The strategy.
        strategy: String,
        /// The incident, as JSON.
        incident: serde_json::Value,
    },
    /// Run `strategy` for `incident` within `deadline_ms`.
    Recover {
        /// The strategy.
        strategy: String,
        /// The incident, as JSON.
        incident: serde_json::Value,
        /// Milliseconds the plugin may take.
        deadline_ms: u64,
    },
}

/// Child → runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// The library opened and its header checked out (sent first, unasked).
    Loaded {
        /// [`HOST_PROTOCOL`].
        protocol: u32,
        /// Plugin id.
        id: String,
        /// Plugin version.
        version: String,
    },
    /// The plugin loaded.
    Hello {
        /// [`HOST_PROTOCOL`].
        protocol: u32,
        /// Plugin id.
        id: String,
        /// Plugin version.
        version: String,
        /// Its strategies.
        strategies: Vec<String>,
    },
    /// Answer to `applies_to`.
    Applies {
        /// Whether it applies.
        applies: bool,
        /// Why not.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Answer to `recover`.
    Outcome {
        /// `recovered`, `failed` or `terminal`.
        outcome: String,
        /// Why.
        #[serde(default)]
        reason: Option<String>,
    },
    /// The plugin refused or failed (status error or panic).
    Error {
        /// What went wrong.
        message: String,
        /// It panicked.
        #[serde(default)]
        panicked: bool,
    },
}
