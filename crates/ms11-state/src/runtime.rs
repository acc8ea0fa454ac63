//! Bookkeeping that must survive a runner restart: which children were running, where
//! each log follower stopped reading, and the recovery policy's counters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything the runner itself needs back after it was killed and started again.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RuntimeState {
    /// Children that were running at the last save; a runner that starts and finds
    /// some still alive kills their process groups (leftovers of a killed runner).
    #[serde(default)]
    pub children: Vec<ChildRecord>,
    /// Per followed log file (keyed by the configured path): where reading stopped.
    #[serde(default)]
    pub log_cursors: BTreeMap<String, LogCursor>,
    /// Retry, backoff and crash-loop counters of the recovery pipeline.
    #[serde(default)]
    pub recovery: RecoveryPolicyState,
    /// The bot's recovery counters (`restart-bot`), kept apart from the client's so a
    /// crashing bot does not trip the client's breaker.
    #[serde(default, skip_serializing_if = "RecoveryPolicyState::is_empty")]
    pub bot_recovery: RecoveryPolicyState,
    /// The bot's `seq` of the last `task_done` the runner acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ack_seq: Option<u64>,
    /// Number of saves this session has made (all runs).
    #[serde(default)]
    pub save_count: u64,
    /// Fields written by a newer version; kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A child process the runner started. A restarted runner signals it only when it is
/// provably the same process: same boot, same start time (pids are reused, and after a
/// reboot every recorded pid is stale). The fields after `program` are absent from
/// states written by older versions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChildRecord {
    /// `client` or `bot` (or a plugin host).
    pub role: String,
    /// Process id.
    pub pid: i32,
    /// Process group id (the child leads its own group).
    pub pgid: i32,
    /// Unix time in seconds (integral) when it was started.
    pub started_at: u64,
    /// argv[0], to recognise the process again (pids are reused).
    #[serde(default)]
    pub program: String,
    /// The process's start time in clock ticks after boot (`/proc/PID/stat` field 22),
    /// read at spawn: a process with this pid and another start time is not ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    /// The kernel's boot id at spawn (`/proc/sys/kernel/random/boot_id`): a record of
    /// another boot names no process of ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The value of the `MS11_SESSION_TOKEN` environment marker the child was started
    /// with; its descendants inherit it, even the ones that left its process group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Where a log follower stopped reading a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    /// Device id of the file that was read.
    pub dev: u64,
    /// Inode of the file that was read (a new inode means the log was rotated).
    pub inode: u64,
    /// Byte offset of the first unread byte (always at a line start).
    pub offset: u64,
}

/// The recovery pipeline's counters, persisted so that a runner restart does not reset
/// them into a retry storm. Times are unix seconds (monotonic clocks do not survive a
/// restart); the pipeline measures intervals on a monotonic clock while it runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RecoveryPolicyState {
    /// Per strategy name.
    #[serde(default)]
    pub strategies: BTreeMap<String, StrategyPolicyState>,
    /// The crash-loop breaker.
    #[serde(default)]
    pub breaker: BreakerState,
    /// The storm under way: failures since the last recovery, and whether a person was
    /// told about it (a person is told once per storm, not once per failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm: Option<StormState>,
    /// The scheduled retry of an incident that no strategy recovered: the session is
    /// never left down for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryState>,
    /// Fields written by a newer version; kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl RecoveryPolicyState {
    /// Nothing recorded yet.
    pub fn is_empty(&self) -> bool {
        *self == RecoveryPolicyState::default()
    }
}

/// One strategy's retry budget and backoff.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StrategyPolicyState {
    /// Failures since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Attempts ever made.
    #[serde(default)]
    pub total_attempts: u64,
    /// Successes ever made.
    #[serde(default)]
    pub total_successes: u64,
    /// Start times of recent attempts (the budget's sliding window).
    #[serde(default)]
    pub recent_attempts: Vec<f64>,
    /// The next attempt must not start before this unix time (backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<f64>,
    /// The last backoff delay chosen, in milliseconds.
    #[serde(default)]
    pub last_backoff_ms: u64,
}

/// A run of failures without a recovery in between.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StormState {
    /// When its first incident was detected (unix seconds).
    pub since: f64,
    /// Incidents in it so far.
    #[serde(default)]
    pub incidents: u32,
    /// A person was told about it.
    #[serde(default)]
    pub person_told: bool,
}

/// The next automatic retry of an unrecovered incident.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RetryState {
    /// The incident retried.
    pub incident: String,
    /// Retry rounds made so far (the delay doubles with each, up to the cap).
    #[serde(default)]
    pub rounds: u32,
    /// When the next round starts (unix seconds).
    pub next_at: f64,
}

/// The crash-loop breaker: too many incidents in a window go straight to a human.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BreakerState {
    /// Detection times of recent incidents.
    #[serde(default)]
    pub recent_incidents: Vec<f64>,
    /// When the breaker last tripped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tripped_at: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_record_of_an_older_version_loads_without_the_identity_fields() {
        let old =
            r#"{"role":"client","pid":42,"pgid":42,"started_at":1700000000,"program":"game"}"#;
        let record: ChildRecord = serde_json::from_str(old).unwrap_or_default();
        assert_eq!(record.pid, 42);
        assert_eq!(
            (record.start_ticks, record.boot_id, record.token),
            (None, None, None)
        );
    }
}
