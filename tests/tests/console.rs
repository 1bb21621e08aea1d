//! The web console at `/console`, in a real browser: Debian's chromium and
//! chromedriver, driven by Selenium from `tests/python/console_browser.py`
//! (installed by `cargo xtask test` into `target/py-web`). A person signs
//! in with a one-time link and with a password; a used or expired link and
//! a wrong password are refused; a reader sees no write buttons and a
//! forged POST is refused anyway; a held `single:human` change is approved
//! in the browser and runs once; the session cookie does not authenticate
//! `/v1` or `/mcp`; forms without the session's CSRF token are refused;
//! sign-out ends the session. Without a browser (curl): failed sign-ins
//! are rate-limited per user and audited, oversized forms refused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::people::*;
use crate::common::root;
use crate::common::server::*;

fn python() -> PathBuf {
    let p = root().join("target/py-web/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask test` (it installs Selenium)",
        p.display()
    );
    p
}

/// Run a browser scenario: what the browser saw, by step.
fn browse(scenario: &str, inputs: Value) -> HashMap<String, Value> {
    let out = Command::new(python())
        .arg(root().join("tests/python/console_browser.py"))
        .arg(scenario)
        .arg(inputs.to_string())
        .output()
        .unwrap();
    crate::common::steps(&out, &format!("the browser scenario {scenario}"))
}

/// A one-time sign-in link for `name`, working for `valid`.
fn login_link(s: &Setup, name: &str, valid: &str) -> String {
    let (code, out, err) = memhost(&[
        "login-link",
        name,
        "--valid",
        valid,
        "--listen",
        &s.server.addr,
        "--data",
        s.data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let link = out.trim().to_string();
    assert!(
        link.starts_with(&format!("http://{}/console/link/mhl_", s.server.addr)),
        "{link}"
    );
    link
}

fn cookie_header(cookie: &Value) -> String {
    format!(
        "cookie: {}={}",
        cookie["name"].as_str().unwrap(),
        cookie["value"].as_str().unwrap()
    )
}

#[test]
fn a_person_signs_in_with_a_link_and_a_password_and_signs_out() {
    let s = setup_plugins(&["redact-pii", "policy-standard"], "", &[], &[]);
    let password = "a long enough secret";
    create_user(&s.data, "alice", &["*=admin"], Some(password));
    let link = login_link(&s, "alice", "10m");
    let expired = login_link(&s, "alice", "1s");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let base = format!("http://{}", s.server.addr);

    let seen = browse(
        "sign_in",
        json!({"base": base, "link": link, "expired_link": expired,
               "user": "alice", "password": password}),
    );
    let step = &seen["link"];
    assert_eq!(step["asked"]["h1"], "Sign in as alice", "{step}");
    assert_eq!(step["landed"]["url"], format!("{base}/console"), "{step}");
    assert_eq!(step["landed"]["who"], "alice", "{step}");
    // A link works once, and not after it expired.
    assert_eq!(seen["link_again"]["seen"]["h1"], "This link does not work");
    assert_eq!(
        seen["link_expired"]["seen"]["h1"],
        "This link does not work"
    );
    // The cookie is out of scripts' reach, never sent cross-site, and only
    // to the console.
    let cookie = &seen["cookie"]["cookie"];
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    assert_eq!(cookie["path"], "/console", "{cookie}");
    // Signed out: the console asks to sign in again, and the old cookie
    // is worth nothing.
    let out = &seen["signed_out"];
    assert!(
        out["after_sign_out"]["url"]
            .as_str()
            .unwrap()
            .contains("/console/login"),
        "{out}"
    );
    assert_eq!(out["after_sign_out"]["flash"][0], "You are signed out.");
    assert!(
        out["then"]["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/console/login?next=")),
        "{out}"
    );
    let old = console(
        &s.server.addr,
        "GET",
        "/console",
        &[&cookie_header(cookie)],
        None,
    );
    assert_eq!(old.status, 303, "{}", old.headers);
    assert!(
        old.header("location")
            .unwrap()
            .starts_with("/console/login")
    );

    let wrong = &seen["wrong_password"]["seen"];
    assert_eq!(wrong["h1"], "Sign in", "{wrong}");
    assert_eq!(wrong["flash"][0], "wrong user name or password", "{wrong}");
    let signed = &seen["password"];
    assert_eq!(signed["seen"]["who"], "alice", "{signed}");
    assert_eq!(signed["seen"]["url"], format!("{base}/console"));

    // The session cookie authenticates the console and nothing else.
    let cookie = &signed["cookie"];
    let jar = cookie_header(cookie);
    let token = cookie["value"].as_str().unwrap();
    let anon = s.admin.as_key(None);
    let bearer = format!("authorization: Bearer {token}");
    for header in [jar.as_str(), bearer.as_str()] {
        let headers = [header];
        let r = curl_full(&anon, "GET", "/v1/namespaces", None, &headers);
        assert_eq!(r.status, 401, "{headers:?}: {}", r.body);
        let r = curl_full(
            &anon,
            "POST",
            "/mcp",
            Some(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            &headers,
        );
        assert_eq!(r.status, 401, "{headers:?} on /mcp: {}", r.body);
    }
    // And an API key is no console login.
    let r = console(
        &s.server.addr,
        "GET",
        "/console",
        &[&format!("authorization: Bearer {}", s.server.key)],
        None,
    );
    assert_eq!(r.status, 303);

    // Forms without this session's CSRF token are refused, and change
    // nothing: the session survives a forged sign-out.
    let csrf = signed["csrf"].as_str().unwrap();
    for form in ["", "csrf=", &format!("csrf={}", "0".repeat(64))] {
        let r = console(
            &s.server.addr,
            "POST",
            "/console/sign-out",
            &[&jar],
            Some(form),
        );
        assert_eq!(r.status, 403, "{form}: {}", body(&r));
        assert!(body(&r).contains("CSRF"), "{}", body(&r));
    }
    // A cross-site page cannot post either, even with the token.
    let r = console(
        &s.server.addr,
        "POST",
        "/console/sign-out",
        &[
            &jar,
            "origin: https://evil.example",
            "sec-fetch-site: cross-site",
        ],
        Some(&format!("csrf={csrf}")),
    );
    assert_eq!(r.status, 403, "{}", body(&r));
    let still = console(&s.server.addr, "GET", "/console", &[&jar], None);
    assert_eq!(still.status, 200);
    // Every page says so: no script, no framing, no caching.
    let csp = still.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("script-src"), "{csp}");
    assert_eq!(still.header("cache-control").as_deref(), Some("no-store"));
    assert!(!body(&still).contains("<script"));

    let r = console(
        &s.server.addr,
        "POST",
        "/console/sign-out",
        &[&jar],
        Some(&format!("csrf={csrf}")),
    );
    assert_eq!(r.status, 303, "{}", body(&r));
    let gone = console(&s.server.addr, "GET", "/console", &[&jar], None);
    assert_eq!(gone.status, 303);

    // Each sign-in and sign-out is in the audit log, as the person.
    let sign_ins = audit_of(&s, "console.sign-in");
    let ok: Vec<&Value> = sign_ins.iter().filter(|e| e["outcome"] == "ok").collect();
    assert_eq!(ok.len(), 2, "{sign_ins:?}");
    assert!(
        ok.iter()
            .all(|e| e["key_id"] == "console:alice" && e["agent_type"] == "human")
    );
    assert!(
        sign_ins
            .iter()
            .any(|e| e["outcome"] == "denied" && e["key_id"] == "console:alice"),
        "{sign_ins:?}"
    );
    assert_eq!(audit_of(&s, "console.sign-out").len(), 2);
}

#[test]
fn a_reader_sees_no_write_buttons_and_a_forged_post_is_refused() {
    let s = setup_plugins(
        &["redact-pii", "policy-standard"],
        "",
        &[],
        &[r#"{"name": "team"}"#],
    );
    let mut ids = Vec::new();
    for text in [
        "The staging database is rebuilt every night at 02:00 UTC.",
        "Carol owns the onboarding checklist.",
    ] {
        let (status, m) = curl(
            &s.admin,
            "POST",
            "/v1/namespaces/team/memories",
            Some(&json!({"content": text}).to_string()),
        );
        assert_eq!(status, 201, "{m}");
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    let password = "reader's long password";
    create_user(&s.data, "bob", &["team=reader"], Some(password));
    let base = format!("http://{}", s.server.addr);
    let seen = browse(
        "reader",
        json!({"base": base, "user": "bob", "password": password, "ns": "team",
               "memory": ids[0], "query": "staging database"}),
    );
    let r = &seen["reader"];
    assert_eq!(r["ns_page"]["h1"], "team", "{r}");
    assert_eq!(r["listed"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(
        r["content"],
        "The staging database is rebuilt every night at 02:00 UTC."
    );
    assert_eq!(r["store_form"], false, "{r}");
    assert_eq!(r["change_form"], false, "{r}");
    assert_eq!(r["forget_button"], false, "{r}");
    let nav: Vec<&str> = r["nav"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(nav, ["Namespaces", "Approvals", "Plugins"], "{r}");
    // Search shows which channel found each result.
    let results = seen["search"]["results"].as_array().unwrap();
    assert_eq!(
        results[0]["text"], "The staging database is rebuilt every night at 02:00 UTC.",
        "{results:?}"
    );
    assert_eq!(results[0]["channels"], json!(["words"]));

    // The buttons are missing, and the actions are refused anyway: a
    // forged POST with bob's own cookie and token gets 403.
    let jar = cookie_header(&r["cookie"]);
    let csrf = r["csrf"].as_str().unwrap();
    for (path, form) in [
        (
            "/console/ns/team/memories".to_string(),
            format!("csrf={csrf}&content=forged"),
        ),
        (
            format!("/console/ns/team/m/{}", ids[0]),
            format!("csrf={csrf}&content=changed&title=&tags="),
        ),
        (
            format!("/console/ns/team/m/{}/forget", ids[1]),
            format!("csrf={csrf}"),
        ),
        (
            "/console/keys".into(),
            format!("csrf={csrf}&agent_id=x&agent_type=y&roles=team%3Dadmin"),
        ),
        (
            "/console/users".into(),
            format!("csrf={csrf}&name=mallory&roles=team%3Dadmin"),
        ),
        ("/console/plugins/reload".into(), format!("csrf={csrf}")),
    ] {
        let reply = console(&s.server.addr, "POST", &path, &[&jar], Some(&form));
        assert_eq!(reply.status, 403, "{path}: {}", body(&reply));
    }
    for page in ["/console/audit", "/console/keys", "/console/users"] {
        let reply = console(&s.server.addr, "GET", page, &[&jar], None);
        assert_eq!(reply.status, 403, "{page}");
    }
    let (_, list) = curl(&s.admin, "GET", "/v1/namespaces/team/memories", None);
    let list = list["memories"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|m| m["version"] == 1));
    // A form over 1 MiB is refused before it is read.
    let big = format!("csrf={csrf}&content={}", "a".repeat(1_100_000));
    let reply = console(
        &s.server.addr,
        "POST",
        "/console/ns/team/memories",
        &[&jar],
        Some(&big),
    );
    assert_eq!(reply.status, 413);
    // The refusals are audited as bob's.
    assert!(
        audit_entries(&s.admin)
            .iter()
            .any(|e| e["action"] == "memory.forget"
                && e["outcome"] == "denied"
                && e["key_id"] == "console:bob"),
    );
}

#[test]
fn a_held_single_human_change_is_approved_in_the_browser_and_runs_once() {
    let s = setup_plugins(
        &["redact-pii", "policy-standard"],
        "",
        &[],
        &[
            r#"{"name": "team", "policy": "update=single:human; *=allow", "human_votes": "console"}"#,
        ],
    );
    let (_, m) = curl(
        &s.admin,
        "POST",
        "/v1/namespaces/team/memories",
        Some(r#"{"content": "The budget review is on Monday in Paris."}"#),
    );
    let id = m["id"].as_str().unwrap().to_string();
    let agent = create_key(&s.data, "planner", "assistant", &["team=admin"], &[]);
    let agent = s.admin.as_key(Some(&agent));
    let (status, held) = curl(
        &agent,
        "PATCH",
        &format!("/v1/namespaces/team/memories/{id}"),
        Some(r#"{"content": "The budget review is on Tuesday in Berlin."}"#),
    );
    assert_eq!(status, 202, "{held}");
    let approval = held["approval"]["id"].as_str().unwrap().to_string();
    let hash = held["approval"]["payload_hash"]
        .as_str()
        .unwrap()
        .to_string();

    // This namespace counts only people signed in to the console as
    // `human`: a key an operator typed human is refused.
    let typed = create_key(&s.data, "pat", "human", &["team=writer"], &[]);
    let (status, refused) = curl(
        &s.admin.as_key(Some(&typed)),
        "POST",
        &format!("/v1/approvals/{approval}/votes"),
        Some(&json!({"decision": "approve", "payload_hash": hash}).to_string()),
    );
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains("console"),
        "{refused}"
    );

    create_user(&s.data, "carol", &["team=writer"], None);
    let link = login_link(&s, "carol", "10m");
    let base = format!("http://{}", s.server.addr);
    let seen = browse(
        "approve",
        json!({"base": base, "link": link, "approval": approval}),
    );
    let a = &seen["approve"];
    assert!(
        a["queue"][0].as_str().unwrap().contains(&approval[..8]),
        "{a}"
    );
    assert!(
        a["item"]["h1"]
            .as_str()
            .unwrap()
            .starts_with("update in team"),
        "{a}"
    );
    assert!(a["facts"].as_str().unwrap().contains("planner"), "{a}");
    // The held change against the current version, word by word.
    let words = |k: &str| -> String {
        a[k].as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        words("inserted").contains("Tuesday") && words("inserted").contains("Berlin"),
        "{a}"
    );
    assert!(
        words("deleted").contains("Monday") && words("deleted").contains("Paris"),
        "{a}"
    );
    assert_eq!(a["after"]["flash"][0], "Approved: the change ran.", "{a}");
    let votes = a["votes"].as_array().unwrap();
    assert_eq!(votes.len(), 1, "{a}");
    assert!(votes[0].as_str().unwrap().contains("carol"), "{a}");
    assert!(votes[0].as_str().unwrap().contains("console"), "{a}");
    assert_eq!(a["vote_form"], false);
    assert_eq!(
        a["tab_reached_approve"], true,
        "Tab from the comment goes to Approve"
    );

    // It ran, once, as the planner asked.
    let (_, now) = curl(
        &s.admin,
        "GET",
        &format!("/v1/namespaces/team/memories/{id}"),
        None,
    );
    assert_eq!(now["content"], "The budget review is on Tuesday in Berlin.");
    assert_eq!(now["version"], 2);
    let (_, item) = curl(&s.admin, "GET", &format!("/v1/approvals/{approval}"), None);
    assert_eq!(item["state"], "executed", "{item}");
    assert_eq!(item["votes"][0]["agent_id"], "carol");
    assert_eq!(item["votes"][0]["key_id"], "console:carol");
    let updates: Vec<Value> = audit_of(&s, "memory.update")
        .into_iter()
        .filter(|e| e["outcome"] == "ok")
        .collect();
    assert_eq!(updates.len(), 1, "{updates:?}");
    // Voting again changes nothing.
    let (status, again) = curl(
        &s.admin.as_key(Some(&typed)),
        "POST",
        &format!("/v1/approvals/{approval}/votes"),
        Some(&json!({"decision": "approve", "payload_hash": hash}).to_string()),
    );
    assert!(status == 403 || status == 409, "{status} {again}");
    let (_, history) = curl(
        &s.admin,
        "GET",
        &format!("/v1/namespaces/team/memories/{id}/history"),
        None,
    );
    assert_eq!(history["versions"].as_array().unwrap().len(), 2);
}

#[test]
fn a_writer_stores_changes_and_forgets_in_the_browser_under_the_same_governance() {
    let s = setup_plugins(
        &["redact-pii", "policy-standard"],
        "",
        &[],
        &[
            r#"{"name": "notes"}"#,
            r#"{"name": "guarded", "policy": "store=single:human; *=allow"}"#,
        ],
    );
    create_user(&s.data, "fay", &["notes=writer", "guarded=writer"], None);
    let link = login_link(&s, "fay", "10m");
    let seen = browse(
        "write",
        json!({"base": format!("http://{}", s.server.addr), "link": link,
               "ns": "notes", "held_ns": "guarded",
               "content": "The offsite is in Lisbon in May.",
               "changed": "The offsite is in Porto in June."}),
    );
    let w = &seen["write"];
    assert_eq!(w["stored"]["flash"][0], "Stored.", "{w}");
    assert_eq!(w["changed"]["flash"][0], "Saved as a new version.", "{w}");
    let inserted = w["inserted"].to_string();
    assert!(
        inserted.contains("Porto") && inserted.contains("June"),
        "{w}"
    );
    // A store the namespace's policy holds: nothing written, the approval
    // named.
    assert_eq!(w["held"]["h1"], "Held for approval", "{w}");
    assert!(
        w["held"]["flash"][0]
            .as_str()
            .unwrap()
            .starts_with("Held for approval."),
        "{w}"
    );
    assert_eq!(w["approval"].as_array().unwrap().len(), 1, "{w}");
    assert_eq!(w["forgot"]["flash"][0], "Forgotten.", "{w}");

    // What the browser did is what the API shows, written by fay.
    let (_, notes) = curl(&s.admin, "GET", "/v1/namespaces/notes/memories", None);
    assert_eq!(notes["memories"].as_array().unwrap().len(), 0, "{notes}");
    let (_, guarded) = curl(&s.admin, "GET", "/v1/namespaces/guarded/memories", None);
    assert_eq!(
        guarded["memories"].as_array().unwrap().len(),
        0,
        "{guarded}"
    );
    let (_, pending) = curl(&s.admin, "GET", "/v1/approvals?namespace=guarded", None);
    let pending = pending["approvals"].as_array().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["requester"]["agent_id"], "fay");
    assert_eq!(pending[0]["requester"]["key_id"], "console:fay");
    for action in ["memory.store", "memory.update", "memory.forget"] {
        assert!(
            audit_of(&s, action)
                .iter()
                .any(|e| e["key_id"] == "console:fay" && e["outcome"] == "ok"),
            "{action}"
        );
    }
}

#[test]
fn failed_sign_ins_are_rate_limited_per_user_and_audited() {
    let s = setup_plugins(&["redact-pii"], "", &[], &[]);
    let password = "the right password";
    create_user(&s.data, "dave", &["*=reader"], Some(password));
    let attempt = |pw: &str| sign_in_post(&s.server.addr, "dave", pw);
    // Without the sign-in form's own token, nothing is even checked.
    let r = console(
        &s.server.addr,
        "POST",
        "/console/login",
        &[],
        Some(&form(&[("user", "dave"), ("password", password)])),
    );
    assert_eq!(r.status, 403);
    // A name no user can have is the address's failure only: refused at
    // once and audited without the name — nothing of half a MiB is kept.
    let attempt_as = |user: &str, pw: &str| sign_in_post(&s.server.addr, user, pw).status;
    let huge = "x".repeat(1 << 19);
    assert_eq!(attempt_as(&huge, "guess one two three"), 401);
    let nameless = audit_of(&s, "console.sign-in");
    assert_eq!(nameless.len(), 1, "{nameless:?}");
    assert_eq!(nameless[0]["key_id"], Value::Null);
    assert!(
        audit_entries(&s.admin)
            .iter()
            .all(|e| e.to_string().len() < 4096),
        "an audit entry carries the huge name"
    );
    for _ in 0..5 {
        assert_eq!(attempt("guess one two three").status, 401);
    }
    let limited = attempt("guess one two three");
    assert_eq!(
        limited.status,
        429,
        "{}\n{}",
        limited.headers,
        body(&limited)
    );
    assert!(limited.header("retry-after").is_some());
    // While the name is throttled the right password is refused too: a
    // guesser learns nothing from it.
    assert_eq!(attempt(password).status, 429);
    let denied: Vec<Value> = audit_of(&s, "console.sign-in")
        .into_iter()
        .filter(|e| e["outcome"] == "denied" && !e["key_id"].is_null())
        .collect();
    assert!(denied.len() >= 5, "{denied:?}");
    assert!(denied.iter().all(|e| e["key_id"] == "console:dave"));

    // Guessing across names is held by the address's limit (shared with
    // failed API keys, 10 a minute by default): once over it, even the
    // right password of another user is refused before it is checked.
    create_user(&s.data, "erin", &["*=reader"], Some(password));
    let statuses: Vec<u16> = (0..10)
        .map(|i| attempt_as(&format!("nobody-{i}"), "guess one two three"))
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(attempt_as("erin", password), 429);
}

#[test]
fn the_main_pages_render_for_an_admin_on_a_desktop_and_a_phone() {
    let s = setup_plugins(
        &[
            "redact-pii",
            "policy-standard",
            "extract-entities",
            "embed-static",
        ],
        &crate::common::embedder_grants(),
        &[],
        &[
            r#"{"name": "research", "description": "What the research agents learned", "policy": "forget=single:human; *=allow"}"#,
            r#"{"name": "support", "policy": "update=single:human; *=allow"}"#,
        ],
    );
    let agent = create_key(&s.data, "research-bot", "assistant", &["*=writer"], &[]);
    let agent = s.admin.as_key(Some(&agent));
    let mut first = String::new();
    for (ns, text, tags) in [
        (
            "research",
            "Alice moved the quarterly budget review to next Tuesday in Berlin.",
            "planning",
        ),
        (
            "research",
            "The staging database is rebuilt every night at 02:00 UTC.",
            "ops",
        ),
        (
            "research",
            "Bob prefers short status updates on Mondays.",
            "people",
        ),
        (
            "research",
            "Carol owns the onboarding checklist; ask her before changing it.",
            "people",
        ),
        (
            "support",
            "Customers on the Team plan get replies within four hours.",
            "sla",
        ),
    ] {
        let (status, m) = curl(
            &agent,
            "POST",
            &format!("/v1/namespaces/{ns}/memories?wait=indexed"),
            Some(&json!({"content": text, "tags": [tags]}).to_string()),
        );
        assert_eq!(status, 201, "{m}");
        if first.is_empty() {
            first = m["id"].as_str().unwrap().to_string();
        }
    }
    let (status, _) = curl(
        &agent,
        "PATCH",
        &format!("/v1/namespaces/research/memories/{first}"),
        Some(r#"{"content": "Alice moved the quarterly budget review to Wednesday in Berlin."}"#),
    );
    assert_eq!(status, 200);
    let (status, held) = curl(
        &agent,
        "DELETE",
        &format!("/v1/namespaces/research/memories/{first}"),
        None,
    );
    assert_eq!(status, 202, "{held}");
    let approval = held["approval"]["id"].as_str().unwrap().to_string();
    create_user(&s.data, "admin", &["*=admin"], None);
    create_user(
        &s.data,
        "erin",
        &["support=writer"],
        Some("erin's long password"),
    );
    // Made afresh: a picture left by an earlier run proves nothing.
    let out = root().join("target/console-screenshots");
    let _ = std::fs::remove_dir_all(&out);
    let pages = json!([
        ["namespaces", "/console"],
        ["memories", "/console/ns/research"],
        [
            "search",
            "/console/ns/research?q=when+is+the+budget+meeting"
        ],
        ["memory", format!("/console/ns/research/m/{first}")],
        ["approvals", "/console/approvals"],
        ["approval", format!("/console/approvals/{approval}")],
        ["audit", "/console/audit"],
        ["plugins", "/console/plugins"],
        ["keys", "/console/keys"],
        ["users", "/console/users"],
    ]);
    let phone = json!([
        ["memories", "/console/ns/research"],
        ["approval", format!("/console/approvals/{approval}")],
    ]);
    let links = [
        login_link(&s, "admin", "10m"),
        login_link(&s, "admin", "10m"),
    ];
    let seen = browse(
        "screens",
        json!({"base": format!("http://{}", s.server.addr), "out": out, "links": links,
               "pages": pages, "phone_pages": phone}),
    );
    let shots = seen["screens"]["shots"].as_array().unwrap();
    let h1 = |name: &str| -> String {
        let shot = shots.iter().find(|s| s["name"] == name).unwrap();
        assert_eq!(shot["page"]["who"], "admin", "{shot}");
        shot["page"]["h1"].as_str().unwrap().to_string()
    };
    assert_eq!(h1("namespaces"), "Namespaces");
    assert_eq!(h1("memories"), "research");
    assert_eq!(h1("search"), "research");
    let search = shots.iter().find(|s| s["name"] == "search").unwrap();
    assert!(
        search["page"]["flash"].as_array().unwrap().is_empty(),
        "{search}"
    );
    assert_eq!(h1("memory"), "Memory");
    assert_eq!(h1("approvals"), "Approvals");
    assert!(h1("approval").starts_with("forget in research"));
    assert_eq!(h1("audit"), "Audit log");
    assert_eq!(h1("plugins"), "Plugins");
    assert_eq!(h1("keys"), "API keys");
    assert_eq!(h1("users"), "Users");
    assert_eq!(h1("memories-phone"), "research");
    let audit = shots.iter().find(|s| s["name"] == "audit").unwrap();
    assert!(
        audit["page"]["flash"][0]
            .as_str()
            .unwrap()
            .starts_with("Chain verified"),
        "{audit}"
    );
    for shot in shots {
        assert_eq!(shot["too_wide"], false, "{shot}");
    }
    for name in ["namespaces", "approval", "memories-phone"] {
        assert!(out.join(format!("{name}.png")).is_file());
    }
}

/// The service under the console, over a real store: what ends a session,
/// and the sweep that deletes what can no longer sign anyone in.
#[test]
fn sessions_end_when_their_user_is_disabled_signed_out_or_given_a_new_password() {
    use memhost::auth::Principal;
    use memhost::auth::sessions::SessionSettings;
    use memhost::crypto::MasterKey;
    use memhost::service::{NewKey, Service, ServiceError};
    use memhost::store::keyring::Keyring;
    use memhost::store::{Store, StoreOptions};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db"), &StoreOptions::default()).unwrap();
    let keyring = Arc::new(Keyring::open(&store, MasterKey::generate()).unwrap());
    let plugins = Arc::new(crate::common::registry(
        memhost::plugins::PluginSettings::default(),
        None,
    ));
    let service = Service::new(store, keyring, plugins).unwrap();
    let op = Principal::operator();
    let settings = SessionSettings::default();
    let pw = "twelve or more characters";
    for name in ["ann", "ben", "cat"] {
        service
            .create_user(&op, name, vec!["*=reader".parse().unwrap()], Some(pw))
            .unwrap();
    }
    let sign_in = |name: &str| service.sign_in_password(name, pw, None).unwrap().token;
    let (ann, ben, cat) = (sign_in("ann"), sign_in("ben"), sign_in("cat"));
    let cat_later = sign_in("cat");
    for t in [&ann, &ben, &cat, &cat_later] {
        assert!(service.session(t, &settings).is_ok());
    }
    // A link that expired, and one still good.
    let (old_link, _) = service.sign_in_link(&op, "ann", 1000).unwrap();
    let (good_link, _) = service.sign_in_link(&op, "ann", 600_000).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(service.peek_link(&old_link).is_err());

    service.disable_user(&op, "ann").unwrap();
    service.sign_out_everywhere(&op, "ben").unwrap();
    service
        .set_password(&op, "cat", None, "another long password")
        .unwrap();
    // Without waiting for the sweep, none of them works any more; a
    // disabled user cannot sign in, and the new password is the one.
    for t in [&ann, &ben, &cat, &cat_later] {
        assert!(service.session(t, &settings).is_err());
    }
    assert!(service.sign_in_password("ann", pw, None).is_err());
    assert!(service.use_link(&good_link, None).is_err());
    assert!(service.sign_in_password("cat", pw, None).is_err());
    let fresh = service
        .sign_in_password("cat", "another long password", None)
        .unwrap()
        .token;
    // Links made before a sign-out everywhere are void too.
    let (ben_link, _) = service.sign_in_link(&op, "ben", 600_000).unwrap();
    service.sign_out_everywhere(&op, "ben").unwrap();
    assert!(service.use_link(&ben_link, None).is_err());
    let fresh_ben = sign_in("ben");

    // A person changing their own password gives the current one.
    let ben_self = service
        .session(&fresh_ben, &settings)
        .unwrap()
        .1
        .principal();
    let refused = service.set_password(&ben_self, "ben", None, "yet another password");
    assert!(
        matches!(refused, Err(ServiceError::Forbidden(_))),
        "{refused:?}"
    );
    let refused = service.set_password(&ben_self, "ben", Some("wrong one"), "yet another password");
    assert!(
        matches!(refused, Err(ServiceError::Forbidden(_))),
        "{refused:?}"
    );

    // Only global admins manage people: a namespace admin who could sign
    // in as someone could vote as them.
    let (team_admin, _) = service
        .create_key(
            &op,
            NewKey {
                agent_id: "lead".into(),
                agent_type: "human".into(),
                grants: vec!["team=admin".parse().unwrap()],
                expires_at: None,
                rate: None,
            },
        )
        .unwrap();
    let lead = service.authenticate(&team_admin).unwrap().principal();
    service
        .create_user(&op, "tim", vec!["team=reader".parse().unwrap()], Some(pw))
        .unwrap();
    for refused in [
        service
            .create_user(&lead, "sock", vec!["team=reader".parse().unwrap()], None)
            .map(|_| ()),
        service.sign_in_link(&lead, "tim", 600_000).map(|_| ()),
        service.set_password(&lead, "tim", None, "taken over by lead"),
        service.disable_user(&lead, "tim").map(|_| ()),
        service.users(&lead).map(|_| ()),
    ] {
        assert!(
            matches!(refused, Err(ServiceError::Forbidden(_))),
            "{refused:?}"
        );
    }

    // Disabling a person revokes the keys they made in the console.
    service
        .create_user(&op, "dee", vec!["team=admin".parse().unwrap()], Some(pw))
        .unwrap();
    let dee = service
        .sign_in_password("dee", pw, None)
        .unwrap()
        .user
        .principal();
    let (dee_key, _) = service
        .create_key(
            &dee,
            NewKey {
                agent_id: "dee-bot".into(),
                agent_type: "assistant".into(),
                grants: vec!["team=writer".parse().unwrap()],
                expires_at: None,
                rate: None,
            },
        )
        .unwrap();
    assert!(service.authenticate(&dee_key).is_ok());
    service.disable_user(&op, "dee").unwrap();
    assert!(service.authenticate(&dee_key).is_err());

    // The sweep deletes the expired link and the sessions nobody can use
    // (the ones `session` already dropped are gone already); the new
    // sessions stay.
    let swept = service.purge_sessions(&settings).unwrap();
    assert!(swept >= 1, "{swept}");
    assert!(service.session(&fresh, &settings).is_ok());
    assert!(service.session(&fresh_ben, &settings).is_ok());
    assert_eq!(service.purge_sessions(&settings).unwrap(), 0);
}

#[test]
fn a_person_allows_a_connector_on_the_consent_page_with_the_keyboard() {
    let s = setup_plugins(
        &["redact-pii"],
        "",
        &[],
        &[
            r#"{"name": "home", "embedder": "none"}"#,
            r#"{"name": "other", "embedder": "none"}"#,
        ],
    );
    create_user(
        &s.data,
        "erin",
        &["home=writer", "other=reader"],
        Some("erin's long password"),
    );
    let base = format!("http://{}", s.server.addr);
    let out = browse(
        "consent",
        json!({
            "base": base,
            "user": "erin",
            "password": "erin's long password",
            "out": root().join("target/consent-screenshots"),
        }),
    );
    // Signed in before; coming back from the client's site, the consent
    // page shows at once (no second sign-in), naming where the answer goes.
    let consent = &out["consent"];
    assert!(
        consent["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{base}/console/oauth/authorize?")),
        "{consent}"
    );
    assert_eq!(
        consent["h1"], "Allow Browser test client to use your memories?",
        "{consent}"
    );
    assert_eq!(consent["host"], "127.0.0.1");
    assert_eq!(
        consent["selects"]["role:home"],
        json!(["none", "reader", "writer"])
    );
    assert_eq!(consent["selects"]["role:other"], json!(["none", "reader"]));
    assert_eq!(
        out["focus"]["value"], "allow",
        "Tab from the choices reaches Allow"
    );
    // The client's callback got a code, the state and this issuer.
    let callback = out["callback"]["path"].as_str().unwrap();
    let query: HashMap<String, String> =
        serde_urlencoded::from_str(callback.split_once('?').unwrap().1).unwrap();
    assert_eq!(query["state"], "s1");
    assert_eq!(query["iss"], base);
    // The token carries what erin chose: home, read-only; other not at all.
    let tokens = &out["tokens"];
    assert_eq!(tokens["token_type"], "Bearer");
    let agent = Client::new(&s.server.addr, tokens["access_token"].as_str());
    let listed = mcp(
        &agent,
        "tools/call",
        Some("memory_list"),
        json!({"name": "memory_list", "arguments": {"namespace": "home"}}),
    );
    assert_eq!(listed["isError"], false, "{listed}");
    let stored = mcp(
        &agent,
        "tools/call",
        Some("memory_store"),
        json!({"name": "memory_store", "arguments": {"namespace": "home", "content": "x"}}),
    );
    assert_eq!(stored["isError"], true, "reader only: {stored}");
    let other = mcp(
        &agent,
        "tools/call",
        Some("memory_list"),
        json!({"name": "memory_list", "arguments": {"namespace": "other"}}),
    );
    assert_eq!(other["isError"], true, "not shared: {other}");
}
