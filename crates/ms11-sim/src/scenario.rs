//! A simulated session's files and the `ms11-recovery` configuration that runs
//! `sim-client` and `sim-bot` in them: shared by `cargo xtask run` and the end-to-end
//! tests.

use std::path::{Path, PathBuf};

/// Tunables of a simulated session.
#[derive(Debug, Clone)]
pub struct ScenarioOptions {
    /// Seed of client and bot.
    pub seed: u64,
    /// Show the client's X11 window (needs a display).
    pub window: bool,
    /// Tasks the bot adds in all.
    pub total_tasks: usize,
    /// Mean task duration.
    pub task_ms: u64,
    /// Bot stall timeout.
    pub stall_ms: u64,
    /// Crash-loop breaker: more than this many incidents ...
    pub breaker_max: usize,
    /// ... within this many seconds.
    pub breaker_window_secs: f64,
    /// How long `manual` waits for an acknowledgement.
    pub manual_timeout_secs: f64,
    /// Seconds between autosaves.
    pub save_interval: u64,
    /// Where the state lives (default: `<root>/state/session_state.json`).
    pub state_file: Option<PathBuf>,
    /// The recovery order.
    pub pipeline: Vec<String>,
    /// TOML appended to the configuration (e.g. a `[plugins]` table).
    pub extra_toml: String,
    /// More keys of the session's `[session.window]` table, which the configuration
    /// always writes (so `extra_toml` cannot add them), as TOML lines, e.g.
    /// `ping_timeout_ms = 2000`.
    pub window_toml: String,
    /// More arguments for `sim-client` (e.g. `--ignore-term`).
    pub client_args: Vec<String>,
    /// More arguments for `sim-bot` (e.g. `--protocol 2`).
    pub bot_args: Vec<String>,
    /// Runs this program as the client instead of `sim-client` (with the same
    /// arguments), e.g. a wrapper script that cannot be executed yet.
    pub client_program: Option<PathBuf>,
    /// The Windows test client under Wine instead of `sim-client`: the `.exe` and the
    /// session's Wine prefix (see [`crate::win32`]).
    pub wine_client: Option<(PathBuf, PathBuf)>,
    /// `session.ready.kind`: `log_line` (the simulated login line) unless a test
    /// waits for the client's window (`window`).
    pub ready_kind: &'static str,
}

impl Default for ScenarioOptions {
    fn default() -> Self {
        ScenarioOptions {
            seed: 35,
            window: false,
            total_tasks: 400,
            task_ms: 250,
            stall_ms: 2500,
            breaker_max: 4,
            breaker_window_secs: 8.0,
            manual_timeout_secs: 60.0,
            save_interval: 10,
            state_file: None,
            pipeline: ["restart", "relog", "manual", "restore"]
                .map(String::from)
                .to_vec(),
            extra_toml: String::new(),
            window_toml: String::new(),
            client_args: Vec::new(),
            bot_args: Vec::new(),
            client_program: None,
            wine_client: None,
            ready_kind: "log_line",
        }
    }
}

/// The files of one simulated session under `root`.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The session directory.
    pub root: PathBuf,
    /// Where `ms11-recovery`, `sim-client` and `sim-bot` are.
    pub bin_dir: PathBuf,
    /// The options.
    pub options: ScenarioOptions,
}

impl Scenario {
    /// Creates the directories and writes `ms11.toml`.
    pub fn create(
        root: &Path,
        bin_dir: &Path,
        options: ScenarioOptions,
    ) -> std::io::Result<Scenario> {
        let s = Scenario {
            root: root.to_path_buf(),
            bin_dir: bin_dir.to_path_buf(),
            options,
        };
        for dir in ["state", "client", "cc", "bc"] {
            std::fs::create_dir_all(s.root.join(dir))?;
        }
        std::fs::write(s.config(), s.config_toml())?;
        Ok(s)
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.root.join("ms11.toml")
    }

    /// The state file.
    pub fn state_file(&self) -> PathBuf {
        self.options
            .state_file
            .clone()
            .unwrap_or_else(|| self.root.join("state/session_state.json"))
    }

    /// The client's control directory.
    pub fn client_control(&self) -> PathBuf {
        self.root.join("cc")
    }

    /// The bot's control directory.
    pub fn bot_control(&self) -> PathBuf {
        self.root.join("bc")
    }

    /// The bot's effect ledger.
    pub fn ledger(&self) -> PathBuf {
        self.root.join("ledger.txt")
    }

    /// The `ms11-recovery` binary.
    pub fn runner_binary(&self) -> PathBuf {
        self.bin_dir.join("ms11-recovery")
    }

    /// The configuration text.
    pub fn config_toml(&self) -> String {
        let q = |p: PathBuf| format!("{:?}", p.display().to_string());
        let o = &self.options;
        format!(
            r#"# Simulated session (ms11-sim scenario).
save_interval = {save_interval}
state_file = {state}
auto_restart = true
auto_relog = true
continue_previous = "yes"

[[session]]
name = "main"
client_log = {log}
pipeline = {pipeline:?}

[session.client]
{client_command}
cwd = {dumps}
stop_grace_secs = 2
{client_wine}

[session.bot]
command = [{bot}, "--ledger", {ledger}, "--client-control-dir", {cc}, "--client-log", {log}, "--control-dir", {bc}, "--total-tasks", "{total}", "--task-ms", "{task_ms}", "--heartbeat-ms", "300", "--seed", "{seed}"{bot_args}]

[session.ready]
kind = "{ready_kind}"
pattern = "Login successful"
timeout_secs = 15

[session.stall]
timeout_ms = {stall}

[session.window]
enabled = {window_enabled}
{window_toml}

[session.recovery.breaker]
max_incidents = {breaker_max}
window_secs = {breaker_window}

[session.recovery.restart]
attempts = 2
backoff_base_ms = 200

[session.recovery.manual]
timeout_secs = {manual_timeout}

[session.recovery.notify]
desktop_notify = false

{extra}
"#,
            save_interval = o.save_interval,
            state = q(self.state_file()),
            log = q(self.root.join("client.log")),
            client_command = self.client_command(),
            client_wine = self.client_wine_table(),
            ready_kind = o.ready_kind,
            bot_args = extra_args(&o.bot_args),
            bot = q(self.bin_dir.join("sim-bot")),
            cc = q(self.client_control()),
            bc = q(self.bot_control()),
            dumps = q(self.root.join("client")),
            ledger = q(self.ledger()),
            window_enabled = o.window,
            window_toml = o.window_toml,
            seed = o.seed,
            total = o.total_tasks,
            task_ms = o.task_ms,
            stall = o.stall_ms,
            breaker_max = o.breaker_max,
            breaker_window = o.breaker_window_secs,
            manual_timeout = o.manual_timeout_secs,
            pipeline = o.pipeline,
            extra = o.extra_toml,
        )
    }
}

impl Scenario {
    /// The client's `[session.client.wine]` table, when it runs under Wine.
    fn client_wine_table(&self) -> String {
        match &self.options.wine_client {
            Some((_, prefix)) => format!(
                "\n[session.client.wine]\nprefix = {:?}\n",
                prefix.display().to_string()
            ),
            None => String::new(),
        }
    }

    /// The `command = [...]` line of the client.
    fn client_command(&self) -> String {
        let q = |p: PathBuf| format!("{:?}", p.display().to_string());
        let o = &self.options;
        let log = self.root.join("client.log");
        if let Some((exe, _)) = &o.wine_client {
            return format!(
                "command = [{exe}, \"--log\", {log:?}, \"--control-dir\", {cc:?}, \"--startup-ms\", \"300\"{args}]",
                exe = q(exe.clone()),
                log = crate::win32::wine_path(&log),
                cc = crate::win32::wine_path(&self.client_control()),
                args = extra_args(&o.client_args),
            );
        }
        format!(
            "command = [{client}, \"--log\", {log}, \"--control-dir\", {cc}, \"--dump-dir\", {dumps}, \"--window\", \"{window}\", \"--seed\", \"{seed}\", \"--startup-ms\", \"300\"{args}]",
            client = q(o
                .client_program
                .clone()
                .unwrap_or_else(|| self.bin_dir.join("sim-client"))),
            log = q(log),
            cc = q(self.client_control()),
            dumps = q(self.root.join("client")),
            window = if o.window { "on" } else { "off" },
            seed = o.seed,
            args = extra_args(&o.client_args),
        )
    }
}

/// `, "a", "b"` for appending arguments to a TOML array.
fn extra_args(args: &[String]) -> String {
    args.iter().map(|a| format!(", {a:?}")).collect()
}
