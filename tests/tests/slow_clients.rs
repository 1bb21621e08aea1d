//! Clients that send slowly, or not at all, cannot hold the server: a
//! connection whose headers do not arrive in time, an idle keep-alive
//! connection and a trickled body are closed after their timeouts; past
//! the connection cap the server stops accepting, says so in its log, and
//! serves again as soon as the held connections are gone. Stores waiting
//! for their memory to be indexed hold no thread other requests need.

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

#[test]
fn stores_waiting_to_be_indexed_do_not_hold_the_threads_other_requests_need() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = plugins_config(
        tmp.path(),
        &["embed-hashing"],
        // One key here stands for the many keys it would take under the
        // default limit of 16 requests in flight per key.
        "[limits]\nrequests_per_second = 100000\nburst = 100000\nconcurrent_requests = 1000\n",
    );
    let server = Server::start(&data, &config);
    let created = curl(
        &server.client(),
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"vec","redaction":"off","embedder":"embed-hashing"}"#),
    );
    assert_eq!(created.0, 201, "{}", created.1);
    drop(server);
    // Without its embedder nothing gets indexed: every `?wait=indexed`
    // waits its full 30 s.
    std::fs::remove_dir_all(tmp.path().join("plugins/embed-hashing")).unwrap();
    let server = Server::start(&data, &config);
    let admin = server.client();
    // More waiting requests than the blocking pool, which also
    // authenticates every request, has threads (512).
    const WAITING: usize = 560;
    let waiting: Vec<TcpStream> = (0..WAITING)
        .map(|i| {
            let body = format!(r#"{{"content":"waiting note {i}"}}"#);
            hold(
                &server.addr,
                &format!(
                    "POST /v1/namespaces/vec/memories?wait=indexed HTTP/1.1\r\nhost: memhost\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    server.key,
                    body.len()
                ),
            )
        })
        .collect();
    // Every one is stored and waiting, and a request with a key is
    // answered meanwhile (when waits held a thread each, it queued behind
    // them until they timed out).
    let mut queued = serde_json::Value::Null;
    for _ in 0..200 {
        let (status, ns) = curl(&admin, "GET", "/v1/namespaces/vec", None);
        assert_eq!(status, 200, "{ns}");
        queued = ns["index"]["queued"].clone();
        if queued == WAITING {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(queued, WAITING, "every waiting store was taken");
    let answered = waiting
        .iter()
        .filter(|s| {
            let mut s: &TcpStream = s;
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            !matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    assert_eq!(answered, 0, "the waits are still waiting");
}
