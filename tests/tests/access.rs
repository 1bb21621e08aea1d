//! Identity, access, limits and the audit log, against the real server:
//! every documented route × every kind of caller, identity from the key
//! only, keys that change while the server runs, rate limits, and an audit
//! chain that verifies — and names the entry an attacker changed.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::server::*;
use serde_json::{Value, json};

/// The least a caller needs for a route.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Needs {
    /// Any valid key.
    AnyKey,
    /// Reader on `team-a`.
    Reader,
    /// Writer on `team-a` (and, for a memory, its author).
    Writer,
    /// Admin on `team-a`.
    NsAdmin,
    /// Admin of some namespace (sees the keys within its reach).
    AnyAdmin,
    /// `*=admin`.
    GlobalAdmin,
    /// Any role on `team-a`; keys without one are answered 404 (an
    /// approval's id is no oracle).
    Member,
    /// Admin on `team-a`; members without it 403, others 404.
    NsAdminElse404,
}

/// What each documented route needs. A route missing here fails the test:
/// a new route must state who may call it.
fn needs(method: &str, path: &str) -> Needs {
    match (method, path) {
        ("get", "/v1/openapi.json") | ("get", "/v1/namespaces") => Needs::AnyKey,
        ("post", "/v1/namespaces") => Needs::NsAdmin,
        ("get", "/v1/namespaces/{ns}") => Needs::Reader,
        ("patch", "/v1/namespaces/{ns}") => Needs::NsAdmin,
        ("delete", "/v1/namespaces/{ns}") => Needs::NsAdmin,
        ("post", "/v1/namespaces/{ns}/memories") => Needs::Writer,
        ("post", "/v1/namespaces/{ns}/memories/bulk") => Needs::Writer,
        ("get", "/v1/namespaces/{ns}/memories") => Needs::Reader,
        ("get", "/v1/namespaces/{ns}/memories/{id}") => Needs::Reader,
        ("patch", "/v1/namespaces/{ns}/memories/{id}") => Needs::Writer,
        ("delete", "/v1/namespaces/{ns}/memories/{id}") => Needs::Writer,
        ("get", "/v1/namespaces/{ns}/memories/{id}/history") => Needs::Reader,
        ("post", "/v1/namespaces/{ns}/recall") => Needs::Reader,
        ("get", "/v1/namespaces/{ns}/entities") => Needs::Reader,
        ("get", "/v1/namespaces/{ns}/gazetteer") => Needs::Reader,
        ("put", "/v1/namespaces/{ns}/gazetteer") => Needs::NsAdmin,
        ("post", "/v1/namespaces/{ns}/reindex") => Needs::NsAdmin,
        ("get", "/v1/namespaces/{ns}/export") => Needs::NsAdmin,
        ("post", "/v1/namespaces/{ns}/import") => Needs::Writer,
        ("post", "/v1/recall") => Needs::AnyKey,
        ("get", "/v1/admin/keys") => Needs::AnyAdmin,
        ("post", "/v1/admin/keys") => Needs::NsAdmin,
        ("delete", "/v1/admin/keys/{key_id}") => Needs::NsAdmin,
        ("get", "/v1/admin/audit") => Needs::GlobalAdmin,
        // Approvals: members of the item's namespace see and vote (an
        // outsider's 404 makes ids no oracle, and counts as answered here).
        ("get", "/v1/approvals") => Needs::AnyKey,
        ("get", "/v1/approvals/{approval_id}") => Needs::Member,
        ("post", "/v1/approvals/{approval_id}/votes") => Needs::Member,
        // The requester or a namespace admin; an outsider gets 404.
        ("post", "/v1/approvals/{approval_id}/cancel") => Needs::NsAdminElse404,
        _ => panic!(
            "{method} {path} is in the OpenAPI document but not in the authorization matrix: say who may call it"
        ),
    }
}

/// The callers, weakest first, and what each one holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    NoKey,
    WrongKey,
    RevokedKey,
    ExpiredKey,
    Reader,
    Writer,
    OtherAdmin,
    NsAdmin,
    GlobalAdmin,
}

impl Caller {
    fn authenticated(self) -> bool {
        !matches!(
            self,
            Caller::NoKey | Caller::WrongKey | Caller::RevokedKey | Caller::ExpiredKey
        )
    }

    fn may(self, needs: Needs) -> bool {
        use Caller as C;
        match needs {
            Needs::AnyKey => self.authenticated(),
            Needs::Reader => matches!(self, C::Reader | C::Writer | C::NsAdmin | C::GlobalAdmin),
            Needs::Writer => matches!(self, C::Writer | C::NsAdmin | C::GlobalAdmin),
            Needs::NsAdmin => matches!(self, C::NsAdmin | C::GlobalAdmin),
            Needs::AnyAdmin => matches!(self, C::OtherAdmin | C::NsAdmin | C::GlobalAdmin),
            Needs::GlobalAdmin => self == C::GlobalAdmin,
            Needs::Member => matches!(self, C::Reader | C::Writer | C::NsAdmin | C::GlobalAdmin),
            Needs::NsAdminElse404 => matches!(self, C::NsAdmin | C::GlobalAdmin),
        }
    }
}

fn key_id(key: &str) -> &str {
    &key[4..20]
}

#[test]
fn authorization_matrix_covers_every_documented_route() {
    // Limits are tested on their own below; here they must not interfere.
    let limits =
        "[limits]\nrequests_per_second = 10000\nburst = 10000\nauth_failures_per_minute = 10000\n";
    let Setup {
        tmp: _tmp,
        data,
        server,
        admin,
    } = setup(
        limits,
        &[],
        // Updates wait for one approval: the approval routes need items.
        &[
            r#"{"name":"team-a","policy":"update=consensus:1; *=allow"}"#,
            r#"{"name":"team-b"}"#,
        ],
    );
    // The expired key first: it needs a second to pass its expiry.
    let expired = create_key(&data, "old", "bot", &["team-a=admin"], &["--expires", "1s"]);
    let expired_at = std::time::Instant::now() + std::time::Duration::from_millis(1100);
    let reader = create_key(&data, "reader-1", "bot", &["team-a=reader"], &[]);
    let writer = create_key(&data, "writer-1", "bot", &["team-a=writer"], &[]);
    let other_admin = create_key(&data, "admin-b", "human", &["team-b=admin"], &[]);
    // `team-a*`: also admin of the namespaces made to be deleted below.
    let ns_admin = create_key(&data, "admin-a", "human", &["team-a*=admin"], &[]);
    let revoked = create_key(&data, "gone", "bot", &["*=admin"], &[]);
    let (code, _, err) = memhost(&[
        "keys",
        "revoke",
        key_id(&revoked),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // A real key id with the wrong secret.
    let wrong = format!("mhk_{}_{}", key_id(&reader), "0".repeat(64));
    let target_key = create_key(&data, "target", "bot", &["team-a=reader"], &[]);
    // Asks for the approvals the approval routes act on; never a caller.
    let requester = create_key(&data, "requester", "bot", &["team-a=writer"], &[]);
    while std::time::Instant::now() < expired_at {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let callers: Vec<(Caller, Option<String>)> = vec![
        (Caller::NoKey, None),
        (Caller::WrongKey, Some(wrong)),
        (Caller::RevokedKey, Some(revoked)),
        (Caller::ExpiredKey, Some(expired)),
        (Caller::Reader, Some(reader)),
        (Caller::Writer, Some(writer.clone())),
        (Caller::OtherAdmin, Some(other_admin)),
        (Caller::NsAdmin, Some(ns_admin)),
        (Caller::GlobalAdmin, Some(server.key.clone())),
    ];

    let (_, doc) = curl(&admin, "GET", "/v1/openapi.json", None);
    let routes = documented_routes(&doc);
    assert!(routes.len() >= 18, "{routes:?}");
    let recipient = crate::common::age_recipient();

    let as_writer = admin.as_key(Some(&writer));
    let as_requester = admin.as_key(Some(&requester));
    let mut table = BTreeMap::new();
    let mut attempts = 0;
    for (method, path) in &routes {
        let needs = needs(method, path);
        for (caller, key) in &callers {
            // A fresh memory by the writer for every attempt, so a forget
            // by one caller does not turn the next one's answer into 404.
            let (_, m) = curl(
                &as_writer,
                "POST",
                "/v1/namespaces/team-a/memories",
                Some(
                    &json!({ "content": format!("note for {method} {path} {caller:?}") })
                        .to_string(),
                ),
            );
            let id = m["id"].as_str().expect("the writer stores").to_string();
            // Deleting a namespace gets one of its own each time.
            let ns = if (method.as_str(), path.as_str()) == ("delete", "/v1/namespaces/{ns}") {
                let name = format!("team-a-{}", table.len() + attempts);
                let body = json!({ "name": name }).to_string();
                assert_eq!(curl(&admin, "POST", "/v1/namespaces", Some(&body)).0, 201);
                name
            } else {
                "team-a".to_string()
            };
            attempts += 1;
            // A fresh held update for every approval route attempt.
            let approval = if path.contains("{approval_id}") {
                let (_, own) = curl(
                    &as_requester,
                    "POST",
                    "/v1/namespaces/team-a/memories",
                    Some(&json!({ "content": format!("own {attempts}") }).to_string()),
                );
                let own = own["id"].as_str().expect("the requester stores");
                let (status, held) = curl(
                    &as_requester,
                    "PATCH",
                    &format!("/v1/namespaces/team-a/memories/{own}"),
                    Some(r#"{"tags":["held"]}"#),
                );
                assert_eq!(status, 202, "{held}");
                Some((
                    held["approval"]["id"].as_str().unwrap().to_string(),
                    held["approval"]["payload_hash"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                ))
            } else {
                None
            };
            let url = path
                .replace("{ns}", &ns)
                .replace("{id}", &id)
                .replace(
                    "{approval_id}",
                    approval.as_ref().map_or("", |(id, _)| id.as_str()),
                )
                .replace("{key_id}", key_id(&target_key));
            let url = if url.ends_with("/export") {
                format!("{url}?recipient={recipient}")
            } else {
                url
            };
            let body = match (method.as_str(), path.as_str()) {
                ("post", "/v1/namespaces") => Some(json!({ "name": "team-a" }).to_string()),
                ("post", "/v1/admin/keys") => Some(
                    json!({ "agent_id": "new", "agent_type": "bot",
                            "grants": [{ "pattern": "team-a", "role": "reader" }] })
                    .to_string(),
                ),
                ("post", p) if p.ends_with("/recall") => Some(r#"{"query":"note"}"#.into()),
                ("post", p) if p.ends_with("/reindex") => None,
                ("post", p) if p.ends_with("/cancel") => None,
                ("post", p) if p.ends_with("/votes") => Some(
                    json!({ "decision": "approve",
                            "payload_hash": approval.as_ref().map_or("", |(_, h)| h.as_str()) })
                    .to_string(),
                ),
                ("post", p) if p.ends_with("/import") => {
                    Some(r#"{"results":[{"memory":"imported"}]}"#.into())
                }
                ("post", p) if p.ends_with("/bulk") => {
                    Some(r#"{"memories":[{"content":"bulk"}]}"#.into())
                }
                ("post", _) => Some(json!({ "content": format!("{caller:?} stores") }).to_string()),
                ("patch", p) if p.ends_with("{id}") => Some(r#"{"tags":["changed"]}"#.into()),
                ("patch", _) => Some(r#"{"description":"changed"}"#.into()),
                ("put", _) => Some(r#"{"aliases":{"Bob":"Bob Smith"}}"#.into()),
                _ => None,
            };
            let client = admin.as_key(key.as_deref());
            let (status, problem) = curl(&client, &method.to_uppercase(), &url, body.as_deref());
            let outsider_404 = matches!(needs, Needs::Member | Needs::NsAdminElse404)
                && *caller == Caller::OtherAdmin;
            let expected = if !caller.authenticated() {
                "401"
            } else if outsider_404 {
                "404"
            } else if caller.may(needs) {
                "allowed"
            } else {
                "403"
            };
            let got = match status {
                401 => "401",
                403 => "403",
                404 if outsider_404 => "404",
                s if s < 500 => "allowed",
                _ => "error",
            };
            if got != expected {
                table.insert(
                    format!("{method} {path} as {caller:?}"),
                    format!("expected {expected}, got {status}: {problem}"),
                );
            }
            if status == 401 {
                assert_eq!(problem["type"], "https://memhost.dev/problems/unauthorized");
            }
        }
    }
    assert!(
        table.is_empty(),
        "authorization matrix mismatches:\n{table:#?}"
    );
}

#[test]
fn identity_comes_from_the_key_and_writers_change_only_their_own() {
    let Setup {
        tmp: _tmp,
        data,
        server: _server,
        admin,
    } = setup("", &[], &[r#"{"name":"shared","redaction":"off"}"#]);
    let alice = admin.as_key(Some(&create_key(
        &data,
        "alice",
        "assistant",
        &["shared=writer"],
        &[],
    )));
    let bob = admin.as_key(Some(&create_key(
        &data,
        "bob",
        "assistant",
        &["shared=writer"],
        &[],
    )));

    // A body that claims another identity is refused, naming the field,
    // and nothing is stored.
    let (status, problem) = curl(
        &alice,
        "POST",
        "/v1/namespaces/shared/memories",
        Some(r#"{"content":"I am bob","agent_id":"bob","agent_type":"human"}"#),
    );
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("agent_id"),
        "{problem}"
    );
    let (_, page) = curl(&admin, "GET", "/v1/namespaces/shared/memories", None);
    assert_eq!(page["memories"].as_array().unwrap().len(), 0);

    // What is stored carries the key's identity.
    let (status, m) = curl(
        &alice,
        "POST",
        "/v1/namespaces/shared/memories",
        Some(r#"{"content":"alice was here"}"#),
    );
    assert_eq!(status, 201, "{m}");
    assert_eq!(
        (m["agent_id"].as_str(), m["agent_type"].as_str()),
        (Some("alice"), Some("assistant"))
    );
    let id = m["id"].as_str().unwrap();
    let path = format!("/v1/namespaces/shared/memories/{id}");

    // Bob may read it but not change or forget it; the admin may.
    assert_eq!(curl(&bob, "GET", &path, None).0, 200);
    let (status, problem) = curl(&bob, "PATCH", &path, Some(r#"{"content":"bob's now"}"#));
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("written by agent \"alice\""),
        "{problem}"
    );
    assert_eq!(curl(&bob, "DELETE", &path, None).0, 403);
    let (status, m) = curl(&alice, "PATCH", &path, Some(r#"{"tags":["mine"]}"#));
    assert_eq!((status, m["version"].as_u64()), (200, Some(2)), "{m}");
    // An admin's edit does not take the memory over: alice stays its
    // author (and may still forget it); the version says who wrote it.
    let (status, m) = curl(&admin, "PATCH", &path, Some(r#"{"tags":["checked"]}"#));
    assert_eq!(status, 200, "{m}");
    assert_eq!(
        (m["agent_id"].as_str(), m["updated_by"].as_str()),
        (Some("alice"), Some("test-admin"))
    );
    assert_eq!(curl(&alice, "DELETE", &path, None).0, 204);
    let (_, m) = curl(
        &alice,
        "POST",
        "/v1/namespaces/shared/memories",
        Some(r#"{"content":"another"}"#),
    );
    let path = format!(
        "/v1/namespaces/shared/memories/{}",
        m["id"].as_str().unwrap()
    );
    assert_eq!(curl(&admin, "DELETE", &path, None).0, 204);

    // The audit log names who did what, by key.
    let entries = audit_entries(&admin);
    let find = |action: &str, outcome: &str, agent: &str| {
        entries
            .iter()
            .any(|e| e["action"] == action && e["outcome"] == outcome && e["agent_id"] == agent)
    };
    assert!(find("memory.store", "ok", "alice"), "{entries:#?}");
    assert!(find("memory.update", "denied", "bob"), "{entries:#?}");
    assert!(find("memory.forget", "denied", "bob"), "{entries:#?}");
    assert!(find("memory.update", "ok", "alice"), "{entries:#?}");
    assert!(find("memory.forget", "ok", "test-admin"), "{entries:#?}");
    // A namespace the caller has no role on is forbidden whether or not it
    // exists: the answer does not reveal which names are taken.
    assert_eq!(
        curl(&alice, "GET", "/v1/namespaces/secret-plans", None).0,
        403
    );
    assert_eq!(curl(&alice, "GET", "/v1/namespaces/shared", None).0, 200);
    let (_, list) = curl(&alice, "GET", "/v1/namespaces", None);
    assert_eq!(list["namespaces"].as_array().unwrap().len(), 1);
}

#[test]
fn keys_change_while_the_server_runs_and_are_shown_once() {
    let Setup {
        tmp: _tmp,
        data,
        server,
        admin,
    } = setup("", &[], &[r#"{"name":"team-a"}"#]);

    // Created by the CLI next to the running server: works at once.
    let key = create_key(&data, "agent-7", "assistant", &["team-a=reader"], &[]);
    let agent = admin.as_key(Some(&key));
    assert_eq!(
        curl(&agent, "GET", "/v1/namespaces/team-a/memories", None).0,
        200
    );
    // Listed without its secret.
    let (code, listed, _) = memhost(&["keys", "list", "--json", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        listed.contains(key_id(&key)) && !listed.contains(&key[21..]),
        "{listed}"
    );
    assert!(!listed.contains("sha256"), "{listed}");
    // Revoked by the CLI: refused at once, with no restart.
    let (code, _, err) = memhost(&[
        "keys",
        "revoke",
        key_id(&key),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let r = curl_full(&agent, "GET", "/v1/namespaces/team-a/memories", None, &[]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Bearer realm=\"memhost\"")
    );

    // Over REST: a namespace admin creates a key within its reach, gets the
    // key once, and cannot reach further.
    let ns_admin = admin.as_key(Some(&create_key(
        &data,
        "lead",
        "human",
        &["team-*=admin"],
        &["--expires", "1h"],
    )));
    let (status, created) = curl(
        &ns_admin,
        "POST",
        "/v1/admin/keys",
        Some(
            r#"{"agent_id":"helper","agent_type":"bot","grants":[{"pattern":"team-a","role":"writer"}]}"#,
        ),
    );
    assert_eq!(status, 201, "{created}");
    let secret = created["key"].as_str().unwrap().to_string();
    // It asked for no expiry but cannot outlive the key that made it.
    let (_, lead) = curl(&ns_admin, "GET", "/v1/admin/keys", None);
    let lead_expiry = lead["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["agent_id"] == "lead")
        .unwrap()["expires_at"]
        .as_i64()
        .unwrap();
    assert_eq!(created["expires_at"].as_i64(), Some(lead_expiry));
    // Nor can it give a key its own (higher) rate: only a global admin can.
    let (status, problem) = curl(
        &ns_admin,
        "POST",
        "/v1/admin/keys",
        Some(
            r#"{"agent_id":"fast","agent_type":"bot","grants":[{"pattern":"team-a","role":"reader"}],"rate":{"per_second":1000000,"burst":1000000}}"#,
        ),
    );
    assert_eq!(status, 403, "{problem}");
    assert_eq!(created["status"], "active");
    let helper = admin.as_key(Some(&secret));
    assert_eq!(
        curl(
            &helper,
            "POST",
            "/v1/namespaces/team-a/memories",
            Some(r#"{"content":"hi"}"#)
        )
        .0,
        201
    );
    let (_, keys) = curl(&ns_admin, "GET", "/v1/admin/keys", None);
    let text = keys.to_string();
    assert!(
        text.contains("helper") && !text.contains(&secret[21..]),
        "{text}"
    );
    // The global admin key is out of its reach, so not even listed.
    assert!(!text.contains("test-admin"), "{text}");
    let (status, problem) = curl(
        &ns_admin,
        "POST",
        "/v1/admin/keys",
        Some(r#"{"agent_id":"x","agent_type":"bot","grants":[{"pattern":"*","role":"admin"}]}"#),
    );
    assert_eq!(status, 403, "{problem}");
    // Bad input names what is wrong.
    let (status, problem) = curl(
        &admin,
        "POST",
        "/v1/admin/keys",
        Some(
            r#"{"agent_id":"x","agent_type":"bot","grants":[{"pattern":"Te*am","role":"reader"}]}"#,
        ),
    );
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("Te*am"),
        "{problem}"
    );
    let (status, _) = curl(&admin, "DELETE", "/v1/admin/keys/not-a-key", None);
    assert_eq!(status, 404);
    // Revoked over REST.
    let helper_id = created["id"].as_str().unwrap();
    let (status, info) = curl(
        &ns_admin,
        "DELETE",
        &format!("/v1/admin/keys/{helper_id}"),
        None,
    );
    assert_eq!(
        (status, info["status"].as_str()),
        (200, Some("revoked")),
        "{info}"
    );
    assert_eq!(curl(&helper, "GET", "/v1/namespaces", None).0, 401);

    // Keys never travel in the URL.
    let (status, problem) = curl(
        &admin.as_key(None),
        "GET",
        &format!("/v1/namespaces?api_key={}", server.key),
        None,
    );
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["type"], "https://memhost.dev/problems/key-in-query");
    // /health stays open.
    assert!(server.get("/health").contains("\"status\":\"ok\""));
}

#[test]
fn revoking_a_key_revokes_every_key_minted_under_it() {
    let s = setup("", &[], &[r#"{"name":"team-a","embedder":"none"}"#]);
    let mint = |by: &Client, agent: &str, role: &str| -> (String, Client) {
        let body = format!(
            r#"{{"agent_id":"{agent}","agent_type":"bot","grants":[{{"pattern":"team-a","role":"{role}"}}]}}"#
        );
        let (status, created) = curl(by, "POST", "/v1/admin/keys", Some(&body));
        assert_eq!(status, 201, "{created}");
        let key = created["key"].as_str().unwrap().to_string();
        (key_id(&key).to_string(), s.admin.as_key(Some(&key)))
    };
    // A leaked team admin key, what it minted, and what that minted.
    let leaked = s.admin.as_key(Some(&create_key(
        &s.data,
        "lead",
        "human",
        &["team-*=admin"],
        &[],
    )));
    let (child_id, child) = mint(&leaked, "deputy", "admin");
    let (grandchild_id, grandchild) = mint(&child, "helper", "writer");
    // Keys the global admin minted are not under it.
    let (_, bystander) = mint(&s.admin, "bystander", "reader");
    let works = |c: &Client| curl(c, "GET", "/v1/namespaces/team-a/memories", None).0;
    for c in [&leaked, &child, &grandchild, &bystander] {
        assert_eq!(works(c), 200);
    }
    let leaked_id = key_id(leaked.key.as_deref().unwrap()).to_string();
    let (status, revoked) = curl(
        &s.admin,
        "DELETE",
        &format!("/v1/admin/keys/{leaked_id}"),
        None,
    );
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    let mut also: Vec<&str> = revoked["also_revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    also.sort();
    let mut expected = vec![child_id.as_str(), grandchild_id.as_str()];
    expected.sort();
    assert_eq!(also, expected);
    for c in [&leaked, &child, &grandchild] {
        assert_eq!(works(c), 401);
    }
    assert_eq!(works(&bystander), 200);
    // The audit log names each key and why.
    let revokes: Vec<Value> = audit_entries(&s.admin)
        .into_iter()
        .filter(|e| e["action"] == "key.revoke")
        .collect();
    assert_eq!(revokes.len(), 3, "{revokes:?}");
    assert!(
        revokes
            .iter()
            .filter(|e| e["detail"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("minted under revoked key {leaked_id}")))
            .count()
            == 2
    );
}

#[test]
fn rate_limits_answer_429_then_recover() {
    let Setup {
        tmp: _tmp,
        data,
        server: _server,
        admin,
    } = setup(
        "[limits]\nauth_failures_per_minute = 3\n",
        &[],
        &[r#"{"name":"team-a"}"#],
    );
    let key = create_key(
        &data,
        "chatty",
        "bot",
        &["team-a=reader"],
        &["--rate-per-second", "1", "--burst", "2"],
    );
    let chatty = admin.as_key(Some(&key));
    let path = "/v1/namespaces/team-a/memories";
    assert_eq!(curl(&chatty, "GET", path, None).0, 200);
    assert_eq!(curl(&chatty, "GET", path, None).0, 200);
    let r = curl_full(&chatty, "GET", path, None, &[]);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.body["type"], "https://memhost.dev/problems/rate-limited");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // Another key is not affected.
    assert_eq!(curl(&admin, "GET", path, None).0, 200);
    std::thread::sleep(std::time::Duration::from_secs(wait));
    assert_eq!(curl(&chatty, "GET", path, None).0, 200);

    // Failed authentications: three per minute from this address, then 429.
    let stranger = admin.as_key(Some(
        "mhk_0000000000000000_0000000000000000000000000000000000000000000000000000000000000000",
    ));
    for _ in 0..3 {
        assert_eq!(curl(&stranger, "GET", path, None).0, 401);
    }
    let r = curl_full(&stranger, "GET", path, None, &[]);
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // Only failures are held against the address: a valid key from the
    // same address (think: one proxy in front of many agents) still works.
    assert_eq!(curl(&admin, "GET", path, None).0, 200);
}

/// Flip one byte of audit entry `seq` in the raw database file, as someone
/// with the file (and without the keys) could.
fn flip_audit_entry(data: &Path, seq: u64) {
    use lmdb::Transaction;
    let env = lmdb::Environment::new()
        .set_max_dbs(16)
        .open(&data.join("db"))
        .unwrap();
    let db = env.open_db(Some("audit")).unwrap();
    let key = seq.to_be_bytes();
    let mut value = {
        let txn = env.begin_ro_txn().unwrap();
        txn.get(db, &key).unwrap().to_vec()
    };
    let last = value.len() - 20;
    value[last] ^= 0x01;
    let mut txn = env.begin_rw_txn().unwrap();
    txn.put(db, &key, &value, lmdb::WriteFlags::empty())
        .unwrap();
    txn.commit().unwrap();
}

#[test]
fn the_audit_chain_verifies_across_a_restart_and_names_a_flipped_entry() {
    let canary = "canary-audit-9d2e";
    let Setup {
        tmp,
        data,
        mut server,
        admin,
    } = setup(
        "",
        &[("MEMHOST_LOG_FORMAT", "json")],
        &[r#"{"name":"team-a","redaction":"off"}"#],
    );
    let config = tmp.path().join("memhost.toml");
    let reader = admin.as_key(Some(&create_key(
        &data,
        "r",
        "bot",
        &["team-a=reader"],
        &[],
    )));
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, m) = curl(
            &admin,
            "POST",
            "/v1/namespaces/team-a/memories",
            Some(&json!({ "content": format!("{canary} {i}") }).to_string()),
        );
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    curl(
        &admin,
        "PATCH",
        &format!("/v1/namespaces/team-a/memories/{}", ids[0]),
        Some(r#"{"tags":["x"]}"#),
    );
    curl(
        &admin,
        "DELETE",
        &format!("/v1/namespaces/team-a/memories/{}", ids[1]),
        None,
    );
    assert_eq!(
        curl(
            &reader,
            "POST",
            "/v1/namespaces/team-a/memories",
            Some(r#"{"content":"no"}"#)
        )
        .0,
        403
    );
    assert_eq!(
        curl(&admin.as_key(None), "GET", "/v1/namespaces", None).0,
        401
    );
    server.wait_for("\"target\":\"audit\"");
    drop(server);

    let server = Server::start(&data, &config);
    let admin = server.client();
    curl(
        &admin,
        "DELETE",
        &format!("/v1/namespaces/team-a/memories/{}", ids[2]),
        None,
    );
    let d = data.to_str().unwrap();
    let (code, out, err) = memhost(&["audit", "verify", "--data", d]);
    assert_eq!(code, 0, "{out}{err}");
    let n: u64 = out
        .trim()
        .strip_prefix("audit chain intact: ")
        .and_then(|s| s.strip_suffix(" entries"))
        .unwrap()
        .parse()
        .unwrap();
    // namespace, key, 5 stores, update, forget, denied store, auth failure,
    // forget after the restart (and the admin key's creation).
    assert!(n >= 12, "{out}");
    let (_, tail, _) = memhost(&["audit", "tail", "-n", "100", "--json", "--data", d]);
    let actions: Vec<String> = tail
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for want in [
        "plugins.reload",
        "key.create",
        "namespace.create",
        "memory.store",
        "memory.update",
        "memory.forget",
        "auth.failure",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "no {want} in {actions:?}"
        );
    }
    assert!(
        !tail.contains(canary),
        "memory content in the audit log: {tail}"
    );
    let (_, api) = curl(&admin, "GET", "/v1/admin/audit?after=2&limit=3", None);
    let seqs: Vec<u64> = api["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    drop(server);

    // An attacker flips one byte of entry 7 in the file: verify names it.
    flip_audit_entry(&data, 7);
    let (code, out, _) = memhost(&["audit", "verify", "--data", d]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("audit chain broken at entry 7:"), "{out}");
}

#[test]
fn no_auth_is_for_loopback_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    init(&data);
    let d = data.to_str().unwrap();
    let (code, _, err) = memhost(&["serve", "--no-auth", "--listen", "0.0.0.0:0", "--data", d]);
    assert_ne!(code, 0);
    assert!(
        err.contains("refusing to serve 0.0.0.0:0 without authentication"),
        "{err}"
    );
    // On loopback it serves, loudly.
    let mut child = std::process::Command::new(memhost_bin())
        .args(["serve", "--no-auth", "--listen", "127.0.0.1:0", "--data", d])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    use std::io::BufRead;
    for line in std::io::BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening on") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(log.contains("AUTHENTICATION IS OFF"), "{log}");
}
