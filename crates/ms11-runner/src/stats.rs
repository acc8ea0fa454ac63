//! `stats`: the seed's statistics keys, then ours, as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ms11_state::{AttemptOutcome, ResolutionStatus, SessionState, TaskState};
use serde::Serialize;

/// Statistics of one session. The first eight fields are the seed's keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionStats {
    /// Seconds the session has run, all runs added up.
    pub session_duration: f64,
    /// Incidents ever detected.
    pub crash_count: u64,
    /// Time of the last save, `YYYY-MM-DD HH:MM:SS` UTC (the seed's format).
    pub last_save: String,
    /// Whether recovery is enabled.
    pub recovery_enabled: bool,
    /// Whether the client may be restarted automatically.
    pub auto_restart: bool,
    /// Whether the character may be logged in again automatically.
    pub auto_relog: bool,
    /// Seconds between auto-saves.
    pub save_interval: u64,
    /// The state file.
    pub state_file: String,
    /// Session name.
    pub session: String,
    /// Stable session id.
    pub session_id: String,
    /// Save generation of the state shown.
    pub generation: u64,
    /// Where the character is.
    pub location: String,
    /// Tasks done.
    pub tasks_done: usize,
    /// Tasks in flight.
    pub tasks_in_flight: usize,
    /// Tasks pending.
    pub tasks_pending: usize,
    /// Incidents in the history, by kind.
    pub incidents_by_kind: BTreeMap<String, u64>,
    /// Strategy attempts by strategy and outcome.
    pub attempts: BTreeMap<String, BTreeMap<String, u64>>,
    /// Share of resolved incidents that were recovered automatically (0..1), if any.
    pub recovery_success_rate: Option<f64>,
    /// Mean detection-to-recovered time of recovered incidents.
    pub mean_time_to_recover_ms: Option<u64>,
}

impl SessionStats {
    /// Computes the statistics of a state.
    pub fn from_state(
        session: &str,
        state: &SessionState,
        save_interval: u64,
        state_file: &str,
    ) -> Self {
        let mut incidents_by_kind = BTreeMap::new();
        let mut attempts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let (mut resolved, mut recovered, mut ttr_sum, mut ttr_n) = (0u64, 0u64, 0u64, 0u64);
        for incident in &state.crash_history {
            *incidents_by_kind
                .entry(incident.kind.as_str().to_owned())
                .or_insert(0) += 1;
            for attempt in &incident.attempts {
                if attempt.outcome == AttemptOutcome::Skipped {
                    continue;
                }
                *attempts
                    .entry(attempt.strategy.clone())
                    .or_default()
                    .entry(attempt.outcome.as_str().to_owned())
                    .or_insert(0) += 1;
            }
            if let Some(resolution) = &incident.resolution {
                resolved += 1;
                if resolution.status == ResolutionStatus::Recovered {
                    recovered += 1;
                    if let Some(ms) = resolution.time_to_recover_ms {
                        ttr_sum += ms;
                        ttr_n += 1;
                    }
                }
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let recovery_success_rate = (resolved > 0).then(|| recovered as f64 / resolved as f64);
        SessionStats {
            session_duration: state.session_duration,
            crash_count: state.crash_count,
            last_save: format_unix_utc(state.last_save_time),
            recovery_enabled: state.recovery_enabled,
            auto_restart: state.auto_restart,
            auto_relog: state.auto_relog,
            save_interval,
            state_file: state_file.to_owned(),
            session: session.to_owned(),
            session_id: state.session_id.clone(),
            generation: state.generation,
            location: format!("{} / {}", state.planet, state.zone),
            tasks_done: state.count_tasks(TaskState::Done),
            tasks_in_flight: state.count_tasks(TaskState::InFlight),
            tasks_pending: state.count_tasks(TaskState::Pending),
            incidents_by_kind,
            attempts,
            recovery_success_rate,
            mean_time_to_recover_ms: (ttr_n > 0).then(|| ttr_sum / ttr_n),
        }
    }

    /// Aligned `key: value` lines.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: String| {
            let _ = writeln!(out, "{k:<24} {v}");
        };
        line("session:", self.session.clone());
        line("session_duration:", format_duration(self.session_duration));
        line("crash_count:", self.crash_count.to_string());
        line("last_save:", self.last_save.clone());
        line("recovery_enabled:", self.recovery_enabled.to_string());
        line("auto_restart:", self.auto_restart.to_string());
        line("auto_relog:", self.auto_relog.to_string());
        line("save_interval:", format!("{} s", self.save_interval));
        line("state_file:", self.state_file.clone());
        line("generation:", self.generation.to_string());
        line("location:", self.location.clone());
        line(
            "tasks:",
            format!(
                "{} done, {} in flight, {} pending",
                self.tasks_done, self.tasks_in_flight, self.tasks_pending
            ),
        );
        let kinds = if self.incidents_by_kind.is_empty() {
            "none".to_owned()
        } else {
            self.incidents_by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        line("incidents:", kinds);
        for (strategy, outcomes) in &self.attempts {
            let text = outcomes
                .iter()
                .map(|(o, n)| format!("{o} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            line(&format!("  {strategy}:"), text);
        }
        line(
            "recovery_success_rate:",
            self.recovery_success_rate
                .map_or_else(|| "-".into(), |r| format!("{:.0} %", r * 100.0)),
        );
        line(
            "mean_time_to_recover:",
            self.mean_time_to_recover_ms
                .map_or_else(|| "-".into(), |ms| format!("{ms} ms")),
        );
        out
    }
}

/// `3h 04m 05s`.
pub fn format_duration(seconds: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let total = seconds.max(0.0) as u64;
    let (h, m, s) = (total / 3600, total % 3600 / 60, total % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` in UTC; `never` for 0.
pub fn format_unix_utc(unix: f64) -> String {
    if unix <= 0.0 || !unix.is_finite() {
        return "never".into();
    }
    #[allow(clippy::cast_possible_truncation)]
    let secs = unix.floor() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (if m <= 2 { y + 1 } else { y }, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_like_the_seed() {
        assert_eq!(format_unix_utc(1_705_329_000.0), "2024-01-15 14:30:00");
        assert_eq!(format_unix_utc(0.0), "never");
        assert_eq!(format_unix_utc(951_782_400.0), "2000-02-29 00:00:00");
        assert_eq!(format_duration(1800.0), "30m 00s");
        assert_eq!(format_duration(11_045.0), "3h 04m 05s");
    }
}
