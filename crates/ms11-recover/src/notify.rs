//! Telling a human: a notification, sent to the log, the desktop and a webhook.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// What a human is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// The session.
    pub session: String,
    /// The incident id.
    pub incident: String,
    /// The incident kind.
    pub kind: String,
    /// One-line summary.
    pub title: String,
    /// What happened and what to do.
    pub message: String,
}

/// The webhook body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `{"session", "incident", "kind", "title", "message"}`.
    #[default]
    Json,
    /// Discord: `{"content": "..."}`.
    Discord,
    /// ntfy: the message as text body, the title in a `Title` header.
    Ntfy,
}

/// POSTs the notification; errors are returned for the caller to log.
pub fn send_webhook(url: &str, format: WebhookFormat, n: &Notification) -> Result<(), String> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let result = match format {
        WebhookFormat::Json => agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(serde_json::to_string(n).unwrap_or_default()),
        WebhookFormat::Discord => agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(
                serde_json::json!({"content": format!("**{}**\n{}", n.title, n.message)})
                    .to_string(),
            ),
        WebhookFormat::Ntfy => agent
            .post(url)
            .header("Title", &n.title)
            .send(n.message.clone()),
    };
    result.map(|_| ()).map_err(|e| e.to_string())
}

/// The desktop, when `notify-send` is installed and a session bus is there.
pub fn desktop(n: &Notification) {
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        return;
    }
    match std::process::Command::new("notify-send")
        .args(["--urgency=critical", &n.title, &n.message])
        .status()
    {
        Ok(status) if status.success() => {
            info!(incident = %n.incident, "desktop notification shown")
        }
        Ok(_) | Err(_) => {}
    }
}

/// Logs the notification at warn level (always).
pub fn log(n: &Notification) {
    warn!(event = "manual", session = %n.session, incident = %n.incident, kind = %n.kind, "{}: {}", n.title, n.message);
}
