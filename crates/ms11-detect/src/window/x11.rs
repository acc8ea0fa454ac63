//! The X11 side of the window probe (x11rb), event-driven.

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use ms11_state::Incident;
use x11rb::connection::Connection;
use x11rb::errors::ReplyError;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    AtomEnum, ChangeWindowAttributesAux, ConnectionExt as _, EventMask, MapState, Window,
};
use x11rb::rust_connection::RustConnection;

use super::{WindowProbeConfig, WindowTracker, observe};
use crate::error::DetectError;
use crate::handle::DetectorHandle;
use crate::ids::IncidentIds;

struct Atoms {
    net_client_list: u32,
    net_wm_name: u32,
    utf8_string: u32,
}

/// One X connection and what the probe has subscribed to.
pub(super) struct XProbe {
    conn: RustConnection,
    root: Window,
    atoms: Atoms,
    subscribed: HashSet<Window>,
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
        let root = conn
            .setup()
            .roots
            .get(screen)
            .map(|s| s.root)
            .ok_or_else(|| format!("X server has no screen {screen}"))?;
        let atoms = Atoms {
            net_client_list: atom(&conn, b"_NET_CLIENT_LIST")?,
            net_wm_name: atom(&conn, b"_NET_WM_NAME")?,
            utf8_string: atom(&conn, b"UTF8_STRING")?,
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
        })
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

    /// Drains queued events; `true` if any may change the snapshot.
    fn drain_events(&mut self) -> Result<bool, String> {
        let mut relevant = false;
        while let Some(ev) = self.conn.poll_for_event().map_err(|e| e.to_string())? {
            match ev {
                Event::CreateNotify(e) => {
                    self.subscribe(e.window);
                    relevant = true;
                }
                Event::DestroyNotify(_)
                | Event::MapNotify(_)
                | Event::UnmapNotify(_)
                | Event::ReparentNotify(_) => relevant = true,
                Event::PropertyNotify(e)
                    if e.atom == u32::from(AtomEnum::WM_NAME)
                        || e.atom == self.atoms.net_wm_name
                        || e.atom == self.atoms.net_client_list =>
                {
                    relevant = true;
                }
                _ => {}
            }
        }
        self.conn.flush().map_err(|e| e.to_string())?;
        Ok(relevant)
    }
}

pub(super) fn spawn(
    config: &WindowProbeConfig,
    mut tracker: WindowTracker,
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
    let mut probe = match XProbe::connect(Some(&display)) {
        Ok(p) => p,
        Err(err) => {
            let reason = format!("cannot connect to X display {display}: {err}");
            tracing::info!(%reason, "window probe disabled");
            return Ok(DetectorHandle::disabled("window", reason));
        }
    };
    // The first snapshot is taken before returning, so windows present now are known.
    match probe.snapshot() {
        Ok(windows) => observe(&mut tracker, &windows, &ids, &tx),
        Err(err) => tracing::warn!(%err, "window probe: first scan failed"),
    }
    let (wake_rx, wake_tx) = rustix::pipe::pipe().map_err(|e| DetectError::Spawn {
        name: "window".into(),
        source: e.into(),
    })?;
    let wake_tx = Arc::new(wake_tx);
    let rescan =
        (config.rescan_interval_ms > 0).then(|| Duration::from_millis(config.rescan_interval_ms));
    let handle = DetectorHandle::spawn("window", move |stop| {
        loop {
            if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                break;
            }
            let relevant = match probe.drain_events() {
                Ok(r) => r,
                Err(err) => {
                    tracing::error!(%err, "window probe: X connection lost; probe stops");
                    break;
                }
            };
            if relevant {
                match probe.snapshot() {
                    Ok(windows) => observe(&mut tracker, &windows, &ids, &tx),
                    Err(err) => {
                        tracing::debug!(%err, "window probe: scan failed; retrying on next event")
                    }
                }
                continue;
            }
            match wait_readable(&probe.conn, &wake_rx, rescan) {
                Ok(Wait::Ready) => {}
                Ok(Wait::Woken) => break,
                Ok(Wait::Timeout) => {
                    if let Ok(windows) = probe.snapshot() {
                        observe(&mut tracker, &windows, &ids, &tx);
                    }
                }
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
