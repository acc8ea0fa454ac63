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
    pub fn start(numbers: std::ops::Range<u32>) -> Result<Xvfb, String> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let binary = std::env::split_paths(&path)
            .map(|d| d.join("Xvfb"))
            .find(|c| c.is_file())
            .ok_or("Xvfb is not installed (Debian package `xvfb`)")?;
        let n = numbers
            .into_iter()
            .find(|n| {
                !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                    && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
            })
            .ok_or("no free X display number")?;
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
        let mut xvfb = Xvfb {
            child,
            display: format!(":{n}"),
        };
        let socket = format!("/tmp/.X11-unix/X{n}");
        let end = Instant::now() + Duration::from_secs(10);
        while !Path::new(&socket).exists() {
            if let Ok(Some(status)) = xvfb.child.try_wait() {
                return Err(format!("Xvfb exited at once ({status})"));
            }
            if Instant::now() > end {
                return Err("Xvfb did not open its socket within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(xvfb)
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
