//! Test support (feature `testing`): a private PostgreSQL server on a free port in a temp dir,
//! stopped on drop (and the directory removed), so tests run in parallel and leave nothing
//! behind. It listens on 127.0.0.1 only, with its unix socket inside the temp dir and trust
//! authentication for the `postgres` role; it never touches the machine's own instance.
//!
//! The binaries are `initdb` and `postgres` from `PATH`, else from the newest
//! `/usr/lib/postgresql/*/bin` (Debian's layout). PostgreSQL refuses to run as root: when the
//! tests are root, the server runs as the `postgres` system user, which owns the temp dir.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection as _;

/// A private PostgreSQL server.
pub struct PgServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    /// uid and gid to run as (when the tests run as root).
    owner: Option<(u32, u32)>,
    tls: bool,
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.resume();
        self.stop_immediate();
    }
}

impl PgServer {
    /// Initialises a fresh cluster and starts it.
    pub async fn start() -> PgServer {
        Self::start_with(false).await
    }

    /// Starts one that also speaks TLS, with a certificate for 127.0.0.1 signed by a fresh CA
    /// (made with the `openssl` command); [`PgServer::ca_pem`] is the CA to trust.
    pub async fn start_tls() -> PgServer {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> PgServer {
        let bin = bin_dir();
        let owner = if rustix::process::geteuid().is_root() { Some(postgres_user()) } else { None };
        for _ in 0..5 {
            let port =
                std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let dir = tempfile::tempdir().unwrap();
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            }
            let mut server = PgServer { child: None, dir, port, bin: bin.clone(), owner, tls };
            server.init();
            if tls {
                server.make_certificates();
            }
            if server.launch().await {
                return server;
            }
        }
        panic!("could not start PostgreSQL");
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(self.dir.path()).env("LC_ALL", "C").stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn init(&self) {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .output()
            .expect("initdb could not run: scripts/test installs PostgreSQL");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A CA (`ca.pem`) and a server certificate for 127.0.0.1 it signed (`server.crt`,
    /// `server.key`, the key readable by the server's user only, as PostgreSQL demands).
    fn make_certificates(&self) {
        let ec =
            ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"];
        let ca = ["-subj", "/CN=cloakroom test CA", "-keyout", "ca.key", "-out", "ca.pem"];
        let leaf = [
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
        ];
        for args in [&ca[..], &leaf[..]] {
            let ok = self
                .command_as_owner("openssl")
                .args(["req", "-x509"])
                .args(ec)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl is not installed: scripts/test installs it")
                .success();
            assert!(ok, "openssl req {args:?} failed");
        }
    }

    /// `program` from PATH, in the temp dir, as the server's user.
    fn command_as_owner(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// The CA that signed a TLS server's certificate, PEM (empty for a plain one).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("ca.pem")).unwrap_or_default()
    }

    /// Where [`PgServer::ca_pem`] is, for `sslrootcert=`.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    async fn launch(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .unwrap();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.path().display()))
            // Durable against a crash of the server process (what the tests cause), not of the
            // machine: commits are written to the kernel before they are answered.
            .args(["-c", "fsync=off", "-c", "shared_buffers=16MB", "-c", "max_connections=200"])
            .args(if self.tls {
                &[
                    "-c",
                    "ssl=on",
                    "-c",
                    "ssl_cert_file=../server.crt",
                    "-c",
                    "ssl_key_file=../server.key",
                ][..]
            } else {
                &[][..]
            })
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("postgres could not run: scripts/test installs PostgreSQL");
        self.child = Some(child);
        let url = self.url();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false; // exited: the port was taken
            }
            if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                if c.ping().await.is_ok() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// The store URL (TCP on 127.0.0.1, the `postgres` database).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Creates a database and returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        self.execute(&format!("CREATE DATABASE \"{name}\"")).await;
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs SQL (one or more statements) on the `postgres` database as the superuser.
    pub async fn execute(&self, sql: &str) {
        let mut c = sqlx::PgConnection::connect(&self.url()).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }

    /// Stops the server as `pg_ctl stop -m immediate` does (SIGQUIT: no checkpoint, every
    /// connection cut; what was committed is recovered from the WAL at the next start).
    pub fn stop_immediate(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&[c.id()], "-QUIT");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data (after [`PgServer::stop_immediate`]).
    pub async fn restart(&mut self) {
        self.stop_immediate();
        assert!(self.launch().await, "PostgreSQL did not restart:\n{}", self.log());
    }

    /// Freezes the server and every backend (SIGSTOP): connections stay open and nothing
    /// answers, as with a host that vanished without closing its connections.
    pub fn pause(&self) {
        signal(&self.processes(), "-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        signal(&self.processes(), "-CONT");
    }

    /// The postmaster and its children.
    fn processes(&self) -> Vec<u32> {
        let Some(main) = self.child.as_ref().map(Child::id) else { return Vec::new() };
        let mut all = vec![main];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // `pid (comm) state ppid …`: the fields after the last `)`.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if ppid.and_then(|p| p.parse::<u32>().ok()) == Some(main) {
                all.push(pid);
            }
        }
        all
    }
}

/// The directory holding `initdb` and `postgres`.
fn bin_dir() -> PathBuf {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&path).find(|d| has_both(d)) {
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect(
        "no initdb and postgres in PATH or /usr/lib/postgresql/*/bin: scripts/test installs them",
    )
}

/// The `postgres` system user's uid and gid.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .expect("running as root, and there is no `postgres` user to run PostgreSQL as")
}

fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(sig)
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}
