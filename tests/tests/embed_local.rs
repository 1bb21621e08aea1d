//! embed-local: all-MiniLM-L6-v2 inside the sandbox. Its vectors match an
//! independent fp32 reference (numpy forward pass, see
//! tests/data/minilm-reference), batching does not change them, meaning
//! decides what is close, and without its model directory it refuses to
//! load, saying what is missing.

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
fn vectors_match_the_independent_reference_alone_and_in_batches() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/data/minilm-reference/reference.json"))
            .unwrap(),
    )
    .unwrap();
    let sentences = reference["sentences"].as_array().unwrap();
    assert!(sentences.len() >= 12, "the fixture has too few sentences");
    let texts: Vec<String> = sentences
        .iter()
        .map(|s| s["text"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<Vec<f32>> = sentences
        .iter()
        .map(|s| {
            s["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();

    let e = embedder();
    assert_eq!(
        (e.model().id.as_str(), e.model().dimensions),
        ("all-MiniLM-L6-v2", 384)
    );
    // All at once: padded to the longest text of each batch.
    let batch = e.embed(&texts).unwrap();
    for ((text, got), want) in texts.iter().zip(&batch).zip(&expected) {
        let c = cosine(got, want);
        assert!(c >= 0.999, "cosine {c} for {text:?}");
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm} for {text:?}");
    }
    // One at a time: the padding of a batch changes nothing.
    for (text, in_batch) in texts.iter().zip(&batch) {
        let alone = e.embed(std::slice::from_ref(text)).unwrap();
        let c = cosine(&alone[0], in_batch);
        assert!(
            c > 0.99999,
            "cosine {c} between alone and batched for {text:?}"
        );
    }
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
