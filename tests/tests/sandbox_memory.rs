//! A plugin that allocates without end traps at its memory cap, the error
//! says so, and the host process does not grow past the cap.

use crate::common::*;
use memhost::plugins::PluginSettings;
use memhost::runtime::CallErrorKind;

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn a_memory_bomb_traps_at_its_cap_and_the_host_stays_small() {
    let tmp = tempfile::tempdir().unwrap();
    let bomb = plugin_dir(
        tmp.path(),
        "bomb",
        "redactor",
        &fixture("bomb"),
        "[limits]\nmemory_mb = 32",
    );
    let reg = registry(PluginSettings::default(), None);
    reg.apply(vec![bomb, staged("redact-keywords")]).unwrap();
    let set = reg.snapshot();
    let bomb = set.redactor("bomb").unwrap();
    let healthy = set.redactor("redact-keywords").unwrap();
    // Warm up everything that is not the bomb's allocation.
    assert_eq!(bomb.redact("calm").unwrap(), vec![]);

    let before = peak_rss();
    for _ in 0..3 {
        let err = bomb.redact("bomb").unwrap_err();
        assert_eq!(
            err.kind,
            CallErrorKind::MemoryLimit {
                cap_bytes: 32 << 20
            }
        );
        assert_eq!(
            err.to_string(),
            "plugin \"bomb\" 0.1.0: memory limit of 32 MiB exceeded"
        );
        assert_eq!(healthy.redact("fine").unwrap(), vec![]);
    }
    let grown = peak_rss().saturating_sub(before);
    // The bomb may touch up to its cap; the host itself must not balloon.
    assert!(
        grown <= (32 << 20) + (16 << 20),
        "peak RSS grew by {} MiB for a 32 MiB cap",
        grown >> 20
    );
}

#[test]
fn the_host_default_memory_cap_applies_when_the_manifest_sets_none() {
    let tmp = tempfile::tempdir().unwrap();
    let bomb = plugin_dir(tmp.path(), "bomb", "redactor", &fixture("bomb"), "");
    let reg = registry(
        PluginSettings {
            default_memory_mb: 24,
            ..PluginSettings::default()
        },
        None,
    );
    reg.apply(vec![bomb]).unwrap();
    let err = reg
        .snapshot()
        .redactor("bomb")
        .unwrap()
        .redact("bomb")
        .unwrap_err();
    assert_eq!(
        err.kind,
        CallErrorKind::MemoryLimit {
            cap_bytes: 24 << 20
        }
    );
}
