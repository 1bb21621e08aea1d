//! `memhost backup` while the server takes writes, `memhost restore` into
//! a new directory, and a server on what was restored: every write
//! acknowledged before the backup began is there and readable, writes made
//! during it are whole or absent, the audit chain verifies. An age-encrypted
//! backup opens with the stock `age` tool (a tar inside) and restores with
//! the identity. A flipped byte, another master key, an existing target and
//! a missing key are refused, naming what is wrong, and leave nothing behind.
//! `memhost compact` gives back what deleting freed and keeps the rest.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::server::{Server, curl, memhost_bin, plugins_config};

/// (id, content) of acknowledged stores.
type Acked = Arc<Mutex<Vec<(String, String)>>>;

fn store(c: &crate::common::server::Client, content: &str) -> String {
    let body = serde_json::json!({ "content": content }).to_string();
    let (status, r) = curl(c, "POST", "/v1/namespaces/team/memories", Some(&body));
    assert_eq!(status, 201, "{r}");
    r["id"].as_str().unwrap().to_string()
}

/// A server (redact-pii loaded) on `dir/data` with namespace `team`.
fn team_server(dir: &Path) -> (PathBuf, PathBuf, Server) {
    let data = dir.join("data");
    let config = plugins_config(dir, &["redact-pii"], "");
    let server = Server::start(&data, &config);
    let (status, r) = curl(
        &server.client(),
        "POST",
        "/v1/namespaces",
        Some(r#"{"name":"team"}"#),
    );
    assert_eq!(status, 201, "{r}");
    (data, config, server)
}

/// `memhost …` with words and paths; (exit code, stdout, stderr).
fn cli(args: &[&dyn AsRef<OsStr>]) -> (i32, String, String) {
    let out = Command::new(memhost_bin())
        .args(args.iter().map(|a| a.as_ref()))
        .env_remove("MEMHOST_MASTER_KEY")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Hidden staging files or directories left in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".memhost"))
        .collect()
}

#[test]
fn a_backup_taken_under_writes_restores_everything_acknowledged_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, config, server) = team_server(tmp.path());
    let admin = server.client();
    let acked: Acked = Arc::default();
    for i in 0..60 {
        let content = format!("before the backup, note {i}: the heron nests by the mill");
        let id = store(&admin, &content);
        acked.lock().unwrap().push((id, content));
    }

    // Two writers go on while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (c, acked, stop) = (admin.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let content = format!("writer {w} note {i}, written while backing up");
                    let id = store(&c, &content);
                    acked.lock().unwrap().push((id, content));
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before: Vec<_> = acked.lock().unwrap().clone();
    let file = tmp.path().join("team.backup");
    let (code, out, err) = cli(&[&"backup", &"--data", &data, &"--out", &file]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "stdout is for what is asked: {out}");
    assert!(
        err.contains("backed up") && err.contains("master key"),
        "{err}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let during: Vec<_> = acked.lock().unwrap()[before.len()..].to_vec();
    assert!(!during.is_empty());

    // Refusing to overwrite the backup it just wrote.
    let (code, _, err) = cli(&[&"backup", &"--data", &data, &"--out", &file]);
    assert_ne!(code, 0);
    assert!(err.contains("--force"), "{err}");
    // The backup is in the audit log.
    let (code, log, _) = cli(&[&"audit", &"tail", &"-n", &"5000", &"--data", &data]);
    assert_eq!(code, 0);
    assert!(
        log.lines()
            .any(|l| l.contains("store.backup") && l.contains(" ok ")),
        "{log}"
    );

    // Restore elsewhere, with the master key file of the source.
    let restored = tmp.path().join("restored");
    let master = data.join("master.key");
    let (code, _, err) = cli(&[
        &"restore",
        &file,
        &"--data",
        &restored,
        &"--master-key",
        &master,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("audit chain intact"), "{err}");
    assert!(restored.join("master.key").is_file());
    let (code, out, err) = cli(&[&"audit", &"verify", &"--data", &restored]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit chain intact"), "{out}");
    // Nothing staged is left beside it.
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());

    // A server on the restored directory serves what was acknowledged.
    drop(server);
    let server = Server::start(&restored, &config);
    let c = server.client();
    for (id, content) in &before {
        let (status, m) = curl(
            &c,
            "GET",
            &format!("/v1/namespaces/team/memories/{id}"),
            None,
        );
        assert_eq!(status, 200, "{id} was acknowledged before the backup: {m}");
        assert_eq!(m["content"], content.as_str());
    }
    let mut caught = 0;
    for (id, content) in &during {
        let (status, m) = curl(
            &c,
            "GET",
            &format!("/v1/namespaces/team/memories/{id}"),
            None,
        );
        match status {
            200 => {
                assert_eq!(m["content"], content.as_str());
                caught += 1;
            }
            404 => {}
            other => panic!("{id}: {other} {m}"),
        }
    }
    eprintln!(
        "{} writes before the backup, {} during it ({caught} in the copy)",
        before.len(),
        during.len()
    );
    let (status, r) = curl(
        &c,
        "POST",
        "/v1/namespaces/team/recall",
        Some(r#"{"query":"heron mill","k":5}"#),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["results"].as_array().unwrap().len(), 5, "{r}");
    // And takes new writes.
    store(&c, "after the restore");
    drop(server);

    // Into a directory that holds data: refused, and it is untouched.
    let (code, _, err) = cli(&[&"restore", &file, &"--data", &restored]);
    assert_ne!(code, 0);
    assert!(
        err.contains("already holds") && err.contains("--force"),
        "{err}"
    );
    let (code, out, _) = cli(&[&"audit", &"verify", &"--data", &restored]);
    assert_eq!(code, 0, "{out}");

    // Another master key: refused, naming both.
    let other = tmp.path().join("other");
    crate::common::server::init(&other);
    let (code, _, err) = cli(&[
        &"restore",
        &file,
        &"--data",
        &tmp.path().join("elsewhere"),
        &"--master-key",
        &other.join("master.key"),
    ]);
    assert_ne!(code, 0);
    let fingerprint = |dir: &Path| {
        let text = std::fs::read_to_string(dir.join("master.key")).unwrap();
        let at = text.find("fingerprint: ").unwrap() + "fingerprint: ".len();
        text[at..at + 16].to_string()
    };
    assert!(
        err.contains(&fingerprint(&data)) && err.contains(&fingerprint(&other)),
        "{err}"
    );
    // No key at all: it names the one it needs.
    let (code, _, err) = cli(&[&"restore", &file, &"--data", &tmp.path().join("elsewhere")]);
    assert_ne!(code, 0);
    assert!(err.contains(&fingerprint(&data)), "{err}");

    // A flipped byte anywhere in the data: refused, nothing created.
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    let bad = tmp.path().join("flipped.backup");
    std::fs::write(&bad, &bytes).unwrap();
    let (code, _, err) = cli(&[
        &"restore",
        &bad,
        &"--data",
        &tmp.path().join("elsewhere"),
        &"--master-key",
        &master,
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("damaged") && err.contains("nothing was restored"),
        "{err}"
    );
    assert!(!tmp.path().join("elsewhere").exists());
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
}

#[test]
fn an_encrypted_backup_opens_with_the_age_tool_and_restores_with_the_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, config, server) = team_server(tmp.path());
    let admin = server.client();
    let id = store(&admin, "the spare key is under the blue pot");

    let (key, recipient) = crate::common::age_key(tmp.path());

    let file = tmp.path().join("team.backup.age");
    let (code, _, err) = cli(&[
        &"backup",
        &"--data",
        &data,
        &"--out",
        &file,
        &"--recipient",
        &recipient,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("age-encrypted to 1 recipient"), "{err}");
    drop(server);

    // The stock age tool opens it; inside is a tar with the manifest first.
    let plain = tmp.path().join("team.backup");
    crate::common::age_decrypt(&key, &file, &plain);
    let listed = Command::new("tar").arg("-tf").arg(&plain).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "manifest.json\nmanifest.mac\ndata.mdb\n"
    );
    let manifest = Command::new("tar")
        .args(["-xOf"])
        .arg(&plain)
        .arg("manifest.json")
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(manifest["format"], "memhost-backup");
    assert_eq!(manifest["tables"]["namespaces"], 1);
    // Rows stay sealed inside: the content is nowhere in the plain tar.
    let raw = std::fs::read(&plain).unwrap();
    assert!(!raw.windows(8).any(|w| w == b"blue pot"));

    // Without the identity it cannot be opened; with it, it restores.
    let restored = tmp.path().join("restored");
    let master = data.join("master.key");
    let (code, _, err) = cli(&[
        &"restore",
        &file,
        &"--data",
        &tmp.path().join("nope"),
        &"--master-key",
        &master,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("another recipient"), "{err}");
    let (code, _, err) = cli(&[
        &"restore",
        &file,
        &"--data",
        &restored,
        &"--master-key",
        &master,
        &"--identity",
        &key,
    ]);
    assert_eq!(code, 0, "{err}");
    let server = Server::start(&restored, &config);
    let (status, m) = curl(
        &server.client(),
        "GET",
        &format!("/v1/namespaces/team/memories/{id}"),
        None,
    );
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["content"], "the spare key is under the blue pot");
}

#[test]
fn compact_gives_back_what_deleting_freed_and_keeps_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    // Deleting one by one, faster than a key's default rate.
    let config = plugins_config(
        tmp.path(),
        &["redact-pii"],
        "[limits]\nrequests_per_second = 10000.0\nburst = 10000\n",
    );
    let data = tmp.path().join("data");
    let server = Server::start(&data, &config);
    let admin = server.client();
    let (status, r) = curl(&admin, "POST", "/v1/namespaces", Some(r#"{"name":"team"}"#));
    assert_eq!(status, 201, "{r}");
    let mut ids = Vec::new();
    for i in 0..300 {
        let filler = "the quick survey of tidal pools ".repeat(60);
        ids.push(store(&admin, &format!("note {i}: {filler}")));
    }
    for id in &ids[20..] {
        let (status, r) = curl(
            &admin,
            "DELETE",
            &format!("/v1/namespaces/team/memories/{id}"),
            None,
        );
        assert_eq!(status, 204, "{r}");
    }
    // Not while it serves: a write after the copy would be lost.
    let (code, _, err) = cli(&[&"compact", &"--data", &data]);
    assert_ne!(code, 0);
    assert!(err.contains("stop it before compacting"), "{err}");
    drop(server);

    let file = data.join("db/data.mdb");
    let before = std::fs::metadata(&file).unwrap().len();
    let (code, _, err) = cli(&[&"compact", &"--data", &data]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("smaller"), "{err}");
    let after = std::fs::metadata(&file).unwrap().len();
    assert!(after * 2 < before, "{before} -> {after} bytes");
    assert_eq!(leftovers(&data), Vec::<String>::new());

    let (code, out, _) = cli(&[&"audit", &"verify", &"--data", &data]);
    assert_eq!(code, 0, "{out}");
    let (_, log, _) = cli(&[&"audit", &"tail", &"-n", &"3", &"--data", &data]);
    assert!(log.contains("store.compact"), "{log}");
    let server = Server::start(&data, &config);
    let c = server.client();
    for id in &ids[..20] {
        let (status, m) = curl(
            &c,
            "GET",
            &format!("/v1/namespaces/team/memories/{id}"),
            None,
        );
        assert_eq!(status, 200, "{m}");
    }
    let (status, _) = curl(
        &c,
        "GET",
        &format!("/v1/namespaces/team/memories/{}", ids[20]),
        None,
    );
    assert_eq!(status, 404);
    store(&c, "written after compacting");
}
