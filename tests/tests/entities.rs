//! Entities over HTTP, as a client sees them: a namespace bound to the
//! shipped extractor shows what each stored memory names, recall narrows to
//! the memories naming given entities over REST and MCP, and the namespace
//! lists its entities with counts — over the real server and plugins.

use serde_json::json;

use crate::common::server::*;

#[test]
fn stored_memories_show_their_entities_and_recall_filters_by_them_over_rest_and_mcp() {
    let Setup { server, admin, .. } = setup_plugins(
        &["redact-pii", "extract-entities"],
        "",
        &[],
        &[r#"{"name": "team", "embedder": "none"}"#],
    );
    let (status, ns) = curl(&admin, "GET", "/v1/namespaces/team", None);
    assert_eq!(status, 200, "{ns}");
    assert_eq!(ns["settings"]["extractor"], "extract-entities");
    let mut ids = Vec::new();
    for text in [
        "Ada Lovelace reviewed the engine notes",
        "Grace Hopper reviewed the compiler notes",
    ] {
        let (status, m) = curl(
            &admin,
            "POST",
            "/v1/namespaces/team/memories",
            Some(&json!({ "content": text }).to_string()),
        );
        assert_eq!(status, 201, "{m}");
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    // Extracted in the background, in microseconds: poll briefly.
    let mut shown = serde_json::Value::Null;
    for _ in 0..100 {
        shown = curl(
            &admin,
            "GET",
            &format!("/v1/namespaces/team/memories/{}", ids[1]),
            None,
        )
        .1;
        if shown["entities"].is_array() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        shown["entities"],
        json!([{ "name": "Grace Hopper", "kind": "name" }])
    );

    let (status, found) = curl(
        &admin,
        "POST",
        "/v1/namespaces/team/recall",
        Some(r#"{"query": "reviewed notes", "entities": ["grace hopper"]}"#),
    );
    assert_eq!(status, 200, "{found}");
    let hits: Vec<&str> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(hits, [ids[1].as_str()]);
    let (status, refused) = curl(
        &admin,
        "POST",
        "/v1/namespaces/team/recall",
        Some(r#"{"query": "notes", "entities": [""]}"#),
    );
    assert_eq!(status, 422, "{refused}");
    assert!(refused["detail"].as_str().unwrap().contains("entities"));

    let r = mcp(
        &admin,
        "tools/call",
        Some("memory_recall"),
        json!({ "name": "memory_recall", "arguments": {
            "namespace": "team", "query": "reviewed notes", "entities": ["Ada Lovelace"]
        }}),
    );
    assert_eq!(r["isError"], false, "{r}");
    let text = r["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("Ada Lovelace reviewed") && !text.contains("Grace"),
        "{text}"
    );

    let (status, listed) = curl(&admin, "GET", "/v1/namespaces/team/entities", None);
    assert_eq!(status, 200, "{listed}");
    let mut names: Vec<(String, u64)> = listed["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["memories"].as_u64().unwrap(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("Ada Lovelace".to_string(), 1),
            ("Grace Hopper".to_string(), 1)
        ]
    );
    assert_eq!(listed["next_page"], serde_json::Value::Null);
    let r = mcp(
        &admin,
        "tools/call",
        Some("memory_entities"),
        json!({ "name": "memory_entities", "arguments": { "namespace": "team" } }),
    );
    assert_eq!(
        r["structuredContent"]["entities"].as_array().unwrap().len(),
        2,
        "{r}"
    );
    drop(server);
}
