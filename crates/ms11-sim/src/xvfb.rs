//! A virtual X display (Xvfb) for the demo and the window tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Xvfb, stopped on drop.
pub struct Xvfb {
    child: Child,
    /// The display name (`:N`).
    pub display: String,
}

impl Xvfb {
    /// Starts Xvfb on the first free display number in `numbers`, or says why not.
    ///
    /// Two callers (tests running in parallel, in one process or several) may pick the
    /// same free-looking number; the X server's lock file decides which one got it. A
    /// display counts as ours only when `/tmp/.X<n>-lock` names our Xvfb's pid; the
    /// loser is stopped and the next number tried.
    pub fn start(numbers: std::ops::Range<u32>) -> Result<Xvfb, String> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let binary = std::env::split_paths(&path)
            .map(|d| d.join("Xvfb"))
            .find(|c| c.is_file())
            .ok_or("Xvfb is not installed (Debian package `xvfb`)")?;
        let mut last_error = String::from("no free X display number");
        let mut tries = 0;
        for n in numbers {
            if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                || Path::new(&format!("/tmp/.X{n}-lock")).exists()
            {
                continue;
            }
            tries += 1;
            if tries > 5 {
                break;
            }
            match Self::start_on(&binary, n) {
                Ok(xvfb) => return Ok(xvfb),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Starts Xvfb on display `n`; an error if it is not ours.
    fn start_on(binary: &Path, n: u32) -> Result<Xvfb, String> {
        let child = Command::new(binary)
            .args([
                format!(":{n}"),
                "-nolisten".into(),
                "tcp".into(),
                "-screen".into(),
                "0".into(),
                "640x480x24".into(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start Xvfb: {e}"))?;
        // Dropping it on an error path stops our Xvfb.
        let mut xvfb = Xvfb {
            child,
            display: format!(":{n}"),
        };
        let socket = format!("/tmp/.X11-unix/X{n}");
        let lock = format!("/tmp/.X{n}-lock");
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = xvfb.child.try_wait() {
                return Err(format!("Xvfb on :{n} exited at once ({status})"));
            }
            // The server writes its pid into the lock file before it opens the socket.
            if Path::new(&socket).exists() {
                let owner = std::fs::read_to_string(&lock)
                    .ok()
                    .and_then(|pid| pid.trim().parse::<u32>().ok());
                if owner == Some(xvfb.child.id()) {
                    return Ok(xvfb);
                }
                if owner.is_some() {
                    return Err(format!("display :{n} was taken by another Xvfb"));
                }
            }
            if Instant::now() > end {
                return Err("Xvfb did not open its socket within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
