//! Plugin runtime benchmark: `cargo xtask bench plugins` (needs the plugins
//! built by `cargo xtask plugins`). Prints a table; asserts nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memhost::plugins::{Grant, PluginRegistry, PluginSettings};
use memhost::runtime::{Runtime, RuntimeConfig};
use wasmtime::component::Component;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn measure(iterations: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..iterations / 10 {
        f();
    }
    let mut samples: Vec<Duration> = (0..iterations)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort();
    let total: Duration = samples.iter().sum();
    Stats {
        p50: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
        mean: total / samples.len() as u32,
    }
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns >= 10_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else if ns >= 10_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} µs", ns as f64 / 1e3)
    }
}

fn row(name: &str, s: &Stats) {
    println!(
        "| {name:<48} | {:>10} | {:>10} | {:>10} |",
        fmt(s.p50),
        fmt(s.p99),
        fmt(s.mean)
    );
}

fn main() -> anyhow::Result<()> {
    let staged = root().join("target/plugins");
    let dir = staged.join("redact-keywords");
    let wasm_path = dir.join("redact_keywords.wasm");
    if !wasm_path.is_file() {
        anyhow::bail!(
            "{} is missing: run `cargo xtask plugins` first",
            wasm_path.display()
        );
    }
    let wasm = std::fs::read(&wasm_path)?;
    let terms = "project falcon, codename, internal-only";
    let text_1k: String = "Notes from the weekly sync. The codename stays internal-only; \
        project falcon ships after review. "
        .repeat(12)
        .chars()
        .take(1024)
        .collect();

    let cache = tempfile::tempdir()?;
    let rt = Runtime::new(&RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })?;
    println!("memhost plugin runtime benchmark (command: cargo xtask bench plugins)");
    println!(
        "pooling allocator: {}; wasm: redact-keywords ({} KiB)\n",
        if rt.uses_pooling() {
            "on"
        } else {
            "off (fallback)"
        },
        wasm.len() / 1024
    );
    println!(
        "| {:<48} | {:>10} | {:>10} | {:>10} |",
        "what", "p50", "p99", "mean"
    );
    println!("|{:-<50}|{:-<12}|{:-<12}|{:-<12}|", "", "", "", "");

    row(
        "compile component (Component::new)",
        &measure(5, || {
            let _ = Component::new(rt.engine(), &wasm);
        }),
    );
    let _ = rt.compile("bench", &wasm)?; // populate the cache
    row(
        "cold load from precompile cache",
        &measure(50, || {
            let _ = rt.compile("bench", &wasm);
        }),
    );

    let mut settings = PluginSettings::default();
    settings.grants.insert(
        "redact-keywords".into(),
        Grant {
            config: [("terms".to_string(), terms.to_string())].into(),
            ..Grant::default()
        },
    );
    let registry = PluginRegistry::new(rt.clone(), settings)?;
    registry.apply(vec![dir, staged.join("extract-entities")])?;
    let set = registry.snapshot();
    let redactor = set
        .redactor("redact-keywords")
        .ok_or_else(|| anyhow::anyhow!("redact-keywords did not load"))?;
    let mut session = redactor.session()?;

    let spec = memhost::runtime::StoreSpec {
        identity: memhost::runtime::PluginIdentity {
            id: "bench".into(),
            version: "0".into(),
        },
        kind: "bench",
        budget: memhost::runtime::CallBudget {
            timeout: Duration::from_secs(1),
            memory_bytes: 64 << 20,
        },
        config: Default::default(),
        read_only_dirs: Vec::new(),
        egress: None,
    };
    row(
        "no-op call, fresh store per call",
        &measure(5_000, || {
            let _ = redactor.redact("");
        }),
    );
    row(
        "  of which: store creation (empty WASI context)",
        &measure(5_000, || {
            let _ = rt.new_store(&spec);
        }),
    );
    row(
        "no-op call, warm instance",
        &measure(20_000, || {
            let _ = session.redact("");
        }),
    );
    row(
        "redact 1 KiB, fresh store per call",
        &measure(5_000, || {
            let _ = redactor.redact(&text_1k);
        }),
    );
    row(
        "redact 1 KiB, warm instance",
        &measure(20_000, || {
            let _ = session.redact(&text_1k);
        }),
    );
    let native = redact_keywords::KeywordRedactor::with_terms(terms);
    row(
        "redact 1 KiB, native Rust (same code)",
        &measure(20_000, || {
            std::hint::black_box(native.find(std::hint::black_box(&text_1k)));
        }),
    );
    let extractor = set
        .extractor("extract-entities")
        .ok_or_else(|| anyhow::anyhow!("extract-entities did not load"))?;
    let memory = "Met Ada Lovelace and Dr. Grace Hopper from the University of \
        Pennsylvania about PROJ-1423; Ada will mail ada@example.org the draft of \
        \"Notes on the Analytical Engine\" and push the fix to src/engine/mod.rs \
        (see https://example.org/engine) before Friday. @ghopper owns the review. \
        #engine #review";
    row(
        "extract entities, ~100-token memory, fresh store",
        &measure(5_000, || {
            let _ = extractor.extract(
                memory,
                memhost::plugins::ExtractContext {
                    observed_at: 0,
                    created_at: 0,
                },
            );
        }),
    );
    row(
        "extract entities, same memory, native Rust",
        &measure(20_000, || {
            std::hint::black_box(extract_entities::extract(std::hint::black_box(memory), 0));
        }),
    );
    let findings = session.redact(&text_1k)?;
    println!(
        "\n(1 KiB text has {} findings; targets: fresh store ≤ 30 µs p99, warm ≤ 2 µs)",
        findings.len()
    );
    Ok(())
}
