//! Several hosts, one PostgreSQL database: each host serves what the
//! others wrote — by words at once, by meaning once it has followed the
//! change sequence (measured here, not asserted beyond a generous bound);
//! forgets and a deleted namespace reach every host; every memory is
//! indexed once, the audit chain is one chain; a wrong master key is
//! refused before anything is read.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memhost::store::testing::Cluster;
use serde_json::{Value, json};

use crate::common::server::*;

/// A data directory for one more host of `url`'s database, with the master
/// key of `first` (every host of one database needs the same).
pub fn host_dir(tmp: &Path, name: &str, url: &str, first: Option<&Path>) -> (PathBuf, PathBuf) {
    host_dir_with(tmp, name, url, first, "")
}

/// [`host_dir`] with `extra` config.
fn host_dir_with(
    tmp: &Path,
    name: &str,
    url: &str,
    first: Option<&Path>,
    extra: &str,
) -> (PathBuf, PathBuf) {
    let data = tmp.join(name).join("data");
    std::fs::create_dir_all(&data).unwrap();
    if let Some(first) = first {
        std::fs::copy(first.join("master.key"), data.join("master.key")).unwrap();
    }
    let (code, _, err) = memhost(&["init", "--data", data.to_str().unwrap(), "--store", url]);
    assert_eq!(code, 0, "{err}");
    // The tests read back every write at once: no per-key rate in the way.
    let config = plugins_config(
        &tmp.join(name),
        &["redact-pii", "embed-hashing"],
        &format!(
            "{extra}\n[limits]\nrequests_per_second = 100000.0\nburst = 100000\n{}",
            ""
        ),
    );
    (data, config)
}

/// Two hosts of `pg`'s database with one namespace, `ns`, searched by
/// meaning with embed-hashing.
struct Pair {
    _tmp: tempfile::TempDir,
    a_data: PathBuf,
    b_data: PathBuf,
    a: Server,
    b: Server,
    ca: Client,
    cb: Client,
}

impl Pair {
    fn start(pg: &Cluster, ns: &str) -> Pair {
        let tmp = tempfile::tempdir().unwrap();
        let (a_data, a_config) = host_dir(tmp.path(), "a", &pg.url(), None);
        let (b_data, b_config) = host_dir(tmp.path(), "b", &pg.url(), Some(&a_data));
        let a = Server::start(&a_data, &a_config);
        let b = Server::start(&b_data, &b_config);
        let (ca, cb) = (a.client(), b.client());
        let body = json!({ "name": ns, "redaction": "off", "embedder": "embed-hashing" });
        let (status, answer) = curl(&ca, "POST", "/v1/namespaces", Some(&body.to_string()));
        assert_eq!(status, 201, "{answer}");
        Pair {
            _tmp: tmp,
            a_data,
            b_data,
            a,
            b,
            ca,
            cb,
        }
    }
}

fn recall(c: &Client, ns: &str, query: &str, mode: &str) -> Vec<String> {
    let (status, answer) = curl(
        c,
        "POST",
        &format!("/v1/namespaces/{ns}/recall"),
        Some(&json!({ "query": query, "mode": mode, "k": 5 }).to_string()),
    );
    assert_eq!(status, 200, "{answer}");
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["content"].as_str().unwrap().to_string())
        .collect()
}

/// `c`'s top ten for `query` by meaning: (id, score).
fn scored(c: &Client, query: &str) -> Vec<(String, f64)> {
    let (status, answer) = curl(
        c,
        "POST",
        "/v1/namespaces/ops/recall",
        Some(&json!({ "query": query, "mode": "vector", "k": 10 }).to_string()),
    );
    assert_eq!(status, 200, "{answer}");
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Ask `check` every `every` until it answers `Ok`, for at most `within`;
/// how long that took. Past `within`, the test fails with its last answer.
fn eventually(
    within: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> Duration {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return start.elapsed(),
            Err(e) if start.elapsed() >= within => panic!("not within {within:?}: {e}"),
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// How long until `c` recalls `text` by meaning (at most 10 s).
fn until_found(c: &Client, ns: &str, text: &str) -> Duration {
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(5),
        || match recall(c, ns, text, "vector").iter().any(|t| t == text) {
            true => Ok(()),
            false => Err(format!(
                "{text:?} not found by meaning through the other host"
            )),
        },
    )
}

fn store(c: &Client, ns: &str, text: &str, wait: bool) -> Value {
    let q = if wait { "?wait=indexed" } else { "" };
    let (status, m) = curl(
        c,
        "POST",
        &format!("/v1/namespaces/{ns}/memories{q}"),
        Some(&json!({ "content": text }).to_string()),
    );
    assert_eq!(status, 201, "{m}");
    m
}

#[test]
fn two_hosts_serve_each_others_writes_and_index_each_memory_once() {
    let pg = Cluster::start();
    let Pair {
        b_data,
        a,
        b,
        ca,
        cb,
        _tmp,
        ..
    } = Pair::start(&pg, "team");

    // A namespace made on A is there on B, and words find at once what
    // either stored.
    let one = store(
        &ca,
        "team",
        "the quarterly budget review moved to Tuesday",
        false,
    );
    let two = store(
        &cb,
        "team",
        "the office plants need water on Fridays",
        false,
    );
    assert_eq!(recall(&cb, "team", "budget review", "lexical").len(), 1);
    assert_eq!(recall(&ca, "team", "office plants", "lexical").len(), 1);

    // Meaning: stored and indexed through one host, found through the
    // other once it has followed.
    let mut delays = Vec::new();
    for i in 0..10 {
        let text = format!("meeting number {i} about the harbour crane contract");
        let (from, to) = if i % 2 == 0 { (&ca, &cb) } else { (&cb, &ca) };
        store(from, "team", &text, true);
        delays.push(until_found(to, "team", &text));
    }
    delays.sort();
    eprintln!(
        "cross-host visibility by meaning after ?wait=indexed: median {:?}, max {:?}",
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
    // ?wait=indexed on one host: that host finds it by meaning at once,
    // whichever host's indexer embedded it.
    for i in 0..6 {
        let text = format!("note {i} on the lighthouse keeper rota");
        let c = if i % 2 == 0 { &ca } else { &cb };
        store(c, "team", &text, true);
        assert!(
            recall(c, "team", &text, "vector").contains(&text),
            "{text:?} not found at once on the host that waited"
        );
    }

    // Both hosts write at once: every write lands, each memory indexed once.
    let writers: Vec<_> = [ca.clone(), cb.clone()]
        .into_iter()
        .enumerate()
        .map(|(h, c)| {
            std::thread::spawn(move || {
                for i in 0..25 {
                    store(
                        &c,
                        "team",
                        &format!("host {h} line {i} of the ledger"),
                        false,
                    );
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    let text = "the last ledger line, waited for";
    store(&ca, "team", text, true);
    until_found(&cb, "team", text);
    // Every job done: no job rows left, one vector per memory.
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || match pg.psql(
            0,
            "SELECT count(*) FROM memhost_rows WHERE tbl = 11 AND k LIKE 'idx/%'",
        ) {
            jobs if jobs == "0" => Ok(()),
            jobs => Err(format!("{jobs} indexing jobs left")),
        },
    );
    let vectors: u64 = pg
        .psql(0, "SELECT count(*) FROM memhost_rows WHERE tbl = 7")
        .parse()
        .unwrap();
    assert_eq!(vectors, 2 + 10 + 6 + 50 + 1);
    let stores = audit_entries(&ca)
        .iter()
        .filter(|e| e["action"] == "memory.store")
        .count();
    assert_eq!(stores, 69, "one audit entry per memory stored");

    // Forgotten through B: gone from A's answers, by words and meaning.
    let id = one["id"].as_str().unwrap();
    let (status, _) = curl(
        &cb,
        "DELETE",
        &format!("/v1/namespaces/team/memories/{id}"),
        None,
    );
    assert_eq!(status, 204);
    eventually(Duration::from_secs(10), Duration::from_millis(20), || {
        let hits = recall(
            &ca,
            "team",
            "the quarterly budget review moved to Tuesday",
            "hybrid",
        );
        match hits.iter().any(|t| t.contains("quarterly budget")) {
            false => Ok(()),
            true => Err("a forgotten memory is still recalled through the other host".into()),
        }
    });
    let (status, _) = curl(
        &ca,
        "GET",
        &format!("/v1/namespaces/team/memories/{id}"),
        None,
    );
    assert_eq!(status, 404);

    // One audit chain, whichever host wrote.
    let (code, out, err) = memhost(&["audit", "verify", "--data", b_data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("intact") || err.contains("intact"),
        "{out}{err}"
    );

    // A backup of the shared store is the usual file: it restores as an
    // LMDB data directory (one machine again), audit chain and all.
    let backup = b_data.parent().unwrap().join("shared.backup");
    let (code, _, err) = memhost(&[
        "backup",
        "--data",
        b_data.to_str().unwrap(),
        "--out",
        backup.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let restored = b_data.parent().unwrap().join("restored");
    let (code, _, err) = memhost(&[
        "restore",
        backup.to_str().unwrap(),
        "--data",
        restored.to_str().unwrap(),
        "--master-key",
        b_data.join("master.key").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("audit chain intact"), "{err}");
    assert!(restored.join("db").is_dir() && !restored.join("store.url").exists());
    // Not over a shared store's directory, nor compacting one: refused,
    // saying where its rows are.
    let (code, _, err) = memhost(&[
        "restore",
        backup.to_str().unwrap(),
        "--data",
        b_data.to_str().unwrap(),
        "--force",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("keeps its rows in PostgreSQL"), "{err}");
    let (code, _, err) = memhost(&["compact", "--data", b_data.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("keeps its rows in PostgreSQL"), "{err}");
    let two_id = two["id"].as_str().unwrap();
    let alone = Server::start(&restored, &b_data.parent().unwrap().join("memhost.toml"));
    let (status, m) = curl(
        &alone.client(),
        "GET",
        &format!("/v1/namespaces/team/memories/{two_id}"),
        None,
    );
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["content"], "the office plants need water on Fridays");
    drop(alone);

    // A namespace deleted through A is gone on B.
    let (status, _) = curl(&ca, "DELETE", "/v1/namespaces/team", None);
    assert_eq!(status, 204);
    let (status, answer) = curl(
        &cb,
        "POST",
        "/v1/namespaces/team/recall",
        Some(r#"{"query":"harbour crane"}"#),
    );
    assert_eq!(status, 404, "{answer}");

    // PostgreSQL holds ids and sealed bytes: no word of any memory.
    let plain: u64 = pg
        .psql(
            0,
            "SELECT count(*) FROM memhost_rows WHERE position('ledger'::bytea in v) > 0 \
             OR position('ledger'::bytea in k) > 0",
        )
        .parse()
        .unwrap();
    assert_eq!(plain, 0);
    drop((a, b));
}

#[test]
fn a_host_with_another_master_key_is_refused_before_it_reads_anything() {
    let pg = Cluster::start();
    let tmp = tempfile::tempdir().unwrap();
    let (a_data, _) = host_dir(tmp.path(), "a", &pg.url(), None);
    let rows_before = pg.psql(0, "SELECT count(*) FROM memhost_rows");
    let other = tmp.path().join("stranger");
    let (code, _, err) = memhost(&[
        "init",
        "--data",
        other.to_str().unwrap(),
        "--store",
        &pg.url(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("expects master key"), "{err}");
    assert!(
        !other.join("store.url").exists(),
        "a refused init leaves no store.url"
    );
    assert_eq!(pg.psql(0, "SELECT count(*) FROM memhost_rows"), rows_before);
    // The right key: accepted.
    host_dir(tmp.path(), "b", &pg.url(), Some(&a_data));
}

/// Writer threads, each with what it got acknowledged (id, text) and how
/// many writes were refused.
type Writers = Vec<std::thread::JoinHandle<(Vec<(String, String)>, usize)>>;

/// Writers through `clients` until `stop`: each thread stores numbered
/// memories and keeps the id and text of every one answered 2xx.
fn load(
    phase: &'static str,
    clients: &[Client],
    threads: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Writers {
    let mut handles = Vec::new();
    for (h, c) in clients.iter().enumerate() {
        for t in 0..threads {
            let (c, stop) = (c.clone(), stop.clone());
            handles.push(std::thread::spawn(move || {
                let (mut acked, mut refused) = (Vec::new(), 0);
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let text =
                        format!("{phase}: host {h} writer {t} entry {i} about the ferry timetable");
                    let (status, m) = curl(
                        &c,
                        "POST",
                        "/v1/namespaces/ops/memories",
                        Some(&json!({ "content": text }).to_string()),
                    );
                    if status == 201 {
                        acked.push((m["id"].as_str().unwrap().to_string(), text));
                    } else {
                        // Never a server error: at worst "unavailable, retry".
                        assert!(
                            status == 503 || status == 0,
                            "{status} during the failover: {m}"
                        );
                        refused += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    i += 1;
                }
                (acked, refused)
            }));
        }
    }
    handles
}

fn stop_load(
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    handles: Writers,
) -> (Vec<(String, String)>, usize) {
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut acked = Vec::new();
    let mut refused = 0;
    for h in handles {
        let (a, r) = h.join().unwrap();
        acked.extend(a);
        refused += r;
    }
    (acked, refused)
}

/// Every acknowledged memory reads back, with its text, through `c`.
fn all_there(c: &Client, acked: &[(String, String)]) {
    for (id, text) in acked {
        let (status, m) = curl(c, "GET", &format!("/v1/namespaces/ops/memories/{id}"), None);
        assert_eq!(status, 200, "acknowledged memory {id} lost: {m}");
        assert_eq!(m["content"], text.as_str());
    }
}

#[test]
fn a_killed_primary_is_replaced_by_a_standby_and_no_acknowledged_write_is_lost() {
    // A primary, two streaming standbys, commits waiting for either.
    let pg = Cluster::with_standbys(2);
    assert_eq!(
        pg.psql(
            0,
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'"
        ),
        "2"
    );
    let Pair {
        a_data,
        b_data,
        a,
        b,
        ca,
        cb,
        _tmp,
    } = Pair::start(&pg, "ops");

    // Load through both hosts; the primary is killed under it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles = load("failover", &[ca.clone(), cb.clone()], 3, &stop);
    std::thread::sleep(Duration::from_millis(1500));
    pg.kill(0);
    // The most advanced standby has every acknowledged commit (each was
    // flushed on one of them): it is promoted, the other follows it.
    std::thread::sleep(Duration::from_millis(500));
    let lsn = |i: usize| {
        pg.psql(
            i,
            "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint",
        )
        .parse::<i64>()
        .unwrap()
    };
    let (new, other) = if lsn(1) >= lsn(2) { (1, 2) } else { (2, 1) };
    let killed_at = Instant::now();
    pg.promote(new, &[other]);
    // Writes go on through the new primary, on both hosts.
    let resumed = |c: &Client| {
        eventually(Duration::from_secs(60), Duration::from_millis(100), || {
            let text = format!("written after the failover, try {:?}", Instant::now());
            let (status, body) = curl(
                c,
                "POST",
                "/v1/namespaces/ops/memories",
                Some(&json!({ "content": text }).to_string()),
            );
            match status {
                201 => Ok(()),
                _ => Err(format!("no write: {status} {body}")),
            }
        })
    };
    resumed(&ca);
    resumed(&cb);
    eprintln!(
        "writes resumed {:?} after the promotion began",
        killed_at.elapsed()
    );
    std::thread::sleep(Duration::from_millis(1000));
    let (acked, refused) = stop_load(&stop, handles);
    eprintln!(
        "{} writes acknowledged, {refused} refused during the failover",
        acked.len()
    );
    assert!(acked.len() > 20, "too little load: {}", acked.len());

    // Nothing acknowledged is lost, through either host; one audit chain.
    all_there(&ca, &acked);
    all_there(&cb, &acked);
    let (code, out, err) = memhost(&["audit", "verify", "--data", a_data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let stores = audit_entries(&ca)
        .iter()
        .filter(|e| e["action"] == "memory.store")
        .count();
    assert!(
        stores >= acked.len() + 2,
        "{stores} store entries for {} acknowledged",
        acked.len()
    );
    // Recall agrees through both hosts once indexing and following settle.
    let text = "the final ferry entry, waited for";
    store(&ca, "ops", text, true);
    until_found(&cb, "ops", text);
    // Same vectors held: the same scores, the same memory wherever a score
    // is not shared (near-identical texts tie, and ties may come in any
    // order).
    for query in [
        "ferry timetable entry",
        "host 1 writer 2 entry 7",
        "host 0 writer 0 entry 1",
    ] {
        eventually(Duration::from_secs(20), Duration::from_millis(200), || {
            let (x, y) = (scored(&ca, query), scored(&cb, query));
            let tied = |score: f64| x.iter().filter(|r| (r.1 - score).abs() < 1e-5).count() > 1;
            let same = x.len() == y.len()
                && x.iter()
                    .zip(&y)
                    .all(|(p, q)| (p.1 - q.1).abs() < 1e-5 && (p.0 == q.0 || tied(p.1)));
            match same {
                true => Ok(()),
                false => Err(format!(
                    "the hosts answer {query:?} differently: {x:?} / {y:?}"
                )),
            }
        });
    }

    // A host killed mid-write: the other writes on (the lock it held goes
    // with its connections), and what each acknowledged is there.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles = load("host killed", &[ca.clone(), cb.clone()], 2, &stop);
    std::thread::sleep(Duration::from_millis(800));
    drop(a);
    let after = resumed(&cb);
    eprintln!("host B wrote {after:?} after host A was killed");
    std::thread::sleep(Duration::from_millis(500));
    let (acked, _) = stop_load(&stop, handles);
    all_there(&cb, &acked);
    let (code, out, err) = memhost(&["audit", "verify", "--data", b_data.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    drop(b);
}

#[test]
fn guessing_through_several_hosts_is_limited_as_through_one() {
    use crate::common::people::{create_user, sign_in_post};
    let pg = Cluster::start();
    let tmp = tempfile::tempdir().unwrap();
    // Each part from its own address (as a proxy in front would say).
    let extra =
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n[oauth]\nregistrations_per_hour = 4\n";
    let (a_data, a_config) = host_dir_with(tmp.path(), "a", &pg.url(), None, extra);
    let (b_data, b_config) = host_dir_with(tmp.path(), "b", &pg.url(), Some(&a_data), extra);
    let a = Server::start(&a_data, &a_config);
    let b = Server::start(&b_data, &b_config);
    let hosts = [a.addr.as_str(), b.addr.as_str()];

    // A person's password: 5 wrong guesses in all, whichever host took
    // them; then both refuse, the right password too.
    let password = "the right password";
    create_user(&a_data, "dave", &["*=reader"], Some(password));
    for (i, host) in hosts.iter().cycle().take(5).enumerate() {
        assert_eq!(
            sign_in_post(host, "dave", "guess one two three").status,
            401,
            "guess {i}"
        );
    }
    for host in hosts {
        let r = sign_in_post(host, "dave", "guess one two three");
        assert_eq!(r.status, 429, "{}", r.headers);
        assert!(r.header("retry-after").is_some());
        assert_eq!(sign_in_post(host, "dave", password).status, 429);
    }

    // OAuth client registrations from one address: 4 an hour across hosts.
    let register = |host: &str| {
        let body = json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"});
        curl_raw(
            host,
            "POST",
            "/oauth/register",
            &["x-forwarded-for: 198.51.100.7"],
            Some(("application/json", &body.to_string())),
        )
        .0
    };
    let statuses: Vec<u16> = hosts.iter().cycle().take(6).map(|h| register(h)).collect();
    assert_eq!(statuses, [201, 201, 201, 201, 429, 429]);

    // Failed API keys from one address (10 a minute by default), counted
    // by both hosts together.
    let bad = Client::new(hosts[0], Some("mhk_0000000000000000_guess"));
    let statuses: Vec<u16> = (0..12)
        .map(|i| {
            let c = Client {
                addr: hosts[i % 2].to_string(),
                ..bad.clone()
            };
            curl_full(
                &c,
                "GET",
                "/v1/namespaces",
                None,
                &["x-forwarded-for: 203.0.113.9"],
            )
            .status
        })
        .collect();
    assert_eq!(&statuses[..10], &[401; 10], "{statuses:?}");
    assert_eq!(&statuses[10..], &[429; 2], "{statuses:?}");
    // A valid key is never refused for its address.
    let (status, _) = curl(&b.client(), "GET", "/v1/namespaces", None);
    assert_eq!(status, 200);
    // The shared buckets do not list who failed: no name, no address.
    let limits = |filter: &str| -> u64 {
        pg.psql(
            0,
            &format!(
                "SELECT count(*) FROM memhost_rows WHERE tbl = 2 AND k LIKE 'limit/%' {filter}"
            ),
        )
        .parse()
        .unwrap()
    };
    assert!(limits("") >= 3, "one bucket per limit and subject");
    let named = limits(
        "AND (position('dave'::bytea in k) > 0 OR position('198.51.100.7'::bytea in k) > 0 \
         OR position('203.0.113.9'::bytea in k) > 0)",
    );
    assert_eq!(named, 0);
}
