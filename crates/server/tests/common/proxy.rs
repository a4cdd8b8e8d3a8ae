//! Shared by the reverse-proxy tests (nginx, Caddy): an echoing upstream app, a browser that
//! talks to the proxy, free ports.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::{HeaderMap, Method, Uri};
use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery staple";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An upstream that echoes the method, path and `X-Cloakroom-*` headers it received.
pub async fn echo_upstream() -> SocketAddr {
    let app =
        axum::Router::new().fallback(|method: Method, uri: Uri, headers: HeaderMap| async move {
            let seen: serde_json::Map<String, Value> = headers
                .iter()
                .filter(|(k, _)| k.as_str().starts_with("x-cloakroom-"))
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("<binary>"))))
                .collect();
            Json(json!({ "method": method.as_str(), "path": uri.path(), "headers": seen }))
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

pub async fn wait_for(url: &str) {
    let client = reqwest::Client::new();
    let start = Instant::now();
    while client.get(url).send().await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "{url} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
}

impl Browser {
    pub async fn login(&mut self, username: &str) {
        let r = self
            .http
            .post(format!("{}/v1/login", self.base))
            .header("origin", &self.base)
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login through nginx");
        let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        self.cookie = Some(set.split(';').next().unwrap().to_owned());
        self.csrf =
            Some(r.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_owned());
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let b = self.http.request(method, format!("{}{path}", self.base));
        match &self.cookie {
            Some(c) => b.header("cookie", c),
            None => b,
        }
    }
}

/// A proxy process in the foreground, killed on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Users `alice` (role staff) and `root` (role admin), through the CLI.
pub fn add_alice_and_root(db: &Path) {
    for (name, role) in [("alice", "staff"), ("root", "admin")] {
        super::process::add_user(db, name, role, PASSWORD);
    }
}

/// What every forward-auth recipe must keep, checked through the proxy at `public` (which guards
/// `/app/` with the plain check and `/admin/` with `?role=admin`): anonymous visitors are sent to
/// `login` with the way back; the app gets the user's `X-Cloakroom-*` headers and never ones the
/// client made up; `?role=` gives 403; a state-changing request keeps its CSRF and Origin checks.
/// Returns alice's and root's logged-in browsers.
pub async fn guarded_app_keeps_the_contract(public: &str, login: &str) -> (Browser, Browser) {
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut alice =
        Browser { http: http.clone(), base: public.to_owned(), cookie: None, csrf: None };

    let r = alice.request(reqwest::Method::GET, "/app/reports?year=2026").send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], format!("{login}?next=/app/reports?year=2026").as_str());

    alice.login("alice").await;
    let r = alice
        .request(reqwest::Method::GET, "/app/reports")
        .header("X-Cloakroom-Username", "root")
        .header("X-Cloakroom-Roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["path"], "/app/reports");
    assert_eq!(seen["headers"]["x-cloakroom-username"], "alice");
    assert_eq!(seen["headers"]["x-cloakroom-roles"], "staff");
    assert!(seen["headers"]["x-cloakroom-user-id"].as_str().unwrap().starts_with("usr_"));
    assert!(seen["headers"]["x-cloakroom-session-id"].as_str().unwrap().starts_with("ses_"));

    let r = alice.request(reqwest::Method::GET, "/admin/panel").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let mut root = Browser { http, base: public.to_owned(), cookie: None, csrf: None };
    root.login("root").await;
    let r = root.request(reqwest::Method::GET, "/admin/panel").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["headers"]["x-cloakroom-roles"], "admin");

    let csrf = alice.csrf.clone().unwrap();
    let post = |token: Option<&str>, origin: &str| {
        let mut b = alice.request(reqwest::Method::POST, "/app/transfer").header("origin", origin);
        if let Some(t) = token {
            b = b.header("x-csrf-token", t);
        }
        b.body("amount=100")
    };
    assert_eq!(post(None, public).send().await.unwrap().status(), 403, "no CSRF token");
    assert_eq!(post(Some("forged"), public).send().await.unwrap().status(), 403, "wrong token");
    assert_eq!(post(Some(&csrf), "https://evil.example").send().await.unwrap().status(), 403);
    let r = post(Some(&csrf), public).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["method"], "POST");
    (alice, root)
}

/// Cloakroom on a fresh store with alice and root, behind a proxy-to-be on `port` (its
/// `public_origin`), and the echoing app the proxy will guard.
pub struct ProxiedSetup {
    pub dir: tempfile::TempDir,
    pub db: std::path::PathBuf,
    pub port: u16,
    pub public: String,
    pub cloakroom: super::process::Server,
    pub app: SocketAddr,
    /// Cloakroom's `host:port`, for the proxy configuration.
    pub upstream: String,
}

impl ProxiedSetup {
    pub async fn start() -> ProxiedSetup {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cloakroom.db");
        add_alice_and_root(&db);
        let port = free_port();
        let public = format!("http://127.0.0.1:{port}");
        let log = dir.path().join("cloakroom.log");
        let cloakroom =
            super::process::Server::start_with(&db, &log, &["--public-origin", &public]);
        let app = echo_upstream().await;
        let upstream = cloakroom.base.strip_prefix("http://").unwrap().to_owned();
        ProxiedSetup { dir, db, port, public, cloakroom, app, upstream }
    }
}
