//! The rules a state must follow to be loaded or saved. Each broken rule names its field.

use std::collections::HashSet;
use std::fmt;

use thiserror::Error;

use crate::SessionState;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ValidationError {
    /// A text field that must say something.
    #[error("field `{field}` must not be empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// A number that must be finite (no NaN, no infinity).
    #[error("field `{field}` must be a finite number, found {value}")]
    NotFinite {
        /// The field.
        field: &'static str,
        /// The value.
        value: f64,
    },
    /// A number that must be greater than zero.
    #[error("field `{field}` must be greater than 0, found {value}")]
    NotPositive {
        /// The field.
        field: &'static str,
        /// The value.
        value: f64,
    },
    /// A number that must not be negative.
    #[error("field `{field}` must not be negative, found {value}")]
    Negative {
        /// The field.
        field: &'static str,
        /// The value.
        value: f64,
    },
    /// xp_current above xp_next_level.
    #[error("field `xp_current` ({current}) must not exceed `xp_next_level` ({next})")]
    XpAboveNextLevel {
        /// xp_current.
        current: i64,
        /// xp_next_level.
        next: i64,
    },
    /// Not 2 or 3 coordinates.
    #[error("field `coordinates` must hold 2 or 3 numbers, found {len}")]
    CoordinateCount {
        /// How many there were.
        len: usize,
    },
    /// A coordinate that is NaN or infinite.
    #[error("field `coordinates[{index}]` must be a finite number")]
    CoordinateNotFinite {
        /// Which one.
        index: usize,
    },
    /// A task without an id.
    #[error("field `tasks[{index}].id` must not be empty")]
    EmptyTaskId {
        /// Which task.
        index: usize,
    },
    /// Two tasks with one id.
    #[error("field `tasks[{index}].id`: id `{id}` is used by an earlier task too")]
    DuplicateTaskId {
        /// Which task.
        index: usize,
        /// The id.
        id: String,
    },
}

/// Every rule a state broke (at least one).
#[derive(Debug, Clone, PartialEq, Error)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl SessionState {
    /// Checks every rule; `Err` lists all that are broken.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        if self.planet.trim().is_empty() {
            errors.push(ValidationError::Empty { field: "planet" });
        }
        if self.zone.trim().is_empty() {
            errors.push(ValidationError::Empty { field: "zone" });
        }
        if !self.timestamp.is_finite() {
            errors.push(ValidationError::NotFinite {
                field: "timestamp",
                value: self.timestamp,
            });
        } else if self.timestamp <= 0.0 {
            errors.push(ValidationError::NotPositive {
                field: "timestamp",
                value: self.timestamp,
            });
        }
        for (field, value) in [
            ("session_duration", self.session_duration),
            ("last_save_time", self.last_save_time),
        ] {
            if !value.is_finite() {
                errors.push(ValidationError::NotFinite { field, value });
            } else if value < 0.0 {
                errors.push(ValidationError::Negative { field, value });
            }
        }
        #[allow(clippy::cast_precision_loss)]
        for (field, value) in [
            ("quest_step", self.quest_step),
            ("xp_level", self.xp_level),
            ("xp_current", self.xp_current),
            ("xp_next_level", self.xp_next_level),
        ] {
            if value < 0 {
                errors.push(ValidationError::Negative {
                    field,
                    value: value as f64,
                });
            }
        }
        if self.xp_current > self.xp_next_level {
            errors.push(ValidationError::XpAboveNextLevel {
                current: self.xp_current,
                next: self.xp_next_level,
            });
        }
        if !(2..=3).contains(&self.coordinates.len()) {
            errors.push(ValidationError::CoordinateCount {
                len: self.coordinates.len(),
            });
        }
        for (index, c) in self.coordinates.iter().enumerate() {
            if !c.is_finite() {
                errors.push(ValidationError::CoordinateNotFinite { index });
            }
        }
        let mut ids = HashSet::new();
        for (index, task) in self.tasks.iter().enumerate() {
            if task.id.is_empty() {
                errors.push(ValidationError::EmptyTaskId { index });
            } else if !ids.insert(task.id.as_str()) {
                errors.push(ValidationError::DuplicateTaskId {
                    index,
                    id: task.id.clone(),
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}
