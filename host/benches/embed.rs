//! `cargo xtask bench embed`: embed-local (all-MiniLM-L6-v2 in the sandbox)
//! on real text — gensim's news corpus and the hand-written questions of
//! the semantic test (both fetched by `cargo xtask plugins`): model load,
//! a question embedded on the request path, and background indexing
//! throughput.

use std::time::{Duration, Instant};

mod common;

use common::root;
use memhost::plugins::PluginRegistry;
use memhost::runtime::{Runtime, RuntimeConfig};

fn pct(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort();
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let root = root();
    let articles: Vec<String> =
        std::fs::read_to_string(root.join("target/corpora/lee_background.cor"))?
            .lines()
            .map(str::to_string)
            .collect();
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("tests/data/lee-queries.json"),
    )?)?;
    let questions: Vec<String> = fixture["pairs"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter_map(|q| q["query"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();

    let settings = common::embed_local_settings();
    let cache = tempfile::tempdir()?;
    let runtime = Runtime::new(&RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })?;
    let registry = PluginRegistry::new(runtime, settings)?;
    let started = Instant::now();
    registry
        .apply(vec![root.join("target/plugins/embed-local")])
        .map_err(|e| anyhow::anyhow!("{}", e.summary))?;
    let load = started.elapsed();
    let embedder = registry
        .snapshot()
        .embedder("embed-local")
        .ok_or_else(|| anyhow::anyhow!("embed-local did not load"))?;

    let mut query = Vec::new();
    for _ in 0..4 {
        for q in &questions {
            let t = Instant::now();
            embedder.embed(std::slice::from_ref(q))?;
            query.push(t.elapsed());
        }
    }
    let started = Instant::now();
    embedder.embed(&articles)?;
    let indexing = started.elapsed();
    let short: Vec<String> = questions.iter().cycle().take(256).cloned().collect();
    let started = Instant::now();
    embedder.embed(&short)?;
    let short_rate = short.len() as f64 / started.elapsed().as_secs_f64();

    println!("memhost embed benchmark (command: cargo xtask bench embed)");
    println!(
        "embed-local (all-MiniLM-L6-v2, wasm32-wasip2 + simd128, one instance), release host\n"
    );
    println!("| what | value |");
    println!("|---|---|");
    println!(
        "| load (compile + read 87 MiB of weights + smoke call) | {} |",
        ms(load)
    );
    println!(
        "| a question on the request path ({} questions × 4), p50 | {} |",
        questions.len(),
        ms(pct(&mut query, 50))
    );
    println!("| same, p99 | {} |", ms(pct(&mut query, 99)));
    println!(
        "| indexing {} news articles (≤ 256 tokens each, batches of 16) | {:.1} texts/s |",
        articles.len(),
        articles.len() as f64 / indexing.as_secs_f64()
    );
    println!("| indexing short texts (the questions, batches of 16) | {short_rate:.1} texts/s |");
    println!(
        "\nWith embedding, a recall costs the question's embedding plus the index search (`cargo xtask bench recall`: p99 0.7 ms at 100k, 2.5 ms at 1M). Target (issue 5): p99 ≤ 40 ms at 100k."
    );
    Ok(())
}
