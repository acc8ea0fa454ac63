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

/// Answers a request with a loaded plugin (the child's loop, and in-process plugins).
pub fn answer(plugin: &crate::loader::LoadedPlugin, request: &Request) -> Response {
    let parse = |text: String| serde_json::from_str::<serde_json::Value>(&text);
    match request {
        Request::Create { .. } => Response::Error {
            message: "already created".into(),
            panicked: false,
        },
        Request::AppliesTo { strategy, incident } => match plugin
            .applies_to(strategy, &incident.to_string())
            .map(parse)
        {
            Ok(Ok(v)) => Response::Applies {
                applies: v["applies"].as_bool().unwrap_or(false),
                reason: v["reason"].as_str().map(str::to_owned),
            },
            Ok(Err(e)) => Response::Error {
                message: format!("plugin answered invalid JSON: {e}"),
                panicked: false,
            },
            Err(e) => Response::Error {
                message: e.message,
                panicked: e.panicked,
            },
        },
        Request::Recover {
            strategy,
            incident,
            deadline_ms,
        } => {
            match plugin
                .recover(strategy, &incident.to_string(), *deadline_ms)
                .map(parse)
            {
                Ok(Ok(v)) => Response::Outcome {
                    outcome: v["outcome"].as_str().unwrap_or("failed").to_owned(),
                    reason: v["reason"].as_str().map(str::to_owned),
                },
                Ok(Err(e)) => Response::Error {
                    message: format!("plugin answered invalid JSON: {e}"),
                    panicked: false,
                },
                Err(e) => Response::Error {
                    message: e.message,
                    panicked: e.panicked,
                },
            }
        }
    }
}
