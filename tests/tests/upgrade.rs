//! A data directory written at store schema 1 — the word index as a row
//! per (word, memory) with 32-byte blind tokens, and each memory's tokens
//! again for its removal — is upgraded when `memhost serve` opens it: the
//! index is rewritten in posting blocks, the schema becomes 2, the same
//! words find the same memories, and forgetting one takes its words away.

use memhost::store::{StoreError, WriteFlags};
use uuid::Uuid;

use crate::common::server::{Server, curl, plugins_config};

const TEXTS: [&str; 3] = [
    "The falcon nests on the north tower every spring",
    "Quarterly budget review moved to Thursday",
    "Ada prefers tea in the morning and coffee after lunch",
];

fn found(server: &Server, query: &str) -> Vec<String> {
    let body = serde_json::json!({ "query": query, "mode": "lexical" }).to_string();
    let (status, r) = curl(
        &server.client(),
        "POST",
        "/v1/namespaces/notes/recall",
        Some(&body),
    );
    assert_eq!(status, 200, "{r}");
    r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// Put the first schema's word index for `memories` (id, searchable text)
/// of namespace `ns` in place of the namespace's current one.
fn write_schema_1(data: &std::path::Path, ns: Uuid, memories: &[(Uuid, String)]) {
    let (store, keyring) = memhost::data_dir::DataDir::new(data).open_store().unwrap();
    let key = keyring
        .key(&store, &[b"ns/".as_slice(), ns.as_bytes()].concat())
        .unwrap();
    let current = store
        .rows(|t| t.terms, ns.as_bytes(), |k| k.starts_with(ns.as_bytes()))
        .unwrap();
    assert!(!current.is_empty());
    let rows = memhost::index::lexical::schema_1_rows(&key, &ns, memories);
    store
        .write_blocking(move |txn, t| {
            for (k, _) in &current {
                txn.del(t.terms, k)?;
            }
            for (k, v) in &rows {
                txn.put(t.terms, k, v, WriteFlags::empty())?;
            }
            txn.put(
                t.meta,
                b"schema_version",
                &1u32.to_be_bytes(),
                WriteFlags::empty(),
            )?;
            Ok::<(), StoreError>(())
        })
        .unwrap();
    store.close();
}

#[test]
fn a_schema_1_word_index_is_rewritten_when_the_server_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = plugins_config(dir.path(), &[], "");
    let server = Server::start(&data, &config);
    let (status, ns) = curl(
        &server.client(),
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"notes","redaction":"off"}"#),
    );
    assert_eq!(status, 201, "{ns}");
    let mut ids = Vec::new();
    for text in TEXTS {
        let body = serde_json::json!({ "content": text }).to_string();
        let (status, r) = curl(
            &server.client(),
            "POST",
            "/v1/namespaces/notes/memories",
            Some(&body),
        );
        assert_eq!(status, 201, "{r}");
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    assert_eq!(found(&server, "falcon"), [ids[0].clone()]);
    drop(server);

    // The searchable text: title, content, tags, one per line.
    let memories: Vec<(Uuid, String)> = ids
        .iter()
        .zip(TEXTS)
        .map(|(id, text)| (id.parse().unwrap(), format!("\n{text}\n")))
        .collect();
    write_schema_1(
        &data,
        ns["id"].as_str().unwrap().parse().unwrap(),
        &memories,
    );

    let server = Server::start(&data, &config);
    assert!(
        server.seen.iter().any(|l| l.contains("store upgraded")),
        "the server did not say it upgraded the store:\n{}",
        server.seen.join("\n")
    );
    assert_eq!(found(&server, "falcon towers"), [ids[0].clone()]);
    assert_eq!(found(&server, "budget"), [ids[1].clone()]);
    assert_eq!(found(&server, "coffee"), [ids[2].clone()]);
    // Forgotten, its words find it no more; the others are kept.
    let (status, _) = curl(
        &server.client(),
        "DELETE",
        &format!("/v1/namespaces/notes/memories/{}", ids[0]),
        None,
    );
    assert_eq!(status, 204);
    assert!(found(&server, "falcon").is_empty());
    assert_eq!(found(&server, "tea"), [ids[2].clone()]);
    drop(server);

    let (store, _) = memhost::data_dir::DataDir::new(&data).open_store().unwrap();
    assert_eq!(store.schema_version().unwrap(), 2);
    let kinds: std::collections::BTreeSet<u8> = store
        .rows(|t| t.terms, &[], |_| true)
        .unwrap()
        .iter()
        .filter_map(|(k, _)| k.get(16).copied())
        .collect();
    assert!(
        kinds.iter().all(|k| b"TNMLS".contains(k)),
        "rows of the first format are left: {:?}",
        kinds.iter().map(|k| *k as char).collect::<Vec<_>>()
    );
}
