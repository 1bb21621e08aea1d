//! A plugin that never returns is stopped at its deadline — the one its
//! manifest sets, not the host default — and the host goes on serving
//! healthy plugins.

use std::time::{Duration, Instant};

use crate::common::*;
use memhost::plugins::PluginSettings;
use memhost::runtime::CallErrorKind;

#[test]
fn an_infinite_loop_is_stopped_at_its_deadline_and_healthy_plugins_still_work() {
    let tmp = tempfile::tempdir().unwrap();
    let fast = plugin_dir(
        tmp.path(),
        "spin-fast",
        "redactor",
        &fixture("loop"),
        "[limits]\ntimeout_ms = 50",
    );
    let slow = plugin_dir(tmp.path(), "spin-default", "redactor", &fixture("loop"), "");
    let settings = PluginSettings {
        default_timeout_ms: 400,
        ..PluginSettings::default()
    };
    let reg = registry(settings, None);
    reg.apply(vec![staged("redact-keywords"), fast, slow])
        .unwrap();
    let set = reg.snapshot();
    let healthy = set.redactor("redact-keywords").unwrap();

    // The manifest's 50 ms applies, not the host default; a plugin without
    // a manifest limit gets the host default (400 ms here).
    for (id, deadline) in [("spin-fast", 50u64), ("spin-default", 400)] {
        let spin = set.redactor(id).unwrap();
        for _ in 0..3 {
            let started = Instant::now();
            let err = spin.redact("loop forever").unwrap_err();
            let took = started.elapsed();
            assert_eq!(
                err.kind,
                CallErrorKind::Timeout(Duration::from_millis(deadline))
            );
            assert_eq!(
                err.to_string(),
                format!("plugin \"{id}\" 0.1.0: timed out after {deadline} ms")
            );
            // Stopped by the deadline, not before it and not by luck: the
            // loop never ends on its own. (How close to the deadline is a
            // benchmark figure, not an assert: this machine may be busy.)
            assert!(
                took >= Duration::from_millis(deadline) && took < Duration::from_secs(10),
                "{id}: stopped after {took:?}, deadline {deadline} ms"
            );
            // The next call to a healthy plugin succeeds, and so does the
            // stopped plugin itself on input that does not loop.
            assert_eq!(healthy.redact("still fine").unwrap(), vec![]);
            assert_eq!(spin.redact("no trouble").unwrap(), vec![]);
        }
    }
}

#[test]
fn the_operator_ceiling_clamps_a_greedy_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let greedy = plugin_dir(
        tmp.path(),
        "greedy",
        "redactor",
        &fixture("loop"),
        "[limits]\ntimeout_ms = 60000",
    );
    let mut settings = PluginSettings::default();
    settings.grants.insert(
        "greedy".into(),
        memhost::plugins::Grant {
            timeout_ms: Some(80),
            ..Default::default()
        },
    );
    let reg = registry(settings, None);
    reg.apply(vec![greedy]).unwrap();
    let err = reg
        .snapshot()
        .redactor("greedy")
        .unwrap()
        .redact("loop")
        .unwrap_err();
    assert_eq!(err.kind, CallErrorKind::Timeout(Duration::from_millis(80)));
}
