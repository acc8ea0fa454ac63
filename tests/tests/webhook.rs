//! Webhooks never block recovery: with a webhook server that holds each request for
//! 10 s, `manual` asks at once, an `ack` sent while the webhook is still being delivered
//! is accepted, and the session recovers.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ms11_e2e::Session;
use ms11_sim::ScenarioOptions;

const T: Duration = Duration::from_secs(30);
const HOLD: Duration = Duration::from_secs(10);

/// A loopback HTTP server that reads each request's head, says so on the channel, and
/// answers only after [`HOLD`].
fn slow_server() -> (String, mpsc::Receiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let _ = tx.send(Instant::now());
                std::thread::sleep(HOLD);
                let mut stream = stream;
                let _ = stream.write_all(
                    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            });
        }
    });
    (url, rx)
}

#[test]
fn a_slow_webhook_never_delays_the_manual_wait_or_an_ack() {
    let (url, requests) = slow_server();
    let mut s = Session::new(ScenarioOptions {
        // Appended right after the scenario's `[session.recovery.notify]` table.
        extra_toml: format!("webhook_url = {url:?}\n"),
        ..ScenarioOptions::default()
    });
    s.start_runner();
    s.wait_tasks(3, T);
    // A ban is terminal: only a person can help, so `manual` asks at once.
    s.client_command("banned");
    let incident = s.wait_event("incident", &[("kind", "banned")], T);
    let id = incident["incident"].as_str().unwrap().to_owned();
    s.wait_event("manual", &[("incident", &id)], T);
    // The webhook is being delivered (the server holds it) while `manual` waits.
    let delivering = requests.recv_timeout(T).expect("the webhook was sent");
    let status = s.status();
    assert_eq!(status["health"], "waiting_for_person", "{status}");
    let (code, out) = s.cli(&["ack", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(
        delivering.elapsed() < HOLD,
        "the ack was sent after the webhook was answered; the test proves nothing"
    );
    s.wait_event("recovered", &[("incident", &id)], T);
    assert!(
        delivering.elapsed() < HOLD,
        "the recovery waited for the webhook"
    );
    // Back: the person's word ends the wait, the session is healthy again and the bot
    // goes on with its tasks.
    let end = Instant::now() + T;
    loop {
        let status = s.status();
        if status["health"] == "healthy" && status["client"]["pid"].as_u64().is_some() {
            break;
        }
        assert!(Instant::now() < end, "not back: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let done = s.state().count_tasks(ms11_state::TaskState::Done);
    s.wait_tasks(done + 2, T);
    assert_eq!(s.stop_runner(), Some(0));
    s.assert_nothing_lost_or_repeated();
}
