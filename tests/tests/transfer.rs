//! Export and import as users do them: `memhost export` (and `GET
//! …/export`) writes an age file the stock `age` tool opens into gzipped
//! JSON Lines with every field; importing it into a fresh server brings
//! back the same memories — ids, times, titles, tags, metadata — and
//! recall finds them; a re-import skips them. Imports go through the
//! funnel: redaction, the namespace's policy (which holds them), the audit
//! log. ai-memory's and mem0/OpenMemory's exports come in with their
//! fields mapped and what has no place said. Bad files are refused naming
//! what is wrong, and nothing stored is touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::common::server::{Client, Server, curl, memhost_bin, plugins_config};
use crate::common::{age_key, root};

fn cli(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (i32, String, String) {
    let out = Command::new(memhost_bin())
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `age -d -i KEY FILE | gunzip`, parsed line by line.
fn open_with_age(key: &Path, file: &Path) -> Vec<Value> {
    let mut age = Command::new("age")
        .args(["-d", "-i"])
        .arg(key)
        .arg(file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let gunzip = Command::new("gunzip")
        .arg("-c")
        .stdin(age.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(age.wait().unwrap().success(), "age -d failed");
    assert!(gunzip.status.success(), "age -d | gunzip failed");
    String::from_utf8(gunzip.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn download(c: &Client, path: &str, out: &Path) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-s", "-o"])
        .arg(out)
        .args(["-w", "%{http_code}", "-H"])
        .arg(format!(
            "authorization: Bearer {}",
            c.key.as_deref().unwrap()
        ))
        .arg(format!("http://{}{path}", c.addr))
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&o.stdout).parse().unwrap_or(0);
    (status, std::fs::read_to_string(out).unwrap_or_default())
}

fn upload(c: &Client, path: &str, file: &Path) -> (u16, Value) {
    let o = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-H"])
        .arg(format!(
            "authorization: Bearer {}",
            c.key.as_deref().unwrap()
        ))
        .args([
            "-H",
            "content-type: application/octet-stream",
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{}{path}", c.addr))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (
        status.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn store(c: &Client, ns: &str, body: Value) -> Value {
    let (status, r) = curl(
        c,
        "POST",
        &format!("/v1/namespaces/{ns}/memories"),
        Some(&body.to_string()),
    );
    assert_eq!(status, 201, "{r}");
    r
}

/// The fields an export promises to carry, of one memory.
fn fields(m: &Value) -> Value {
    json!({
        "id": m["id"], "content": m["content"], "title": m["title"], "tags": m["tags"],
        "metadata": m["metadata"], "created_at": m["created_at"], "updated_at": m["updated_at"],
        "observed_at": m["observed_at"], "importance": m["importance"],
    })
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/data/imports").join(name)
}

#[test]
fn an_export_opens_with_age_and_imports_into_a_fresh_server_as_the_same_memories() {
    let tmp = tempfile::tempdir().unwrap();
    let config = plugins_config(tmp.path(), &["redact-pii"], "");
    let data = tmp.path().join("a");
    let a = Server::start(&data, &config);
    let admin = a.client();
    let (status, r) = curl(&admin, "POST", "/v1/namespaces", Some(r#"{"name":"team"}"#));
    assert_eq!(status, 201, "{r}");
    let mut ids = Vec::new();
    for i in 0..12 {
        let m = store(
            &admin,
            "team",
            json!({
                "content": format!("The kestrel count on ridge {i} was {}", i * 3),
                "title": format!("ridge {i}"),
                "tags": ["birds", format!("ridge-{i}")],
                "metadata": {"observer": "Ana", "n": i},
                "importance": 0.25 + (i as f64) / 100.0,
                "observed_at": 1_700_000_000_000i64 + i * 86_400_000,
            }),
        );
        ids.push(m["id"].as_str().unwrap().to_string());
    }
    // One memory with a history.
    let (status, r) = curl(
        &admin,
        "PATCH",
        &format!("/v1/namespaces/team/memories/{}", ids[0]),
        Some(r#"{"content":"The kestrel count on ridge 0 was revised to 4"}"#),
    );
    assert_eq!(status, 200, "{r}");

    // CLI export while the server runs; the stock age tool opens it.
    let (key, recipient) = age_key(tmp.path());
    let file = tmp.path().join("team.jsonl.gz.age");
    let (code, out, err) = cli(&[
        &"export",
        &"--data",
        &data,
        &"--config",
        &config,
        &"--namespace",
        &"team",
        &"--recipient",
        &recipient,
        &"--versions",
        &"--out",
        &file,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "{out}");
    let lines = open_with_age(&key, &file);
    assert_eq!(lines[0]["type"], "header");
    assert_eq!(lines[0]["format"], "memhost-export");
    assert_eq!(lines[1]["type"], "namespace");
    assert_eq!(lines[1]["name"], "team");
    assert_eq!(lines[1]["settings"]["redactor"], "redact-pii");
    let memories: Vec<&Value> = lines.iter().filter(|l| l["type"] == "memory").collect();
    assert_eq!(memories.len(), 12);
    let end = lines.last().unwrap();
    assert_eq!(
        (
            end["type"].clone(),
            end["memories"].clone(),
            end["versions"].clone()
        ),
        (json!("end"), json!(12), json!(1))
    );
    for m in &memories {
        let id = m["memory"]["id"].as_str().unwrap();
        let (_, live) = curl(
            &admin,
            "GET",
            &format!("/v1/namespaces/team/memories/{id}"),
            None,
        );
        assert_eq!(fields(&m["memory"]), fields(&live));
    }
    let revised = memories
        .iter()
        .find(|m| m["memory"]["id"] == ids[0].as_str())
        .unwrap();
    assert_eq!(
        revised["versions"][0]["content"],
        "The kestrel count on ridge 0 was 0"
    );
    // No key material, no API key.
    let text = serde_json::to_string(&lines).unwrap();
    assert!(
        !text.contains("AGE-SECRET-KEY") && !text.contains(&a.key),
        "{text}"
    );
    // Only the recipient opens it.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let (other, _) = age_key(&elsewhere);
    let denied = Command::new("age")
        .args(["-d", "-i"])
        .arg(&other)
        .arg(&file)
        .output()
        .unwrap();
    assert!(!denied.status.success());

    // Over REST, streamed, for an admin of the namespace.
    let got = tmp.path().join("rest.age");
    let (status, _) = download(
        &admin,
        &format!("/v1/namespaces/team/export?recipient={recipient}"),
        &got,
    );
    assert_eq!(status, 200);
    let rest_lines = open_with_age(&key, &got);
    assert_eq!(
        rest_lines.iter().filter(|l| l["type"] == "memory").count(),
        12
    );
    // Bad input over REST: no recipient, a bad one, a namespace not there,
    // a key that is not admin.
    let (status, body) = download(&admin, "/v1/namespaces/team/export", &got);
    assert_eq!(status, 400, "{body}");
    let (status, body) = download(
        &admin,
        "/v1/namespaces/team/export?recipient=age1nope",
        &got,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("age1nope"), "{body}");
    let (status, _) = download(
        &admin,
        &format!("/v1/namespaces/ghost/export?recipient={recipient}"),
        &got,
    );
    assert_eq!(status, 404);
    let writer = crate::common::server::create_key(&data, "w", "assistant", &["team=writer"], &[]);
    let (status, body) = download(
        &admin.as_key(Some(&writer)),
        &format!("/v1/namespaces/team/export?recipient={recipient}"),
        &got,
    );
    assert_eq!(status, 403, "{body}");
    drop(a);

    // A fresh server; import with the CLI while it runs.
    let fresh = tmp.path().join("b");
    let b = Server::start(&fresh, &config);
    let admin_b = b.client();
    let import_b = |extra: &[&str]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"import",
            &file,
            &"--identity",
            &key,
            &"--data",
            &fresh,
            &"--config",
            &config,
        ];
        args.extend(extra.iter().map(|e| e as &dyn AsRef<std::ffi::OsStr>));
        cli(&args)
    };
    let (code, out, err) = import_b(&[]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["created"], 12, "{report}");
    assert_eq!(report["namespaces_created"], json!(["team"]));
    for m in &memories {
        let id = m["memory"]["id"].as_str().unwrap();
        let (status, got) = curl(
            &admin_b,
            "GET",
            &format!("/v1/namespaces/team/memories/{id}"),
            None,
        );
        assert_eq!(status, 200, "{got}");
        assert_eq!(fields(&got), fields(&m["memory"]));
        assert_eq!(got["imported"]["from"], "memhost");
        assert_eq!(got["imported"]["agent_id"], m["memory"]["agent_id"]);
    }
    let (status, r) = curl(
        &admin_b,
        "POST",
        "/v1/namespaces/team/recall",
        Some(r#"{"query":"kestrel ridge 7","k":3}"#),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["results"][0]["title"], "ridge 7", "{r}");
    // The audit log has each import.
    let (_, log, _) = cli(&[&"audit", &"tail", &"-n", &"100", &"--data", &fresh]);
    assert_eq!(
        log.lines().filter(|l| l.contains("memory.import")).count(),
        12,
        "{log}"
    );

    // Again: the ids are there, so each is skipped; or the import stops.
    let (code, out, _) = import_b(&[]);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (report["created"].clone(), report["skipped"].clone()),
        (json!(0), json!(12))
    );
    let (code, _, err) = import_b(&["--on-conflict", "fail"]);
    assert_eq!(code, 1);
    assert!(err.contains("already in namespace \"team\""), "{err}");

    // The REST twin takes the decrypted file, into the namespace it names;
    // a policy that holds stores holds each import.
    let plain = tmp.path().join("team.jsonl.gz");
    crate::common::age_decrypt(&key, &file, &plain);
    let (status, r) = curl(
        &admin_b,
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"guarded","policy":"store=single:human; *=allow"}"#),
    );
    assert_eq!(status, 201, "{r}");
    let (status, r) = upload(&admin_b, "/v1/namespaces/guarded/import", &plain);
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["held"].clone(), r["created"].clone()),
        (json!(12), json!(0)),
        "{r}"
    );
    let (_, page) = curl(&admin_b, "GET", "/v1/namespaces/guarded/memories", None);
    assert_eq!(page["memories"], json!([]), "{page}");

    // Bad files: age-encrypted over REST, not JSON, cut short; a namespace
    // that is not there. Nothing stored is touched.
    let (status, r) = upload(&admin_b, "/v1/namespaces/team/import", &file);
    assert_eq!(status, 422, "{r}");
    assert!(r["detail"].as_str().unwrap().contains("age -d"), "{r}");
    let junk = tmp.path().join("junk.json");
    std::fs::write(&junk, "{\"memories\": [ oops").unwrap();
    let (status, r) = upload(&admin_b, "/v1/namespaces/team/import", &junk);
    assert_eq!(status, 422, "{r}");
    assert!(r["detail"].as_str().unwrap().contains("not JSON"), "{r}");
    let (status, _) = upload(&admin_b, "/v1/namespaces/ghost/import", &plain);
    assert_eq!(status, 404);
    let gunzip = Command::new("gunzip")
        .arg("-c")
        .arg(&plain)
        .output()
        .unwrap();
    let text = String::from_utf8(gunzip.stdout).unwrap();
    let cut: Vec<&str> = text.lines().take(5).collect();
    let short = tmp.path().join("short.jsonl");
    std::fs::write(&short, cut.join("\n")).unwrap();
    let (status, r) = curl(
        &admin_b,
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"copy"}"#),
    );
    assert_eq!(status, 201, "{r}");
    let (status, r) = upload(&admin_b, "/v1/namespaces/copy/import", &short);
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["created"], 3, "{r}");
    assert!(r["stopped"].as_str().unwrap().contains("cut short"), "{r}");
    let (code, _, err) = cli(&[&"import", &file, &"--data", &fresh, &"--config", &config]);
    assert_ne!(code, 0);
    assert!(err.contains("--identity"), "{err}");
    let (_, page) = curl(
        &admin_b,
        "GET",
        "/v1/namespaces/team/memories?limit=100",
        None,
    );
    assert_eq!(page["memories"].as_array().unwrap().len(), 12);
}

#[test]
fn exports_of_ai_memory_mem0_and_openmemory_come_in_mapped_and_what_has_no_place_is_said() {
    let tmp = tempfile::tempdir().unwrap();
    let config = plugins_config(tmp.path(), &["redact-pii"], "");
    let data = tmp.path().join("data");
    let server = Server::start(&data, &config);
    let admin = server.client();
    let import = |file: &Path, extra: &[&str]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"import", &file, &"--data", &data, &"--config", &config];
        for e in extra {
            args.push(e);
        }
        let (code, out, err) = cli(&args);
        (
            code,
            serde_json::from_str::<Value>(&out).unwrap_or(Value::Null),
            err,
        )
    };
    let get = |ns: &str, query: &str| {
        let (status, r) = curl(
            &admin,
            "POST",
            &format!("/v1/namespaces/{ns}/recall"),
            Some(&json!({"query": query, "k": 1}).to_string()),
        );
        assert_eq!(status, 200, "{r}");
        let id = r["results"][0]["id"].as_str().unwrap().to_string();
        curl(
            &admin,
            "GET",
            &format!("/v1/namespaces/{ns}/memories/{id}"),
            None,
        )
        .1
    };

    // ai-memory: namespaces come along (made valid), priority is
    // importance, the rest is kept under metadata.ai_memory, links too;
    // the memory that expired in May is not imported.
    let (code, report, err) = import(&fixture("ai-memory-export.json"), &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (report["created"].clone(), report["expired"].clone()),
        (json!(2), json!(1)),
        "{report}"
    );
    let mut created = report["namespaces_created"].as_array().unwrap().clone();
    created.sort_by_key(|v| v.to_string());
    assert_eq!(
        created,
        vec![json!("ai-memory-mcp"), json!("global"), json!("ops-infra")]
    );
    assert!(
        err.contains("namespace \"Ops/Infra\" is \"ops-infra\" here"),
        "{err}"
    );
    let m = get("ai-memory-mcp", "nextest flaky");
    assert_eq!(m["title"], "CI test runner");
    assert_eq!(m["tags"], json!(["ci", "rust"]));
    assert_eq!(m["importance"], 0.7);
    assert_eq!(m["created_at"], 1_778_172_152_123i64);
    assert_eq!(m["metadata"]["ai_memory"]["tier"], "long");
    assert_eq!(
        m["metadata"]["ai_memory"]["links"][0]["relation"],
        "related_to"
    );
    assert_eq!(m["imported"]["from"], "ai-memory");
    assert_eq!(m["imported"]["agent_id"], "ai:claude-code@ws-01:pid-4242");
    assert_eq!(
        m["imported"]["original_id"],
        "0b6f2a3e-4d4c-4a57-9d0e-6f1f6f1c2b11"
    );
    let ops = get("ops-infra", "staging database");
    assert_eq!(ops["metadata"]["ai_memory"]["memory_kind"], "observation");
    // A re-import finds the same contents: duplicates, nothing new.
    let (_, again, _) = import(&fixture("ai-memory-export.json"), &[]);
    assert_eq!(
        (again["created"].clone(), again["duplicates"].clone()),
        (json!(0), json!(2)),
        "{again}"
    );

    // mem0's get_all: user_id is the namespace unless one is given;
    // categories are tags; the graph relations are said, not kept.
    let (code, report, err) = import(&fixture("mem0-get-all.json"), &["--namespace", "prefs"]);
    assert_ne!(code, 0, "no namespace prefs yet: {err}");
    assert_eq!(report["failed"], 2, "{report}");
    let (status, r) = curl(
        &admin,
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"prefs"}"#),
    );
    assert_eq!(status, 201, "{r}");
    let (code, report, err) = import(&fixture("mem0-get-all.json"), &["--namespace", "prefs"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["created"], 2, "{report}");
    assert!(err.contains("graph relations"), "{err}");
    let m = get("prefs", "Fridays deploys");
    assert_eq!(m["tags"], json!(["work"]));
    assert_eq!(m["imported"]["agent_id"], "ops-bot");
    assert_eq!(m["metadata"]["mem0"]["run_id"], "sess-42");
    assert_eq!(m["created_at"], 1_736_740_073_001i64);

    // OpenMemory's export zip: its user is the namespace, deleted memories
    // stay out, archived ones come with their state, categories are tags.
    let zip = tmp.path().join("memories_export_alice.zip");
    let records = [
        json!({"id": "3f0c9a52-6b7d-4e8f-9a0b-1c2d3e4f5a6b", "content": "Prefers dark mode in editors", "metadata": {}, "created_at": "2025-08-02T10:11:12.345678+00:00", "updated_at": "2025-08-02T10:11:12.345678+00:00", "state": "active", "app": "cursor", "categories": ["preferences"]}),
    ];
    let jsonl: String = records.iter().map(|r| format!("{r}\n")).collect();
    let made = Command::new("python3")
        .args([
            "-c",
            "import gzip, sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n\
             z.write(sys.argv[2], 'memories.json')\n\
             z.writestr('memories.jsonl.gz', gzip.compress(sys.argv[3].encode()))\n\
             z.close()",
        ])
        .arg(&zip)
        .arg(fixture("openmemory-memories.json"))
        .arg(&jsonl)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (code, report, err) = import(&zip, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["created"], 2, "{report}");
    assert_eq!(report["namespaces_created"], json!(["alice"]));
    assert!(err.contains("deleted in OpenMemory"), "{err}");
    let m = get("alice", "dark mode editors");
    assert_eq!(m["tags"], json!(["preferences"]));
    assert_eq!(m["imported"]["agent_id"], "cursor");
    let m = get("alice", "reading list retrieval");
    assert_eq!(m["metadata"]["openmemory"]["state"], "archived");
    assert_eq!(m["metadata"]["priority"], "low");

    // Bad input: a format it does not know, a file that is not there.
    let odd = tmp.path().join("odd.json");
    std::fs::write(&odd, r#"{"notes": [1, 2]}"#).unwrap();
    let (code, _, err) = import(&odd, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("not a format memhost reads"), "{err}");
    let (code, _, err) = import(&tmp.path().join("missing.json"), &[]);
    assert_ne!(code, 0);
    assert!(err.contains("missing.json"), "{err}");
}
