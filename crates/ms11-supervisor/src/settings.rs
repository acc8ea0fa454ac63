//! Typed settings of one session. The runner builds them from its configuration; this
//! crate never reads a file or the command line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ms11_detect::{CrashDumpConfig, LogPatternConfig, StallConfig, WindowProbeConfig};
use ms11_process::ProcessSpec;
use ms11_recover::{RecoverySettings, Strategy};
use ms11_state::StateLimits;

/// Makes a fresh instance of a strategy that is not built in (a plugin's), for each
/// recovery job.
pub type StrategyFactory = Arc<dyn Fn() -> Box<dyn Strategy> + Send + Sync>;

/// Everything one session loop needs to know.
#[derive(Clone)]
pub struct SessionSettings {
    /// The session's name (the character).
    pub name: String,
    /// The game client, if the runner starts one.
    pub client: Option<ChildSettings>,
    /// The bot, if the runner starts one (it speaks the agent protocol on stdio).
    pub bot: Option<ChildSettings>,
    /// The client's log file, followed for patterns and used for readiness.
    pub client_log: Option<PathBuf>,
    /// When a (re)started client counts as ready.
    pub ready: ReadySettings,
    /// Log patterns for the log follower.
    pub log_patterns: LogPatternConfig,
    /// The window probe.
    pub window: WindowProbeConfig,
    /// The crash-dump watcher.
    pub crash_dump: CrashDumpConfig,
    /// The bot's heartbeat timeout.
    pub stall: StallConfig,
    /// Signals about the same subject within this window are one incident.
    pub fuse_window: Duration,
    /// Strategy names for incidents about the client, in order.
    pub client_pipeline: Vec<String>,
    /// Strategy names for incidents about the bot, in order.
    pub bot_pipeline: Vec<String>,
    /// Policies of the strategies, the breaker, the retry schedule, notifications.
    pub recovery: RecoverySettings,
    /// Strategies that are not built in, by name.
    pub extra_strategies: Vec<(String, StrategyFactory)>,
    /// Run recovery at all (otherwise incidents are only recorded).
    pub recovery_enabled: bool,
    /// `restart` and `restore` may run.
    pub auto_restart: bool,
    /// `relog` may run.
    pub auto_relog: bool,
    /// Periodic save.
    pub save_interval: Duration,
    /// Screenshots of the client at each incident and on demand (`None`: none taken,
    /// e.g. without a display).
    pub screenshots: Option<ScreenshotSettings>,
    /// How large one bot `state` patch and the whole state may grow; what would exceed
    /// them is refused (logged, and `rejected` to the bot).
    pub state_limits: StateLimits,
    /// Which fields of the bot's state patches are applied (the seed's
    /// `session_tracking`).
    pub tracking: Tracking,
}

impl std::fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSettings")
            .field("name", &self.name)
            .field("client", &self.client)
            .field("bot", &self.bot)
            .field("client_pipeline", &self.client_pipeline)
            .field("bot_pipeline", &self.bot_pipeline)
            .finish_non_exhaustive()
    }
}

/// Which fields of the bot's `state` patches are applied; the others are dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracking {
    /// Drop every patch.
    pub off: bool,
    /// Drop these fields of a patch.
    pub untracked: std::collections::BTreeSet<String>,
}

impl Tracking {
    /// Whether a patch may set `field`.
    pub fn tracks(&self, field: &str) -> bool {
        !self.off && !self.untracked.contains(field)
    }

    /// Whether every field of every patch is applied.
    pub fn tracks_everything(&self) -> bool {
        !self.off && self.untracked.is_empty()
    }
}

impl SessionSettings {
    /// The names of the settings that differ between `self` and `new` and cannot
    /// change while the session runs (its children, log and detectors are set up at
    /// start): `client`, `bot`, `client_log`, `log_patterns`, `window`, `crash_dump`,
    /// `fuse`, `plugins`, `name`.
    pub fn restart_only_changes(&self, new: &SessionSettings) -> Vec<String> {
        let names = |s: &SessionSettings| -> Vec<String> {
            s.extra_strategies.iter().map(|(n, _)| n.clone()).collect()
        };
        [
            ("name", self.name != new.name),
            ("client", self.client != new.client),
            ("bot", self.bot != new.bot),
            ("client_log", self.client_log != new.client_log),
            ("log_patterns", self.log_patterns != new.log_patterns),
            ("window", self.window != new.window),
            ("crash_dump", self.crash_dump != new.crash_dump),
            ("fuse", self.fuse_window != new.fuse_window),
            ("plugins", names(self) != names(new)),
        ]
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name.to_owned())
        .collect()
    }

    /// Settings for a session named `name` with nothing to run and the defaults of
    /// every detector and strategy.
    pub fn new(name: &str) -> Self {
        SessionSettings {
            name: name.to_owned(),
            client: None,
            bot: None,
            client_log: None,
            ready: ReadySettings::default(),
            log_patterns: LogPatternConfig::default(),
            window: WindowProbeConfig::default(),
            crash_dump: CrashDumpConfig::default(),
            stall: StallConfig::default(),
            fuse_window: Duration::from_millis(250),
            client_pipeline: ["restart", "relog", "manual", "restore"]
                .map(String::from)
                .to_vec(),
            bot_pipeline: ["restart-bot", "manual"].map(String::from).to_vec(),
            recovery: RecoverySettings::default(),
            extra_strategies: Vec::new(),
            recovery_enabled: true,
            auto_restart: true,
            auto_relog: true,
            save_interval: Duration::from_secs(300),
            state_limits: StateLimits::default(),
            screenshots: None,
            tracking: Tracking::default(),
        }
    }
}

/// Where and how screenshots are taken.
#[derive(Debug, Clone)]
pub struct ScreenshotSettings {
    /// The folder (kept to `keep` files).
    pub dir: PathBuf,
    /// How many screenshots are kept.
    pub keep: usize,
    /// The X display (`None`: `$DISPLAY`).
    pub display: Option<String>,
    /// Regexes of the client's main window title.
    pub titles: Vec<regex::Regex>,
}

/// A child the session runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildSettings {
    /// How to start it.
    pub spec: ProcessSpec,
    /// The signal of a staged stop.
    pub stop_signal: i32,
    /// How long a staged stop waits before killing the process group.
    pub stop_grace: Duration,
    /// The program runs under Wine: stopping it also ends everything in its prefix.
    pub wine: Option<WineSettings>,
}

/// A program under Wine.
#[derive(Debug, Clone, PartialEq)]
pub struct WineSettings {
    /// `WINEPREFIX`.
    pub prefix: std::path::PathBuf,
    /// The `wineserver` program (run as `wineserver -k` to end the prefix).
    pub server: String,
}

/// When a started client counts as ready.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadySettings {
    /// What to wait for.
    pub kind: ReadyKind,
    /// For [`ReadyKind::LogLine`]: the regex a new log line must match.
    pub pattern: String,
    /// For [`ReadyKind::Window`]: regexes of the client's main window title
    /// (case-insensitive).
    pub window_titles: Vec<String>,
    /// For [`ReadyKind::Window`]: the X display (`None`: `$DISPLAY`).
    pub display: Option<String>,
    /// For [`ReadyKind::Delay`]: the time after the start.
    pub delay: Duration,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Default for ReadySettings {
    fn default() -> Self {
        ReadySettings {
            kind: ReadyKind::LogLine,
            pattern: "Login successful".into(),
            window_titles: Vec::new(),
            display: None,
            delay: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
        }
    }
}

/// What readiness waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyKind {
    /// A new line in the client log matching the pattern.
    LogLine,
    /// A mapped top-level window whose title matches one of `window_titles`.
    Window,
    /// A fixed delay after the start.
    Delay,
}
