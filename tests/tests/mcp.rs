//! MCP over Streamable HTTP, driven by the official MCP Python SDK (`mcp`,
//! installed by `cargo xtask test` into `target/py-mcp`): the tools an agent
//! uses, under the same keys, roles and audit as REST; the transport's
//! refusals (no key, bad Origin, header/body mismatch, GET); and a server
//! restart in the middle of a client's work.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use crate::common::root;
use crate::common::server::*;
use serde_json::Value;

/// The Python of `target/py-mcp`, where the MCP SDK is installed.
pub(crate) fn python() -> std::path::PathBuf {
    let p = root().join("target/py-mcp/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask test` (it installs the MCP Python SDK)",
        p.display()
    );
    p
}

fn script(scenario: &str, c: &Client, ns: &str, mode: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tests/python/mcp_client.py"))
        .args([
            scenario,
            &format!("http://{}/mcp", c.addr),
            c.key.as_deref().unwrap_or(""),
            ns,
            mode,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Run a scenario to its end: what the client saw, by step.
fn drive(scenario: &str, c: &Client, ns: &str, mode: &str) -> HashMap<String, Value> {
    let out = script(scenario, c, ns, mode).output().unwrap();
    crate::common::steps(&out, &format!("the MCP client ({scenario}, {mode})"))
}

fn status_of(step: &Value) -> u64 {
    assert_eq!(step["is_error"], true, "{step}");
    step["structured"]["status"].as_u64().unwrap()
}

#[test]
fn an_mcp_client_stores_recalls_changes_and_forgets_under_its_key() {
    let Setup {
        tmp, server, admin, ..
    } = setup("", &[], &[r#"{"name": "team", "embedder": "none"}"#]);
    let reader = create_key(
        &tmp.path().join("data"),
        "viewer",
        "assistant",
        &["team=reader"],
        &[],
    );

    // Both eras of the protocol: 2026-07-28 (server/discover, no
    // handshake) and the initialize handshake of 2025-11-25 and before.
    for mode in ["auto", "legacy"] {
        let seen = drive("tools", &admin, "team", mode);
        let tools = &seen["list_tools"]["tools"];
        let mut names: Vec<&str> = tools
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "fetch",
                "memory_approval_status",
                "memory_entities",
                "memory_forget",
                "memory_get",
                "memory_list",
                "memory_namespaces",
                "memory_recall",
                "memory_store",
                "memory_update",
                "search"
            ]
        );
        assert_eq!(tools["memory_recall"]["read_only"], true);
        assert_eq!(tools["memory_forget"]["destructive"], true);
        assert_eq!(tools["memory_store"]["read_only"], false);
        assert_eq!(tools["memory_store"]["destructive"], false);
        assert_eq!(
            tools["memory_store"]["required"],
            serde_json::json!(["namespace", "content"])
        );
        // The REST field names.
        for field in ["title", "tags", "metadata", "ttl_seconds"] {
            assert!(
                tools["memory_store"]["properties"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p == field),
                "{field}"
            );
        }

        let stored = &seen["store"];
        assert_eq!(stored["is_error"], false, "{stored}");
        let id = stored["structured"]["id"].as_str().unwrap();
        assert_eq!(stored["structured"]["created"], true);
        assert!(stored["text"][0].as_str().unwrap().contains(id));
        assert_eq!(seen["store_again"]["structured"]["duplicate"], true);
        assert_eq!(seen["store_again"]["structured"]["id"], id);
        assert_eq!(seen["recall"]["structured"]["results"][0]["id"], id);
        assert_eq!(
            seen["get"]["structured"]["content"],
            "Alice prefers green tea over coffee in the morning"
        );
        assert_eq!(seen["update"]["structured"]["version"], 2);
        assert_eq!(
            seen["list"]["structured"]["memories"][0]["content"],
            "Alice now prefers black coffee"
        );
        assert_eq!(
            seen["namespaces"]["structured"]["namespaces"][0]["role"],
            "admin"
        );
        // search/fetch in the shape ChatGPT connectors read.
        let hit = &seen["search"]["structured"]["results"][0];
        assert_eq!(hit["id"], format!("team/{id}"));
        assert!(hit["title"].is_string() && hit["url"].as_str().unwrap().ends_with(id));
        let fetched = &seen["fetch"]["structured"];
        assert_eq!(fetched["text"], "Alice now prefers black coffee");
        assert_eq!(fetched["id"], format!("team/{id}"));
        // Errors are tool errors with the REST problem types.
        assert_eq!(status_of(&seen["bad_id"]), 404);
        assert_eq!(status_of(&seen["unknown_ns"]), 404);
        assert!(
            seen["unknown_ns"]["structured"]["type"]
                .as_str()
                .unwrap()
                .ends_with("namespace-not-found")
        );
        assert_eq!(seen["forget"]["is_error"], false);
        assert_eq!(status_of(&seen["get_forgotten"]), 404);
        // Audited as REST calls are.
        let audit = audit_entries(&admin);
        let forgotten = audit
            .iter()
            .filter(|e| e["action"] == "memory.forget" && e["target"] == id)
            .count();
        assert_eq!(forgotten, 1, "{audit:?}");
    }

    // A reader sees only what it may use, and is refused the rest.
    let as_reader = admin.as_key(Some(&reader));
    let seen = drive("reader", &as_reader, "team", "auto");
    assert_eq!(
        seen["list_tools"]["names"],
        serde_json::json!([
            "fetch",
            "memory_approval_status",
            "memory_entities",
            "memory_get",
            "memory_list",
            "memory_namespaces",
            "memory_recall",
            "search"
        ])
    );
    assert_eq!(status_of(&seen["store"]), 403);
    assert_eq!(seen["recall"]["is_error"], false);

    // A key that is not one is refused before any tool.
    let seen = drive(
        "refused",
        &admin.as_key(Some("mhk_0000000000000000_bogus")),
        "team",
        "auto",
    );
    assert!(
        seen.contains_key("refused") && !seen.contains_key("list_tools"),
        "{seen:?}"
    );
    let r = curl_full(
        &admin.as_key(Some("mhk_0000000000000000_bogus")),
        "POST",
        "/mcp",
        Some("{}"),
        &[],
    );
    assert_eq!(r.status, 401, "{}", r.body);
    drop(server);
}

#[test]
fn the_admin_profile_adds_namespace_tools_for_admins_who_ask() {
    let Setup {
        tmp, server, admin, ..
    } = setup("", &[], &[r#"{"name": "team", "embedder": "none"}"#]);
    let seen = drive("admin", &admin, "made-by-mcp", "auto");
    let names = seen["list_tools"]["names"].as_array().unwrap();
    for tool in [
        "namespace_create",
        "namespace_reindex",
        "namespace_delete",
        "memory_store",
    ] {
        assert!(names.iter().any(|n| n == tool), "{tool}: {names:?}");
    }
    assert_eq!(seen["create"]["is_error"], false, "{}", seen["create"]);
    assert_eq!(seen["create"]["structured"]["name"], "made-by-mcp");
    assert_eq!(seen["store"]["is_error"], false, "{}", seen["store"]);
    assert_eq!(seen["delete"]["structured"]["memories"], 1);
    assert_eq!(status_of(&seen["gone"]), 404);

    // Without the profile the tools are neither listed nor callable.
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"namespace_delete","arguments":{"namespace":"team"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let r = curl_full(
        &admin,
        "POST",
        "/mcp",
        Some(list),
        &[
            "accept: application/json, text/event-stream",
            "mcp-protocol-version: 2026-07-28",
            "mcp-method: tools/call",
            "mcp-name: namespace_delete",
        ],
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("profile=admin")),
        "{}",
        r.body
    );
    let (status, _) = curl(&admin, "GET", "/v1/namespaces/team", None);
    assert_eq!(status, 200, "the namespace is still there");

    // A writer asking for the profile gets no admin tools, and an admin
    // tool called anyway is refused by the same authorization as REST.
    let writer = create_key(
        &tmp.path().join("data"),
        "w",
        "assistant",
        &["team=writer"],
        &[],
    );
    let seen = drive("admin", &admin.as_key(Some(&writer)), "by-writer", "auto");
    let names = seen["list_tools"]["names"].as_array().unwrap();
    assert!(!names.iter().any(|n| n == "namespace_create"), "{names:?}");
    assert_eq!(status_of(&seen["create"]), 403);
    drop(server);
}

#[test]
fn without_a_key_the_servers_own_loopback_origin_is_served_and_no_other() {
    let s = setup(
        "",
        &[("MEMHOST_NO_AUTH", "true")],
        &[r#"{"name": "team", "embedder": "none"}"#],
    );
    let anonymous = s.admin.as_key(None);
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let call = |origin: Option<String>| {
        let mut headers = vec![
            "accept: application/json, text/event-stream".to_string(),
            "mcp-protocol-version: 2026-07-28".to_string(),
            "mcp-method: tools/list".to_string(),
        ];
        headers.extend(origin.map(|o| format!("origin: {o}")));
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        curl_full(&anonymous, "POST", "/mcp", Some(list), &headers).status
    };
    let port = s.server.addr.rsplit(':').next().unwrap().to_string();
    // A client that is no browser, and a page of this server itself.
    assert_eq!(call(None), 200);
    assert_eq!(call(Some(format!("http://127.0.0.1:{port}"))), 200);
    // Any other page, another local port included: 403.
    assert_eq!(call(Some("https://evil.example".into())), 403);
    assert_eq!(call(Some("http://127.0.0.1:1".into())), 403);
    assert_eq!(call(Some("null".into())), 403);
}

#[test]
fn the_transport_refuses_what_the_specification_says() {
    let Setup {
        admin,
        server: _server,
        ..
    } = setup(
        "[server]\nmcp_allowed_origins = [\"https://app.example:443\"]",
        &[],
        &[r#"{"name": "team", "embedder": "none"}"#],
    );
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let modern = [
        "accept: application/json, text/event-stream",
        "mcp-protocol-version: 2026-07-28",
    ];
    // As sent, it works.
    let ok = curl_full(
        &admin,
        "POST",
        "/mcp",
        Some(list),
        &[modern[0], modern[1], "mcp-method: tools/list"],
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body["result"]["tools"].is_array(), "{}", ok.body);
    // The method header disagrees with the body: 400, HeaderMismatch.
    let r = curl_full(
        &admin,
        "POST",
        "/mcp",
        Some(list),
        &[modern[0], modern[1], "mcp-method: tools/call"],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["code"], -32020, "{}", r.body);
    // So does the version header.
    let r = curl_full(
        &admin,
        "POST",
        "/mcp",
        Some(list),
        &[
            modern[0],
            "mcp-protocol-version: 2025-11-25",
            "mcp-method: tools/list",
        ],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // A browser page from another origin: 403.
    let r = curl_full(
        &admin,
        "POST",
        "/mcp",
        Some(list),
        &[
            modern[0],
            modern[1],
            "mcp-method: tools/list",
            "origin: https://evil.example",
        ],
    );
    assert_eq!(r.status, 403);
    // One the operator allowed is served.
    let r = curl_full(
        &admin,
        "POST",
        "/mcp",
        Some(list),
        &[
            modern[0],
            modern[1],
            "mcp-method: tools/list",
            "origin: https://app.example",
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Malformed JSON: a JSON-RPC parse error, nothing stored.
    let r = curl_full(
        &admin,
        "POST",
        "/mcp",
        Some("{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": "),
        &[modern[0], modern[1], "mcp-method: tools/call"],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["code"], -32700, "{}", r.body);
    // An argument the tool does not take: a tool error naming it.
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"memory_get","arguments":{"namespace":"team","id":"x","bogus":1}}}"#;
    let r = curl_full(
        &admin,
        "POST",
        "/mcp",
        Some(call),
        &[modern[0], "mcp-protocol-version: 2025-06-18"],
    );
    assert_eq!(r.body["result"]["isError"], true, "{}", r.body);
    assert!(
        r.body["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("bogus")),
        "{}",
        r.body
    );
    // Over the body limit (1 MiB): 413, as REST.
    let big = serde_json::json!({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "memory_store", "arguments": {"namespace": "team", "content": "x".repeat(2 << 20)}}
    })
    .to_string();
    let r = curl_full(
        &admin,
        "POST",
        "/mcp",
        Some(&big),
        &[
            modern[0],
            modern[1],
            "mcp-method: tools/call",
            "mcp-name: memory_store",
        ],
    );
    assert_eq!(r.status, 413, "{}", r.body);
    let (_, page) = curl(&admin, "GET", "/v1/namespaces/team/memories", None);
    assert_eq!(
        page["memories"],
        serde_json::json!([]),
        "nothing was stored"
    );
    // No stream to GET, no session to DELETE.
    for method in ["GET", "DELETE"] {
        let r = curl_full(&admin, method, "/mcp", None, &[]);
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow").as_deref(), Some("POST"));
    }
    // No key: 401 with the challenge, as REST.
    let r = curl_full(&admin.as_key(None), "POST", "/mcp", Some(list), &modern);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
}

#[test]
fn a_client_goes_on_when_the_server_restarts_under_it() {
    let Setup {
        tmp,
        data,
        server,
        admin,
    } = setup("", &[], &[r#"{"name": "team", "embedder": "none"}"#]);
    let addr = server.addr.clone();
    let config = tmp.path().join("memhost.toml");
    let mut server = server;
    for mode in ["auto", "legacy"] {
        let mut child = script("restart", &admin, "team", mode)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let before: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(before["is_error"], false, "{before}");
        // Stop the server and start a new process on the same address
        // while the client is connected, then let the client go on.
        drop(server);
        server = Server::start_at(&data, &config, &[], &addr);
        writeln!(child.stdin.as_mut().unwrap()).unwrap();
        let rest: Vec<Value> = lines
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(rest.len(), 2, "{rest:?}");
        assert_eq!(rest[0]["is_error"], false, "{}", rest[0]);
        assert_eq!(
            rest[0]["structured"]["results"][0]["id"], before["structured"]["id"],
            "{mode}"
        );
        assert_eq!(rest[1]["is_error"], false, "{}", rest[1]);
    }
    drop(server);
}
