//! Real screenshots of a real X window on Xvfb (skipped with the reason when Xvfb is
//! missing, unless `MS11_REQUIRE` names `xvfb`: `ms11-test-support`).

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use ms11_screenshot::{Shots, capture};
use regex::Regex;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt, CreateWindowAux, WindowClass};
use x11rb::wrapper::ConnectionExt as _;

fn display(test: &str, numbers: std::ops::Range<u32>) -> Option<ms11_sim::Xvfb> {
    match ms11_sim::Xvfb::start(numbers) {
        Ok(x) => Some(x),
        Err(why) => {
            ms11_test_support::skip(test, ms11_test_support::Need::Xvfb, &why);
            None
        }
    }
}

/// A mapped 200x100 red window with `title`; the connection keeps it alive.
fn red_window(display: &str, title: &str) -> impl Connection {
    // Xvfb's socket appears a moment before it accepts connections.
    let mut tries = 0;
    let (conn, screen) = loop {
        match x11rb::connect(Some(display)) {
            Ok(connected) => break connected,
            Err(e) if tries < 40 => {
                let _ = e;
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("cannot connect to {display}: {e}"),
        }
    };
    let root = conn.setup().roots[screen].root;
    let window = conn.generate_id().unwrap();
    conn.create_window(
        x11rb::COPY_DEPTH_FROM_PARENT,
        window,
        root,
        10,
        20,
        200,
        100,
        0,
        WindowClass::INPUT_OUTPUT,
        0,
        &CreateWindowAux::new().background_pixel(0x00ff_0000),
    )
    .unwrap();
    conn.change_property8(
        x11rb::protocol::xproto::PropMode::REPLACE,
        window,
        x11rb::protocol::xproto::AtomEnum::WM_NAME,
        x11rb::protocol::xproto::AtomEnum::STRING,
        title.as_bytes(),
    )
    .unwrap();
    conn.map_window(window).unwrap();
    conn.sync().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    conn
}

#[test]
fn the_client_window_is_captured_by_its_title_and_the_folder_keeps_the_newest() {
    let Some(x) = display("the_client_window_is_captured_by_its_title", 600..650) else {
        return;
    };
    let _window = red_window(&x.display, "Star Wars Galaxies");
    let titles = [Regex::new("^Star Wars Galaxies$").unwrap()];
    let image = capture(Some(&x.display), &titles).unwrap();
    assert_eq!((image.width, image.height), (200, 100));
    assert_eq!(image.what, "window \"Star Wars Galaxies\"");
    let middle = ((50 * 200 + 100) * 3) as usize;
    assert_eq!(
        &image.rgb[middle..middle + 3],
        &[255, 0, 0],
        "the window's red"
    );

    let dir = tempfile::tempdir().unwrap();
    let shots = Shots::new(dir.path().join("screenshots"), 2);
    let mut saved = Vec::new();
    for n in 0..3 {
        saved.push(shots.save(&format!("main-{n}"), &image).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let png = std::fs::read(&saved[2].path).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(
        shots.list(),
        [saved[1].path.clone(), saved[2].path.clone()],
        "the oldest went"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&saved[2].path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn without_a_matching_window_the_whole_screen_is_captured() {
    let Some(x) = display(
        "without_a_matching_window_the_whole_screen_is_captured",
        650..700,
    ) else {
        return;
    };
    let titles = [Regex::new("^Star Wars Galaxies$").unwrap()];
    let image = capture(Some(&x.display), &titles).unwrap();
    assert_eq!(image.what, "the whole screen");
    assert_eq!((image.width, image.height), (640, 480), "Xvfb's screen");
}
