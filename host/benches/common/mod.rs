//! What the benchmarks share: where the repository is, and the grant the
//! shipped embedder needs (its model files, staged by `cargo xtask plugins`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use memhost::plugins::{Grant, PluginSettings};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Plugin settings granting embed-local its model directory.
pub fn embed_local_settings() -> PluginSettings {
    let mut settings = PluginSettings::default();
    settings.grants.insert(
        "embed-local".into(),
        Grant {
            read_only_dirs: BTreeMap::from([(
                "/model".to_string(),
                root().join("target/models/all-minilm-l6-v2"),
            )]),
            ..Grant::default()
        },
    );
    settings
}
