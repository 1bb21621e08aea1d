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
    // Its redaction rules cannot change under the memories (and the index)
    // written with them.
    let (status, p) = curl(
        &a,
        "PATCH",
        "/v1/namespaces/crm",
        Some(r#"{"redaction":"off"}"#),
    );
    assert_eq!(status, 422, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("already holds memories"),
        "{p}"
    );
    // And the raw file holds no word of it.
    let db = std::fs::read(data.join("db/data.mdb")).unwrap();
    for word in ["zebrafish", "renewal"] {
        assert!(
            !db.windows(word.len()).any(|w| w == word.as_bytes()),
            "{word} in the file"
        );
    }
}

const WITH_EMBEDDER: &str = r#"{"name":"vec","redaction":"off","embedder":"embed-hashing"}"#;

#[test]
fn meaning_is_indexed_in_the_background_and_fused_with_words() {
    let Setup {
        admin: a,
        tmp: _tmp,
        server: _server,
        ..
    } = setup_plugins(&["redact-pii", "embed-hashing"], "", &[], &[WITH_EMBEDDER]);
    let (_, ns) = curl(&a, "GET", "/v1/namespaces/vec", None);
    assert_eq!(
        (
            ns["settings"]["embedder"].as_str(),
            ns["settings"]["dimensions"].as_u64()
        ),
        (Some("embed-hashing"), Some(256))
    );
    let mut ids = Vec::new();
    for text in [
        "quarterly revenue grew in the northern region",
        "the cat sat on the warm windowsill",
        "deploy the release candidate on friday",
    ] {
        let (status, m) = curl(
            &a,
            "POST",
            "/v1/namespaces/vec/memories?wait=indexed",
            Some(&json!({ "content": text }).to_string()),
        );
        assert_eq!((status, m["status"].as_str()), (201, Some("ready")), "{m}");
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    let (status, found, answer) = recall(
        &a,
        "vec",
        json!({ "query": "windowsill cat", "mode": "vector" }),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(found[0], "the cat sat on the warm windowsill");
    assert_eq!(answer["results"][0]["channels"], json!(["vector"]));
    let (_, _, answer) = recall(&a, "vec", json!({ "query": "deploy the release" }));
    assert_eq!(
        answer["results"][0]["content"],
        "deploy the release candidate on friday"
    );
    assert_eq!(
        answer["results"][0]["channels"],
        json!(["lexical", "vector"])
    );

    // A forgotten memory leaves the meaning channel too.
    curl(
        &a,
        "DELETE",
        &format!("/v1/namespaces/vec/memories/{}", ids[1]),
        None,
    );
    let (_, found, _) = recall(
        &a,
        "vec",
        json!({ "query": "windowsill cat", "mode": "vector" }),
    );
    assert!(!found.iter().any(|c| c.contains("windowsill")), "{found:?}");

    // The embedder is bound for good; an unknown one is refused at creation.
    let (status, p) = curl(
        &a,
        "PATCH",
        "/v1/namespaces/vec",
        Some(r#"{"embedder":"other"}"#),
    );
    assert_eq!(status, 422, "{p}");
    let (status, p) = curl(
        &a,
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"x","embedder":"nope"}"#),
    );
    assert_eq!(status, 422, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("not a loaded embedder"),
        "{p}"
    );
    let (status, _) = curl(
        &a,
        "POST",
        "/v1/namespaces/vec/memories?wait=soon",
        Some(r#"{"content":"x"}"#),
    );
    assert_eq!(status, 400);
}

#[test]
fn queued_jobs_survive_a_kill_and_run_when_the_embedder_is_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = plugins_config(tmp.path(), &["redact-pii", "embed-hashing"], "");
    let server = Server::start(&data, &config);
    let a = server.client();
    assert_eq!(
        curl(&a, "POST", "/v1/namespaces", Some(WITH_EMBEDDER)).0,
        201
    );
    drop(server);

    // Without its embedder the namespace still takes memories; their jobs
    // wait, and a meaning query says why it cannot answer.
    std::fs::remove_dir_all(tmp.path().join("plugins/embed-hashing")).unwrap();
    let server = Server::start(&data, &config);
    let a = server.client();
    let mut first = String::new();
    for i in 0..20 {
        let (status, m) = curl(
            &a,
            "POST",
            "/v1/namespaces/vec/memories",
            Some(&json!({ "content": format!("orchid note number {i}") }).to_string()),
        );
        assert_eq!(
            (status, m["status"].as_str()),
            (201, Some("indexing")),
            "{m}"
        );
        if i == 0 {
            first = m["id"].as_str().unwrap().to_string();
        }
    }
    let one = format!("/v1/namespaces/vec/memories/{first}");
    assert_eq!(curl(&a, "GET", &one, None).1["status"], "indexing");
    let (status, _, p) = recall(&a, "vec", json!({ "query": "orchid", "mode": "vector" }));
    assert_eq!(status, 503, "{p}");
    assert_eq!(
        recall(&a, "vec", json!({ "query": "orchid", "k": 50 }))
            .1
            .len(),
        20
    );
    drop(server); // kill -9

    // Back with the embedder: every queued job runs.
    copy_dir(
        &crate::common::staged("embed-hashing"),
        &tmp.path().join("plugins/embed-hashing"),
    );
    let server = Server::start(&data, &config);
    let a = server.client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, found, _) = recall(
            &a,
            "vec",
            json!({ "query": "orchid note", "mode": "vector", "k": 50 }),
        );
        if found.len() == 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} indexed",
            found.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(curl(&a, "GET", &one, None).1["status"], "ready");
    drop(server);
    // A restart loads the sealed vectors: meaning answers at once.
    let server = Server::start(&data, &config);
    let (_, found, _) = recall(
        &server.client(),
        "vec",
        json!({ "query": "orchid note", "mode": "vector", "k": 50 }),
    );
    assert_eq!(found.len(), 20);
}
