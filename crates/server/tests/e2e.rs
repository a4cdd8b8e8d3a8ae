//! End to end through the real `cloakroom` binary on a temporary SQLite file: the CLI creates a
//! user, the server is driven over HTTP, killed with SIGKILL and restarted; sessions that login
//! returned survive, revoked ones stay revoked, and a revocation made by the CLI beside the running
//! server is honoured at once. Logs never contain a token or password.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::process::{BIN, Server, add_user, cli};

const PASSWORD: &str = "correct horse battery staple";

/// A client keeping the session cookie by hand (the cookie is Secure; the test speaks plain
/// HTTP to loopback, as a browser may to localhost).
struct Browser {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    csrf: Option<String>,
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser { http: reqwest::Client::new(), base: base.to_owned(), token: None, csrf: None }
    }

    async fn login(&mut self, username: &str, password: &str) -> Value {
        let r = self
            .http
            .post(format!("{}/v1/login", self.base))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cookie = r.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
        assert!(cookie.ends_with("; HttpOnly; Secure; SameSite=Lax; Path=/"), "{cookie}");
        self.token = Some(
            cookie.split(';').next().unwrap().strip_prefix("__Host-cloakroom=").unwrap().to_owned(),
        );
        let body: Value = r.json().await.unwrap();
        self.csrf = Some(body["csrf_token"].as_str().unwrap().to_owned());
        body
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut b = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            b = b.header("cookie", format!("__Host-cloakroom={t}"));
        }
        if method != reqwest::Method::GET {
            b = b
                .header("x-csrf-token", self.csrf.clone().unwrap_or_default())
                .header("origin", &self.base);
        }
        b
    }

    async fn check(&self) -> u16 {
        self.request(reqwest::Method::GET, "/v1/auth/check").send().await.unwrap().status().as_u16()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_survives_kill_9_and_honours_cli_revocations() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cloakroom.db");
    let log = dir.path().join("server.log");

    // Set-up through the CLI, before any server runs.
    add_user(&db, "alice", "staff", PASSWORD);
    let (code, _, err) = cli(&db, &["user", "add", "bob", "--password-stdin"], Some("password\n"));
    assert_eq!(code, 1, "a common password is refused");
    assert!(err.contains("too common"), "{err}");
    let (code, _, _) = cli(&db, &["user", "add"], None);
    assert_eq!(code, 2, "usage errors exit 2");

    let server = Server::start(&db, &log);
    let mut laptop = Browser::new(&server.base);
    let mut phone = Browser::new(&server.base);
    let laptop_session =
        laptop.login("alice", PASSWORD).await["session"]["id"].as_str().unwrap().to_owned();
    let phone_session =
        phone.login("alice", PASSWORD).await["session"]["id"].as_str().unwrap().to_owned();
    assert_eq!(laptop.check().await, 200);
    assert_eq!(phone.check().await, 200);

    let list: Value = laptop
        .request(reqwest::Method::GET, "/v1/sessions")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);

    // The laptop revokes the phone.
    let r = laptop
        .request(reqwest::Method::DELETE, &format!("/v1/sessions/{phone_session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(phone.check().await, 401);

    // Crash and restart: the laptop's session survives, the phone's stays revoked.
    server.kill9();
    let server = Server::start(&db, &log);
    laptop.base = server.base.clone();
    phone.base = server.base.clone();
    assert_eq!(laptop.check().await, 200, "a session that login returned survives kill -9");
    assert_eq!(phone.check().await, 401, "a revoked session never comes back");

    // The CLI beside the running server, on the same file.
    let (code, out, _) = cli(&db, &["session", "list", "--json"], None);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(listed["sessions"][0]["id"], laptop_session.as_str());
    let (code, out, err) = cli(&db, &["session", "revoke", &laptop_session], None);
    assert_eq!(code, 0, "{out}{err}");
    let revoked_at = Instant::now();
    loop {
        if laptop.check().await == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "the server honours a CLI revocation within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Disabling through the CLI ends every session; the audit trail shows it all.
    laptop.login("alice", PASSWORD).await;
    let (code, _, _) = cli(&db, &["user", "disable", "alice"], None);
    assert_eq!(code, 0);
    assert_eq!(laptop.check().await, 401);
    let (code, out, _) = cli(&db, &["audit", "--user", "alice", "--json"], None);
    assert_eq!(code, 0);
    let events: Value = serde_json::from_str(out.trim()).unwrap();
    let kinds: Vec<&str> =
        events["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in ["user_created", "login_succeeded", "session_revoked", "user_disabled"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }

    let token = laptop.token.clone().unwrap();
    drop(server);
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("login_succeeded"), "authentication events are logged");
    assert!(
        !logs.contains(&token) && !logs.contains("crs_") && !logs.contains(PASSWORD),
        "no secret in the logs"
    );
}

#[test]
fn invalid_configuration_is_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("x.db").display());
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(BIN);
        c.args(args).arg("--store").arg(&store);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["serve", "--idle-timeout", "forever"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("idle_timeout"), "{err}");
    let (code, err) = run(&["user", "list"], &[("CLOAKROOM_IDLE_TIMOUT", "5m")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("CLOAKROOM_IDLE_TIMOUT"), "{err}");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "cookie_name = \"sid\"\n").unwrap();
    let (code, err) = run(&["serve", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cookie_name"), "{err}");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nbogus = 1\n").unwrap();
    let (code, err) = run(&["serve", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bogus"), "{err}");
    // A store URL's own parameter, checked before anything connects.
    let out = Command::new(BIN)
        .args(["serve", "--store", "redis://127.0.0.1:1/?min_replicas=all"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("min_replicas"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_a_4xx_from_the_real_server() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    let server = Server::start(&db, &dir.path().join("server.log"));
    let addr = server.base.strip_prefix("http://").unwrap().to_owned();
    let send = |request: Vec<u8>| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&request);
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let huge_cookie = format!(
        "GET /v1/auth/check HTTP/1.1\r\nHost: x\r\nCookie: __Host-cloakroom={}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let answer = send(huge_cookie.into_bytes());
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer:?}");
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = send(format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").into_bytes());
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer:?}");
    // And it still serves.
    let r = reqwest::get(format!("{}/healthz", server.base)).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_headers_too_slowly_is_cut_off() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("s.db"),
        &dir.path().join("s.log"),
        &["--header-timeout", "1s"],
    );
    let addr = server.base.strip_prefix("http://").unwrap().to_owned();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap(); // and never the blank line
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = slow.read(&mut buf).unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        n == 0 || answer.starts_with("HTTP/1.1 408"),
        "the connection is closed, not kept: {answer:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(4), "cut off after about the header timeout");
    // Ordinary requests are unaffected.
    let r = reqwest::get(format!("{}/healthz", server.base)).await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Regression: the first-run setup line was written with `println!`, which panics when whoever
/// started the server read the listening line and closed its end of stdout: the server died at
/// its first start on an empty store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("s.log");
    let server = Server::start(&dir.path().join("s.db"), &log); // reads one line, closes stdout
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = reqwest::get(format!("{}/healthz", server.base)).await.unwrap();
    assert_eq!(r.status(), 200);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("one-time setup link"), "{log}");
    assert!(!log.contains("/setup?token="), "text logs leave the link out");

    // JSON logs carry it as a field, for platforms where only the log is at hand.
    let log = dir.path().join("j.log");
    let json = ["--log-format", "json"];
    let _server = Server::start_with(&dir.path().join("j.db"), &log, &json);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&log).unwrap();
    let line = log.lines().find(|l| l.contains("one-time setup link")).expect("the setup warning");
    let line: Value = serde_json::from_str(line).unwrap();
    let url = line["fields"]["setup_url"].as_str().unwrap_or_default();
    assert!(url.contains("/setup?token="), "{line}");
}

/// `cloakroom serve` answers `GET /v1/auth/check` before its router (the hot path of every app
/// behind a proxy). The answers must be the router's: status, error code and `X-Cloakroom-*`
/// headers, for every kind of request, and the request must be counted like any routed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_forward_auth_check_answers_as_the_router_does() {
    use std::sync::Arc;

    use axum::body::Body;
    use cloakroom_core::password::Cost;
    use cloakroom_server::config::RawConfig;
    use tower::ServiceExt as _;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cloakroom.db");
    add_user(&db, "alice", "staff", PASSWORD);
    let server = Server::start(&db, &dir.path().join("server.log"));
    let http = reqwest::Client::new();
    let login = common::process::http_login(&http, &server.base, "alice", PASSWORD).await;
    // The router, on the same file.
    let store = cloakroom_store_sqlite::SqliteStore::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap();
    let config = RawConfig::default().validate().unwrap();
    let router =
        cloakroom_server::app(cloakroom_server::serve::state(Arc::new(store), config, Cost::ASVS));

    let garbage = "__Host-cloakroom=crs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case<'_>> = vec![
        ("GET", "/v1/auth/check", Some(&login.cookie), vec![]),
        ("HEAD", "/v1/auth/check", Some(&login.cookie), vec![]),
        ("GET", "/v1/auth/check?role=staff", Some(&login.cookie), vec![]),
        ("GET", "/v1/auth/check?role=admin", Some(&login.cookie), vec![]),
        ("GET", "/v1/auth/check?audience=files", Some(&login.cookie), vec![]),
        ("GET", "/v1/auth/check?bogus=1", Some(&login.cookie), vec![]),
        ("GET", "/v1/auth/check?role=a&role=b", Some(&login.cookie), vec![]),
        ("GET", "/v1/auth/check", None, vec![]),
        ("GET", "/v1/auth/check", Some(garbage), vec![]),
        ("GET", "/v1/auth/check", None, vec![("authorization", "Basic YTpi")]),
        ("GET", "/v1/auth/check", Some(&login.cookie), vec![("x-original-method", "POST")]),
        (
            "GET",
            "/v1/auth/check",
            Some(&login.cookie),
            vec![("x-forwarded-method", "DELETE"), ("x-csrf-token", &login.csrf)],
        ),
        ("POST", "/v1/auth/check", Some(&login.cookie), vec![]),
    ];
    for (method, path, cookie, extra) in cases {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut served = http.request(m, format!("{}{path}", server.base));
        let mut routed = axum::http::Request::builder().method(method).uri(path);
        for (k, v) in cookie.map(|c| ("cookie", c)).into_iter().chain(extra) {
            served = served.header(k, v);
            routed = routed.header(k, v);
        }
        let served = served.send().await.unwrap();
        let routed = router.clone().oneshot(routed.body(Body::empty()).unwrap()).await.unwrap();
        let what = format!("{method} {path} cookie={} ", cookie.is_some());
        assert_eq!(served.status().as_u16(), routed.status().as_u16(), "{what}");
        for h in ["x-cloakroom-user-id", "x-cloakroom-username", "x-cloakroom-roles"] {
            let (a, b) = (served.headers().get(h), routed.headers().get(h));
            assert_eq!(a.map(|v| v.as_bytes()), b.map(|v| v.as_bytes()), "{what}{h}");
        }
        assert_eq!(
            served.headers().get("x-cloakroom-session-id").is_some(),
            routed.headers().get("x-cloakroom-session-id").is_some(),
            "{what}"
        );
        let served_body = served.bytes().await.unwrap();
        let routed_body = axum::body::to_bytes(routed.into_body(), 1 << 16).await.unwrap();
        let code =
            |b: &[u8]| serde_json::from_slice::<Value>(b).ok().map(|v| v["error"]["code"].clone());
        assert_eq!(code(&served_body), code(&routed_body), "{what}");
    }
    let metrics = http.get(format!("{}/metrics", server.base)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    for line in [
        r#"cloakroom_http_requests_total{route="/v1/auth/check",status="200"}"#,
        r#"cloakroom_http_requests_total{route="/v1/auth/check",status="403"}"#,
        r#"cloakroom_auth_checks_total{outcome="allowed"}"#,
        r#"cloakroom_auth_checks_total{outcome="forbidden"}"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
}
