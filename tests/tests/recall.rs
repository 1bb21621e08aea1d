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

/// Store `text` in `ns` and wait until it is indexed; the answer.
fn store_indexed(c: &Client, ns: &str, text: &str) -> Value {
    let (status, m) = curl(
        c,
        "POST",
        &format!("/v1/namespaces/{ns}/memories?wait=indexed"),
        Some(&json!({ "content": text }).to_string()),
    );
    assert_eq!(status, 201, "{m}");
    m
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
        let m = store_indexed(&a, "vec", text);
        assert_eq!(m["status"], "ready", "{m}");
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

#[test]
fn a_text_the_embedder_keeps_failing_on_is_marked_failed_with_the_reason() {
    // The counter fixture traps on any text containing "trap".
    let tmp = tempfile::tempdir().unwrap();
    let config = plugins_config(tmp.path(), &["redact-pii"], "");
    crate::common::plugin_dir(
        &tmp.path().join("plugins"),
        "counter",
        "embedder",
        &crate::common::fixture("counter"),
        "",
    );
    let server = Server::start(&tmp.path().join("data"), &config);
    let a = server.client();
    let (status, p) = curl(
        &a,
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"c","redaction":"off","embedder":"counter"}"#),
    );
    assert_eq!(status, 201, "{p}");
    let fine = store_indexed(&a, "c", "an ordinary note");
    assert_eq!(fine["status"], "ready", "{fine}");
    let bad = store_indexed(&a, "c", "this one will trap the model");
    assert_eq!(bad["status"], "failed", "{bad}");
    assert!(
        bad["status_reason"]
            .as_str()
            .unwrap()
            .contains("panicked on this text"),
        "{bad}"
    );
    let id = bad["id"].as_str().unwrap();
    let (_, got) = curl(&a, "GET", &format!("/v1/namespaces/c/memories/{id}"), None);
    assert_eq!(got["status"], "failed", "{got}");
    // Still found by its words.
    let (_, found, _) = recall(&a, "c", json!({ "query": "model", "mode": "lexical" }));
    assert_eq!(found, ["this one will trap the model"]);
    // Changing the text queues it again; this time it is embedded.
    let (status, m) = curl(
        &a,
        "PATCH",
        &format!("/v1/namespaces/c/memories/{id}"),
        Some(r#"{"content":"this one is harmless now"}"#),
    );
    assert_eq!(status, 200, "{m}");
    let ready = (0..300).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (_, got) = curl(&a, "GET", &format!("/v1/namespaces/c/memories/{id}"), None);
        got["status"] == "ready"
    });
    assert!(ready, "the updated memory was not indexed");
}

fn wait_until_indexed(a: &Client, ns: &str) -> Value {
    for _ in 0..500 {
        let (_, got) = curl(a, "GET", &format!("/v1/namespaces/{ns}"), None);
        if got["index"]["queued"] == 0 {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("namespace {ns} was not reindexed in 10 s");
}

#[test]
fn reindex_rebinds_the_embedder_and_re_embeds_everything_in_the_background() {
    let Setup {
        admin: a,
        tmp,
        server: _server,
        data,
        ..
    } = setup_plugins(&["redact-pii", "embed-hashing"], "", &[], &[WITH_EMBEDDER]);
    let texts = [
        "the cat sat on the warm windowsill",
        "quarterly revenue grew in the northern region",
        "deploy the release candidate on friday",
    ];
    for text in texts {
        let m = store_indexed(&a, "vec", text);
        assert_eq!(m["status"], "ready", "{m}");
    }
    let by_meaning = json!({ "query": "cat windowsill", "mode": "vector" });

    // Words only: the vectors go, vector recall says why.
    let (status, r) = curl(
        &a,
        "POST",
        "/v1/namespaces/vec/reindex",
        Some(r#"{"embedder":"none"}"#),
    );
    assert_eq!(status, 202, "{r}");
    assert_eq!(
        (r["embedder"].clone(), r["queued"].clone()),
        (Value::Null, json!(0))
    );
    let (_, ns) = curl(&a, "GET", "/v1/namespaces/vec", None);
    assert!(ns["settings"]["embedder"].is_null(), "{ns}");
    assert!(ns.get("index").is_none(), "{ns}");
    let (status, _, p) = recall(&a, "vec", by_meaning.clone());
    assert_ne!(status, 200, "{p}");
    let (_, found, _) = recall(&a, "vec", json!({ "query": "windowsill" }));
    assert_eq!(found, [texts[0]], "words still work");

    // Back to an embedder, over REST: everything is queued and embedded.
    let (status, r) = curl(
        &a,
        "POST",
        "/v1/namespaces/vec/reindex",
        Some(r#"{"embedder":"embed-hashing"}"#),
    );
    assert_eq!(status, 202, "{r}");
    assert_eq!(
        (r["queued"].clone(), r["dimensions"].clone()),
        (json!(3), json!(256))
    );
    let ns = wait_until_indexed(&a, "vec");
    assert_eq!(ns["index"], json!({ "queued": 0, "failed": 0 }));
    let (status, found, p) = recall(&a, "vec", by_meaning.clone());
    assert_eq!(status, 200, "{p}");
    assert_eq!(found[0], texts[0]);

    // From the command line, while the server runs: it waits and shows
    // progress; the server searches the new generation, not its cache.
    let config = tmp.path().join("memhost.toml");
    let (code, _out, err) = memhost(&[
        "namespace",
        "reindex",
        "vec",
        "--data",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("3 memories queued"), "{err}");
    assert!(err.contains("3 of 3 embedded"), "{err}");
    let (_, found, _) = recall(&a, "vec", by_meaning);
    assert_eq!(found[0], texts[0]);

    // Bad input: an embedder that is not loaded, a namespace that is not there.
    let (status, p) = curl(
        &a,
        "POST",
        "/v1/namespaces/vec/reindex",
        Some(r#"{"embedder":"nope"}"#),
    );
    assert_eq!(status, 422, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("nope"), "{p}");
    let (status, _) = curl(&a, "POST", "/v1/namespaces/ghost/reindex", None);
    assert_eq!(status, 404);
    let (status, p) = curl(
        &a,
        "POST",
        "/v1/namespaces/vec/reindex",
        Some(r#"{"embedder":"embed-hashing","extra":1}"#),
    );
    assert_eq!(status, 422, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("extra"), "{p}");
}

#[test]
fn recall_across_namespaces_searches_what_the_caller_may_read_and_weighs_recency() {
    let Setup {
        admin: a,
        tmp: _tmp,
        server: _server,
        data,
    } = setup(
        "",
        &[],
        &[
            r#"{"name":"ops","redaction":"off"}"#,
            r#"{"name":"sales","redaction":"off"}"#,
            r#"{"name":"secret","redaction":"off"}"#,
        ],
    );
    for (ns, text) in [
        ("ops", "the backup server disk is almost full"),
        ("sales", "the customer asked about backup pricing"),
        ("secret", "backup codes for the vault"),
    ] {
        let (status, _) = curl(
            &a,
            "POST",
            &format!("/v1/namespaces/{ns}/memories"),
            Some(&json!({ "content": text }).to_string()),
        );
        assert_eq!(status, 201);
    }
    let reader = create_key(
        &data,
        "agent-1",
        "bot",
        &["ops=reader", "sales=reader"],
        &[],
    );
    let r = a.as_key(Some(&reader));
    let across = |c: &Client, body: Value| {
        let (status, answer) = curl(c, "POST", "/v1/recall", Some(&body.to_string()));
        let found: Vec<(String, String)> = answer["results"]
            .as_array()
            .map(|hits| {
                hits.iter()
                    .map(|h| {
                        (
                            h["namespace"].as_str().unwrap().to_string(),
                            h["content"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        (status, found, answer)
    };
    // Every readable namespace, and only those.
    let (status, found, answer) = across(&r, json!({ "query": "backup" }));
    assert_eq!(status, 200, "{answer}");
    let mut spaces: Vec<&str> = found.iter().map(|(ns, _)| ns.as_str()).collect();
    spaces.sort();
    assert_eq!(spaces, ["ops", "sales"], "{answer}");
    // A chosen subset; one it may not read is refused, one that is not
    // there is unknown.
    let (_, found, _) = across(&r, json!({ "query": "backup", "namespaces": ["sales"] }));
    assert_eq!(
        found,
        [(
            "sales".into(),
            "the customer asked about backup pricing".into()
        )]
    );
    let (status, _, p) = across(&r, json!({ "query": "backup", "namespaces": ["secret"] }));
    assert_eq!(status, 403, "{p}");
    let (status, _, p) = across(&a, json!({ "query": "backup", "namespaces": ["nowhere"] }));
    assert_eq!(status, 404, "{p}");
    let (status, _, p) = across(&a, json!({ "query": "backup", "namespaces": [] }));
    assert_eq!(status, 422, "{p}");
    // The per-namespace route does not take a namespace list.
    let (status, _, p) = recall(
        &a,
        "ops",
        json!({ "query": "backup", "namespaces": ["ops"] }),
    );
    assert_eq!(status, 422, "{p}");

    // Recency: two equally good matches, the newer one wins once recency
    // counts; without it they rank by relevance alone.
    for text in ["deadline moved to march", "deadline moved to april"] {
        std::thread::sleep(std::time::Duration::from_millis(30));
        curl(
            &a,
            "POST",
            "/v1/namespaces/ops/memories",
            Some(&json!({ "content": text }).to_string()),
        );
    }
    let (_, found, answer) = recall(
        &a,
        "ops",
        json!({ "query": "deadline moved", "recency_weight": 0.5, "half_life_days": 0.000001 }),
    );
    assert_eq!(found[0], "deadline moved to april", "{answer}");
    let scores: Vec<f64> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["score"].as_f64().unwrap())
        .collect();
    assert!(scores[0] > scores[1], "{scores:?}");
    let (status, _, p) = recall(&a, "ops", json!({ "query": "x", "recency_weight": 2 }));
    assert_eq!(status, 422, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("recency_weight"),
        "{p}"
    );
}
