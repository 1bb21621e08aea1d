//! embed-local: all-MiniLM-L6-v2 inside the sandbox. Meaning decides what
//! is close, and without its model directory it refuses to load, saying
//! what is missing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::common::*;
use memhost::plugins::{Grant, PluginSettings};

fn settings(model: Option<PathBuf>) -> PluginSettings {
    let mut settings = PluginSettings::default();
    settings.grants.insert(
        "embed-local".into(),
        Grant {
            read_only_dirs: model
                .map(|m| BTreeMap::from([("/model".to_string(), m)]))
                .unwrap_or_default(),
            ..Grant::default()
        },
    );
    settings
}

fn embedder() -> std::sync::Arc<memhost::plugins::Embedder> {
    let reg = registry(settings(Some(model_dir())), None);
    reg.apply(vec![staged("embed-local")]).unwrap();
    reg.snapshot().embedder("embed-local").unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn meaning_not_words_decides_what_is_close() {
    let e = embedder();
    let v = e
        .embed(&[
            "How do I bake bread at home?".into(),
            "A recipe for making a sourdough loaf in your kitchen".into(),
            "The stock market fell sharply on Tuesday".into(),
        ])
        .unwrap();
    let near = cosine(&v[0], &v[1]);
    let far = cosine(&v[0], &v[2]);
    assert!(near > far + 0.3, "paraphrase {near}, unrelated {far}");
}

#[test]
fn without_its_model_directory_it_refuses_to_load_and_says_why() {
    let reg = registry(settings(None), None);
    let err = reg.apply(vec![staged("embed-local")]).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("embed-local"), "{text}");
    assert!(text.contains("/model"), "{text}");
    assert!(reg.snapshot().embedder("embed-local").is_none());
}
