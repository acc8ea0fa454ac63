//! Rate limiting of the bot's non-protocol output: at most `max_lines_per_window` lines
//! are shown per window, the rest is counted and summarised. Memory use is constant
//! whatever the bot prints. The policy ([`OutputLimiter`]) is pure and takes the time as
//! an argument; [`emit`] turns its notes into `tracing` events.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Longest piece of one output line that is shown in the log (bytes, cut at a character
/// boundary).
pub const MAX_SHOWN_LINE_BYTES: usize = 4096;

/// Settings of the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Length of one window.
    pub window: Duration,
    /// Lines shown per window; the rest is counted.
    pub max_lines_per_window: u64,
    /// How many recent lines are kept for incident evidence.
    pub tail_lines: usize,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            window: Duration::from_secs(10),
            max_lines_per_window: 20,
            tail_lines: 50,
        }
    }
}

/// What to log for an observed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputNote {
    /// Show this line (already cut to [`MAX_SHOWN_LINE_BYTES`]).
    Line(String),
    /// The window's quota was just used up: further lines are counted, not shown.
    Suppressing {
        /// Lines shown in this window.
        shown: u64,
        /// The window length.
        window: Duration,
    },
    /// A window with suppressed lines ended.
    Summary {
        /// What was counted (`non-protocol lines`).
        noun: &'static str,
        /// Lines printed in the window (shown and suppressed).
        total: u64,
        /// Lines shown.
        shown: u64,
        /// Length of the window.
        window: Duration,
    },
}

impl OutputNote {
    /// The sentence logged for the note.
    pub fn message(&self) -> String {
        match self {
            OutputNote::Line(line) => line.clone(),
            OutputNote::Suppressing { shown, window } => format!(
                "bot output is being rate-limited: {shown} lines shown in {} s, further lines are only counted until the window ends",
                window.as_secs()
            ),
            OutputNote::Summary {
                noun,
                total,
                shown,
                window,
            } => format!(
                "bot printed {} {noun} in the last {} s; showing the first {shown}",
                group_thousands(*total),
                window.as_secs()
            ),
        }
    }
}

/// The rate limiter with a bounded tail of recent lines.
#[derive(Debug, Clone)]
pub struct OutputLimiter {
    limits: OutputLimits,
    noun: &'static str,
    window_start: Option<Instant>,
    in_window: u64,
    total: u64,
    tail: VecDeque<String>,
}

impl OutputLimiter {
    /// A limiter with these limits.
    pub fn new(limits: OutputLimits) -> Self {
        OutputLimiter {
            limits,
            noun: "non-protocol lines",
            window_start: None,
            in_window: 0,
            total: 0,
            tail: VecDeque::with_capacity(limits.tail_lines.min(1024)),
        }
    }

    /// Names what is counted in summaries (default `non-protocol lines`).
    pub fn with_noun(mut self, noun: &'static str) -> Self {
        self.noun = noun;
        self
    }

    /// Records one line printed at `now` and says what to log (zero, one or two notes).
    pub fn observe(&mut self, now: Instant, line: &str) -> Vec<OutputNote> {
        let mut notes = Vec::new();
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < self.limits.window => {}
            _ => {
                notes.extend(self.finish_window());
                self.window_start = Some(now);
            }
        }
        self.in_window += 1;
        self.total += 1;
        let shown = cut(line, MAX_SHOWN_LINE_BYTES);
        if self.limits.tail_lines > 0 {
            if self.tail.len() == self.limits.tail_lines {
                self.tail.pop_front();
            }
            self.tail.push_back(cut(line, 512));
        }
        let max = self.limits.max_lines_per_window;
        if self.in_window <= max {
            notes.push(OutputNote::Line(shown));
        }
        if self.in_window == max + 1 {
            notes.push(OutputNote::Suppressing {
                shown: max,
                window: self.limits.window,
            });
        }
        notes
    }

    /// Ends the current window (call at end of output): the summary if lines were
    /// suppressed in it.
    pub fn finish_window(&mut self) -> Option<OutputNote> {
        let total = std::mem::take(&mut self.in_window);
        self.window_start = None;
        let shown = self.limits.max_lines_per_window;
        (total > shown).then_some(OutputNote::Summary {
            noun: self.noun,
            total,
            shown,
            window: self.limits.window,
        })
    }

    /// Lines observed so far.
    pub fn total_lines(&self) -> u64 {
        self.total
    }

    /// The most recent lines (each cut to 512 bytes), oldest first.
    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}

/// Logs a note as the output of the bot named `label`.
pub fn emit(label: &str, note: &OutputNote) {
    match note {
        OutputNote::Line(line) => tracing::info!(target: "ms11::bot_output", bot = label, "{line}"),
        other => tracing::warn!(target: "ms11::bot_output", bot = label, "{}", other.message()),
    }
}

/// `12345` → `12 345`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let first_group = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let (head, rest) = digits.split_at(first_group);
    let mut out = head.to_owned();
    for group in rest.as_bytes().chunks(3) {
        out.push(' ');
        out.push_str(&String::from_utf8_lossy(group));
    }
    out
}

/// The first `max` bytes of `s`, cut at a character boundary, with a note of what was cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &s[..end], s.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> OutputLimits {
        OutputLimits {
            window: Duration::from_secs(10),
            max_lines_per_window: 20,
            tail_lines: 3,
        }
    }

    #[test]
    fn a_flood_shows_the_first_lines_then_one_summary() {
        let mut limiter = OutputLimiter::new(limits());
        let t0 = Instant::now();
        let mut shown = 0;
        let mut other = Vec::new();
        for i in 0..12_345u64 {
            let now = t0 + Duration::from_micros(i * 100);
            for note in limiter.observe(now, &format!("line {i}")) {
                match note {
                    OutputNote::Line(_) => shown += 1,
                    n => other.push(n),
                }
            }
        }
        assert_eq!(shown, 20);
        assert_eq!(
            other,
            [OutputNote::Suppressing {
                shown: 20,
                window: Duration::from_secs(10)
            }]
        );
        let summary = limiter.finish_window().unwrap();
        assert_eq!(
            summary.message(),
            "bot printed 12 345 non-protocol lines in the last 10 s; showing the first 20"
        );
        assert_eq!(limiter.tail(), ["line 12342", "line 12343", "line 12344"]);
        assert_eq!(limiter.total_lines(), 12_345);
    }

    #[test]
    fn a_new_window_summarises_the_last_and_shows_again() {
        let mut limiter = OutputLimiter::new(limits());
        let t0 = Instant::now();
        for _ in 0..25 {
            limiter.observe(t0, "x");
        }
        let notes = limiter.observe(t0 + Duration::from_secs(11), "after");
        assert_eq!(
            notes,
            [
                OutputNote::Summary {
                    noun: "non-protocol lines",
                    total: 25,
                    shown: 20,
                    window: Duration::from_secs(10)
                },
                OutputNote::Line("after".into())
            ]
        );
        assert_eq!(limiter.finish_window(), None);
    }

    #[test]
    fn quiet_output_is_shown_in_full_and_long_lines_are_cut() {
        let mut limiter = OutputLimiter::new(limits());
        let t0 = Instant::now();
        let long = "é".repeat(5000);
        let notes = limiter.observe(t0, &long);
        let [OutputNote::Line(line)] = notes.as_slice() else {
            panic!("{notes:?}")
        };
        assert!(line.len() < MAX_SHOWN_LINE_BYTES + 40);
        assert!(
            line.ends_with("… (5904 more bytes)"),
            "{}",
            &line[line.len() - 30..]
        );
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1_000), "1 000");
        assert_eq!(group_thousands(1_234_567), "1 234 567");
    }
}
