//! Telling a human: a notification, sent to the log, the desktop and a webhook.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tracing::warn;

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

impl Notification {
    /// The notification with secrets in its texts redacted (what leaves the machine).
    pub fn redacted(&self) -> Notification {
        let clean = |text: &str| ms11_redact::redact(text).into_owned();
        Notification {
            session: self.session.clone(),
            incident: self.incident.clone(),
            kind: self.kind.clone(),
            title: clean(&self.title),
            message: clean(&self.message),
        }
    }
}

/// POSTs the notification, secrets redacted; errors are returned for the caller to log.
pub fn send_webhook(url: &str, format: WebhookFormat, n: &Notification) -> Result<(), String> {
    let n = &n.redacted();
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

/// The `notify-send` command line that shows `n` on the desktop, when there is a desktop
/// session to show it on. The runner starts it like any other child (through
/// `ms11-process`), never from a strategy.
pub fn desktop_command(n: &Notification) -> Option<Vec<String>> {
    let n = &n.redacted();
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        return None;
    }
    Some(vec![
        "notify-send".to_owned(),
        "--urgency=critical".to_owned(),
        n.title.clone(),
        n.message.clone(),
    ])
}

/// Logs the notification at warn level (always).
pub fn log(n: &Notification) {
    warn!(event = "manual", session = %n.session, incident = %n.incident, kind = %n.kind, "{}: {}", n.title, n.message);
}
