//! The REST API of the real binary, driven with curl: namespaces and
//! memories round-trip (store, duplicate, get, list, update, history,
//! forget), bad input gets the documented problem and changes nothing, the
//! data file holds no readable field, and a `kill -9` during a burst of
//! concurrent writes loses none that were acknowledged.

use std::path::Path;

use crate::common::server::*;
use serde_json::json;

const CANARY: &str = "canary-3b8e1d-walrus-kumquat";

fn config(dir: &Path) -> std::path::PathBuf {
    pii_config(dir, "")
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn memories_round_trip_over_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = Server::start(&data, &config(tmp.path()));
    let a = server.client();

    let (status, ns) = curl(&a, "POST", "/v1/namespaces", Some(r#"{"name":"team-a"}"#));
    assert_eq!(status, 201, "{ns}");
    assert_eq!(ns["settings"]["redaction"], "store-redacted");
    let (status, _) = curl(&a, "POST", "/v1/namespaces", Some(r#"{"name":"team-a"}"#));
    assert_eq!(status, 409);

    let body = json!({
        "content": format!("{CANARY} call ada@example.com"),
        "title": format!("t-{CANARY}"),
        "tags": ["people", format!("tag-{CANARY}")],
        "metadata": { "source": CANARY },
    })
    .to_string();
    let (status, m) = curl(&a, "POST", "/v1/namespaces/team-a/memories", Some(&body));
    assert_eq!(status, 201, "{m}");
    assert_eq!(m["content"], format!("{CANARY} call [EMAIL]"));
    assert_eq!(m["redactions"]["email"], 1);
    assert_eq!(m["created"], true);
    let id = m["id"].as_str().unwrap().to_string();

    // Identical content: the same memory back, reported as a duplicate.
    let (status, dup) = curl(&a, "POST", "/v1/namespaces/team-a/memories", Some(&body));
    assert_eq!(
        (status, dup["id"].as_str(), dup["duplicate"].as_bool()),
        (200, Some(id.as_str()), Some(true))
    );

    let (status, got) = curl(
        &a,
        "GET",
        &format!("/v1/namespaces/team-a/memories/{id}"),
        None,
    );
    assert_eq!((status, got["version"].as_u64()), (200, Some(1)));

    let (status, page) = curl(
        &a,
        "GET",
        "/v1/namespaces/team-a/memories?tags=people&limit=10",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(page["memories"].as_array().unwrap().len(), 1);

    let (status, v2) = curl(
        &a,
        "PATCH",
        &format!("/v1/namespaces/team-a/memories/{id}"),
        Some(r#"{"content":"moved to +44 20 7946 0958"}"#),
    );
    assert_eq!((status, v2["version"].as_u64()), (200, Some(2)), "{v2}");
    assert_eq!(v2["content"], "moved to [PHONE]");
    let (status, h) = curl(
        &a,
        "GET",
        &format!("/v1/namespaces/team-a/memories/{id}/history"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(h["versions"].as_array().unwrap().len(), 2);

    // The data file holds no field in the clear; neither does the log.
    let raw = std::fs::read(data.join("db/data.mdb")).unwrap();
    // mdb_dump -p prints every key and value of every table, printable
    // bytes as themselves.
    let dump = std::process::Command::new("mdb_dump")
        .args(["-p", "-a"])
        .arg(data.join("db"))
        .output()
        .expect("mdb_dump (lmdb-utils) is needed for this test");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert!(contains(&dump.stdout, "memories"), "mdb_dump saw no tables");
    for needle in [CANARY, "ada@example.com", "team-a", "people"] {
        assert!(!contains(&raw, needle), "{needle} readable in data.mdb");
        assert!(
            !contains(&dump.stdout, needle),
            "{needle} readable in mdb_dump output"
        );
    }

    // Bulk: each item answered on its own.
    let bulk = json!({ "memories": [
        { "content": "bulk one" },
        { "content": "bulk one" },
        { "content": "bulk two", "colour": 1 },
    ]})
    .to_string();
    let (status, r) = curl(
        &a,
        "POST",
        "/v1/namespaces/team-a/memories/bulk",
        Some(&bulk),
    );
    assert_eq!(status, 200, "{r}");
    let statuses: Vec<_> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["status"].as_u64())
        .collect();
    assert_eq!(statuses, [Some(201), Some(200), Some(422)], "{r}");

    let (status, _) = curl(
        &a,
        "DELETE",
        &format!("/v1/namespaces/team-a/memories/{id}"),
        None,
    );
    assert_eq!(status, 204);
    let (status, gone) = curl(
        &a,
        "GET",
        &format!("/v1/namespaces/team-a/memories/{id}"),
        None,
    );
    assert_eq!(status, 404);
    assert_eq!(
        gone["type"],
        "https://memhost.dev/problems/memory-not-found"
    );
    server.drain();
    let log = server.seen.join("\n");
    assert!(
        !log.contains(CANARY) && !log.contains("ada@example.com"),
        "{log}"
    );
}

#[test]
fn bad_input_gets_the_documented_problem_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &config(tmp.path()));
    let a = server.client();
    curl(&a, "POST", "/v1/namespaces", Some(r#"{"name":"n"}"#));
    let problems = "https://memhost.dev/problems/";
    let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
        (
            "POST",
            "/v1/namespaces/n/memories",
            Some(r#"{"content": oops"#.into()),
            400,
            "malformed-json",
        ),
        (
            "POST",
            "/v1/namespaces/n/memories",
            Some(r#"{"content":"x","colour":1}"#.into()),
            422,
            "validation",
        ),
        (
            "POST",
            "/v1/namespaces/n/memories",
            Some(r#"{"content":""}"#.into()),
            422,
            "validation",
        ),
        (
            "POST",
            "/v1/namespaces/n/memories",
            Some(format!(r#"{{"content":"{}"}}"#, "x".repeat(70_000))),
            422,
            "too-large",
        ),
        (
            "POST",
            "/v1/namespaces/n/memories",
            Some(format!(r#"{{"content":"{}"}}"#, "x".repeat(2 << 20))),
            413,
            "too-large",
        ),
        (
            "POST",
            "/v1/namespaces/n/memories",
            Some(format!("{}1{}", "[".repeat(40), "]".repeat(40))),
            400,
            "malformed-json",
        ),
        (
            "POST",
            "/v1/namespaces",
            Some(r#"{"name":"Bad Name"}"#.into()),
            422,
            "validation",
        ),
        (
            "POST",
            "/v1/namespaces",
            Some(r#"{"name":"x","redaction":"sometimes"}"#.into()),
            422,
            "validation",
        ),
        (
            "POST",
            "/v1/namespaces/ghost/memories",
            Some(r#"{"content":"x"}"#.into()),
            404,
            "namespace-not-found",
        ),
        (
            "GET",
            "/v1/namespaces/ghost/memories",
            None,
            404,
            "namespace-not-found",
        ),
        (
            "GET",
            "/v1/namespaces/n/memories/not-a-uuid",
            None,
            404,
            "memory-not-found",
        ),
        (
            "GET",
            "/v1/namespaces/n/memories?colour=red",
            None,
            400,
            "bad-query",
        ),
        (
            "PUT",
            "/v1/namespaces/n/memories",
            None,
            405,
            "method-not-allowed",
        ),
        ("GET", "/v1/nothing-here", None, 404, "route-not-found"),
    ];
    for (method, path, body, status, kind) in cases {
        let (got, problem) = curl(&a, method, path, body.as_deref());
        assert_eq!(got, status, "{method} {path}: {problem}");
        assert_eq!(
            problem["type"],
            format!("{problems}{kind}"),
            "{method} {path}"
        );
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let (_, page) = curl(&a, "GET", "/v1/namespaces/n/memories", None);
    assert_eq!(
        page["memories"].as_array().unwrap().len(),
        0,
        "bad input stored something"
    );
    let (_, all) = curl(&a, "GET", "/v1/namespaces", None);
    assert_eq!(all["namespaces"].as_array().unwrap().len(), 1);
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = config(tmp.path());
    let mut server = Server::start(&data, &config);
    let a = server.client();
    curl(
        &a,
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"burst","redaction":"off"}"#),
    );

    // Eight writers hammer the server; it is killed mid-burst.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let a = a.clone();
            let acked = acked.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    let body = json!({ "content": format!("writer {w} item {i}") }).to_string();
                    let (status, m) =
                        curl(&a, "POST", "/v1/namespaces/burst/memories", Some(&body));
                    if status == 201 {
                        acked
                            .lock()
                            .unwrap()
                            .push(m["id"].as_str().unwrap().to_string());
                    } else {
                        break;
                    }
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 100 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 100);

    let again = Server::start(&data, &config);
    let mut stored = std::collections::HashSet::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = curl(
            &again.client(),
            "GET",
            &format!("/v1/namespaces/burst/memories?limit=200{cursor}"),
            None,
        );
        assert_eq!(status, 200);
        for m in page["memories"].as_array().unwrap() {
            stored.insert(m["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost after kill -9: {lost:?}",
        lost.len()
    );
}

#[test]
fn the_namespace_cli_works_beside_the_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data, &config(tmp.path()));
    let d = data.to_str().unwrap();
    // Without the server's plugins the command line cannot check the
    // namespace's policy, and says how to give them.
    let (code, _, err) = memhost(&["namespace", "create", "ops", "--data", d]);
    assert_eq!(code, 1);
    assert!(err.contains("--config"), "{err}");
    let config = config(tmp.path());
    let c = config.to_str().unwrap();
    let (code, out, err) = memhost(&[
        "namespace",
        "create",
        "ops",
        "--redaction",
        "egress",
        "--data",
        d,
        "--config",
        c,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"name\": \"ops\""), "{out}");
    let (status, ns) = curl(&server.client(), "GET", "/v1/namespaces/ops", None);
    assert_eq!(
        (status, ns["settings"]["redaction"].as_str()),
        (200, Some("egress"))
    );
    let (status, _) = curl(
        &server.client(),
        "POST",
        "/v1/namespaces/ops/memories",
        Some(r#"{"content":"x@example.com"}"#),
    );
    assert_eq!(status, 201);
    curl(
        &server.client(),
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"made-by-api"}"#),
    );
    let (code, out, _) = memhost(&["namespace", "list", "--data", d]);
    assert_eq!(code, 0);
    assert!(out.contains("made-by-api") && out.contains("ops"), "{out}");
    let (code, _, err) = memhost(&["namespace", "create", "ops", "--data", d, "--config", c]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = memhost(&[
        "namespace",
        "create",
        "x",
        "--redaction",
        "sometimes",
        "--data",
        d,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("not a redaction mode"), "{err}");
}

#[test]
fn the_openapi_document_describes_exactly_the_routes_that_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &config(tmp.path()));
    let a = server.client();
    let (status, doc) = curl(&a, "GET", "/v1/openapi.json", None);
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for schema in ["Memory", "Namespace", "NewMemory", "MemoryPatch", "Problem"] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "no schema {schema}"
        );
    }
    curl(&a, "POST", "/v1/namespaces", Some(r#"{"name":"docs"}"#));
    let (_, m) = curl(
        &a,
        "POST",
        "/v1/namespaces/docs/memories",
        Some(r#"{"content":"for the doc test"}"#),
    );
    let id = m["id"].as_str().unwrap().to_string();
    // Two held changes by another agent: one to vote on, one to read and
    // cancel.
    curl(
        &a,
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"held-docs","policy":"consensus:1"}"#),
    );
    let other = a.as_key(Some(&create_key(
        &tmp.path().join("data"),
        "doc-writer",
        "bot",
        &["held-docs=writer"],
        &[],
    )));
    let mut held = Vec::new();
    for text in ["to vote on", "to cancel"] {
        let (status, body) = curl(
            &other,
            "POST",
            "/v1/namespaces/held-docs/memories",
            Some(&serde_json::json!({ "content": text }).to_string()),
        );
        assert_eq!(status, 202, "{body}");
        held.push((
            body["approval"]["id"].as_str().unwrap().to_string(),
            body["approval"]["payload_hash"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    let vote_body =
        serde_json::json!({ "decision": "approve", "payload_hash": held[0].1 }).to_string();

    let paths = doc["paths"].as_object().unwrap();
    let mut checked = 0;
    // Delete last, so the memory exists for the other routes.
    let mut ops = documented_routes(&doc);
    ops.sort_by_key(|(m, p)| (m == "delete", p == "/v1/namespaces/{ns}"));
    // Every route of api/rest/mod.rs, each method counted.
    assert_eq!(ops.len(), 29, "{ops:?}");
    let recipient = crate::common::age_recipient();
    let key_id = &create_key(
        &tmp.path().join("data"),
        "doc-agent",
        "bot",
        &["docs=reader"],
        &[],
    )[4..20];
    for (method, path) in ops {
        let url = path
            .replace("{ns}", "docs")
            .replace("{id}", &id)
            .replace("{key_id}", key_id)
            .replace(
                "{approval_id}",
                if path.ends_with("/votes") {
                    &held[0].0
                } else {
                    &held[1].0
                },
            );
        let url = if url.ends_with("/export") {
            format!("{url}?recipient={recipient}")
        } else {
            url
        };
        let body = match (method.as_str(), url.ends_with("/bulk")) {
            ("post", false) if url.ends_with("/import") => {
                Some(r#"{"results":[{"memory":"imported from mem0"}]}"#)
            }
            ("post", false) if url.ends_with("/votes") => Some(vote_body.as_str()),
            ("post", false) if url.ends_with("/cancel") => None,
            ("post", true) => Some(r#"{"memories":[]}"#),
            ("post", false) if url.ends_with("/recall") => Some(r#"{"query":"doc test"}"#),
            ("post", false) if url.ends_with("/reindex") => None,
            ("post", false) if url.ends_with("/namespaces") => Some(r#"{"name":"docs-2"}"#),
            ("post", false) if url.ends_with("/admin/keys") => Some(
                r#"{"agent_id":"a","agent_type":"bot","grants":[{"pattern":"docs","role":"reader"}]}"#,
            ),
            ("post", false) => Some(r#"{"content":"another"}"#),
            ("patch", _) => Some(r#"{}"#),
            ("put", _) => Some(r#"{"aliases":{}}"#),
            _ => None,
        };
        let (status, problem) = curl(&a, &method.to_uppercase(), &url, body);
        assert!(
            (200..300).contains(&status),
            "{method} {url} is documented but answered {status}: {problem}"
        );
        checked += 1;
    }
    assert_eq!(
        checked,
        paths
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>()
    );
}

#[test]
fn a_full_database_says_so_and_keeps_what_it_has() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[store]\nmap_size_mb = 1\nmax_map_size_mb = 4\n"),
    )
    .unwrap();
    let server = Server::start(&tmp.path().join("data"), &config);
    let a = server.client();
    curl(
        &a,
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"big","redaction":"off"}"#),
    );
    let mut stored = Vec::new();
    let mut full = None;
    // Text that does not compress (rows are compressed before sealing):
    // letters from a xorshift stream.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |n: usize| -> String {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                        [(state % 62) as usize],
                )
            })
            .collect()
    };
    for i in 0..200 {
        let body = json!({ "content": format!("{i} {}", noise(60_000)) }).to_string();
        let (status, m) = curl(&a, "POST", "/v1/namespaces/big/memories", Some(&body));
        match status {
            201 => stored.push(m["id"].as_str().unwrap().to_string()),
            _ => {
                full = Some((status, m));
                break;
            }
        }
    }
    let (status, problem) = full.expect("4 MiB never filled up");
    assert_eq!(status, 507, "{problem}");
    assert_eq!(problem["type"], "https://memhost.dev/problems/storage-full");
    assert!(
        problem["detail"].as_str().unwrap().contains("max_map_size"),
        "{problem}"
    );
    assert!(
        stored.len() > 10,
        "the map did not grow before filling: {}",
        stored.len()
    );
    for id in &stored {
        let (status, _) = curl(
            &a,
            "GET",
            &format!("/v1/namespaces/big/memories/{id}"),
            None,
        );
        assert_eq!(status, 200);
    }
}
