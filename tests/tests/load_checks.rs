//! Components are refused at load — with messages naming both sides — when
//! their exports do not match the declared kind, when they were built
//! against a contract version this host does not support, when the wasm
//! does not match its pin, and when the manifest is wrong.

use crate::common::*;
use memhost::plugins::PluginSettings;

fn refusal(dir: std::path::PathBuf) -> String {
    let reg = registry(PluginSettings::default(), None);
    let err = reg.apply(vec![dir]).unwrap_err();
    assert!(reg.snapshot().is_empty());
    assert_eq!(err.summary.failed.len(), 1);
    err.summary.failed[0].1.clone()
}

#[test]
fn a_component_of_the_wrong_kind_is_refused_naming_both_kinds() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = staged_wasm("policy-standard", "policy_standard.wasm");
    let why = refusal(plugin_dir(
        tmp.path(),
        "not-a-redactor",
        "redactor",
        &wasm,
        "",
    ));
    assert!(why.contains("declares kind \"redactor\""), "{why}");
    assert!(
        why.contains("exports memhost:plugin/policy@0.1.0 (a policy)"),
        "{why}"
    );
}

#[test]
fn a_component_built_for_a_future_api_is_refused_naming_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    // The manifest lies (says 0.2.0); the component's exports tell the truth.
    let why = refusal(plugin_dir(
        tmp.path(),
        "from-the-future",
        "redactor",
        &fixture("future-api"),
        "",
    ));
    assert!(why.contains("built against memhost:plugin@0.9.0"), "{why}");
    assert!(
        why.contains("this host supports memhost:plugin@0.1.0 and memhost:plugin@0.2.0"),
        "{why}"
    );
    assert!(
        why.contains("component marker: memhost:plugin@0.9.0"),
        "{why}"
    );

    // An honest manifest is refused before the component is even inspected.
    let tmp = tempfile::tempdir().unwrap();
    let dir = plugin_dir_with_api(
        tmp.path(),
        "honest-future",
        "redactor",
        "0.9.0",
        &fixture("future-api"),
        "",
    );
    let why = refusal(dir);
    assert!(why.contains("plugin.toml says api 0.9.0"), "{why}");
    assert!(why.contains("memhost:plugin@0.1.0"), "{why}");
}

#[test]
fn the_sdk_marker_is_read_from_the_component() {
    let reg = registry(PluginSettings::default(), None);
    reg.apply(vec![staged("redact-keywords")]).unwrap();
    let set = reg.snapshot();
    let info = &set.get("redact-keywords").unwrap().info;
    assert_eq!(info.api, "0.1.0");
    assert!(
        info.api_marker
            .as_deref()
            .unwrap_or("")
            .starts_with("memhost:plugin@0.2.0 memhost-sdk@"),
        "{:?}",
        info.api_marker
    );
}

#[test]
fn a_wasm_that_does_not_match_its_pin_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = staged_wasm("redact-keywords", "redact_keywords.wasm");
    let pin = "0".repeat(64);
    let dir = plugin_dir(tmp.path(), "pinned", "redactor", &wasm, "");
    let manifest = std::fs::read_to_string(dir.join("plugin.toml")).unwrap();
    std::fs::write(
        dir.join("plugin.toml"),
        manifest.replace(
            "wasm = \"plugin.wasm\"",
            &format!("wasm = \"plugin.wasm\"\nsha256 = \"{pin}\""),
        ),
    )
    .unwrap();
    let why = refusal(dir);
    assert!(why.contains("pins") && why.contains(&pin), "{why}");
}

#[test]
fn unknown_manifest_fields_and_garbage_wasm_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let wasm = staged_wasm("redact-keywords", "redact_keywords.wasm");
    let dir = plugin_dir(
        tmp.path(),
        "typo",
        "redactor",
        &wasm,
        "[limits]\ntimeout_msec = 10",
    );
    let why = refusal(dir);
    assert!(why.contains("timeout_msec"), "{why}");

    let junk = tmp.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm not really").unwrap();
    let why = refusal(plugin_dir(tmp.path(), "junk", "redactor", &junk, ""));
    assert!(
        why.contains("plugin \"junk\" 0.1.0") && why.contains("cannot compile"),
        "{why}"
    );
}
