//! The configuration types. Every field's doc comment is its entry in the generated
//! reference (`docs/configuration.md`), so keep them user-facing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ms11_detect::{CrashDumpConfig, FuseConfig, LogPatternConfig, StallConfig, WindowProbeConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole configuration. The first eight keys are the seed's and keep its meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Seconds between automatic saves of each session's state (the seed's 5 minutes).
    /// Every task checkpoint is saved at once as well.
    pub save_interval: u64,
    /// The state file of the first session (the seed's path). Older generations sit
    /// beside it as `<file>.1`, `<file>.2`, ... Relative to the config file's directory
    /// when written in the config file (like every relative path there).
    pub state_file: PathBuf,
    /// Recover automatically when something goes wrong. When false, incidents are only
    /// recorded and reported.
    pub recovery_enabled: bool,
    /// Allow the `restart` strategy (relaunching the game client).
    pub auto_restart: bool,
    /// Allow the `relog` strategy (logging the character in again).
    pub auto_relog: bool,
    /// The seed's crash detection settings; `error_patterns` add plain-text patterns to
    /// every session's log detector.
    pub crash_detection: CrashDetection,
    /// The seed's session tracking switches: which game fields bot patches may update.
    pub session_tracking: SessionTracking,
    /// How state files are written: `atomic` (temp file, fsync, rename, directory fsync;
    /// generations kept) or `json-file` (plain rewrite, for tools that need exactly that).
    pub state_backend: StateBackend,
    /// How many generations of each state file to keep (1 = only the current one).
    pub keep_generations: usize,
    /// The largest a session's state may grow, in bytes as saved (default 16 MiB). A bot
    /// patch or task that would make it larger is refused (logged, and `rejected` to the
    /// bot); what is saved stays. At most 64 MiB, the largest state file a load accepts.
    pub max_state_bytes: u64,
    /// The largest one `state` patch from the bot may be, in bytes as saved (default
    /// 1 MiB). A larger patch is refused as a whole; the state is unchanged.
    pub max_patch_bytes: u64,
    /// On start with a saved session: `ask` (on a terminal; continue without one),
    /// `yes` (always continue) or `no` (always start a new session).
    pub continue_previous: ContinuePrevious,
    /// The control socket used by `save`, `status`, `restart`, `relog`, `ack`. Default:
    /// `ms11-recovery.sock` beside `state_file`. Relative to the config file's directory.
    pub control_socket: Option<PathBuf>,
    /// Strategy plugins (see docs/plugins.md).
    pub plugins: PluginsConfig,
    /// The sessions (characters) to supervise. Without any, the seed's keys describe one
    /// session named `main` (which can be saved and inspected, but `run` needs a client
    /// or bot command).
    pub session: Vec<SessionConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            save_interval: 300,
            state_file: PathBuf::from("tmp/session_state.json"),
            recovery_enabled: true,
            auto_restart: false,
            auto_relog: false,
            crash_detection: CrashDetection::default(),
            session_tracking: SessionTracking::default(),
            state_backend: StateBackend::Atomic,
            keep_generations: 3,
            max_state_bytes: 16 * 1024 * 1024,
            max_patch_bytes: 1024 * 1024,
            continue_previous: ContinuePrevious::Ask,
            control_socket: None,
            plugins: PluginsConfig::default(),
            session: Vec::new(),
        }
    }
}

/// The seed's `crash_detection` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CrashDetection {
    /// Run the detectors at all.
    pub enabled: bool,
    /// The seed's polling interval in seconds: accepted in the seed's files and ignored
    /// (detection here is event-driven; each detector's own interval applies).
    pub check_interval: u64,
    /// Extra plain-text patterns (case-insensitive substrings) that mark a crash, in
    /// addition to the built-in typed patterns.
    pub error_patterns: Vec<String>,
}

impl Default for CrashDetection {
    fn default() -> Self {
        CrashDetection {
            enabled: true,
            check_interval: 30,
            error_patterns: Vec::new(),
        }
    }
}

/// The seed's `session_tracking` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SessionTracking {
    /// Apply the bot's state patches at all.
    pub enabled: bool,
    /// Track `current_quest` and `quest_step`.
    pub track_quests: bool,
    /// Track `xp_level`, `xp_current`, `xp_next_level`.
    pub track_xp: bool,
    /// Track `planet`, `zone`, `coordinates`.
    pub track_location: bool,
    /// Track `equipped_weapon`.
    pub track_equipment: bool,
}

impl Default for SessionTracking {
    fn default() -> Self {
        SessionTracking {
            enabled: true,
            track_quests: true,
            track_xp: true,
            track_location: true,
            track_equipment: true,
        }
    }
}

impl SessionTracking {
    /// Whether a bot may patch the named state field.
    pub fn allows(&self, field: &str) -> bool {
        if !self.enabled {
            return false;
        }
        match field {
            "current_quest" | "quest_step" => self.track_quests,
            "xp_level" | "xp_current" | "xp_next_level" => self.track_xp,
            "planet" | "zone" | "coordinates" => self.track_location,
            "equipped_weapon" => self.track_equipment,
            _ => true,
        }
    }
}

/// State file write discipline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StateBackend {
    /// Temp file + fsync + rename + directory fsync, with generations.
    Atomic,
    /// Plain rewrite of one file.
    JsonFile,
}

/// The start-up question's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContinuePrevious {
    /// Ask on a terminal; continue when there is none.
    Ask,
    /// Always continue the saved session.
    Yes,
    /// Always start a new session.
    No,
}

/// Strategy plugins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Directories searched (not recursively) for plugin libraries (`lib*.so`); in the
    /// config file relative to its directory, elsewhere absolute. Each plugin runs in
    /// its own `ms11-plugin-host` child process.
    pub dirs: Vec<PathBuf>,
    /// Allow-list: plugin id → sha256 of its library. When not empty, other plugins and
    /// changed libraries are refused before they are loaded.
    pub allow: BTreeMap<String, String>,
    /// Seconds a plugin call may take beyond its strategy's own deadline before its
    /// process is killed.
    pub call_timeout_secs: f64,
    /// The `ms11-plugin-host` binary (default: `MS11_PLUGIN_HOST`, else next to
    /// `ms11-recovery`).
    pub host: Option<PathBuf>,
    /// Plugin ids to run inside the runner's process instead of an isolated child:
    /// faster calls, but then a crash or hang of the plugin is the runner's.
    pub in_process: Vec<String>,
    /// Per-plugin settings, passed to the plugin as JSON: `[plugins.config.swg-emu]`.
    pub config: BTreeMap<String, serde_json::Value>,
}

/// One supervised session (one character).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Name used in logs, commands (`--session NAME`) and incident ids.
    pub name: String,
    /// This session's state file. Default: the top-level `state_file` for the first
    /// session, `<its directory>/<name>/session_state.json` for the others. Relative to
    /// the config file's directory.
    pub state_file: Option<PathBuf>,
    /// The game client process.
    pub client: Option<ProcessConfig>,
    /// The bot process (speaks the agent protocol on its stdin/stdout).
    pub bot: Option<ProcessConfig>,
    /// The client's log file, followed for error patterns. Relative to the config
    /// file's directory.
    pub client_log: Option<PathBuf>,
    /// How to tell that a (re)started client is ready.
    pub ready: ReadyConfig,
    /// Recovery strategies in the order they are tried; plugin strategies by name. At
    /// least one.
    pub pipeline: Vec<String>,
    /// Log-pattern detector.
    pub log_patterns: LogPatternConfig,
    /// Window-title probe.
    pub window: WindowProbeConfig,
    /// Bot stall detector (no heartbeat or progress).
    pub stall: StallConfig,
    /// Crash-dump watcher (default directory: the client's `cwd`).
    pub crash_dump: CrashDumpConfig,
    /// Merging of signals of one failure into one incident.
    pub fuse: FuseConfig,
    /// Retry policies, the crash-loop breaker and notifications of the recovery
    /// pipeline.
    pub recovery: ms11_recover::RecoverySettings,
    /// Screenshots of the client's window at each incident and on demand
    /// (`ms11-recovery screenshot`), when there is an X display to take them from.
    pub screenshots: ScreenshotConfig,
}

/// Screenshots as evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ScreenshotConfig {
    /// Take them (needs the window probe's display: `window.display` or `DISPLAY`).
    pub enabled: bool,
    /// How many are kept in the state directory's `screenshots/` (oldest removed
    /// first; `cleanup --max-age` removes older ones too).
    pub keep: usize,
}

impl Default for ScreenshotConfig {
    fn default() -> Self {
        ScreenshotConfig {
            enabled: true,
            keep: 50,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            name: "main".into(),
            state_file: None,
            client: None,
            bot: None,
            client_log: None,
            ready: ReadyConfig::default(),
            pipeline: default_pipeline(),
            log_patterns: LogPatternConfig::default(),
            window: WindowProbeConfig::default(),
            stall: StallConfig::default(),
            crash_dump: CrashDumpConfig::default(),
            fuse: FuseConfig::default(),
            recovery: ms11_recover::RecoverySettings::default(),
            screenshots: ScreenshotConfig::default(),
        }
    }
}

/// The seed's recovery order.
pub fn default_pipeline() -> Vec<String> {
    ["restart", "relog", "manual", "restore"]
        .map(String::from)
        .to_vec()
}

/// A child process to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Program and arguments (`["./SwgClient_r.exe"]`). Never run through a shell. A
    /// program with a slash is a path, relative to `cwd` when set, else to the config
    /// file's directory; a bare name is looked up on `PATH`. `config check` refuses a
    /// program that does not exist or is not executable (`run` warns, and a start that
    /// fails is an incident retried on schedule).
    pub command: Vec<String>,
    /// Working directory (default: the runner's). Relative to the config file's
    /// directory.
    pub cwd: Option<PathBuf>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Signal asking the process to stop (`TERM`, `INT`, `HUP`, ...).
    pub stop_signal: String,
    /// Seconds to wait after the stop signal before killing the whole process group.
    pub stop_grace_secs: f64,
    /// Run `command` as a Windows program under Wine (see docs/wine.md).
    pub wine: Option<WineConfig>,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            command: Vec::new(),
            cwd: None,
            env: BTreeMap::new(),
            stop_signal: "TERM".into(),
            stop_grace_secs: 10.0,
            wine: None,
        }
    }
}

/// A Windows program under Wine: its own prefix per session, and a stop that ends
/// everything in that prefix (`wineserver -k`): the program, `winedbg` and its
/// "Program Error" dialog, `conhost.exe`, helpers and their windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WineConfig {
    /// The Wine prefix (`WINEPREFIX`) of this session; one per character. Create it
    /// once with `WINEPREFIX=... wineboot -i` (Wine would create it at the first start,
    /// which takes longer than a readiness timeout may allow).
    pub prefix: PathBuf,
    /// The Wine loader that runs the program.
    pub binary: String,
    /// The `wineserver` of that Wine (default: `wineserver` next to `binary`, else on PATH).
    pub server: Option<String>,
}

impl Default for WineConfig {
    fn default() -> Self {
        WineConfig {
            prefix: PathBuf::from("wine-prefix"),
            binary: "wine".into(),
            server: None,
        }
    }
}

/// How readiness of a (re)started client is recognised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReadyConfig {
    /// `auto` (the default: `window` when the window probe has a display, else
    /// `delay`), `window` (a main window of the client, `window.main_titles`, is mapped
    /// on the display), `log_line` (a new line of `client_log` matches `pattern`) or
    /// `delay` (wait `delay_ms`).
    pub kind: ReadyKind,
    /// Regex matched against new lines of `client_log`, for `log_line`.
    pub pattern: String,
    /// Milliseconds for `delay`.
    pub delay_ms: u64,
    /// Seconds a restart may take to become ready before it counts as failed.
    pub timeout_secs: f64,
}

impl Default for ReadyConfig {
    fn default() -> Self {
        ReadyConfig {
            kind: ReadyKind::Auto,
            pattern: "Login successful".into(),
            delay_ms: 2000,
            timeout_secs: 60.0,
        }
    }
}

/// Readiness signal kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyKind {
    /// `window` when the window probe has a display, else `delay`.
    Auto,
    /// A log line.
    LogLine,
    /// The client's main window is mapped.
    Window,
    /// A fixed delay.
    Delay,
}

impl Config {
    /// The sessions to run: the configured ones, or the seed's single `main` session.
    pub fn sessions(&self) -> Vec<SessionConfig> {
        if self.session.is_empty() {
            vec![SessionConfig::default()]
        } else {
            self.session.clone()
        }
    }

    /// A session's state file (see [`SessionConfig::state_file`]).
    pub fn state_file_of(&self, index: usize, session: &SessionConfig) -> PathBuf {
        if let Some(path) = &session.state_file {
            return path.clone();
        }
        if index == 0 {
            return self.state_file.clone();
        }
        let dir = self.state_file.parent().unwrap_or(Path::new("."));
        dir.join(&session.name).join("session_state.json")
    }

    /// A session's log-pattern settings with the seed's `crash_detection` applied
    /// (`enabled` and the extra `error_patterns`).
    pub fn log_patterns_of(&self, session: &SessionConfig) -> LogPatternConfig {
        let mut patterns = session.log_patterns.clone();
        patterns.enabled &= self.crash_detection.enabled;
        patterns
            .error_patterns
            .extend(self.crash_detection.error_patterns.iter().cloned());
        patterns
    }

    /// The control socket path.
    pub fn control_socket_path(&self) -> PathBuf {
        self.control_socket.clone().unwrap_or_else(|| {
            self.state_file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join("ms11-recovery.sock")
        })
    }
}
