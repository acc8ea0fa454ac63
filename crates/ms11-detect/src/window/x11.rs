//! The X11 side of the window probe (x11rb), event-driven.
//!
//! Hang checks: a main window whose `WM_PROTOCOLS` lists `_NET_WM_PING` gets the ping a
//! window manager sends (a `WM_PROTOCOLS` ClientMessage to the window's owner); the
//! client answers by sending it back to the root window, where the probe receives it
//! because it selects SubstructureNotify there. Other main windows are watched through
//! their image (`GetImage`, hashed). The probe's `poll(2)` gets a timeout only while a
//! main window is watched.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use ms11_state::Incident;
use x11rb::connection::Connection;
use x11rb::errors::ReplyError;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    AtomEnum, ChangeWindowAttributesAux, ClientMessageEvent, ConnectionExt as _, EventMask,
    ImageFormat, MapState, Window,
};
use x11rb::rust_connection::RustConnection;

use super::hang::{self, HangAction, HangSettings, HangTracker};
use super::{WindowProbeConfig, WindowTracker, observe};
use crate::error::DetectError;
use crate::handle::DetectorHandle;
use crate::ids::IncidentIds;

struct Atoms {
    net_client_list: u32,
    net_wm_name: u32,
    utf8_string: u32,
    wm_protocols: u32,
    net_wm_ping: u32,
    net_wm_pid: u32,
}

/// What a drain of the event queue found.
#[derive(Debug, Default)]
struct Drained {
    /// An event that may change the snapshot.
    relevant: bool,
    /// The windows that answered a ping.
    answers: Vec<Window>,
}

/// One X connection and what the probe has subscribed to.
pub(super) struct XProbe {
    conn: RustConnection,
    root: Window,
    atoms: Atoms,
    subscribed: HashSet<Window>,
    screen_size: (u16, u16),
    /// The timestamp field of the next ping (echoed by the client).
    ping_serial: u32,
}

fn atom(conn: &RustConnection, name: &[u8]) -> Result<u32, String> {
    conn.intern_atom(false, name)
        .map_err(|e| e.to_string())?
        .reply()
        .map(|r| r.atom)
        .map_err(|e| e.to_string())
}

impl XProbe {
    /// Connects and subscribes to the root window's structure and property events.
    pub(super) fn connect(display: Option<&str>) -> Result<Self, String> {
        let (conn, screen) = x11rb::connect(display).map_err(|e| e.to_string())?;
        let (root, screen_size) = conn
            .setup()
            .roots
            .get(screen)
            .map(|s| (s.root, (s.width_in_pixels, s.height_in_pixels)))
            .ok_or_else(|| format!("X server has no screen {screen}"))?;
        let atoms = Atoms {
            net_client_list: atom(&conn, b"_NET_CLIENT_LIST")?,
            net_wm_name: atom(&conn, b"_NET_WM_NAME")?,
            utf8_string: atom(&conn, b"UTF8_STRING")?,
            wm_protocols: atom(&conn, b"WM_PROTOCOLS")?,
            net_wm_ping: atom(&conn, b"_NET_WM_PING")?,
            net_wm_pid: atom(&conn, b"_NET_WM_PID")?,
        };
        conn.change_window_attributes(
            root,
            &ChangeWindowAttributesAux::new()
                .event_mask(EventMask::SUBSTRUCTURE_NOTIFY | EventMask::PROPERTY_CHANGE),
        )
        .map_err(|e| e.to_string())?
        .check()
        .map_err(|e| e.to_string())?;
        Ok(XProbe {
            conn,
            root,
            atoms,
            subscribed: HashSet::new(),
            screen_size,
            ping_serial: 0,
        })
    }

    /// Whether a window's `WM_PROTOCOLS` lists `_NET_WM_PING`.
    fn supports_ping(&self, w: Window) -> bool {
        self.conn
            .get_property(false, w, self.atoms.wm_protocols, AtomEnum::ATOM, 0, 64)
            .ok()
            .and_then(|c| c.reply().ok())
            .and_then(|r| {
                r.value32()
                    .map(|mut atoms| atoms.any(|a| a == self.atoms.net_wm_ping))
            })
            .unwrap_or(false)
    }

    /// Sends `_NET_WM_PING` to a window as a window manager does: a `WM_PROTOCOLS`
    /// ClientMessage with an empty event mask, which goes to the window's owner.
    fn ping(&mut self, w: Window) -> Result<(), String> {
        self.ping_serial = self.ping_serial.wrapping_add(1).max(1);
        let event = ClientMessageEvent::new(
            32,
            w,
            self.atoms.wm_protocols,
            [self.atoms.net_wm_ping, self.ping_serial, w, 0, 0],
        );
        self.conn
            .send_event(false, w, EventMask::NO_EVENT, event)
            .map_err(|e| e.to_string())?
            // The window may be gone by now; its error is harmless.
            .ignore_error();
        Ok(())
    }

    /// A hash of the window's image (the part of it on the screen), or `None` if it
    /// cannot be taken (not viewable, off the screen, gone). The image is not kept.
    fn image_hash(&self, w: Window) -> Option<u64> {
        let geometry = self.conn.get_geometry(w).ok()?.reply().ok()?;
        let origin = self
            .conn
            .translate_coordinates(w, self.root, 0, 0)
            .ok()?
            .reply()
            .ok()?;
        // GetImage of a window fails unless the rectangle is on the screen: clip it.
        let (screen_w, screen_h) = (i32::from(self.screen_size.0), i32::from(self.screen_size.1));
        let (ox, oy) = (i32::from(origin.dst_x), i32::from(origin.dst_y));
        let x0 = (-ox).max(0);
        let y0 = (-oy).max(0);
        let x1 = i32::from(geometry.width).min(screen_w - ox);
        let y1 = i32::from(geometry.height).min(screen_h - oy);
        if x1 <= x0 || y1 <= y0 {
            return None;
        }
        let image = self
            .conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                w,
                i16::try_from(x0).ok()?,
                i16::try_from(y0).ok()?,
                u16::try_from(x1 - x0).ok()?,
                u16::try_from(y1 - y0).ok()?,
                u32::MAX,
            )
            .ok()?
            .reply()
            .ok()?;
        let mut hasher = DefaultHasher::new();
        (x0, y0, x1, y1).hash(&mut hasher);
        image.data.hash(&mut hasher);
        Some(hasher.finish())
    }

    fn subscribe(&mut self, w: Window) {
        if self.subscribed.insert(w)
            && let Ok(cookie) = self.conn.change_window_attributes(
                w,
                &ChangeWindowAttributesAux::new().event_mask(EventMask::PROPERTY_CHANGE),
            )
        {
            // The window may already be gone; its error is harmless.
            cookie.ignore_error();
        }
    }

    fn title(&self, w: Window) -> Option<String> {
        let utf8 = self
            .conn
            .get_property(
                false,
                w,
                self.atoms.net_wm_name,
                self.atoms.utf8_string,
                0,
                1024,
            )
            .ok()?
            .reply()
            .ok()
            .filter(|r| !r.value.is_empty());
        if let Some(r) = utf8 {
            return Some(String::from_utf8_lossy(&r.value).into_owned());
        }
        let r = self
            .conn
            .get_property(false, w, AtomEnum::WM_NAME, AtomEnum::ANY, 0, 1024)
            .ok()?
            .reply()
            .ok()?;
        if r.value.is_empty() {
            return None;
        }
        if r.type_ == u32::from(AtomEnum::STRING) {
            // STRING is Latin-1.
            Some(r.value.iter().map(|&b| char::from(b)).collect())
        } else {
            Some(String::from_utf8_lossy(&r.value).into_owned())
        }
    }

    /// The program (`WM_CLASS` instance) and pid (`_NET_WM_PID`) showing a window.
    pub(super) fn owner(&self, w: Window) -> Option<String> {
        let program = self
            .conn
            .get_property(false, w, AtomEnum::WM_CLASS, AtomEnum::STRING, 0, 256)
            .ok()?
            .reply()
            .ok()
            .and_then(|r| {
                let instance = r.value.split(|&b| b == 0).next()?.to_vec();
                (!instance.is_empty()).then(|| String::from_utf8_lossy(&instance).into_owned())
            });
        let pid = self
            .conn
            .get_property(false, w, self.atoms.net_wm_pid, AtomEnum::CARDINAL, 0, 1)
            .ok()?
            .reply()
            .ok()
            .and_then(|r| r.value32()?.next());
        match (program, pid) {
            (Some(program), Some(pid)) => Some(format!("{program}, pid {pid}")),
            (Some(program), None) => Some(program),
            (None, Some(pid)) => Some(format!("pid {pid}")),
            (None, None) => None,
        }
    }

    fn viewable(&self, w: Window) -> bool {
        self.conn
            .get_window_attributes(w)
            .ok()
            .and_then(|c| c.reply().ok())
            .is_some_and(|a| a.map_state == MapState::VIEWABLE)
    }

    fn children(&self, w: Window) -> Result<Vec<Window>, ReplyError> {
        Ok(self.conn.query_tree(w)?.reply()?.children)
    }

    /// The EWMH client list, if a window manager publishes one.
    fn client_list(&self) -> Option<Vec<Window>> {
        let r = self
            .conn
            .get_property(
                false,
                self.root,
                self.atoms.net_client_list,
                AtomEnum::WINDOW,
                0,
                1 << 16,
            )
            .ok()?
            .reply()
            .ok()?;
        if r.type_ != u32::from(AtomEnum::WINDOW) {
            return None;
        }
        Some(r.value32()?.collect())
    }

    /// The titled top-level windows: the EWMH client list, else the root's viewable
    /// children (and their children, for reparenting window managers without EWMH).
    pub(super) fn snapshot(&mut self) -> Result<Vec<(u64, String)>, ReplyError> {
        let mut out = Vec::new();
        let root_children = self.children(self.root)?;
        for &w in &root_children {
            self.subscribe(w);
        }
        if let Some(clients) = self.client_list() {
            for w in clients {
                self.subscribe(w);
                if let Some(t) = self.title(w) {
                    out.push((u64::from(w), t));
                }
            }
        } else {
            for w in root_children {
                if !self.viewable(w) {
                    continue;
                }
                if let Some(t) = self.title(w) {
                    out.push((u64::from(w), t));
                    continue;
                }
                for c in self.children(w).unwrap_or_default() {
                    self.subscribe(c);
                    if let Some(t) = self.title(c) {
                        out.push((u64::from(c), t));
                    }
                }
            }
        }
        self.conn.flush().map_err(ReplyError::from)?;
        // Forget subscriptions of windows that are gone (ids are reused).
        let live: HashSet<Window> = out.iter().map(|(w, _)| *w as Window).collect();
        let root_now: HashSet<Window> = self.children(self.root)?.into_iter().collect();
        self.subscribed
            .retain(|w| live.contains(w) || root_now.contains(w));
        Ok(out)
    }

    /// Drains queued events: whether any may change the snapshot, and the ping answers.
    fn drain_events(&mut self) -> Result<Drained, String> {
        let mut drained = Drained::default();
        while let Some(ev) = self.conn.poll_for_event().map_err(|e| e.to_string())? {
            match ev {
                Event::CreateNotify(e) => {
                    self.subscribe(e.window);
                    drained.relevant = true;
                }
                Event::DestroyNotify(_)
                | Event::MapNotify(_)
                | Event::UnmapNotify(_)
                | Event::ReparentNotify(_) => drained.relevant = true,
                Event::PropertyNotify(e)
                    if e.atom == u32::from(AtomEnum::WM_NAME)
                        || e.atom == self.atoms.net_wm_name
                        || e.atom == self.atoms.net_client_list
                        || e.atom == self.atoms.wm_protocols =>
                {
                    drained.relevant = true;
                }
                // A ping's answer: the client sends our ping back to the root window
                // (data: _NET_WM_PING, timestamp, the client's window).
                Event::ClientMessage(e)
                    if e.format == 32
                        && e.type_ == self.atoms.wm_protocols
                        && e.data.as_data32()[0] == self.atoms.net_wm_ping =>
                {
                    drained.answers.push(e.data.as_data32()[2]);
                }
                _ => {}
            }
        }
        self.conn.flush().map_err(|e| e.to_string())?;
        Ok(drained)
    }
}

/// The probe's state on its thread: the X connection and the two trackers.
struct Probe {
    x: XProbe,
    tracker: WindowTracker,
    hang: HangTracker,
    ids: IncidentIds,
    tx: Sender<Incident>,
}

impl Probe {
    /// Takes a snapshot, reports what changed and hands the main windows to the hang
    /// checks.
    fn scan(&mut self) -> Result<(), ReplyError> {
        let windows = self.x.snapshot()?;
        let x = &self.x;
        observe(&mut self.tracker, &windows, &self.ids, &self.tx, &|id| {
            x.owner(id as Window)
        });
        if !self.hang.settings().any() {
            return Ok(());
        }
        let pings = self.hang.settings().pings();
        let mains: Vec<(u64, String, bool)> = self
            .tracker
            .main_windows()
            .map(|(id, title)| {
                let supports_ping = pings && self.x.supports_ping(id as Window);
                (id, title.to_owned(), supports_ping)
            })
            .collect();
        self.hang.set_windows(&mains, Instant::now());
        Ok(())
    }

    /// Whether hang checks are due.
    fn hang_due(&self, now: Instant) -> bool {
        self.hang.deadline().is_some_and(|d| d <= now)
    }

    /// Sends the pings and takes the images that are due, and reports hangs.
    fn run_hang_checks(&mut self) -> Result<(), String> {
        let now = Instant::now();
        for action in self.hang.due(now) {
            match action {
                HangAction::Ping(w) => self.x.ping(w as Window)?,
                HangAction::Sample(w) => {
                    let hash = self.x.image_hash(w as Window);
                    if let Some(event) = self.hang.sampled(w, hash, Instant::now()) {
                        hang::report(&event, &self.ids, &self.tx);
                    }
                }
            }
        }
        self.x.conn.flush().map_err(|e| e.to_string())?;
        for event in self.hang.check(now) {
            hang::report(&event, &self.ids, &self.tx);
        }
        Ok(())
    }
}

pub(super) fn spawn(
    config: &WindowProbeConfig,
    tracker: WindowTracker,
    ids: IncidentIds,
    tx: Sender<Incident>,
) -> Result<DetectorHandle, DetectError> {
    let display = config
        .display
        .clone()
        .or_else(|| std::env::var("DISPLAY").ok().filter(|d| !d.is_empty()));
    let Some(display) = display else {
        let reason = "no X display (DISPLAY is not set and window.display is not configured)";
        tracing::info!(reason, "window probe disabled");
        return Ok(DetectorHandle::disabled("window", reason));
    };
    let x = match XProbe::connect(Some(&display)) {
        Ok(p) => p,
        Err(err) => {
            let reason = format!("cannot connect to X display {display}: {err}");
            tracing::info!(%reason, "window probe disabled");
            return Ok(DetectorHandle::disabled("window", reason));
        }
    };
    let mut probe = Probe {
        x,
        tracker,
        hang: HangTracker::new(HangSettings::from_config(config)),
        ids,
        tx,
    };
    // The first snapshot is taken before returning, so windows present now are known.
    if let Err(err) = probe.scan() {
        tracing::warn!(%err, "window probe: first scan failed");
    }
    let (wake_rx, wake_tx) = rustix::pipe::pipe().map_err(|e| DetectError::Spawn {
        name: "window".into(),
        source: e.into(),
    })?;
    let wake_tx = Arc::new(wake_tx);
    let rescan =
        (config.rescan_interval_ms > 0).then(|| Duration::from_millis(config.rescan_interval_ms));
    let handle = DetectorHandle::spawn("window", move |stop| {
        let mut next_rescan = rescan.map(|d| Instant::now() + d);
        loop {
            if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                break;
            }
            let drained = match probe.x.drain_events() {
                Ok(d) => d,
                Err(err) => {
                    tracing::error!(%err, "window probe: X connection lost; probe stops");
                    break;
                }
            };
            let now = Instant::now();
            for w in drained.answers {
                if let Some(event) = probe.hang.answered(u64::from(w), now) {
                    hang::report(&event, &probe.ids, &probe.tx);
                }
            }
            // Requests with replies may queue events inside the connection, where
            // poll(2) does not see them: after any, the queue is drained again first.
            let mut requested = false;
            let rescan_due = next_rescan.is_some_and(|t| t <= now);
            if drained.relevant || rescan_due {
                if let Err(err) = probe.scan() {
                    tracing::debug!(%err, "window probe: scan failed; retrying on next event");
                }
                if rescan_due {
                    next_rescan = rescan.map(|d| Instant::now() + d);
                }
                requested = true;
            }
            if probe.hang_due(Instant::now()) {
                if let Err(err) = probe.run_hang_checks() {
                    tracing::error!(%err, "window probe: X connection lost; probe stops");
                    break;
                }
                requested = true;
            }
            if requested {
                continue;
            }
            // The timer: the safety rescan, and the hang checks only while a main window
            // is watched.
            let deadline = [next_rescan, probe.hang.deadline()]
                .into_iter()
                .flatten()
                .min();
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match wait_readable(&probe.x.conn, &wake_rx, timeout) {
                Ok(Wait::Ready | Wait::Timeout) => {}
                Ok(Wait::Woken) => break,
                Err(err) => {
                    tracing::error!(%err, "window probe: poll failed; probe stops");
                    break;
                }
            }
        }
    })?;
    Ok(handle.with_waker(Box::new(move || {
        let _ = rustix::io::write(&*wake_tx, &[1]);
    })))
}

enum Wait {
    Ready,
    Woken,
    Timeout,
}

fn wait_readable(
    conn: &RustConnection,
    wake: &OwnedFd,
    timeout: Option<Duration>,
) -> std::io::Result<Wait> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    // Whole milliseconds, rounded up: a deadline is never woken for early.
    let timeout = timeout.map(|d| Duration::from_millis(d.as_micros().div_ceil(1000) as u64));
    let ts = timeout.map(|d| Timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    });
    loop {
        let conn_fd = conn.stream().as_fd();
        let mut fds = [
            PollFd::new(&conn_fd, PollFlags::IN),
            PollFd::new(wake, PollFlags::IN),
        ];
        match poll(&mut fds, ts.as_ref()) {
            Ok(0) => return Ok(Wait::Timeout),
            Ok(_) => {
                if !fds[1].revents().is_empty() {
                    return Ok(Wait::Woken);
                }
                return Ok(Wait::Ready);
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
