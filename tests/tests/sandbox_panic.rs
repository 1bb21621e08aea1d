//! A guest panic becomes a typed error that names the plugin and carries the
//! panic message; the guest's stderr goes to the host log tagged with the
//! plugin id; the plugin keeps working for the next call.

use crate::common::*;
use memhost::plugins::PluginSettings;
use memhost::runtime::CallErrorKind;

#[test]
fn a_panic_is_a_typed_error_naming_the_plugin() {
    let logs = capture_logs();
    let tmp = tempfile::tempdir().unwrap();
    let dir = plugin_dir(tmp.path(), "panicky", "redactor", &fixture("panic"), "");
    let reg = registry(PluginSettings::default(), None);
    reg.apply(vec![dir]).unwrap();
    let panicky = reg.snapshot().redactor("panicky").unwrap();

    let err = panicky.redact("please panic").unwrap_err();
    assert_eq!(
        err.kind,
        CallErrorKind::Panic("fixture panicked on purpose".into())
    );
    assert_eq!(
        err.to_string(),
        "plugin \"panicky\" 0.1.0: panicked: fixture panicked on purpose"
    );
    // The message reached the log through the guest's stderr, with the id.
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("fixture panicked on purpose") && l.contains("stream=\"stderr\""))
        .unwrap_or_else(|| panic!("no stderr line in logs:\n{text}"));
    assert!(line.contains("plugin=panicky"), "{line}");

    // A fresh store per call: the next call is unaffected.
    assert_eq!(panicky.redact("all calm").unwrap(), vec![]);
}
