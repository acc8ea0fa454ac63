//! [`SessionState`]: the seed's 18 fields plus ours, parsing and serialisation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::incident::Incident;
use crate::migrate::{self, Migration};
use crate::runtime::RuntimeState;
use crate::tasks::Task;
use crate::validate::ValidationErrors;

/// How many incidents `crash_history` keeps (oldest dropped first; `crash_count`
/// keeps counting).
pub const MAX_CRASH_HISTORY: usize = 200;

/// The state of one bot session, as saved to `session_state.json`.
///
/// The first 18 fields are the seed's, with its JSON names and types, so a file written
/// by the seed's Python engine loads and a file we write stays loadable by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    /// Unix time (s) the state was captured.
    pub timestamp: f64,
    /// Planet the character is on.
    pub planet: String,
    /// Zone (city, region) on the planet.
    pub zone: String,
    /// Position: 2 or 3 numbers. Integral values are written as JSON integers, as the
    /// seed's `List[int]` was.
    #[serde(serialize_with = "serialize_numbers")]
    pub coordinates: Vec<f64>,
    /// The quest in progress (an object) or null.
    pub current_quest: Option<Map<String, Value>>,
    /// Step within the quest.
    pub quest_step: i64,
    /// Character level.
    pub xp_level: i64,
    /// Experience points within the level.
    pub xp_current: i64,
    /// Experience points needed for the next level.
    pub xp_next_level: i64,
    /// The equipped weapon (an object) or null.
    pub equipped_weapon: Option<Map<String, Value>>,
    /// Active bot modes (`combat`, `medic`, ...).
    pub active_modes: Vec<String>,
    /// Derived from the task ledger: in-flight then pending task ids.
    pub(crate) task_queue: Vec<String>,
    /// Seconds the session has run, all runs added up.
    pub session_duration: f64,
    /// Incidents ever detected.
    pub crash_count: u64,
    /// Unix time (s) of the last save.
    pub last_save_time: f64,
    /// Whether recovery is enabled for this session.
    pub recovery_enabled: bool,
    /// Whether the client may be restarted automatically.
    pub auto_restart: bool,
    /// Whether the character may be logged in again automatically.
    pub auto_relog: bool,

    /// Version of this layout (the seed's files are version 0).
    #[serde(default)]
    pub schema_version: u32,
    /// Save counter: each save writes `generation + 1`. Orders generations on disk.
    #[serde(default)]
    pub generation: u64,
    /// Stable id of the session across restarts.
    #[serde(default)]
    pub session_id: String,
    /// The task ledger.
    #[serde(default)]
    pub(crate) tasks: Vec<Task>,
    /// The most recent incidents, oldest first.
    #[serde(default)]
    pub crash_history: Vec<Incident>,
    /// The runner's own bookkeeping.
    #[serde(default)]
    pub runtime: RuntimeState,
    /// Fields this version does not know; written back unchanged.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Why bytes could not become a [`SessionState`].
#[derive(Debug, Error)]
pub enum StateError {
    /// Not JSON at all (truncated, garbage, empty).
    #[error("not valid JSON: {0}")]
    Syntax(#[source] serde_json::Error),
    /// JSON, but not a state object.
    #[error("expected a JSON object with the session state fields, found {found}")]
    NotAnObject {
        /// What was found instead.
        found: &'static str,
    },
    /// A field is missing or has the wrong type.
    #[error("field `{field}`: {message}")]
    Field {
        /// Path of the field, e.g. `coordinates[1]` or `tasks[3].state`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Written by a newer version of ms11-recovery.
    #[error(
        "schema_version {found} is newer than this program understands (up to {supported}); upgrade ms11-recovery"
    )]
    FutureSchema {
        /// The file's version.
        found: u64,
        /// The newest this build reads.
        supported: u32,
    },
    /// Parsed but breaks a rule.
    #[error("invalid state: {0}")]
    Invalid(#[from] ValidationErrors),
    /// Serialisation failed (cannot happen for valid states; kept for completeness).
    #[error("could not serialise the state: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// A state freshly parsed, with what was done to make it current.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedState {
    /// The state, valid and at the current schema.
    pub state: SessionState,
    /// Set when the file had an older schema.
    pub migration: Option<Migration>,
    /// Task ids found in `task_queue` but not in the ledger, added as pending.
    pub tasks_added_from_queue: Vec<String>,
}

/// Why a `state` patch from the bot was refused (the state is unchanged).
#[derive(Debug, Error)]
pub enum PatchError {
    /// The patch names a field the bot may not set.
    #[error("field `{0}` is managed by the runner and cannot be patched")]
    Forbidden(String),
    /// The patched state would not parse.
    #[error(transparent)]
    State(#[from] StateError),
    /// The patch itself, or the state with it applied, is larger than allowed.
    #[error(
        "{what} would be {bytes} bytes, over the limit of {limit} bytes; send smaller fields (keep large data in files of the bot's own)"
    )]
    TooLarge {
        /// `the patch` or `the session state`.
        what: &'static str,
        /// Its size as saved (pretty-printed JSON).
        bytes: u64,
        /// The limit.
        limit: u64,
    },
}

/// Size limits for what a bot may put into the state, in bytes of the saved form
/// (pretty-printed JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimits {
    /// The most one `state` patch may take.
    pub max_patch_bytes: u64,
    /// The most the whole state may take.
    pub max_state_bytes: u64,
}

impl Default for StateLimits {
    /// 1 MiB per patch, 16 MiB for the state: well under the 64 MiB a load accepts.
    fn default() -> Self {
        StateLimits {
            max_patch_bytes: 1024 * 1024,
            max_state_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The length of a value's pretty-printed JSON (as saved), without building it.
pub fn pretty_json_len<T: Serialize + ?Sized>(value: &T) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serialising into a counter fails only for types that cannot be JSON at all.
    if serde_json::to_writer_pretty(&mut count, value).is_err() {
        return u64::MAX;
    }
    count.0
}

/// Fields a bot may not set through a `state` patch.
const RUNNER_FIELDS: &[&str] = &[
    "task_queue",
    "tasks",
    "crash_count",
    "crash_history",
    "schema_version",
    "generation",
    "session_id",
    "runtime",
    "last_save_time",
    "recovery_enabled",
    "auto_restart",
    "auto_relog",
    "session_duration",
];

impl SessionState {
    /// A fresh state for a new session, at the current schema version.
    pub fn new(session_id: &str, planet: &str, zone: &str, now: f64) -> Self {
        SessionState {
            timestamp: now,
            planet: planet.to_owned(),
            zone: zone.to_owned(),
            coordinates: vec![0.0, 0.0],
            current_quest: None,
            quest_step: 0,
            xp_level: 1,
            xp_current: 0,
            xp_next_level: 1000,
            equipped_weapon: None,
            active_modes: Vec::new(),
            task_queue: Vec::new(),
            session_duration: 0.0,
            crash_count: 0,
            last_save_time: 0.0,
            recovery_enabled: true,
            auto_restart: false,
            auto_relog: false,
            schema_version: migrate::CURRENT_SCHEMA_VERSION,
            generation: 0,
            session_id: session_id.to_owned(),
            tasks: Vec::new(),
            crash_history: Vec::new(),
            runtime: RuntimeState::default(),
            extra: BTreeMap::new(),
        }
    }

    /// Parses, migrates and validates a state file's bytes.
    pub fn from_json_slice(bytes: &[u8]) -> Result<LoadedState, StateError> {
        // Fast path: a file at the current schema deserialises straight into the struct.
        // Anything else (an older schema, a type error) takes the path below, which
        // migrates and names the offending field.
        if let Ok(mut state) = serde_json::from_slice::<SessionState>(bytes)
            && state.schema_version == migrate::CURRENT_SCHEMA_VERSION
        {
            let tasks_added_from_queue = state.reconcile_task_queue();
            state.validate()?;
            return Ok(LoadedState {
                state,
                migration: None,
                tasks_added_from_queue,
            });
        }
        let value: Value = serde_json::from_slice(bytes).map_err(StateError::Syntax)?;
        Self::from_json_value(value)
    }

    /// Like [`from_json_slice`](Self::from_json_slice), from an already parsed value.
    pub fn from_json_value(value: Value) -> Result<LoadedState, StateError> {
        let object = match value {
            Value::Object(map) => map,
            other => {
                return Err(StateError::NotAnObject {
                    found: json_type_name(&other),
                });
            }
        };
        let (object, migration) = migrate::to_current(object)?;
        let mut state = from_object(object)?;
        let tasks_added_from_queue = state.reconcile_task_queue();
        state.validate()?;
        Ok(LoadedState {
            state,
            migration,
            tasks_added_from_queue,
        })
    }

    /// Pretty JSON (2-space indent, the seed's layout), ending in a newline.
    pub fn to_json_pretty(&self) -> Result<Vec<u8>, StateError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(StateError::Serialize)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// [`apply_patch`](Self::apply_patch) within size limits: a patch larger than
    /// `limits.max_patch_bytes`, or one that would make the state larger than
    /// `limits.max_state_bytes`, is refused and nothing changes.
    pub fn apply_patch_within(
        &mut self,
        patch: &Map<String, Value>,
        limits: StateLimits,
    ) -> Result<Vec<String>, PatchError> {
        let bytes = pretty_json_len(patch);
        if bytes > limits.max_patch_bytes {
            return Err(PatchError::TooLarge {
                what: "the patch",
                bytes,
                limit: limits.max_patch_bytes,
            });
        }
        self.apply_patch_checked(patch, Some(limits.max_state_bytes))
    }

    /// Applies a bot's `state{patch}`: top-level fields replaced by the patch's values.
    /// The result must validate; otherwise nothing changes. Unknown fields are kept as
    /// extra fields. Returns the names of the fields that changed.
    pub fn apply_patch(&mut self, patch: &Map<String, Value>) -> Result<Vec<String>, PatchError> {
        self.apply_patch_checked(patch, None)
    }

    /// Applies the patch at a cost that depends on the patch and the state's small fields,
    /// not on the ledger, the incidents or the bot's other extra fields: those cannot be
    /// patched, so they are moved aside, not converted to JSON values and back. The size
    /// limit needs the whole state's size once (counted, not built); the patch changes it
    /// by the difference between the small parts before and after.
    fn apply_patch_checked(
        &mut self,
        patch: &Map<String, Value>,
        max_state_bytes: Option<u64>,
    ) -> Result<Vec<String>, PatchError> {
        if let Some(key) = patch.keys().find(|k| RUNNER_FIELDS.contains(&k.as_str())) {
            return Err(PatchError::Forbidden(key.clone()));
        }
        let bulk = Bulk::take(self, patch, max_state_bytes.is_some());
        let result = self.apply_patch_to_small(patch, max_state_bytes, &bulk);
        match result {
            Ok(Some((mut patched, changed))) => {
                bulk.put_back(&mut patched);
                if let Err(errors) = patched.validate() {
                    bulk_from(&mut patched).put_back(self);
                    return Err(StateError::from(errors).into());
                }
                *self = patched;
                Ok(changed)
            }
            Ok(None) => {
                bulk.put_back(self);
                Ok(Vec::new())
            }
            Err(err) => {
                bulk.put_back(self);
                Err(err)
            }
        }
    }

    /// The patch applied to `self` with its bulk moved aside (`bulk`): the patched small
    /// state and the changed fields, or `None` when nothing changes.
    fn apply_patch_to_small(
        &self,
        patch: &Map<String, Value>,
        max_state_bytes: Option<u64>,
        bulk: &Bulk,
    ) -> Result<Option<(SessionState, Vec<String>)>, PatchError> {
        let current = match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(PatchError::State(StateError::NotAnObject {
                    found: "non-object",
                }));
            }
            Err(e) => return Err(PatchError::State(StateError::Serialize(e))),
        };
        let mut merged = current.clone();
        let mut changed = Vec::new();
        for (key, value) in patch {
            if merged.get(key) != Some(value) {
                changed.push(key.clone());
                merged.insert(key.clone(), value.clone());
            }
        }
        if changed.is_empty() {
            return Ok(None);
        }
        if let Some(limit) = max_state_bytes {
            // The bulk is the same before and after, so the whole state's size changes by
            // what the small part's size changes (an object's pretty size is the sum of
            // its entries'; their order does not matter).
            let bytes = bulk
                .whole_bytes
                .saturating_add(pretty_json_len(&merged))
                .saturating_sub(pretty_json_len(&current));
            if bytes > limit {
                return Err(PatchError::TooLarge {
                    what: "the session state",
                    bytes,
                    limit,
                });
            }
        }
        Ok(Some((from_object(merged)?, changed)))
    }

    /// Appends an incident to the history (bounded) and counts it. Secrets in its
    /// texts are redacted first ([`Incident::redact_secrets`]).
    pub fn record_incident(&mut self, mut incident: Incident) {
        incident.redact_secrets();
        self.crash_count = self.crash_count.saturating_add(1);
        self.crash_history.push(incident);
        if self.crash_history.len() > MAX_CRASH_HISTORY {
            let excess = self.crash_history.len() - MAX_CRASH_HISTORY;
            self.crash_history.drain(..excess);
        }
    }

    /// Replaces an incident of the history with a newer version of it (same id), or
    /// records it if it is not there. Secrets in its texts are redacted first.
    pub fn update_incident(&mut self, mut incident: Incident) {
        incident.redact_secrets();
        match self.crash_history.iter_mut().find(|i| i.id == incident.id) {
            Some(slot) => *slot = incident,
            None => self.record_incident(incident),
        }
    }
}

/// What a patch cannot change, moved out of a state while the patch is applied to the
/// rest: the ledger, the queue, the incidents, the runner's bookkeeping and the extra
/// fields the patch does not name.
struct Bulk {
    tasks: Vec<Task>,
    task_queue: Vec<String>,
    crash_history: Vec<Incident>,
    runtime: RuntimeState,
    extra: BTreeMap<String, Value>,
    /// The whole state's pretty size before anything was moved out.
    whole_bytes: u64,
}

impl Bulk {
    /// Moves the bulk out of `state`, leaving the extra fields `patch` names; counts the
    /// whole state's size first when `count` says so.
    fn take(state: &mut SessionState, patch: &Map<String, Value>, count: bool) -> Bulk {
        let whole_bytes = if count { pretty_json_len(&*state) } else { 0 };
        let mut bulk = bulk_from(state);
        bulk.whole_bytes = whole_bytes;
        for key in patch.keys() {
            if let Some((key, value)) = bulk.extra.remove_entry(key) {
                state.extra.insert(key, value);
            }
        }
        bulk
    }

    /// Moves the bulk into `state`; extra fields already there (patched ones) win.
    fn put_back(mut self, state: &mut SessionState) {
        state.tasks = self.tasks;
        state.task_queue = self.task_queue;
        state.crash_history = self.crash_history;
        state.runtime = self.runtime;
        self.extra.append(&mut state.extra);
        state.extra = self.extra;
    }
}

/// Moves everything a patch cannot change out of `state` (all extra fields).
fn bulk_from(state: &mut SessionState) -> Bulk {
    Bulk {
        tasks: std::mem::take(&mut state.tasks),
        task_queue: std::mem::take(&mut state.task_queue),
        crash_history: std::mem::take(&mut state.crash_history),
        runtime: std::mem::take(&mut state.runtime),
        extra: std::mem::take(&mut state.extra),
        whole_bytes: 0,
    }
}

fn from_object(object: Map<String, Value>) -> Result<SessionState, StateError> {
    let value = Value::Object(object);
    serde_path_to_error::deserialize(&value).map_err(|err| {
        let field = err.path().to_string();
        StateError::Field {
            field: if field == "." {
                "(top level)".into()
            } else {
                field
            },
            message: err.into_inner().to_string(),
        }
    })
}

pub(crate) fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Writes whole numbers as JSON integers (`[120, -45]`), others as floats.
fn serialize_numbers<S: Serializer>(values: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = serializer.serialize_seq(Some(values.len()))?;
    for &v in values {
        // Integral and within the range where f64 represents every integer exactly.
        if v.fract() == 0.0 && v.abs() < 9.0e15 {
            #[allow(clippy::cast_possible_truncation)]
            seq.serialize_element(&(v as i64))?;
        } else {
            seq.serialize_element(&v)?;
        }
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        let Value::Object(map) = value else {
            unreachable!()
        };
        map
    }

    /// A state with something in every part a patch cannot change.
    fn busy_state() -> SessionState {
        let mut state = SessionState::new("s", "naboo", "theed", 100.0);
        for i in 0..50 {
            state.add_task(&format!("t-{i}"), "hunt kaadu").unwrap();
        }
        state.start_task("t-0", 101.0).unwrap();
        state.complete_task("t-1", Some(7), 102.0).unwrap();
        state.runtime.save_count = 3;
        state
            .apply_patch(&object(json!({"inventory": [1, 2, 3], "mood": "calm"})))
            .unwrap();
        state
    }

    #[test]
    fn a_patch_changes_its_fields_and_keeps_everything_else() {
        let mut state = busy_state();
        let before = state.clone();
        let changed = state
            .apply_patch_within(
                &object(json!({"xp_current": 5, "mood": "tired", "pet": "kaadu"})),
                StateLimits::default(),
            )
            .unwrap();
        assert_eq!(changed, ["mood", "pet", "xp_current"]);
        assert_eq!(state.xp_current, 5);
        assert_eq!(state.extra["mood"], "tired");
        assert_eq!(state.extra["pet"], "kaadu");
        assert_eq!(state.extra["inventory"], json!([1, 2, 3]));
        assert_eq!(state.tasks, before.tasks);
        assert_eq!(state.task_queue, before.task_queue);
        assert_eq!(state.runtime, before.runtime);
        assert_eq!(state.crash_history, before.crash_history);
    }

    #[test]
    fn a_refused_patch_leaves_the_state_as_it_was() {
        let mut state = busy_state();
        let before = state.clone();
        // Valid JSON for the field, but the state would break a rule.
        let err = state
            .apply_patch(&object(json!({"xp_current": 5000, "mood": "angry"})))
            .unwrap_err();
        assert!(
            matches!(err, PatchError::State(StateError::Invalid(_))),
            "{err}"
        );
        assert_eq!(state, before);
        let err = state
            .apply_patch(&object(json!({"coordinates": "here", "mood": "angry"})))
            .unwrap_err();
        assert!(err.to_string().contains("coordinates"), "{err}");
        assert_eq!(state, before);
    }

    #[test]
    fn the_size_limit_counts_the_whole_state_as_saved() {
        let patch = object(json!({"mood": "a much longer mood than before", "pet": [1, 2]}));
        let mut expected = busy_state();
        expected.apply_patch(&patch).unwrap();
        // As saved, without the final newline `to_json_pretty` adds.
        let size = expected.to_json_pretty().unwrap().len() as u64 - 1;
        let limits = |max_state_bytes| StateLimits {
            max_patch_bytes: 1024,
            max_state_bytes,
        };
        let mut state = busy_state();
        let before = state.clone();
        match state.apply_patch_within(&patch, limits(size - 1)) {
            Err(PatchError::TooLarge { bytes, .. }) => assert_eq!(bytes, size),
            other => panic!("{other:?}"),
        }
        assert_eq!(state, before);
        state.apply_patch_within(&patch, limits(size)).unwrap();
        assert_eq!(state, expected);
    }
}
