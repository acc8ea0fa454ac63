//! Paired screenshot benchmark on Xvfb: a bare X `GetImage` of a 640x400 client window's
//! pixels and a whole screenshot (find the window by title, capture, convert, encode
//! PNG, write 0600 and fsync, prune) run alternately in one loop; the medians and their
//! ratio are printed as one JSON line (read by `cargo xtask bench`). Without Xvfb it
//! prints why and no report.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::time::Instant;

use ms11_screenshot::{Shots, capture};
use regex::Regex;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ConnectionExt, CreateWindowAux, ImageFormat, PropMode, WindowClass,
};
use x11rb::wrapper::ConnectionExt as _;

fn median(v: &mut [u128]) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let xvfb = match ms11_sim::Xvfb::start(700..800) {
        Ok(x) => x,
        Err(why) => {
            eprintln!("paired_capture: no report ({why})");
            return;
        }
    };
    let (conn, screen) = loop {
        if let Ok(c) = x11rb::connect(Some(&xvfb.display)) {
            break c;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let root = conn.setup().roots[screen].root;
    let window = conn.generate_id().unwrap();
    conn.create_window(
        x11rb::COPY_DEPTH_FROM_PARENT,
        window,
        root,
        0,
        40,
        640,
        400,
        0,
        WindowClass::INPUT_OUTPUT,
        0,
        &CreateWindowAux::new().background_pixel(0x0020_6080),
    )
    .unwrap();
    conn.change_property8(
        PropMode::REPLACE,
        window,
        AtomEnum::WM_NAME,
        AtomEnum::STRING,
        b"Star Wars Galaxies",
    )
    .unwrap();
    conn.map_window(window).unwrap();
    conn.sync().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let titles = [Regex::new("^Star Wars Galaxies$").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let shots = Shots::new(dir.path().join("screenshots"), 20);
    let rounds: usize = std::env::var("MS11_BENCH_SHOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let (mut bare, mut whole) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for round in 0..rounds + 5 {
        let t = Instant::now();
        let image = conn
            .get_image(ImageFormat::Z_PIXMAP, root, 0, 40, 640, 400, !0)
            .unwrap()
            .reply()
            .unwrap();
        let b = t.elapsed().as_nanos();
        assert!(!image.data.is_empty());
        let t = Instant::now();
        let shot = capture(Some(&xvfb.display), &titles).unwrap();
        let saved = shots.save("bench", &shot).unwrap();
        let s = t.elapsed().as_nanos();
        bytes = saved.bytes;
        if round >= 5 {
            bare.push(b);
            whole.push(s);
        }
    }
    let (b, s) = (median(&mut bare), median(&mut whole));
    #[allow(clippy::cast_precision_loss)]
    let ratio = s as f64 / b as f64;
    println!(
        "{{\"screenshot_capture\":{{\"rounds\":{rounds},\"png_bytes\":{bytes},\"bare_median_ns\":{b},\"shot_median_ns\":{s},\"ratio\":{ratio:.2}}}}}"
    );
}
