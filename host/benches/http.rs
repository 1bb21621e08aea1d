//! `cargo xtask bench http [sizes…] [--clients N] [--seconds S] [--embedder ID]`:
//! memhost as a user runs it — the release binary serving the shipped
//! plugins (redaction, entities, the default embedder), with auth on —
//! measured from outside, over HTTP, with keep-alive connections.
//!
//! For each size (default 10,000 and 100,000 memories, grown in one
//! namespace): how fast bulk writes are stored and become searchable by
//! meaning (the embedding queue drained), then hybrid recall (the default
//! mode: words and meaning, the question's embedding included) from one
//! client in turn (p50, p99) and from N clients at once (default 8, each
//! its own key, as N agents would be) for S seconds (default 20):
//! requests per second and latency. The per-key rate limit is raised so
//! the server, not the limiter, is measured.
//!
//! Memories are 3–6 sentences (~100 tokens) drawn with a fixed seed from
//! SQuAD v1.1 dev paragraphs; questions are SQuAD's questions (the data
//! `cargo xtask bench http` unpacks, as for `bench quality`). `--keep DIR`
//! keeps the server's data, keys and count in DIR and, when they are there,
//! grows from what is stored instead of starting again.
//!
//! Then the web console at the largest size, as a signed-in person loads
//! it: a page of 1,000 memories, a search, the overview (p50 / p99, size);
//! and MCP with an OAuth access token beside an API key (the same
//! `tools/list`), and the token endpoint rotating a refresh token.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

mod common;

use common::{flag, pct, root};

const BIN: &str = env!("CARGO_BIN_EXE_memhost");
const NAMESPACE: &str = "load";
/// Memories per bulk request (the API's cap).
const BULK: usize = 100;

/// One keep-alive HTTP/1.1 connection with a key.
struct Client {
    send: http1::SendRequest<Full<Bytes>>,
    addr: String,
    key: String,
}

impl Client {
    async fn connect(addr: &str, key: &str) -> anyhow::Result<Client> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Client {
            send,
            addr: addr.to_string(),
            key: key.to_string(),
        })
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let body = Bytes::from(body.map(Value::to_string).unwrap_or_default());
        let (status, _, bytes) = self
            .request(
                method,
                path,
                body,
                &[("content-type", "application/json".into())],
            )
            .await?;
        Ok((status, bytes))
    }

    /// A request with these headers besides the key: status, headers, body.
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Bytes,
        headers: &[(&str, String)],
    ) -> anyhow::Result<(u16, hyper::HeaderMap, Bytes)> {
        // The server closes a connection left idle: open another.
        if self.send.ready().await.is_err() {
            *self = Client::connect(&self.addr, &self.key).await?;
        }
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.addr)
            .header("authorization", format!("Bearer {}", self.key));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = self
            .send
            .send_request(request.body(Full::new(body))?)
            .await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        Ok((
            status,
            headers,
            response.into_body().collect().await?.to_bytes(),
        ))
    }

    async fn json(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, bytes) = self.call(method, path, body).await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// The memhost server, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// Its resident memory, MB (Linux: VmRSS of /proc/<pid>/status).
    fn rss_mb(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or("?".into(), |kb| format!("{:.0}", kb / 1024.0))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn memhost(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(BIN).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "memhost {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Initialise `dir`, make `clients` keys (the first an admin), and serve
/// the shipped plugins.
fn start(dir: &Path, clients: usize) -> anyhow::Result<(Server, Vec<String>)> {
    let data = dir.join("data");
    let data_arg = data.to_str().unwrap_or_default();
    let key_file = dir.join("keys.json");
    let mut keys: Vec<String> = match std::fs::read(&key_file) {
        Ok(kept) => serde_json::from_slice(&kept)?,
        Err(_) => {
            memhost(&["init", "--data", data_arg])?;
            Vec::new()
        }
    };
    for n in keys.len()..clients {
        let agent = format!("bench-{n}");
        let role = if n == 0 { "*=admin" } else { "load=writer" };
        keys.push(memhost(&[
            "keys",
            "create",
            "--agent",
            &agent,
            "--agent-type",
            "bench",
            "--role",
            role,
            "--data",
            data_arg,
        ])?);
    }
    std::fs::write(&key_file, serde_json::to_vec(&keys)?)?;
    let plugins = dir.join("plugins");
    for id in [
        "policy-standard",
        "redact-pii",
        "extract-entities",
        "embed-static",
        "embed-local",
    ] {
        let to = plugins.join(id);
        let _ = std::fs::remove_dir_all(&to);
        std::fs::create_dir_all(&to)?;
        for f in std::fs::read_dir(root().join("target/plugins").join(id))? {
            let f = f?;
            std::fs::copy(f.path(), to.join(f.file_name()))?;
        }
    }
    let models = root().join("target/models");
    let config = dir.join("memhost.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins]\ndir = \"{}\"\nwatch = false\n\n\
             [plugins.grants.embed-static]\nread_only_dirs = {{ \"/model\" = \"{}\" }}\n\n\
             [plugins.grants.embed-local]\nread_only_dirs = {{ \"/model\" = \"{}\" }}\n\n\
             [limits]\nrequests_per_second = 100000.0\nburst = 100000\nconcurrent_requests = 64\n",
            plugins.display(),
            models.join("potion-base-8m").display(),
            models.join("all-minilm-l6-v2").display(),
        ),
    )?;
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            data_arg,
            "--config",
        ])
        .arg(&config)
        .env("MEMHOST_LOG", "warn,memhost=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(at) = line.find("listening on http://")
                && let Some(sender) = tx.take()
            {
                let addr: String = line[at + "listening on http://".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c))
                    .collect();
                let _ = sender.send(addr);
            }
            // Keep draining so the server never blocks on a full pipe.
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .map_err(|_| anyhow::anyhow!("memhost did not start listening within 2 minutes"))?;
    Ok((Server { child, addr }, keys))
}

/// SQuAD dev's sentences and questions.
fn squad(root: &Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let path = root.join("target/datasets/squad/squad-v1.1-dev.json");
    let data: Value =
        serde_json::from_slice(&std::fs::read(&path).map_err(|e| {
            anyhow::anyhow!("{}: {e}; run `cargo xtask bench http`", path.display())
        })?)?;
    let mut sentences = Vec::new();
    let mut questions = Vec::new();
    for article in data["data"].as_array().into_iter().flatten() {
        for p in article["paragraphs"].as_array().into_iter().flatten() {
            let text = p["context"].as_str().unwrap_or_default();
            sentences.extend(
                text.split_inclusive(". ")
                    .map(str::trim)
                    .filter(|s| s.len() > 20)
                    .map(str::to_string),
            );
            for q in p["qas"].as_array().into_iter().flatten() {
                if let Some(q) = q["question"].as_str() {
                    questions.push(q.to_string());
                }
            }
        }
    }
    Ok((sentences, questions))
}

fn p50_p99(samples: &mut [Duration]) -> String {
    format!("{} / {}", ms(pct(samples, 50)), ms(pct(samples, 99)))
}

/// `n` per `took`, or "kept" when nothing new was stored.
fn per_second(n: f64, took: Duration) -> String {
    if n == 0.0 {
        "kept".into()
    } else {
        format!("{:.0}", n / took.as_secs_f64())
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// A recall of `question` (10 results) in `mode`; its latency.
async fn recall(client: &mut Client, question: &str, mode: &str) -> anyhow::Result<Duration> {
    let path = format!("/v1/namespaces/{NAMESPACE}/recall");
    let body = json!({ "query": question, "k": 10, "mode": mode });
    let started = Instant::now();
    let (status, bytes) = client.call("POST", &path, Some(&body)).await?;
    let took = started.elapsed();
    anyhow::ensure!(
        status == 200,
        "recall: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(took)
}

/// The memhost namespace's embedding queue, by the admin.
/// Wait until the server answers `/ready`, then a second for it to settle.
async fn ready(admin: &mut Client) {
    while admin.json("GET", "/ready", None).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn queued(admin: &mut Client) -> anyhow::Result<u64> {
    let ns = admin
        .json("GET", &format!("/v1/namespaces/{NAMESPACE}"), None)
        .await?;
    Ok(ns["index"]["queued"].as_u64().unwrap_or(0))
}

/// The first cookie a response sets, as `name=value`.
fn set_cookie(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get("set-cookie")?
        .to_str()
        .ok()?
        .split(';')
        .next()
        .map(str::to_string)
}

/// Sign in to the console as user `bench` (made once, reader everywhere)
/// with a one-time link, as a browser would: the session cookie.
async fn console_session(dir: &Path, client: &mut Client) -> anyhow::Result<String> {
    let data = dir.join("data");
    let data_arg = data.to_str().unwrap_or_default();
    let users: Vec<Value> =
        serde_json::from_str(&memhost(&["users", "list", "--json", "--data", data_arg])?)?;
    if !users.iter().any(|u| u["name"] == "bench") {
        memhost(&[
            "users", "create", "bench", "--role", "*=reader", "--data", data_arg,
        ])?;
    }
    let link = memhost(&[
        "login-link",
        "bench",
        "--data",
        data_arg,
        "--listen",
        &client.addr,
    ])?;
    let path = link
        .split_once("/console/")
        .map(|(_, p)| format!("/console/{p}"))
        .ok_or_else(|| anyhow::anyhow!("not a sign-in link: {link}"))?;
    let (_, headers, page) = client.request("GET", &path, Bytes::new(), &[]).await?;
    let form_cookie = set_cookie(&headers).ok_or_else(|| anyhow::anyhow!("no form cookie"))?;
    let page = String::from_utf8_lossy(&page);
    let token = page
        .split("name=\"signin\" value=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .ok_or_else(|| anyhow::anyhow!("no sign-in form"))?;
    let (status, headers, _) = client
        .request(
            "POST",
            &path,
            Bytes::from(format!("signin={token}")),
            &[
                ("cookie", form_cookie),
                ("content-type", "application/x-www-form-urlencoded".into()),
            ],
        )
        .await?;
    anyhow::ensure!(status == 303, "signing in answered {status}");
    set_cookie(&headers).ok_or_else(|| anyhow::anyhow!("no session cookie"))
}

/// `n` console page loads of `path`: p50 / p99, and the page's size.
async fn console_page(
    client: &mut Client,
    cookie: &str,
    path: &str,
    n: usize,
) -> anyhow::Result<(String, usize)> {
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..n {
        let started = Instant::now();
        let (status, _, page) = client
            .request("GET", path, Bytes::new(), &[("cookie", cookie.to_string())])
            .await?;
        times.push(started.elapsed());
        anyhow::ensure!(status == 200, "{path}: {status}");
        size = page.len();
    }
    Ok((p50_p99(&mut times), size))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let clients: usize = flag(&args, "--clients").map_or(Ok(8), |n| n.parse())?;
    let seconds: u64 = flag(&args, "--seconds").map_or(Ok(20), |n| n.parse())?;
    let embedder = flag(&args, "--embedder");
    let keep = flag(&args, "--keep").map(std::path::PathBuf::from);
    let mut sizes: Vec<usize> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with("--") && (*i == 0 || !args[i - 1].starts_with("--")))
        .map(|(_, a)| a.parse())
        .collect::<Result<_, _>>()?;
    if sizes.is_empty() {
        sizes = vec![10_000, 100_000];
    }
    sizes.sort_unstable();

    let (sentences, questions) = squad(&root())?;
    let tmp = tempfile::tempdir()?;
    let dir = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    // The first start compiles the plugins; every later one loads them
    // from the cache, which is what a running server usually did.
    let first_rss = {
        let (server, keys) = start(&dir, clients.max(1))?;
        let mut admin = Client::connect(&server.addr, &keys[0]).await?;
        ready(&mut admin).await;
        server.rss_mb()
    };
    let (server, keys) = start(&dir, clients.max(1))?;
    let mut admin = Client::connect(&server.addr, &keys[0]).await?;
    ready(&mut admin).await;
    let idle_rss = server.rss_mb();
    let count_file = dir.join("stored.txt");
    let mut stored: usize = std::fs::read_to_string(&count_file)
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let ns = if stored > 0 {
        admin
            .json("GET", &format!("/v1/namespaces/{NAMESPACE}"), None)
            .await?
    } else {
        let mut settings = json!({ "name": NAMESPACE });
        if let Some(id) = &embedder {
            settings["embedder"] = json!(id);
        }
        admin
            .json("POST", "/v1/namespaces", Some(&settings))
            .await?
    };
    // A kept store is measured at its size and the sizes above.
    sizes.retain(|s| *s >= stored);
    let bound = ns["settings"]["embedder"]
        .as_str()
        .unwrap_or("none")
        .to_string();

    println!(
        "\nmemhost over HTTP (`cargo xtask bench http{}`): release binary, auth on, redact-pii + extract-entities + {bound}, hybrid recall k = 10, {clients} clients with their own keys for {seconds} s; this machine: {} cores",
        args.iter().fold(String::new(), |s, a| s + " " + a),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "\nresident memory, ready and idle: {idle_rss} MB (first start, plugins compiled in-process: {first_rss} MB)"
    );
    println!(
        "\n| memories | stored/s (bulk of {BULK}) | searchable by meaning after | indexed/s | 1 client p50 / p99 ms | words only | meaning only | {clients} clients req/s | p50 / p99 ms | errors | RSS MB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");

    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let path = format!("/v1/namespaces/{NAMESPACE}/memories/bulk");
    for size in sizes {
        let grown = size.saturating_sub(stored) as f64;
        let started = Instant::now();
        let mut batch_n = 0;
        while stored < size {
            let n = BULK.min(size - stored);
            let memories: Vec<Value> = (0..n)
                .map(|_| {
                    let count = rng.random_range(3..=6);
                    let text: Vec<&str> = (0..count)
                        .filter_map(|_| sentences.choose(&mut rng).map(String::as_str))
                        .collect();
                    json!({ "content": text.join(" ") })
                })
                .collect();
            let answer = admin
                .json("POST", &path, Some(&json!({ "memories": memories })))
                .await?;
            let created = answer["results"]
                .as_array()
                .map_or(0, |r| r.iter().filter(|r| r["status"] == 201).count());
            stored += created;
            std::fs::write(&count_file, stored.to_string())?;
            batch_n += 1;
            anyhow::ensure!(
                batch_n < 10 * size / BULK + 10,
                "writes are not being stored"
            );
        }
        let store_time = started.elapsed();
        while queued(&mut admin).await? > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let searchable = started.elapsed();

        // Warm the caches, then one client in turn.
        for q in questions.iter().take(50) {
            recall(&mut admin, q, "hybrid").await?;
        }
        let mut alone = [Vec::new(), Vec::new(), Vec::new()];
        for q in questions.iter().skip(50).take(500) {
            for (mode, times) in ["hybrid", "lexical", "vector"].iter().zip(&mut alone) {
                times.push(recall(&mut admin, q, mode).await?);
            }
        }

        // N clients at once, each its own connection and key.
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for (n, key) in keys.iter().enumerate() {
            let addr = server.addr.clone();
            let key = key.clone();
            let mine: Vec<String> = questions.iter().skip(n).step_by(clients).cloned().collect();
            tasks.push(tokio::spawn(async move {
                let mut client = Client::connect(&addr, &key).await?;
                let mut times = Vec::new();
                let mut errors = 0usize;
                for q in mine.iter().cycle() {
                    if Instant::now() >= deadline {
                        break;
                    }
                    match recall(&mut client, q, "hybrid").await {
                        Ok(t) => times.push(t),
                        Err(_) => errors += 1,
                    }
                }
                anyhow::Ok((times, errors))
            }));
        }
        let began = Instant::now();
        let mut together = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (times, e) = t.await??;
            together.extend(times);
            errors += e;
        }
        let rate = together.len() as f64 / began.elapsed().as_secs_f64();
        println!(
            "| {size} | {} | {:.1} s | {} | {} | {} | {} | {rate:.0} | {} / {} | {errors} | {} |",
            per_second(grown, store_time),
            searchable.as_secs_f64(),
            per_second(grown, searchable),
            p50_p99(&mut alone[0]),
            p50_p99(&mut alone[1]),
            p50_p99(&mut alone[2]),
            ms(pct(&mut together, 50)),
            ms(pct(&mut together, 99)),
            server.rss_mb(),
        );
    }
    // The web console, as a person sees it: the release server renders
    // a page of 1,000 memories and a search.
    let cookie = console_session(&dir, &mut admin).await?;
    let question = questions.first().cloned().unwrap_or_default();
    let search = format!(
        "/console/ns/{NAMESPACE}?q={}",
        question
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            })
            .collect::<String>()
    );
    let (list, list_size) = console_page(
        &mut admin,
        &cookie,
        &format!("/console/ns/{NAMESPACE}?limit=1000"),
        50,
    )
    .await?;
    let (found, found_size) = console_page(&mut admin, &cookie, &search, 50).await?;
    let (home, _) = console_page(&mut admin, &cookie, "/console", 50).await?;
    println!(
        "\nthe web console at {stored} memories, 50 loads each (server time plus transfer on loopback; no script, one stylesheet):\n\n| page | p50 / p99 ms | size KB |\n|---|---|---|\n| a namespace's page of 1,000 memories | {list} | {:.0} |\n| a search (hybrid, 50 results) | {found} | {:.0} |\n| namespaces overview (counts, indexing) | {home} | |",
        list_size as f64 / 1024.0,
        found_size as f64 / 1024.0,
    );
    println!(
        "\nstored/s: memories created per second by one client's bulk requests (redaction, policy and the write); searchable by meaning after: from the first write of the size's batch until the embedding queue is empty; indexed/s: memories per second over that time. Latency: one recall as the client sees it, hybrid (the default) unless said, the question's embedding included; words only / meaning only: the same questions in mode lexical / vector. RSS: the server's resident memory after the row's workload (embedder instances are made on first use and dropped after two idle minutes)."
    );
    let (with_key, with_token, refresh) =
        oauth(&mut admin, &cookie, &questions[0], &server.addr).await?;
    println!(
        "\nMCP at /mcp (`tools/list`, then `memory_recall`), 200 calls each, and the token endpoint (`grant_type=refresh_token`, each rotating the pair), 200 calls:\n\n| credential | tools/list p50 / p99 ms | memory_recall p50 / p99 ms |\n|---|---|---|\n| API key (`mhk_`) | {} | {} |\n| OAuth access token (`mha_`) | {} | {} |\n\nrefresh: {refresh} ms p50 / p99",
        with_key.0, with_key.1, with_token.0, with_token.1,
    );
    drop(server);
    Ok(())
}

/// `n` calls of MCP `method` (a tool when `tool` is given) at `/mcp`:
/// p50 / p99.
async fn mcp_calls(
    client: &mut Client,
    method: &str,
    tool: Option<Value>,
    n: usize,
) -> anyhow::Result<String> {
    let mut params = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}});
    if let Some(t) = &tool {
        params["name"] = t["name"].clone();
        params["arguments"] = t["arguments"].clone();
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("accept", "application/json, text/event-stream".to_string()),
        ("mcp-protocol-version", "2026-07-28".to_string()),
        ("mcp-method", method.to_string()),
    ];
    if let Some(name) = tool.as_ref().and_then(|t| t["name"].as_str()) {
        headers.push(("mcp-name", name.to_string()));
    }
    let mut times = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let (status, _, answer) = client
            .request("POST", "/mcp", Bytes::from(body.clone()), &headers)
            .await?;
        times.push(started.elapsed());
        anyhow::ensure!(
            status == 200,
            "{method}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(p50_p99(&mut times))
}

/// Connect as an MCP client with OAuth, as user `bench` allowing it on the
/// consent page (`cookie`): (tools/list, recall) with the admin's key and
/// with the token, and refreshes, each p50 / p99.
async fn oauth(
    admin: &mut Client,
    cookie: &str,
    question: &str,
    addr: &str,
) -> anyhow::Result<((String, String), (String, String), String)> {
    let redirect = "http://127.0.0.1:9/cb";
    let client_id = admin
        .json(
            "POST",
            "/oauth/register",
            Some(&json!({"client_name": "bench", "redirect_uris": [redirect]})),
        )
        .await?["client_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // RFC 7636's example pair.
    let (verifier, challenge) = (
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    );
    let resource = format!("http://{addr}/mcp");
    let query = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", &client_id),
        ("redirect_uri", redirect),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("resource", &resource),
    ])?;
    let path = format!("/console/oauth/authorize?{query}");
    let (status, _, page) = admin
        .request(
            "GET",
            &path,
            Bytes::new(),
            &[("cookie", cookie.to_string())],
        )
        .await?;
    anyhow::ensure!(status == 200, "the consent page answered {status}");
    let page = String::from_utf8_lossy(&page);
    let mut form: Vec<(String, String)> = page
        .split("<input type=\"hidden\" name=\"")
        .skip(1)
        .filter_map(|rest| {
            let (name, rest) = rest.split_once('"')?;
            let value = rest.split("value=\"").nth(1)?.split('"').next()?;
            Some((name.to_string(), value.replace("&amp;", "&")))
        })
        .collect();
    form.push(("decision".into(), "allow".into()));
    form.push(("role:*".into(), "reader".into()));
    let (status, headers, _) = admin
        .request(
            "POST",
            "/console/oauth/authorize",
            Bytes::from(serde_urlencoded::to_string(&form)?),
            &[
                ("cookie", cookie.to_string()),
                ("content-type", "application/x-www-form-urlencoded".into()),
            ],
        )
        .await?;
    anyhow::ensure!(status == 303, "allowing answered {status}");
    let location = headers
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default();
    let code = location
        .split("code=")
        .nth(1)
        .and_then(|c| c.split('&').next())
        .unwrap_or_default()
        .to_string();
    let token_form = |pairs: &[(&str, &str)]| {
        Bytes::from(serde_urlencoded::to_string(pairs).unwrap_or_default())
    };
    let form_type = [(
        "content-type",
        "application/x-www-form-urlencoded".to_string(),
    )];
    let (status, _, tokens) = admin
        .request(
            "POST",
            "/oauth/token",
            token_form(&[
                ("grant_type", "authorization_code"),
                ("client_id", &client_id),
                ("code", &code),
                ("redirect_uri", redirect),
                ("code_verifier", verifier),
                ("resource", &resource),
            ]),
            &form_type,
        )
        .await?;
    anyhow::ensure!(status == 200, "the code exchange answered {status}");
    let tokens: Value = serde_json::from_slice(&tokens)?;
    let access = tokens["access_token"].as_str().unwrap_or_default();
    let mut refresh = tokens["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut agent = Client::connect(addr, access).await?;
    let recall = json!({"name": "memory_recall", "arguments": {"namespace": NAMESPACE, "query": question, "k": 10}});
    let key = (
        mcp_calls(admin, "tools/list", None, 200).await?,
        mcp_calls(admin, "tools/call", Some(recall.clone()), 200).await?,
    );
    let token = (
        mcp_calls(&mut agent, "tools/list", None, 200).await?,
        mcp_calls(&mut agent, "tools/call", Some(recall), 200).await?,
    );
    let mut times = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let (status, _, answer) = admin
            .request(
                "POST",
                "/oauth/token",
                token_form(&[
                    ("grant_type", "refresh_token"),
                    ("client_id", &client_id),
                    ("refresh_token", &refresh),
                ]),
                &form_type,
            )
            .await?;
        times.push(started.elapsed());
        anyhow::ensure!(status == 200, "a refresh answered {status}");
        let answer: Value = serde_json::from_slice(&answer)?;
        refresh = answer["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    Ok((key, token, p50_p99(&mut times)))
}
