//! Store benchmark: `cargo xtask bench store`. Service-level (the same path
//! REST handlers take, minus HTTP), real LMDB with durable commits, real
//! sealing, every write decided by the real `policy-standard` plugin (as
//! staged by `cargo xtask plugins`); redaction off so the numbers are the
//! store's. Prints a table; asserts nothing.

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

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("db"), &StoreOptions::default())?;
    let keyring = Arc::new(Keyring::open(&store, MasterKey::generate())?);
    let runtime = Runtime::new(&RuntimeConfig::default())?;
    let plugins = Arc::new(PluginRegistry::new(runtime, PluginSettings::default())?);
    let staged =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/policy-standard");
    plugins
        .apply(vec![staged])
        .map_err(|e| anyhow::anyhow!("{}: run `cargo xtask plugins` first", e.summary))?;
    let service = Service::new(store.clone(), keyring, plugins.clone())?;
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
    let mut next = 0usize;

    println!("memhost store benchmark (command: cargo xtask bench store)");
    println!("durable LMDB commits, sealed rows, ~1 KiB memories, redaction off\n");
    println!("| {:<44} | {:>12} | {:>12} |", "what", "p50 / rate", "p99");
    println!("|{:-<46}|{:-<14}|{:-<14}|", "", "", "");

    // Single client latency.
    let mut samples = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..1000 {
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
        next += 1;
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

    let stored_kib = (next + 4000 * 3) as f64 * content(0).len() as f64 / 1024.0;
    println!(
        "| {:<44} | {:>12} | {:>12} |",
        "DB bytes per stored KiB of content",
        format!("{:.2}", store.used_bytes()? as f64 / 1024.0 / stored_kib),
        ""
    );
    println!(
        "\n(targets: store p99 ≤ 2 ms at 1 client, ≥ 5,000 stores/s at 64 clients, get p99 ≤ 1 ms, policy ≤ 50 µs added at p50)"
    );
    // Where the bytes go: what each table stores (keys + values), per
    // stored KiB; the rest of the file is LMDB's pages, nodes and free space.
    println!("\n| table | rows | key bytes / stored KiB | value bytes / stored KiB |");
    println!("|---|---|---|---|");
    let mut payload = 0u64;
    for (name, f) in store.footprint()? {
        if f.rows == 0 {
            continue;
        }
        payload += f.key_bytes + f.value_bytes;
        println!(
            "| {name} | {} | {:.2} | {:.2} |",
            f.rows,
            f.key_bytes as f64 / 1024.0 / stored_kib,
            f.value_bytes as f64 / 1024.0 / stored_kib
        );
    }
    println!(
        "| all tables | | {:.2} (keys + values) | LMDB overhead and free pages: {:.2} |",
        payload as f64 / 1024.0 / stored_kib,
        (store.used_bytes()? as f64 - payload as f64) / 1024.0 / stored_kib
    );
    store.close();
    Ok(())
}
