//! The session state model of ms11-recovery, and nothing else.
//!
//! [`SessionState`] carries the seed's 18 fields with their exact JSON names and types,
//! plus our own: the schema version, the save generation, the session id, the task
//! ledger ([`Task`]), the incident history ([`Incident`], a superset of the seed's
//! [`CrashInfo`]) and the runtime bookkeeping that must survive a runner restart
//! ([`RuntimeState`]: child pids, log cursors, recovery policy counters).
//!
//! This crate does no I/O and knows nothing of files, processes or config formats: it
//! turns bytes into a validated state ([`SessionState::from_json_slice`], with schema
//! migration from the seed's v0 files) and a state into bytes
//! ([`SessionState::to_json_pretty`]). Everything that touches the disk lives in
//! `ms11-persist`.

mod incident;
mod migrate;
mod runtime;
mod session;
mod tasks;
mod validate;

pub use incident::{
    Attempt, AttemptOutcome, CrashInfo, DetectorSource, Evidence, ExitInfo, Incident, IncidentKind,
    IncidentSubject, Resolution, ResolutionStatus, Severity,
};
pub use migrate::{CURRENT_SCHEMA_VERSION, Migration};
pub use runtime::{
    BreakerState, ChildRecord, LogCursor, RecoveryPolicyState, RetryState, RuntimeState,
    StormState, StrategyPolicyState,
};
pub use session::{
    LoadedState, MAX_CRASH_HISTORY, PatchError, SessionState, StateError, StateLimits,
    pretty_json_len,
};
pub use tasks::{CompleteOutcome, StartOutcome, Task, TaskError, TaskState};
pub use validate::{ValidationError, ValidationErrors};
