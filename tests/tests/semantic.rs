//! Semantic recall on a real corpus no one here wrote: the 300 news
//! articles of gensim's test data (`lee_background.cor`, fetched from PyPI
//! by `cargo xtask plugins`), stored through the REST API into a namespace
//! that embeds with embed-local. Hand-written paraphrased questions
//! (`tests/data/lee-queries.json`) must find their article in the top
//! five in hybrid mode; the hit rate of each mode is printed. memhost's
//! default fusion must rank them at least as well (mean reciprocal rank)
//! as the plain reciprocal-rank fusion the peers ship — this set was never
//! used to tune it.

use crate::common::server::*;
use crate::common::{embedder_grants, root};
use serde_json::{Value, json};

fn corpus() -> Vec<String> {
    let path = root().join("target/corpora/lee_background.cor");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run `cargo xtask plugins` first (or `cargo xtask test`)",
            path.display()
        )
    });
    text.lines().map(str::to_string).collect()
}

#[test]
fn paraphrased_questions_find_their_news_article_by_meaning() {
    paraphrases(None, "embed-static");
}

#[test]
fn paraphrased_questions_find_their_news_article_by_meaning_with_embed_local() {
    paraphrases(Some("embed-local"), "embed-local");
}

/// Store the corpus in a namespace made with `embedder` (none: the
/// default, which must be `expected`) and ask the paraphrases.
fn paraphrases(embedder: Option<&str>, expected: &str) {
    let articles = corpus();
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/data/lee-queries.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        articles.len() as u64,
        fixture["corpus"]["lines"].as_u64().unwrap()
    );
    let pairs = fixture["pairs"].as_array().unwrap();
    for p in pairs {
        // The fixture points at the article it means.
        let line = p["line"].as_u64().unwrap() as usize;
        assert!(
            articles[line].starts_with(p["first_words"].as_str().unwrap()),
            "line {line} does not start with {}",
            p["first_words"]
        );
    }

    let Setup {
        admin: a,
        tmp: _tmp,
        server: _server,
        data: _data,
    } = setup_plugins(
        &["redact-pii", "embed-local", "embed-static"],
        &embedder_grants(),
        &[],
        &[&json!({ "name": "news", "redaction": "off", "embedder": embedder }).to_string()],
    );
    let (_, ns) = curl(&a, "GET", "/v1/namespaces/news", None);
    assert_eq!(ns["settings"]["embedder"], expected, "{ns}");
    for (batch, chunk) in articles.chunks(100).enumerate() {
        let memories: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, text)| json!({ "content": text, "metadata": { "line": batch * 100 + i } }))
            .collect();
        let (status, answer) = curl(
            &a,
            "POST",
            "/v1/namespaces/news/memories/bulk",
            Some(&json!({ "memories": memories }).to_string()),
        );
        assert_eq!(status, 200);
        // The corpus repeats a few articles verbatim: those are stored
        // once (the second copy answers as a duplicate).
        let statuses: Vec<u64> = answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_u64().unwrap())
            .collect();
        assert!(
            statuses.len() == chunk.len() && statuses.iter().all(|s| *s == 201 || *s == 200),
            "{statuses:?}"
        );
    }
    // Embedded in the background; wait for the queue to drain.
    let started = std::time::Instant::now();
    loop {
        let (_, ns) = curl(&a, "GET", "/v1/namespaces/news", None);
        if ns["index"]["queued"] == 0 {
            assert_eq!(ns["index"]["failed"], 0, "{ns}");
            break;
        }
        assert!(
            started.elapsed().as_secs() < 900,
            "300 articles not embedded in 15 minutes: {ns}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    eprintln!(
        "embedded {} articles in {:.1} s",
        articles.len(),
        started.elapsed().as_secs_f64()
    );

    let mut rates = Vec::new();
    let mut missed_hybrid = Vec::new();
    for (mode, fusion) in [
        ("hybrid", "relative"),
        ("hybrid", "rrf"),
        ("vector", "relative"),
        ("lexical", "relative"),
    ] {
        let mut hits = 0;
        let mut reciprocal = 0.0;
        for p in pairs {
            let (status, answer) = curl(
                &a,
                "POST",
                "/v1/namespaces/news/recall",
                Some(
                    &json!({ "query": p["query"], "k": 5, "mode": mode, "fusion": fusion })
                        .to_string(),
                ),
            );
            assert_eq!(status, 200, "{answer}");
            let lines: Vec<u64> = answer["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["metadata"]["line"].as_u64().unwrap())
                .collect();
            // The corpus repeats a few articles verbatim: any copy counts.
            let want = &articles[p["line"].as_u64().unwrap() as usize];
            if let Some(rank) = lines.iter().position(|l| &articles[*l as usize] == want) {
                hits += 1;
                reciprocal += 1.0 / (rank + 1) as f64;
            } else if (mode, fusion) == ("hybrid", "relative") {
                missed_hybrid.push(format!("{} (got lines {lines:?})", p["query"]));
            }
        }
        let name = if mode == "hybrid" {
            format!("{mode} ({fusion})")
        } else {
            mode.to_string()
        };
        rates.push((name, hits, reciprocal / pairs.len() as f64));
    }
    eprintln!(
        "{expected}: top-5 hit rate and MRR@5 over {} paraphrased questions:",
        pairs.len()
    );
    for (mode, hits, mrr) in &rates {
        eprintln!(
            "  {mode:<17} {hits}/{} = {:.0}%, MRR {mrr:.3}",
            pairs.len(),
            100.0 * *hits as f64 / pairs.len() as f64
        );
    }
    assert!(
        missed_hybrid.is_empty(),
        "hybrid recall missed: {missed_hybrid:#?}"
    );
    // Meaning does what words alone cannot, and fusing words in does not
    // lose what meaning found.
    let (hybrid, vector, lexical) = (rates[0].1, rates[2].1, rates[3].1);
    assert!(vector > lexical, "vector {vector} vs lexical {lexical}");
    assert!(hybrid >= vector, "hybrid {hybrid} vs vector {vector}");
    let (default, rrf) = (rates[0].2, rates[1].2);
    assert!(
        default >= rrf,
        "the default fusion ranks worse than plain RRF: MRR {default:.3} vs {rrf:.3}"
    );
}
