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

/// Where the recipes put Cloakroom's own routes (`--base-path`).
pub const BASE_PATH: &str = "/auth";

/// The first fenced block of language `lang` in the section of `docs/integrations.md` whose
/// heading starts with `heading`: the tests run the recipes as the docs write them.
pub fn doc_block(heading: &str, lang: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/integrations.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find(&format!("\n{heading}")).unwrap_or_else(|| panic!("no section {heading}"));
    let section = &doc[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |e| e + 1)];
    fenced(section, lang)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {lang} block in {heading}"))
}

/// Every fenced block of language `lang` in `text`, in order, each ending with its last newline.
pub fn fenced(text: &str, lang: &str) -> Vec<String> {
    let fence = format!("\n```{lang}\n");
    let text = format!("\n{text}"); // a block on the first line counts too
    let mut rest = text.as_str();
    let mut blocks = Vec::new();
    while let Some(open) = rest.find(&fence) {
        let body = &rest[open + fence.len()..];
        let close = body.find("\n```").unwrap();
        blocks.push(body[..=close].to_owned());
        rest = &body[close..];
    }
    blocks
}

/// `text` with `from` replaced by `to`, which must occur exactly once (a recipe that changed
/// shape fails here, not later in a confusing way).
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "`{from}` once in:\n{text}");
    text.replacen(from, to, 1)
}

/// The `cloakroom serve` flags of a section's ```sh block, with its example origin replaced.
pub fn doc_serve_flags(heading: &str, public: &str) -> Vec<String> {
    let block = doc_block(heading, "sh");
    let line = block.lines().find(|l| l.starts_with("cloakroom serve")).expect("a serve line");
    line.split_whitespace()
        .skip(2)
        .map(|w| if w == "https://app.example.com" { public.to_owned() } else { w.to_owned() })
        .collect()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An upstream that echoes the method, path and `X-Cloakroom-*` headers it received.
pub async fn echo_upstream() -> SocketAddr {
    let form = "<!doctype html><html lang=en><title>Transfer</title><form method=post \
                action=/app/transfer><input name=amount value=100><button>Send</button></form>";
    let app = axum::Router::new()
        .route("/app/form", axum::routing::get(move || async move { axum::response::Html(form) }))
        .fallback(|method: Method, uri: Uri, headers: HeaderMap| async move {
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
            .post(format!("{}{BASE_PATH}/v1/login", self.base))
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
/// `/app/` with the plain check and `/admin/` with `?role=admin`, and routes `/auth/` to
/// Cloakroom): anonymous visitors are sent to the login page with the whole way back (query
/// string included), and land there after logging in; the app gets the user's `X-Cloakroom-*`
/// headers and never ones the client made up; `?role=` gives 403; a state-changing request needs
/// the CSRF token or the browser's same-origin signals. Returns alice's and root's browsers.
pub async fn guarded_app_keeps_the_contract(public: &str) -> (Browser, Browser) {
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut alice =
        Browser { http: http.clone(), base: public.to_owned(), cookie: None, csrf: None };

    let wanted = "/app/reports?year=2026&q=a%20b";
    let r = alice.request(reqwest::Method::GET, wanted).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap();
    let location = location.strip_prefix(public).unwrap_or(location).to_owned();
    let escaped = "next=%2Fapp%2Freports%3Fyear%3D2026%26q%3Da%2520b";
    assert_eq!(location, format!("{BASE_PATH}/login?{escaped}"));
    // The login page keeps the way back, and the form login follows it.
    let page = alice.request(reqwest::Method::GET, &location).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("&#x2f;app&#x2f;reports?year=2026&amp;q=a%20b"), "{html}");
    let r = alice
        .request(reqwest::Method::POST, &format!("{BASE_PATH}/login"))
        .header("origin", public)
        .form(&[("username", "alice"), ("password", PASSWORD), ("next", wanted)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the login form through the proxy");
    assert_eq!(r.headers()["location"], wanted);

    // Cloakroom's metrics are not published through the proxy.
    let r =
        alice.request(reqwest::Method::GET, &format!("{BASE_PATH}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404, "/auth/metrics through the proxy");

    alice.login("alice").await;
    let r = alice
        .request(reqwest::Method::GET, "/app/reports")
        .header("X-Cloakroom-Username", "root")
        .header("X-Cloakroom-Roles", "admin")
        .header("X-Cloakroom-Csrf-Token", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    let csrf = alice.csrf.clone().unwrap();
    assert_eq!(seen["path"], "/app/reports");
    assert_eq!(seen["headers"]["x-cloakroom-username"], "alice");
    assert_eq!(seen["headers"]["x-cloakroom-roles"], "staff");
    assert_eq!(seen["headers"]["x-cloakroom-csrf-token"], csrf.as_str());
    assert!(seen["headers"]["x-cloakroom-user-id"].as_str().unwrap().starts_with("usr_"));
    assert!(seen["headers"]["x-cloakroom-session-id"].as_str().unwrap().starts_with("ses_"));

    let r = alice.request(reqwest::Method::GET, "/admin/panel").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let mut root = Browser { http, base: public.to_owned(), cookie: None, csrf: None };
    root.login("root").await;
    let r = root.request(reqwest::Method::GET, "/admin/panel").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["headers"]["x-cloakroom-roles"], "admin");

    // A state-changing request: the token, or the browser's word that it is same-origin.
    let post = |headers: &[(&str, &str)]| {
        let mut b = alice.request(reqwest::Method::POST, "/app/transfer");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.header("content-type", "application/x-www-form-urlencoded").body("amount=100")
    };
    let evil = "https://evil.example";
    type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);
    let cases: &[Case<'_>] = &[
        (&[], 403, "no token, no Origin, no Fetch Metadata"),
        (&[("sec-fetch-site", "same-origin"), ("origin", public)], 200, "a form on the app"),
        (&[("origin", public)], 200, "an older browser: an allowed Origin"),
        (&[("sec-fetch-site", "cross-site"), ("origin", evil)], 403, "a form on another site"),
        (&[("sec-fetch-site", "cross-site")], 403, "cross-site without Origin"),
        (&[("sec-fetch-site", "same-site")], 403, "a sibling subdomain"),
        (&[("origin", evil)], 403, "another origin"),
        (&[("x-csrf-token", "forged"), ("origin", public)], 403, "a wrong token"),
        (&[("x-csrf-token", &csrf), ("origin", evil)], 403, "the token from another origin"),
        (&[("x-csrf-token", &csrf)], 200, "the token"),
    ];
    for (headers, want, what) in cases {
        let r = post(headers).send().await.unwrap();
        assert_eq!(r.status().as_u16(), *want, "{what}");
        if *want == 200 {
            assert_eq!(r.json::<Value>().await.unwrap()["method"], "POST", "{what}");
        }
    }
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
        Self::start_as("127.0.0.1").await
    }

    /// [`ProxiedSetup::start`] with the proxy's public origin named `host` (`localhost` for
    /// Chromium, which keeps `Secure` cookies over plain HTTP there only).
    pub async fn start_as(host: &str) -> ProxiedSetup {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cloakroom.db");
        add_alice_and_root(&db);
        let port = free_port();
        let public = format!("http://{host}:{port}");
        let log = dir.path().join("cloakroom.log");
        let flags = doc_serve_flags("## nginx", &public);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let cloakroom = super::process::Server::start_with(&db, &log, &flags);
        let app = echo_upstream().await;
        let upstream = cloakroom.base.strip_prefix("http://").unwrap().to_owned();
        ProxiedSetup { dir, db, port, public, cloakroom, app, upstream }
    }
}

pub fn nginx_binary() -> String {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is not installed: scripts/test installs it (apt-get install nginx)")
        .to_owned()
}

/// The recipe of `docs/integrations.md`, as written, in a private nginx: only the addresses
/// change.
pub fn nginx_conf(dir: &Path, port: u16, cloakroom: &str, app: SocketAddr) -> String {
    let recipe = doc_block("## nginx", "nginx");
    let recipe = replace_once(&recipe, "server 127.0.0.1:7878;", &format!("server {cloakroom};"));
    let recipe = replace_once(&recipe, "server 127.0.0.1:8080;", &format!("server {app};"));
    let recipe = replace_once(&recipe, "listen 443 ssl;", &format!("listen 127.0.0.1:{port};"));
    let d = dir.display();
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{recipe}
}}
"
    )
}

/// nginx with the docs' recipe in front of Cloakroom (`cloakroom`, `host:port`) and `app`, on
/// `port`, in `dir`; killed on drop.
pub fn start_nginx(dir: &Path, port: u16, cloakroom: &str, app: SocketAddr) -> Killed {
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, port, cloakroom, app)).unwrap();
    Killed(
        std::process::Command::new(nginx_binary())
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}
