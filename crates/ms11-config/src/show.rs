//! `config show`: every value of the merged configuration with where it came from.
//! Values of keys named like secrets ([`ms11_redact::is_secret_key`]) are shown as
//! `[redacted]` unless asked for, and secrets inside other values (a password in a
//! command line, a token in a URL) are redacted as in the logs.

use std::fmt::Write as _;

use serde_json::Value;

use crate::load::{LoadedConfig, location_of};

impl LoadedConfig {
    /// One line per value: `key = value    # origin`, in key order, secrets redacted.
    pub fn show(&self) -> String {
        self.show_with(false)
    }

    /// [`LoadedConfig::show`], with the secrets as they are when `show_secrets`.
    pub fn show_with(&self, show_secrets: bool) -> String {
        let mut value = serde_json::to_value(&self.config).unwrap_or(Value::Null);
        if !show_secrets {
            redact_secret_values(&mut value, &mut Vec::new());
        }
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

    /// Where the value at `path` came from: the layer that holds that very value
    /// (`file:line`, `environment variable MS11_X`, `--set`), or `defaults` when no
    /// layer holds it (the embedded defaults or the types' own defaults). A layer that
    /// only holds a parent of the value (a `[[session]]` table without `ready`, say)
    /// is not where the value came from.
    pub fn origin_of(&self, path: &[String]) -> String {
        let Some(value) = self.value_at(path) else {
            return "defaults".into();
        };
        let origin = location_of(
            self.figment.get_metadata(value.tag()),
            path,
            self.file_text.as_deref(),
        );
        if origin.is_empty() {
            "defaults".into()
        } else {
            origin
        }
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

/// Replaces, in a configuration as JSON, the value of every key named like a secret
/// with `"[redacted]"` (unset values stay `null`), and secrets inside other text values.
/// `path` is the key path of `value` (empty at the top).
pub fn redact_secret_values(value: &mut Value, path: &mut Vec<String>) {
    let secret = ms11_redact::is_secret_key(&path.join("."));
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                path.push(k.clone());
                redact_secret_values(v, path);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                redact_secret_values(v, path);
                path.pop();
            }
        }
        Value::Null => {}
        _ if secret => *value = Value::String(ms11_redact::REDACTED.into()),
        Value::String(text) => {
            if let std::borrow::Cow::Owned(clean) = ms11_redact::redact(text) {
                *text = clean;
            }
        }
        _ => {}
    }
}
