//! Embedders make instances on first use and keep them warm (state
//! survives between calls), each retired after its configured number of
//! calls, after any trap or after sitting idle, and
//! never more instances than the pool allows; background work (indexing)
//! leaves one instance to questions.

use crate::common::*;
use memhost::plugins::{Grant, PluginSettings};

fn counter(instances: u32, max_calls: u64) -> std::sync::Arc<memhost::plugins::Embedder> {
    counter_with(instances, max_calls, "")
}

/// [`counter`] with `extra` in its manifest.
fn counter_with(
    instances: u32,
    max_calls: u64,
    extra: &str,
) -> std::sync::Arc<memhost::plugins::Embedder> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = plugin_dir(
        tmp.path(),
        "counter",
        "embedder",
        &fixture("counter"),
        extra,
    );
    let mut settings = PluginSettings::default();
    settings.grants.insert(
        "counter".into(),
        Grant {
            instances: Some(instances),
            max_calls_per_instance: Some(max_calls),
            ..Grant::default()
        },
    );
    let reg = registry(settings, None);
    reg.apply(vec![dir]).unwrap();
    reg.snapshot().embedder("counter").unwrap()
}

fn count(e: &memhost::plugins::Embedder) -> f32 {
    e.embed(&["x".into()]).unwrap()[0][0]
}

#[test]
fn warm_instances_are_reused_then_retired_after_max_calls() {
    let e = counter(1, 3);
    // Load asked model() on an instance it then dropped: none is kept
    // until the first embedding.
    assert_eq!(e.live_instances(), 0);
    let seen: Vec<f32> = (0..7).map(|_| count(&e)).collect();
    assert_eq!(seen, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0]);
    assert_eq!(e.live_instances(), 1);
}

#[test]
fn idle_instances_are_dropped_and_made_again_on_the_next_call() {
    let e = counter(2, 1000);
    assert_eq!(count(&e), 1.0);
    assert_eq!(count(&e), 2.0);
    // Not idle long enough: kept.
    assert_eq!(e.retire_idle(std::time::Duration::from_secs(3600)), 0);
    assert_eq!(e.live_instances(), 1);
    assert_eq!(e.retire_idle(std::time::Duration::ZERO), 1);
    assert_eq!(e.live_instances(), 0);
    // A fresh instance: its state starts over.
    assert_eq!(count(&e), 1.0);
    assert_eq!(e.live_instances(), 1);
}

#[test]
fn an_instance_that_trapped_is_replaced() {
    let e = counter(1, 1000);
    assert_eq!(count(&e), 1.0);
    assert_eq!(count(&e), 2.0);
    let err = e.embed(&["trap".into()]).unwrap_err();
    assert!(err.to_string().contains("asked to trap"), "{err}");
    assert_eq!(count(&e), 1.0, "a trapped instance was reused");
}

#[test]
fn concurrent_callers_share_a_bounded_pool() {
    let e = counter(2, 1_000_000);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..25 {
                    count(&e);
                }
            });
        }
    });
    assert!(e.live_instances() <= 2, "{} instances", e.live_instances());
}

#[test]
fn a_question_does_not_wait_behind_background_embedding() {
    let e = counter_with(2, 1_000_000, "[limits]\ntimeout_ms = 10000");
    let background_done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        // Two bulk batches, two seconds each: they take turns on one
        // instance and leave the other to questions.
        for _ in 0..2 {
            s.spawn(|| {
                e.embed_in_background(&["slow".into()]).unwrap();
                background_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        // Asked while both batches are running or queued, answered
        // before either has finished (the question itself takes a fifth
        // of a second, so one answered only after a batch let go of its
        // instance finds that batch counted).
        e.embed(&["question, with a pause".into()]).unwrap();
        assert_eq!(
            background_done.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the question waited for background work"
        );
    });
    assert_eq!(background_done.into_inner(), 2);
    assert!(e.live_instances() <= 2, "{} instances", e.live_instances());
}

#[test]
fn with_one_instance_a_question_goes_before_the_next_background_batch() {
    let e = counter_with(1, 1_000_000, "[limits]\ntimeout_ms = 10000");
    let background_done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        // Two bulk batches of two seconds each on the only instance: the
        // first runs, the second waits for it.
        for pause in [0, 100] {
            let done = &background_done;
            let e = &e;
            s.spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(pause));
                e.embed_in_background(&["slow".into()]).unwrap();
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        // Asked after both: answered when the first batch lets go, before
        // the second batch takes the instance.
        e.embed(&["question, with a pause".into()]).unwrap();
        assert_eq!(
            background_done.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the question waited for more than the batch in progress"
        );
    });
    assert_eq!(background_done.into_inner(), 2);
    assert_eq!(e.live_instances(), 1);
}
