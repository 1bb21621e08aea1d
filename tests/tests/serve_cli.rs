//! The real `memhost` binary: `plugin check` reports what a plugin gets,
//! `serve` loads the plugin directory and answers /health, `plugin reload`
//! swaps plugins in the running server (or reports why not, keeping the old
//! set), the directory watch picks up new plugins, and a second start loads
//! plugins from the precompile cache.

use std::path::{Path, PathBuf};

use crate::common::server::*;
use crate::common::*;

fn write_config(dir: &Path, plugins: &Path, watch: bool) -> PathBuf {
    let config = dir.join("memhost.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins]\ndir = \"{}\"\nwatch = {watch}\n\n[plugins.grants.redact-keywords]\nconfig = {{ terms = \"falcon\" }}\n",
            plugins.display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn plugin_check_prints_what_a_plugin_would_be_granted() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), tmp.path(), false);
    let dir = staged("redact-keywords");
    let check = |json: bool| {
        let mut args = vec![
            "plugin",
            "check",
            dir.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ];
        if json {
            args.push("--json");
        }
        memhost(&args)
    };
    let (code, out, err) = check(false);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ok: plugin \"redact-keywords\" 0.1.0"),
        "{out}"
    );
    assert!(out.contains("config      terms"), "{out}");
    assert!(out.contains("outbound    none"), "{out}");
    assert!(out.contains("timeout     200 ms per call"), "{out}");
    // As JSON: the keys it may read, never their values (often secrets).
    let (code, out, err) = check(true);
    assert_eq!(code, 0, "{err}");
    let checked: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        checked["effective"]["config_keys"],
        serde_json::json!(["terms"])
    );
    assert!(!out.contains("falcon"), "{out}");

    // Without the grant, the check says what was asked for and not granted.
    let (code, out, _) = memhost(&["plugin", "check", dir.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("config key \"terms\" asked for but not granted"),
        "{out}"
    );

    // A component of the wrong kind fails the check, naming both sides.
    let wrong = plugin_dir(
        tmp.path(),
        "wrong",
        "extractor",
        &staged_wasm("policy-standard", "policy_standard.wasm"),
        "",
    );
    let (code, _, err) = memhost(&["plugin", "check", wrong.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("declares kind \"extractor\"") && err.contains("memhost:plugin/policy@0.1.0"),
        "{err}"
    );
}

#[test]
fn serve_reload_and_restart_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let plugins = tmp.path().join("plugins");
    copy_dir(&staged("redact-keywords"), &plugins.join("redact-keywords"));
    let config = write_config(tmp.path(), &plugins, false);
    let data_arg = data.to_str().unwrap();

    let mut server = Server::start(&data, &config);
    let health = server.get("/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        health.contains("\"status\":\"ok\"") && health.contains("\"loaded\":1"),
        "{health}"
    );

    let (code, out, _) = memhost(&["plugin", "list", "--data", data_arg]);
    assert_eq!(code, 0);
    assert!(
        out.contains("redact-keywords") && out.contains("redactor"),
        "{out}"
    );

    // Add a plugin and reload the running server.
    copy_dir(&staged("policy-standard"), &plugins.join("policy-standard"));
    let (code, out, err) = memhost(&["plugin", "reload", "--data", data_arg]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("plugins reloaded: loaded=policy-standard"),
        "{out}"
    );
    server.wait_for("plugins: loaded=policy-standard");
    assert!(server.get("/health").contains("\"loaded\":2"));

    // A broken plugin: the reload fails, says why, and the old set stays.
    let broken = plugins.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("plugin.toml"),
        "id = \"broken\"\nname = \"b\"\nversion = \"0.1.0\"\nkind = \"policy\"\napi = \"0.1.0\"\nwasm = \"x.wasm\"\n",
    )
    .unwrap();
    let (code, _, err) = memhost(&["plugin", "reload", "--data", data_arg]);
    assert_eq!(code, 1);
    assert!(
        err.contains("previous plugins are still in use") && err.contains("broken"),
        "{err}"
    );
    assert!(server.get("/health").contains("\"loaded\":2"));
    std::fs::remove_dir_all(&broken).unwrap();
    drop(server);

    // A second start loads both plugins from the precompile cache.
    let again = Server::start(&data, &config);
    let seen = again.seen.join("\n");
    let hits = seen
        .lines()
        .filter(|l| l.contains("plugin loaded") && l.contains("cache=hit"))
        .count();
    assert_eq!(hits, 2, "expected two cache hits on restart:\n{seen}");
    assert!(again.get("/health").contains("\"loaded\":2"));
}

#[test]
fn the_plugin_directory_is_watched() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let config = write_config(tmp.path(), &plugins, true);
    let mut server = Server::start(&data, &config);
    assert!(server.get("/health").contains("\"loaded\":0"));
    copy_dir(&staged("redact-keywords"), &plugins.join("redact-keywords"));
    server.wait_for("plugins: loaded=redact-keywords");
    assert!(server.get("/health").contains("\"loaded\":1"));
}

#[test]
fn serve_refuses_to_start_when_a_plugin_cannot_load() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    plugin_dir(
        &plugins,
        "wrong",
        "redactor",
        &staged_wasm("policy-standard", "policy_standard.wasm"),
        "",
    );
    let config = write_config(tmp.path(), &plugins, false);
    init(&tmp.path().join("data"));
    let (code, _, err) = memhost(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        tmp.path().join("data").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot start: plugins failed to load") && err.contains("wrong"),
        "{err}"
    );
}
