//! The Windows test client (`win32/swg_test_client.c`): a real Win32 program that
//! behaves like the game client under Wine (a "Star Wars Galaxies" window, a log, a
//! crash that starts winedbg, a hang, an error dialog, a refused second instance). It is
//! built with mingw and run with Wine by the tests and the demo; this module builds it,
//! prepares a Wine prefix for it, and lists the X windows that are left afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The C source, next to this crate's sources.
const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/win32/swg_test_client.c");

/// The tools the Windows tests need: `wine`, `wineserver` and mingw's C compiler.
pub const TOOLS: [&str; 3] = ["wine", "wineserver", "x86_64-w64-mingw32-gcc"];

/// Why the Windows tests cannot run here, if they cannot.
pub fn missing_tools() -> Option<String> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| crate::which(t).is_none())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} not installed (Debian packages `wine`, `wine64`, `gcc-mingw-w64-x86-64`)",
            missing.join(", ")
        )
    })
}

/// Builds `swg_test_client.exe` into `out_dir` (again only when the source is newer).
pub fn build_test_client(out_dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let exe = out_dir.join("swg_test_client.exe");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(source)) = (modified(&exe), modified(Path::new(SOURCE)))
        && built >= source
    {
        return Ok(exe);
    }
    let output = Command::new("x86_64-w64-mingw32-gcc")
        .args(["-O1", "-mwindows", "-o"])
        .arg(&exe)
        .arg(SOURCE)
        .output()
        .map_err(|e| format!("cannot run x86_64-w64-mingw32-gcc: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the Windows test client failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(exe)
}

/// A Unix path as Wine programs see it (`Z:\...`).
pub fn wine_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

/// Creates a Wine prefix (`wineboot -i`, without the Mono and Gecko installers) and
/// waits for its wineserver to end. `crash_dialog = false` sets Wine's
/// `ShowCrashDialog=0`: a crashing program then exits at once instead of showing
/// winedbg's "Program Error" dialog.
pub fn create_prefix(prefix: &Path, display: &str, crash_dialog: bool) -> Result<(), String> {
    let wine = |args: &[&str]| -> Result<(), String> {
        let status = Command::new(args[0])
            .args(&args[1..])
            .env("WINEPREFIX", prefix)
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env("DISPLAY", display)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("`{}` failed: {status}", args.join(" ")))
        }
    };
    wine(&["wineboot", "-i"])?;
    if !crash_dialog {
        wine(&[
            "wine",
            "reg",
            "add",
            r"HKCU\Software\Wine\WineDbg",
            "/v",
            "ShowCrashDialog",
            "/t",
            "REG_DWORD",
            "/d",
            "0",
            "/f",
        ])?;
    }
    wine(&["wineserver", "-w"])
}

/// Processes whose command line contains `needle` (by `/proc/*/cmdline`).
pub fn processes_named(needle: &str) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            let state = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // A zombie is gone already; only its parent has not reaped it yet.
            let zombie = state
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'));
            (line.contains(needle) && !zombie).then_some((pid, line.trim().to_owned()))
        })
        .collect()
}

/// The titles of the top-level windows on `display` (its whole window tree).
pub fn window_titles(display: &str) -> Result<Vec<String>, String> {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{AtomEnum, ConnectionExt};
    let (conn, screen) =
        x11rb::connect(Some(display)).map_err(|e| format!("cannot open {display}: {e}"))?;
    let root = conn.setup().roots[screen].root;
    let mut titles = Vec::new();
    let mut pending = vec![root];
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some(window) = pending.pop() {
        if Instant::now() > deadline {
            return Err("listing the windows took too long".into());
        }
        let Ok(tree) = conn.query_tree(window).map_err(|e| e.to_string())?.reply() else {
            continue;
        };
        pending.extend(tree.children);
        if let Ok(cookie) =
            conn.get_property(false, window, AtomEnum::WM_NAME, AtomEnum::ANY, 0, 1024)
            && let Ok(reply) = cookie.reply()
            && !reply.value.is_empty()
        {
            titles.push(String::from_utf8_lossy(&reply.value).into_owned());
        }
    }
    Ok(titles)
}
