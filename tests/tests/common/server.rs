//! The real binary: run commands, start a server, speak HTTP to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::root;

pub fn memhost_bin() -> PathBuf {
    let bin = root().join("target/debug/memhost");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p memhost` (cargo xtask test does)",
        bin.display()
    );
    bin
}

pub fn memhost(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(memhost_bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `memhost init` the data directory unless it already is (in LMDB, or
/// shared: `memhost init --store`).
pub fn init(data: &Path) {
    if !data.join("db").exists() && !data.join("store.url").exists() {
        let (code, _, err) = memhost(&["init", "--data", data.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A running server, killed on drop; its stderr lines arrive on `lines`.
pub struct Server {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    pub addr: String,
    /// A global admin key (`*=admin`).
    pub key: String,
}

impl Server {
    pub fn start(data: &Path, config: &Path) -> Server {
        Server::start_with(data, config, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with(data: &Path, config: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_at(data, config, env, "127.0.0.1:0")
    }

    /// [`Server::start_with`] listening on `listen` (to restart a server
    /// where its clients expect it).
    pub fn start_at(data: &Path, config: &Path, env: &[(&str, &str)], listen: &str) -> Server {
        init(data);
        let key = admin_key(data);
        let mut child = Command::new(memhost_bin())
            .args(["serve", "--listen", listen, "--data"])
            .arg(data)
            .arg("--config")
            .arg(config)
            .env("MEMHOST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child,
            lines,
            seen: Vec::new(),
            addr: String::new(),
            key,
        };
        let line = server.wait_for("listening on http://");
        // Text or JSON logs: the address runs to the first character that
        // cannot be part of it.
        server.addr = line
            .rsplit("http://")
            .next()
            .unwrap()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
            .collect();
        server
    }

    /// This server, as its global admin.
    pub fn client(&self) -> Client {
        Client::new(&self.addr, Some(&self.key))
    }

    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!(
                            "server exited ({status}) before {needle:?}:\n{}",
                            self.seen.join("\n")
                        );
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no {needle:?} in server log:\n{}", self.seen.join("\n"));
    }

    /// Collect the log lines that have arrived so far into `seen`.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
    }

    pub fn get(&self, path: &str) -> String {
        let mut stream = std::net::TcpStream::connect(&self.addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where to send requests, and with which key.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: String,
    pub key: Option<String>,
}

impl Client {
    pub fn new(addr: &str, key: Option<&str>) -> Client {
        Client {
            addr: addr.to_string(),
            key: key.map(str::to_string),
        }
    }

    /// The same server with another key (or none).
    pub fn as_key(&self, key: Option<&str>) -> Client {
        Client::new(&self.addr, key)
    }
}

/// A response: status, JSON body (or Null), raw headers.
pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
    pub headers: String,
}

impl Reply {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Call the server with curl: (status, parsed JSON body or Null).
pub fn curl(c: &Client, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let r = curl_full(c, method, path, body, &[]);
    (r.status, r.body)
}

/// [`curl`] with extra headers, returning the response headers too.
pub fn curl_full(
    c: &Client,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[&str],
) -> Reply {
    let auth = c.key.as_ref().map(|k| format!("authorization: Bearer {k}"));
    let mut all: Vec<&str> = auth.iter().map(String::as_str).collect();
    all.extend(headers);
    let (status, headers, body) = curl_raw(
        &c.addr,
        method,
        path,
        &all,
        body.map(|b| ("application/json", b)),
    );
    Reply {
        status,
        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        headers,
    }
}

/// One request with curl, as it is: (status, response headers, body).
/// The body goes through stdin, with its content type: it may be larger
/// than an argument.
pub fn curl_raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<(&str, &str)>,
) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-D",
        "/dev/stderr",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ])
    .arg(format!("http://{addr}{path}"))
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some((content_type, _)) = body {
        cmd.args([
            "-H",
            &format!("content-type: {content_type}"),
            "--data-binary",
            "@-",
        ]);
    }
    let mut child = cmd.spawn().expect("curl is needed for these tests");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(body.map_or("", |(_, b)| b).as_bytes());
    }
    let out = child.wait_with_output().expect("curl did not finish");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        body.to_string(),
    )
}

/// A global admin key for the data directory, created once (kept in the
/// directory so a restarted server's tests reuse it).
pub fn admin_key(data: &Path) -> String {
    let file = data.join("test-admin.key");
    if let Ok(key) = std::fs::read_to_string(&file) {
        return key.trim().to_string();
    }
    let key = create_key(data, "test-admin", "human", &["*=admin"], &[]);
    std::fs::write(&file, &key).unwrap();
    key
}

/// `memhost keys create`; returns the key printed on stdout.
pub fn create_key(
    data: &Path,
    agent: &str,
    agent_type: &str,
    roles: &[&str],
    extra: &[&str],
) -> String {
    let data = data.to_str().unwrap();
    let mut args = vec![
        "keys",
        "create",
        "--agent",
        agent,
        "--agent-type",
        agent_type,
        "--data",
        data,
    ];
    for r in roles {
        args.extend(["--role", r]);
    }
    args.extend(extra);
    let (code, out, err) = memhost(&args);
    assert_eq!(code, 0, "keys create failed: {err}");
    let key = out.trim().to_string();
    assert!(
        key.starts_with("mhk_") && !key.contains('\n'),
        "stdout must hold only the key: {out:?}"
    );
    key
}

/// Every (method, path) an OpenAPI document describes, sorted.
pub fn documented_routes(doc: &serde_json::Value) -> Vec<(String, String)> {
    let mut routes: Vec<(String, String)> = doc["paths"]
        .as_object()
        .expect("an OpenAPI document has paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    routes.sort();
    routes
}

/// A config serving the staged `redact-pii` plugin from `dir/plugins`,
/// plus `extra` TOML.
pub fn pii_config(dir: &Path, extra: &str) -> PathBuf {
    plugins_config(dir, &["redact-pii"], extra)
}

/// A config serving the staged `plugins` from `dir/plugins`, plus `extra`.
/// `policy-standard` is always served: every change is decided by a
/// namespace's policy plugin.
pub fn plugins_config(dir: &Path, staged: &[&str], extra: &str) -> PathBuf {
    let plugins = dir.join("plugins");
    for id in staged.iter().chain(&["policy-standard"]) {
        copy_dir(&super::staged(id), &plugins.join(id));
    }
    let config = dir.join("memhost.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins]\ndir = \"{}\"\nwatch = false\n{extra}\n",
            plugins.display()
        ),
    )
    .unwrap();
    config
}

/// A running server with namespaces made by its global admin.
pub struct Setup {
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub server: Server,
    pub admin: Client,
}

/// Start a server (`redact-pii` loaded) with `extra` config and `env`, and
/// create `namespaces` (each a JSON body for `POST /v1/namespaces`).
pub fn setup(extra: &str, env: &[(&str, &str)], namespaces: &[&str]) -> Setup {
    setup_plugins(&["redact-pii"], extra, env, namespaces)
}

/// [`setup`] with these staged plugins.
pub fn setup_plugins(
    plugins: &[&str],
    extra: &str,
    env: &[(&str, &str)],
    namespaces: &[&str],
) -> Setup {
    setup_in(
        tempfile::tempdir().unwrap(),
        plugins,
        extra,
        env,
        namespaces,
    )
}

/// [`setup_plugins`] in `tmp`, whose `plugins/` may already hold more.
pub fn setup_in(
    tmp: tempfile::TempDir,
    plugins: &[&str],
    extra: &str,
    env: &[(&str, &str)],
    namespaces: &[&str],
) -> Setup {
    let data = tmp.path().join("data");
    let server = Server::start_with(&data, &plugins_config(tmp.path(), plugins, extra), env);
    let admin = server.client();
    for body in namespaces {
        let (status, answer) = curl(&admin, "POST", "/v1/namespaces", Some(body));
        assert_eq!(status, 201, "{answer}");
    }
    Setup {
        tmp,
        data,
        server,
        admin,
    }
}

/// Call an MCP tool with a plain JSON-RPC request (stateless Streamable
/// HTTP, protocol 2026-07-28), as `c`, on `/mcp?profile=admin`: its result.
pub fn mcp(
    c: &Client,
    method: &str,
    name: Option<&str>,
    params: serde_json::Value,
) -> serde_json::Value {
    let r = mcp_request(c, method, name, params);
    assert_eq!(r.status, 200, "{method} {name:?}: {}", r.body);
    r.body["result"].clone()
}

/// [`mcp`]'s request, answered as it is.
pub fn mcp_request(
    c: &Client,
    method: &str,
    name: Option<&str>,
    params: serde_json::Value,
) -> Reply {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": method,
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    });
    let mut body = body;
    if let (Some(obj), Some(extra)) = (body["params"].as_object_mut(), params.as_object()) {
        obj.extend(extra.clone());
    }
    let mut headers = vec![
        "accept: application/json, text/event-stream".to_string(),
        "mcp-protocol-version: 2026-07-28".to_string(),
        format!("mcp-method: {method}"),
    ];
    if let Some(n) = name {
        headers.push(format!("mcp-name: {n}"));
    }
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    curl_full(
        c,
        "POST",
        "/mcp?profile=admin",
        Some(&body.to_string()),
        &headers,
    )
}

/// The audit entries of `action`, oldest first.
pub fn audit_of(s: &Setup, action: &str) -> Vec<serde_json::Value> {
    audit_entries(&s.admin)
        .into_iter()
        .filter(|e| e["action"] == action)
        .collect()
}

/// Every audit entry, oldest first, as `admin` (a global admin) reads
/// them page by page.
pub fn audit_entries(admin: &Client) -> Vec<serde_json::Value> {
    let mut all: Vec<serde_json::Value> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e["seq"].as_u64().unwrap());
        let (status, page) = curl(
            admin,
            "GET",
            &format!("/v1/admin/audit?after={after}&limit=1000"),
            None,
        );
        assert_eq!(status, 200, "{page}");
        let page = page["entries"].as_array().unwrap().clone();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}
