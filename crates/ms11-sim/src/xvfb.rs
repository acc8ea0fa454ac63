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
    /// Starts Xvfb on a free display and waits until it accepts connections, or says
    /// why not. Xvfb picks the number itself (`-displayfd`), so tests and demos that
    /// start displays at the same moment never share one; `numbers` is where the
    /// search starts (its first number).
    pub fn start(numbers: std::ops::Range<u32>) -> Result<Xvfb, String> {
        use std::io::Read;
        let binary = crate::which("Xvfb").ok_or("Xvfb is not installed (Debian package `xvfb`)")?;
        let mut child = Command::new(binary)
            .args([
                "-displayfd",
                "1",
                "-nolisten",
                "tcp",
                "-screen",
                "0",
                "640x480x24",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start Xvfb: {e}"))?;
        let _ = numbers; // Xvfb searches from 0; the range is kept for callers' clarity.
        // Xvfb writes the display number to the fd once it accepts connections.
        let mut stdout = child.stdout.take().ok_or("Xvfb has no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut byte = [0u8; 1];
            while let Ok(1) = stdout.read(&mut byte) {
                if byte[0] == b'\n' {
                    break;
                }
                text.push(char::from(byte[0]));
            }
            let _ = tx.send(text);
        });
        let number = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
            Ok(_) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("Xvfb did not report a display within 10 s".into());
            }
        };
        let display = format!(":{number}");
        let socket = format!("/tmp/.X11-unix/X{number}");
        let end = Instant::now() + Duration::from_secs(10);
        while !Path::new(&socket).exists() {
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("Xvfb's socket for {display} did not appear"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Xvfb { child, display })
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
