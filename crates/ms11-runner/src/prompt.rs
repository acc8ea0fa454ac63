//! The start-up question: "Continue previous session? [Y/n]", the seed's prompt, with
//! `--yes`/`--no` and a configured default for unattended starts. Without a terminal it
//! never waits: it takes the configured default.

use std::io::{BufRead, IsTerminal, Write};

use ms11_state::{SessionState, TaskState};

use crate::stats::format_duration;

/// What was decided, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContinueDecision {
    /// Continue the saved session.
    Continue,
    /// Start a new session (the saved one stays as an older generation).
    StartFresh,
}

/// How the question is answered when nobody is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContinuePolicy {
    /// Ask on a terminal; continue when there is none.
    Ask,
    /// Always continue.
    Yes,
    /// Always start fresh.
    No,
}

/// One paragraph describing a saved session, for the prompt and `recover`.
pub fn describe(session: &str, state: &SessionState, now: f64) -> String {
    let quest = state
        .current_quest
        .as_ref()
        .and_then(|q| q.get("name").and_then(|n| n.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "none".into());
    let age = if state.last_save_time > 0.0 {
        format!("{} ago", format_duration(now - state.last_save_time))
    } else {
        "never saved".into()
    };
    format!(
        "Previous session `{session}` found: {planet} / {zone}, quest: {quest} (step {step}), level {level}, \
{done} task(s) done, {left} to go, saved {age}.",
        planet = state.planet,
        zone = state.zone,
        step = state.quest_step,
        level = state.xp_level,
        done = state.count_tasks(TaskState::Done),
        left = state.count_tasks(TaskState::Pending) + state.count_tasks(TaskState::InFlight),
    )
}

/// Decides whether to continue: the command line wins, then the policy; `Ask` asks on a
/// terminal and continues without one.
pub fn decide(
    yes: bool,
    no: bool,
    policy: ContinuePolicy,
    description: &str,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
    interactive: bool,
) -> ContinueDecision {
    if yes {
        return ContinueDecision::Continue;
    }
    if no {
        return ContinueDecision::StartFresh;
    }
    match policy {
        ContinuePolicy::Yes => ContinueDecision::Continue,
        ContinuePolicy::No => ContinueDecision::StartFresh,
        ContinuePolicy::Ask if !interactive => ContinueDecision::Continue,
        ContinuePolicy::Ask => {
            let _ = write!(output, "{description}\nContinue previous session? [Y/n] ");
            let _ = output.flush();
            let mut answer = String::new();
            if input.read_line(&mut answer).unwrap_or(0) == 0 {
                return ContinueDecision::Continue;
            }
            match answer.trim().to_ascii_lowercase().as_str() {
                "n" | "no" => ContinueDecision::StartFresh,
                _ => ContinueDecision::Continue,
            }
        }
    }
}

/// Whether stdin and stdout are a terminal (a person can answer).
pub fn is_interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(answer: &str, interactive: bool) -> (ContinueDecision, String) {
        let mut out = Vec::new();
        let d = decide(
            false,
            false,
            ContinuePolicy::Ask,
            "Previous session.",
            &mut answer.as_bytes(),
            &mut out,
            interactive,
        );
        (d, String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_prompt_takes_yes_no_and_defaults_to_continue() {
        assert_eq!(
            ask("n\n", true),
            (
                ContinueDecision::StartFresh,
                "Previous session.\nContinue previous session? [Y/n] ".into()
            )
        );
        assert_eq!(ask("\n", true).0, ContinueDecision::Continue);
        assert_eq!(ask("yes\n", true).0, ContinueDecision::Continue);
        assert_eq!(ask("", true).0, ContinueDecision::Continue, "EOF continues");
    }

    #[test]
    fn without_a_terminal_nothing_is_asked() {
        let (d, printed) = ask("n\n", false);
        assert_eq!(d, ContinueDecision::Continue);
        assert!(printed.is_empty());
        let mut out = Vec::new();
        let d = decide(
            false,
            false,
            ContinuePolicy::No,
            "",
            &mut "".as_bytes(),
            &mut out,
            false,
        );
        assert_eq!(d, ContinueDecision::StartFresh);
        let d = decide(
            true,
            false,
            ContinuePolicy::No,
            "",
            &mut "".as_bytes(),
            &mut out,
            true,
        );
        assert_eq!(d, ContinueDecision::Continue, "--yes wins");
    }

    #[test]
    fn the_description_shows_location_quest_and_age() {
        let mut s = SessionState::new("s", "naboo", "theed", 100.0);
        s.last_save_time = 1000.0;
        let mut quest = serde_json::Map::new();
        quest.insert("name".into(), "Imperial Courier".into());
        s.current_quest = Some(quest);
        let text = describe("main", &s, 4600.0);
        assert_eq!(
            text,
            "Previous session `main` found: naboo / theed, quest: Imperial Courier (step 0), level 1, 0 task(s) done, 0 to go, saved 1h 00m 00s ago."
        );
    }
}
