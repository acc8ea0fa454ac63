//! The Unix system calls behind process groups, parent-death signals and leftover
//! checks.

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

pub(crate) fn kill_leftover(record: &ChildRecord) -> LeftoverAction {
    let Some(pid) = Pid::from_raw(record.pid) else {
        return LeftoverAction::Gone;
    };
    if !alive(record.pid) {
        // The leader is gone; members of its group may remain.
        if let Some(group) = Pid::from_raw(record.pgid)
            && rustix::process::kill_process_group(group, Signal::KILL).is_ok()
        {
            return LeftoverAction::Killed;
        }
        return LeftoverAction::Gone;
    }
    let same_group =
        rustix::process::getpgid(Some(pid)).is_ok_and(|g| g.as_raw_nonzero().get() == record.pgid);
    if !same_group || !runs_program(record.pid, &record.program) {
        return LeftoverAction::PidReused;
    }
    if let Some(group) = Pid::from_raw(record.pgid) {
        let _ = rustix::process::kill_process_group(group, Signal::KILL);
    }
    LeftoverAction::Killed
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
