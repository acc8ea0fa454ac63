//! `sim-client`: behaves like the Star Wars Galaxies client from the runner's point of
//! view. It logs realistic lines, shows a real X11 window titled "Star Wars Galaxies"
//! when a display is there, and on command (a file dropped into `--control-dir`)
//! crashes, writes a crash dump, hangs, shows a "Fatal Report" dialog, loses its
//! connection, gets banned, or reconnects.

#![allow(clippy::print_stderr)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use ms11_sim::{crash_dump, lines, poll_commands, timestamps};
use rand::SeedableRng;

/// A simulated game client.
#[derive(Parser)]
#[command(name = "sim-client", version)]
struct Args {
    /// The client log to append to.
    #[arg(long)]
    log: PathBuf,
    /// Directory polled for command files (crash-abort, crash-segv, exit-N, crash-dump,
    /// hang, fatal-dialog, disconnect, banned, session-expired, reconnect).
    #[arg(long)]
    control_dir: Option<PathBuf>,
    /// Where crash dumps are written (default: the working directory).
    #[arg(long)]
    dump_dir: Option<PathBuf>,
    /// Show an X11 window: auto (when DISPLAY is set), on, off.
    #[arg(long, value_enum, default_value_t = WindowMode::Auto)]
    window: WindowMode,
    /// Milliseconds before `Login successful` is logged.
    #[arg(long, default_value_t = 300)]
    startup_ms: u64,
    /// Ordinary log lines per second.
    #[arg(long, default_value_t = 5.0)]
    lines_per_sec: f64,
    /// Random seed (the same seed gives the same lines).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Abort by itself after this many milliseconds.
    #[arg(long)]
    crash_after_ms: Option<u64>,
    /// Ignore SIGTERM (a client that must be killed).
    #[arg(long)]
    ignore_term: bool,
    /// While this file exists the game server is "down": the client quits with exit
    /// code 1 at login, as the real one does when it cannot reach the login server.
    #[arg(long, value_name = "FILE")]
    quit_at_login_while: Option<PathBuf>,
    /// Append `start <unix_ns>` to this file first thing, and `exit <unix_ns>` right
    /// before exiting on an `exit-N` command (for `cargo xtask bench`).
    #[arg(long, value_name = "FILE")]
    timestamps: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WindowMode {
    Auto,
    On,
    Off,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Playing,
    Idle,
}

struct Log {
    file: std::fs::File,
}

impl Log {
    fn line(&mut self, text: &str) {
        let _ = writeln!(self.file, "{text}");
        let _ = self.file.flush();
    }
}

fn main() -> Result<()> {
    // Read before anything else, so the moment includes no work of ours.
    let launched = timestamps::unix_ns();
    let args = Args::parse();
    if let Some(path) = &args.timestamps {
        timestamps::append(path, "start", launched)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = args.log.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .with_context(|| format!("opening {}", args.log.display()))?;
    let mut log = Log { file };
    let term = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&term))?;
    let mut window = match args.window {
        WindowMode::Off => None,
        WindowMode::On | WindowMode::Auto => match window::Window::open("Star Wars Galaxies") {
            Ok(w) => Some(w),
            Err(e) => {
                if args.window == WindowMode::On {
                    return Err(e.context("--window on"));
                }
                eprintln!("sim-client: no window ({e}); running without one");
                None
            }
        },
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let started = Instant::now();
    let mut phase = Phase::Starting;
    log.line("[System] Star Wars Galaxies client starting (SwgClient_r 1.0)");
    let interval = Duration::from_secs_f64(1.0 / args.lines_per_sec.max(0.1));
    let mut next_line = Instant::now();
    loop {
        if term.load(Ordering::SeqCst) {
            if args.ignore_term {
                term.store(false, Ordering::SeqCst);
            } else {
                log.line("[System] Client shutting down");
                return Ok(());
            }
        }
        if phase == Phase::Starting && started.elapsed() >= Duration::from_millis(args.startup_ms) {
            if args
                .quit_at_login_while
                .as_ref()
                .is_some_and(|f| f.exists())
            {
                log.line("[Network] Unable to connect to the login server. Exiting.");
                std::process::exit(1);
            }
            for l in lines::login() {
                log.line(&l);
            }
            phase = Phase::Playing;
        }
        if let Some(ms) = args.crash_after_ms
            && started.elapsed() >= Duration::from_millis(ms)
        {
            log.line(lines::CRASHED);
            std::process::abort();
        }
        if let Some(dir) = &args.control_dir {
            for command in poll_commands(dir) {
                phase = run_command(&command, phase, &mut log, &mut window, &args);
            }
        }
        if phase == Phase::Playing && Instant::now() >= next_line {
            log.line(&lines::ordinary(&mut rng));
            next_line = Instant::now() + interval;
        }
        if let Some(w) = &mut window {
            w.pump();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_command(
    command: &str,
    phase: Phase,
    log: &mut Log,
    window: &mut Option<window::Window>,
    args: &Args,
) -> Phase {
    match command {
        "crash-abort" => {
            log.line(lines::CRASHED);
            std::process::abort()
        }
        "crash-segv" => {
            // The Rust runtime handles SIGSEGV itself (stack overflows); do what the default
            // disposition does: die by the signal.
            let _ = signal_hook::low_level::emulate_default_handler(signal_hook::consts::SIGSEGV);
            std::process::abort()
        }
        "crash-dump" => {
            let dir = args.dump_dir.clone().unwrap_or_else(|| PathBuf::from("."));
            let stem = crash_dump::dump_stem(std::time::SystemTime::now());
            let _ = std::fs::write(dir.join(format!("{stem}.txt")), crash_dump::REPORT_TEXT);
            let _ = std::fs::write(dir.join(format!("{stem}.mdmp")), b"MDMP\x93\xa7");
            log.line(lines::CRASHED);
            std::process::abort()
        }
        "hang" => {
            if let Some(w) = window {
                w.set_title("Star Wars Galaxies (Not Responding)");
            }
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        "fatal-dialog" => {
            match window::Window::open("Fatal Report") {
                Ok(dialog) => {
                    // Keep both windows; the client stays alive but stops playing.
                    std::mem::forget(dialog);
                }
                Err(e) => eprintln!("sim-client: cannot show the dialog ({e})"),
            }
            // The real client writes nothing while its dialog is up: only the window tells.
            Phase::Idle
        }
        "disconnect" => {
            log.line(lines::DISCONNECT);
            Phase::Idle
        }
        "banned" => {
            log.line(lines::BANNED);
            Phase::Idle
        }
        "session-expired" => {
            log.line(lines::SESSION_EXPIRED);
            Phase::Idle
        }
        "reconnect" => {
            for l in lines::login() {
                log.line(&l);
            }
            Phase::Playing
        }
        other => {
            if let Some(code) = other
                .strip_prefix("exit-")
                .and_then(|c| c.parse::<i32>().ok())
            {
                log.line(&format!("[System] exiting with code {code}"));
                if let Some(path) = &args.timestamps {
                    let _ = timestamps::append(path, "exit", timestamps::unix_ns());
                }
                std::process::exit(code);
            }
            eprintln!("sim-client: unknown command `{other}`");
            phase
        }
    }
}

mod window {
    //! A real X11 top-level window (no window manager needed). Like a toolkit's, it
    //! answers the EWMH `_NET_WM_PING` while the client's loop runs (`pump`), and stops
    //! answering when the loop hangs.

    use anyhow::{Context, Result};
    use x11rb::connection::Connection;
    use x11rb::protocol::Event;
    use x11rb::protocol::xproto::{
        AtomEnum, ConnectionExt, CreateWindowAux, EventMask, PropMode, WindowClass,
    };
    use x11rb::rust_connection::RustConnection;
    use x11rb::wrapper::ConnectionExt as _;

    pub struct Window {
        conn: RustConnection,
        id: u32,
        root: u32,
        wm_protocols: u32,
        net_wm_ping: u32,
    }

    impl Window {
        pub fn open(title: &str) -> Result<Window> {
            let (conn, screen_num) = x11rb::connect(None).context("no X display")?;
            let screen = conn.setup().roots.get(screen_num).context("no X screen")?;
            let id = conn.generate_id()?;
            conn.create_window(
                screen.root_depth,
                id,
                screen.root,
                0,
                0,
                320,
                200,
                0,
                WindowClass::INPUT_OUTPUT,
                screen.root_visual,
                &CreateWindowAux::new().background_pixel(screen.black_pixel),
            )?;
            let root = screen.root;
            let wm_protocols = conn.intern_atom(false, b"WM_PROTOCOLS")?.reply()?.atom;
            let net_wm_ping = conn.intern_atom(false, b"_NET_WM_PING")?.reply()?.atom;
            conn.change_property32(
                PropMode::REPLACE,
                id,
                wm_protocols,
                AtomEnum::ATOM,
                &[net_wm_ping],
            )?;
            let w = Window {
                conn,
                id,
                root,
                wm_protocols,
                net_wm_ping,
            };
            w.set_title(title);
            w.conn.map_window(id)?;
            w.conn.flush()?;
            Ok(w)
        }

        pub fn set_title(&self, title: &str) {
            let _ = self.conn.change_property8(
                PropMode::REPLACE,
                self.id,
                AtomEnum::WM_NAME,
                AtomEnum::STRING,
                title.as_bytes(),
            );
            let net = self
                .conn
                .intern_atom(false, b"_NET_WM_NAME")
                .ok()
                .and_then(|c| c.reply().ok());
            let utf8 = self
                .conn
                .intern_atom(false, b"UTF8_STRING")
                .ok()
                .and_then(|c| c.reply().ok());
            if let (Some(net), Some(utf8)) = (net, utf8) {
                let _ = self.conn.change_property8(
                    PropMode::REPLACE,
                    self.id,
                    net.atom,
                    utf8.atom,
                    title.as_bytes(),
                );
            }
            let _ = self.conn.flush();
        }

        /// Handles queued events: a ping is answered by sending it back to the root.
        pub fn pump(&mut self) {
            while let Ok(Some(event)) = self.conn.poll_for_event() {
                if let Event::ClientMessage(mut ping) = event
                    && ping.type_ == self.wm_protocols
                    && ping.data.as_data32()[0] == self.net_wm_ping
                {
                    ping.window = self.root;
                    let _ = self.conn.send_event(
                        false,
                        self.root,
                        EventMask::SUBSTRUCTURE_NOTIFY | EventMask::SUBSTRUCTURE_REDIRECT,
                        ping,
                    );
                    let _ = self.conn.flush();
                }
            }
        }
    }
}
