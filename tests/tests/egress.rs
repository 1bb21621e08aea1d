//! An embedder reaches only the hosts both its manifest and the operator
//! grant list; everything else is refused before any connection is made,
//! and the refusal is logged with target `audit`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::*;
use memhost::plugins::{Grant, PluginSettings};
use memhost::runtime::CallErrorKind;

/// A tiny HTTP server on loopback that answers every request with "hello"
/// and counts the connections it accepted.
fn http_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    (port, hits)
}

fn settings_for(url: &str, granted_hosts: &[String]) -> PluginSettings {
    let mut settings = PluginSettings::default();
    settings.grants.insert(
        "caller".into(),
        Grant {
            allowed_outbound_hosts: granted_hosts.to_vec(),
            config: [("url".to_string(), url.to_string())].into(),
            ..Grant::default()
        },
    );
    settings
}

fn caller(manifest_hosts: &[String], settings: PluginSettings) -> Arc<memhost::plugins::Embedder> {
    let tmp = tempfile::tempdir().unwrap();
    let hosts = manifest_hosts
        .iter()
        .map(|h| format!("\"{h}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let dir = plugin_dir(
        tmp.path(),
        "caller",
        "embedder",
        &fixture("http-embedder"),
        &format!("[capabilities]\nconfig = [\"url\"]\nallowed_outbound_hosts = [{hosts}]"),
    );
    let reg = registry(settings, None);
    reg.apply(vec![dir]).unwrap();
    reg.snapshot().embedder("caller").unwrap()
}

#[test]
fn a_host_on_both_lists_is_reached() {
    let (port, hits) = http_server();
    let origin = format!("http://127.0.0.1:{port}");
    let embedder = caller(
        std::slice::from_ref(&origin),
        settings_for(&format!("{origin}/ping"), std::slice::from_ref(&origin)),
    );
    let vectors = embedder.embed(&["a".into(), "b".into()]).unwrap();
    assert_eq!(vectors, vec![vec![200.0, 5.0], vec![200.0, 5.0]]);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn an_unlisted_host_is_refused_and_logged() {
    let logs = capture_logs();
    let (port, hits) = http_server();
    let origin = format!("http://127.0.0.1:{port}");
    // The plugin asks for some other host; the operator grants that one.
    let other = "https://api.example.com".to_string();
    let embedder = caller(
        std::slice::from_ref(&other),
        settings_for(&format!("{origin}/steal"), std::slice::from_ref(&other)),
    );
    let err = embedder.embed(&["x".into()]).unwrap_err();
    match &err.kind {
        CallErrorKind::CapabilityDenied(msg) => {
            assert!(
                msg.contains(&format!(
                    "http://127.0.0.1:{port} is not in the plugin's allowed outbound hosts"
                )),
                "{msg}"
            )
        }
        other => panic!("expected a capability error, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("plugin \"caller\" 0.1.0: capability denied"),
        "{err}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a connection was made");
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("outbound request denied") && l.contains(&format!("127.0.0.1:{port}")))
        .unwrap_or_else(|| panic!("no audit line:\n{text}"));
    assert!(
        line.contains("audit") && line.contains("plugin=caller"),
        "{line}"
    );
}

#[test]
fn an_empty_grant_denies_even_what_the_manifest_asks_for() {
    let (port, hits) = http_server();
    let origin = format!("http://127.0.0.1:{port}");
    let embedder = caller(
        std::slice::from_ref(&origin),
        settings_for(&format!("{origin}/"), &[]),
    );
    let err = embedder.embed(&["x".into()]).unwrap_err();
    assert!(
        matches!(err.kind, CallErrorKind::CapabilityDenied(_)),
        "{err}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[test]
fn a_grant_alone_is_not_enough_either() {
    let (port, hits) = http_server();
    let origin = format!("http://127.0.0.1:{port}");
    let embedder = caller(
        &[],
        settings_for(&format!("{origin}/"), std::slice::from_ref(&origin)),
    );
    let err = embedder.embed(&["x".into()]).unwrap_err();
    assert!(
        matches!(err.kind, CallErrorKind::CapabilityDenied(_)),
        "{err}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[test]
fn loopback_by_name_needs_an_explicit_grant_of_that_name() {
    let (port, hits) = http_server();
    // A wildcard grant does not cover loopback: the name must be granted as such.
    let embedder = caller(
        &[format!("http://localhost:{port}")],
        settings_for(
            &format!("http://localhost:{port}/"),
            &[format!("http://localhost:{port}")],
        ),
    );
    assert_eq!(embedder.embed(&["x".into()]).unwrap()[0][0], 200.0);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn a_server_that_never_answers_cannot_hold_a_plugin_past_its_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream); // accept, read nothing, answer nothing
        }
    });
    let origin = format!("http://127.0.0.1:{port}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = plugin_dir(
        tmp.path(),
        "caller",
        "embedder",
        &fixture("http-embedder"),
        &format!(
            "[limits]\ntimeout_ms = 200\n[capabilities]\nconfig = [\"url\"]\nallowed_outbound_hosts = [\"{origin}\"]"
        ),
    );
    let reg = registry(
        settings_for(&format!("{origin}/slow"), std::slice::from_ref(&origin)),
        None,
    );
    reg.apply(vec![dir]).unwrap();
    let embedder = reg.snapshot().embedder("caller").unwrap();
    let started = std::time::Instant::now();
    let err = embedder.embed(&["x".into()]).unwrap_err();
    let took = started.elapsed();
    // The server never answers: anything short of forever is the deadline.
    assert!(
        took >= std::time::Duration::from_millis(200) && took < std::time::Duration::from_secs(10),
        "held for {took:?}: {err}"
    );
}
