//! Moments written by a simulated process itself (`sim-client --timestamps FILE`), for
//! measurements that must not depend on when someone else noticed: `start <unix_ns>` is
//! the first thing its `main` does, `exit <unix_ns>` the last thing before it exits on
//! command. One line per moment, appended with a single write.

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock now, nanoseconds since the Unix epoch (0 before 1970).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Appends `<what> <unix_ns>` to `path` (created if missing).
pub fn append(path: &Path, what: &str, unix_ns: u64) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // One write: lines of processes appending at the same time do not interleave.
    file.write_all(format!("{what} {unix_ns}\n").as_bytes())
}

/// The moments in `path`, in file order; lines that are not `<word> <integer>` are
/// skipped (a process killed in the middle of its write).
pub fn read(path: &Path) -> std::io::Result<Vec<(String, u64)>> {
    Ok(parse(&std::fs::read_to_string(path)?))
}

/// The moments in `text`, in order.
pub fn parse(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let (what, ns) = line.split_once(' ')?;
            Some((what.to_owned(), ns.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn appended_moments_read_back_in_order_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ts");
        append(&path, "start", 10).unwrap();
        append(&path, "exit", 25).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"exi\n")
            .unwrap();
        append(&path, "start", 40).unwrap();
        assert_eq!(
            read(&path).unwrap(),
            vec![
                ("start".to_owned(), 10),
                ("exit".to_owned(), 25),
                ("start".to_owned(), 40),
            ]
        );
        assert_eq!(parse("start\nexit x\n"), Vec::new());
        assert!(unix_ns() > 1_600_000_000_000_000_000);
    }
}
