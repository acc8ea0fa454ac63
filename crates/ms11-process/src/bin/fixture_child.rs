//! A misbehaving child for ms11-process tests. Behaviour from argv:
//! `exit N`, `hang`, `ignore-term`, `spawn-grandchildren N` (prints their pids, then
//! hangs), `print N`, `crash-segv`.

#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use std::io::Write;
use std::time::Duration;

fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let number = |i: usize| arg(i).parse::<i32>().unwrap_or(0);
    match arg(0).as_str() {
        "exit" => std::process::exit(number(1)),
        "hang" => hang(),
        "ignore-term" => {
            let _ = signal_hook::flag::register(
                signal_hook::consts::SIGTERM,
                std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
            );
            println!("ready");
            let _ = std::io::stdout().flush();
            hang()
        }
        "spawn-grandchildren" => {
            let me = std::env::current_exe().unwrap_or_default();
            for _ in 0..number(1) {
                if let Ok(child) = std::process::Command::new(&me).arg("hang").spawn() {
                    println!("{}", child.id());
                }
            }
            let _ = std::io::stdout().flush();
            hang()
        }
        "print" => {
            for i in 0..number(1) {
                println!("line {i}");
            }
        }
        "crash-segv" => {
            // The Rust runtime handles SIGSEGV itself (stack overflows); do what the default
            // disposition does: die by the signal.
            let _ = signal_hook::low_level::emulate_default_handler(signal_hook::consts::SIGSEGV);
            hang()
        }
        other => {
            eprintln!("unknown behaviour `{other}`");
            std::process::exit(2)
        }
    }
}
