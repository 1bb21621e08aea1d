//! Clients that send slowly, or not at all, cannot hold the server: a
//! connection whose headers do not arrive in time, an idle keep-alive
//! connection and a trickled body are closed after their timeouts; past
//! the connection cap the server stops accepting, says so in its log, and
//! serves again as soon as the held connections are gone.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::server::*;

const BOUNDS: &str = "[server.connections]\nmax_connections = 48\nheader_timeout_seconds = 1\nkeep_alive_seconds = 0.5\nbody_timeout_seconds = 1\n";

/// A connection that sent `bytes` and then nothing.
fn hold(addr: &str, bytes: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes.as_bytes()).unwrap();
    s
}

/// What the server sent before closing `s`; `None` if it is still open
/// after `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> Option<String> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&seen).into()),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(String::from_utf8_lossy(&seen).into()),
        }
    }
    None
}

fn health(addr: &str, within: Duration) -> Option<u16> {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time"])
        .arg(format!("{}", within.as_secs_f64()))
        .arg(format!("http://{addr}/health"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .parse()
        .ok()
        .filter(|c| *c != 0)
}

#[test]
fn half_sent_requests_do_not_stop_health_and_are_closed_after_the_header_timeout() {
    let s = setup_plugins(&[], BOUNDS, &[], &[]);
    let addr = s.server.addr.clone();
    let mut held: Vec<TcpStream> = (0..40)
        .map(|_| hold(&addr, "GET /health HTTP/1.1\r\nhost: x\r\nx-slow: "))
        .collect();
    assert_eq!(health(&addr, Duration::from_secs(2)), Some(200));
    for s in &mut held {
        closed_within(s, Duration::from_secs(5))
            .expect("a half-sent request is closed after the header timeout");
    }
    assert_eq!(health(&addr, Duration::from_secs(2)), Some(200));
}

#[test]
fn an_idle_keep_alive_connection_and_a_trickled_body_are_closed() {
    let s = setup_plugins(&[], BOUNDS, &[], &[]);
    let addr = s.server.addr.clone();

    // A full request, answered; then silence.
    let mut idle = hold(&addr, "GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
    let answer = closed_within(&mut idle, Duration::from_secs(5))
        .expect("an idle keep-alive connection is closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Headers on time, then a tenth of the body and nothing more.
    let key = s.server.key.clone();
    let mut trickle = hold(
        &addr,
        &format!(
            "POST /v1/namespaces HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\":"
        ),
    );
    let answer = closed_within(&mut trickle, Duration::from_secs(5))
        .expect("a trickled body is cut off after the body timeout");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Nothing was created from half a body.
    let (status, list) = curl(&s.admin, "GET", "/v1/namespaces", None);
    assert_eq!(status, 200);
    assert_eq!(
        list["namespaces"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );
}

#[test]
fn past_the_connection_cap_the_server_waits_says_so_and_serves_again() {
    let mut s = setup_plugins(&[], BOUNDS, &[], &[]);
    let addr = s.server.addr.clone();
    let held: Vec<TcpStream> = (0..48).map(|_| hold(&addr, "GET /hea")).collect();
    s.server.wait_for("connection cap reached");
    // The next client is queued, not refused: it is served once the held
    // connections time out.
    assert_eq!(health(&addr, Duration::from_secs(10)), Some(200));
    drop(held);
}
