//! Test support (feature `testing`): a private `redis-server` on a free port in a temp dir,
//! killed on drop, so tests run in parallel and leave nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    persistent: bool,
    tls: bool,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl RedisServer {
    /// Starts one that keeps nothing on disk.
    pub async fn start() -> RedisServer {
        Self::start_with(false).await
    }

    /// Starts one that writes every change to its append-only file before answering, so a
    /// [`RedisServer::restart`] finds the data again.
    pub async fn start_persistent() -> RedisServer {
        Self::start_with(true).await
    }

    /// Starts one that speaks only TLS, with a certificate for 127.0.0.1 signed by a fresh CA
    /// (made with the `openssl` command); [`RedisServer::ca_pem`] is the CA to trust.
    pub async fn start_tls() -> RedisServer {
        Self::start_with_options(false, true).await
    }

    async fn start_with(persistent: bool) -> RedisServer {
        Self::start_with_options(persistent, false).await
    }

    async fn start_with_options(persistent: bool, tls: bool) -> RedisServer {
        for _ in 0..5 {
            let port =
                std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let dir = tempfile::tempdir().unwrap();
            if tls {
                make_certificates(dir.path());
            }
            let mut server = RedisServer { child: None, dir, port, persistent, tls };
            if server.launch().await {
                return server;
            }
        }
        panic!("could not start redis-server");
    }

    async fn launch(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        if self.tls {
            let (cert, key) = (self.dir.path().join("cert.pem"), self.dir.path().join("key.pem"));
            cmd.args([
                "--port",
                "0",
                "--tls-port",
                &self.port.to_string(),
                "--tls-auth-clients",
                "no",
            ]);
            cmd.arg("--tls-cert-file").arg(&cert).arg("--tls-key-file").arg(&key);
            cmd.arg("--tls-ca-cert-file").arg(self.dir.path().join("ca.pem"));
            cmd.args(["--bind", "127.0.0.1", "--save", ""]);
        } else {
            cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
        }
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: scripts/test installs it");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return false; // exited: the port was taken
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// The store URL.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// A URL on this (plain) server as a user for whom the stores' lookup hints (`cr:t:*`,
    /// `cr:i:*`) are read-only: every write a store makes to them after a change fails, which
    /// is how the tests inject a failure between a change and the writes that follow it.
    pub async fn url_with_read_only_hints(&self) -> String {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("faulty")
            .arg("on")
            .arg(">faulty-password")
            .arg("resetkeys")
            .arg(&["~cr:u:*", "~cr:x:*", "~cr:s:*", "~cr:n:*", "~cr:bus*", "~cr:users"])
            .arg(&["%R~cr:t:*", "%R~cr:i:*", "&*", "+@all"])
            .query_async(&mut conn)
            .await
            .unwrap();
        format!("redis://faulty:faulty-password@127.0.0.1:{}/", self.port)
    }

    /// The CA that signed a TLS server's certificate, PEM.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("ca.pem")).unwrap_or_default()
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, as with a host
    /// that vanished without closing its connections.
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            signal(c, "-STOP");
        }
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            signal(c, "-CONT");
        }
    }

    /// Starts it again on the same port and directory.
    pub async fn restart(&mut self) {
        self.kill();
        assert!(self.launch().await, "redis-server did not restart");
    }
}

/// A private three-master Redis Cluster: three `redis-server`s in cluster mode on free ports,
/// joined with `redis-cli --cluster create`, killed on drop.
pub struct RedisCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    /// Ports of the nodes killed on purpose.
    dead: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.nodes {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl RedisCluster {
    /// Starts the three masters and waits until the cluster is ready.
    pub async fn start() -> RedisCluster {
        Self::start_with(0).await
    }

    /// Starts three masters with one replica each (six nodes) and waits until the cluster is
    /// ready and every replica has synchronised.
    pub async fn start_with_replicas() -> RedisCluster {
        Self::start_with(1).await
    }

    async fn start_with(replicas: usize) -> RedisCluster {
        for _ in 0..5 {
            if let Some(cluster) = Self::try_start(replicas).await {
                return cluster;
            }
        }
        panic!("could not start a Redis Cluster");
    }

    async fn try_start(replicas: usize) -> Option<RedisCluster> {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3 * (1 + replicas))
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
            })
            .collect();
        let mut cluster =
            RedisCluster { nodes: Vec::new(), ports: ports.clone(), dead: Vec::new(), _dir: dir };
        for port in &ports {
            let node_dir = cluster._dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--repl-diskless-sync-delay",
                    "0",
                ])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is not installed: scripts/test installs it");
            cluster.nodes.push(child);
        }
        let start = Instant::now();
        for port in &ports {
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                if start.elapsed() > Duration::from_secs(5) {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if !created.success() {
            return None;
        }
        // Every node must agree that all slots are served.
        let start = Instant::now();
        loop {
            let ready = ports.iter().all(|p| {
                let replication = cli(*p, &["info", "replication"]);
                cli(*p, &["cluster", "info"]).contains("cluster_state:ok")
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            });
            if ready {
                return Some(cluster);
            }
            if start.elapsed() > Duration::from_secs(15) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The store URL, naming every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The port of the master serving `key`'s slot, asked of a live node.
    pub fn master_of(&self, key: &str) -> u16 {
        self.try_master_of(key).unwrap_or_else(|| panic!("no live node knows the master of {key}"))
    }

    /// [`RedisCluster::master_of`], or None while no live node names one (during a failover).
    fn try_master_of(&self, key: &str) -> Option<u16> {
        for port in self.ports.iter().filter(|p| !self.dead.contains(p)) {
            let Ok(slot) = cli(*port, &["cluster", "keyslot", key]).trim().parse::<u16>() else {
                continue;
            };
            for line in cli(*port, &["cluster", "nodes"]).lines() {
                let fields: Vec<&str> = line.split(' ').collect();
                if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                    continue;
                }
                let serves = fields[8..].iter().any(|range| {
                    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                    matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
                });
                let addr = fields[1].split('@').next().unwrap_or_default();
                if serves {
                    if let Some(p) = addr.rsplit(':').next().and_then(|p| p.parse().ok()) {
                        return Some(p);
                    }
                }
            }
        }
        None
    }

    /// Kills the master serving `key`'s slot (SIGKILL); returns its port.
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        let port = self.master_of(key);
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        let _ = self.nodes[i].kill();
        let _ = self.nodes[i].wait();
        self.dead.push(port);
        port
    }

    /// Waits until a live node serves `key`'s slot as its master and the cluster is ok again;
    /// returns how long that took.
    pub async fn wait_for_promotion(&self, key: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let live: Vec<u16> =
                self.ports.iter().copied().filter(|p| !self.dead.contains(p)).collect();
            let ok =
                live.iter().all(|p| cli(*p, &["cluster", "info"]).contains("cluster_state:ok"));
            if ok && self.try_master_of(key).is_some_and(|p| !self.dead.contains(&p)) {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "no replica took over {key} within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A throwaway CA (`ca.pem`) and a server certificate for 127.0.0.1 it signed (`cert.pem`,
/// `key.pem`), in `dir`.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is not installed: scripts/test installs it")
            .success();
        assert!(ok, "openssl {args:?} failed");
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-days", "1", "-subj", "/CN=cloakroom test CA", "-keyout", "ca.key", "-out", "ca.pem"],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &["-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "server.csr"],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
}

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_for_port(port: u16) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// `redis-cli -p PORT ARGS…`, its output (empty when it could not run).
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The master name the Sentinels of [`RedisReplicated`] watch.
pub const MASTER_NAME: &str = "cloakroom";

/// A primary, one replica and three Sentinels (quorum 2, `down-after-milliseconds` 500), each a
/// private process on a free port in one temp dir, killed on drop.
pub struct RedisReplicated {
    primary: (Child, u16),
    replica: (Child, u16),
    sentinels: Vec<(Child, u16)>,
    dir: tempfile::TempDir,
}

impl Drop for RedisReplicated {
    fn drop(&mut self) {
        let all = [&mut self.primary, &mut self.replica].into_iter().chain(&mut self.sentinels);
        for (c, _) in all {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl RedisReplicated {
    /// Starts them and waits until every Sentinel knows the replica and the other Sentinels,
    /// so that a failover can happen.
    pub async fn start() -> RedisReplicated {
        for _ in 0..5 {
            if let Some(r) = Self::try_start().await {
                return r;
            }
        }
        panic!("could not start a primary, a replica and three Sentinels");
    }

    fn data_node(dir: &std::path::Path, port: u16, primary: Option<u16>) -> Child {
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
        // Without a delay before the first full synchronisation (5 s by default).
        cmd.args(["--appendonly", "no", "--repl-diskless-sync-delay", "0"]);
        if let Some(p) = primary {
            cmd.args(["--replicaof", "127.0.0.1", &p.to_string()]);
        }
        cmd.arg("--dir")
            .arg(&node_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: scripts/test installs it")
    }

    async fn try_start() -> Option<RedisReplicated> {
        let dir = tempfile::tempdir().unwrap();
        let (p, r) = (free_port(), free_port());
        let primary = (Self::data_node(dir.path(), p, None), p);
        let replica = (Self::data_node(dir.path(), r, Some(p)), r);
        let mut this = RedisReplicated { primary, replica, sentinels: Vec::new(), dir };
        if !(wait_for_port(p).await && wait_for_port(r).await) {
            return None;
        }
        // The replica has synchronised (connected is not enough: it may still wait for the
        // primary's snapshot, and would be promoted empty).
        let start = Instant::now();
        while !cli(r, &["info", "replication"]).contains("master_link_status:up") {
            if start.elapsed() > Duration::from_secs(10) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..3 {
            let port = free_port();
            let conf = this.dir.path().join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {p} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 500\n\
                     sentinel failover-timeout {MASTER_NAME} 3000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    dir = this.dir.path().display()
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is not installed: scripts/test installs it");
            this.sentinels.push((child, port));
            if !wait_for_port(port).await {
                return None;
            }
        }
        // Sentinels find the replica through the primary and each other through hello messages
        // (every 2 s): until then a failover could not reach its quorum.
        let start = Instant::now();
        loop {
            let ready = this.sentinels.iter().all(|(_, s)| {
                let replicas = cli(*s, &["sentinel", "replicas", MASTER_NAME]);
                let others = cli(*s, &["sentinel", "sentinels", MASTER_NAME]);
                replicas.contains(&r.to_string()) && others.matches("runid").count() == 2
            });
            if ready {
                return Some(this);
            }
            if start.elapsed() > Duration::from_secs(20) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `redis+sentinel://` naming the three Sentinels.
    pub fn url(&self) -> String {
        let hosts: Vec<String> =
            self.sentinels.iter().map(|(_, p)| format!("127.0.0.1:{p}")).collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The primary's own URL, for direct inspection.
    pub fn primary_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.primary.1)
    }

    /// The replica's own URL, for direct inspection (read only until it is promoted).
    pub fn replica_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.replica.1)
    }

    /// Kills the primary (SIGKILL): whatever it had not sent to the replica is lost.
    pub fn kill_primary(&mut self) {
        let _ = self.primary.0.kill();
        let _ = self.primary.0.wait();
    }

    /// Waits until the Sentinels have promoted the replica and it says it is the primary;
    /// returns how long that took.
    pub async fn wait_for_promotion(&self, within: Duration) -> Duration {
        let start = Instant::now();
        let r = self.replica.1.to_string();
        loop {
            let named = self.sentinels.iter().any(|(_, s)| {
                cli(*s, &["sentinel", "get-master-addr-by-name", MASTER_NAME]).contains(&r)
            });
            if named && cli(self.replica.1, &["role"]).starts_with("master") {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "the replica was not promoted within {within:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the replica (SIGKILL): its connection closes, and the primary's `ROLE` no longer
    /// lists it.
    pub fn kill_replica(&mut self) {
        let _ = self.replica.0.kill();
        let _ = self.replica.0.wait();
    }

    /// Stops the replica (SIGSTOP): it stays connected but acknowledges nothing, so `WAIT` on
    /// the primary times out. [`RedisReplicated::resume_replica`] undoes it.
    pub fn pause_replica(&self) {
        signal(&self.replica.0, "-STOP");
    }

    /// Lets a paused replica go on (SIGCONT).
    pub fn resume_replica(&self) {
        signal(&self.replica.0, "-CONT");
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(child.id().to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} failed");
}
