//! What the benchmarks share: where the repository is, the grants the
//! shipped embedders need (their model files, staged by `cargo xtask
//! plugins`), percentiles and command-line flags. Each benchmark uses its
//! part.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use memhost::plugins::{Grant, PluginSettings};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Plugin settings granting the shipped embedders their model directories
/// (embed-local: all-MiniLM-L6-v2, embed-static: potion-base-8M), and
/// embed-local the configuration named in `MEMHOST_BENCH_EMBED`
/// (`max_tokens=128,max_batch=8`): a lever measured without editing a file.
pub fn embedder_settings() -> PluginSettings {
    let config: BTreeMap<String, String> = std::env::var("MEMHOST_BENCH_EMBED")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut settings = PluginSettings::default();
    for (id, model) in [
        ("embed-local", "all-minilm-l6-v2"),
        ("embed-static", "potion-base-8m"),
    ] {
        settings.grants.insert(
            id.into(),
            Grant {
                read_only_dirs: BTreeMap::from([(
                    "/model".to_string(),
                    root().join("target/models").join(model),
                )]),
                config: if id == "embed-local" {
                    config.clone()
                } else {
                    BTreeMap::new()
                },
                ..Grant::default()
            },
        );
    }
    settings
}

/// The `p`th percentile of `samples` (sorted in place).
pub fn pct(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

/// The value after `--name` in `args`.
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}
