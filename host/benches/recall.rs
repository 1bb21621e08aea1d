//! `cargo xtask bench recall [sizes…]`: the meaning channel — sealed vectors
//! in LMDB, an exact delta and `instant-distance` segments built in the
//! background — on synthetic 384-d vectors in one namespace, inserted
//! through the index's own row format (no embedder). Sizes default to 10k,
//! 20k and 100k; pass e.g. `1000000` for more (a 1M build takes about 20
//! minutes on two cores). `--keep DIR` keeps each size's store under
//! `DIR/<n>` (with its keys) and, when it is there already, reuses it:
//! insert and build are skipped and the restart, queries and recall are
//! measured again — for working on the load path at 1M.
//!
//! The vectors are clustered (2,000 centres, as embeddings of real text
//! are); exact brute force over the same rows is the ground truth of
//! recall@10.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::pct;

use memhost::crypto::{DataKey, MasterKey};
use memhost::index::vector::{self, Space, VectorCache};
use memhost::store::{Store, StoreOptions, WriteFlags};
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const DIMS: usize = 384;
const QUERIES: usize = 200;

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

struct Data {
    centres: Vec<Vec<f32>>,
    rng: rand::rngs::StdRng,
}

impl Data {
    fn new() -> Data {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let centres = (0..2000)
            .map(|_| (0..DIMS).map(|_| rng.random_range(-1.0f32..1.0)).collect())
            .collect();
        Data { centres, rng }
    }

    fn vector(&mut self) -> Vec<f32> {
        let c = &self.centres[self.rng.random_range(0..self.centres.len())];
        c.iter()
            .map(|x| x + self.rng.random_range(-0.35f32..0.35))
            .collect()
    }
}

/// Search `queries` in `cache`; latencies and the top 10 of each.
fn run(
    cache: &VectorCache,
    store: &Store,
    key: &Arc<DataKey>,
    space: Space,
    queries: &[Vec<f32>],
) -> anyhow::Result<(Vec<Duration>, Vec<Vec<Uuid>>)> {
    let mut samples = Vec::new();
    let mut tops = Vec::new();
    for q in queries {
        let t = Instant::now();
        let hits = cache.search(store, key, space, q, 10)?;
        samples.push(t.elapsed());
        tops.push(hits.into_iter().map(|h| h.0).collect());
    }
    Ok((samples, tops))
}

/// The store and key of one size: fresh in a temporary directory, or
/// kept under `keep/<n>` (`reused` when it was there already).
struct Place {
    dir: std::path::PathBuf,
    _temp: Option<tempfile::TempDir>,
    key: Arc<DataKey>,
    ns: Uuid,
    reused: bool,
}

fn place(keep: Option<&std::path::Path>, n: usize) -> anyhow::Result<Place> {
    let Some(keep) = keep else {
        let temp = tempfile::tempdir()?;
        return Ok(Place {
            dir: temp.path().to_path_buf(),
            _temp: Some(temp),
            key: Arc::new(DataKey::generate()),
            ns: Uuid::now_v7(),
            reused: false,
        });
    };
    let dir = keep.join(n.to_string());
    let saved = dir.join("bench-keys");
    if let Ok(text) = std::fs::read_to_string(&saved) {
        let (master, rest) = text
            .split_once("\n--\n")
            .ok_or_else(|| anyhow::anyhow!("{} is not a bench key file", saved.display()))?;
        let (ns, wrapped) = rest
            .split_once('\n')
            .ok_or_else(|| anyhow::anyhow!("{} is not a bench key file", saved.display()))?;
        let master = MasterKey::parse(master)?;
        let wrapped = hex::decode(wrapped.trim())?;
        return Ok(Place {
            key: Arc::new(master.unwrap(&wrapped, "bench")?),
            ns: ns.parse()?,
            dir,
            _temp: None,
            reused: true,
        });
    }
    std::fs::create_dir_all(&dir)?;
    let master = MasterKey::generate();
    let key = DataKey::generate();
    let ns = Uuid::now_v7();
    let text = format!(
        "{}\n--\n{ns}\n{}\n",
        master.export().as_str(),
        hex::encode(master.wrap(&key)?)
    );
    std::fs::write(&saved, text)?;
    Ok(Place {
        dir,
        _temp: None,
        key: Arc::new(key),
        ns,
        reused: false,
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keep = args
        .iter()
        .position(|a| a == "--keep")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from);
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 20_000, 100_000]
    } else {
        sizes
    };
    println!("memhost recall benchmark (command: cargo xtask bench recall {sizes:?})");
    println!(
        "sealed {DIMS}-d clustered vectors, one namespace, release build; segments build at {} vectors, hold at most {}; {QUERIES} queries\n",
        vector::BUILD_AT,
        vector::MAX_SEGMENT
    );
    println!(
        "| {:>9} | {:>9} | {:>12} | {:>12} | {:>10} | {:>12} | {:>12} | {:>9} | {:>8} | {:>10} | {:>10} |",
        "vectors",
        "insert/s",
        "exact p50",
        "exact p99",
        "build/s",
        "index p50",
        "index p99",
        "recall@10",
        "restart",
        "RAM/vector",
        "disk/vector"
    );
    println!(
        "|{:-<11}|{:-<11}|{:-<14}|{:-<14}|{:-<12}|{:-<14}|{:-<14}|{:-<11}|{:-<10}|{:-<12}|{:-<12}|",
        "", "", "", "", "", "", "", "", "", "", ""
    );
    for n in sizes {
        let mut data = Data::new();
        let at = place(keep.as_deref(), n)?;
        let store = Store::open(&at.dir, &StoreOptions::default())?;
        let key = at.key.clone();
        let space = Space {
            ns: at.ns,
            generation: 0,
            dims: DIMS,
        };
        let started = Instant::now();
        // A kept store has its vectors already; draw them again anyway so
        // the queries are the same as when it was made.
        for chunk in 0..n.div_ceil(1000) {
            if at.reused {
                (0..1000.min(n - chunk * 1000)).for_each(|_| drop(data.vector()));
                continue;
            }
            let rows: Vec<(Vec<u8>, Vec<u8>)> = (0..1000.min(n - chunk * 1000))
                .map(|_| {
                    let id = Uuid::now_v7();
                    let row = vector::row_key(&space.ns, &id);
                    let sealed = vector::seal(&key, &row, 1, &data.vector());
                    (row, sealed)
                })
                .collect();
            store.write_blocking(move |txn, t| {
                for (k, v) in &rows {
                    txn.put(t.vectors, k, v, WriteFlags::empty())?;
                }
                Ok(())
            })?;
        }
        let insert = n as f64 / started.elapsed().as_secs_f64();
        let queries: Vec<Vec<f32>> = (0..QUERIES).map(|_| data.vector()).collect();

        // Ground truth: everything exact — measured before any segment
        // exists, and kept with a kept store (once segments are on disk,
        // every load uses them).
        let saved = at.dir.join("bench-truth");
        let (exact_p50, exact_p99, truth) = if at.reused {
            let text = std::fs::read_to_string(&saved)?;
            let mut lines = text.lines();
            let head: Vec<String> = lines
                .next()
                .unwrap_or_default()
                .split('\t')
                .map(str::to_string)
                .collect();
            let truth: Vec<Vec<Uuid>> = lines
                .map(|l| l.split(' ').filter_map(|u| u.parse().ok()).collect())
                .collect();
            (head[0].clone(), head[1].clone(), truth)
        } else {
            let exact = VectorCache::with_build_at(usize::MAX);
            let (mut lat, truth) = run(&exact, &store, &key, space, &queries)?;
            let (p50, p99) = (ms(pct(&mut lat, 50)), ms(pct(&mut lat, 99)));
            if keep.is_some() {
                let lines: Vec<String> = truth
                    .iter()
                    .map(|t| t.iter().map(Uuid::to_string).collect::<Vec<_>>().join(" "))
                    .collect();
                std::fs::write(&saved, format!("{p50}\t{p99}\n{}\n", lines.join("\n")))?;
            }
            (p50, p99, truth)
        };

        // The index as the server runs it: segments built, then a restart
        // that loads them.
        let built = VectorCache::default();
        let started = Instant::now();
        let shape = built.build_now(&store, &key, space)?;
        let build = started.elapsed();
        drop(built);
        let restarted = VectorCache::default();
        let started = Instant::now();
        restarted.shape(&store, &key, space)?;
        let restart = started.elapsed();
        let (mut lat, tops) = run(&restarted, &store, &key, space, &queries)?;
        let found: usize = tops
            .iter()
            .zip(&truth)
            .map(|(got, want)| got.iter().filter(|id| want.contains(id)).count())
            .sum();
        let recall = found as f64 / (QUERIES * 10) as f64;
        let built_points = shape.in_segments;
        // Floats + id + map entry; a segment point adds its graph links
        // (2M = 64 on layer 0, ~M more above) and its member record.
        let ram = (n * (DIMS * 4 + 16 + 48) + built_points * (64 * 4 + 32 * 4 + 20)) / n;
        let kept = |measured: String| if at.reused { "kept".into() } else { measured };
        println!(
            "| {:>9} | {:>9} | {:>12} | {:>12} | {:>10} | {:>12} | {:>12} | {:>9.3} | {:>8} | {:>8} B | {:>8} B |",
            n,
            kept(format!("{insert:.0}")),
            exact_p50,
            exact_p99,
            kept(if built_points > 0 {
                format!("{:.0}", built_points as f64 / build.as_secs_f64())
            } else {
                "-".into()
            }),
            ms(pct(&mut lat, 50)),
            ms(pct(&mut lat, 99)),
            recall,
            format!("{:.2} s", restart.as_secs_f64()),
            ram,
            store.used_bytes()? / n as u64
        );
        eprintln!("  {n}: {shape:?}, build {:.1} s", build.as_secs_f64());
        store.close();
    }
    println!(
        "\nexact = brute force over every vector (the ground truth); index = the segments plus the exact delta, after a restart that loads the sealed segments.\nTargets (issue 5): recall@10 ≥ 0.95 with p99 ≤ 5 ms at 100k, ≤ 20 ms at 1M; restart at 1M ≤ 10 s."
    );
    Ok(())
}
