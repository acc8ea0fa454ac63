//! Schema versions and the explicit, step-by-step migrations between them.
//!
//! - v0: the seed's Python engine: exactly the 18 fields, no `schema_version`.
//! - v1: adds `schema_version`, `generation`, `session_id`, the task ledger `tasks`,
//!   `crash_history` and `runtime`. The seed's `task_queue` strings become pending tasks
//!   with those ids (a repeated string gets a `#2`, `#3`, ... suffix: ids are unique).

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::session::{StateError, json_type_name};

/// The schema this build writes.
pub const CURRENT_SCHEMA_VERSION: u32 = 1;

/// What a load did to bring an old file up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The file's schema version.
    pub from: u32,
    /// The version it now has.
    pub to: u32,
    /// One line per step, for the log.
    pub notes: Vec<String>,
}

/// Brings a state object to [`CURRENT_SCHEMA_VERSION`], one version at a time.
pub(crate) fn to_current(
    mut object: Map<String, Value>,
) -> Result<(Map<String, Value>, Option<Migration>), StateError> {
    let found = match object.get("schema_version") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| StateError::Field {
            field: "schema_version".into(),
            message: format!("expected a non-negative integer, found {n}"),
        })?,
        Some(other) => {
            return Err(StateError::Field {
                field: "schema_version".into(),
                message: format!(
                    "expected a non-negative integer, found {}",
                    json_type_name(other)
                ),
            });
        }
    };
    if found > u64::from(CURRENT_SCHEMA_VERSION) {
        return Err(StateError::FutureSchema {
            found,
            supported: CURRENT_SCHEMA_VERSION,
        });
    }
    #[allow(clippy::cast_possible_truncation)] // checked against CURRENT_SCHEMA_VERSION above
    let mut version = found as u32;
    if version == CURRENT_SCHEMA_VERSION {
        return Ok((object, None));
    }
    let from = version;
    let mut notes = Vec::new();
    while version < CURRENT_SCHEMA_VERSION {
        let note = match version {
            0 => v0_to_v1(&mut object)?,
            _ => return Err(no_migration(version)),
        };
        notes.push(note);
        version += 1;
    }
    Ok((
        object,
        Some(Migration {
            from,
            to: version,
            notes,
        }),
    ))
}

fn no_migration(version: u32) -> StateError {
    StateError::Field {
        field: "schema_version".into(),
        message: format!("no migration from version {version}"),
    }
}

fn v0_to_v1(object: &mut Map<String, Value>) -> Result<String, StateError> {
    let queue = match object.get("task_queue") {
        Some(Value::Array(items)) => items.clone(),
        Some(other) => {
            return Err(StateError::Field {
                field: "task_queue".into(),
                message: format!(
                    "expected a list of strings, found {}",
                    json_type_name(other)
                ),
            });
        }
        None => Vec::new(),
    };
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut ids = Vec::with_capacity(queue.len());
    for (i, item) in queue.iter().enumerate() {
        let Value::String(name) = item else {
            return Err(StateError::Field {
                field: format!("task_queue[{i}]"),
                message: format!("expected a string, found {}", json_type_name(item)),
            });
        };
        let count = seen.entry(name.clone()).or_insert(0);
        *count += 1;
        let id = if *count == 1 {
            name.clone()
        } else {
            format!("{name}#{count}")
        };
        ids.push((id, name.clone()));
    }
    let tasks: Vec<Value> = ids
        .iter()
        .map(|(id, name)| json!({"id": id, "name": name, "state": "pending"}))
        .collect();
    let task_queue: Vec<Value> = ids
        .iter()
        .map(|(id, _)| Value::String(id.clone()))
        .collect();
    let session_id = match object.get("timestamp").and_then(Value::as_f64) {
        #[allow(clippy::cast_possible_truncation)]
        Some(ts) if ts.is_finite() => format!("seed-{}", ts.trunc() as i64),
        _ => "seed".to_owned(),
    };
    let note = format!(
        "v0 -> v1: {} task(s) from task_queue became pending tasks; session_id `{session_id}`",
        tasks.len()
    );
    object.insert("task_queue".into(), Value::Array(task_queue));
    object.insert("tasks".into(), Value::Array(tasks));
    object
        .entry("session_id")
        .or_insert(Value::String(session_id));
    object.entry("generation").or_insert(json!(0));
    object.insert("schema_version".into(), json!(1));
    Ok(note)
}
