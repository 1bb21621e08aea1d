//! Recall over REST: words find memories (stemmed, ranked), filters apply,
//! updates, forgets and expiry show at once, and what a read would redact
//! cannot be found by searching for it.

use crate::common::server::*;
use serde_json::{Value, json};

fn recall(c: &Client, ns: &str, body: Value) -> (u16, Vec<String>, Value) {
    let (status, answer) = curl(
        c,
        "POST",
        &format!("/v1/namespaces/{ns}/recall"),
        Some(&body.to_string()),
    );
    let contents = answer["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|h| h["content"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    (status, contents, answer)
}

#[test]
fn words_find_memories_and_changes_show_at_once() {
    let Setup {
        admin: a,
        tmp: _tmp,
        server: _server,
        ..
    } = setup("", &[], &[r#"{"name":"notes","redaction":"off"}"#]);
    let store = |content: &str, tags: &[&str]| -> String {
        let (status, m) = curl(
            &a,
            "POST",
            "/v1/namespaces/notes/memories",
            Some(&json!({ "content": content, "tags": tags }).to_string()),
        );
        assert_eq!(status, 201, "{m}");
        m["id"].as_str().unwrap().to_string()
    };
    let tea = store("Ada prefers green tea in the mornings", &["people"]);
    let budget = store(
        "The budget review moved to Thursday; budgets are due Friday",
        &["work"],
    );
    store("Grace runs the compiler team", &["people"]);

    // Stemmed words, ranked: "budgets" finds the budget note first.
    let (status, found, answer) = recall(&a, "notes", json!({ "query": "budgets due" }));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        found[0],
        "The budget review moved to Thursday; budgets are due Friday"
    );
    assert_eq!(answer["results"][0]["channels"], json!(["lexical"]));
    assert!(answer["results"][0]["score"].as_f64().unwrap() > 0.0);
    let (_, found, _) = recall(
        &a,
        "notes",
        json!({ "query": "morning", "mode": "lexical" }),
    );
    assert_eq!(found, ["Ada prefers green tea in the mornings"]);
    // Filters.
    let (_, found, _) = recall(
        &a,
        "notes",
        json!({ "query": "tea team", "tags": ["people"], "k": 5 }),
    );
    assert_eq!(found.len(), 2);
    let (_, found, _) = recall(
        &a,
        "notes",
        json!({ "query": "tea team", "tags": ["work"] }),
    );
    assert!(found.is_empty());

    // An update replaces the words; a forget removes them.
    curl(
        &a,
        "PATCH",
        &format!("/v1/namespaces/notes/memories/{tea}"),
        Some(r#"{"content":"Ada switched to espresso"}"#),
    );
    assert!(
        recall(&a, "notes", json!({ "query": "green tea" }))
            .1
            .is_empty()
    );
    assert_eq!(
        recall(&a, "notes", json!({ "query": "espresso" })).1,
        ["Ada switched to espresso"]
    );
    assert_eq!(
        curl(
            &a,
            "DELETE",
            &format!("/v1/namespaces/notes/memories/{budget}"),
            None
        )
        .0,
        204
    );
    assert!(
        recall(&a, "notes", json!({ "query": "budget" }))
            .1
            .is_empty()
    );

    // Expired memories never appear.
    curl(
        &a,
        "POST",
        "/v1/namespaces/notes/memories",
        Some(r#"{"content":"ephemeral password hint","ttl_seconds":1}"#),
    );
    assert_eq!(
        recall(&a, "notes", json!({ "query": "ephemeral" })).1.len(),
        1
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(
        recall(&a, "notes", json!({ "query": "ephemeral" }))
            .1
            .is_empty()
    );

    // Bad input.
    assert_eq!(recall(&a, "nope", json!({ "query": "x" })).0, 404);
    let (status, _, p) = recall(&a, "notes", json!({ "query": " " }));
    assert_eq!(status, 422, "{p}");
    let (status, _, p) = recall(&a, "notes", json!({ "query": "x", "k": 0 }));
    assert_eq!(status, 422, "{p}");
    let (status, _, p) = recall(&a, "notes", json!({ "query": "x", "mode": "vector" }));
    assert!(
        status == 422 && p["detail"].as_str().unwrap().contains("embedder"),
        "{p}"
    );
    let (status, _, p) = recall(&a, "notes", json!({ "query": "x", "mode": "psychic" }));
    assert_eq!(status, 422, "{p}");
}

#[test]
fn what_a_read_would_redact_cannot_be_searched_for() {
    let Setup {
        admin: a,
        data,
        server: _server,
        tmp: _tmp,
    } = setup("", &[], &[]);
    // Egress mode keeps the content as written (sealed) and redacts reads:
    // the index must hold the redacted words only.
    curl(
        &a,
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"crm","redaction":"egress"}"#),
    );
    curl(
        &a,
        "POST",
        "/v1/namespaces/crm/memories",
        Some(r#"{"content":"Write to zebrafish.quokka@example.com about the renewal"}"#),
    );
    assert!(
        recall(&a, "crm", json!({ "query": "zebrafish quokka" }))
            .1
            .is_empty()
    );
    let (_, found, _) = recall(&a, "crm", json!({ "query": "renewal" }));
    assert_eq!(found, ["Write to [EMAIL] about the renewal"]);
    // And the raw file holds no word of it.
    let db = std::fs::read(data.join("db/data.mdb")).unwrap();
    for word in ["zebrafish", "renewal"] {
        assert!(
            !db.windows(word.len()).any(|w| w == word.as_bytes()),
            "{word} in the file"
        );
    }
}
