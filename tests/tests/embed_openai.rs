//! The `embed-openai` plugin against a real local HTTP server speaking the
//! OpenAI `/v1/embeddings` protocol: batching in order, the API key sent,
//! a 429 retried, a wrong dimension refused, an unlisted host never reached.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::common::*;
use memhost::plugins::{Grant, PluginSettings};

/// What the fake endpoint saw: one (path, authorization, body) per request.
type Seen = Arc<Mutex<Vec<(String, String, serde_json::Value)>>>;

/// An OpenAI-compatible endpoint on loopback. Each input text becomes a
/// `dims`-long vector `[len, 1, 0, …]`; the first `fail_first` requests get
/// a 429.
fn endpoint(dims: usize, fail_first: usize) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let (mut length, mut auth, mut chunked) = (0usize, String::new(), false);
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "authorization" => auth = value.trim().to_string(),
                    "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            if chunked {
                // size line (hex), data, CRLF; a zero size ends the body.
                loop {
                    let mut size = String::new();
                    reader.read_line(&mut size).unwrap();
                    let n = usize::from_str_radix(size.trim(), 16).unwrap();
                    let mut chunk = vec![0; n + 2];
                    reader.read_exact(&mut chunk).unwrap();
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
            }
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let path = request_line.split(' ').nth(1).unwrap().to_string();
            let n = {
                let mut seen = log.lock().unwrap();
                seen.push((path, auth, body.clone()));
                seen.len()
            };
            let mut stream = stream;
            let answer = if n <= fail_first {
                "HTTP/1.1 429 Too Many Requests\r\nretry-after: 0\r\ncontent-length: 4\r\nconnection: close\r\n\r\nslow"
                    .to_string()
            } else {
                let data: Vec<serde_json::Value> = body["input"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .map(|(i, text)| {
                        let mut v = vec![0.0f32; dims];
                        v[0] = text.as_str().unwrap().len() as f32;
                        v[1] = 1.0;
                        serde_json::json!({ "object": "embedding", "index": i, "embedding": v })
                    })
                    .rev() // out of order on purpose: the index decides
                    .collect();
                let json =
                    serde_json::json!({ "object": "list", "data": data, "model": body["model"] })
                        .to_string();
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                    json.len()
                )
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (port, seen)
}

fn embedder(
    base_url: &str,
    granted: &str,
    dims: &str,
) -> Result<Arc<memhost::plugins::Embedder>, String> {
    let mut settings = PluginSettings::default();
    settings.grants.insert(
        "embed-openai".into(),
        Grant {
            allowed_outbound_hosts: vec![granted.to_string()],
            config: [
                ("base_url", base_url),
                ("model", "test-model"),
                ("dimensions", dims),
                ("api_key", "sk-test-123"),
                ("max_batch", "2"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Grant::default()
        },
    );
    let reg = registry(settings, None);
    reg.apply(vec![staged("embed-openai")])
        .map_err(|e| e.to_string())?;
    Ok(reg.snapshot().embedder("embed-openai").unwrap())
}

#[test]
fn batches_in_order_with_the_key_and_retries_a_429() {
    let (port, seen) = endpoint(4, 1);
    let origin = format!("http://127.0.0.1:{port}");
    let e = embedder(&format!("{origin}/v1"), &origin, "4").unwrap();
    assert_eq!(e.model().dimensions, 4);
    let texts: Vec<String> = ["a", "bb", "ccc"].iter().map(|s| s.to_string()).collect();
    let vectors = e.embed(&texts).unwrap();
    assert_eq!(
        vectors.iter().map(|v| v[0]).collect::<Vec<_>>(),
        [1.0, 2.0, 3.0],
        "one vector per text, in order"
    );
    let seen = seen.lock().unwrap();
    // max_batch 2: two batches, the first one retried after its 429.
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (path, auth, body) in seen.iter() {
        assert_eq!(path, "/v1/embeddings");
        assert_eq!(auth, "Bearer sk-test-123");
        assert_eq!(body["model"], "test-model");
    }
    assert_eq!(seen[1].2["input"], serde_json::json!(["a", "bb"]));
    assert_eq!(seen[2].2["input"], serde_json::json!(["ccc"]));
}

#[test]
fn a_wrong_dimension_is_an_error_naming_both() {
    let (port, _) = endpoint(3, 0);
    let origin = format!("http://127.0.0.1:{port}");
    let e = embedder(&format!("{origin}/v1"), &origin, "4").unwrap();
    let err = e.embed(&["x".to_string()]).unwrap_err().to_string();
    assert!(
        err.contains("dimension mismatch") && err.contains("returned 3") && err.contains("says 4"),
        "{err}"
    );
}

#[test]
fn an_unlisted_host_is_never_reached() {
    let (port, seen) = endpoint(4, 0);
    // The operator granted another port only.
    let e = embedder(
        &format!("http://127.0.0.1:{port}/v1"),
        "http://127.0.0.1:9",
        "4",
    )
    .unwrap();
    let err = e.embed(&["x".to_string()]).unwrap_err().to_string();
    assert!(
        err.contains("denied") || err.contains("not allowed"),
        "{err}"
    );
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn missing_configuration_refuses_to_load() {
    let Err(err) = embedder("", "http://127.0.0.1:9", "4") else {
        panic!("loaded without a base_url");
    };
    assert!(err.contains("base_url"), "{err}");
}
