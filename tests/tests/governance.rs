//! Governance against the real server and the real `policy-standard`
//! plugin: every change is decided by the namespace's policy; held changes
//! wait for approvals from distinct, eligible agents (never their
//! requester), execute exactly once when approved — or fail, expire, are
//! rejected, cancelled or superseded without changing anything — and the
//! audit chain verifies after all of it.

use std::path::Path;

use crate::common::server::*;
use serde_json::{Value, json};

/// A server with `policy-standard`, `redact-pii` and the `policy-flaky`
/// fixture, and the namespaces given as JSON bodies.
fn governed(namespaces: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    crate::common::plugin_dir(
        &tmp.path().join("plugins"),
        "policy-flaky",
        "policy",
        &crate::common::fixture("policy-flaky"),
        "[limits]\ntimeout_ms = 100",
    );
    setup_in(tmp, &["redact-pii"], "", &[], namespaces)
}

/// A client acting as a new key of `agent` (of `agent_type`) with `roles`.
fn agent(s: &Setup, agent: &str, agent_type: &str, roles: &[&str]) -> Client {
    s.admin
        .as_key(Some(&key(&s.data, agent, agent_type, roles)))
}

fn key(data: &Path, agent: &str, agent_type: &str, roles: &[&str]) -> String {
    create_key(data, agent, agent_type, roles, &[])
}

fn vote(c: &Client, id: &str, decision: &str, hash: &str) -> (u16, Value) {
    curl(
        c,
        "POST",
        &format!("/v1/approvals/{id}/votes"),
        Some(&json!({ "decision": decision, "payload_hash": hash }).to_string()),
    )
}

fn problem(body: &Value) -> &str {
    body["type"]
        .as_str()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap()
}

fn memories(c: &Client, ns: &str) -> Vec<Value> {
    let (status, page) = curl(c, "GET", &format!("/v1/namespaces/{ns}/memories"), None);
    assert_eq!(status, 200, "{page}");
    page["memories"].as_array().unwrap().clone()
}

/// The (id, payload hash) of the approval a held change answered with.
fn approval_of(body: &Value) -> (String, String) {
    let field = |name: &str| {
        body["approval"][name]
            .as_str()
            .unwrap_or_else(|| panic!("no approval {name} in {body}"))
            .to_string()
    };
    (field("id"), field("payload_hash"))
}

/// Store `content` in `ns` as `c`, expecting it held: (id, payload hash).
fn held_store(c: &Client, ns: &str, content: &str, tags: &[&str]) -> (String, String) {
    let r = curl_full(
        c,
        "POST",
        &format!("/v1/namespaces/{ns}/memories"),
        Some(&json!({ "content": content, "tags": tags }).to_string()),
        &[],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["status"], "pending_approval");
    let (id, hash) = approval_of(&r.body);
    assert_eq!(
        r.header("location").as_deref(),
        Some(format!("/v1/approvals/{id}").as_str())
    );
    (id, hash)
}

fn audit_verifies(data: &Path) {
    let (code, out, err) = memhost(&["audit", "verify", "--data", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("intact"), "{out}");
}

#[test]
fn one_reviewer_approves_and_the_write_runs_once_as_submitted() {
    let s = governed(&[r#"{"name":"gov","policy":"single:reviewer","embedder":"none"}"#]);
    let d = &s.data;
    let bot = agent(&s, "bot", "assistant", &["gov=writer"]);
    // Another key of the same agent, even typed reviewer: still the requester.
    let bot_again = agent(&s, "bot", "reviewer", &["gov=reader"]);
    let carol = agent(&s, "carol", "assistant", &["gov=reader"]);
    let rita = agent(&s, "rita", "reviewer", &["gov=reader"]);
    let outsider = agent(&s, "out", "reviewer", &["other=reader"]);

    let (id, hash) = held_store(&bot, "gov", "the launch moves to Tuesday", &["plan"]);
    assert!(
        memories(&s.admin, "gov").is_empty(),
        "held means not written"
    );
    let (status, view) = curl(&carol, "GET", &format!("/v1/approvals/{id}"), None);
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "pending");
    assert_eq!(view["requirement"]["approver_types"], json!(["reviewer"]));
    assert_eq!(view["requester"]["agent_id"], "bot");
    assert_eq!(
        view["payload"]["memory"]["content"],
        "the launch moves to Tuesday"
    );

    let (status, body) = vote(&bot, &id, "approve", &hash);
    assert_eq!((status, problem(&body)), (403, "self-approval"), "{body}");
    let (status, body) = vote(&bot_again, &id, "approve", &hash);
    assert_eq!((status, problem(&body)), (403, "self-approval"), "{body}");
    let (status, body) = vote(&carol, &id, "approve", &hash);
    assert_eq!((status, problem(&body)), (403, "not-an-approver"), "{body}");
    let (status, body) = vote(&outsider, &id, "approve", &hash);
    assert_eq!(
        (status, problem(&body)),
        (404, "approval-not-found"),
        "{body}"
    );
    let (status, body) = vote(&rita, &id, "approve", &"0".repeat(64));
    assert_eq!((status, problem(&body)), (409, "stale-approval"), "{body}");
    assert!(memories(&s.admin, "gov").is_empty());

    let (status, body) = vote(&rita, &id, "approve", &hash);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "executed");
    let stored = memories(&s.admin, "gov");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["content"], "the launch moves to Tuesday");
    assert_eq!(stored[0]["agent_id"], "bot", "it runs as its requester");
    assert_eq!(stored[0]["tags"], json!(["plan"]));

    // A repeat vote changes nothing and says where it stands.
    let (status, body) = vote(&rita, &id, "approve", &hash);
    assert_eq!((status, body["state"].as_str()), (200, Some("executed")));
    assert_eq!(body["votes"].as_array().unwrap().len(), 1);
    assert_eq!(memories(&s.admin, "gov").len(), 1);

    // Lists: the requester's view, the approver's view.
    let (_, mine) = curl(&bot, "GET", "/v1/approvals?as=requester", None);
    assert_eq!(mine["approvals"].as_array().unwrap().len(), 1);
    let (_, open) = curl(&rita, "GET", "/v1/approvals?as=approver", None);
    assert!(open["approvals"].as_array().unwrap().is_empty(), "{open}");
    let (_, none) = curl(&outsider, "GET", "/v1/approvals", None);
    assert!(none["approvals"].as_array().unwrap().is_empty());
    audit_verifies(d);
}

#[test]
fn consensus_needs_distinct_agents_and_a_rejection_ends_it() {
    let s = governed(&[r#"{"name":"team","policy":"consensus:2","embedder":"none"}"#]);
    let d = &s.data;
    let writer = agent(&s, "writer", "assistant", &["team=writer"]);
    let ann_1 = agent(&s, "ann", "human", &["team=reader"]);
    let ann_2 = agent(&s, "ann", "human", &["team=reader"]);
    let bo = agent(&s, "bo", "human", &["team=reader"]);

    let (id, hash) = held_store(&writer, "team", "quarterly numbers are final", &[]);
    let (status, body) = vote(&ann_1, &id, "approve", &hash);
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("pending")),
        "{body}"
    );
    // Ann's other key is Ann: not a second approval.
    let (status, body) = vote(&ann_2, &id, "approve", &hash);
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("pending")),
        "{body}"
    );
    assert_eq!(body["votes"].as_array().unwrap().len(), 1);
    assert!(memories(&s.admin, "team").is_empty());
    let (status, body) = vote(&bo, &id, "approve", &hash);
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("executed")),
        "{body}"
    );
    assert_eq!(memories(&s.admin, "team").len(), 1);

    // A rejection ends the next one; later votes find it closed.
    let (id, hash) = held_store(&writer, "team", "rename the project", &[]);
    let (status, body) = vote(&bo, &id, "reject", &hash);
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("rejected")),
        "{body}"
    );
    let (status, body) = vote(&ann_1, &id, "approve", &hash);
    assert_eq!((status, problem(&body)), (409, "approval-closed"), "{body}");
    assert_eq!(memories(&s.admin, "team").len(), 1);
    audit_verifies(d);
}

#[test]
fn a_stale_target_fails_an_expired_item_refuses_votes_and_cancel_withdraws() {
    let s = governed(&[
        r#"{"name":"docs","policy":"forget=single:reviewer; *=allow","embedder":"none"}"#,
        r#"{"name":"brief","policy":"single:reviewer","approval_ttl_seconds":1,"embedder":"none"}"#,
    ]);
    let d = &s.data;
    let writer = agent(&s, "writer", "assistant", &["*=writer"]);
    let other = agent(&s, "other", "assistant", &["*=writer"]);
    let rita = agent(&s, "rita", "reviewer", &["*=reader"]);

    // Forget held at version 1; the memory moves to version 2; the approval
    // then fails and the memory stays as it is.
    let (status, m) = curl(
        &writer,
        "POST",
        "/v1/namespaces/docs/memories",
        Some(r#"{"content":"draft one"}"#),
    );
    assert_eq!(status, 201, "{m}");
    let mid = m["id"].as_str().unwrap();
    let r = curl_full(
        &writer,
        "DELETE",
        &format!("/v1/namespaces/docs/memories/{mid}"),
        None,
        &[],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let (id, hash) = approval_of(&r.body);
    let (status, _) = curl(
        &writer,
        "PATCH",
        &format!("/v1/namespaces/docs/memories/{mid}"),
        Some(r#"{"content":"draft two"}"#),
    );
    assert_eq!(status, 200);
    let (status, body) = vote(&rita, &id, "approve", &hash);
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("failed")),
        "{body}"
    );
    assert!(
        body["reason"].as_str().unwrap().starts_with("stale_target"),
        "{body}"
    );
    let (status, m) = curl(
        &writer,
        "GET",
        &format!("/v1/namespaces/docs/memories/{mid}"),
        None,
    );
    assert_eq!((status, m["version"].as_u64()), (200, Some(2)), "{m}");

    // Expiry beats a late vote.
    let (id, hash) = held_store(&writer, "brief", "short-lived", &[]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (status, body) = vote(&rita, &id, "approve", &hash);
    assert_eq!(
        (status, problem(&body)),
        (409, "approval-expired"),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("not run"),
        "{body}"
    );
    let (_, view) = curl(&rita, "GET", &format!("/v1/approvals/{id}"), None);
    assert_eq!(view["state"], "expired");
    assert!(memories(&s.admin, "brief").is_empty());

    // Cancel: not by another writer; by its requester; then closed.
    let r = curl_full(
        &writer,
        "DELETE",
        &format!("/v1/namespaces/docs/memories/{mid}"),
        None,
        &[],
    );
    let (id, hash) = approval_of(&r.body);
    let (status, _) = curl(&other, "POST", &format!("/v1/approvals/{id}/cancel"), None);
    assert_eq!(status, 403);
    let (status, body) = curl(&writer, "POST", &format!("/v1/approvals/{id}/cancel"), None);
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
    let (status, body) = vote(&rita, &id, "approve", &hash);
    assert_eq!((status, problem(&body)), (409, "approval-closed"), "{body}");
    assert_eq!(memories(&s.admin, "docs").len(), 1);
    audit_verifies(d);
}

#[test]
fn changing_the_policy_is_governed_and_supersedes_what_waits() {
    let s = governed(&[
        r#"{"name":"strict","policy":"consensus:2","embedder":"none"}"#,
        r#"{"name":"loose","policy":"store=single:reviewer; *=allow","embedder":"none"}"#,
    ]);
    let d = &s.data;
    let writer = agent(&s, "writer", "assistant", &["*=writer"]);
    let rita = agent(&s, "rita", "reviewer", &["*=reader"]);

    // Under consensus:2 even the admin's policy change waits: nobody
    // replaces a namespace's policy to get around it.
    let (status, body) = curl(
        &s.admin,
        "PATCH",
        "/v1/namespaces/strict",
        Some(r#"{"policy":"allow"}"#),
    );
    assert_eq!(status, 202, "{body}");
    let (_, ns) = curl(&s.admin, "GET", "/v1/namespaces/strict", None);
    assert_eq!(ns["settings"]["policy"], "consensus:2");
    // So does deleting it.
    let (status, _) = curl(&s.admin, "DELETE", "/v1/namespaces/strict", None);
    assert_eq!(status, 202);
    let (status, _) = curl(&s.admin, "GET", "/v1/namespaces/strict", None);
    assert_eq!(status, 200);

    // Where configure is allowed, the change lands and what waited under
    // the old policy is superseded.
    let (id, hash) = held_store(&writer, "loose", "waiting under the old rule", &[]);
    let (status, body) = curl(
        &s.admin,
        "PATCH",
        "/v1/namespaces/loose",
        Some(r#"{"policy":"allow"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (_, view) = curl(&rita, "GET", &format!("/v1/approvals/{id}"), None);
    assert_eq!(view["state"], "superseded", "{view}");
    let (status, body) = vote(&rita, &id, "approve", &hash);
    assert_eq!((status, problem(&body)), (409, "approval-closed"), "{body}");
    assert!(memories(&s.admin, "loose").is_empty());

    // A policy the plugin cannot read is refused, naming the bad part.
    let (status, body) = curl(
        &s.admin,
        "PATCH",
        "/v1/namespaces/loose",
        Some(r#"{"policy":"store=allow; delete=deny"}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("\"delete\" is not an action kind"),
        "{body}"
    );
    let (status, body) = curl(
        &s.admin,
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"typo","policy":"consensus:zero"}"#),
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = curl(
        &s.admin,
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"forever","policy":"consensus:2","approval_ttl_seconds":99999999}"#),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("approval_ttl_seconds"),
        "{body}"
    );
    audit_verifies(d);
}

#[test]
fn concurrent_approving_votes_execute_the_action_exactly_once() {
    let s = governed(&[r#"{"name":"race","policy":"consensus:2","embedder":"none"}"#]);
    let d = &s.data;
    let writer = agent(&s, "writer", "assistant", &["race=writer"]);
    let voters: Vec<Client> = (0..16)
        .map(|i| agent(&s, &format!("voter-{i}"), "human", &["race=reader"]))
        .collect();
    let (id, hash) = held_store(&writer, "race", "exactly once, please", &[]);
    let handles: Vec<_> = voters
        .into_iter()
        .map(|c| {
            let (id, hash) = (id.clone(), hash.clone());
            std::thread::spawn(move || vote(&c, &id, "approve", &hash))
        })
        .collect();
    let answers: Vec<(u16, Value)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (status, body) in &answers {
        assert!(
            *status == 200 || (*status == 409 && problem(body) == "approval-closed"),
            "{status} {body}"
        );
    }
    assert_eq!(memories(&s.admin, "race").len(), 1);
    let (_, view) = curl(&s.admin, "GET", &format!("/v1/approvals/{id}"), None);
    assert_eq!(view["state"], "executed");
    let audit = audit_entries(&s.admin);
    let executed = audit
        .iter()
        .filter(|e| e["action"] == "approval.executed" && e["target"] == id.as_str())
        .count();
    let stores = audit
        .iter()
        .filter(|e| e["action"] == "memory.store" && e["outcome"] == "ok")
        .count();
    assert_eq!((executed, stores), (1, 1));
    audit_verifies(d);
}

#[test]
fn a_policy_that_traps_spins_or_answers_nonsense_denies_and_reads_go_on() {
    let s = governed(&[
        r#"{"name":"flaky","policy_plugin":"policy-flaky","embedder":"none"}"#,
        r#"{"name":"gone","policy_plugin":"policy-flaky","embedder":"none"}"#,
    ]);
    let (status, _) = curl(
        &s.admin,
        "POST",
        "/v1/namespaces/flaky/memories",
        Some(r#"{"content":"fine"}"#),
    );
    assert_eq!(status, 201);
    for cue in ["trap", "spin", "garbage", "refuse"] {
        let (status, body) = curl(
            &s.admin,
            "POST",
            "/v1/namespaces/flaky/memories",
            Some(&json!({ "content": format!("cue {cue}"), "tags": [cue] }).to_string()),
        );
        assert_eq!(
            (status, problem(&body)),
            (503, "policy-failed"),
            "{cue}: {body}"
        );
        assert!(
            body["detail"].as_str().unwrap().contains("policy-flaky"),
            "{cue}: {body}"
        );
    }
    assert_eq!(memories(&s.admin, "flaky").len(), 1, "nothing else written");
    let (status, _) = curl(
        &s.admin,
        "POST",
        "/v1/namespaces/flaky/recall",
        Some(r#"{"query":"fine"}"#),
    );
    assert_eq!(status, 200, "reads keep working");

    // A policy plugin that is gone denies too.
    let mut s = s;
    std::fs::remove_dir_all(s.tmp.path().join("plugins/policy-flaky")).unwrap();
    let (code, out, err) = memhost(&["plugin", "reload", "--data", s.data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    s.server.wait_for("unloaded=policy-flaky");
    let (status, body) = curl(
        &s.admin,
        "POST",
        "/v1/namespaces/gone/memories",
        Some(r#"{"content":"no policy, no write"}"#),
    );
    assert_eq!((status, problem(&body)), (503, "policy-failed"), "{body}");
}

#[test]
fn held_content_is_sealed_at_rest() {
    const CANARY: &str = "canary-held-5d1e-walrus";
    let s = governed(&[
        r#"{"name":"vault","policy":"single:human","redaction":"off","embedder":"none"}"#,
    ]);
    let (_id, _) = held_store(&s.admin, "vault", &format!("the code is {CANARY}"), &[]);
    let raw = std::fs::read(s.data.join("db/data.mdb")).unwrap();
    assert!(
        !raw.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
        "held content is readable in the database file"
    );
}

#[test]
fn every_mutating_route_and_tool_goes_through_the_policy() {
    let s = governed(&[r#"{"name":"locked","embedder":"none"}"#]);
    let a = &s.admin;
    let (_, m) = curl(
        a,
        "POST",
        "/v1/namespaces/locked/memories",
        Some(r#"{"content":"written while it was open"}"#),
    );
    let mid = m["id"].as_str().unwrap().to_string();
    let (status, body) = curl(
        a,
        "PATCH",
        "/v1/namespaces/locked",
        Some(r#"{"policy":"deny"}"#),
    );
    assert_eq!(status, 200, "{body}");

    // Routes that change no memory data, or that are the approval
    // workflow itself.
    let exempt = [
        ("post", "/v1/namespaces"),
        ("post", "/v1/namespaces/{ns}/recall"),
        ("post", "/v1/recall"),
        ("post", "/v1/admin/keys"),
        ("delete", "/v1/admin/keys/{key_id}"),
        ("post", "/v1/approvals/{approval_id}/votes"),
        ("post", "/v1/approvals/{approval_id}/cancel"),
        // Which spellings read as one entity name: no memory, no access.
        ("put", "/v1/namespaces/{ns}/gazetteer"),
    ];
    let (_, doc) = curl(a, "GET", "/v1/openapi.json", None);
    let mut governed_routes = 0;
    for (method, path) in documented_routes(&doc) {
        if method == "get" || exempt.contains(&(method.as_str(), path.as_str())) {
            continue;
        }
        let body = match (method.as_str(), path.as_str()) {
            ("post", "/v1/namespaces/{ns}/memories") => Some(r#"{"content":"denied"}"#),
            ("post", "/v1/namespaces/{ns}/memories/bulk") => {
                Some(r#"{"memories":[{"content":"denied"}]}"#)
            }
            ("patch", "/v1/namespaces/{ns}/memories/{id}") => Some(r#"{"content":"denied"}"#),
            ("delete", "/v1/namespaces/{ns}/memories/{id}") => None,
            ("patch", "/v1/namespaces/{ns}") => Some(r#"{"policy":"allow"}"#),
            ("delete", "/v1/namespaces/{ns}") => None,
            ("post", "/v1/namespaces/{ns}/reindex") => None,
            ("post", "/v1/namespaces/{ns}/import") => Some(r#"{"results":[{"memory":"denied"}]}"#),
            _ => panic!(
                "{method} {path} changes data but is not in the governance table: route it through the policy funnel and list it here"
            ),
        };
        let url = path.replace("{ns}", "locked").replace("{id}", &mid);
        let (status, answer) = curl(a, &method.to_uppercase(), &url, body);
        let answer = if path.ends_with("/bulk") {
            assert_eq!(status, 200, "{answer}");
            answer["results"][0].clone()
        } else if path.ends_with("/import") {
            // Each imported memory is refused on its own, as in a bulk.
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["failed"], 1, "{answer}");
            assert!(
                answer["errors"][0]
                    .as_str()
                    .unwrap()
                    .contains("policy denied"),
                "{answer}"
            );
            governed_routes += 1;
            continue;
        } else {
            answer
        };
        assert_eq!(
            (answer["status"].as_u64(), problem(&answer)),
            (Some(403), "policy-denied"),
            "{method} {path}: {answer}"
        );
        governed_routes += 1;
    }
    assert_eq!(governed_routes, 8);

    // The same over MCP: every tool that is not read-only.
    let listed = mcp(a, "tools/list", None, json!({}));
    let mut governed_tools = 0;
    for tool in listed["tools"].as_array().unwrap() {
        let name = tool["name"].as_str().unwrap();
        if tool["annotations"]["readOnlyHint"] == true {
            continue;
        }
        let args = match name {
            "memory_store" => json!({ "namespace": "locked", "content": "denied" }),
            "memory_update" => json!({ "namespace": "locked", "id": mid, "content": "denied" }),
            "memory_forget" => json!({ "namespace": "locked", "id": mid }),
            "namespace_reindex" | "namespace_delete" => json!({ "namespace": "locked" }),
            // Aliases change no memory and no access (as over REST).
            "namespace_create"
            | "namespace_gazetteer"
            | "memory_approval_vote"
            | "memory_approval_cancel" => continue,
            other => panic!(
                "MCP tool {other} changes data but is not in the governance table: route it through the policy funnel and list it here"
            ),
        };
        let r = mcp(
            a,
            "tools/call",
            Some(name),
            json!({ "name": name, "arguments": args }),
        );
        assert_eq!(r["isError"], true, "{name}: {r}");
        assert_eq!(
            problem(&r["structuredContent"]),
            "policy-denied",
            "{name}: {r}"
        );
        governed_tools += 1;
    }
    assert_eq!(governed_tools, 5);
    let (_, m) = curl(
        a,
        "GET",
        &format!("/v1/namespaces/locked/memories/{mid}"),
        None,
    );
    assert_eq!(m["content"], "written while it was open");
    assert_eq!(m["version"], 1);
    audit_verifies(&s.data);
}

#[test]
fn a_retried_held_write_with_an_idempotency_key_returns_the_same_approval() {
    let s = governed(&[r#"{"name":"retry","policy":"single:reviewer","embedder":"none"}"#]);
    let writer = agent(&s, "writer", "assistant", &["retry=writer"]);
    let other = agent(&s, "other", "assistant", &["retry=writer"]);
    let send = |c: &Client, key: &str| {
        curl_full(
            c,
            "POST",
            "/v1/namespaces/retry/memories",
            Some(r#"{"content":"sent twice over a flaky network"}"#),
            &[&format!("idempotency-key: {key}")],
        )
    };
    let first = send(&writer, "order-7");
    let again = send(&writer, "order-7");
    assert_eq!((first.status, again.status), (202, 202), "{}", again.body);
    assert_eq!(first.body["approval"]["id"], again.body["approval"]["id"]);
    // Another agent with the same key, or another key, is another change.
    let theirs = send(&other, "order-7");
    let fresh = send(&writer, "order-8");
    assert_ne!(first.body["approval"]["id"], theirs.body["approval"]["id"]);
    assert_ne!(first.body["approval"]["id"], fresh.body["approval"]["id"]);
    let (_, all) = curl(&s.admin, "GET", "/v1/approvals?namespace=retry", None);
    assert_eq!(all["approvals"].as_array().unwrap().len(), 3);
    let bad = send(&writer, "has space");
    assert_eq!(
        (bad.status, problem(&bad.body)),
        (400, "bad-idempotency-key"),
        "{}",
        bad.body
    );
}

#[test]
fn kill_9_around_the_deciding_vote_leaves_it_pending_or_executed_never_half() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = plugins_config(tmp.path(), &["redact-pii"], "");
    let mut server = Server::start(&data, &config);
    let (status, body) = curl(
        &server.client(),
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"crash","policy":"single:reviewer","embedder":"none"}"#),
    );
    assert_eq!(status, 201, "{body}");
    let writer = key(&data, "writer", "assistant", &["crash=writer"]);
    let reviewer = key(&data, "rita", "reviewer", &["crash=reader"]);
    let mut outcomes = std::collections::BTreeSet::new();
    // The kill lands at a different moment of the vote each round.
    for (round, delay_ms) in [0u64, 2, 5, 10, 20, 40].into_iter().enumerate() {
        let content = format!("round {round}");
        // A restarted server listens on a new port: a client per round.
        let admin = server.client();
        let (id, hash) = held_store(&admin.as_key(Some(&writer)), "crash", &content, &[]);
        let voter = admin.as_key(Some(&reviewer));
        let (vid, vhash) = (id.clone(), hash.clone());
        let vote_thread = std::thread::spawn(move || vote(&voter, &vid, "approve", &vhash));
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        let _ = vote_thread.join();
        server = Server::start(&data, &config);
        let a = server.client();
        let (_, view) = curl(&a, "GET", &format!("/v1/approvals/{id}"), None);
        let written = memories(&a, "crash")
            .iter()
            .filter(|m| m["content"] == content.as_str())
            .count();
        match (view["state"].as_str(), written) {
            (Some("pending"), 0) => {
                // Not decided: the vote can still be cast, once.
                let (status, body) = vote(&a.as_key(Some(&reviewer)), &id, "approve", &hash);
                assert_eq!((status, body["state"].as_str()), (200, Some("executed")));
                assert_eq!(
                    memories(&a, "crash")
                        .iter()
                        .filter(|m| m["content"] == content.as_str())
                        .count(),
                    1
                );
                outcomes.insert("pending");
            }
            (Some("executed"), 1) => {
                outcomes.insert("executed");
            }
            other => panic!("round {round}: half an approval after kill -9: {other:?} {view}"),
        }
    }
    drop(server);
    audit_verifies(&data);
    eprintln!("kill -9 outcomes seen: {outcomes:?}");
}

#[test]
fn operators_list_and_show_approvals_and_governed_cli_deletes_wait() {
    let s = governed(&[
        r#"{"name":"ops","policy":"purge=consensus:2; *=single:reviewer","embedder":"none"}"#,
    ]);
    let d = s.data.to_str().unwrap();
    let (id, _) = held_store(&s.admin, "ops", "for the operator to see", &[]);
    let (code, out, err) = memhost(&["approvals", "list", "--state", "pending", "--data", d]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&id) && out.contains("one approval from an agent of type reviewer"),
        "{out}"
    );
    let (code, out, err) = memhost(&["approvals", "show", &id, "--data", d]);
    assert_eq!(code, 0, "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["state"], "pending");
    assert_eq!(shown["kind"], "store");
    let (code, _, err) = memhost(&["approvals", "list", "--state", "sideways", "--data", d]);
    assert_eq!(code, 2);
    assert!(err.contains("not a state"), "{err}");

    // The operator's delete is a change like any other: it waits.
    let config = s.tmp.path().join("memhost.toml");
    let (code, out, err) = memhost(&[
        "namespace",
        "delete",
        "ops",
        "--yes",
        "--data",
        d,
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("held for approval"), "{err}");
    let (status, _) = curl(&s.admin, "GET", "/v1/namespaces/ops", None);
    assert_eq!(status, 200);
}

#[test]
fn the_example_policies_decide_from_labels_and_tags_end_to_end() {
    let s = setup_plugins(
        &["redact-pii", "policy-sensitive-data", "policy-python"],
        "[plugins.grants.policy-sensitive-data]\nconfig = { approver_type = \"security\" }\n",
        &[],
        &[
            r#"{"name":"pii","policy_plugin":"policy-sensitive-data","embedder":"none"}"#,
            r#"{"name":"py","policy_plugin":"policy-python","embedder":"none"}"#,
        ],
    );
    let a = &s.admin;
    let store = |ns: &str, body: Value| {
        curl(
            a,
            "POST",
            &format!("/v1/namespaces/{ns}/memories"),
            Some(&body.to_string()),
        )
    };
    // Rust example: what the redactor found decides.
    let (status, body) = store(
        "pii",
        json!({ "content": "deploy key sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c" }),
    );
    assert_eq!((status, problem(&body)), (403, "policy-denied"), "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("secret"),
        "{body}"
    );
    let (status, body) = store("pii", json!({ "content": "reach Ada at ada@example.com" }));
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["approval"]["requirement"]["approver_types"],
        json!(["security"])
    );
    let (status, body) = store("pii", json!({ "content": "the build is green" }));
    assert_eq!(status, 201, "{body}");

    // Python example: tags decide; deleting the namespace never runs.
    let (status, body) = store(
        "py",
        json!({ "content": "salaries", "tags": ["confidential"] }),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["approval"]["requirement"]["approver_types"],
        json!(["human"])
    );
    let (status, body) = store("py", json!({ "content": "lunch is at noon" }));
    assert_eq!(status, 201, "{body}");
    let (status, body) = curl(a, "DELETE", "/v1/namespaces/py", None);
    assert_eq!((status, problem(&body)), (403, "policy-denied"), "{body}");
    // A human approves the held one; the Python tally runs it.
    let ada = agent(&s, "ada", "human", &["py=reader"]);
    let (_, list) = curl(&ada, "GET", "/v1/approvals?namespace=py&as=approver", None);
    let item = &list["approvals"][0];
    let (status, body) = vote(
        &ada,
        item["id"].as_str().unwrap(),
        "approve",
        item["payload_hash"].as_str().unwrap(),
    );
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("executed")),
        "{body}"
    );
    assert_eq!(memories(a, "py").len(), 2);
}

#[test]
fn over_mcp_a_held_change_is_a_result_and_voters_get_the_approval_tools() {
    let s = governed(&[
        r#"{"name":"held","policy":"single:reviewer","embedder":"none"}"#,
        r#"{"name":"open","embedder":"none"}"#,
    ]);
    let writer = agent(&s, "bot", "assistant", &["held=writer"]);
    let rita = agent(&s, "rita", "reviewer", &["held=reader"]);
    let plain = agent(&s, "plain", "assistant", &["open=writer"]);
    let names = |c: &Client| -> Vec<String> {
        mcp(c, "tools/list", None, json!({}))["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    let theirs = names(&plain);
    assert!(
        theirs.contains(&"memory_approval_status".to_string()),
        "{theirs:?}"
    );
    assert!(
        !theirs.contains(&"memory_approval_vote".to_string()),
        "{theirs:?}"
    );
    let hers = names(&rita);
    for tool in [
        "memory_approvals",
        "memory_approval_vote",
        "memory_approval_cancel",
    ] {
        assert!(hers.contains(&tool.to_string()), "{tool}: {hers:?}");
    }

    let call = |c: &Client, name: &str, args: Value| {
        mcp(
            c,
            "tools/call",
            Some(name),
            json!({ "name": name, "arguments": args }),
        )
    };
    let r = call(
        &writer,
        "memory_store",
        json!({ "namespace": "held", "content": "waits for Rita" }),
    );
    assert_eq!(r["isError"], false, "{r}");
    let approval = r["structuredContent"]["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let hash = r["structuredContent"]["approval"]["payload_hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        r["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Nothing was written yet"),
        "{r}"
    );
    assert!(memories(&s.admin, "held").is_empty());
    let r = call(
        &writer,
        "memory_approval_status",
        json!({ "approval_id": approval }),
    );
    assert_eq!(r["structuredContent"]["state"], "pending", "{r}");
    let r = call(
        &writer,
        "memory_approval_vote",
        json!({ "approval_id": approval, "decision": "approve", "payload_hash": hash }),
    );
    assert_eq!(problem(&r["structuredContent"]), "self-approval", "{r}");
    let r = call(&rita, "memory_approvals", json!({ "as": "approver" }));
    assert_eq!(
        r["structuredContent"]["approvals"][0]["id"],
        approval.as_str(),
        "{r}"
    );
    let r = call(
        &rita,
        "memory_approval_vote",
        json!({ "approval_id": approval, "decision": "approve", "payload_hash": hash }),
    );
    assert_eq!(r["structuredContent"]["state"], "executed", "{r}");
    assert_eq!(memories(&s.admin, "held").len(), 1);
}

#[test]
fn no_way_around_the_policy_through_minted_keys_ttls_bulk_retries_or_borrowed_names() {
    let s = governed(&[
        r#"{"name":"guarded","policy":"forget=single:reviewer; *=allow","embedder":"none"}"#,
        r#"{"name":"held","policy":"single:reviewer","embedder":"none"}"#,
    ]);
    let d = &s.data;
    // An admin of the namespace asks, then mints itself a reviewer.
    let boss = agent(&s, "boss", "human", &["held=admin"]);
    let (id, hash) = held_store(&boss, "held", "the boss wants this in", &[]);
    let (status, minted) = curl(
        &boss,
        "POST",
        "/v1/admin/keys",
        Some(
            r#"{"agent_id":"puppet","agent_type":"reviewer","grants":[{"pattern":"held","role":"reader"}]}"#,
        ),
    );
    assert_eq!(status, 201, "{minted}");
    let puppet = s.admin.as_key(minted["key"].as_str());
    let (status, body) = vote(&puppet, &id, "approve", &hash);
    assert_eq!((status, problem(&body)), (403, "self-approval"), "{body}");
    assert!(memories(&s.admin, "held").is_empty());

    // A TTL on an update schedules a forget: the forget rule holds it.
    let writer = agent(&s, "bot", "assistant", &["guarded=writer", "held=writer"]);
    let (_, m) = curl(
        &writer,
        "POST",
        "/v1/namespaces/guarded/memories",
        Some(r#"{"content":"keep me"}"#),
    );
    let mid = m["id"].as_str().unwrap().to_string();
    let (status, body) = curl(
        &writer,
        "PATCH",
        &format!("/v1/namespaces/guarded/memories/{mid}"),
        Some(r#"{"ttl_seconds":1}"#),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["approval"]["requirement"]["approver_types"],
        json!(["reviewer"])
    );
    let (status, body) = curl(
        &writer,
        "PATCH",
        &format!("/v1/namespaces/guarded/memories/{mid}"),
        Some(r#"{"tags":["fine"]}"#),
    );
    assert_eq!(status, 200, "an update without a TTL is an update: {body}");

    // A bulk store retried with one Idempotency-Key: each item keeps its own.
    let bulk = |key: &str| {
        curl_full(
            &writer,
            "POST",
            "/v1/namespaces/held/memories/bulk",
            Some(r#"{"memories":[{"content":"first"},{"content":"second"}]}"#),
            &[&format!("idempotency-key: {key}")],
        )
        .body
    };
    let (one, again) = (bulk("batch-1"), bulk("batch-1"));
    let ids = |b: &Value| -> Vec<String> {
        b["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["approval"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&one).len(), 2);
    assert_ne!(ids(&one)[0], ids(&one)[1], "{one}");
    assert_eq!(ids(&one), ids(&again));

    // Another namespace's key under the requester's agent name sees nothing.
    let namesake = agent(&s, "bot", "assistant", &["elsewhere=admin"]);
    let (status, _) = curl(
        &namesake,
        "GET",
        &format!("/v1/approvals/{}", ids(&one)[0]),
        None,
    );
    assert_eq!(status, 404);
    let (status, _) = curl(
        &namesake,
        "POST",
        &format!("/v1/approvals/{}/cancel", ids(&one)[0]),
        None,
    );
    assert_eq!(status, 404);
    let (_, listed) = curl(&namesake, "GET", "/v1/approvals?as=requester", None);
    assert!(
        listed["approvals"].as_array().unwrap().is_empty(),
        "{listed}"
    );
    audit_verifies(d);
}

#[test]
fn revoked_requesters_forgotten_targets_and_deleted_namespaces_close_what_waits() {
    let s = governed(&[
        r#"{"name":"work","policy":"store=single:reviewer; update=single:reviewer; *=allow","embedder":"none"}"#,
        r#"{"name":"doomed","policy":"store=single:reviewer; *=allow","embedder":"none"}"#,
    ]);
    let d = &s.data;
    let rita = agent(&s, "rita", "reviewer", &["*=reader"]);
    let leaver_key = key(d, "leaver", "assistant", &["work=writer"]);
    let leaver = s.admin.as_key(Some(&leaver_key));
    let (id, hash) = held_store(&leaver, "work", "asked before leaving", &[]);
    let (code, _, err) = memhost(&[
        "keys",
        "revoke",
        &leaver_key[4..20],
        "--data",
        d.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (status, body) = vote(&rita, &id, "approve", &hash);
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("failed")),
        "{body}"
    );
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .starts_with("requester_revoked"),
        "{body}"
    );
    assert!(memories(&s.admin, "work").is_empty());

    // An update waiting on a memory that is then forgotten: superseded.
    let writer = agent(&s, "writer", "assistant", &["*=writer"]);
    let (status, m) = curl(
        &agent(&s, "w2", "assistant", &["doomed=writer"]),
        "POST",
        "/v1/namespaces/doomed/memories",
        Some(r#"{"content":"in the doomed namespace"}"#),
    );
    assert_eq!(status, 202, "{m}");
    let doomed_item = m["approval"]["id"].as_str().unwrap().to_string();
    // The admin (requester of nothing here) stores directly in work under
    // an update rule, then the memory is forgotten while an update waits.
    let (status, stored) = curl(
        &s.admin,
        "POST",
        "/v1/namespaces/work/memories",
        Some(r#"{"content":"target"}"#),
    );
    assert_eq!(status, 202, "{stored}");
    let (id, hash) = approval_of(&stored);
    let (_, done) = vote(&rita, &id, "approve", &hash);
    assert_eq!(done["state"], "executed", "{done}");
    let target = memories(&s.admin, "work")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, waiting) = curl(
        &writer,
        "PATCH",
        &format!("/v1/namespaces/work/memories/{target}"),
        Some(r#"{"tags":["x"]}"#),
    );
    assert_eq!(status, 403, "a writer changes only its own: {waiting}");
    let (status, waiting) = curl(
        &s.admin,
        "PATCH",
        &format!("/v1/namespaces/work/memories/{target}"),
        Some(r#"{"tags":["x"]}"#),
    );
    assert_eq!(status, 202, "{waiting}");
    let waiting = waiting["approval"]["id"].as_str().unwrap().to_string();
    let (status, _) = curl(
        &s.admin,
        "DELETE",
        &format!("/v1/namespaces/work/memories/{target}"),
        None,
    );
    assert_eq!(status, 204);
    let (_, view) = curl(&rita, "GET", &format!("/v1/approvals/{waiting}"), None);
    assert_eq!(view["state"], "superseded", "{view}");

    // A namespace admin cancels another's item.
    let (other, _) = held_store(&writer, "work", "withdrawn by the admin", &[]);
    let (status, body) = curl(
        &s.admin,
        "POST",
        &format!("/v1/approvals/{other}/cancel"),
        None,
    );
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );

    // Deleting the namespace supersedes what waits there, and keeps
    // nothing of it.
    let (status, _) = curl(&s.admin, "DELETE", "/v1/namespaces/doomed", None);
    assert_eq!(status, 204);
    let (status, view) = curl(
        &s.admin,
        "GET",
        &format!("/v1/approvals/{doomed_item}"),
        None,
    );
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "superseded", "{view}");
    assert!(view["tags"].as_array().unwrap().is_empty());
    audit_verifies(d);
}

#[test]
fn two_held_settings_changes_never_undo_each_other() {
    let s = governed(&[
        r#"{"name":"cfg","policy":"configure=single:reviewer; *=allow","embedder":"none"}"#,
    ]);
    let rita = agent(&s, "rita", "reviewer", &["cfg=reader"]);
    let patch = |body: &str| {
        let (status, held) = curl(&s.admin, "PATCH", "/v1/namespaces/cfg", Some(body));
        assert_eq!(status, 202, "{held}");
        approval_of(&held)
    };
    let first = patch(r#"{"description":"first"}"#);
    let second = patch(r#"{"approval_ttl_seconds":600}"#);
    let (_, done) = vote(&rita, &second.0, "approve", &second.1);
    assert_eq!(done["state"], "executed", "{done}");
    // The first was asked against settings that no longer hold.
    let (_, stale) = vote(&rita, &first.0, "approve", &first.1);
    assert_eq!(stale["state"], "failed", "{stale}");
    assert!(
        stale["reason"]
            .as_str()
            .unwrap()
            .starts_with("stale_target"),
        "{stale}"
    );
    let (_, ns) = curl(&s.admin, "GET", "/v1/namespaces/cfg", None);
    assert_eq!(ns["settings"]["approval_ttl_seconds"], 600, "{ns}");
    assert!(ns["settings"]["description"].is_null(), "{ns}");
}
