//! Screenshots of the game client as evidence: the client's top-level window, found by
//! its title, or the whole virtual screen when no such window is mapped, captured from
//! an X display (x11rb `GetImage`) and written as PNG into a folder that keeps only the
//! newest files.
//!
//! # Example
//!
//! ```no_run
//! use ms11_screenshot::{Shots, capture};
//!
//! # fn demo() -> Result<(), ms11_screenshot::ScreenshotError> {
//! let titles = [regex::Regex::new("^Star Wars Galaxies$").unwrap()];
//! let image = capture(Some(":90"), &titles)?;
//! let shots = Shots::new("state/screenshots".into(), 50);
//! let saved = shots.save("main-3", &image)?;
//! println!("{} ({} bytes)", saved.path.display(), saved.bytes);
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use regex::Regex;

/// Why no screenshot was taken.
#[derive(Debug, thiserror::Error)]
pub enum ScreenshotError {
    /// No X display to read from.
    #[error("no X display to take a screenshot from: {0}")]
    NoDisplay(String),
    /// The X server refused a request.
    #[error("the X server refused the screenshot: {0}")]
    X(String),
    /// The pixels are in a format this does not read.
    #[error("unsupported pixel format: {0}")]
    Format(String),
    /// Writing the file failed.
    #[error("writing `{path}`: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding the PNG failed.
    #[error("encoding the PNG: {0}")]
    Encode(String),
    /// No screenshots on this platform.
    #[error("screenshots need X11")]
    Unsupported,
}

/// A captured image, RGB, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub rgb: Vec<u8>,
    /// What was captured: `window "TITLE"` or `the whole screen`.
    pub what: String,
}

/// A screenshot on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// What it shows.
    pub what: String,
}

/// Captures the first mapped top-level window whose title matches one of `titles`,
/// or the whole screen when none does.
pub fn capture(display: Option<&str>, titles: &[Regex]) -> Result<Image, ScreenshotError> {
    #[cfg(unix)]
    {
        x11::capture(display, titles)
    }
    #[cfg(not(unix))]
    {
        let _ = (display, titles);
        Err(ScreenshotError::Unsupported)
    }
}

/// Encodes an image as PNG.
pub fn encode_png(image: &Image) -> Result<Vec<u8>, ScreenshotError> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, image.width, image.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder
            .write_header()
            .map_err(|e| ScreenshotError::Encode(e.to_string()))?;
        writer
            .write_image_data(&image.rgb)
            .map_err(|e| ScreenshotError::Encode(e.to_string()))?;
    }
    Ok(out)
}

/// A folder of screenshots that keeps the newest `keep` files.
#[derive(Debug, Clone)]
pub struct Shots {
    dir: PathBuf,
    keep: usize,
}

impl Shots {
    /// Screenshots in `dir` (created when the first is saved), at most `keep` of them.
    pub fn new(dir: PathBuf, keep: usize) -> Self {
        Shots { dir, keep }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `image` as `<name>-<unix seconds>.png` (0600, in a 0700 folder), then
    /// removes the oldest files beyond the limit.
    pub fn save(&self, name: &str, image: &Image) -> Result<Saved, ScreenshotError> {
        let write_error = |path: &Path, source| ScreenshotError::Write {
            path: path.to_path_buf(),
            source,
        };
        create_private_dir(&self.dir).map_err(|e| write_error(&self.dir, e))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.dir.join(format!("{safe}-{stamp}.png"));
        let png = encode_png(image)?;
        write_private(&path, &png).map_err(|e| write_error(&path, e))?;
        self.prune();
        Ok(Saved {
            bytes: png.len() as u64,
            path,
            what: image.what.clone(),
        })
    }

    /// The screenshots, oldest first.
    pub fn list(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort();
        files.into_iter().map(|(_, p)| p).collect()
    }

    /// Removes the oldest screenshots beyond the limit.
    pub fn prune(&self) {
        let files = self.list();
        let excess = files.len().saturating_sub(self.keep);
        for old in files.into_iter().take(excess) {
            if let Err(e) = std::fs::remove_file(&old) {
                tracing::warn!(file = %old.display(), error = %e, "cannot remove an old screenshot");
            }
        }
    }

    /// Removes the screenshots older than `max_age`; returns how many.
    pub fn remove_older_than(&self, max_age: std::time::Duration) -> usize {
        let now = std::time::SystemTime::now();
        self.list()
            .into_iter()
            .filter(|p| {
                std::fs::metadata(p)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age > max_age)
            })
            .filter(|p| std::fs::remove_file(p).is_ok())
            .count()
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(unix)]
mod x11 {
    use regex::Regex;
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{AtomEnum, ConnectionExt, ImageFormat, MapState, Window};

    use super::{Image, ScreenshotError};

    fn title(conn: &impl Connection, window: Window) -> Option<String> {
        let reply = conn
            .get_property(false, window, AtomEnum::WM_NAME, AtomEnum::ANY, 0, 1024)
            .ok()?
            .reply()
            .ok()?;
        (!reply.value.is_empty()).then(|| String::from_utf8_lossy(&reply.value).into_owned())
    }

    /// The first viewable window (depth first from the root) whose title matches.
    fn find(conn: &impl Connection, root: Window, titles: &[Regex]) -> Option<(Window, String)> {
        let mut pending = vec![root];
        while let Some(window) = pending.pop() {
            let viewable = conn
                .get_window_attributes(window)
                .ok()
                .and_then(|c| c.reply().ok())
                .is_some_and(|a| a.map_state == MapState::VIEWABLE);
            if window != root && !viewable {
                continue;
            }
            if let Some(t) = title(conn, window)
                && titles.iter().any(|r| r.is_match(&t))
            {
                return Some((window, t));
            }
            if let Ok(cookie) = conn.query_tree(window)
                && let Ok(tree) = cookie.reply()
            {
                pending.extend(tree.children);
            }
        }
        None
    }

    pub(super) fn capture(
        display: Option<&str>,
        titles: &[Regex],
    ) -> Result<Image, ScreenshotError> {
        let (conn, screen) =
            x11rb::connect(display).map_err(|e| ScreenshotError::NoDisplay(e.to_string()))?;
        let setup = conn.setup();
        let root = setup
            .roots
            .get(screen)
            .ok_or_else(|| ScreenshotError::X(format!("no screen {screen}")))?
            .root;
        // What the screen shows where the window is (a dialog on top of it included):
        // the root's pixels over the window's rectangle, not the window's own buffer,
        // which toolkits like Wine's may leave black.
        let screen_geometry = conn
            .get_geometry(root)
            .map_err(|e| ScreenshotError::X(e.to_string()))?
            .reply()
            .map_err(|e| ScreenshotError::X(e.to_string()))?;
        let (screen_w, screen_h) = (
            i32::from(screen_geometry.width),
            i32::from(screen_geometry.height),
        );
        let (x, y, width, height, what) = match find(&conn, root, titles) {
            Some((window, t)) => {
                let geometry = conn
                    .get_geometry(window)
                    .map_err(|e| ScreenshotError::X(e.to_string()))?
                    .reply()
                    .map_err(|e| ScreenshotError::X(e.to_string()))?;
                let origin = conn
                    .translate_coordinates(window, root, 0, 0)
                    .map_err(|e| ScreenshotError::X(e.to_string()))?
                    .reply()
                    .map_err(|e| ScreenshotError::X(e.to_string()))?;
                let left = i32::from(origin.dst_x).clamp(0, screen_w);
                let top = i32::from(origin.dst_y).clamp(0, screen_h);
                let right =
                    (i32::from(origin.dst_x) + i32::from(geometry.width)).clamp(0, screen_w);
                let bottom =
                    (i32::from(origin.dst_y) + i32::from(geometry.height)).clamp(0, screen_h);
                (
                    left,
                    top,
                    right - left,
                    bottom - top,
                    format!("window \"{t}\""),
                )
            }
            None => (0, 0, screen_w, screen_h, "the whole screen".to_owned()),
        };
        if width <= 0 || height <= 0 {
            return Err(ScreenshotError::X(format!("{what} is off the screen")));
        }
        let (x, y) = (i16::try_from(x).unwrap_or(0), i16::try_from(y).unwrap_or(0));
        let (width, height) = (
            u16::try_from(width).unwrap_or(u16::MAX),
            u16::try_from(height).unwrap_or(u16::MAX),
        );
        let reply = conn
            .get_image(ImageFormat::Z_PIXMAP, root, x, y, width, height, !0)
            .map_err(|e| ScreenshotError::X(e.to_string()))?
            .reply()
            .map_err(|e| ScreenshotError::X(e.to_string()))?;
        let bits_per_pixel = setup
            .pixmap_formats
            .iter()
            .find(|f| f.depth == reply.depth)
            .map(|f| f.bits_per_pixel)
            .ok_or_else(|| ScreenshotError::Format(format!("depth {}", reply.depth)))?;
        if bits_per_pixel != 32 || !(reply.depth == 24 || reply.depth == 32) {
            return Err(ScreenshotError::Format(format!(
                "depth {} at {bits_per_pixel} bits per pixel",
                reply.depth
            )));
        }
        let pixels = usize::from(width) * usize::from(height);
        if reply.data.len() < pixels * 4 {
            return Err(ScreenshotError::Format("short image data".into()));
        }
        // Little-endian BGRX, as Xvfb and every common X server on x86 sends it.
        let rgb = reply
            .data
            .chunks_exact(4)
            .take(pixels)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        Ok(Image {
            width: u32::from(width),
            height: u32::from(height),
            rgb,
            what,
        })
    }
}
