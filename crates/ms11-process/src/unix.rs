//! The Unix system calls behind process groups, parent-death signals, leftover checks
//! (boot id and start time from `/proc`) and finding a child's descendants by their
//! environment marker (`/proc/PID/environ`, this user's processes only).

use std::os::unix::process::CommandExt;
use std::process::Command;

use ms11_state::ChildRecord;
use rustix::process::{Pid, Signal};

use crate::LeftoverAction;

/// Makes the child lead its own process group and get SIGKILL when the runner dies.
#[allow(unsafe_code)]
pub(crate) fn own_group_and_die_with_parent(command: &mut Command) {
    command.process_group(0);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only calls
        // async-signal-safe functions (prctl, getppid, raise through kill), allocating
        // nothing.
        unsafe {
            command.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
                // The runner may have died between fork and prctl: then die now.
                if rustix::process::getppid()
                    .map(Pid::as_raw_nonzero)
                    .map(|p| p.get())
                    != Some(parent as i32)
                {
                    return Err(std::io::Error::other("parent died before exec"));
                }
                Ok(())
            });
        }
    }
}

/// Sends `signal` to the process group led by `pid`, and to every process carrying the
/// marker `token` (descendants that left the group); errors (already gone) are ignored.
pub(crate) fn signal_group_and_marked(pid: u32, token: &str, signal: i32) {
    signal_group(pid, signal);
    if let Some(signal) = Signal::from_named_raw(signal) {
        let n = signal_marked(token, signal);
        if n > 0 {
            tracing::debug!(
                pid,
                signalled = n,
                "signalled descendants outside the process group"
            );
        }
    }
}

/// Sends `signal` to the process group led by `pid`; errors (already gone) are ignored.
pub(crate) fn signal_group(pid: u32, signal: i32) {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    let Some(signal) = Signal::from_named_raw(signal) else {
        return;
    };
    let _ = rustix::process::kill_process_group(pid, signal);
}

/// Whether a process with this pid runs (a zombie waiting to be reaped does not).
pub(crate) fn alive(pid: i32) -> bool {
    if Pid::from_raw(pid).is_none_or(|p| rustix::process::test_kill_process(p).is_err()) {
        return false;
    }
    // /proc/<pid>/stat: "pid (comm) S ..." with S the state; Z is a zombie.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => true,
    }
}

/// Kills what is left of a recorded child, when it is provably ours.
///
/// A record from another boot names nothing of ours. When the leader still runs, its
/// start time must be the recorded one (older records without one fall back to the
/// recorded group and program). Then its process group is killed, and so is every
/// process of this user that carries the child's environment marker (descendants that
/// left the group). When the leader is gone, only marked processes are killed: a group
/// id alone is never enough.
pub(crate) fn kill_leftover(record: &ChildRecord) -> LeftoverAction {
    let Some(pid) = Pid::from_raw(record.pid) else {
        return LeftoverAction::Gone;
    };
    if from_another_boot(record) {
        return LeftoverAction::PidReused;
    }
    if !alive(record.pid) {
        let marked = record
            .token
            .as_deref()
            .map_or(0, |token| signal_marked(token, Signal::KILL));
        return if marked > 0 {
            LeftoverAction::Killed
        } else {
            LeftoverAction::Gone
        };
    }
    let same_process = match record.start_ticks {
        Some(ticks) => start_ticks(record.pid) == Some(ticks),
        None => {
            rustix::process::getpgid(Some(pid))
                .is_ok_and(|g| g.as_raw_nonzero().get() == record.pgid)
                && runs_program(record.pid, &record.program)
        }
    };
    if !same_process {
        return LeftoverAction::PidReused;
    }
    if record.pgid == record.pid
        && let Some(group) = Pid::from_raw(record.pgid)
    {
        let _ = rustix::process::kill_process_group(group, Signal::KILL);
    } else {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
    }
    if let Some(token) = &record.token {
        signal_marked(token, Signal::KILL);
    }
    LeftoverAction::Killed
}

/// Whether the record was made before the current boot: its boot id differs, or it was
/// started (unix seconds) before the system booted.
fn from_another_boot(record: &ChildRecord) -> bool {
    if let (Some(recorded), Some(current)) = (&record.boot_id, boot_id()) {
        return *recorded != current;
    }
    boot_time_unix().is_some_and(|booted| record.started_at < booted)
}

/// The kernel's boot id (changes with every boot).
pub(crate) fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// When the system booted, in unix seconds (`btime` of `/proc/stat`).
fn boot_time_unix() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// A process's start time in clock ticks after boot: field 22 of `/proc/PID/stat`.
pub(crate) fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so count from
    // the last ')'; the field after it is field 3.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Sends `signal` to every process of this user (other than the runner itself) whose
/// environment carries `MS11_SESSION_TOKEN=<token>`; returns how many were signalled.
pub(crate) fn signal_marked(token: &str, signal: Signal) -> usize {
    let mut signalled = 0;
    for pid in marked_processes(token) {
        if let Some(p) = Pid::from_raw(pid)
            && rustix::process::kill_process(p, signal).is_ok()
        {
            signalled += 1;
        }
    }
    signalled
}

/// The pids of this user's processes whose environment carries the marker `token`.
pub(crate) fn marked_processes(token: &str) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    if token.is_empty() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = rustix::process::geteuid().as_raw();
    let own = std::process::id();
    let needle = format!("{}={token}", crate::SESSION_TOKEN_ENV);
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == own || entry.metadata().map_or(true, |m| m.uid() != me) {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes())
            && alive(pid)
        {
            found.push(pid);
        }
    }
    found
}

/// Whether /proc says `pid` runs `program` (by executable or command name).
fn runs_program(pid: i32, program: &str) -> bool {
    let name = std::path::Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.is_empty() {
        return false;
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    let cmdline0 = std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|b| {
            b.split(|c| *c == 0)
                .next()
                .map(|a| String::from_utf8_lossy(a).into_owned())
        });
    exe.as_deref() == Some(name.as_str())
        // comm is cut at 15 characters
        || comm.as_deref().map(str::trim).is_some_and(|c| !c.is_empty() && name.starts_with(c))
        || cmdline0.is_some_and(|a| a.ends_with(&name))
}
