//! The window probe under a real Xvfb with real X windows (skipped without Xvfb).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use ms11_detect::{IncidentIds, WindowProbeConfig, spawn_window_probe};
use ms11_state::{Incident, IncidentKind};
use x11rb::connection::Connection;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    AtomEnum, ChangeGCAux, ConnectionExt, CreateGCAux, CreateWindowAux, EventMask, PropMode,
    Rectangle, WindowClass,
};
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

/// Starts Xvfb on a free display (the shared helper), or skips saying why.
fn xvfb() -> Option<ms11_sim::Xvfb> {
    match ms11_sim::Xvfb::start(0..1) {
        Ok(x) => Some(x),
        Err(why) => {
            ms11_test_support::skip("window_x11", ms11_test_support::Need::Xvfb, &why);
            None
        }
    }
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

fn probe_config(x: &ms11_sim::Xvfb) -> WindowProbeConfig {
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

fn intern(conn: &RustConnection, name: &[u8]) -> u32 {
    conn.intern_atom(false, name).unwrap().reply().unwrap().atom
}

/// A client window on a thread of its own, as a toolkit would run it: it answers
/// `_NET_WM_PING` while `answering`, and repaints itself every 50 ms while `painting`.
struct TestClient {
    answering: Arc<AtomicBool>,
    painting: Arc<AtomicBool>,
    pings: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestClient {
    fn start(display: &str, supports_ping: bool) -> TestClient {
        let answering = Arc::new(AtomicBool::new(true));
        let painting = Arc::new(AtomicBool::new(true));
        let pings = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (conn, _) = x11rb::connect(Some(display)).unwrap();
        let root = conn.setup().roots[0].root;
        let w = window(&conn, "Star Wars Galaxies");
        let wm_protocols = intern(&conn, b"WM_PROTOCOLS");
        let net_wm_ping = intern(&conn, b"_NET_WM_PING");
        if supports_ping {
            conn.change_property32(
                PropMode::REPLACE,
                w,
                wm_protocols,
                AtomEnum::ATOM,
                &[net_wm_ping],
            )
            .unwrap();
        }
        let gc = conn.generate_id().unwrap();
        conn.create_gc(gc, w, &CreateGCAux::new()).unwrap();
        conn.flush().unwrap();
        let thread = {
            let (answering, painting, pings, stop) = (
                Arc::clone(&answering),
                Arc::clone(&painting),
                Arc::clone(&pings),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let mut frame = 0u32;
                let mut last_paint = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    while let Some(event) = conn.poll_for_event().unwrap() {
                        let Event::ClientMessage(mut ping) = event else {
                            continue;
                        };
                        if ping.type_ != wm_protocols || ping.data.as_data32()[0] != net_wm_ping {
                            continue;
                        }
                        pings.fetch_add(1, Ordering::SeqCst);
                        if answering.load(Ordering::SeqCst) {
                            // The answer a toolkit gives: the same message, to the root.
                            ping.window = root;
                            conn.send_event(
                                false,
                                root,
                                EventMask::SUBSTRUCTURE_NOTIFY | EventMask::SUBSTRUCTURE_REDIRECT,
                                ping,
                            )
                            .unwrap();
                            conn.flush().unwrap();
                        }
                    }
                    if painting.load(Ordering::SeqCst)
                        && last_paint.elapsed() >= Duration::from_millis(50)
                    {
                        frame += 1;
                        conn.change_gc(gc, &ChangeGCAux::new().foreground(frame * 0x0001_0307))
                            .unwrap();
                        let r = Rectangle {
                            x: 0,
                            y: 0,
                            width: 100,
                            height: 100,
                        };
                        conn.poly_fill_rectangle(w, gc, &[r]).unwrap();
                        conn.flush().unwrap();
                        last_paint = Instant::now();
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        TestClient {
            answering,
            painting,
            pings,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn hang_config(x: &ms11_sim::Xvfb) -> WindowProbeConfig {
    WindowProbeConfig {
        ping_interval_ms: 200,
        ping_timeout_ms: 600,
        frame_interval_ms: 100,
        frozen_after_ms: 500,
        ..probe_config(x)
    }
}

/// Waits for the next incident and says how long it took.
fn next_hang(rx: &Receiver<Incident>, since: Instant) -> (Incident, Duration) {
    let incident = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a not_responding incident");
    (incident, since.elapsed())
}

#[test]
fn a_window_that_stops_answering_pings_is_not_responding_once_until_it_answers_again() {
    let Some(x) = xvfb() else { return };
    let client = TestClient::start(&x.display, true);
    // It does not repaint: a window that answers pings is not judged by its image.
    client.painting.store(false, Ordering::SeqCst);
    let (tx, rx) = crossbeam_channel::unbounded();
    let probe = spawn_window_probe(&hang_config(&x), IncidentIds::new("s"), tx).unwrap();
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "a window that answers is alive, however still its image"
    );
    assert!(
        client.pings.load(Ordering::SeqCst) >= 4,
        "pinged every 200 ms: {}",
        client.pings.load(Ordering::SeqCst)
    );

    for round in 1..=2 {
        let hung = Instant::now();
        client.answering.store(false, Ordering::SeqCst);
        let (incident, took) = next_hang(&rx, hung);
        eprintln!(
            "round {round}: ping hang detected after {took:?} (timeout 600 ms, interval 200 ms)"
        );
        assert_eq!(incident.kind, IncidentKind::NotResponding);
        assert_eq!(incident.pattern.as_deref(), Some("ping"));
        assert!(
            incident.crash.error_message.contains("_NET_WM_PING"),
            "{}",
            incident.crash.error_message
        );
        assert_eq!(incident.matched_text.as_deref(), Some("Star Wars Galaxies"));
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert!(
            rx.recv_timeout(Duration::from_millis(1500)).is_err(),
            "one hang, one report"
        );
        // It answers again: re-armed, and nothing to report.
        client.answering.store(true, Ordering::SeqCst);
        assert!(rx.recv_timeout(Duration::from_millis(1000)).is_err());
    }
    probe.stop();
}

#[test]
fn a_window_that_stops_repainting_is_frozen_once_until_it_changes_again() {
    let Some(x) = xvfb() else { return };
    // No _NET_WM_PING: the frames check watches it.
    let client = TestClient::start(&x.display, false);
    let (tx, rx) = crossbeam_channel::unbounded();
    let probe = spawn_window_probe(&hang_config(&x), IncidentIds::new("s"), tx).unwrap();
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "a window that repaints is alive"
    );
    assert_eq!(client.pings.load(Ordering::SeqCst), 0, "not pinged");

    for round in 1..=2 {
        let frozen = Instant::now();
        client.painting.store(false, Ordering::SeqCst);
        let (incident, took) = next_hang(&rx, frozen);
        eprintln!(
            "round {round}: frozen image detected after {took:?} (frozen after 500 ms, sampled every 100 ms)"
        );
        assert_eq!(incident.kind, IncidentKind::NotResponding);
        assert_eq!(incident.pattern.as_deref(), Some("frozen"));
        assert!(
            incident.crash.error_message.contains("frozen"),
            "{}",
            incident.crash.error_message
        );
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert!(
            rx.recv_timeout(Duration::from_millis(1500)).is_err(),
            "one hang, one report"
        );
        client.painting.store(true, Ordering::SeqCst);
        assert!(rx.recv_timeout(Duration::from_millis(1000)).is_err());
    }
    probe.stop();
}
