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
    assert_eq!(
        extracted(&admin, &ids[1], "entities"),
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

    let (names, listed) = listed_counts(&admin);
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

/// The first page of team's entities as (name, memories), sorted, and the
/// page as served.
fn listed_counts(admin: &Client) -> (Vec<(String, u64)>, serde_json::Value) {
    let (status, listed) = curl(admin, "GET", "/v1/namespaces/team/entities", None);
    assert_eq!(status, 200, "{listed}");
    let mut counts: Vec<(String, u64)> = listed["entities"]
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
    counts.sort();
    (counts, listed)
}

/// Field `field` of team's memory `id` once the extractor has filled it
/// (polled: extraction runs in the background, in microseconds).
fn extracted(admin: &Client, id: &str, field: &str) -> serde_json::Value {
    for _ in 0..100 {
        let (status, m) = curl(
            admin,
            "GET",
            &format!("/v1/namespaces/team/memories/{id}"),
            None,
        );
        assert_eq!(status, 200, "{m}");
        if m[field].is_array() {
            return m[field].clone();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("memory {id} never showed {field}");
}

/// The entity names `id` shows once extracted.
fn entities_of(admin: &Client, id: &str) -> Vec<String> {
    extracted(admin, id, "entities")
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

/// The ids recall finds for `query` filtered to memories naming `name`.
fn naming(admin: &Client, name: &str) -> Vec<String> {
    let body = json!({ "query": "met budget", "k": 10, "entities": [name] }).to_string();
    let (status, found) = curl(admin, "POST", "/v1/namespaces/team/recall", Some(&body));
    assert_eq!(status, 200, "{found}");
    let mut ids: Vec<String> = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_gazetteer_makes_aliases_one_entity_at_once_and_undoing_it_restores_the_spellings() {
    let Setup {
        tmp: _tmp,
        server,
        admin,
        data,
    } = setup_plugins(
        &["redact-pii", "extract-entities"],
        "",
        &[],
        &[r#"{"name": "team", "embedder": "none"}"#],
    );
    let mut ids = Vec::new();
    for text in [
        "we met Bob about the budget",
        "we met Robert about the budget",
        "we met Bob Smith and Ada about the budget",
    ] {
        let body = json!({ "content": text }).to_string();
        let (status, m) = curl(&admin, "POST", "/v1/namespaces/team/memories", Some(&body));
        assert_eq!(status, 201, "{m}");
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    assert_eq!(entities_of(&admin, &ids[0]), ["Bob"]);
    assert_eq!(entities_of(&admin, &ids[1]), ["Robert"]);
    assert_eq!(entities_of(&admin, &ids[2]), ["Bob Smith", "Ada"]);
    assert_eq!(naming(&admin, "Bob Smith"), [ids[2].clone()]);

    let (status, g) = curl(&admin, "GET", "/v1/namespaces/team/gazetteer", None);
    assert_eq!((status, g), (200, json!({ "aliases": {} })));
    let aliases = json!({ "aliases": { "bob": "Robert", "Robert": "Bob Smith" } });
    let (status, g) = curl(
        &admin,
        "PUT",
        "/v1/namespaces/team/gazetteer",
        Some(&aliases.to_string()),
    );
    assert_eq!((status, &g), (200, &aliases));

    // At once, without extracting again: each spelling reads as the name.
    assert_eq!(entities_of(&admin, &ids[0]), ["Bob Smith"]);
    assert_eq!(entities_of(&admin, &ids[1]), ["Bob Smith"]);
    let mut all = ids.clone();
    all.sort();
    assert_eq!(naming(&admin, "Bob Smith"), all);
    assert_eq!(
        naming(&admin, "ROBERT"),
        all,
        "an alias filters as its name"
    );
    assert_eq!(naming(&admin, "Ada"), [ids[2].clone()]);
    let (counts, listed) = listed_counts(&admin);
    assert_eq!(
        counts,
        [("Ada".to_string(), 1), ("Bob Smith".to_string(), 3)],
        "{listed}"
    );
    // Paged one by one, the listing shows each name once.
    let (mut seen, mut page) = (Vec::new(), None::<String>);
    loop {
        let path = match &page {
            None => "/v1/namespaces/team/entities?limit=1".to_string(),
            Some(p) => format!("/v1/namespaces/team/entities?limit=1&page={p}"),
        };
        let (status, listed) = curl(&admin, "GET", &path, None);
        assert_eq!(status, 200, "{listed}");
        for e in listed["entities"].as_array().unwrap() {
            seen.push(e["name"].as_str().unwrap().to_string());
        }
        match listed["next_page"].as_str() {
            Some(p) => page = Some(p.to_string()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["Ada", "Bob Smith"]);

    // Bad gazetteers are refused by name and change nothing.
    for (body, says) in [
        (
            json!({ "aliases": { "a": "b", "B": "A" } }),
            "leads back to itself",
        ),
        (
            json!({ "aliases": { "Bob": "Bob Smith", "bob": "Bobby" } }),
            "same alias for two names",
        ),
        (json!({ "aliases": { "Bob": " " } }), "empty"),
        (json!({ "alias": {} }), "alias"),
    ] {
        let (status, refused) = curl(
            &admin,
            "PUT",
            "/v1/namespaces/team/gazetteer",
            Some(&body.to_string()),
        );
        assert_eq!(status, 422, "{body}: {refused}");
        assert!(
            refused["detail"].as_str().unwrap().contains(says),
            "{body}: {refused}"
        );
    }
    let (_, g) = curl(&admin, "GET", "/v1/namespaces/team/gazetteer", None);
    assert_eq!(g, aliases);
    // Only admins edit it; readers read it; unknown namespaces are named.
    let (status, minted) = curl(
        &admin,
        "POST",
        "/v1/admin/keys",
        Some(
            r#"{"agent_id":"viewer","agent_type":"assistant","grants":[{"pattern":"team","role":"reader"}]}"#,
        ),
    );
    assert_eq!(status, 201, "{minted}");
    let reader = admin.as_key(minted["key"].as_str());
    let (status, g) = curl(&reader, "GET", "/v1/namespaces/team/gazetteer", None);
    assert_eq!((status, g), (200, aliases.clone()));
    let (status, refused) = curl(
        &reader,
        "PUT",
        "/v1/namespaces/team/gazetteer",
        Some(r#"{"aliases": {}}"#),
    );
    assert_eq!(status, 403, "{refused}");
    let (status, refused) = curl(&admin, "GET", "/v1/namespaces/nowhere/gazetteer", None);
    assert_eq!(status, 404, "{refused}");
    assert!(
        audit_entries(&admin)
            .iter()
            .any(|e| e["action"] == "namespace.gazetteer"
                && e["outcome"] == "ok"
                && e["namespace"] == "team")
    );

    // Undone: the spellings read as found again.
    let (status, _) = curl(
        &admin,
        "PUT",
        "/v1/namespaces/team/gazetteer",
        Some(r#"{"aliases": {}}"#),
    );
    assert_eq!(status, 200);
    assert_eq!(entities_of(&admin, &ids[1]), ["Robert"]);
    assert_eq!(naming(&admin, "Bob Smith"), [ids[2].clone()]);

    // An agent with the admin profile sets and reads them over MCP.
    let r = mcp(
        &admin,
        "tools/call",
        Some("namespace_gazetteer"),
        json!({ "name": "namespace_gazetteer", "arguments": {
            "namespace": "team", "aliases": { "Robert": "Bob Smith" }
        }}),
    );
    assert_eq!(r["isError"], false, "{r}");
    let mut both = vec![ids[1].clone(), ids[2].clone()];
    both.sort();
    assert_eq!(naming(&admin, "Bob Smith"), both);
    let r = mcp(
        &admin,
        "tools/call",
        Some("namespace_gazetteer"),
        json!({ "name": "namespace_gazetteer", "arguments": { "namespace": "team" } }),
    );
    assert_eq!(
        r["structuredContent"],
        json!({ "aliases": { "Robert": "Bob Smith" } })
    );
    drop(server);
    // Sealed at rest: no alias in clear in the database file.
    let raw = std::fs::read(data.join("db/data.mdb")).unwrap();
    assert!(!raw.windows(6).any(|w| w == b"Robert"));
}

#[test]
fn memories_keep_their_own_timeline_and_recall_filters_by_the_times_they_refer_to() {
    let Setup {
        tmp: _tmp,
        server,
        admin,
        ..
    } = setup_plugins(
        &["redact-pii", "extract-entities"],
        "",
        &[],
        &[r#"{"name": "team", "embedder": "none"}"#],
    );
    // Imported later: said on Wednesday 2025-03-12 at 15:00 UTC, and on
    // 2024-01-01.
    const WEDNESDAY: i64 = 1_741_791_600_000;
    const DAY: i64 = 86_400_000;
    let tuesday = WEDNESDAY - WEDNESDAY % DAY - DAY;
    let mut ids = Vec::new();
    for (text, observed) in [
        ("we shipped the release yesterday", WEDNESDAY),
        ("the release review is next Friday", WEDNESDAY),
        ("the release notes are in the wiki", 1_704_067_200_000),
    ] {
        let body = json!({ "content": text, "observed_at": observed }).to_string();
        let (status, m) = curl(&admin, "POST", "/v1/namespaces/team/memories", Some(&body));
        assert_eq!(status, 201, "{m}");
        assert_eq!(m["observed_at"], observed);
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        extracted(&admin, &ids[1], "event_times")[0]["text"],
        "next Friday"
    );
    assert_eq!(
        extracted(&admin, &ids[0], "event_times"),
        json!([{ "text": "yesterday", "start": tuesday, "end": tuesday + DAY }])
    );

    let window = |since: i64, until: i64| -> Vec<String> {
        let body =
            json!({ "query": "release", "event_since": since, "event_until": until }).to_string();
        let (status, found) = curl(&admin, "POST", "/v1/namespaces/team/recall", Some(&body));
        assert_eq!(status, 200, "{found}");
        found["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect()
    };
    // What happened on the Tuesday: the release, not the review.
    assert_eq!(window(tuesday, tuesday + DAY), [ids[0].clone()]);
    // The Friday after: the review.
    let friday = tuesday + 10 * DAY;
    assert_eq!(window(friday, friday + DAY), [ids[1].clone()]);
    // A memory naming no time counts at the time it was observed.
    assert_eq!(
        window(1_704_067_200_000, 1_704_067_200_000 + DAY),
        [ids[2].clone()]
    );
    assert!(window(0, 1_000).is_empty());

    let r = mcp(
        &admin,
        "tools/call",
        Some("memory_recall"),
        json!({ "name": "memory_recall", "arguments": {
            "namespace": "team", "query": "release",
            "event_since": friday, "event_until": friday + DAY
        }}),
    );
    assert_eq!(r["isError"], false, "{r}");
    let text = r["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("review is next Friday") && !text.contains("shipped"),
        "{text}"
    );

    // Bad times are refused by name; nothing is stored.
    for (path, body, field) in [
        (
            "/v1/namespaces/team/recall",
            json!({ "query": "release", "event_since": 10, "event_until": 10 }),
            "event_until",
        ),
        (
            "/v1/namespaces/team/recall",
            json!({ "query": "release", "event_since": -1 }),
            "event_since",
        ),
        (
            "/v1/namespaces/team/memories",
            json!({ "content": "never stored", "observed_at": -5 }),
            "observed_at",
        ),
    ] {
        let (status, refused) = curl(&admin, "POST", path, Some(&body.to_string()));
        assert_eq!(status, 422, "{body}: {refused}");
        assert!(
            refused["detail"].as_str().unwrap().contains(field),
            "{body}: {refused}"
        );
    }
    let (_, listed) = curl(&admin, "GET", "/v1/namespaces/team/memories", None);
    assert_eq!(listed["memories"].as_array().unwrap().len(), 3);
    drop(server);
}

#[test]
fn extraction_jobs_survive_a_kill_and_run_when_the_extractor_is_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = plugins_config(tmp.path(), &["redact-pii", "extract-entities"], "");
    let server = Server::start(&data, &config);
    let (status, _) = curl(
        &server.client(),
        "POST",
        "/v1/namespaces",
        Some(r#"{"name": "team", "embedder": "none"}"#),
    );
    assert_eq!(status, 201);
    drop(server);

    // Without its extractor the namespace still takes memories; their
    // extraction jobs wait, committed with them.
    std::fs::remove_dir_all(tmp.path().join("plugins/extract-entities")).unwrap();
    let server = Server::start(&data, &config);
    let a = server.client();
    let mut ids = Vec::new();
    for i in 0..20 {
        let body = json!({ "content": format!("we met Ada Lovelace about note {i}") }).to_string();
        let (status, m) = curl(&a, "POST", "/v1/namespaces/team/memories", Some(&body));
        assert_eq!(status, 201, "{m}");
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    let one = format!("/v1/namespaces/team/memories/{}", ids[0]);
    assert!(curl(&a, "GET", &one, None).1["entities"].is_null());
    drop(server); // kill -9

    // Back with the extractor: every queued job runs.
    copy_dir(
        &crate::common::staged("extract-entities"),
        &tmp.path().join("plugins/extract-entities"),
    );
    let server = Server::start(&data, &config);
    let a = server.client();
    let body = json!({ "query": "note", "k": 50, "entities": ["Ada Lovelace"] }).to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, found) = curl(&a, "POST", "/v1/namespaces/team/recall", Some(&body));
        assert_eq!(status, 200, "{found}");
        let n = found["results"].as_array().unwrap().len();
        if n == 20 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "only {n} extracted");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        curl(&a, "GET", &one, None).1["entities"],
        json!([{ "name": "Ada Lovelace", "kind": "name" }])
    );
    drop(server);
}
