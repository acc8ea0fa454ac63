//! The window probe under a real Xvfb with real X windows (skipped without Xvfb).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crossbeam_channel::Receiver;
use ms11_detect::{IncidentIds, WindowProbeConfig, spawn_window_probe};
use ms11_state::{Incident, IncidentKind};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt, CreateWindowAux, PropMode, WindowClass};
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

struct Xvfb {
    child: Child,
    display: String,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Xvfb on a free display number (it picks one and reports it on -displayfd).
fn xvfb() -> Option<Xvfb> {
    let mut child = match Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-nolisten",
            "tcp",
            "-screen",
            "0",
            "640x480x24",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(err) => {
            ms11_test_support::skip(
                "window_x11",
                ms11_test_support::Need::Xvfb,
                &format!("Xvfb cannot be started ({err})"),
            );
            return None;
        }
    };
    let mut out = child.stdout.take().unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        buf.push(byte[0]);
    }
    let n = String::from_utf8_lossy(&buf).trim().to_owned();
    assert!(!n.is_empty(), "Xvfb reported no display number");
    Some(Xvfb {
        child,
        display: format!(":{n}"),
    })
}

fn window(conn: &RustConnection, title: &str) -> u32 {
    let root = conn.setup().roots[0].root;
    let w = conn.generate_id().unwrap();
    conn.create_window(
        0,
        w,
        root,
        0,
        0,
        100,
        100,
        0,
        WindowClass::INPUT_OUTPUT,
        0,
        &CreateWindowAux::new(),
    )
    .unwrap();
    set_title(conn, w, title);
    conn.map_window(w).unwrap();
    conn.flush().unwrap();
    w
}

fn set_title(conn: &RustConnection, w: u32, title: &str) {
    let utf8 = conn
        .intern_atom(false, b"UTF8_STRING")
        .unwrap()
        .reply()
        .unwrap()
        .atom;
    let net_wm_name = conn
        .intern_atom(false, b"_NET_WM_NAME")
        .unwrap()
        .reply()
        .unwrap()
        .atom;
    conn.change_property8(PropMode::REPLACE, w, net_wm_name, utf8, title.as_bytes())
        .unwrap();
    conn.change_property8(
        PropMode::REPLACE,
        w,
        AtomEnum::WM_NAME,
        AtomEnum::STRING,
        title.as_bytes(),
    )
    .unwrap();
    conn.flush().unwrap();
}

fn next(rx: &Receiver<Incident>) -> Incident {
    rx.recv_timeout(Duration::from_secs(5))
        .expect("window incident")
}

fn probe_config(x: &Xvfb) -> WindowProbeConfig {
    WindowProbeConfig {
        display: Some(x.display.clone()),
        rescan_interval_ms: 0,
        ..Default::default()
    }
}

#[test]
fn without_a_window_manager_events_drive_gone_dialog_and_hung_reports() {
    let Some(x) = xvfb() else { return };
    let (conn, _) = x11rb::connect(Some(&x.display)).unwrap();
    let client = window(&conn, "Star Wars Galaxies");
    let _other = window(&conn, "xterm");
    let (tx, rx) = crossbeam_channel::unbounded();
    // rescan_interval_ms = 0: only X events can make the probe notice anything.
    let probe = spawn_window_probe(&probe_config(&x), IncidentIds::new("s"), tx).unwrap();
    assert!(probe.disabled_reason().is_none());

    set_title(&conn, client, "Star Wars Galaxies (Not Responding)");
    let hung = next(&rx);
    assert_eq!(hung.kind, IncidentKind::NotResponding);

    let dialog = window(&conn, "Program Error");
    let inc = next(&rx);
    assert_eq!(inc.kind, IncidentKind::ErrorDialog);
    assert_eq!(inc.pattern.as_deref(), Some("wine_program_error"));
    conn.destroy_window(dialog).unwrap();

    let _dup = window(
        &conn,
        "Another instance of this application is already running.",
    );
    assert_eq!(next(&rx).kind, IncidentKind::DuplicateInstance);

    conn.destroy_window(client).unwrap();
    conn.flush().unwrap();
    let gone = next(&rx);
    assert_eq!(gone.kind, IncidentKind::WindowGone);
    assert!(
        gone.crash.error_message.contains("Star Wars Galaxies"),
        "{}",
        gone.crash.error_message
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "each change is reported once"
    );
    probe.stop();
}

#[test]
fn with_an_ewmh_client_list_the_list_is_used() {
    let Some(x) = xvfb() else { return };
    let (conn, _) = x11rb::connect(Some(&x.display)).unwrap();
    let root = conn.setup().roots[0].root;
    let list = conn
        .intern_atom(false, b"_NET_CLIENT_LIST")
        .unwrap()
        .reply()
        .unwrap()
        .atom;
    // A titled window that is NOT in the client list (e.g. a WM frame) must be ignored.
    let _frame = window(&conn, "Fatal Report");
    let client = window(&conn, "SwgClient (main.2026.11)");
    conn.change_property32(PropMode::REPLACE, root, list, AtomEnum::WINDOW, &[client])
        .unwrap();
    conn.flush().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let probe = spawn_window_probe(&probe_config(&x), IncidentIds::new("s"), tx).unwrap();
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "the unlisted dialog is not a client"
    );
    // The WM drops the client from its list: the client window is gone.
    conn.change_property32(PropMode::REPLACE, root, list, AtomEnum::WINDOW, &[])
        .unwrap();
    conn.flush().unwrap();
    assert_eq!(next(&rx).kind, IncidentKind::WindowGone);
    probe.stop();
}

#[test]
fn without_a_display_the_probe_is_disabled_and_says_why() {
    let (tx, _rx) = crossbeam_channel::unbounded();
    let cfg = WindowProbeConfig {
        display: Some(":4093".into()),
        ..Default::default()
    };
    let probe = spawn_window_probe(&cfg, IncidentIds::new("s"), tx).unwrap();
    let reason = probe.disabled_reason().expect("disabled");
    assert!(reason.contains(":4093"), "{reason}");
    assert!(!probe.is_running());
}
