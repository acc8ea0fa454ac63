//! The Win32 side of the window probe: `EnumWindows` + `GetWindowTextW` on a timer.
#![allow(unsafe_code)]

use std::time::Duration;

use crossbeam_channel::{Sender, select};
use ms11_state::Incident;
use windows_sys::Win32::Foundation::{HWND, LPARAM};
use windows_sys::Win32::UI::WindowsAndMessaging::{EnumWindows, GetWindowTextW, IsWindowVisible};
use windows_sys::core::BOOL;

use super::{WindowProbeConfig, WindowTracker, observe};
use crate::error::DetectError;
use crate::handle::DetectorHandle;
use crate::ids::IncidentIds;

unsafe extern "system" fn collect(hwnd: HWND, lparam: LPARAM) -> BOOL {
    // SAFETY: `lparam` is the `&mut Vec` that `snapshot` passes to EnumWindows, which
    // calls this function synchronously while that borrow is alive.
    let out = unsafe { &mut *(lparam as *mut Vec<(u64, String)>) };
    // SAFETY: plain Win32 call on a window handle EnumWindows gave us.
    if unsafe { IsWindowVisible(hwnd) } == 0 {
        return 1;
    }
    let mut buf = [0u16; 512];
    // SAFETY: the buffer is valid for `buf.len()` UTF-16 units.
    let n = unsafe { GetWindowTextW(hwnd, buf.as_mut_ptr(), buf.len() as i32) };
    if n > 0 {
        out.push((
            hwnd as usize as u64,
            String::from_utf16_lossy(&buf[..n as usize]),
        ));
    }
    1
}

fn snapshot() -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = Vec::new();
    // SAFETY: `collect` only uses the pointer during this call.
    unsafe { EnumWindows(Some(collect), &mut out as *mut Vec<(u64, String)> as LPARAM) };
    out
}

pub(super) fn spawn(
    config: &WindowProbeConfig,
    mut tracker: WindowTracker,
    ids: IncidentIds,
    tx: Sender<Incident>,
) -> Result<DetectorHandle, DetectError> {
    let interval = Duration::from_millis(config.rescan_interval_ms.clamp(100, 60_000));
    observe(&mut tracker, &snapshot(), &ids, &tx, &|_| None);
    DetectorHandle::spawn("window", move |stop| {
        loop {
            select! {
                recv(stop) -> _ => break,
                default(interval) => observe(&mut tracker, &snapshot(), &ids, &tx, &|_| None),
            }
        }
    })
}
