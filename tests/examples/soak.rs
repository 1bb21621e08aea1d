//! `cargo xtask soak [--seconds N] [--clients N] [--kill-every S]`: many
//! clients mixing store, recall, get, update, forget and list over REST and
//! MCP against the real server, which is killed with SIGKILL and started
//! again every few seconds. Afterwards every acknowledged write must read
//! back as acknowledged; a 5xx other than 503 is a failure. Prints a table:
//! requests, answers by status, acknowledged writes lost, p99 per route and
//! the server's peak RSS.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What a client knows about one of its memories.
#[derive(Debug, Clone)]
enum Known {
    /// Acknowledged with this content.
    Is(String),
    /// Forgotten, acknowledged.
    Gone,
    /// A write whose answer never came (the server died): either state.
    Either(Option<String>, Option<String>),
}

#[derive(Default)]
struct Tally {
    /// (route, status) → count; status 0 = no answer (server down).
    answers: BTreeMap<(String, u16), u64>,
    /// route → latencies of answered requests, µs.
    latencies: HashMap<String, Vec<u64>>,
}

struct Soak {
    addr: String,
    key: String,
    agent: ureq::Agent,
    tally: Mutex<Tally>,
}

impl Soak {
    /// One REST request; `None` when no answer came.
    fn call(
        &self,
        route: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        let req = self
            .agent
            .request(method, &format!("http://{}{path}", self.addr));
        self.send(route, req, body)
    }

    /// One MCP tool call; the answer is the JSON-RPC `result`.
    fn mcp(&self, tool: &str, arguments: Value) -> Option<(u16, Value)> {
        let body = json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {
                "name": tool, "arguments": arguments,
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {},
                },
            },
        });
        let req = self
            .agent
            .post(&format!("http://{}/mcp", self.addr))
            .set("mcp-method", "tools/call")
            .set("mcp-name", tool);
        self.send(&format!("mcp {tool}"), req, Some(&body))
            .map(|(status, v)| (status, v["result"].clone()))
    }

    /// Send `req` with the key (and `body`), timed and counted.
    fn send(&self, route: &str, req: ureq::Request, body: Option<&Value>) -> Option<(u16, Value)> {
        let req = req.set("authorization", &format!("Bearer {}", self.key));
        let started = Instant::now();
        let result = match body {
            Some(b) => req
                .set("content-type", "application/json")
                .set("accept", "application/json, text/event-stream")
                .set("mcp-protocol-version", "2026-07-28")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        let (status, text) = match result {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(_) => (0, String::new()),
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if status == 0 {
            // The server is down: do not spin while it restarts.
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut tally = self.tally.lock().unwrap();
        *tally
            .answers
            .entry((route.to_string(), status))
            .or_default() += 1;
        if status == 0 {
            return None;
        }
        tally
            .latencies
            .entry(route.to_string())
            .or_default()
            .push(micros);
        Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn memhost(args: &[&str]) -> String {
    let out = Command::new(root().join("target/debug/memhost"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "memhost {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn start(data: &Path, config: &Path, addr: &str) -> Child {
    let mut child = Command::new(root().join("target/debug/memhost"))
        .args(["serve", "--listen", addr, "--data"])
        .arg(data)
        .arg("--config")
        .arg(config)
        .env("MEMHOST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ureq::get(&format!("http://{addr}/health")).call().is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server did not come up at {addr}");
}

/// Peak resident memory of process `pid`, in KiB.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds = arg(&args, "--seconds", 60);
    let clients = arg(&args, "--clients", 64);
    let kill_every = arg(&args, "--kill-every", 15);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let plugins = tmp.path().join("plugins");
    for id in ["policy-standard", "redact-pii"] {
        let to = plugins.join(id);
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(root().join("target/plugins").join(id)).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    }
    let config = tmp.path().join("memhost.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins]\ndir = \"{}\"\nwatch = false\n[limits]\nrequests_per_second = 100000\nburst = 100000\nconcurrent_requests = 256\n",
            plugins.display()
        ),
    )
    .unwrap();
    let d = data.to_str().unwrap();
    memhost(&["init", "--data", d]);
    let key = memhost(&[
        "keys",
        "create",
        "--agent",
        "soak",
        "--agent-type",
        "human",
        "--role",
        "*=admin",
        "--data",
        d,
    ]);
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut server = start(&data, &config, &addr);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let soak = Arc::new(Soak {
        addr: addr.clone(),
        key,
        agent,
        tally: Mutex::default(),
    });
    let created = soak.call(
        "create namespace",
        "POST",
        "/v1/namespaces",
        Some(&json!({"name": "soak", "embedder": "none"})),
    );
    assert_eq!(
        created.map(|c| c.0),
        Some(201),
        "cannot create the namespace"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (soak, stop, ops) = (soak.clone(), stop.clone(), ops.clone());
            std::thread::spawn(move || {
                let mut mine: HashMap<String, Known> = HashMap::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    ops.fetch_add(1, Ordering::Relaxed);
                    // Only memories whose state is known are changed further.
                    let settled: Vec<&String> = mine
                        .iter()
                        .filter(|(_, k)| matches!(k, Known::Is(_)))
                        .map(|(id, _)| id)
                        .collect();
                    let some = settled
                        .get((n as usize * 7) % settled.len().max(1))
                        .map(|id| (*id).clone());
                    match (n % 20, some) {
                        (0..=7, _) | (_, None) => {
                            let content = format!(
                                "client {c} note {n}: the heron counted {} fish",
                                n * 31 % 97
                            );
                            let answer = if n % 10 == 3 {
                                // A stored memory is a tool result, not a 201.
                                soak.mcp(
                                    "memory_store",
                                    json!({"namespace": "soak", "content": content}),
                                )
                                .map(|(s, r)| {
                                    let ok = s == 200 && r["isError"] != true;
                                    (if ok { 201 } else { s }, r["structuredContent"].clone())
                                })
                            } else {
                                soak.call(
                                    "store",
                                    "POST",
                                    "/v1/namespaces/soak/memories",
                                    Some(&json!({"content": content})),
                                )
                            };
                            if let Some((201, m)) = answer
                                && let Some(id) = m["id"].as_str()
                            {
                                mine.insert(id.to_string(), Known::Is(content));
                            }
                        }
                        (8..=10, _) => {
                            let q = json!({"query": "heron fish", "mode": "lexical", "k": 5});
                            if n.is_multiple_of(2) {
                                soak.call("recall", "POST", "/v1/namespaces/soak/recall", Some(&q));
                            } else {
                                soak.mcp(
                                    "memory_recall",
                                    json!({"namespace": "soak", "query": "heron fish"}),
                                );
                            }
                        }
                        (11..=13, Some(id)) => {
                            soak.call(
                                "get",
                                "GET",
                                &format!("/v1/namespaces/soak/memories/{id}"),
                                None,
                            );
                        }
                        (14..=16, Some(id)) => {
                            let content = format!("client {c} note {n}: updated");
                            let before = mine.get(&id).cloned();
                            let path = format!("/v1/namespaces/soak/memories/{id}");
                            match soak.call(
                                "update",
                                "PATCH",
                                &path,
                                Some(&json!({"content": content})),
                            ) {
                                Some((200, _)) => {
                                    mine.insert(id, Known::Is(content));
                                }
                                None => {
                                    let old = match before {
                                        Some(Known::Is(old)) => Some(old),
                                        _ => None,
                                    };
                                    mine.insert(id, Known::Either(old, Some(content)));
                                }
                                _ => {}
                            }
                        }
                        (17, Some(id)) => {
                            let before = mine.get(&id).cloned();
                            match soak.call(
                                "forget",
                                "DELETE",
                                &format!("/v1/namespaces/soak/memories/{id}"),
                                None,
                            ) {
                                Some((204, _)) => {
                                    mine.insert(id, Known::Gone);
                                }
                                None => {
                                    let old = match before {
                                        Some(Known::Is(old)) => Some(old),
                                        _ => None,
                                    };
                                    mine.insert(id, Known::Either(old, None));
                                }
                                _ => {}
                            }
                        }
                        _ => {
                            soak.call("list", "GET", "/v1/namespaces/soak/memories?limit=20", None);
                        }
                    }
                }
                mine
            })
        })
        .collect();

    let started = Instant::now();
    let mut peak = 0u64;
    let mut kills = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(
            Duration::from_secs(kill_every.min(seconds))
                .min(Duration::from_secs(seconds).saturating_sub(started.elapsed())),
        );
        if started.elapsed() >= Duration::from_secs(seconds) {
            break;
        }
        peak = peak.max(peak_rss(server.id()));
        let _ = server.kill();
        let _ = server.wait();
        kills += 1;
        server = start(&data, &config, &addr);
    }
    stop.store(true, Ordering::Relaxed);
    let known: Vec<HashMap<String, Known>> =
        workers.into_iter().map(|w| w.join().unwrap()).collect();
    peak = peak.max(peak_rss(server.id()));

    // Every acknowledged write, as acknowledged.
    let mut checked = 0;
    let mut lost = Vec::new();
    for (id, k) in known.iter().flatten() {
        checked += 1;
        let got = soak.call(
            "verify",
            "GET",
            &format!("/v1/namespaces/soak/memories/{id}"),
            None,
        );
        let content = match &got {
            Some((200, m)) => Some(m["content"].as_str().unwrap_or("").to_string()),
            Some((404, _)) => None,
            other => {
                lost.push(format!("{id}: no answer to the check ({other:?})"));
                continue;
            }
        };
        let fine = match k {
            Known::Is(c) => content.as_deref() == Some(c.as_str()),
            Known::Gone => content.is_none(),
            Known::Either(a, b) => content == *a || content == *b,
        };
        if !fine {
            lost.push(format!("{id}: expected {k:?}, found {content:?}"));
        }
    }
    let _ = server.kill();
    let _ = server.wait();

    let tally = soak.tally.lock().unwrap();
    let total: u64 = tally.answers.values().sum();
    println!(
        "$ cargo xtask soak --seconds {seconds} --clients {clients} --kill-every {kill_every}"
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| requests | {total} |");
    println!("| server kills (SIGKILL) and restarts | {kills} |");
    println!("| acknowledged writes checked | {checked} |");
    println!("| acknowledged writes lost | {} |", lost.len());
    println!("| peak RSS of the server | {} MiB |", peak / 1024);
    println!();
    println!("| route | answers by status (0 = no answer: server down) | p99 |");
    println!("|---|---|---|");
    let mut routes: BTreeMap<&str, Vec<(u16, u64)>> = BTreeMap::new();
    for ((route, status), n) in &tally.answers {
        routes.entry(route).or_default().push((*status, *n));
    }
    let mut bad = Vec::new();
    for (route, statuses) in &routes {
        let mut lat = tally.latencies.get(*route).cloned().unwrap_or_default();
        lat.sort_unstable();
        let p99 = lat
            .get(lat.len().saturating_mul(99) / 100)
            .copied()
            .unwrap_or(0);
        let shown: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        println!(
            "| {route} | {} | {:.1} ms |",
            shown.join(", "),
            p99 as f64 / 1000.0
        );
        bad.extend(
            statuses
                .iter()
                .filter(|(s, _)| *s >= 500 && *s != 503)
                .map(|(s, n)| format!("{route}: {n} × {s}")),
        );
    }
    for l in &lost {
        eprintln!("lost: {l}");
    }
    if !lost.is_empty() || !bad.is_empty() {
        eprintln!(
            "soak failed: {} acknowledged writes lost; server errors: {bad:?}",
            lost.len()
        );
        std::process::exit(1);
    }
}
