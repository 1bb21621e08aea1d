//! OAuth 2.1 for MCP clients: memhost is its own authorization server.
//! The official MCP Python SDK's OAuth client (`target/py-mcp`) finds the
//! server from a 401, registers, sends a person to the consent page (a
//! console user signing in with a password), exchanges the code with PKCE
//! and calls tools with the token — in both protocol eras — and refreshes.
//! With curl: the discovery documents; what the specification forbids
//! (plain or missing PKCE, a wrong verifier, a reused code, a redirect not
//! registered, a token for another resource or at `/v1`, a replayed
//! refresh token, a role the person does not hold) is refused, and a
//! replay revokes what the stolen secret minted; a registration flood
//! gets 429.

use std::collections::HashMap;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::people::*;
use crate::common::root;
use crate::common::server::*;

/// RFC 7636 appendix B: a verifier and its S256 challenge.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const PASSWORD: &str = "correct horse battery";

/// A server with namespaces `home` and `other`, and console user alice
/// (writer on `home`, reader on `other`).
fn server(extra: &str) -> Setup {
    let s = setup_plugins(
        &["redact-pii"],
        extra,
        &[],
        &[
            r#"{"name": "home", "embedder": "none"}"#,
            r#"{"name": "other", "embedder": "none"}"#,
            r#"{"name": "ops", "embedder": "none"}"#,
        ],
    );
    create_user(
        &s.data,
        "alice",
        &["home=writer", "other=reader"],
        Some(PASSWORD),
    );
    s
}

/// A JSON POST without a key.
fn post_json(addr: &str, path: &str, body: &Value) -> Reply {
    let (status, headers, text) = curl_raw(
        addr,
        "POST",
        path,
        &[],
        Some(("application/json", &body.to_string())),
    );
    Reply {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
    }
}

/// A form POST to the token or revocation endpoint.
fn post_form(addr: &str, path: &str, pairs: &[(&str, &str)]) -> Reply {
    let (status, headers, text) = curl_raw(
        addr,
        "POST",
        path,
        &[],
        Some(("application/x-www-form-urlencoded", &form(pairs))),
    );
    Reply {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
    }
}

/// Register a public client redirecting to `redirect`: its id.
fn register(addr: &str, redirect: &str) -> String {
    let r = post_json(
        addr,
        "/oauth/register",
        &json!({"client_name": "Test client", "redirect_uris": [redirect], "token_endpoint_auth_method": "none"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["client_id"].as_str().unwrap().to_string()
}

/// `/console/oauth/authorize?…` with the usual parameters, `changes`
/// replacing (or, with `None`, dropping) some.
fn authorize_path(
    addr: &str,
    client: &str,
    redirect: &str,
    changes: &[(&str, Option<&str>)],
) -> String {
    let resource = format!("http://{addr}/mcp");
    let mut pairs: Vec<(&str, String)> = vec![
        ("response_type", "code".into()),
        ("client_id", client.into()),
        ("redirect_uri", redirect.into()),
        ("state", "xyz".into()),
        ("code_challenge", CHALLENGE.into()),
        ("code_challenge_method", "S256".into()),
        ("resource", resource),
        ("scope", "memory:read memory:write".into()),
    ];
    for (k, v) in changes {
        pairs.retain(|(name, _)| name != k);
        if let Some(v) = v {
            pairs.push((k, v.to_string()));
        }
    }
    format!(
        "/console/oauth/authorize?{}",
        serde_urlencoded::to_string(&pairs).unwrap()
    )
}

/// The fields of the consent page's form as a browser sends them: the
/// hidden inputs, and each select's selected option.
fn consent_fields(page: &str) -> Vec<(String, String)> {
    let attr = |tag: &str, name: &str| {
        tag.split(&format!(" {name}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(|v| v.replace("&amp;", "&").replace("&quot;", "\""))
    };
    let mut out = Vec::new();
    for input in page.split("<input").skip(1) {
        let tag = input.split('>').next().unwrap_or("");
        if attr(tag, "type").as_deref() == Some("hidden")
            && let (Some(n), Some(v)) = (attr(tag, "name"), attr(tag, "value"))
        {
            out.push((n, v));
        }
    }
    for select in page.split("<select").skip(1) {
        let name = attr(select.split('>').next().unwrap_or(""), "name").unwrap();
        let options = select.split("</select>").next().unwrap_or("");
        let chosen = options
            .split("<option")
            .skip(1)
            .map(|o| o.split('>').next().unwrap_or(""))
            .find(|o| o.contains(" selected"))
            .and_then(|o| attr(o, "value"));
        if let Some(v) = chosen {
            out.push((name, v));
        }
    }
    out
}

/// Location's query parameters.
fn location_params(r: &Reply) -> HashMap<String, String> {
    let to = r.header("location").unwrap_or_default();
    let query = to.split_once('?').map_or("", |(_, q)| q);
    serde_urlencoded::from_str(query).unwrap()
}

/// Alice opens `path` signed in (`cookie`), and answers with `roles`
/// (`role:PATTERN` = role) and `decision`: the reply to her answer.
fn answer(addr: &str, cookie: &str, path: &str, roles: &[(&str, &str)], decision: &str) -> Reply {
    let page = console(addr, "GET", path, &[cookie], None);
    assert_eq!(page.status, 200, "{}", body(&page));
    let mut fields = consent_fields(body(&page));
    for (k, v) in roles {
        fields.retain(|(name, _)| name != k);
        fields.push((k.to_string(), v.to_string()));
    }
    fields.push(("decision".into(), decision.into()));
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    console(
        addr,
        "POST",
        "/console/oauth/authorize",
        &[cookie],
        Some(&form(&pairs)),
    )
}

/// A code for `client`, alice having allowed `roles`.
fn code(addr: &str, cookie: &str, client: &str, redirect: &str, roles: &[(&str, &str)]) -> String {
    let r = answer(
        addr,
        cookie,
        &authorize_path(addr, client, redirect, &[]),
        roles,
        "allow",
    );
    assert_eq!(r.status, 303, "{}", body(&r));
    location_params(&r)["code"].clone()
}

fn exchange(addr: &str, client: &str, code: &str, redirect: &str) -> Reply {
    let resource = format!("http://{addr}/mcp");
    post_form(
        addr,
        "/oauth/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", VERIFIER),
            ("resource", &resource),
        ],
    )
}

/// `tools/list` with `token`: the HTTP status.
fn mcp_status(addr: &str, token: &str) -> u16 {
    mcp_request(
        &Client::new(addr, Some(token)),
        "tools/list",
        None,
        json!({}),
    )
    .status
}

#[test]
fn the_mcp_sdk_connects_with_oauth_in_both_eras_and_refreshes() {
    let s = server("[oauth]\nrefresh_grace_seconds = 1\n");
    let url = format!("http://{}/mcp", s.server.addr);
    for mode in ["auto", "legacy"] {
        let out = Command::new(crate::mcp::python())
            .arg(root().join("tests/python/oauth_client.py"))
            .args([&url, "alice", PASSWORD, "home", mode])
            .output()
            .unwrap();
        let seen = crate::common::steps(&out, &format!("the SDK's OAuth client ({mode})"));
        // Discovery led it to the consent page of this server, PKCE S256.
        let auth_url = seen["authorization_url"]["url"].as_str().unwrap();
        assert!(
            auth_url.starts_with(&format!(
                "http://{}/console/oauth/authorize?",
                s.server.addr
            )),
            "{auth_url}"
        );
        assert!(
            auth_url.contains("code_challenge_method=S256"),
            "{auth_url}"
        );
        // The page offered alice's own roles and no more.
        let consent = &seen["registered"]["consents"][0];
        assert_eq!(
            consent["roles"]["role:home"],
            json!(["none", "reader", "writer"])
        );
        assert_eq!(consent["roles"]["role:other"], json!(["none", "reader"]));
        assert!(consent["roles"].get("role:ops").is_none(), "{consent}");
        assert_eq!(consent["shows_redirect_host"], true);
        let tools = seen["tools"]["names"].as_array().unwrap();
        assert!(tools.contains(&json!("memory_store")), "{tools:?}");
        assert_eq!(seen["store"]["is_error"], false, "{}", seen["store"]);
        let id = seen["store"]["structured"]["id"].as_str().unwrap();
        let (status, memory) = curl(
            &s.admin,
            "GET",
            &format!("/v1/namespaces/home/memories/{id}"),
            None,
        );
        assert_eq!(status, 200);
        assert_eq!(memory["agent_id"], "alice");
        assert_eq!(memory["agent_type"], "assistant");
        let recalled = seen["recall"]["structured"]["results"].as_array().unwrap();
        assert!(recalled.iter().any(|r| r["id"] == id), "{recalled:?}");
        let tokens = &seen["tokens"];
        let first_refresh = tokens["refresh"].as_str().unwrap();
        assert!(tokens["access"].as_str().unwrap().starts_with("mha_"));
        assert!(first_refresh.starts_with("mhr_"));
        assert_eq!(tokens["scope"], "memory:read memory:write");
        assert_eq!(tokens["expires_in"], 3600);
        // It refreshed without asking the person again, and the pair rotated.
        assert_eq!(
            seen["after_refresh"]["is_error"], false,
            "{}",
            seen["after_refresh"]
        );
        let refreshed = &seen["refreshed"];
        assert_eq!(refreshed["consents"], 1);
        assert_ne!(refreshed["access"], tokens["access"]);
        assert_ne!(refreshed["refresh"], tokens["refresh"]);
        let newest = refreshed["access"].as_str().unwrap();
        assert_eq!(mcp_status(&s.server.addr, newest), 200);

        // The spent refresh token: good again within the grace (a client
        // whose answer was lost), then it is a replay and ends everything.
        let client = seen["registered"]["client_id"].as_str().unwrap();
        let refresh = |token: &str| {
            post_form(
                &s.server.addr,
                "/oauth/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", client),
                    ("refresh_token", token),
                ],
            )
        };
        let retried = refresh(first_refresh);
        assert_eq!(retried.status, 200, "{}", retried.body);
        // The pair the SDK kept is good too (a client that refreshed twice
        // at once keeps whichever answer it saved).
        let kept = refresh(refreshed["refresh"].as_str().unwrap());
        assert_eq!(kept.status, 200, "{}", kept.body);
        std::thread::sleep(std::time::Duration::from_millis(1200));
        let replay = refresh(first_refresh);
        assert_eq!(replay.status, 400, "{}", replay.body);
        assert_eq!(replay.body["error"], "invalid_grant");
        assert_eq!(mcp_status(&s.server.addr, newest), 401);
        let latest = retried.body["refresh_token"].as_str().unwrap();
        assert_eq!(
            refresh(latest).status,
            400,
            "the whole connection is revoked"
        );
    }
    let consents = audit_of(&s, "oauth.consent");
    assert_eq!(consents.len(), 2, "{consents:?}");
    assert!(
        consents
            .iter()
            .all(|e| e["key_id"] == "console:alice" && e["outcome"] == "ok")
    );
    let exchanged = audit_of(&s, "oauth.token");
    assert_eq!(
        exchanged.len(),
        2,
        "one per connection, refreshes not written: {exchanged:?}"
    );
    assert!(
        exchanged
            .iter()
            .all(|e| e["key_id"].as_str().unwrap().starts_with("oauth:"))
    );
    let revoked = audit_of(&s, "oauth.revoke");
    assert_eq!(revoked.len(), 2, "{revoked:?}");
    assert!(
        revoked[0]["detail"]
            .as_str()
            .unwrap()
            .contains("spent refresh token")
    );
    // The tool calls are recorded under the connection, as alice.
    let stores = audit_of(&s, "memory.store");
    assert!(
        stores.iter().any(
            |e| e["key_id"].as_str().unwrap().starts_with("oauth:") && e["agent_id"] == "alice"
        ),
        "{stores:?}"
    );
}

#[test]
fn discovery_documents_name_this_server_and_a_401_points_to_them() {
    let s = server("");
    let addr = &s.server.addr;
    let base = format!("http://{addr}");
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let (status, prm) = curl(&Client::new(addr, None), "GET", path, None);
        assert_eq!(status, 200, "{path}");
        assert_eq!(prm["resource"], format!("{base}/mcp"));
        assert_eq!(prm["authorization_servers"], json!([base]));
        let scopes = prm["scopes_supported"].as_array().unwrap();
        assert!(scopes.contains(&json!("memory:read")));
        assert!(!scopes.contains(&json!("offline_access")), "{scopes:?}");
    }
    let (status, asm) = curl(
        &Client::new(addr, None),
        "GET",
        "/.well-known/oauth-authorization-server",
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        asm["issuer"], base,
        "the issuer is exactly the well-known base"
    );
    assert_eq!(asm["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(asm["client_id_metadata_document_supported"], true);
    assert_eq!(asm["authorization_response_iss_parameter_supported"], true);
    assert_eq!(
        asm["authorization_endpoint"],
        format!("{base}/console/oauth/authorize")
    );
    assert!(
        asm["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("none"))
    );
    assert!(
        asm["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("offline_access"))
    );

    // A browser-based client may call the endpoints from its own origin.
    let (status, headers, _) = curl_raw(
        addr,
        "OPTIONS",
        "/oauth/token",
        &[
            "origin: http://localhost:6274",
            "access-control-request-method: POST",
        ],
        None,
    );
    assert_eq!(status, 204);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("access-control-allow-origin: *"),
        "{headers}"
    );
    let r = post_json(
        addr,
        "/oauth/register",
        &json!({"redirect_uris": ["http://localhost:6274/oauth/callback"]}),
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("*")
    );

    // /mcp without a credential says where to go; /v1 stays key-only.
    let r = curl_full(&Client::new(addr, None), "POST", "/mcp", Some("{}"), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        format!(
            "Bearer scope=\"memory:read memory:write\", resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\""
        )
    );
    let r = curl_full(
        &Client::new(
            addr,
            Some("mha_0000000000000000000000000000000000000000000000000000000000000000"),
        ),
        "POST",
        "/mcp",
        Some("{}"),
        &[],
    );
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer error=\"invalid_token\""),
        "{:?}",
        r.header("www-authenticate")
    );
    let r = curl_full(&Client::new(addr, None), "GET", "/v1/namespaces", None, &[]);
    assert_eq!(r.status, 401);
    assert!(
        !r.header("www-authenticate")
            .unwrap()
            .contains("resource_metadata")
    );
}

#[test]
fn the_authorization_server_refuses_what_the_specification_forbids() {
    let mut s = server("");
    let addr = s.server.addr.clone();
    let redirect = "http://127.0.0.1:5555/cb";

    // Registration: a redirect nobody allowed is refused, and not echoed.
    let r = post_json(
        &addr,
        "/oauth/register",
        &json!({"redirect_uris": ["https://evil.example/cb"]}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"], "invalid_redirect_uri");
    assert!(!r.body.to_string().contains("evil.example"), "{}", r.body);
    // A list with one allowed redirect: registered with that one only.
    let r = post_json(
        &addr,
        "/oauth/register",
        &json!({"redirect_uris": ["https://vscode.dev/redirect", "http://127.0.0.1:33418/"]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["redirect_uris"], json!(["http://127.0.0.1:33418/"]));
    let client = register(&addr, redirect);
    let cookie = session_cookie(&addr, "alice", PASSWORD);
    // A parameter given twice: which redirect would be meant? Refused.
    let twice = format!(
        "{}&redirect_uri=https%3A%2F%2Fevil.example%2Fcb",
        authorize_path(&addr, &client, redirect, &[])
    );
    let r = console(&addr, "GET", &twice, &[&cookie], None);
    assert_eq!(r.status, 400, "{}", body(&r));
    assert!(r.header("location").is_none());

    // An unknown client or a redirect it did not register: a page, and
    // nothing sent anywhere.
    for path in [
        authorize_path(&addr, "mhc_00000000000000000000000000000000", redirect, &[]),
        authorize_path(&addr, &client, "http://127.0.0.1:5555/other", &[]),
        authorize_path(&addr, &client, "https://evil.example/cb", &[]),
    ] {
        let r = console(&addr, "GET", &path, &[&cookie], None);
        assert_eq!(r.status, 400, "{path}: {}", body(&r));
        assert!(r.header("location").is_none(), "{path}");
    }
    // A client metadata document at a private or loopback address is
    // never fetched.
    for id in [
        "https://127.0.0.1:9/client.json",
        "https://localhost/client.json",
        "https://10.1.2.3/c.json",
    ] {
        let r = console(
            &addr,
            "GET",
            &authorize_path(&addr, id, redirect, &[]),
            &[&cookie],
            None,
        );
        assert_eq!(r.status, 400, "{id}: {}", body(&r));
        assert!(
            body(&r).contains("special address: refused"),
            "{id}: {}",
            body(&r)
        );
        let t = exchange(&addr, id, "mho_x", redirect);
        assert_eq!(t.status, 401, "{id}: {}", t.body);
        assert_eq!(t.body["error"], "invalid_client");
    }

    // PKCE and the resource: back to the client with the error, its
    // state and this issuer.
    for (changes, error) in [
        (vec![("code_challenge", None)], "invalid_request"),
        (
            vec![("code_challenge_method", Some("plain"))],
            "invalid_request",
        ),
        (vec![("code_challenge_method", None)], "invalid_request"),
        (vec![("resource", None)], "invalid_request"),
        (
            vec![("resource", Some(format!("http://{addr}/v1").as_str()))],
            "invalid_target",
        ),
        (
            vec![("response_type", Some("token"))],
            "unsupported_response_type",
        ),
    ] {
        let r = console(
            &addr,
            "GET",
            &authorize_path(&addr, &client, redirect, &changes),
            &[&cookie],
            None,
        );
        assert_eq!(r.status, 303, "{changes:?}: {}", body(&r));
        assert!(r.header("location").unwrap().starts_with(redirect));
        let p = location_params(&r);
        assert_eq!(p["error"], error, "{changes:?}");
        assert_eq!(p["state"], "xyz");
        assert_eq!(p["iss"], format!("http://{addr}"));
    }

    // Any loopback port; the page names where the answer goes, and only
    // that origin may receive the form's answer.
    let other_port = "http://127.0.0.1:7777/cb";
    let page = console(
        &addr,
        "GET",
        &authorize_path(&addr, &client, other_port, &[]),
        &[&cookie],
        None,
    );
    assert_eq!(page.status, 200, "{}", body(&page));
    assert!(body(&page).contains("127.0.0.1"));
    // A popup that an app opened keeps its opener on these pages.
    assert_eq!(
        page.header("cross-origin-opener-policy").as_deref(),
        Some("unsafe-none")
    );
    let home = console(&addr, "GET", "/console", &[&cookie], None);
    assert_eq!(
        home.header("cross-origin-opener-policy").as_deref(),
        Some("same-origin")
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("form-action 'self' http://127.0.0.1:7777"),
        "{:?}",
        page.header("content-security-policy")
    );

    // Alice cannot give what she does not hold.
    for forged in [
        ("role:ops", "reader"),
        ("role:home", "admin"),
        ("role:*", "admin"),
    ] {
        let r = answer(
            &addr,
            &cookie,
            &authorize_path(&addr, &client, redirect, &[]),
            &[forged],
            "allow",
        );
        assert_eq!(r.status, 403, "{forged:?}: {}", body(&r));
        assert!(r.header("location").is_none());
    }
    let denied = audit_of(&s, "oauth.consent");
    assert!(
        denied.iter().filter(|e| e["outcome"] == "denied").count() >= 3,
        "{denied:?}"
    );
    // Deny: the client hears access_denied.
    let r = answer(
        &addr,
        &cookie,
        &authorize_path(&addr, &client, redirect, &[]),
        &[],
        "deny",
    );
    assert_eq!(location_params(&r)["error"], "access_denied");

    // Allow: a code, the state and the issuer (RFC 9207).
    let r = answer(
        &addr,
        &cookie,
        &authorize_path(&addr, &client, other_port, &[]),
        &[],
        "allow",
    );
    assert_eq!(r.status, 303, "{}", body(&r));
    let p = location_params(&r);
    assert!(r.header("location").unwrap().starts_with(other_port));
    assert_eq!(p["state"], "xyz");
    assert_eq!(p["iss"], format!("http://{addr}"));
    // A wrong verifier spends the code.
    let wrong = post_form(
        &addr,
        "/oauth/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client),
            ("code", &p["code"]),
            ("redirect_uri", other_port),
            (
                "code_verifier",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
            ("resource", &format!("http://{addr}/mcp")),
        ],
    );
    assert_eq!(wrong.status, 400);
    assert_eq!(wrong.body["error"], "invalid_grant");
    assert_eq!(wrong.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(
        exchange(&addr, &client, &p["code"], other_port).body["error"],
        "invalid_grant"
    );

    // A good exchange; the same code again revokes what it minted.
    let c = code(&addr, &cookie, &client, redirect, &[]);
    let no_resource = post_form(
        &addr,
        "/oauth/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client),
            ("code", &c),
            ("redirect_uri", redirect),
            ("code_verifier", VERIFIER),
        ],
    );
    assert_eq!(
        no_resource.body["error"], "invalid_request",
        "{}",
        no_resource.body
    );
    let other_uri = exchange(&addr, &client, &c, "http://127.0.0.1:5556/cb");
    assert_eq!(other_uri.body["error"], "invalid_grant");
    let unknown_client = exchange(&addr, "mhc_11111111111111111111111111111111", &c, redirect);
    assert_eq!(unknown_client.status, 401);
    assert_eq!(unknown_client.body["error"], "invalid_client");
    let good = exchange(&addr, &client, &c, redirect);
    assert_eq!(good.status, 200, "{}", good.body);
    assert_eq!(good.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(good.body["token_type"], "Bearer");
    let access = good.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(mcp_status(&addr, &access), 200);
    let again = exchange(&addr, &client, &c, redirect);
    assert_eq!(again.body["error"], "invalid_grant");
    assert_eq!(
        mcp_status(&addr, &access),
        401,
        "a reused code revokes its tokens"
    );

    // A token is for /mcp only; revoking its refresh token ends it.
    let good = exchange(
        &addr,
        &client,
        &code(&addr, &cookie, &client, redirect, &[]),
        redirect,
    );
    let access = good.body["access_token"].as_str().unwrap().to_string();
    let (status, _) = curl(
        &Client::new(&addr, Some(&access)),
        "GET",
        "/v1/namespaces",
        None,
    );
    assert_eq!(status, 401, "no token passthrough to /v1");
    assert_eq!(mcp_status(&addr, &access), 200);
    let refresh = good.body["refresh_token"].as_str().unwrap();
    let r = post_form(
        &addr,
        "/oauth/revoke",
        &[("client_id", &client), ("token", refresh)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(mcp_status(&addr, &access), 401);
    let r = post_form(
        &addr,
        "/oauth/revoke",
        &[("client_id", &client), ("token", "mhr_unknown")],
    );
    assert_eq!(r.status, 200, "an unknown token: the same answer");

    // A read-only token calling a write tool: 403 insufficient_scope,
    // naming the scope to ask for (the client can step up).
    let path = authorize_path(&addr, &client, redirect, &[("scope", Some("memory:read"))]);
    let r = answer(&addr, &cookie, &path, &[], "allow");
    let read_only = exchange(&addr, &client, &location_params(&r)["code"], redirect);
    assert_eq!(read_only.body["scope"], "memory:read");
    let token = read_only.body["access_token"].as_str().unwrap();
    let r = mcp_request(
        &Client::new(&addr, Some(token)),
        "tools/call",
        Some("memory_store"),
        json!({"name": "memory_store", "arguments": {"namespace": "home", "content": "x"}}),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"memory:read memory:write\""),
        "{challenge}"
    );

    // Another public_url is another resource: the old tokens are refused.
    let live = exchange(
        &addr,
        &client,
        &code(&addr, &cookie, &client, redirect, &[]),
        redirect,
    );
    let live = live.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(mcp_status(&addr, &live), 200);
    let port = addr.rsplit(':').next().unwrap().to_string();
    let config = s.tmp.path().join("memhost.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("[server]\npublic_url = \"http://localhost:{port}\"\n{text}"),
    )
    .unwrap();
    s.server.child.kill().unwrap();
    s.server.child.wait().unwrap();
    s.server = Server::start_at(&s.data, &config, &[], &addr);
    assert_eq!(mcp_status(&addr, &live), 401);
    let failures = audit_of(&s, "auth.failure");
    assert!(
        failures.iter().any(|e| e["detail"]
            .as_str()
            .unwrap_or("")
            .contains("another resource")),
        "{failures:?}"
    );
}

#[test]
fn a_registration_flood_is_refused_and_registered_clients_keep_working() {
    // Behind a proxy (here the test itself, on loopback) each forwarded
    // address has its own allowance.
    let mut s = server("[oauth]\nregistrations_per_hour = 5\n");
    let addr = s.server.addr.clone();
    let first = register(&addr, "http://127.0.0.1:5555/cb");
    let config = s.tmp.path().join("memhost.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("[server]\ntrusted_proxies = [\"127.0.0.1\"]\n{text}"),
    )
    .unwrap();
    s.server.child.kill().unwrap();
    s.server.child.wait().unwrap();
    s.server = Server::start_at(&s.data, &config, &[], &addr);
    let from = |who: &str| {
        let (status, headers, _) = curl_raw(
            &addr,
            "POST",
            "/oauth/register",
            &[&format!("x-forwarded-for: 198.51.100.7, {who}")],
            Some((
                "application/json",
                r#"{"redirect_uris": ["http://127.0.0.1:5555/cb"]}"#,
            )),
        );
        (status, headers)
    };
    for _ in 0..5 {
        assert_eq!(from("203.0.113.1").0, 201);
    }
    let (status, headers) = from("203.0.113.1");
    assert_eq!(status, 429);
    assert!(
        headers.to_ascii_lowercase().contains("retry-after"),
        "{headers}"
    );
    assert_eq!(
        from("203.0.113.2").0,
        201,
        "another address has its own allowance"
    );
    // A client registered before goes on.
    let cookie = session_cookie(&addr, "alice", PASSWORD);
    let c = code(&addr, &cookie, &first, "http://127.0.0.1:5555/cb", &[]);
    assert_eq!(
        exchange(&addr, &first, &c, "http://127.0.0.1:5555/cb").status,
        200
    );
}

#[test]
fn a_configured_client_proves_its_secret_and_oauth_stays_off_without_https_off_loopback() {
    let secret = "a dashboard's long secret";
    let s = server(&format!(
        "[[oauth.clients]]\nclient_id = \"team-dashboard\"\nname = \"Team dashboard\"\nredirect_uris = [\"https://dash.example.com/cb\"]\nclient_secret_sha256 = \"{}\"\n",
        memhost::auth::oauth::secret_hash(secret)
    ));
    let addr = &s.server.addr;
    let redirect = "https://dash.example.com/cb";
    let cookie = session_cookie(addr, "alice", PASSWORD);
    let page = console(
        addr,
        "GET",
        &authorize_path(addr, "team-dashboard", redirect, &[]),
        &[&cookie],
        None,
    );
    assert!(body(&page).contains("Team dashboard"), "{}", body(&page));
    assert!(
        !body(&page).contains("registered itself"),
        "a configured client is not marked unverified"
    );
    let c = code(addr, &cookie, "team-dashboard", redirect, &[]);
    // No secret, or a wrong one in HTTP Basic: invalid_client (401).
    assert_eq!(exchange(addr, "team-dashboard", &c, redirect).status, 401);
    let resource = format!("http://{addr}/mcp");
    let pairs = [
        ("grant_type", "authorization_code"),
        ("code", c.as_str()),
        ("redirect_uri", redirect),
        ("code_verifier", VERIFIER),
        ("resource", resource.as_str()),
    ];
    let (status, headers, _) = curl_raw(
        addr,
        "POST",
        "/oauth/token",
        &["authorization: Basic dGVhbS1kYXNoYm9hcmQ6d3Jvbmc="], // team-dashboard:wrong
        Some(("application/x-www-form-urlencoded", &form(&pairs))),
    );
    assert_eq!(status, 401);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{headers}"
    );
    let mut with_secret = pairs.to_vec();
    with_secret.extend([("client_id", "team-dashboard"), ("client_secret", secret)]);
    let r = post_form(addr, "/oauth/token", &with_secret);
    assert_eq!(r.status, 200, "{}", r.body);

    // Listening off loopback without an https public_url: OAuth is off
    // (an http public_url naming localhost does not change that), and
    // `enabled = true` refuses to start.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = plugins_config(tmp.path(), &["redact-pii"], "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("[server]\npublic_url = \"http://localhost:7077\"\n{text}"),
    )
    .unwrap();
    let mut open = Server::start_at(&data, &config, &[], "0.0.0.0:0");
    let port = open.addr.rsplit(':').next().unwrap().to_string();
    let local = format!("127.0.0.1:{port}");
    let (status, _) = curl(
        &Client::new(&local, None),
        "GET",
        "/.well-known/oauth-authorization-server",
        None,
    );
    assert_eq!(status, 404);
    open.drain();
    assert!(
        open.seen
            .iter()
            .any(|l| l.contains("OAuth for MCP clients is off")),
        "{:?}",
        open.seen
    );
    drop(open);
    let strict = plugins_config(tmp.path(), &["redact-pii"], "[oauth]\nenabled = true\n");
    let (code, _, err) = memhost(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--data",
        data.to_str().unwrap(),
        "--config",
        strict.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("public_url with https://"), "{err}");
}

#[test]
fn a_person_sees_their_connected_apps_and_disconnects_them() {
    let s = server("");
    let addr = &s.server.addr;
    create_user(&s.data, "bob", &["home=writer"], Some(PASSWORD));
    let redirect = "http://127.0.0.1:5555/cb";
    let client = register(addr, redirect);
    let alice = session_cookie(addr, "alice", PASSWORD);
    let tokens = exchange(
        addr,
        &client,
        &code(addr, &alice, &client, redirect, &[("role:other", "none")]),
        redirect,
    );
    let access = tokens.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(mcp_status(addr, &access), 200);

    let page = console(addr, "GET", "/console/account", &[&alice], None);
    assert!(body(&page).contains("Test client"), "{}", body(&page));
    assert!(
        body(&page).contains("home=writer (memory:read memory:write)"),
        "{}",
        body(&page)
    );
    let id = body(&page)
        .split("/console/account/connections/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let csrf = |cookie: &str| {
        let page = console(addr, "GET", "/console/account", &[cookie], None);
        consent_fields(body(&page))
            .into_iter()
            .find(|(k, _)| k == "csrf")
            .unwrap()
            .1
    };
    // Bob cannot end alice's connection.
    let bob = session_cookie(addr, "bob", PASSWORD);
    let path = format!("/console/account/connections/{id}/disconnect");
    let r = console(
        addr,
        "POST",
        &path,
        &[&bob],
        Some(&form(&[("csrf", &csrf(&bob))])),
    );
    assert_eq!(r.status, 422, "{}", body(&r));
    assert_eq!(mcp_status(addr, &access), 200);
    // Alice can: its tokens stop at once, and the list is empty.
    let r = console(
        addr,
        "POST",
        &path,
        &[&alice],
        Some(&form(&[("csrf", &csrf(&alice))])),
    );
    assert_eq!(r.status, 303, "{}", body(&r));
    assert_eq!(mcp_status(addr, &access), 401);
    let page = console(addr, "GET", "/console/account", &[&alice], None);
    assert!(body(&page).contains("No MCP client"), "{}", body(&page));

    // Signing out everywhere disconnects every app too.
    let tokens = exchange(
        addr,
        &client,
        &code(addr, &alice, &client, redirect, &[]),
        redirect,
    );
    let access = tokens.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(mcp_status(addr, &access), 200);
    let r = console(
        addr,
        "POST",
        "/console/sign-out-everywhere",
        &[&alice],
        Some(&form(&[("csrf", &csrf(&alice))])),
    );
    assert_eq!(r.status, 303);
    assert_eq!(mcp_status(addr, &access), 401);
    let refresh = tokens.body["refresh_token"].as_str().unwrap();
    let r = post_form(
        addr,
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client),
            ("refresh_token", refresh),
        ],
    );
    assert_eq!(r.body["error"], "invalid_grant");
}

#[test]
fn the_operator_sees_every_connection_ends_one_and_removes_a_client() {
    let s = server("");
    let addr = &s.server.addr;
    let data = s.data.to_str().unwrap();
    let redirect = "http://127.0.0.1:5555/cb";
    let (first, second) = (register(addr, redirect), register(addr, redirect));
    let alice = session_cookie(addr, "alice", PASSWORD);
    let token = |client: &str| {
        let r = exchange(
            addr,
            client,
            &code(addr, &alice, client, redirect, &[]),
            redirect,
        );
        r.body["access_token"].as_str().unwrap().to_string()
    };
    let (a, b, c) = (token(&first), token(&first), token(&second));

    let (code_, out, err) = memhost(&["oauth", "connections", "--json", "--data", data]);
    assert_eq!(code_, 0, "{err}");
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 3, "{out}");
    assert!(list.iter().all(|c| c["user"] == "alice"));
    let (_, clients, _) = memhost(&["oauth", "clients", "--data", data]);
    assert!(
        clients.contains(&first) && clients.contains("registered"),
        "{clients}"
    );

    // One connection ended from the command line: its token stops at once.
    let id = list.iter().find(|c| c["client_id"] == second).unwrap()["id"]
        .as_str()
        .unwrap();
    let (code_, _, err) = memhost(&["oauth", "revoke", id, "--data", data]);
    assert_eq!(code_, 0, "{err}");
    assert_eq!(mcp_status(addr, &c), 401);
    assert_eq!(mcp_status(addr, &a), 200);
    // A client removed: every connection it had ends, it cannot come back.
    let (code_, _, err) = memhost(&["oauth", "remove-client", &first, "--data", data]);
    assert_eq!(code_, 0, "{err}");
    assert!(err.contains("2 connections ended"), "{err}");
    assert_eq!(mcp_status(addr, &a), 401);
    assert_eq!(mcp_status(addr, &b), 401);
    let page = console(
        addr,
        "GET",
        &authorize_path(addr, &first, redirect, &[]),
        &[&alice],
        None,
    );
    assert_eq!(page.status, 400);
    let (code_, _, err) = memhost(&["oauth", "revoke", "no-such-connection", "--data", data]);
    assert_ne!(code_, 0);
    assert!(err.contains("no connection no-such-connection"), "{err}");
    let removed = audit_of(&s, "oauth.remove-client");
    assert_eq!(removed[0]["key_id"], "cli");
}
