//! `/metrics` as Prometheus reads it: after a workload, a scrape parsed by
//! Prometheus' own Python parser (`prometheus_client`, installed by `cargo
//! xtask test` into `target/py-prom`) holds the numbers of what was done —
//! stores and recalls by outcome and mode, requests by route and status,
//! refused credentials, plugin calls, the audit chain's length, the store,
//! the last backup. On the main port only a global admin key reads it; the
//! metrics listener serves it without a key and nothing else, and refuses a
//! public address. `/ready` says when the server has warmed up.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::root;
use crate::common::server::{Client, Server, create_key, curl, memhost, plugins_config};

/// (name, labels, value) of every sample, as prometheus_client parses them.
fn parse(text: &str) -> Vec<(String, Value, f64)> {
    let python = root().join("target/py-prom/bin/python");
    assert!(
        python.exists(),
        "{} is missing: cargo xtask test installs prometheus-client there",
        python.display()
    );
    let mut child = Command::new(python)
        .args([
            "-c",
            "import json, sys\n\
             from prometheus_client.parser import text_string_to_metric_families\n\
             for family in text_string_to_metric_families(sys.stdin.read()):\n\
             \x20   for s in family.samples:\n\
             \x20       print(json.dumps([s.name, s.labels, s.value]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (name, labels, value): (String, Value, f64) = serde_json::from_str(l).unwrap();
            (name, labels, value)
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include `labels`.
fn value(samples: &[(String, Value, f64)], name: &str, labels: Value) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| l.get(k) == Some(v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// A raw GET: (status, body text).
fn get(addr: &str, path: &str, key: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-w", "\n%{http_code}"]);
    if let Some(k) = key {
        cmd.args(["-H", &format!("authorization: Bearer {k}")]);
    }
    let out = cmd.arg(format!("http://{addr}{path}")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_string())
}

fn recall(c: &Client, query: &str, mode: &str) {
    let body = json!({ "query": query, "mode": mode }).to_string();
    let (status, r) = curl(c, "POST", "/v1/namespaces/m/recall", Some(&body));
    assert_eq!(status, 200, "{r}");
}

#[test]
fn a_scrape_after_a_workload_counts_what_was_done() {
    let tmp = tempfile::tempdir().unwrap();
    let started = crate::common::now_ms() / 1000;
    let config = plugins_config(
        tmp.path(),
        &["redact-pii"],
        "[server]\nmetrics_listen = \"127.0.0.1:0\"\n",
    );
    let data = tmp.path().join("data");
    let server = Server::start(&data, &config);
    let admin = server.client();
    let line = server
        .seen
        .iter()
        .find(|l| l.contains("metrics on http://"))
        .cloned()
        .expect("the metrics listener says where it is");
    let metrics_addr: String = line
        .rsplit("http://")
        .next()
        .unwrap()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':'))
        .collect();
    // Ready once warmed up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(&server.addr, "/ready", None);
        if status == 200 {
            assert_eq!(
                serde_json::from_str::<Value>(&body).unwrap()["status"],
                "ready"
            );
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The workload.
    let (status, r) = curl(&admin, "POST", "/v1/namespaces", Some(r#"{"name":"m"}"#));
    assert_eq!(status, 201, "{r}");
    for i in 0..5 {
        let body =
            json!({ "content": format!("metric note {i} about the lighthouse") }).to_string();
        let (status, r) = curl(&admin, "POST", "/v1/namespaces/m/memories", Some(&body));
        assert_eq!(status, 201, "{r}");
    }
    let (status, r) = curl(
        &admin,
        "POST",
        "/v1/namespaces/m/memories",
        Some(r#"{"content":"metric note 0 about the lighthouse"}"#),
    );
    assert!(status < 300, "{r}");
    for _ in 0..3 {
        recall(&admin, "lighthouse", "hybrid");
    }
    for _ in 0..2 {
        recall(&admin, "lighthouse", "lexical");
    }
    // The admin key with its secret's last character changed.
    let mut wrong = server.key.clone();
    let last = if wrong.ends_with('A') { "B" } else { "A" };
    wrong.replace_range(wrong.len() - 1.., last);
    let (status, _) = curl(&admin.as_key(Some(&wrong)), "GET", "/v1/namespaces", None);
    assert_eq!(status, 401);
    let (status, _) = curl(&admin.as_key(None), "GET", "/v1/namespaces", None);
    assert_eq!(status, 401);
    let backup = tmp.path().join("m.backup");
    let (code, _, err) = memhost(&[
        "backup",
        "--data",
        data.to_str().unwrap(),
        "--out",
        backup.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");

    // Scraped on the main port with the global admin key.
    let (status, text) = get(&server.addr, "/metrics", Some(&server.key));
    assert_eq!(status, 200, "{text}");
    let (_, tail, _) = memhost(&[
        "audit",
        "tail",
        "-n",
        "1",
        "--json",
        "--data",
        data.to_str().unwrap(),
    ]);
    let chain: Value = serde_json::from_str(tail.trim()).unwrap();
    let s = parse(&text);
    let v = |name: &str, labels: Value| value(&s, name, labels);
    assert_eq!(
        v(
            "memhost_operations_total",
            json!({"op": "store", "outcome": "ok"})
        ),
        5.0
    );
    assert_eq!(
        v(
            "memhost_operations_total",
            json!({"op": "store", "outcome": "duplicate"})
        ),
        1.0
    );
    assert_eq!(
        v(
            "memhost_operations_total",
            json!({"op": "recall", "outcome": "ok"})
        ),
        5.0
    );
    assert_eq!(
        v(
            "memhost_recall_duration_seconds_count",
            json!({"mode": "hybrid"})
        ),
        3.0
    );
    assert_eq!(
        v(
            "memhost_recall_duration_seconds_count",
            json!({"mode": "lexical"})
        ),
        2.0
    );
    assert_eq!(
        v(
            "memhost_http_requests_total",
            json!({"route": "/v1/namespaces/{ns}/memories", "method": "POST", "status": "201"})
        ),
        5.0
    );
    assert_eq!(
        v(
            "memhost_http_requests_total",
            json!({"route": "/v1/namespaces", "status": "401"})
        ),
        2.0
    );
    assert_eq!(
        v("memhost_auth_failures_total", json!({"reason": "unknown"})),
        1.0
    );
    assert_eq!(
        v("memhost_auth_failures_total", json!({"reason": "missing"})),
        1.0
    );
    // Each store was redacted and decided by the policy, in the sandbox.
    assert!(
        v(
            "memhost_plugin_calls_total",
            json!({"plugin": "redact-pii", "kind": "redactor", "outcome": "ok"})
        ) >= 6.0
    );
    assert!(
        v(
            "memhost_plugin_calls_total",
            json!({"plugin": "policy-standard", "kind": "policy", "outcome": "ok"})
        ) >= 6.0
    );
    assert!(
        v(
            "memhost_plugin_call_duration_seconds_count",
            json!({"plugin": "redact-pii"})
        ) >= 6.0
    );
    assert_eq!(
        v("memhost_audit_entries", json!({})),
        chain["seq"].as_f64().unwrap()
    );
    assert_eq!(v("memhost_namespaces", json!({})), 1.0);
    assert_eq!(v("memhost_approvals", json!({"state": "pending"})), 0.0);
    assert_eq!(v("memhost_index_queue_depth", json!({})), 0.0);
    assert_eq!(v("memhost_index_lag_seconds", json!({})), 0.0);
    assert!(v("memhost_store_used_bytes", json!({})) > 0.0);
    assert!(
        v("memhost_store_map_size_bytes", json!({})) >= v("memhost_store_used_bytes", json!({}))
    );
    let backed_up = v("memhost_last_backup_timestamp_seconds", json!({}));
    assert!(
        backed_up >= started as f64 && backed_up <= (crate::common::now_ms() / 1000) as f64,
        "{backed_up}"
    );
    assert_eq!(v("memhost_ready", json!({})), 1.0);
    assert_eq!(
        v(
            "memhost_build_info",
            json!({"version": env!("CARGO_PKG_VERSION")})
        ),
        1.0
    );
    assert!(v("process_resident_memory_bytes", json!({})) > 0.0);
    // No namespace, key or memory id ever becomes a label.
    assert!(
        !text.contains("namespace=\"m\"") && !text.contains("mhk_"),
        "{text}"
    );

    // Who may read it on the main port.
    let (status, body) = get(&server.addr, "/metrics", None);
    assert_eq!(status, 401, "{body}");
    let writer = create_key(&data, "w", "assistant", &["m=writer"], &[]);
    let (status, body) = get(&server.addr, "/metrics", Some(&writer));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("metrics_listen"), "{body}");

    // The metrics listener: /metrics without a key, and nothing else.
    let (status, text) = get(&metrics_addr, "/metrics", None);
    assert_eq!(status, 200);
    assert_eq!(value(&parse(&text), "memhost_namespaces", json!({})), 1.0);
    let (status, _) = get(&metrics_addr, "/v1/namespaces", Some(&server.key));
    assert_eq!(status, 404);
    drop(server);

    // A public address for it is refused at start.
    let public = plugins_config(
        tmp.path(),
        &["redact-pii"],
        "[server]\nmetrics_listen = \"0.0.0.0:9477\"\n",
    );
    let mut child = Command::new(crate::common::server::memhost_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(&public)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not refuse a public metrics address");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(err.contains("not a loopback or private address"), "{err}");
}
