//! The task ledger: every task with a stable id and a state, so that after any crash we
//! know exactly which tasks are done (never run again), which was in flight (may run once
//! more, flagged as a re-run) and which are pending (run in order).
//!
//! The seed's `task_queue` (a list of strings) is derived from the ledger: the ids of the
//! in-flight tasks followed by the pending ones, in ledger order.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::SessionState;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Not started.
    Pending,
    /// Started and not yet durably recorded as done.
    InFlight,
    /// Durably recorded as done; never run again.
    Done,
}

/// One task of the bot's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Stable id: the idempotency key.
    pub id: String,
    /// Human-readable name (`travel to Theed`), may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Current state.
    pub state: TaskState,
    /// How many times it was started.
    #[serde(default)]
    pub attempts: u32,
    /// Unix time (s) it was started last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    /// Unix time (s) it was recorded done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<f64>,
    /// The bot's `seq` of its `task_done` message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_seq: Option<u64>,
}

impl Task {
    /// A new pending task.
    pub fn pending(id: impl Into<String>, name: impl Into<String>) -> Self {
        Task {
            id: id.into(),
            name: name.into(),
            state: TaskState::Pending,
            attempts: 0,
            started_at: None,
            done_at: None,
            done_seq: None,
        }
    }
}

/// A ledger operation that would break the guarantees.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TaskError {
    /// Task ids must be non-empty.
    #[error("task id must not be empty")]
    EmptyId,
    /// `task_added` with an id the ledger already has.
    #[error("task `{id}` already exists (state {state:?})")]
    Duplicate {
        /// The id.
        id: String,
        /// Its current state.
        state: TaskState,
    },
    /// `task_done` for an id the ledger does not have: the runner never handed it out
    /// (it was neither added, nor started, nor in a `resume`), so it is not recorded.
    #[error(
        "task `{id}` is not in the task ledger (it was never added or started); it is not recorded as done"
    )]
    Unknown {
        /// The id.
        id: String,
    },
    /// `task_started` for a task that is already done: running it again would repeat it.
    #[error("task `{id}` is already done (seq {seq:?}); it must not run again")]
    AlreadyDone {
        /// The id.
        id: String,
        /// The seq it was completed with.
        seq: Option<u64>,
    },
}

/// What `start_task` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartOutcome {
    /// The attempt number now running (1 for a first run).
    pub attempt: u32,
    /// The task was not in the ledger and was added.
    pub added: bool,
}

/// What `complete_task` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompleteOutcome {
    /// The task moved to done: persist, then acknowledge.
    Completed,
    /// It was already done (a repeated `task_done`): acknowledge again, change nothing.
    AlreadyDone,
}

impl SessionState {
    /// The ledger, in order.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// The seed's queue: ids of in-flight then pending tasks.
    pub fn task_queue(&self) -> &[String] {
        &self.task_queue
    }

    /// Looks a task up by id.
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.id == id)
    }

    /// Tasks that were running when the session stopped.
    pub fn in_flight_tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.iter().filter(|t| t.state == TaskState::InFlight)
    }

    /// Number of tasks in a given state.
    pub fn count_tasks(&self, state: TaskState) -> usize {
        self.tasks.iter().filter(|t| t.state == state).count()
    }

    /// Appends a pending task.
    pub fn add_task(&mut self, id: &str, name: &str) -> Result<(), TaskError> {
        if id.is_empty() {
            return Err(TaskError::EmptyId);
        }
        if let Some(existing) = self.task(id) {
            return Err(TaskError::Duplicate {
                id: id.to_owned(),
                state: existing.state,
            });
        }
        self.tasks.push(Task::pending(id, name));
        self.sync_task_queue();
        Ok(())
    }

    /// Marks a task in flight (adding it if the bot never announced it).
    pub fn start_task(&mut self, id: &str, now: f64) -> Result<StartOutcome, TaskError> {
        if id.is_empty() {
            return Err(TaskError::EmptyId);
        }
        let added = match self.tasks.iter().position(|t| t.id == id) {
            Some(_) => false,
            None => {
                self.tasks.push(Task::pending(id, ""));
                true
            }
        };
        let task = self
            .tasks
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or(TaskError::EmptyId)?;
        if task.state == TaskState::Done {
            return Err(TaskError::AlreadyDone {
                id: id.to_owned(),
                seq: task.done_seq,
            });
        }
        task.state = TaskState::InFlight;
        task.attempts = task.attempts.saturating_add(1);
        task.started_at = Some(now);
        let attempt = task.attempts;
        self.sync_task_queue();
        Ok(StartOutcome { attempt, added })
    }

    /// Marks a task done. A repeated completion is not an error: it changes nothing and
    /// says so, so the caller acknowledges again without a second save. A task the ledger
    /// does not have is refused ([`TaskError::Unknown`]): it is never invented as done.
    pub fn complete_task(
        &mut self,
        id: &str,
        seq: Option<u64>,
        now: f64,
    ) -> Result<CompleteOutcome, TaskError> {
        if id.is_empty() {
            return Err(TaskError::EmptyId);
        }
        let Some(task) = self.tasks.iter_mut().find(|t| t.id == id) else {
            return Err(TaskError::Unknown { id: id.to_owned() });
        };
        if task.state == TaskState::Done {
            return Ok(CompleteOutcome::AlreadyDone);
        }
        task.state = TaskState::Done;
        task.done_at = Some(now);
        task.done_seq = seq;
        if let Some(seq) = seq {
            self.runtime.last_ack_seq = Some(self.runtime.last_ack_seq.map_or(seq, |s| s.max(seq)));
        }
        self.sync_task_queue();
        Ok(CompleteOutcome::Completed)
    }

    /// Rebuilds `task_queue` from the ledger.
    pub(crate) fn sync_task_queue(&mut self) {
        let in_flight = self.tasks.iter().filter(|t| t.state == TaskState::InFlight);
        let pending = self.tasks.iter().filter(|t| t.state == TaskState::Pending);
        self.task_queue = in_flight.chain(pending).map(|t| t.id.clone()).collect();
    }

    /// Brings ids found in `task_queue` but missing from the ledger into the ledger as
    /// pending tasks (a file edited by the seed's tools), then re-derives the queue.
    /// Returns the ids that were added.
    pub(crate) fn reconcile_task_queue(&mut self) -> Vec<String> {
        let mut added = Vec::new();
        for id in std::mem::take(&mut self.task_queue) {
            if !id.is_empty() && self.task(&id).is_none() {
                self.tasks.push(Task::pending(id.clone(), ""));
                added.push(id);
            }
        }
        self.sync_task_queue();
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SessionState {
        SessionState::new("s", "naboo", "theed", 100.0)
    }

    #[test]
    fn queue_is_in_flight_then_pending_and_done_tasks_leave_it() {
        let mut s = state();
        for id in ["a", "b", "c"] {
            s.add_task(id, "").unwrap();
        }
        s.start_task("b", 1.0).unwrap();
        assert_eq!(s.task_queue(), ["b", "a", "c"]);
        s.complete_task("b", Some(1), 2.0).unwrap();
        assert_eq!(s.task_queue(), ["a", "c"]);
        assert_eq!(s.count_tasks(TaskState::Done), 1);
        assert_eq!(s.runtime.last_ack_seq, Some(1));
    }

    #[test]
    fn a_done_task_cannot_start_again_and_a_repeated_done_changes_nothing() {
        let mut s = state();
        s.add_task("a", "travel").unwrap();
        s.start_task("a", 1.0).unwrap();
        assert_eq!(
            s.complete_task("a", Some(7), 2.0),
            Ok(CompleteOutcome::Completed)
        );
        let before = s.clone();
        assert_eq!(
            s.complete_task("a", Some(7), 3.0),
            Ok(CompleteOutcome::AlreadyDone)
        );
        assert_eq!(s, before);
        assert_eq!(
            s.start_task("a", 4.0),
            Err(TaskError::AlreadyDone {
                id: "a".into(),
                seq: Some(7)
            })
        );
    }

    #[test]
    fn restarting_an_in_flight_task_counts_attempts() {
        let mut s = state();
        let first = s.start_task("x", 1.0).unwrap();
        assert_eq!(
            first,
            StartOutcome {
                attempt: 1,
                added: true
            }
        );
        let again = s.start_task("x", 2.0).unwrap();
        assert_eq!(
            again,
            StartOutcome {
                attempt: 2,
                added: false
            }
        );
    }

    #[test]
    fn done_for_an_id_never_handed_out_is_refused_and_changes_nothing() {
        let mut s = state();
        s.add_task("a", "").unwrap();
        let before = s.clone();
        assert_eq!(
            s.complete_task("ghost", Some(3), 1.0),
            Err(TaskError::Unknown { id: "ghost".into() })
        );
        assert_eq!(s, before, "no task invented, last_ack_seq untouched");
        // A pending task was handed out (it is in the queue of every resume): accepted.
        assert_eq!(
            s.complete_task("a", Some(4), 2.0),
            Ok(CompleteOutcome::Completed)
        );
    }

    #[test]
    fn duplicate_and_empty_ids_are_refused() {
        let mut s = state();
        s.add_task("a", "").unwrap();
        assert!(matches!(
            s.add_task("a", ""),
            Err(TaskError::Duplicate { .. })
        ));
        assert_eq!(s.add_task("", ""), Err(TaskError::EmptyId));
    }
}
