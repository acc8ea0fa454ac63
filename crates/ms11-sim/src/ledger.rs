//! The bot's effect ledger: one line per task whose effect happened. A task id found
//! twice is a task that ran twice.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

/// What a ledger says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct LedgerCheck {
    /// Effects recorded.
    pub effects: usize,
    /// Distinct task ids.
    pub unique: usize,
    /// Ids recorded more than once.
    pub duplicates: Vec<String>,
    /// Ids in order of their first effect.
    pub ids: Vec<String>,
}

/// Reads and checks a ledger (a missing file is an empty ledger).
pub fn check_ledger(path: &Path) -> std::io::Result<LedgerCheck> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ids = Vec::new();
    let mut effects = 0;
    for id in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        effects += 1;
        let n = counts.entry(id).or_insert(0);
        if *n == 0 {
            ids.push(id.to_owned());
        }
        *n += 1;
    }
    Ok(LedgerCheck {
        effects,
        unique: counts.len(),
        duplicates: counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| (*id).to_owned())
            .collect(),
        ids,
    })
}

/// Appends an effect durably (fsync).
pub fn record_effect(path: &Path, id: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(file, "{id}")?;
    file.sync_all()
}
