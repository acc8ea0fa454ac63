//! Fault injection by files: a command is a file dropped into a control directory
//! (written under a temporary name, then renamed), taken and deleted by the process.

use std::path::Path;

/// Drops `command` into `dir` atomically.
pub fn send_command(dir: &Path, command: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{command}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, command)?;
    std::fs::rename(&tmp, dir.join(command))
}

/// Takes the commands waiting in `dir` (oldest first), deleting them.
pub fn poll_commands(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, String)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                return None;
            }
            let modified = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((modified, name))
        })
        .collect();
    found.sort();
    found
        .into_iter()
        .filter(|(_, name)| std::fs::remove_file(dir.join(name)).is_ok())
        .map(|(_, name)| name)
        .collect()
}
