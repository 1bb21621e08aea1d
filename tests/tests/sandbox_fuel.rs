//! With fuel metering on, a runaway plugin runs out of fuel, and fuel is
//! refilled before every call — on fresh stores and on warm instances — so
//! well-behaved plugins keep working call after call.

use crate::common::*;
use memhost::plugins::{PluginRegistry, PluginSettings};
use memhost::runtime::{CallErrorKind, Runtime, RuntimeConfig};

fn fueled_registry(fuel: u64) -> PluginRegistry {
    let runtime = Runtime::new(&RuntimeConfig {
        fuel_per_call: Some(fuel),
        ..RuntimeConfig::default()
    })
    .unwrap();
    PluginRegistry::new(runtime, PluginSettings::default()).unwrap()
}

#[test]
fn a_loop_runs_out_of_fuel_and_fuel_is_refilled_every_call() {
    let tmp = tempfile::tempdir().unwrap();
    // A deadline far away: only fuel can stop the loop quickly.
    let spin = plugin_dir(
        tmp.path(),
        "spin",
        "redactor",
        &fixture("loop"),
        "[limits]\ntimeout_ms = 20000",
    );
    let counter = plugin_dir(tmp.path(), "counter", "embedder", &fixture("counter"), "");
    let reg = fueled_registry(2_000_000);
    reg.apply(vec![spin, counter]).unwrap();
    let set = reg.snapshot();

    let spin = set.redactor("spin").unwrap();
    let err = spin.redact("loop").unwrap_err();
    assert_eq!(err.kind, CallErrorKind::OutOfFuel);
    assert_eq!(err.to_string(), "plugin \"spin\" 0.1.0: ran out of fuel");
    // Fresh stores get a full tank each call.
    for _ in 0..50 {
        assert!(spin.redact("calm").unwrap().is_empty());
    }

    // A warm instance is refilled before every call; 1000 calls together
    // would need far more than one tank.
    let counter = set.embedder("counter").unwrap();
    for _ in 0..1000 {
        counter.embed(&["x".into()]).unwrap();
    }
}
