//! embed-static: potion-base-8M (a Model2Vec static model) inside the
//! sandbox. Its vectors are model2vec's own — the reference vectors of 16
//! sentences shipped beside the model — alone and in batches; meaning
//! decides what is close; huge and empty texts get a vector; without its
//! model directory it refuses to load, saying what is missing.

use crate::common::*;

fn embedder() -> std::sync::Arc<memhost::plugins::Embedder> {
    let reg = registry(model_grant("embed-static", Some(potion_dir())), None);
    reg.apply(vec![staged("embed-static")]).unwrap();
    reg.snapshot().embedder("embed-static").unwrap()
}

/// The rows of a little-endian f32 `.npy` matrix.
fn npy_rows(bytes: &[u8]) -> Vec<Vec<f32>> {
    assert_eq!(&bytes[..6], b"\x93NUMPY", "not an .npy file");
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + len]).unwrap();
    assert!(header.contains("'<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape = &header[header.find("'shape': (").unwrap() + 10..];
    let dims: Vec<usize> = shape[..shape.find(')').unwrap()]
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    let floats: Vec<f32> = bytes[start + len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(floats.len(), dims[0] * dims[1]);
    floats.chunks(dims[1]).map(<[f32]>::to_vec).collect()
}

#[test]
fn vectors_are_model2vecs_own_alone_and_in_batches() {
    let dir = potion_dir();
    let texts: Vec<String> = std::fs::read_to_string(dir.join("reference-sentences.txt"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let expected = npy_rows(&std::fs::read(dir.join("reference-vectors.npy")).unwrap());
    assert_eq!(texts.len(), 16);
    assert_eq!((expected.len(), expected[0].len()), (16, 256));

    let e = embedder();
    assert_eq!(
        (e.model().id.as_str(), e.model().dimensions),
        ("potion-base-8M", 256)
    );
    let batch = e.embed(&texts).unwrap();
    for ((text, got), want) in texts.iter().zip(&batch).zip(&expected) {
        let c = cosine(got, want);
        assert!(c >= 0.9999, "cosine {c} for {text:?}");
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm} for {text:?}");
    }
    for (text, in_batch) in texts.iter().zip(&batch) {
        let alone = e.embed(std::slice::from_ref(text)).unwrap();
        assert_eq!(&alone[0], in_batch, "{text:?} alone differs from batched");
    }
}

#[test]
fn meaning_not_words_decides_what_is_close() {
    assert_meaning_decides_what_is_close(&embedder(), 0.2);
}

#[test]
fn a_huge_text_is_cut_and_a_text_of_no_known_token_is_the_zero_vector() {
    let e = embedder();
    // 512 tokens of "memory" first: what follows them is cut, however much.
    let huge = "memory ".repeat(600) + &"banana ".repeat(200_000);
    let v = e
        .embed(&[
            huge,
            "memory".into(),
            "banana".into(),
            "🦀🦀".into(),
            String::new(),
        ])
        .unwrap();
    assert!(cosine(&v[0], &v[1]) > 0.9999, "the text was not cut");
    assert!(cosine(&v[0], &v[2]) < 0.9, "{}", cosine(&v[0], &v[2]));
    for zero in &v[3..] {
        assert!(zero.iter().all(|x| *x == 0.0), "{:?}", &zero[..4]);
    }
}

#[test]
fn without_its_model_directory_it_refuses_to_load_and_says_why() {
    let reg = registry(model_grant("embed-static", None), None);
    let err = reg.apply(vec![staged("embed-static")]).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("embed-static"), "{text}");
    assert!(text.contains("/model"), "{text}");
    assert!(reg.snapshot().embedder("embed-static").is_none());
}
