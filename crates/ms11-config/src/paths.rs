//! Relative paths written in the config file are relative to the file's directory, so a
//! configuration means the same whatever directory the runner is started from. Paths
//! from the environment, `--set` or the defaults stay relative to the working
//! directory.

use std::path::{Path, PathBuf};

use figment::Source;
use figment::value::Value;

use crate::load::LoadedConfig;

impl LoadedConfig {
    /// The merged value at `path` (dict keys and array indexes), with its tag.
    pub(crate) fn value_at(&self, path: &[String]) -> Option<Value> {
        let (first, rest) = path.split_first()?;
        let mut value = self.figment.find_value(first).ok()?;
        for segment in rest {
            value = match &value {
                Value::Dict(_, dict) => dict.get(segment).cloned(),
                Value::Array(_, items) => segment
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| items.get(i).cloned()),
                _ => None,
            }?;
        }
        Some(value)
    }

    /// Whether the value at the dotted `key` was written in the config file.
    fn written_in_file(&self, key: &str) -> bool {
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        self.value_at(&path)
            .and_then(|v| self.figment.get_metadata(v.tag()))
            .is_some_and(|m| matches!(m.source, Some(Source::File(_))))
    }

    /// Makes every relative path that came from the config file relative to the file's
    /// directory (an absolute path when the file was named by an absolute path).
    pub(crate) fn resolve_relative_paths(&mut self) {
        let Some(base) = self.file.as_deref().map(|f| match f.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }) else {
            return;
        };
        let from_file = |key: &str| self.written_in_file(key);
        let mut config = self.config.clone();
        // Plugin directories must be absolute: they resolve against the file's absolute
        // directory even when it is the working directory.
        if from_file("plugins.dirs")
            && let Ok(absolute) = std::path::absolute(&base)
        {
            for dir in config.plugins.dirs.iter_mut().filter(|d| d.is_relative()) {
                *dir = absolute.join(&*dir);
            }
        }
        if base == Path::new(".") {
            self.config = config;
            return;
        }
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if from_file("state_file") {
            fix(&mut config.state_file);
        }
        if from_file("control_socket") {
            config.control_socket.as_mut().map(fix);
        }
        if from_file("plugins.host") {
            config.plugins.host.as_mut().map(fix);
        }
        for (i, session) in config.session.iter_mut().enumerate() {
            let key = |k: &str| format!("session.{i}.{k}");
            if from_file(&key("state_file")) {
                session.state_file.as_mut().map(fix);
            }
            if from_file(&key("client_log")) {
                session.client_log.as_mut().map(fix);
            }
            if from_file(&key("crash_dump.dir")) {
                session.crash_dump.dir.as_mut().map(fix);
            }
            if from_file(&key("recovery.notify.ack_file")) {
                session.recovery.notify.ack_file.as_mut().map(fix);
            }
            for (role, process) in [("client", &mut session.client), ("bot", &mut session.bot)] {
                let Some(process) = process else { continue };
                if from_file(&key(&format!("{role}.cwd"))) {
                    process.cwd.as_mut().map(fix);
                }
                // A program named with a slash is a path: relative to the process's
                // working directory when one is set, else to the file's directory.
                if from_file(&key(&format!("{role}.command")))
                    && let Some(program) = process.command.first_mut()
                    && program.contains('/')
                    && Path::new(program.as_str()).is_relative()
                {
                    let dir = process.cwd.clone().unwrap_or_else(|| base.clone());
                    *program = dir.join(program.as_str()).display().to_string();
                }
            }
            if from_file(&key("recovery.relog_command"))
                && let Some(program) = session
                    .recovery
                    .relog_command
                    .as_mut()
                    .and_then(|c| c.first_mut())
                && program.contains('/')
                && Path::new(program.as_str()).is_relative()
            {
                *program = base.join(program.as_str()).display().to_string();
            }
        }
        self.config = config;
    }
}
