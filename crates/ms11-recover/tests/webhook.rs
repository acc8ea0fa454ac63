//! The manual strategy's webhook against a real HTTP server on loopback: plain JSON,
//! Discord's `{"content"}` and ntfy's text body with a `Title` header.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use ms11_recover::{Notification, WebhookFormat, send_webhook};

/// Serves one request; returns (request head, body).
fn one_request() -> (String, std::thread::JoinHandle<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.to_ascii_lowercase().starts_with("content-length:") {
                length = line[15..].trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut stream = stream;
        stream
            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        (head, String::from_utf8(body).unwrap())
    });
    (url, handle)
}

fn notification() -> Notification {
    Notification {
        session: "main".into(),
        incident: "main-7".into(),
        kind: "banned".into(),
        title: "session `main` needs a person".into(),
        message: "Account Banned. Run `ms11-recovery ack main-7`.".into(),
    }
}

#[test]
fn json_discord_and_ntfy_bodies() {
    let (url, server) = one_request();
    send_webhook(&url, WebhookFormat::Json, &notification()).unwrap();
    let (head, body) = server.join().unwrap();
    assert!(head.starts_with("POST /hook"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["incident"].as_str(), v["kind"].as_str()),
        (Some("main-7"), Some("banned"))
    );

    let (url, server) = one_request();
    send_webhook(&url, WebhookFormat::Discord, &notification()).unwrap();
    let (_, body) = server.join().unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["content"].as_str().unwrap().contains("Account Banned"),
        "{body}"
    );

    let (url, server) = one_request();
    send_webhook(&url, WebhookFormat::Ntfy, &notification()).unwrap();
    let (head, body) = server.join().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("title: session `main` needs a person"),
        "{head}"
    );
    assert_eq!(body, "Account Banned. Run `ms11-recovery ack main-7`.");
}

#[test]
fn an_unreachable_webhook_is_an_error_not_a_panic() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = send_webhook(
        &format!("http://127.0.0.1:{port}/x"),
        WebhookFormat::Json,
        &notification(),
    )
    .unwrap_err();
    assert!(!err.is_empty());
}

#[test]
fn webhook_payloads_carry_no_secrets() {
    let mut n = notification();
    n.title = "relog of `main` failed with password=hunter2".into();
    n.message =
        "relog command said: login bob password hunter2; hook https://discord.com/api/webhooks/1/SECRETTOKEN"
            .into();
    for format in [
        WebhookFormat::Json,
        WebhookFormat::Discord,
        WebhookFormat::Ntfy,
    ] {
        let (url, server) = one_request();
        send_webhook(&url, format, &n).unwrap();
        let (head, body) = server.join().unwrap();
        for text in [&head, &body] {
            assert!(
                !text.contains("hunter2") && !text.contains("SECRETTOKEN"),
                "{format:?}: {text}"
            );
        }
        assert!(body.contains("[redacted]"), "{format:?}: {body}");
    }
}
