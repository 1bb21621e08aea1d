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

/// `memhost init` the data directory unless it already is.
pub fn init(data: &Path) {
    if !data.join("db").exists() {
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
}

impl Server {
    pub fn start(data: &Path, config: &Path) -> Server {
        init(data);
        let mut child = Command::new(memhost_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--config")
            .arg(config)
            .env("MEMHOST_LOG", "info")
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
        };
        let line = server.wait_for("listening on http://");
        server.addr = line.rsplit("http://").next().unwrap().trim().to_string();
        server
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

/// Call the server with curl: (status, parsed JSON body or Null).
pub fn curl(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .arg(format!("http://{addr}{path}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if body.is_some() {
        // The body goes through stdin: it may be larger than an argument.
        cmd.args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    let mut child = cmd.spawn().expect("curl is needed for these tests");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(body.unwrap_or("").as_bytes());
    }
    let out = child.wait_with_output().expect("curl did not finish");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}
