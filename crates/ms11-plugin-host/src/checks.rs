//! What is checked before a library is ever opened (opening runs its code): a regular
//! file, not a symlink, owned by this user or root, neither it nor its directory
//! writable by group or others, and, with an allow-list, a known sha256.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Plugin libraries in `dirs` (not recursive): `lib*.so` on Linux.
pub fn discover(dirs: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let (prefix, suffix) = (std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for dir in dirs {
        if !dir.is_absolute() {
            problems.push((
                dir.clone(),
                "plugin directories must be absolute paths".into(),
            ));
            continue;
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                problems.push((dir.clone(), format!("cannot list: {e}")));
                continue;
            }
        };
        let mut names: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
            })
            .collect();
        names.sort();
        found.extend(names);
    }
    (found, problems)
}

/// The sha256 of a file, hex.
pub fn sha256_hex(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Every check that must pass before `dlopen`. Returns the file's sha256.
pub fn check_before_loading(
    path: &Path,
    allow: &BTreeMap<String, String>,
) -> Result<String, String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    if meta.file_type().is_symlink() {
        return Err(
            "is a symbolic link; plugins must be regular files in the plugin directory".into(),
        );
    }
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = rustix::process::getuid().as_raw();
        let check = |what: &str, m: &std::fs::Metadata| -> Result<(), String> {
            if m.uid() != me && m.uid() != 0 {
                return Err(format!(
                    "{what} is owned by uid {}, not by this user or root",
                    m.uid()
                ));
            }
            if m.mode() & 0o022 != 0 {
                return Err(format!(
                    "{what} is writable by group or others (mode {:o})",
                    m.mode() & 0o777
                ));
            }
            Ok(())
        };
        check("the file", &meta)?;
        let dir = path.parent().ok_or("has no directory")?;
        let dir_meta =
            std::fs::metadata(dir).map_err(|e| format!("cannot stat its directory: {e}"))?;
        check("its directory", &dir_meta)?;
    }
    let hash = sha256_hex(path)?;
    if !allow.is_empty() && !allow.values().any(|h| h.eq_ignore_ascii_case(&hash)) {
        return Err(format!(
            "sha256 {hash} is not in the allow-list (plugins.allow)"
        ));
    }
    Ok(hash)
}
