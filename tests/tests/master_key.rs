//! The data directory is bound to its master key: `init` writes it (0600)
//! and says to back it up, a wrong key is refused at start naming the
//! fingerprint the data expects (and the data is untouched), and
//! `keys rotate-master` moves the data to a new key so the old one stops
//! working — and the memories stored before are all readable after it.

use std::process::Command;

use crate::common::server::{Client, copy_dir, curl, memhost_bin};

/// Run memhost with extra environment; returns (exit code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(memhost_bin());
    cmd.args(args)
        .env_remove("MEMHOST_MASTER_KEY")
        .env_remove("MEMHOST_MASTER_PASSPHRASE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fingerprint_in(text: &str) -> String {
    let at = text.find("fingerprint ").expect(text) + "fingerprint ".len();
    text[at..at + 16].to_string()
}

/// Start serve, wait until it listens or exits, run `then` against its
/// address while it is up; returns (listened, log).
fn try_serve(data: &str, env: &[(&str, &str)]) -> (bool, String) {
    serve_then(data, env, |_| {})
}

fn serve_then(data: &str, env: &[(&str, &str)], then: impl FnOnce(&str)) -> (bool, String) {
    use std::io::{BufRead, BufReader};
    let mut cmd = Command::new(memhost_bin());
    // Keys are not what this file tests: local development mode.
    cmd.args([
        "serve",
        "--no-auth",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data,
    ])
    .env_remove("MEMHOST_MASTER_KEY")
    .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut log = String::new();
    let mut listened = false;
    for line in BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening on") {
            listened = true;
            then(line.rsplit("http://").next().unwrap_or("").trim());
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    (listened, log)
}

#[test]
fn init_wrong_key_and_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_arg = data.to_str().unwrap();

    let (code, _, err) = run(&["init", "--data", data_arg], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("BACK UP THIS FILE"), "{err}");
    let fp = fingerprint_in(&err);
    let key_file = data.join("master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let original_key = std::fs::read_to_string(&key_file).unwrap();
    // init again changes nothing.
    let (code, _, err) = run(&["init", "--data", data_arg], &[]);
    assert_eq!(code, 0);
    assert!(
        err.contains("already initialised") && err.contains(&fp),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), original_key);

    // A different key is refused, naming the fingerprint the data expects.
    let other = tempfile::tempdir().unwrap();
    let (_, _, err) = run(
        &["init", "--data", other.path().join("d").to_str().unwrap()],
        &[],
    );
    let other_fp = fingerprint_in(&err);
    let other_key = std::fs::read_to_string(other.path().join("d/master.key")).unwrap();
    let (listened, log) = try_serve(data_arg, &[("MEMHOST_MASTER_KEY", &other_key)]);
    assert!(!listened, "served with the wrong key:\n{log}");
    assert!(
        log.contains(&format!("expects master key {fp}")) && log.contains(&other_fp),
        "{log}"
    );
    // ...and the data is intact: the right key still works. Store some
    // memories to read back after the rotation (every change is decided by
    // a policy plugin: serve the standard one from the data directory).
    copy_dir(
        &crate::common::staged("policy-standard"),
        &std::path::Path::new(data_arg).join("plugins/policy-standard"),
    );
    let mut ids = Vec::new();
    let (listened, log) = serve_then(data_arg, &[], |addr| {
        let addr = &Client::new(addr, None);
        curl(
            addr,
            "POST",
            "/v1/namespaces",
            Some(r#"{"name":"keep","redaction":"off"}"#),
        );
        assert_eq!(curl(addr, "GET", "/v1/namespaces/keep", None).0, 200);
        for i in 0..5 {
            let body = format!(r#"{{"content":"note {i}"}}"#);
            let (status, m) = curl(addr, "POST", "/v1/namespaces/keep/memories", Some(&body));
            assert_eq!(status, 201, "{m}");
            ids.push(m["id"].as_str().unwrap().to_string());
        }
    });
    assert!(listened, "{log}");

    // Rotation: the file now holds a new key; the old key stops working.
    let (code, _, err) = run(&["keys", "rotate-master", "--data", data_arg], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("from master key {fp}")), "{err}");
    let new_key = std::fs::read_to_string(&key_file).unwrap();
    assert_ne!(new_key, original_key);
    let (listened, log) = serve_then(data_arg, &[], |addr| {
        let addr = &Client::new(addr, None);
        for (i, id) in ids.iter().enumerate() {
            let (status, m) = curl(
                addr,
                "GET",
                &format!("/v1/namespaces/keep/memories/{id}"),
                None,
            );
            assert_eq!(
                (status, m["content"].as_str()),
                (200, Some(format!("note {i}").as_str()))
            );
        }
    });
    assert!(listened, "{log}");
    let (listened, log) = try_serve(data_arg, &[("MEMHOST_MASTER_KEY", &original_key)]);
    assert!(!listened && log.contains("refusing to open"), "{log}");
}

#[test]
fn serve_refuses_an_uninitialised_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (listened, log) = try_serve(tmp.path().join("nothing").to_str().unwrap(), &[]);
    assert!(!listened);
    assert!(
        log.contains("is not initialised: run `memhost init"),
        "{log}"
    );
}

#[test]
fn a_passphrase_protected_key_needs_its_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_arg = data.to_str().unwrap();
    let pass = [("MEMHOST_MASTER_PASSPHRASE", "correct horse battery staple")];
    let (code, _, err) = run(&["init", "--data", data_arg], &pass);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("protected by MEMHOST_MASTER_PASSPHRASE"),
        "{err}"
    );
    let file = std::fs::read_to_string(data.join("master.key")).unwrap();
    assert!(
        file.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"),
        "key file not encrypted"
    );
    assert!(!file.contains("AGE-SECRET-KEY"));

    let (listened, log) = try_serve(data_arg, &[]);
    assert!(!listened && log.contains("passphrase-protected"), "{log}");
    let (listened, log) = try_serve(data_arg, &[("MEMHOST_MASTER_PASSPHRASE", "wrong")]);
    assert!(
        !listened && log.contains("passphrase does not open"),
        "{log}"
    );
    let (listened, log) = try_serve(data_arg, &pass);
    assert!(listened, "{log}");
}

#[test]
fn a_rotation_interrupted_after_its_commit_is_finished_by_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let (code, _, err) = run(&["init", "--data", data_s], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, key, err) = run(
        &[
            "keys",
            "create",
            "--agent",
            "ops",
            "--agent-type",
            "human",
            "--role",
            "*=admin",
            "--data",
            data_s,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    // What `keys rotate-master` has done when it is stopped between its
    // commit and installing the key file: the new key staged, the data
    // moved to it, the old key still in master.key.
    let dir_ = memhost::data_dir::DataDir::new(&data);
    let old = dir_.load_master_key().unwrap();
    let new = memhost::crypto::MasterKey::generate();
    new.write_new(&dir_.staged_master_key(), None).unwrap();
    {
        let (store, _) = dir_.open_store().unwrap();
        memhost::store::keyring::rotate_master(&store, &old, &new).unwrap();
        store.close();
    }
    let (code, out, err) = run(&["keys", "list", "--data", data_s], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ops"), "{out}");
    assert!(err.contains("interrupted"), "{err}");
    assert!(!dir_.staged_master_key().exists());
    assert_eq!(
        dir_.load_master_key().unwrap().fingerprint(),
        new.fingerprint()
    );
    // The server starts on it and the key still works.
    let (listened, log) = serve_then(data_s, &[], |addr| {
        let (status, _) = curl(
            &Client::new(addr, Some(key.trim())),
            "GET",
            "/v1/namespaces",
            None,
        );
        assert_eq!(status, 200);
    });
    assert!(listened, "{log}");
}
