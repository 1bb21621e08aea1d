//! One tenant cannot slow all: namespaces are counted and their free-text
//! fields bounded; the server's in-memory list of namespaces stays true
//! when another process (the operator's command line) changes them; and a
//! question naming one namespace a hundred times costs one search.

use crate::common::server::*;
use serde_json::json;

fn names(c: &Client) -> Vec<String> {
    let (status, body) = curl(c, "GET", "/v1/namespaces", None);
    assert_eq!(status, 200, "{body}");
    body["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn namespaces_are_capped_and_bounded_and_listed_as_they_are() {
    let s = setup("[limits]\nmax_namespaces = 3\n", &[], &[]);
    let create =
        |body: serde_json::Value| curl(&s.admin, "POST", "/v1/namespaces", Some(&body.to_string()));
    let (status, body) = create(json!({"name": "long", "description": "x".repeat(2000)}));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("description"),
        "{body}"
    );
    for name in ["a", "b"] {
        assert_eq!(create(json!({"name": name, "embedder": "none"})).0, 201);
    }
    // Listed (and so cached); then the command line adds one beside the
    // running server: the list shows it at once.
    assert_eq!(names(&s.admin), ["a", "b"]);
    let (code, _, err) = memhost(&[
        "namespace",
        "create",
        "c",
        "--data",
        s.data.to_str().unwrap(),
        "--config",
        s.tmp.path().join("memhost.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(names(&s.admin), ["a", "b", "c"]);
    // The cap holds, naming the setting.
    let (status, body) = create(json!({"name": "d", "embedder": "none"}));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("max_namespaces"),
        "{body}"
    );
    // A delete makes room, and the list follows.
    assert_eq!(curl(&s.admin, "DELETE", "/v1/namespaces/a", None).0, 204);
    assert_eq!(names(&s.admin), ["b", "c"]);
    assert_eq!(create(json!({"name": "d", "embedder": "none"})).0, 201);
}

#[test]
fn a_namespace_named_many_times_in_one_question_is_searched_once() {
    let s = setup("", &[], &[r#"{"name":"big","embedder":"none"}"#]);
    let (status, _) = curl(
        &s.admin,
        "POST",
        "/v1/namespaces/big/memories",
        Some(r#"{"content":"the heron nests by the river"}"#),
    );
    assert_eq!(status, 201);
    let (status, body) = curl(
        &s.admin,
        "POST",
        "/v1/recall",
        Some(
            &json!({"query": "heron", "mode": "lexical", "namespaces": vec!["big"; 100]})
                .to_string(),
        ),
    );
    assert_eq!(status, 200, "{body}");
    // One hit, not a hundred copies of it.
    assert_eq!(body["results"].as_array().unwrap().len(), 1, "{body}");
}
