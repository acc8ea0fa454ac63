//! Incidents: what went wrong with a session, how it was seen, and what was done about it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The seed's crash record, kept field for field (`error_type`, `error_message`,
/// `timestamp`, `recovery_attempted`, `recovery_successful`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashInfo {
    /// Short machine name of the error, e.g. `connection_lost` or `game_crashed`.
    pub error_type: String,
    /// Human-readable description (often the matched log line).
    pub error_message: String,
    /// Unix time in seconds when it was detected.
    pub timestamp: f64,
    /// Whether any recovery strategy ran.
    pub recovery_attempted: bool,
    /// Whether a recovery strategy brought the session back.
    pub recovery_successful: bool,
}

/// What happened to the session (not how it was seen: that is [`DetectorSource`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// The supervised process exited (code or signal in [`ExitInfo`]).
    ProcessExit,
    /// The client reported or showed a crash.
    Crash,
    /// The connection to the game server was lost.
    Disconnect,
    /// The login session key is invalid or expired: a relog fixes it.
    SessionExpired,
    /// The server is down or in maintenance.
    ServerDown,
    /// Login was refused (wrong password, account disabled). Terminal.
    LoginFailed,
    /// The account or character is banned. Terminal.
    Banned,
    /// The client version does not match the server's. Terminal.
    VersionMismatch,
    /// An error dialog ("Fatal Report", Wine's "Program Error") is on screen.
    ErrorDialog,
    /// The client's main window disappeared.
    WindowGone,
    /// The client window is marked "(Not Responding)".
    NotResponding,
    /// The bot stopped sending heartbeats or progress.
    Stall,
    /// A crash dump (`*.mdmp`, crash report `.txt`) appeared.
    CrashDump,
    /// The client ran out of memory.
    MemoryError,
    /// The graphics subsystem failed.
    GraphicsError,
    /// A second client instance was refused.
    DuplicateInstance,
    /// An operator asked for recovery (`restart`, `relog` commands).
    Operator,
    /// The newest saved state was damaged; an older generation was loaded.
    StateDamaged,
    /// A process could not be started at all (missing program, no permission).
    StartFailed,
    /// The bot speaks a protocol version the runner does not. Terminal for the bot.
    ProtocolMismatch,
    /// The runner's own session loop panicked; the session was reopened from disk.
    InternalError,
    /// Anything else, including kinds written by a newer version.
    #[serde(other)]
    Other,
}

impl IncidentKind {
    /// Every kind, in declaration order (for help texts and config validation).
    pub const ALL: [IncidentKind; 22] = [
        Self::ProcessExit,
        Self::Crash,
        Self::Disconnect,
        Self::SessionExpired,
        Self::ServerDown,
        Self::LoginFailed,
        Self::Banned,
        Self::VersionMismatch,
        Self::ErrorDialog,
        Self::WindowGone,
        Self::NotResponding,
        Self::Stall,
        Self::CrashDump,
        Self::MemoryError,
        Self::GraphicsError,
        Self::DuplicateInstance,
        Self::Operator,
        Self::StateDamaged,
        Self::StartFailed,
        Self::ProtocolMismatch,
        Self::InternalError,
        Self::Other,
    ];

    /// The snake_case name used in JSON and config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProcessExit => "process_exit",
            Self::Crash => "crash",
            Self::Disconnect => "disconnect",
            Self::SessionExpired => "session_expired",
            Self::ServerDown => "server_down",
            Self::LoginFailed => "login_failed",
            Self::Banned => "banned",
            Self::VersionMismatch => "version_mismatch",
            Self::ErrorDialog => "error_dialog",
            Self::WindowGone => "window_gone",
            Self::NotResponding => "not_responding",
            Self::Stall => "stall",
            Self::CrashDump => "crash_dump",
            Self::MemoryError => "memory_error",
            Self::GraphicsError => "graphics_error",
            Self::DuplicateInstance => "duplicate_instance",
            Self::Operator => "operator",
            Self::StateDamaged => "state_damaged",
            Self::StartFailed => "start_failed",
            Self::ProtocolMismatch => "protocol_mismatch",
            Self::InternalError => "internal_error",
            Self::Other => "other",
        }
    }

    /// Kinds that no automatic retry can fix: recovery stops and a human is told.
    pub fn is_terminal_by_default(self) -> bool {
        matches!(
            self,
            Self::Banned | Self::LoginFailed | Self::VersionMismatch | Self::ProtocolMismatch
        )
    }

    /// What an incident of this kind is about when nothing else says so (incidents
    /// saved before subjects existed load with this).
    pub fn default_subject(self) -> IncidentSubject {
        match self {
            Self::Stall | Self::ProtocolMismatch => IncidentSubject::Bot,
            Self::StateDamaged | Self::InternalError => IncidentSubject::State,
            Self::Operator => IncidentSubject::Operator,
            _ => IncidentSubject::Client,
        }
    }
}

/// What an incident is about: the part of the session that failed. Fusion merges only
/// signals about the same subject, and each subject has its own recovery pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentSubject {
    /// The game client process, its window, its log, its connection.
    Client,
    /// The bot process and its protocol link.
    Bot,
    /// The saved state or the runner's own loop.
    State,
    /// The network or the game server, seen from outside the client.
    Network,
    /// An operator's command.
    Operator,
}

impl IncidentSubject {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Bot => "bot",
            Self::State => "state",
            Self::Network => "network",
            Self::Operator => "operator",
        }
    }
}

impl fmt::Display for IncidentSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for IncidentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IncidentKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown incident kind `{s}` (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// Which detector saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorSource {
    /// The supervisor's wait on a child process.
    ProcessExit,
    /// A line in the client log matched a pattern.
    LogPattern,
    /// The window-title probe.
    Window,
    /// No heartbeat or progress from the bot.
    Stall,
    /// A crash dump file appeared.
    CrashDump,
    /// The bot agent reported it.
    Agent,
    /// An operator command.
    Operator,
    /// A source written by a newer version.
    #[serde(other)]
    Other,
}

impl DetectorSource {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProcessExit => "process_exit",
            Self::LogPattern => "log_pattern",
            Self::Window => "window",
            Self::Stall => "stall",
            Self::CrashDump => "crash_dump",
            Self::Agent => "agent",
            Self::Operator => "operator",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for DetectorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad it is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a line in the log.
    Info,
    /// Degraded, may need recovery.
    Warning,
    /// The session is broken.
    #[default]
    Error,
    /// The session is broken and automatic recovery must not retry.
    Critical,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExitInfo {
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// Whether the process dumped core.
    #[serde(default)]
    pub core_dumped: bool,
}

impl From<std::process::ExitStatus> for ExitInfo {
    /// How a finished process ended (code, or signal and core dump on Unix).
    fn from(status: std::process::ExitStatus) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            ExitInfo {
                code: status.code(),
                signal: status.signal(),
                core_dumped: status.core_dumped(),
            }
        }
        #[cfg(not(unix))]
        {
            ExitInfo {
                code: status.code(),
                signal: None,
                core_dumped: false,
            }
        }
    }
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(sig)) if self.core_dumped => write!(f, "signal {sig} (core dumped)"),
            (None, Some(sig)) => write!(f, "signal {sig}"),
            (None, None) => f.write_str("unknown exit status"),
        }
    }
}

/// One signal that contributed to a (possibly fused) incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Which detector.
    pub source: DetectorSource,
    /// What it thought happened.
    pub kind: IncidentKind,
    /// Unix time in seconds.
    pub at: f64,
    /// The matched line, window title, file name or exit status.
    pub detail: String,
}

/// How one recovery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The session is back.
    Recovered,
    /// This attempt failed; the pipeline may retry or move on.
    Failed,
    /// The failure cannot be fixed automatically.
    Terminal,
    /// The strategy does not apply to this incident.
    Skipped,
    /// The attempt ran past its deadline.
    TimedOut,
    /// The attempt was cancelled (shutdown, newer incident).
    Cancelled,
    /// An outcome written by a newer version.
    #[serde(other)]
    Other,
}

impl AttemptOutcome {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recovered => "recovered",
            Self::Failed => "failed",
            Self::Terminal => "terminal",
            Self::Skipped => "skipped",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recovery attempt by one strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Strategy name (`restart`, `relog`, a plugin's name, ...).
    pub strategy: String,
    /// Unix time in seconds when it started.
    pub started_at: f64,
    /// How long it ran.
    pub duration_ms: u64,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// Why (for anything but success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Final state of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionStatus {
    /// A strategy brought the session back.
    Recovered,
    /// Handed to a human (manual strategy, crash-loop breaker).
    Escalated,
    /// Cannot be recovered automatically (banned, wrong password).
    Terminal,
    /// Every strategy failed.
    GaveUp,
    /// A status written by a newer version.
    #[serde(other)]
    Other,
}

impl ResolutionStatus {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recovered => "recovered",
            Self::Escalated => "escalated",
            Self::Terminal => "terminal",
            Self::GaveUp => "gave_up",
            Self::Other => "other",
        }
    }
}

/// How an incident ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    /// The final status.
    pub status: ResolutionStatus,
    /// The strategy that recovered it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Unix time in seconds.
    pub at: f64,
    /// Detection to session back, when recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_recover_ms: Option<u64>,
    /// Free-form explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A detected problem with a session and everything done about it.
///
/// Serialises to a superset of [`CrashInfo`]: the seed's five fields sit at the top level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// The seed's five fields.
    #[serde(flatten)]
    pub crash: CrashInfo,
    /// Unique within the session (`<session>-<n>` by convention).
    pub id: String,
    /// Which session (character) it belongs to.
    #[serde(default)]
    pub session: String,
    /// What happened.
    pub kind: IncidentKind,
    /// What it is about. Files written before subjects existed omit it; it is then
    /// derived from the kind ([`IncidentKind::default_subject`]) when loading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<IncidentSubject>,
    /// Who saw it first.
    pub source: DetectorSource,
    /// How bad it is.
    #[serde(default)]
    pub severity: Severity,
    /// Automatic recovery must not retry it.
    #[serde(default)]
    pub terminal: bool,
    /// Name of the matching log pattern or window rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The matched log line or window title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_text: Option<String>,
    /// How the process ended, for process exits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    /// Every signal fused into this incident, first one first.
    #[serde(default)]
    pub evidence: Vec<Evidence>,
    /// Every recovery attempt, in order.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// How it ended; `None` while recovery is under way.
    #[serde(default)]
    pub resolution: Option<Resolution>,
    /// Last lines of the children's output when it was detected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_tail: Vec<String>,
    /// The client's window (or the screen) when it was detected: a PNG file in the
    /// state directory's `screenshots/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screenshot: Option<String>,
}

impl Incident {
    /// A new, unresolved incident with one piece of evidence.
    pub fn new(
        id: impl Into<String>,
        kind: IncidentKind,
        source: DetectorSource,
        message: impl Into<String>,
        at: f64,
    ) -> Self {
        let message = message.into();
        Incident {
            crash: CrashInfo {
                error_type: kind.as_str().to_owned(),
                error_message: message.clone(),
                timestamp: at,
                recovery_attempted: false,
                recovery_successful: false,
            },
            id: id.into(),
            session: String::new(),
            kind,
            subject: Some(kind.default_subject()),
            source,
            severity: if kind.is_terminal_by_default() {
                Severity::Critical
            } else {
                Severity::Error
            },
            terminal: kind.is_terminal_by_default(),
            pattern: None,
            matched_text: None,
            exit: None,
            evidence: vec![Evidence {
                source,
                kind,
                at,
                detail: message,
            }],
            attempts: Vec::new(),
            resolution: None,
            output_tail: Vec::new(),
            screenshot: None,
        }
    }

    /// What it is about (its recorded subject, else the one its kind implies).
    pub fn subject(&self) -> IncidentSubject {
        self.subject.unwrap_or_else(|| self.kind.default_subject())
    }

    /// Sets what it is about.
    pub fn with_subject(mut self, subject: IncidentSubject) -> Self {
        self.subject = Some(subject);
        self
    }

    /// Detection time (unix seconds).
    pub fn detected_at(&self) -> f64 {
        self.crash.timestamp
    }

    /// Records an attempt and keeps the seed's `recovery_attempted` flag true.
    pub fn record_attempt(&mut self, attempt: Attempt) {
        if attempt.outcome != AttemptOutcome::Skipped {
            self.crash.recovery_attempted = true;
        }
        self.attempts.push(attempt);
    }

    /// Closes the incident; sets the seed's `recovery_successful` flag.
    pub fn resolve(&mut self, resolution: Resolution) {
        self.crash.recovery_successful = resolution.status == ResolutionStatus::Recovered;
        self.resolution = Some(resolution);
    }

    /// Adds the evidence of another signal seen for the same failure.
    ///
    /// A more specific kind replaces a generic one (a `process_exit` fused with a
    /// `crash_dump` becomes a crash), and a terminal signal makes the incident terminal.
    pub fn fuse(&mut self, other: Incident) {
        if other.terminal {
            self.terminal = true;
            self.severity = self.severity.max(other.severity);
        }
        if specificity(other.kind) > specificity(self.kind) {
            self.kind = other.kind;
            self.crash.error_type = other.kind.as_str().to_owned();
            self.crash.error_message = other.crash.error_message.clone();
            if other.pattern.is_some() {
                self.pattern = other.pattern.clone();
            }
            if other.matched_text.is_some() {
                self.matched_text = other.matched_text.clone();
            }
        }
        if self.exit.is_none() {
            self.exit = other.exit;
        }
        self.evidence.extend(other.evidence);
        if self.output_tail.is_empty() {
            self.output_tail = other.output_tail;
        }
    }

    /// The seed's view of this incident.
    pub fn crash_info(&self) -> &CrashInfo {
        &self.crash
    }

    /// Replaces secrets (passwords, tokens, webhook URLs' tokens) in every text the
    /// incident holds: its message, the matched text, evidence, attempts' reasons (a
    /// relog command's error), the resolution's note and the output tail. Done before
    /// an incident is stored, so no state file holds a secret.
    pub fn redact_secrets(&mut self) {
        fn clean(text: &mut String) {
            if let std::borrow::Cow::Owned(redacted) = ms11_redact::redact(text) {
                *text = redacted;
            }
        }
        clean(&mut self.crash.error_message);
        if let Some(text) = &mut self.matched_text {
            clean(text);
        }
        for evidence in &mut self.evidence {
            clean(&mut evidence.detail);
        }
        for attempt in &mut self.attempts {
            if let Some(reason) = &mut attempt.reason {
                clean(reason);
            }
        }
        if let Some(note) = self.resolution.as_mut().and_then(|r| r.note.as_mut()) {
            clean(note);
        }
        self.output_tail.iter_mut().for_each(clean);
    }
}

/// How much a kind says about the cause: terminal kinds say the most, a bare process
/// exit or a vanished window the least.
fn specificity(kind: IncidentKind) -> u8 {
    match kind {
        IncidentKind::Banned | IncidentKind::LoginFailed | IncidentKind::VersionMismatch => 9,
        IncidentKind::SessionExpired | IncidentKind::ServerDown => 8,
        IncidentKind::Disconnect
        | IncidentKind::MemoryError
        | IncidentKind::GraphicsError
        | IncidentKind::DuplicateInstance
        | IncidentKind::CrashDump => 7,
        IncidentKind::Crash => 6,
        IncidentKind::ErrorDialog => 5,
        IncidentKind::NotResponding | IncidentKind::Stall => 4,
        IncidentKind::ProcessExit => 3,
        IncidentKind::WindowGone => 2,
        IncidentKind::ProtocolMismatch => 9,
        IncidentKind::StartFailed => 5,
        IncidentKind::Operator | IncidentKind::StateDamaged | IncidentKind::InternalError => 1,
        IncidentKind::Other => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip_through_from_str() {
        for kind in IncidentKind::ALL {
            assert_eq!(kind.as_str().parse::<IncidentKind>(), Ok(kind));
        }
        let err = "bogus".parse::<IncidentKind>().unwrap_err();
        assert!(
            err.contains("bogus") && err.contains("process_exit"),
            "{err}"
        );
    }

    #[test]
    fn unknown_kind_from_a_newer_version_loads_as_other() {
        let kind: IncidentKind = serde_json::from_str("\"quantum_flux\"").unwrap();
        assert_eq!(kind, IncidentKind::Other);
    }

    #[test]
    fn fusing_a_dump_into_an_exit_keeps_the_exit_and_becomes_a_crash_dump() {
        let mut exit = Incident::new(
            "s-1",
            IncidentKind::ProcessExit,
            DetectorSource::ProcessExit,
            "signal 11",
            10.0,
        );
        exit.exit = Some(ExitInfo {
            code: None,
            signal: Some(11),
            core_dumped: false,
        });
        let dump = Incident::new(
            "s-2",
            IncidentKind::CrashDump,
            DetectorSource::CrashDump,
            "SwgClient-1.mdmp",
            10.1,
        );
        exit.fuse(dump);
        assert_eq!(exit.kind, IncidentKind::CrashDump);
        assert_eq!(exit.exit.as_ref().and_then(|e| e.signal), Some(11));
        assert_eq!(exit.evidence.len(), 2);
        assert_eq!(exit.crash.error_type, "crash_dump");
    }

    #[test]
    fn fusing_a_terminal_signal_makes_the_incident_terminal() {
        let mut exit = Incident::new(
            "s-1",
            IncidentKind::ProcessExit,
            DetectorSource::ProcessExit,
            "exit code 1",
            1.0,
        );
        assert!(!exit.terminal);
        exit.fuse(Incident::new(
            "s-2",
            IncidentKind::Banned,
            DetectorSource::LogPattern,
            "Account Banned",
            1.0,
        ));
        assert!(exit.terminal);
        assert_eq!(exit.severity, Severity::Critical);
        assert_eq!(exit.kind, IncidentKind::Banned);
    }

    #[test]
    fn attempts_and_resolution_keep_the_seed_flags_in_step() {
        let mut inc = Incident::new(
            "s-1",
            IncidentKind::Disconnect,
            DetectorSource::LogPattern,
            "lost",
            1.0,
        );
        inc.record_attempt(Attempt {
            strategy: "restart".into(),
            started_at: 1.0,
            duration_ms: 0,
            outcome: AttemptOutcome::Skipped,
            reason: Some("n/a".into()),
        });
        assert!(
            !inc.crash.recovery_attempted,
            "a skipped strategy is not an attempt"
        );
        inc.record_attempt(Attempt {
            strategy: "relog".into(),
            started_at: 1.5,
            duration_ms: 900,
            outcome: AttemptOutcome::Recovered,
            reason: None,
        });
        assert!(inc.crash.recovery_attempted);
        inc.resolve(Resolution {
            status: ResolutionStatus::Recovered,
            strategy: Some("relog".into()),
            at: 2.4,
            time_to_recover_ms: Some(1400),
            note: None,
        });
        assert!(inc.crash.recovery_successful);
    }

    #[test]
    fn incidents_are_stored_without_secrets() {
        let mut inc = Incident::new(
            "s-1",
            IncidentKind::LoginFailed,
            DetectorSource::LogPattern,
            "login failed: password=hunter2",
            1.0,
        );
        inc.matched_text = Some("connect ssh://user:hunter2@login.example".into());
        inc.output_tail = vec!["using token: SECRETTOKEN".into()];
        inc.record_attempt(Attempt {
            strategy: "relog".into(),
            started_at: 1.0,
            duration_ms: 10,
            outcome: AttemptOutcome::Failed,
            reason: Some(
                "relog command `login.sh --user bob --pass=hunter2` failed: POST https://discord.com/api/webhooks/1/SECRETTOKEN 401"
                    .into(),
            ),
        });
        inc.resolve(Resolution {
            status: ResolutionStatus::Escalated,
            strategy: None,
            at: 2.0,
            time_to_recover_ms: None,
            note: Some("told https://ntfy.sh/alerts?auth=SECRETTOKEN".into()),
        });
        let mut state = crate::SessionState::new("s", "p", "z", 1.0);
        state.record_incident(inc.clone());
        state.update_incident(inc);
        let json = serde_json::to_string(&state).unwrap();
        assert!(
            !json.contains("hunter2") && !json.contains("SECRETTOKEN"),
            "{json}"
        );
        assert!(json.contains("--pass=[redacted]"), "{json}");
    }
}
