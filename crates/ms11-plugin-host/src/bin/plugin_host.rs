//! `ms11-plugin-host --plugin FILE [--config JSON]`: loads one strategy plugin and serves
//! the runner's requests over stdin/stdout (one JSON object per line), so that a plugin
//! that panics, aborts, crashes or hangs takes only this process down.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, Write};
use std::path::PathBuf;

use ms11_plugin_host::loader::OpenedLibrary;
use ms11_plugin_host::protocol::{HOST_PROTOCOL, Request, Response};

fn reply(response: &Response) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, response);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut plugin: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--plugin" => plugin = args.next().map(PathBuf::from),
            other => {
                eprintln!("ms11-plugin-host: unknown argument `{other}` (usage: --plugin FILE)");
                std::process::exit(2);
            }
        }
    }
    let Some(path) = plugin else {
        eprintln!("ms11-plugin-host: --plugin FILE is required");
        std::process::exit(2);
    };
    let opened = match OpenedLibrary::open(&path) {
        Ok(p) => p,
        Err(message) => {
            reply(&Response::Error {
                message,
                panicked: false,
            });
            std::process::exit(1);
        }
    };
    reply(&Response::Loaded {
        protocol: HOST_PROTOCOL,
        id: opened.id.clone(),
        version: opened.version.clone(),
    });
    let mut lines = std::io::stdin().lock().lines();
    let config = match lines
        .next()
        .map(|l| l.map(|l| serde_json::from_str::<Request>(&l)))
    {
        Some(Ok(Ok(Request::Create { config }))) => config,
        _ => {
            reply(&Response::Error {
                message: "expected a `create` request".into(),
                panicked: false,
            });
            std::process::exit(2);
        }
    };
    let loaded = match opened.create(&config) {
        Ok(p) => p,
        Err(message) => {
            reply(&Response::Error {
                message,
                panicked: false,
            });
            std::process::exit(1);
        }
    };
    let strategies = match loaded.strategies() {
        Ok(s) => s,
        Err(e) => {
            reply(&Response::Error {
                message: e.message,
                panicked: e.panicked,
            });
            std::process::exit(1);
        }
    };
    reply(&Response::Hello {
        protocol: HOST_PROTOCOL,
        id: loaded.id.clone(),
        version: loaded.version.clone(),
        strategies,
    });
    for line in lines {
        let Ok(line) = line else { break };
        let response = match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::Error {
                message: format!("bad request: {e}"),
                panicked: false,
            },
            Ok(request) => ms11_plugin_host::protocol::answer(&loaded, &request),
        };
        reply(&response);
    }
}
