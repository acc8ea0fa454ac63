//! `config show`: every value of the merged configuration with where it came from.

use std::fmt::Write as _;

use serde_json::Value;

use crate::load::{LoadedConfig, location_of};

impl LoadedConfig {
    /// One line per value: `key = value    # origin`, in key order.
    pub fn show(&self) -> String {
        let value = serde_json::to_value(&self.config).unwrap_or(Value::Null);
        let mut leaves = Vec::new();
        flatten(&value, &mut Vec::new(), &mut leaves);
        let width = leaves
            .iter()
            .map(|(k, v)| k.len() + v.len() + 3)
            .max()
            .unwrap_or(0)
            .min(72);
        let mut out = String::new();
        for (key, text) in leaves {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            let origin = self.origin_of(&path);
            let line = format!("{key} = {text}");
            let _ = writeln!(out, "{line:<width$}  # {origin}");
        }
        out
    }

    /// Where the value at `path` came from.
    pub fn origin_of(&self, path: &[String]) -> String {
        // The most specific key with metadata wins (arrays come from one layer whole).
        for len in (1..=path.len()).rev() {
            let key = path[..len].join(".");
            if let Some(meta) = self.figment.find_metadata(&key) {
                let origin = location_of(Some(meta), path, self.file_text.as_deref());
                if !origin.is_empty() {
                    return origin;
                }
            }
        }
        "defaults".into()
    }

    /// The config file, if one was given.
    pub fn file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }
}

fn flatten(value: &Value, path: &mut Vec<String>, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                path.push(k.clone());
                flatten(v, path, out);
                path.pop();
            }
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            for (i, v) in items.iter().enumerate() {
                path.push(i.to_string());
                flatten(v, path, out);
                path.pop();
            }
        }
        leaf => {
            let text = match leaf {
                Value::Null => "(unset)".to_owned(),
                other => other.to_string(),
            };
            out.push((path.join("."), text));
        }
    }
}
