//! Running the real `cloakroom` binary: the server (killed on drop) and CLI commands.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cloakroom");

/// A running `cloakroom serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    pub fn start(db: &Path, log: &Path) -> Server {
        Self::start_with(db, log, &[])
    }

    /// Starts with extra `serve` flags.
    pub fn start_with(db: &Path, log: &Path, extra: &[&str]) -> Server {
        Self::start_store(&format!("sqlite:{}", db.display()), log, extra)
    }

    /// Starts on any store URL, with extra `serve` flags.
    pub fn start_store(store: &str, log: &Path, extra: &[&str]) -> Server {
        Self::start_env(store, log, extra, &[])
    }

    /// Starts on any store URL, with extra `serve` flags and environment variables.
    pub fn start_env(store: &str, log: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--store"])
            .arg(store)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "debug");
        Self::spawn(command, log)
    }

    /// Starts on any store URL with its open-file limit (soft and hard) set to `nofile`.
    pub fn start_limited(store: &str, log: &Path, nofile: u32) -> Server {
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\"")).arg(BIN).args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            store,
        ]);
        Self::spawn(command, log)
    }

    /// Runs `command` (a `cloakroom serve`) with its stderr appended to `log`, and waits for the
    /// line that names its address.
    fn spawn(mut command: Command, log: &Path) -> Server {
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut child = command.stdout(Stdio::piped()).stderr(log_file).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().expect("a listening line").unwrap();
        let base = line.strip_prefix("cloakroom listening on ").expect(&line).to_owned();
        Server { child, base }
    }

    pub fn kill9(mut self) {
        // SIGKILL: no graceful shutdown, no chance to flush anything.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn cli(db: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    cli_store(&format!("sqlite:{}", db.display()), args, stdin)
}

/// Adds user `name` with `role` and `password` through the CLI, which must succeed.
pub fn add_user(db: &Path, name: &str, role: &str, password: &str) {
    let args = ["user", "add", name, "--role", role, "--password-stdin", "--create"];
    let (code, out, err) = cli(db, &args, Some(&format!("{password}\n")));
    assert_eq!(code, 0, "{out}{err}");
}

/// Adds user `name` with `password` to any store through the CLI, which must succeed.
pub fn add_user_to(store: &str, name: &str, password: &str) {
    let args = ["user", "add", name, "--password-stdin", "--create"];
    let (code, out, err) = cli_store(store, &args, Some(&format!("{password}\n")));
    assert_eq!(code, 0, "{out}{err}");
}

/// Runs a CLI command against any store URL.
pub fn cli_store(store: &str, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--store")
        .arg(store)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `probe` until it holds, for at most `limit`; returns how long it took.
pub async fn until(limit: Duration, mut probe: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if probe().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A browser's login over HTTP: the cookie pair to send back, the CSRF token, the session id.
pub struct HttpLogin {
    pub cookie: String,
    pub csrf: String,
    pub id: String,
}

impl HttpLogin {
    /// A state-changing request as this browser sends it: the cookie and the CSRF token.
    pub fn write(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        url: String,
    ) -> reqwest::RequestBuilder {
        http.request(method, url).header("cookie", &self.cookie).header("x-csrf-token", &self.csrf)
    }
}

/// Logs `username` in at `base` with `password` (200 expected).
pub async fn http_login(
    http: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
) -> HttpLogin {
    let r = http
        .post(format!("{base}/v1/login"))
        .json(&serde_json::json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let body: serde_json::Value = r.json().await.unwrap();
    HttpLogin {
        cookie,
        csrf: body["csrf_token"].as_str().unwrap().to_owned(),
        id: body["session"]["id"].as_str().unwrap().to_owned(),
    }
}
