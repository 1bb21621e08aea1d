//! What the redactor finds is kept out of every field, not only content:
//! tags and metadata strings are stored, indexed and answered as readers
//! see them, in `store-redacted` and `egress` namespaces alike; and in an
//! `egress` namespace (content stored as written) a writer cannot use
//! duplicate detection to confirm a guess of what readers only see
//! redacted.

use crate::common::server::*;
use serde_json::{Value, json};

fn store(c: &Client, ns: &str, body: Value) -> (u16, Value) {
    curl(
        c,
        "POST",
        &format!("/v1/namespaces/{ns}/memories"),
        Some(&body.to_string()),
    )
}

fn recall(c: &Client, ns: &str, query: &str) -> Vec<Value> {
    let (status, body) = curl(
        c,
        "POST",
        &format!("/v1/namespaces/{ns}/recall"),
        Some(&json!({ "query": query, "mode": "lexical" }).to_string()),
    );
    assert_eq!(status, 200, "{body}");
    body["results"].as_array().unwrap().clone()
}

#[test]
fn an_email_in_a_tag_or_nested_metadata_is_neither_stored_nor_findable() {
    let s = setup(
        "",
        &[],
        &[
            r#"{"name":"kept","embedder":"none"}"#,
            r#"{"name":"shown","embedder":"none","redaction":"egress"}"#,
        ],
    );
    for ns in ["kept", "shown"] {
        let (status, stored) = store(
            &s.admin,
            ns,
            json!({
                "content": "quarterly numbers reviewed",
                "tags": ["owner:carol@example.com", "finance"],
                "metadata": {"contact": {"emails": ["carol@example.com", 3]}, "n": 1},
            }),
        );
        assert_eq!(status, 201, "{stored}");
        let id = stored["id"].as_str().unwrap();
        let (_, read) = curl(
            &s.admin,
            "GET",
            &format!("/v1/namespaces/{ns}/memories/{id}"),
            None,
        );
        for m in [&stored, &read] {
            assert_eq!(m["tags"], json!(["owner:[EMAIL]", "finance"]), "{ns}: {m}");
            assert_eq!(
                m["metadata"],
                json!({"contact": {"emails": ["[EMAIL]", 3]}, "n": 1}),
                "{ns}: {m}"
            );
            assert!(!m.to_string().contains("carol@"), "{ns}: {m}");
        }
        // Counted like content, so a policy deciding on labels sees it.
        assert_eq!(stored["redactions"]["email"], 2, "{ns}: {stored}");
        // The indexes hold what readers see.
        assert!(recall(&s.admin, ns, "carol").is_empty(), "{ns}");
        assert_eq!(recall(&s.admin, ns, "finance").len(), 1, "{ns}");
        // An update's new tags are redacted too.
        let (status, updated) = curl(
            &s.admin,
            "PATCH",
            &format!("/v1/namespaces/{ns}/memories/{id}"),
            Some(&json!({"tags": ["cc:dave@example.org"]}).to_string()),
        );
        assert_eq!(status, 200, "{updated}");
        assert_eq!(updated["tags"], json!(["cc:[EMAIL]"]), "{ns}: {updated}");
        assert!(recall(&s.admin, ns, "dave").is_empty(), "{ns}");
    }
}

#[test]
fn in_an_egress_namespace_duplicates_are_found_only_among_ones_own_memories() {
    let s = setup(
        "",
        &[],
        &[r#"{"name":"shown","embedder":"none","redaction":"egress"}"#],
    );
    let secret = "the vault code is alice@example.com";
    let (status, first) = store(&s.admin, "shown", json!({ "content": secret }));
    assert_eq!(status, 201, "{first}");
    // Its author storing it again gets the same memory back.
    let (status, again) = store(&s.admin, "shown", json!({ "content": secret }));
    assert_eq!((status, &again["id"]), (200, &first["id"]), "{again}");
    // Another writer guessing the text learns nothing: a new memory.
    let guesser = s.admin.as_key(Some(&create_key(
        &s.data,
        "guesser",
        "assistant",
        &["shown=writer"],
        &[],
    )));
    let (status, guess) = store(&guesser, "shown", json!({ "content": secret }));
    assert_eq!(status, 201, "{guess}");
    assert_ne!(guess["id"], first["id"]);
    assert_ne!(guess["duplicate"], true, "{guess}");
    // And what it reads of the first is redacted.
    let (status, read) = curl(
        &guesser,
        "GET",
        &format!(
            "/v1/namespaces/shown/memories/{}",
            first["id"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["content"], "the vault code is [EMAIL]", "{read}");
}
