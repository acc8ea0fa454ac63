//! Whether a just-started client is ready: a new log line matching a pattern (read
//! from where the log ended at the start), or a fixed delay. Polled by the session loop
//! on its own timer while a check is pending; nothing waits.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use regex::Regex;

use crate::settings::{ReadyKind, ReadySettings};

/// How often a pending log check reads the log.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// A `window` check: the titles to find and the connection, made at the first poll.
struct WindowWait {
    titles: Vec<Regex>,
    display: Option<String>,
    lister: Option<ms11_detect::WindowLister>,
}

impl std::fmt::Debug for WindowWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowWait")
            .field("titles", &self.titles)
            .field("display", &self.display)
            .finish_non_exhaustive()
    }
}

/// A pending readiness check of one client start.
#[derive(Debug)]
pub(crate) struct ReadinessCheck {
    kind: ReadyKind,
    regex: Option<Regex>,
    window: Option<WindowWait>,
    log: Option<PathBuf>,
    read_to: u64,
    partial: String,
    ready_at_delay: Instant,
    next_poll: Instant,
    pattern: String,
}

impl ReadinessCheck {
    /// A check for a client started at `now`; `log_offset` is the log's length then.
    pub(crate) fn new(
        settings: &ReadySettings,
        log: Option<&Path>,
        log_offset: u64,
        now: Instant,
    ) -> Result<Self, String> {
        let regex = match settings.kind {
            ReadyKind::Delay | ReadyKind::Window => None,
            ReadyKind::LogLine => {
                if log.is_none() {
                    return Err("no client_log to watch for readiness".into());
                }
                Some(Regex::new(&settings.pattern).map_err(|e| format!("ready.pattern: {e}"))?)
            }
        };
        let window = match settings.kind {
            ReadyKind::Window => {
                let titles = settings
                    .window_titles
                    .iter()
                    .map(|t| {
                        regex::RegexBuilder::new(t)
                            .case_insensitive(true)
                            .build()
                            .map_err(|e| format!("window.main_titles: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if titles.is_empty() {
                    return Err("no window.main_titles to wait for".into());
                }
                Some(WindowWait {
                    titles,
                    display: settings.display.clone(),
                    lister: None,
                })
            }
            _ => None,
        };
        Ok(ReadinessCheck {
            kind: settings.kind,
            regex,
            window,
            log: log.map(Path::to_path_buf),
            read_to: log_offset,
            partial: String::new(),
            ready_at_delay: now + settings.delay,
            next_poll: now,
            pattern: settings.pattern.clone(),
        })
    }

    /// When the next poll is due.
    pub(crate) fn due(&self) -> Instant {
        match self.kind {
            ReadyKind::Delay => self.ready_at_delay,
            ReadyKind::LogLine | ReadyKind::Window => self.next_poll,
        }
    }

    /// What it waits for, for messages.
    pub(crate) fn describe(&self) -> String {
        match self.kind {
            ReadyKind::Delay => "a start-up delay".to_owned(),
            ReadyKind::Window => "the client's window".to_owned(),
            ReadyKind::LogLine => format!("a log line matching `{}`", self.pattern),
        }
    }

    /// Checks once at `now`; `Ok(Some(evidence))` when ready.
    pub(crate) fn poll(&mut self, now: Instant) -> Result<Option<String>, String> {
        self.next_poll = now + POLL_INTERVAL;
        match self.kind {
            ReadyKind::Delay => {
                Ok((now >= self.ready_at_delay).then(|| "start-up delay passed".into()))
            }
            ReadyKind::Window => self.poll_window(),
            ReadyKind::LogLine => self.poll_log(),
        }
    }

    fn poll_window(&mut self) -> Result<Option<String>, String> {
        let Some(wait) = &mut self.window else {
            return Ok(None);
        };
        if wait.lister.is_none() {
            wait.lister = Some(
                ms11_detect::WindowLister::connect(wait.display.as_deref())
                    .map_err(|e| format!("cannot open the display for window readiness: {e}"))?,
            );
        }
        let Some(lister) = wait.lister.as_mut() else {
            return Ok(None);
        };
        let titles = lister.titles()?;
        Ok(titles
            .into_iter()
            .find(|t| wait.titles.iter().any(|r| r.is_match(t)))
            .map(|t| format!("window \"{t}\"")))
    }

    fn poll_log(&mut self) -> Result<Option<String>, String> {
        let (Some(path), Some(regex)) = (&self.log, &self.regex) else {
            return Ok(None);
        };
        let Ok(mut file) = std::fs::File::open(path) else {
            return Ok(None); // not created yet
        };
        let len = file.metadata().map_or(0, |m| m.len());
        if len < self.read_to {
            self.read_to = 0; // truncated or replaced: read the new file from its start
            self.partial.clear();
        }
        if len == self.read_to {
            return Ok(None);
        }
        file.seek(SeekFrom::Start(self.read_to))
            .map_err(|e| format!("reading `{}`: {e}", path.display()))?;
        let mut chunk = Vec::new();
        file.take(4 << 20)
            .read_to_end(&mut chunk)
            .map_err(|e| format!("reading `{}`: {e}", path.display()))?;
        self.read_to += chunk.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&chunk));
        let complete = self.partial.rfind('\n').map_or(0, |i| i + 1);
        let found = self.partial[..complete]
            .lines()
            .find(|line| regex.is_match(line))
            .map(|line| line.trim().to_owned());
        self.partial.drain(..complete);
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;

    use super::*;

    #[test]
    fn only_complete_lines_written_after_the_start_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.log");
        std::fs::write(&path, "Login successful (an old run)\n").unwrap();
        let offset = std::fs::metadata(&path).unwrap().len();
        let now = Instant::now();
        let mut check =
            ReadinessCheck::new(&ReadySettings::default(), Some(&path), offset, now).unwrap();
        assert_eq!(
            check.poll(now).unwrap(),
            None,
            "the old run's line is not ours"
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        write!(file, "Login succ").unwrap();
        assert_eq!(check.poll(now).unwrap(), None, "half a line is not a line");
        writeln!(file, "essful as Hanna").unwrap();
        assert_eq!(
            check.poll(now).unwrap().as_deref(),
            Some("Login successful as Hanna")
        );
    }

    #[test]
    fn a_delay_is_ready_when_it_has_passed() {
        let settings = ReadySettings {
            kind: ReadyKind::Delay,
            delay: Duration::from_millis(500),
            ..ReadySettings::default()
        };
        let now = Instant::now();
        let mut check = ReadinessCheck::new(&settings, None, 0, now).unwrap();
        assert_eq!(check.due(), now + Duration::from_millis(500));
        assert_eq!(check.poll(now + Duration::from_millis(499)).unwrap(), None);
        assert!(
            check
                .poll(now + Duration::from_millis(500))
                .unwrap()
                .is_some()
        );
    }
}
