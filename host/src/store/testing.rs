//! Throwaway PostgreSQL clusters for tests: a primary and streaming
//! standbys on loopback ports, from Debian's PostgreSQL 15 binaries
//! (`MEMHOST_PG_BIN` to use others). `initdb` refuses root, so under root
//! every server runs as the unprivileged `postgres` user. Stopped (and
//! their files deleted) when dropped. Compiled for tests and the
//! integration suite only (feature `testing`).

// Test support: a cluster that cannot start ends the test, loudly.
#![allow(clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::StoreOptions;

/// The role every test cluster is made with (trust authentication on
/// loopback only).
const ROLE: &str = "memhost";

/// One server of a cluster.
pub struct Server {
    /// Its name (`primary`, `standby1`, …), also its `application_name`.
    pub name: String,
    /// Its data directory.
    pub data: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// A primary and `n` standbys.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: String,
    /// The servers, primary first.
    pub servers: Vec<Server>,
}

/// A single throwaway server.
pub type Postgres = Cluster;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

impl Cluster {
    /// One server, no standbys.
    pub fn start() -> Cluster {
        Cluster::with_standbys(0)
    }

    /// A primary and `standbys` streaming standbys; with standbys, a
    /// commit waits for any one of them (`synchronous_standby_names =
    /// 'ANY 1 (…)'`).
    pub fn with_standbys(standbys: usize) -> Cluster {
        let bin =
            std::env::var("MEMHOST_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        if is_root() {
            let id = |flag: &str| {
                let out = Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .unwrap_or_else(|e| panic!("id: {e}"));
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse::<u32>()
                    .unwrap_or_else(|e| panic!("no postgres user: {e}"))
            };
            std::os::unix::fs::chown(dir.path(), Some(id("-u")), Some(id("-g")))
                .unwrap_or_else(|e| panic!("chown: {e}"));
        }
        let mut cluster = Cluster {
            dir,
            bin,
            servers: Vec::new(),
        };
        let primary = cluster.dir.path().join("primary");
        cluster.run(
            "initdb",
            &[
                "-D",
                &primary.display().to_string(),
                "-A",
                "trust",
                "-U",
                ROLE,
                "--no-sync",
            ],
        );
        let names: Vec<String> = (1..=standbys).map(|i| format!("standby{i}")).collect();
        let mut conf = String::from(
            "listen_addresses = '127.0.0.1'\nwal_level = replica\nmax_wal_senders = 10\n\
             wal_keep_size = '256MB'\nhot_standby = on\n",
        );
        if !names.is_empty() {
            conf.push_str(&format!(
                "synchronous_standby_names = 'ANY 1 ({})'\n",
                names.join(", ")
            ));
        }
        cluster.append_conf(&primary, &conf);
        cluster.append_hba(
            &primary,
            &format!("host replication {ROLE} 127.0.0.1/32 trust\n"),
        );
        cluster.servers.push(Server {
            name: "primary".into(),
            data: primary,
            port: free_port(),
        });
        cluster.start_server(0);
        for name in names {
            let data = cluster.dir.path().join(&name);
            let conninfo = format!(
                "host=127.0.0.1 port={} user={ROLE} application_name={name}",
                cluster.servers[0].port
            );
            cluster.run(
                "pg_basebackup",
                &[
                    "-d",
                    &conninfo,
                    "-D",
                    &data.display().to_string(),
                    "-R",
                    "-X",
                    "stream",
                    "--no-sync",
                ],
            );
            cluster.servers.push(Server {
                name,
                data,
                port: free_port(),
            });
            cluster.start_server(cluster.servers.len() - 1);
        }
        // Ready when every standby streams and counts for the quorum.
        let want = standbys.to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while cluster.psql(
            0,
            "SELECT count(*) FROM pg_stat_replication \
             WHERE state = 'streaming' AND sync_state = 'quorum'",
        ) != want
        {
            assert!(
                std::time::Instant::now() < deadline,
                "standbys not streaming after 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        cluster
    }

    /// `program` of the PostgreSQL binaries, as the user the servers run as.
    fn command(&self, program: &str) -> Command {
        let path = format!("{}/{program}", self.bin);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &path]);
            c
        } else {
            Command::new(&path)
        };
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn append_conf(&self, data: &Path, text: &str) {
        self.append(&data.join("postgresql.conf"), text);
    }

    fn append_hba(&self, data: &Path, text: &str) {
        self.append(&data.join("pg_hba.conf"), text);
    }

    fn append(&self, file: &Path, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        f.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }

    /// Start server `i` (again) and wait until it accepts connections.
    pub fn start_server(&self, i: usize) {
        let s = &self.servers[i];
        let opts = format!(
            "-p {} -k {} -c cluster_name={}",
            s.port,
            self.dir.path().display(),
            s.name
        );
        let log = self.dir.path().join(format!("{}.log", s.name));
        self.run(
            "pg_ctl",
            &[
                "-D",
                &s.data.display().to_string(),
                "-o",
                &opts,
                "-l",
                &log.display().to_string(),
                "-w",
                "start",
            ],
        );
    }

    /// Kill server `i` at once (SIGKILL to its postmaster: no shutdown,
    /// no WAL flushed beyond what it had).
    pub fn kill(&self, i: usize) {
        let pid_file = self.servers[i].data.join("postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
            .unwrap_or_else(|| panic!("{} has no postmaster.pid", self.servers[i].name));
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        // Its backends go when they notice the postmaster is gone; wait
        // until nothing answers on its port.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.servers[i].port)).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Promote standby `i` to primary, and point every other live standby
    /// in `followers` at it; commits then wait for any one of those.
    pub fn promote(&self, i: usize, followers: &[usize]) {
        let s = &self.servers[i];
        self.run(
            "pg_ctl",
            &["-D", &s.data.display().to_string(), "-w", "promote"],
        );
        let names: Vec<&str> = followers
            .iter()
            .map(|f| self.servers[*f].name.as_str())
            .collect();
        let sync = if names.is_empty() {
            String::new()
        } else {
            format!("ANY 1 ({})", names.join(", "))
        };
        self.psql(
            i,
            &format!("ALTER SYSTEM SET synchronous_standby_names = '{sync}'"),
        );
        self.psql(i, "SELECT pg_reload_conf()");
        for f in followers {
            let conninfo = format!(
                "host=127.0.0.1 port={} user={ROLE} application_name={}",
                s.port, self.servers[*f].name
            );
            self.psql(
                *f,
                &format!("ALTER SYSTEM SET primary_conninfo = '{conninfo}'"),
            );
            self.psql(*f, "SELECT pg_reload_conf()");
        }
    }

    /// Turn on TLS on server `i` with a certificate for `127.0.0.1` signed
    /// by a throwaway CA (made with the `openssl` command); returns the
    /// CA's PEM file, to trust.
    pub fn enable_tls(&self, i: usize) -> PathBuf {
        let dir = self
            .dir
            .path()
            .join(format!("tls-{}", self.servers[i].name));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap_or_else(|e| panic!("openssl: {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=memhost test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n",
        )
        .unwrap_or_else(|e| panic!("san.ext: {e}"));
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status();
        }
        let _ = Command::new("chmod")
            .arg("600")
            .arg(dir.join("server.key"))
            .status();
        self.append_conf(
            &self.servers[i].data,
            &format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            ),
        );
        self.psql(i, "SELECT pg_reload_conf()");
        dir.join("ca.pem")
    }

    /// A connection string to server `i`.
    pub fn url_of(&self, i: usize) -> String {
        format!(
            "postgres://{ROLE}@127.0.0.1:{}/postgres",
            self.servers[i].port
        )
    }

    /// A connection string naming every server, that finds the one
    /// taking writes.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!(
            "postgres://{ROLE}@{}/postgres?target_session_attrs=read-write",
            hosts.join(",")
        )
    }

    /// Store options for this cluster (a failover waits up to 60 s).
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            postgres: Some(self.url()),
            pool: 8,
            failover: std::time::Duration::from_secs(60),
            ..StoreOptions::default()
        }
    }

    /// Run `sql` on server `i` with psql; its output, trimmed.
    pub fn psql(&self, i: usize, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(self.url_of(i))
            .args(["-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &self.servers {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&s.data)
                .args(["-m", "immediate", "stop"])
                .output();
        }
    }
}
