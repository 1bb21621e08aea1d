//! A plugin's WASI world is empty: no environment, no arguments, no stdin,
//! no files — except a read-only directory the operator grants, which it can
//! read but neither write to nor escape from. And a plugin that waits inside
//! a host call (a sleep) is still stopped at its deadline.

use std::time::{Duration, Instant};

use crate::common::*;
use memhost::plugins::{Grant, PluginSettings};
use memhost::runtime::CallErrorKind;

fn probe(settings: PluginSettings, caps: &str) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = plugin_dir(tmp.path(), "probe", "extractor", &fixture("probe"), caps);
    let reg = registry(settings, None);
    reg.apply(vec![dir]).unwrap();
    let set = reg.snapshot();
    set.extractor("probe")
        .unwrap()
        .extract(
            "look around",
            memhost::plugins::ExtractContext {
                observed_at: 0,
                created_at: 0,
            },
        )
        .unwrap()
        .tags
}

fn tag<'a>(tags: &'a [String], key: &str) -> &'a str {
    tags.iter()
        .find_map(|t| t.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {tags:?}"))
}

/// A directory holding hello.txt, granted to the probe as /model.
fn model_granted(hello: &str) -> (tempfile::TempDir, PluginSettings) {
    let model = tempfile::tempdir().unwrap();
    std::fs::write(model.path().join("hello.txt"), hello).unwrap();
    let mut settings = PluginSettings::default();
    settings.grants.insert(
        "probe".into(),
        Grant {
            read_only_dirs: [("/model".to_string(), model.path().to_path_buf())].into(),
            ..Grant::default()
        },
    );
    (model, settings)
}

#[test]
fn nothing_is_visible_without_a_grant() {
    let tags = probe(
        PluginSettings::default(),
        "[capabilities]\nread_only_dirs = [\"/model\"]",
    );
    assert_eq!(tag(&tags, "env"), "0");
    assert_eq!(tag(&tags, "args"), "0");
    assert_eq!(
        tag(&tags, "stdin"),
        "ok:0",
        "stdin must be empty and closed"
    );
    assert!(tag(&tags, "root").starts_with("err:"), "{tags:?}");
    assert!(tag(&tags, "model").starts_with("err:"), "{tags:?}");
}

#[test]
fn a_granted_directory_is_readable_but_not_writable_or_escapable() {
    let (model, settings) = model_granted("weights go here");
    let tags = probe(settings, "[capabilities]\nread_only_dirs = [\"/model\"]");
    assert_eq!(tag(&tags, "model"), "ok:weights go here");
    assert!(tag(&tags, "write").starts_with("err:"), "{tags:?}");
    assert!(!model.path().join("new.txt").exists());
    assert!(tag(&tags, "escape").starts_with("err:"), "{tags:?}");
}

#[test]
fn a_grant_the_manifest_does_not_ask_for_mounts_nothing() {
    let (_model, settings) = model_granted("secret");
    let tags = probe(settings, "");
    assert!(tag(&tags, "model").starts_with("err:"), "{tags:?}");
}

#[test]
fn a_plugin_sleeping_in_a_host_call_is_stopped_at_its_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = plugin_dir(
        tmp.path(),
        "sleepy",
        "redactor",
        &fixture("sleep"),
        "[limits]\ntimeout_ms = 100",
    );
    let reg = registry(PluginSettings::default(), None);
    reg.apply(vec![dir]).unwrap();
    let sleepy = reg.snapshot().redactor("sleepy").unwrap();
    let started = Instant::now();
    let err = sleepy.redact("sleep for a minute").unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind, CallErrorKind::Timeout(Duration::from_millis(100)));
    // The guest asked to sleep for a minute.
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
}
