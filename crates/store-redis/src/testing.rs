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

    async fn start_with(persistent: bool) -> RedisServer {
        for _ in 0..5 {
            let port =
                std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut server =
                RedisServer { child: None, dir: tempfile::tempdir().unwrap(), port, persistent };
            if server.launch().await {
                return server;
            }
        }
        panic!("could not start redis-server");
    }

    async fn launch(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
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
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
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
        for _ in 0..5 {
            if let Some(cluster) = Self::try_start().await {
                return cluster;
            }
        }
        panic!("could not start a Redis Cluster");
    }

    async fn try_start() -> Option<RedisCluster> {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
            })
            .collect();
        let mut cluster = RedisCluster { nodes: Vec::new(), ports: ports.clone(), _dir: dir };
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
            .args(["--cluster-replicas", "0", "--cluster-yes"])
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
                Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
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
}
