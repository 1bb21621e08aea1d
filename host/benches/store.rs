//! Store benchmark: `cargo xtask bench store [--backend postgres
//! [--standbys N]]`. Service-level (the same path REST handlers take,
//! minus HTTP), real LMDB with durable commits — or a real PostgreSQL 15
//! primary on loopback (durable commits; with `--standbys N`, N streaming
//! standbys and commits waiting for one) — real sealing, every write
//! decided by the real `policy-standard` plugin (as staged by `cargo xtask
//! plugins`); redaction off so the numbers are the store's. With
//! PostgreSQL also two hosts on the one database (two services in this
//! process, each following the other's changes and running its indexer, as
//! two `memhost serve` do): recall through each, and how long a memory
//! stored through one takes to be found by meaning through the other.
//! Prints a table; asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::pct;

use memhost::auth::Principal;
use memhost::crypto::MasterKey;
use memhost::plugins::{PluginRegistry, PluginSettings};
use memhost::runtime::{Runtime, RuntimeConfig};
use memhost::service::{ListQuery, NamespaceSettings, NewMemory, RedactionMode, Service};
use memhost::store::keyring::Keyring;
#[cfg(feature = "testing")]
use memhost::store::testing::Cluster;
use memhost::store::{Store, StoreOptions};

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn content(i: usize) -> String {
    // ~1 KiB of text, unique per i.
    format!(
        "memory {i}: {}",
        "the quick brown fox jumps over the lazy dog. ".repeat(22)
    )
}

/// A new store in `dir` and the service over it, every write decided by
/// the staged `policy-standard` plugin.
fn fresh(dir: &std::path::Path) -> anyhow::Result<(Store, Service, Arc<PluginRegistry>)> {
    host(dir, &StoreOptions::default(), &MasterKey::generate())
}

/// A service over the store `options` name (LMDB in `dir`, or a shared
/// database) with master key `master`, serving the staged
/// `policy-standard` and `embed-hashing` plugins.
fn host(
    dir: &std::path::Path,
    options: &StoreOptions,
    master: &MasterKey,
) -> anyhow::Result<(Store, Service, Arc<PluginRegistry>)> {
    let store = Store::open(&dir.join("db"), options)?;
    let keyring = Arc::new(Keyring::open(
        &store,
        MasterKey::parse(&master.export()).map_err(|e| anyhow::anyhow!("{e}"))?,
    )?);
    let runtime = Runtime::new(&RuntimeConfig::default())?;
    let plugins = Arc::new(PluginRegistry::new(runtime, PluginSettings::default())?);
    let staged = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins");
    plugins
        .apply(vec![
            staged.join("policy-standard"),
            staged.join("embed-hashing"),
        ])
        .map_err(|e| anyhow::anyhow!("{}: run `cargo xtask plugins` first", e.summary))?;
    let service = Service::new(store.clone(), keyring, plugins.clone())?;
    Ok((store, service, plugins))
}

fn main() -> anyhow::Result<()> {
    // `cargo xtask bench store disk [N]`: only where the bytes go (the
    // corpus stored into N namespaces, as N teams would).
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "disk") {
        let copies = args.get(at + 1).and_then(|n| n.parse().ok()).unwrap_or(1);
        return disk(copies);
    }
    let dir = tempfile::tempdir()?;
    let postgres = common::flag(&args, "--backend").is_some_and(|b| b == "postgres");
    #[cfg(feature = "testing")]
    let cluster = postgres.then(|| {
        Cluster::with_standbys(
            common::flag(&args, "--standbys")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        )
    });
    #[cfg(not(feature = "testing"))]
    anyhow::ensure!(
        !postgres,
        "--backend postgres needs the `testing` feature: run `cargo xtask bench store --backend postgres`"
    );
    let master = MasterKey::generate();
    #[cfg(feature = "testing")]
    let options = cluster
        .as_ref()
        .map_or_else(StoreOptions::default, Cluster::options);
    #[cfg(not(feature = "testing"))]
    let options = StoreOptions::default();
    let (store, service, plugins) = host(dir.path(), &options, &master)?;
    // The writer is a key-holding agent, as over the API (every store also
    // appends its audit entry in the same transaction).
    let actor = Principal::operator();
    service.create_namespace(
        &actor,
        "bench",
        NamespaceSettings {
            redaction: RedactionMode::Off,
            ..NamespaceSettings::default()
        },
    )?;

    let command = args
        .iter()
        .skip(1)
        .filter(|a| *a != "--bench")
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    println!("memhost store benchmark (command: cargo xtask bench store {command})");
    match store.shared_label() {
        Some(_) => println!(
            "PostgreSQL 15 on loopback (durable commits{}), sealed rows, ~1 KiB memories, redaction off\n",
            match common::flag(&args, "--standbys").as_deref() {
                Some(n) if n != "0" => format!(", each waiting for one of {n} streaming standbys"),
                _ => String::new(),
            }
        ),
        None => println!("durable LMDB commits, sealed rows, ~1 KiB memories, redaction off\n"),
    }
    println!("| {:<44} | {:>12} | {:>12} |", "what", "p50 / rate", "p99");
    println!("|{:-<46}|{:-<14}|{:-<14}|", "", "", "");

    // Single client latency.
    let mut samples = Vec::new();
    let mut ids = Vec::new();
    for next in 0..1000 {
        let t = Instant::now();
        let stored = service.store(
            &actor,
            "bench",
            NewMemory {
                content: content(next),
                ..NewMemory::default()
            },
        )?;
        samples.push(t.elapsed());
        ids.push(stored.memory.id);
    }
    let (p50, p99) = (pct(&mut samples, 50), pct(&mut samples, 99));
    println!(
        "| {:<44} | {:>12} | {:>12} |",
        "store, 1 client (latency)",
        us(p50),
        us(p99)
    );

    // Throughput with N concurrent clients.
    for clients in [1usize, 8, 64] {
        let per_client = 4000 / clients;
        let start = Instant::now();
        let commits_before = store.commits();
        std::thread::scope(|s| {
            for c in 0..clients {
                let service = &service;
                let actor = &actor;
                s.spawn(move || {
                    for i in 0..per_client {
                        let text = content(1_000_000 * (clients + 1) + c * per_client + i);
                        let _ = service.store(
                            actor,
                            "bench",
                            NewMemory {
                                content: text,
                                ..NewMemory::default()
                            },
                        );
                    }
                });
            }
        });
        let total = per_client * clients;
        let secs = start.elapsed().as_secs_f64();
        let commits = store.commits() - commits_before;
        println!(
            "| {:<44} | {:>12} | {:>12} |",
            format!(
                "store throughput, {clients} clients ({:.0} writes/commit)",
                total as f64 / commits.max(1) as f64
            ),
            format!("{:.0}/s", total as f64 / secs),
            ""
        );
    }

    let mut samples = Vec::new();
    for (i, id) in ids.iter().enumerate().take(1000) {
        let t = Instant::now();
        let m = service.get(&actor, "bench", id)?;
        samples.push(t.elapsed());
        assert_eq!(m.content, content(i));
    }
    println!(
        "| {:<44} | {:>12} | {:>12} |",
        "get (latency)",
        us(pct(&mut samples, 50)),
        us(pct(&mut samples, 99))
    );

    let mut samples = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        let page = service.list(
            &actor,
            "bench",
            &ListQuery {
                limit: Some(50),
                ..ListQuery::default()
            },
        )?;
        samples.push(t.elapsed());
        assert_eq!(page.memories.len(), 50);
    }
    println!(
        "| {:<44} | {:>12} | {:>12} |",
        "list, page of 50 (latency)",
        us(pct(&mut samples, 50)),
        us(pct(&mut samples, 99))
    );

    // What every request pays before its handler: the key's row read,
    // unsealed, its secret hashed and compared.
    let (token, _) = service.create_key(
        &actor,
        memhost::service::NewKey {
            agent_id: "bench-agent".into(),
            agent_type: "bot".into(),
            grants: vec!["bench=writer".parse().map_err(anyhow::Error::msg)?],
            expires_at: None,
            rate: None,
        },
    )?;
    let mut samples = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        service.authenticate(&token)?;
        samples.push(t.elapsed());
    }
    println!(
        "| {:<44} | {:>12} | {:>12} |",
        "authenticate an API key (latency)",
        us(pct(&mut samples, 50)),
        us(pct(&mut samples, 99))
    );
    let started = Instant::now();
    let verified = service.verify_audit()?;
    println!(
        "| {:<44} | {:>12} | {:>12} |",
        format!("audit verify, {verified} entries"),
        format!("{:.0}/s", verified as f64 / started.elapsed().as_secs_f64()),
        ""
    );

    // Governance on the write path: what the policy plugin's `evaluate`
    // adds to every store (a fresh instance per call, fail-closed).
    let policy = plugins
        .snapshot()
        .policy("policy-standard")
        .ok_or_else(|| anyhow::anyhow!("policy-standard is not loaded"))?;
    let action = memhost::plugins::facade::Action {
        kind: memhost::plugins::facade::ActionKind::Store,
        actor: memhost::plugins::facade::Actor {
            agent_id: "bench-agent".into(),
            agent_type: "bot".into(),
        },
        namespace: "bench".into(),
        target_id: None,
        tags: vec!["a".into(), "b".into()],
        labels: vec![],
        policy_config: "allow".into(),
    };
    let mut samples = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        policy.evaluate(&action)?;
        samples.push(t.elapsed());
    }
    println!(
        "| {:<44} | {:>12} | {:>12} |",
        "policy evaluate `allow` (added to each write)",
        us(pct(&mut samples, 50)),
        us(pct(&mut samples, 99))
    );

    // The same call from 64 threads at once, as under the write burst above.
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..64 {
            let (policy, action) = (&policy, &action);
            s.spawn(move || {
                for _ in 0..100 {
                    let _ = policy.evaluate(action);
                }
            });
        }
    });
    println!(
        "| {:<44} | {:>12} | {:>12} |",
        "policy evaluate, 64 threads (calls/s)",
        format!("{:.0}/s", 6400.0 / start.elapsed().as_secs_f64()),
        ""
    );

    // From the deciding vote to the executed answer: tally, rebuild the
    // memory from its sealed payload, one transaction with the vote.
    service.create_namespace(
        &actor,
        "held",
        NamespaceSettings {
            redaction: RedactionMode::Off,
            policy: "single:reviewer".into(),
            ..NamespaceSettings::default()
        },
    )?;
    let reviewer = service
        .authenticate(
            &service
                .create_key(
                    &actor,
                    memhost::service::NewKey {
                        agent_id: "bench-reviewer".into(),
                        agent_type: "reviewer".into(),
                        grants: vec!["held=reader".parse().map_err(anyhow::Error::msg)?],
                        expires_at: None,
                        rate: None,
                    },
                )?
                .0,
        )?
        .principal();
    let mut samples = Vec::new();
    for i in 0..300 {
        let held = match service.store(
            &actor,
            "held",
            NewMemory {
                content: content(5_000_000 + i),
                ..NewMemory::default()
            },
        ) {
            Err(memhost::service::ServiceError::Held(item)) => item,
            other => anyhow::bail!("expected the store to be held, got {other:?}"),
        };
        let t = Instant::now();
        let view = service.vote(
            &reviewer,
            &held.id,
            memhost::service::approvals::NewVote {
                decision: memhost::service::approvals::VoteDecision::Approve,
                comment: None,
                payload_hash: held.payload_hash.clone(),
            },
        )?;
        samples.push(t.elapsed());
        anyhow::ensure!(view.item.state == memhost::governance::State::Executed);
    }
    println!(
        "| {:<44} | {:>12} | {:>12} |",
        "deciding vote -> executed answer (latency)",
        us(pct(&mut samples, 50)),
        us(pct(&mut samples, 99))
    );

    if store.is_shared() {
        two_hosts(dir.path(), &options, &master, (&store, &service))?;
    }
    println!(
        "\n(targets: store p99 ≤ 2 ms at 1 client, ≥ 5,000 stores/s at 64 clients, get p99 ≤ 1 ms, policy ≤ 50 µs added at p50)"
    );
    store.close();
    if store.is_shared() {
        return Ok(());
    }
    disk(1)
}

/// Host A (`a`) and a second host B on the same database, each following
/// the other's changes (woken by the database's notifications, as the
/// server is) and running its indexer: recall through each, and how long a
/// memory stored through A takes to be found by meaning through B.
fn two_hosts(
    dir: &std::path::Path,
    options: &StoreOptions,
    master: &MasterKey,
    (store_a, a): (&Store, &Service),
) -> anyhow::Result<()> {
    let (store_b, b, _plugins_b) = host(&dir.join("b"), options, master)?;
    let actor = Principal::operator();
    a.create_namespace(
        &actor,
        "meaning",
        NamespaceSettings {
            redaction: RedactionMode::Off,
            embedder: Some("embed-hashing".into()),
            ..NamespaceSettings::default()
        },
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    for (svc, store) in [(a.clone(), store_a.clone()), (b.clone(), store_b.clone())] {
        let mut changed = store
            .watch_changes()?
            .ok_or_else(|| anyhow::anyhow!("a shared store has a change sequence"))?;
        svc.start_following()?;
        runtime.spawn(async move {
            loop {
                let _ = tokio::time::timeout(Duration::from_secs(1), changed.changed()).await;
                let s = svc.clone();
                let _ = tokio::task::spawn_blocking(move || s.follow()).await;
            }
        });
    }
    for svc in [a, &b] {
        for worker in 0..2 {
            let svc = svc.clone();
            std::thread::spawn(move || svc.run_indexer(worker, 2));
        }
    }
    let query = |svc: &Service, text: &str| {
        svc.recall(
            &actor,
            "meaning",
            &memhost::service::recall::RecallQuery {
                query: text.into(),
                k: Some(5),
                mode: memhost::service::recall::RecallMode::Vector,
                ..Default::default()
            },
        )
    };
    // Stored through A; found by meaning through B.
    let (mut visible, mut after_indexed) = (Vec::new(), Vec::new());
    for i in 0..200 {
        let text = format!("ticket {i}: the harbour crane {i} needs a new hydraulic hose");
        let t = Instant::now();
        let id = a
            .store(
                &actor,
                "meaning",
                NewMemory {
                    content: text.clone(),
                    ..NewMemory::default()
                },
            )?
            .memory
            .id;
        while !a.indexed("meaning", &id)? {
            std::thread::sleep(Duration::from_micros(200));
        }
        let indexed = Instant::now();
        while !query(&b, &text)?.iter().any(|h| h.memory.id == id) {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(10),
                "never seen through B"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        visible.push(t.elapsed());
        after_indexed.push(indexed.elapsed());
    }
    println!(
        "| {:<44} | {:>12} | {:>12} |",
        "store on A → found by meaning on B",
        us(pct(&mut visible, 50)),
        us(pct(&mut visible, 99))
    );
    println!(
        "| {:<44} | {:>12} | {:>12} |",
        "  of which: indexed on A → followed by B",
        us(pct(&mut after_indexed, 50)),
        us(pct(&mut after_indexed, 99))
    );
    for (name, svc) in [("A", a), ("B", &b)] {
        let mut samples = Vec::new();
        for i in 0..500 {
            let t = Instant::now();
            query(svc, &format!("crane {} hydraulic hose", i % 200))?;
            samples.push(t.elapsed());
        }
        println!(
            "| {:<44} | {:>12} | {:>12} |",
            format!("recall by meaning through host {name} (latency)"),
            us(pct(&mut samples, 50)),
            us(pct(&mut samples, 99))
        );
    }
    // 8 clients on one host, then 4 on each (one machine: the same cores).
    for (label, split) in [("one host", false), ("two hosts", true)] {
        let start = Instant::now();
        std::thread::scope(|s| {
            for c in 0..8 {
                let svc = if split && c % 2 == 1 { &b } else { a };
                let query = &query;
                s.spawn(move || {
                    for i in 0..250 {
                        let _ = query(svc, &format!("crane {} hose", (c * 250 + i) % 200));
                    }
                });
            }
        });
        println!(
            "| {:<44} | {:>12} | {:>12} |",
            format!("recall, 8 clients through {label} (calls/s)"),
            format!("{:.0}/s", 2000.0 / start.elapsed().as_secs_f64()),
            ""
        );
    }
    store_b.close();
    runtime.shutdown_background();
    Ok(())
}

/// LongMemEval's chat turns (as `cargo xtask bench quality` fetches them),
/// distinct, joined or cut at a sentence into memories of about 1 KiB:
/// what agents store, with the vocabulary of real conversations.
fn chat_memories() -> anyhow::Result<Vec<String>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/datasets/longmemeval/longmemeval_oracle.json");
    let data: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).map_err(|e| {
            anyhow::anyhow!("{}: {e}; run `cargo xtask bench store`", path.display())
        })?)?;
    let mut seen = std::collections::HashSet::new();
    let mut memories = Vec::new();
    let mut current = String::new();
    for question in data.as_array().into_iter().flatten() {
        for session in question["haystack_sessions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for turn in session.as_array().into_iter().flatten() {
                let mut text = turn["content"].as_str().unwrap_or_default().trim();
                if text.is_empty() || !seen.insert(text.to_string()) {
                    continue;
                }
                while text.len() > 1_200 {
                    let mut end = 1_024;
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    let cut = text[..end].rfind(". ").map_or(end, |i| i + 1);
                    memories.push(text[..cut].trim().to_string());
                    text = text[cut..].trim();
                }
                if !current.is_empty() {
                    current.push('\n');
                }
                current.push_str(text);
                if current.len() >= 900 {
                    memories.push(std::mem::take(&mut current));
                }
            }
        }
    }
    Ok(memories)
}

/// Bytes on disk per stored KiB, for real text: every chat memory stored
/// once into each of `copies` namespaces of a fresh store, then where the
/// file's bytes went.
fn disk(copies: usize) -> anyhow::Result<()> {
    let memories = chat_memories()?;
    let dir = tempfile::tempdir()?;
    let (store, service, _) = fresh(dir.path())?;
    let actor = Principal::operator();
    let namespaces: Vec<String> = (1..=copies).map(|n| format!("chat-{n}")).collect();
    for ns in &namespaces {
        service.create_namespace(
            &actor,
            ns,
            NamespaceSettings {
                redaction: RedactionMode::Off,
                ..NamespaceSettings::default()
            },
        )?;
    }
    let clients = 8;
    let started = Instant::now();
    for ns in &namespaces {
        std::thread::scope(|s| {
            for c in 0..clients {
                let (service, actor, memories) = (&service, &actor, &memories);
                s.spawn(move || {
                    for text in memories.iter().skip(c).step_by(clients) {
                        let _ = service.store(
                            actor,
                            ns,
                            NewMemory {
                                content: text.clone(),
                                ..NewMemory::default()
                            },
                        );
                    }
                });
            }
        });
    }
    let took = started.elapsed();
    let stored = (copies * memories.iter().map(String::len).sum::<usize>()) as f64 / 1024.0;
    let per_kib = |bytes: u64| bytes as f64 / 1024.0 / stored;
    let page = store.page_size()?;
    let file = store.used_bytes()?;
    let compacted_dir = tempfile::tempdir()?;
    store.copy_compacted(compacted_dir.path())?;
    let compacted = std::fs::metadata(compacted_dir.path().join("data.mdb"))?.len();
    println!(
        "\nbytes on disk: {} chat memories of LongMemEval's turns in {copies} namespace(s) (mean {:.0} bytes, {:.1} MiB of text), stored by {clients} clients in {:.1} s, no embedder\n",
        copies * memories.len(),
        stored * 1024.0 / (copies * memories.len()) as f64,
        stored / 1024.0,
        took.as_secs_f64()
    );
    println!("| table | rows | keys / stored KiB | values / stored KiB | pages / stored KiB |");
    println!("|---|---|---|---|---|");
    let (mut payload, mut pages) = (0u64, 0u64);
    for (name, f) in store.footprint()? {
        if f.rows == 0 {
            continue;
        }
        payload += f.key_bytes + f.value_bytes;
        pages += f.pages;
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} |",
            f.rows,
            per_kib(f.key_bytes),
            per_kib(f.value_bytes),
            per_kib(f.pages * page)
        );
    }
    println!(
        "| all tables | | {:.2} (keys + values) | | {:.2} |",
        per_kib(payload),
        per_kib(pages * page)
    );
    println!(
        "\nDB bytes per stored KiB of content: **{:.2}** in the file (free pages included), {:.2} compacted (`memhost backup` / `memhost compact`)",
        per_kib(file),
        per_kib(compacted)
    );
    store.close();
    Ok(())
}
