//! The configuration reference, generated from the types' JSON schema (their doc
//! comments and defaults), so it cannot drift from the code. `docs/configuration.md`
//! is this text; a test fails when they differ (`UPDATE_DOCS=1` rewrites the file).

use std::fmt::Write as _;

use schemars::schema_for;
use serde_json::Value;

use crate::model::Config;

/// The reference as Markdown.
pub fn reference_markdown() -> String {
    let schema = serde_json::to_value(schema_for!(Config)).unwrap_or(Value::Null);
    let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
    let mut rows = Vec::new();
    walk(&schema, &defs, "", &mut rows, 0);
    let mut out = String::from(
        "# Configuration reference\n\n\
<!-- Generated from the configuration types by `ms11-config` (reference.rs); do not edit. -->\n\n\
Configuration is layered: built-in defaults (`config/default.toml`) < the config file \
(`--config FILE`, TOML, or YAML with the seed's keys) < `MS11_*` environment variables \
(nested keys joined by `__`, e.g. `MS11_SAVE_INTERVAL=60`, `MS11_CRASH_DETECTION__ENABLED=false`) \
< `--set KEY=VALUE` on the command line. `ms11-recovery config show` prints every value with \
its origin; `ms11-recovery config check` validates. Unknown keys are errors, and so are \
unknown `MS11_*` variables (other than `MS11_CONFIG`, `MS11_PLUGIN_HOST` and the project's tools' own). \
Relative paths written in the config file (`state_file`, `control_socket`, `client_log`, `cwd`, \
a `command` program with a slash, `crash_dump.dir`, `ack_file`, `plugins.dirs`) resolve against the \
config file's directory; relative paths from `MS11_*` variables or `--set` resolve against the \
working directory. Files nested deeper than 128 levels are refused before parsing.\n\n\
Keys under `session.N.` belong to each `[[session]]` table.\n\n\
| key | type | default | description |\n|---|---|---|---|\n",
    );
    for (key, ty, default, doc) in rows {
        let _ = writeln!(
            out,
            "| `{key}` | {ty} | {default} | {} |",
            doc.replace('\n', " ").replace('|', "\\|")
        );
    }
    out
}

fn resolve<'a>(schema: &'a Value, defs: &'a Value) -> &'a Value {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or_default();
        return defs.get(name).unwrap_or(schema);
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        let non_null: Vec<&Value> = any
            .iter()
            .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
            .collect();
        if let [only] = non_null.as_slice() {
            let inner = resolve(only, defs);
            if inner.get("properties").is_some() {
                return inner;
            }
        }
    }
    if let Some(first) = schema
        .get("allOf")
        .and_then(Value::as_array)
        .and_then(|all| all.first())
    {
        return resolve(first, defs);
    }
    schema
}

fn type_name(schema: &Value, defs: &Value) -> String {
    let s = resolve(schema, defs);
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    if let Some(one_of) = s.get("oneOf").and_then(Value::as_array) {
        let names: Vec<String> = one_of
            .iter()
            .filter_map(|v| {
                v.get("const")
                    .or_else(|| v.get("enum").and_then(|e| e.get(0)))
                    .and_then(Value::as_str)
            })
            .map(|v| format!("`{v}`"))
            .collect();
        if !names.is_empty() {
            return names.join(" \\| ");
        }
    }
    if let Some(any_of) = s.get("anyOf").and_then(Value::as_array) {
        let inner: Vec<String> = any_of
            .iter()
            .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
            .map(|v| type_name(v, defs))
            .collect();
        return format!("{} (optional)", inner.join(" or "));
    }
    match s.get("type") {
        Some(Value::String(t)) if t == "array" => {
            let item = s
                .get("items")
                .map(|i| type_name(i, defs))
                .unwrap_or_else(|| "value".into());
            format!("list of {item}")
        }
        Some(Value::String(t)) if t == "object" && s.get("properties").is_none() => "table".into(),
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => {
            let names: Vec<&str> = ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect();
            if ts.iter().any(|t| t == "null") {
                format!("{} (optional)", names.join(" or "))
            } else {
                names.join(" or ")
            }
        }
        _ => "value".into(),
    }
}

fn walk(
    schema: &Value,
    defs: &Value,
    prefix: &str,
    rows: &mut Vec<(String, String, String, String)>,
    depth: usize,
) {
    let s = resolve(schema, defs);
    let Some(props) = s.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, prop) in props {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let target = resolve(prop, defs);
        let doc = prop
            .get("description")
            .or_else(|| target.get("description"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let is_table = target.get("properties").is_some();
        let is_table_list = target.get("type").and_then(Value::as_str) == Some("array")
            && target
                .get("items")
                .map(|i| resolve(i, defs))
                .is_some_and(|i| i.get("properties").is_some());
        if is_table && depth < 6 {
            rows.push((key.clone(), "table".into(), String::new(), doc));
            walk(target, defs, &key, rows, depth + 1);
        } else if is_table_list && depth < 6 {
            rows.push((key.clone(), "list of tables".into(), String::new(), doc));
            if let Some(items) = target.get("items") {
                walk(items, defs, &format!("{key}.N"), rows, depth + 1);
            }
        } else {
            let default = prop
                .get("default")
                .map(|d| format!("`{d}`"))
                .unwrap_or_default();
            rows.push((key, type_name(prop, defs), default, doc));
        }
    }
}
