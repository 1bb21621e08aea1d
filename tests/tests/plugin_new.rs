//! An operator's path to a custom policy, as `docs/governance.md` tells it:
//! `memhost plugin new --kind policy` scaffolds a plugin that builds and
//! passes its own test as it stands; built for wasm32-wasip2 and dropped in
//! the plugin directory it is loaded by a running server, a namespace
//! points at it, and from then on it decides that namespace's changes. The
//! Python scaffold passes its own tests, builds with componentize-py and
//! loads.

use std::process::Command;

use crate::common::root;
use crate::common::server::*;
use serde_json::json;

#[test]
fn a_scaffolded_policy_builds_hot_loads_and_governs_a_namespace() {
    let tmp = tempfile::tempdir().unwrap();
    let new = [
        "plugin",
        "new",
        "--kind",
        "policy",
        "--dir",
        tmp.path().to_str().unwrap(),
        "team-rules",
    ];
    let (code, _, err) = memhost(&new);
    assert_eq!(code, 0, "{err}");
    let project = tmp.path().join("team-rules");
    for file in ["Cargo.toml", "plugin.toml", "src/lib.rs", "README.md"] {
        assert!(project.join(file).is_file(), "{file} missing");
    }
    // Asked again, it leaves what exists alone.
    let (code, _, err) = memhost(&new);
    assert_ne!(code, 0);
    assert!(err.contains("exists"), "{err}");

    // The plugin author's commands, with a target directory kept between
    // runs of this test.
    let target = root().join("target/scaffold-test");
    let cargo = |args: &[&str]| {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(args)
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tested = cargo(&["test", "--quiet"]);
    assert!(tested.contains("test result: ok"), "{tested}");
    cargo(&["build", "--release", "--target", "wasm32-wasip2", "--quiet"]);

    let s = setup("", &[], &[r#"{"name":"team","embedder":"none"}"#]);
    let installed = s.tmp.path().join("plugins/team-rules");
    std::fs::create_dir_all(&installed).unwrap();
    std::fs::copy(project.join("plugin.toml"), installed.join("plugin.toml")).unwrap();
    std::fs::copy(
        target.join("wasm32-wasip2/release/team_rules.wasm"),
        installed.join("team_rules.wasm"),
    )
    .unwrap();
    let (code, out, err) = memhost(&["plugin", "reload", "--data", s.data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("loaded=team-rules"), "{out}");

    // A setting the plugin cannot read is refused by the plugin itself.
    let (status, body) = curl(
        &s.admin,
        "PATCH",
        "/v1/namespaces/team",
        Some(r#"{"policy_plugin":"team-rules","policy":"consensus:2"}"#),
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = curl(
        &s.admin,
        "PATCH",
        "/v1/namespaces/team",
        Some(r#"{"policy_plugin":"team-rules","policy":"review:human"}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"]["policy_plugin"], "team-rules");

    let writer = s.admin.as_key(Some(&create_key(
        &s.data,
        "bot",
        "assistant",
        &["team=writer"],
        &[],
    )));
    let (status, held) = curl(
        &writer,
        "POST",
        "/v1/namespaces/team/memories",
        Some(r#"{"content":"decided by the new plugin"}"#),
    );
    assert_eq!(status, 202, "{held}");
    assert_eq!(
        held["approval"]["requirement"]["approver_types"],
        json!(["human"])
    );
    let (_, view) = curl(
        &s.admin,
        "GET",
        &format!("/v1/approvals/{}", held["approval"]["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(view["policy"]["plugin"], "team-rules");
    assert_eq!(view["policy"]["version"], "0.1.0");
}

#[test]
fn a_scaffolded_python_policy_passes_its_tests_builds_and_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = memhost(&[
        "plugin",
        "new",
        "--kind",
        "policy",
        "--lang",
        "python",
        "--dir",
        tmp.path().to_str().unwrap(),
        "py-rules",
    ]);
    assert_eq!(code, 0, "{err}");
    let project = tmp.path().join("py-rules");
    let run = |program: &str, args: &[&str]| {
        let out = Command::new(program)
            .args(args)
            .current_dir(&project)
            .output()
            .unwrap_or_else(|e| panic!("{program} is needed for this test: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let tested = run("python3", &["-m", "unittest"]);
    assert!(tested.contains("OK"), "{tested}");
    run(
        "componentize-py",
        &[
            "-d",
            "wit",
            "-w",
            "memhost:plugin/policy-plugin",
            "componentize",
            "app",
            "-o",
            "py_rules.wasm",
        ],
    );
    let (code, out, err) = memhost(&["plugin", "check", project.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("policy"), "{out}");
}
