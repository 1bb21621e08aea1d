//! Reloading swaps the plugin set atomically: changed plugins are reloaded,
//! unchanged ones carried over, removed ones unloaded — and a reload with
//! any failure changes nothing, so the previous plugins keep working.

use crate::common::*;
use memhost::plugins::{Grant, PluginSettings};

fn keywords_settings(terms: &str) -> PluginSettings {
    let mut settings = PluginSettings::default();
    settings.grants.insert(
        "redact-keywords".into(),
        Grant {
            config: [("terms".to_string(), terms.to_string())].into(),
            ..Grant::default()
        },
    );
    settings
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn reload_swaps_atomically_and_a_failing_reload_keeps_the_old_set() {
    let plugins = tempfile::tempdir().unwrap();
    copy_dir(
        &staged("redact-keywords"),
        &plugins.path().join("redact-keywords"),
    );
    copy_dir(
        &staged("policy-standard"),
        &plugins.path().join("policy-standard"),
    );
    let mut settings = keywords_settings("falcon");
    settings.dir = Some(plugins.path().to_path_buf());
    let reg = registry(settings, None);

    let first = reg.reload().unwrap();
    assert_eq!(first.loaded, ["policy-standard", "redact-keywords"]);
    let v1 = reg.snapshot();
    assert_eq!(v1.generation, 1);
    let old_keywords = v1.redactor("redact-keywords").unwrap();
    assert_eq!(old_keywords.redact("the falcon lands").unwrap().len(), 1);

    // Nothing changed: everything is carried over, nothing recompiled.
    let same = reg.reload().unwrap();
    assert_eq!(same.unchanged.len(), 2);
    assert!(same.loaded.is_empty() && same.reloaded.is_empty());

    // New grants reload that plugin only.
    let mut settings = keywords_settings("eagle");
    settings.dir = Some(plugins.path().to_path_buf());
    reg.set_settings(settings);
    let changed = reg.reload().unwrap();
    assert_eq!(changed.reloaded, ["redact-keywords"]);
    assert_eq!(changed.unchanged, ["policy-standard"]);
    let v3 = reg.snapshot();
    let new_keywords = v3.redactor("redact-keywords").unwrap();
    assert_eq!(new_keywords.redact("the eagle lands").unwrap().len(), 1);
    assert!(new_keywords.redact("the falcon lands").unwrap().is_empty());
    // A caller holding the old snapshot still has a working old plugin.
    assert_eq!(old_keywords.redact("the falcon lands").unwrap().len(), 1);

    // A broken plugin makes the whole reload fail; nothing changes.
    let broken = plugins.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("broken.wasm"), b"not wasm").unwrap();
    std::fs::write(
        broken.join("plugin.toml"),
        "id = \"broken\"\nname = \"b\"\nversion = \"0.1.0\"\nkind = \"redactor\"\napi = \"0.1.0\"\nwasm = \"broken.wasm\"\n",
    )
    .unwrap();
    std::fs::remove_dir_all(plugins.path().join("policy-standard")).unwrap();
    let err = reg.reload().unwrap_err();
    assert_eq!(err.summary.failed.len(), 1);
    assert_eq!(err.summary.failed[0].0, "broken");
    assert!(err.to_string().contains("previous plugins kept"), "{err}");
    let after = reg.snapshot();
    assert_eq!(after.generation, v3.generation);
    assert!(
        after.policy("policy-standard").is_some(),
        "old set was replaced"
    );
    assert_eq!(
        after
            .redactor("redact-keywords")
            .unwrap()
            .redact("eagle")
            .unwrap()
            .len(),
        1
    );

    // Fix it by removing the broken plugin: now the removal goes through.
    std::fs::remove_dir_all(&broken).unwrap();
    let fixed = reg.reload().unwrap();
    assert_eq!(fixed.unloaded, ["policy-standard"]);
    assert!(reg.snapshot().policy("policy-standard").is_none());
}

#[test]
fn a_plugin_disabled_by_the_operator_is_not_loaded() {
    let mut settings = PluginSettings::default();
    settings.grants.insert(
        "redact-keywords".into(),
        Grant {
            enabled: Some(false),
            ..Grant::default()
        },
    );
    let reg = registry(settings, None);
    reg.apply(vec![staged("redact-keywords"), staged("policy-standard")])
        .unwrap();
    let set = reg.snapshot();
    assert!(set.get("redact-keywords").is_none());
    assert!(set.get("policy-standard").is_some());
}

#[test]
fn two_plugins_with_one_id_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&staged("redact-keywords"), &tmp.path().join("a"));
    copy_dir(&staged("redact-keywords"), &tmp.path().join("b"));
    let reg = registry(PluginSettings::default(), None);
    let err = reg.reload_from(tmp.path()).unwrap_err();
    assert!(
        err.summary.failed[0].1.contains("duplicate plugin id"),
        "{err}"
    );
}
