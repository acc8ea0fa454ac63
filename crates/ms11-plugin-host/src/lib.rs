//! Strategy plugins for the recovery pipeline: finding them, checking them before
//! anything is loaded, and running each inside its own `ms11-plugin-host` child process
//! so that a plugin that panics, aborts, segfaults or hangs cannot take the runner down
//! (a hung call is killed at its deadline; a crashed plugin is disabled).
//!
//! [`load_all`] returns one [`PluginStrategy`] per strategy a plugin provides; each is an
//! ordinary [`ms11_recover::Strategy`], usable anywhere in a pipeline's order, and a
//! [`PluginReport`] per file for `ms11-recovery plugins list|check`.
//! The C ABI itself is `ms11-plugin-api`; the child's side is [`loader`].

pub mod checks;
pub mod loader;
pub mod protocol;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use ms11_process::{ManagedChild, ProcessSpec, StdioMode};
use ms11_recover::{Applicability, Outcome, RecoveryCtx, SessionControl, Strategy};
use ms11_state::Incident;
use tracing::{info, warn};

use crate::protocol::{HOST_PROTOCOL, Request, Response};

/// Where plugins come from and how they run.
#[derive(Debug, Clone, Default)]
pub struct PluginHostConfig {
    /// Absolute directories searched (not recursively).
    pub dirs: Vec<PathBuf>,
    /// Plugin id → sha256; when not empty, only these libraries load.
    pub allow: BTreeMap<String, String>,
    /// The `ms11-plugin-host` binary (default: `MS11_PLUGIN_HOST`, else next to the
    /// running executable).
    pub host_binary: Option<PathBuf>,
    /// How long one call may take beyond its own deadline.
    pub call_timeout: Duration,
    /// Per plugin id: its configuration.
    pub configs: BTreeMap<String, serde_json::Value>,
    /// Plugin ids run inside the runner's process instead of a child (faster calls, but
    /// a crash or hang of the plugin is then the runner's). They are first opened in a
    /// child all the same, so a library that crashes on load never reaches the runner.
    pub in_process: Vec<String>,
}

/// What happened to one plugin file.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginReport {
    /// The file.
    pub path: PathBuf,
    /// Loaded (id, version, strategies, sha256) or why not.
    pub result: Result<(String, String, Vec<String>, String), String>,
}

/// Finds, checks and starts every plugin.
pub fn load_all(config: &PluginHostConfig) -> (Vec<PluginStrategy>, Vec<PluginReport>) {
    let (files, problems) = checks::discover(&config.dirs);
    let mut reports: Vec<PluginReport> = problems
        .into_iter()
        .map(|(path, e)| PluginReport {
            path,
            result: Err(e),
        })
        .collect();
    let mut strategies = Vec::new();
    let mut seen_ids: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in files {
        let result = (|| {
            let sha = checks::check_before_loading(&path, &config.allow)?;
            let mut process = PluginProcess::new(&path, host_binary(config), config.call_timeout);
            let (id, version) = process.open()?;
            if let Some(other) = seen_ids.get(&id) {
                return Err(format!(
                    "plugin id `{id}` is already provided by `{}`",
                    other.display()
                ));
            }
            if !config.allow.is_empty()
                && config
                    .allow
                    .get(&id)
                    .is_none_or(|h| !h.eq_ignore_ascii_case(&sha))
            {
                return Err(format!(
                    "plugin `{id}` (sha256 {sha}) is not allowed under that id in plugins.allow"
                ));
            }
            let plugin_config = config
                .configs
                .get(&id)
                .cloned()
                .unwrap_or_else(|| serde_json::json!({}));
            let names = process.create(&plugin_config)?;
            seen_ids.insert(id.clone(), path.clone());
            let backend = if config.in_process.contains(&id) {
                drop(process);
                let loaded = loader::OpenedLibrary::open(&path)?.create(&plugin_config)?;
                Backend::InProcess(Arc::new(Mutex::new(InProcess(loaded))))
            } else {
                Backend::Child(Arc::new(Mutex::new(process)))
            };
            for name in &names {
                strategies.push(PluginStrategy {
                    name: name.clone(),
                    plugin: id.clone(),
                    backend: backend.clone(),
                });
            }
            info!(plugin = %id, %version, strategies = ?names, path = %path.display(), "plugin loaded");
            Ok((id, version, names, sha))
        })();
        if let Err(e) = &result {
            warn!(path = %path.display(), error = %e, "plugin not loaded");
        }
        reports.push(PluginReport { path, result });
    }
    (strategies, reports)
}

fn host_binary(config: &PluginHostConfig) -> PathBuf {
    config
        .host_binary
        .clone()
        .or_else(|| std::env::var_os("MS11_PLUGIN_HOST").map(PathBuf::from))
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(|d| d.join("ms11-plugin-host")))
        })
        .unwrap_or_else(|| PathBuf::from("ms11-plugin-host"))
}

/// One plugin running in its child process.
pub struct PluginProcess {
    path: PathBuf,
    binary: PathBuf,
    timeout: Duration,
    config: Option<serde_json::Value>,
    child: Option<ManagedChild>,
    stdin: Option<ChildStdin>,
    responses: Option<Receiver<Response>>,
    disabled: Option<String>,
}

impl PluginProcess {
    /// A plugin file to run with `binary`.
    pub fn new(path: &Path, binary: PathBuf, timeout: Duration) -> Self {
        PluginProcess {
            path: path.to_path_buf(),
            binary,
            timeout: if timeout.is_zero() {
                Duration::from_secs(5)
            } else {
                timeout
            },
            config: None,
            child: None,
            stdin: None,
            responses: None,
            disabled: None,
        }
    }

    /// Starts the child and waits for `loaded`: the library opened and its header is fine.
    pub fn open(&mut self) -> Result<(String, String), String> {
        // Like every child of the runner: its own process group, the parent-death
        // signal, a waiter that reports its exit.
        let spec = ProcessSpec {
            program: self.binary.display().to_string(),
            args: vec!["--plugin".into(), self.path.display().to_string()],
            stdin: StdioMode::Piped,
            stdout: StdioMode::Piped,
            stderr: StdioMode::Inherit,
            ..ProcessSpec::default()
        };
        let (exits, _) = crossbeam_channel::unbounded();
        let mut child = ManagedChild::spawn(&spec, "plugin-host", exits)
            .map_err(|e| format!("cannot start `{}`: {e}", self.binary.display()))?;
        let stdout = child.take_stdout().ok_or("no stdout")?;
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Response>(&line) {
                    Ok(r) => {
                        if tx.send(r).is_err() {
                            break;
                        }
                    }
                    Err(_) => {
                        warn!(line = %line, "plugin host printed something that is not protocol")
                    }
                }
            }
        });
        self.stdin = child.take_stdin();
        self.child = Some(child);
        self.responses = Some(rx);
        match self.receive(Duration::from_secs(10))? {
            Response::Loaded {
                protocol,
                id,
                version,
            } if protocol == HOST_PROTOCOL => Ok((id, version)),
            Response::Loaded { protocol, .. } => Err(format!(
                "plugin host speaks protocol {protocol}, expected {HOST_PROTOCOL}"
            )),
            Response::Error { message, .. } => Err(message),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Creates the instance; returns its strategies.
    pub fn create(&mut self, config: &serde_json::Value) -> Result<Vec<String>, String> {
        self.config = Some(config.clone());
        match self.call(
            &Request::Create {
                config: config.clone(),
            },
            Duration::from_secs(10),
        )? {
            Response::Hello { strategies, .. } => Ok(strategies),
            Response::Error { message, .. } => Err(message),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Why it is disabled, if it is.
    pub fn disabled(&self) -> Option<&str> {
        self.disabled.as_deref()
    }

    fn ensure_running(&mut self) -> Result<(), String> {
        if let Some(why) = &self.disabled {
            return Err(format!("plugin disabled: {why}"));
        }
        if self.child.is_some() {
            return Ok(());
        }
        // Killed after a timeout: start it again.
        self.open()?;
        let config = self.config.clone().unwrap_or_else(|| serde_json::json!({}));
        self.create(&config).map(|_| ())
    }

    fn send(&mut self, request: &Request) -> Result<(), String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or("the plugin host is not running")?;
        let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("the plugin host is gone: {e}"))
    }

    fn receive(&mut self, timeout: Duration) -> Result<Response, String> {
        let rx = self
            .responses
            .as_ref()
            .ok_or("the plugin host is not running")?;
        match rx.recv_timeout(timeout) {
            Ok(r) => Ok(r),
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                Err(format!(
                    "the plugin did not answer within {} ms; its process was killed",
                    timeout.as_millis()
                ))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self
                    .child
                    .take()
                    .and_then(|c| c.wait_exit(Duration::from_secs(1)));
                self.stdin = None;
                let how = status.map_or_else(|| "exited".to_owned(), |s| s.to_string());
                let why = format!("the plugin crashed ({how})");
                warn!(path = %self.path.display(), %why, "plugin disabled");
                self.disabled = Some(why.clone());
                Err(why)
            }
        }
    }

    fn call(&mut self, request: &Request, timeout: Duration) -> Result<Response, String> {
        self.send(request)?;
        let response = self.receive(timeout)?;
        if let Response::Error {
            message,
            panicked: true,
        } = &response
        {
            self.disabled = Some(message.clone());
            warn!(path = %self.path.display(), %message, "plugin panicked; disabled");
        }
        Ok(response)
    }

    fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            child.kill_group();
            let _ = child.wait_exit(Duration::from_secs(5));
        }
        self.stdin = None;
        self.responses = None;
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plugin loaded into the runner's own process (opt-in per plugin id).
struct InProcess(loader::LoadedPlugin);

// SAFETY: the plugin instance is only used through the Mutex (one call at a time), and
// the SDK's `Plugin` trait requires `Send` of the implementation behind it.
#[allow(unsafe_code)]
unsafe impl Send for InProcess {}

/// Where a plugin runs.
#[derive(Clone)]
enum Backend {
    Child(Arc<Mutex<PluginProcess>>),
    InProcess(Arc<Mutex<InProcess>>),
}

/// One strategy of a plugin, as the pipeline sees it.
#[derive(Clone)]
pub struct PluginStrategy {
    name: String,
    plugin: String,
    backend: Backend,
}

impl PluginStrategy {
    /// The plugin's id.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Whether it runs inside the runner's process.
    pub fn in_process(&self) -> bool {
        matches!(self.backend, Backend::InProcess(_))
    }

    fn call(&self, request: &Request, timeout: Duration) -> Result<Response, String> {
        match &self.backend {
            Backend::Child(process) => {
                let mut process = process
                    .lock()
                    .map_err(|_| "plugin lock poisoned".to_owned())?;
                process.ensure_running()?;
                let timeout = timeout + process.timeout;
                process.call(request, timeout)
            }
            Backend::InProcess(plugin) => {
                let plugin = plugin
                    .lock()
                    .map_err(|_| "plugin lock poisoned".to_owned())?;
                Ok(protocol::answer(&plugin.0, request))
            }
        }
    }
}

impl Strategy for PluginStrategy {
    fn name(&self) -> &str {
        &self.name
    }

    fn applies_to(&self, incident: &Incident, _session: &dyn SessionControl) -> Applicability {
        let incident = serde_json::to_value(incident).unwrap_or_default();
        match self.call(
            &Request::AppliesTo {
                strategy: self.name.clone(),
                incident,
            },
            Duration::ZERO,
        ) {
            Ok(Response::Applies { applies: true, .. }) => Applicability::Applies,
            Ok(Response::Applies { reason, .. }) => Applicability::Skip(
                reason.unwrap_or_else(|| "the plugin says it does not apply".into()),
            ),
            Ok(Response::Error { message, .. }) => {
                Applicability::Skip(format!("plugin `{}`: {message}", self.plugin))
            }
            Ok(other) => {
                Applicability::Skip(format!("plugin `{}` answered {other:?}", self.plugin))
            }
            Err(e) => Applicability::Skip(format!("plugin `{}`: {e}", self.plugin)),
        }
    }

    fn recover(&mut self, incident: &Incident, ctx: &mut RecoveryCtx<'_>) -> Outcome {
        let left = ctx.deadline.saturating_duration_since(Instant::now());
        let incident = serde_json::to_value(incident).unwrap_or_default();
        let deadline_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
        match self.call(
            &Request::Recover {
                strategy: self.name.clone(),
                incident,
                deadline_ms,
            },
            left,
        ) {
            Ok(Response::Outcome { outcome, reason }) => match outcome.as_str() {
                "recovered" => Outcome::Recovered,
                "terminal" => Outcome::Terminal(reason.unwrap_or_else(|| "terminal".into())),
                _ => Outcome::Failed(reason.unwrap_or_else(|| "failed".into())),
            },
            Ok(Response::Error { message, .. }) => {
                Outcome::Failed(format!("plugin `{}`: {message}", self.plugin))
            }
            Ok(other) => Outcome::Failed(format!("plugin `{}` answered {other:?}", self.plugin)),
            Err(e) => Outcome::Failed(format!("plugin `{}`: {e}", self.plugin)),
        }
    }
}
