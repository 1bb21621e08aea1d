//! `cargo xtask bench embed`: the shipped embedders (embed-static and
//! embed-local, in the sandbox) on real text — gensim's news corpus and the hand-written questions of
//! the semantic test (both fetched by `cargo xtask plugins`): model load,
//! a question embedded on the request path, and background indexing
//! throughput.

use std::time::{Duration, Instant};

mod common;

use common::{pct, root};
use memhost::plugins::PluginRegistry;
use memhost::runtime::{Runtime, RuntimeConfig};

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

    let settings = common::embedder_settings();
    let cache = tempfile::tempdir()?;
    let runtime = Runtime::new(&RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })?;
    let registry = PluginRegistry::new(runtime, settings)?;

    println!("memhost embed benchmark (command: cargo xtask bench embed)");
    println!(
        "the shipped embedders (wasm32-wasip2 + simd128, one instance), release host, real text\n"
    );
    println!(
        "| embedder | load (compile, read weights, smoke call) | a question, p50 | p99 | indexing {} news articles | indexing short texts |",
        articles.len()
    );
    println!("|---|---|---|---|---|---|");
    for (id, model) in [
        ("embed-static", "potion-base-8M, static"),
        ("embed-local", "all-MiniLM-L6-v2, transformer"),
    ] {
        let started = Instant::now();
        registry
            .apply(vec![root.join("target/plugins").join(id)])
            .map_err(|e| anyhow::anyhow!("{}", e.summary))?;
        let load = started.elapsed();
        let embedder = registry
            .snapshot()
            .embedder(id)
            .ok_or_else(|| anyhow::anyhow!("{id} did not load"))?;

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
        let indexing = articles.len() as f64 / started.elapsed().as_secs_f64();
        let short: Vec<String> = questions.iter().cycle().take(256).cloned().collect();
        let started = Instant::now();
        embedder.embed(&short)?;
        let short_rate = short.len() as f64 / started.elapsed().as_secs_f64();
        println!(
            "| {id} ({model}) | {} | {} | {} | {indexing:.1} texts/s | {short_rate:.1} texts/s |",
            ms(load),
            ms(pct(&mut query, 50)),
            ms(pct(&mut query, 99)),
        );
    }
    println!(
        "\nQuestions: the {} of the semantic test, each 4 times, one call each; articles: gensim's news corpus (≤ 256 tokens of each for embed-local), in the plugin's batches; short texts: the questions, 256 in the plugin's batches. A recall costs the question's embedding plus the search (`cargo xtask bench recall` for the index alone, `cargo xtask bench http` through HTTP).",
        questions.len()
    );
    Ok(())
}
