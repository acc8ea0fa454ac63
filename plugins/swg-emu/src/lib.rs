//! A site-specific strategy for SWGEmu-style servers: `swg-emu-wait-login-server`.
//!
//! After "server down for maintenance" (or a disconnect) a relog is pointless until the
//! login server answers again, and logging in too fast gets the account throttled. This
//! strategy waits, with backoff, until the login server's TCP port accepts a connection
//! (config `host`, `port`, default `127.0.0.1:44453`) and then reports the session
//! recovered so the next strategy (`relog`) can log in. A ban is terminal.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use ms11_plugin_api::serde_json::Value;
use ms11_plugin_api::{Plugin, PluginOutcome, export_plugin};

/// The plugin: where the login server is.
pub struct SwgEmu {
    host: String,
    port: u16,
}

impl SwgEmu {
    fn address(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}:{}: {e}", self.host, self.port))?
            .next()
            .ok_or_else(|| format!("{}:{} resolves to nothing", self.host, self.port))
    }
}

impl Plugin for SwgEmu {
    fn create(config: &Value) -> Result<Self, String> {
        let host = config
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or("127.0.0.1")
            .to_owned();
        let port = match config.get("port") {
            None => 44453,
            Some(v) => v
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or("`port` must be a TCP port number")?,
        };
        Ok(SwgEmu { host, port })
    }

    fn strategies(&self) -> Vec<String> {
        vec!["swg-emu-wait-login-server".into()]
    }

    fn applies_to(&self, _strategy: &str, incident: &Value) -> Result<(), String> {
        match incident["kind"].as_str() {
            Some("server_down" | "disconnect" | "session_expired" | "banned") => Ok(()),
            other => Err(format!(
                "not a login-server problem ({})",
                other.unwrap_or("?")
            )),
        }
    }

    fn recover(&mut self, _strategy: &str, incident: &Value, deadline: Duration) -> PluginOutcome {
        if incident["kind"] == "banned" {
            return PluginOutcome::Terminal("the account is banned on this server".into());
        }
        let address = match self.address() {
            Ok(a) => a,
            Err(e) => return PluginOutcome::Failed(e),
        };
        let end = Instant::now() + deadline;
        let mut wait = Duration::from_millis(100);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return PluginOutcome::Failed(format!(
                    "the login server {address} did not answer in time"
                ));
            }
            if TcpStream::connect_timeout(&address, left.min(Duration::from_secs(2))).is_ok() {
                return PluginOutcome::Recovered;
            }
            std::thread::sleep(wait.min(end.saturating_duration_since(Instant::now())));
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}

export_plugin!(SwgEmu, "swg-emu", "1.0.0");
