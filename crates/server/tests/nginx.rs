//! Forward-auth behind a real nginx (`auth_request`), started by the test on a free port in a
//! temp dir: a protected location reaches the upstream with the `X-Cloakroom-*` headers for a
//! logged-in user (and never with headers the client made up), redirects to the login page
//! otherwise, `?role=` gives 403, and a state-changing request through the proxy keeps its CSRF
//! and Origin checks. The configuration is the one `docs/integrations.md` recommends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::{HeaderMap, Method, Uri};
use common::process::{Server, cli};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

/// nginx in the foreground, killed on drop.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx_binary() -> String {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is not installed: scripts/test installs it (apt-get install nginx)")
        .to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn nginx_conf(dir: &Path, port: u16, cloakroom: &str, app: SocketAddr) -> String {
    let d = dir.display();
    let auth = |name: &str, query: &str| {
        format!(
            "location = /{name} {{
            internal;
            proxy_pass http://cloakroom/v1/auth/check{query};
            proxy_pass_request_body off;
            proxy_set_header Content-Length \"\";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}"
        )
    };
    let protected = |prefix: &str, auth: &str| {
        format!(
            "location {prefix} {{
            auth_request /{auth};
            auth_request_set $cr_user_id $upstream_http_x_cloakroom_user_id;
            auth_request_set $cr_username $upstream_http_x_cloakroom_username;
            auth_request_set $cr_roles $upstream_http_x_cloakroom_roles;
            auth_request_set $cr_session $upstream_http_x_cloakroom_session_id;
            proxy_set_header X-Cloakroom-User-Id $cr_user_id;
            proxy_set_header X-Cloakroom-Username $cr_username;
            proxy_set_header X-Cloakroom-Roles $cr_roles;
            proxy_set_header X-Cloakroom-Session-Id $cr_session;
            error_page 401 = @login;
            proxy_pass http://app;
        }}"
        )
    };
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
    upstream cloakroom {{ server {cloakroom}; keepalive 16; }}
    upstream app {{ server {app}; }}
    server {{
        listen 127.0.0.1:{port};
        {auth_any}
        {auth_admin}
        {app_loc}
        {admin_loc}
        location @login {{ return 302 /login?next=$request_uri; }}
        location /v1/ {{ proxy_pass http://cloakroom; }}
    }}
}}
",
        auth_any = auth("_auth", ""),
        auth_admin = auth("_auth_admin", "?role=admin"),
        app_loc = protected("/app/", "_auth"),
        admin_loc = protected("/admin/", "_auth_admin"),
    )
}

/// An upstream that echoes the method, path and `X-Cloakroom-*` headers it received.
async fn echo_upstream() -> SocketAddr {
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

async fn wait_for(url: &str) {
    let client = reqwest::Client::new();
    let start = Instant::now();
    while client.get(url).send().await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "{url} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
    csrf: Option<String>,
}

impl Browser {
    async fn login(&mut self, username: &str) {
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

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let b = self.http.request(method, format!("{}{path}", self.base));
        match &self.cookie {
            Some(c) => b.header("cookie", c),
            None => b,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_guards_an_app_with_cloakroom() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cloakroom.db");
    for (name, roles) in [("alice", vec!["staff"]), ("root", vec!["admin"])] {
        let mut args = vec!["user", "add", name, "--password-stdin"];
        for r in &roles {
            args.extend(["--role", r]);
        }
        let (code, out, err) = cli(&db, &args, Some(&format!("{PASSWORD}\n")));
        assert_eq!(code, 0, "{out}{err}");
    }
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let cloakroom =
        Server::start_with(&db, &dir.path().join("cloakroom.log"), &["--public-origin", &public]);
    let app = echo_upstream().await;
    let conf = dir.path().join("nginx.conf");
    let upstream = cloakroom.base.strip_prefix("http://").unwrap().to_owned();
    std::fs::write(&conf, nginx_conf(dir.path(), port, &upstream, app)).unwrap();
    let _nginx = Nginx(
        Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(&format!("{public}/v1/auth/check")).await;

    let no_redirect =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut alice =
        Browser { http: no_redirect.clone(), base: public.clone(), cookie: None, csrf: None };

    // Logged out: nginx redirects to the login page and the app sees nothing.
    let r = alice.request(reqwest::Method::GET, "/app/reports?year=2026").send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        format!("{public}/login?next=/app/reports?year=2026").as_str()
    );

    // Logged in: the app gets the user, and made-up identity headers are overwritten.
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

    // ?role=admin: 403 for alice, 200 for an admin.
    let r = alice.request(reqwest::Method::GET, "/admin/panel").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let mut root =
        Browser { http: no_redirect.clone(), base: public.clone(), cookie: None, csrf: None };
    root.login("root").await;
    let r = root.request(reqwest::Method::GET, "/admin/panel").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["headers"]["x-cloakroom-roles"], "admin");

    // A state-changing request through the proxy keeps CSRF and Origin protection.
    let post = |csrf: Option<&str>, origin: &str| {
        let mut b = alice
            .request(reqwest::Method::POST, "/app/transfer")
            .header("origin", origin)
            .body("amount=100");
        if let Some(c) = csrf {
            b = b.header("x-csrf-token", c);
        }
        b
    };
    let csrf = alice.csrf.clone().unwrap();
    assert_eq!(post(None, &public).send().await.unwrap().status(), 403, "no CSRF token");
    assert_eq!(
        post(Some("forged"), &public).send().await.unwrap().status(),
        403,
        "wrong CSRF token"
    );
    assert_eq!(
        post(Some(&csrf), "https://evil.example").send().await.unwrap().status(),
        403,
        "foreign origin"
    );
    let r = post(Some(&csrf), &public).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["method"], "POST");

    // Logout through nginx ends it; a revocation by the CLI ends the admin's.
    let r = alice
        .request(reqwest::Method::POST, "/v1/logout")
        .header("origin", &public)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        alice.request(reqwest::Method::GET, "/app/reports").send().await.unwrap().status(),
        302
    );
    let (code, _, _) = cli(&db, &["session", "revoke", "--user", "root"], None);
    assert_eq!(code, 0);
    let start = Instant::now();
    while root.request(reqwest::Method::GET, "/admin/panel").send().await.unwrap().status() != 302 {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the CLI revocation reaches the check within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
