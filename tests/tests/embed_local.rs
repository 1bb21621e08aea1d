//! embed-local: all-MiniLM-L6-v2 inside the sandbox. Its vectors match an
//! independent fp32 reference (numpy forward pass, see
//! tests/data/minilm-reference), batching does not change them, meaning
//! decides what is close, and without its model directory it refuses to
//! load, saying what is missing.

use crate::common::*;

fn embedder() -> std::sync::Arc<memhost::plugins::Embedder> {
    let reg = registry(model_grant("embed-local", Some(minilm_dir())), None);
    reg.apply(vec![staged("embed-local")]).unwrap();
    reg.snapshot().embedder("embed-local").unwrap()
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
    assert_meaning_decides_what_is_close(&embedder(), 0.3);
}

#[test]
fn without_its_model_directory_it_refuses_to_load_and_says_why() {
    let reg = registry(model_grant("embed-local", None), None);
    let err = reg.apply(vec![staged("embed-local")]).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("embed-local"), "{text}");
    assert!(text.contains("/model"), "{text}");
    assert!(reg.snapshot().embedder("embed-local").is_none());
}
