//! Attacks from the red-team review, against the real binary: each test is named after the hole
//! it pins and failed before the fix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cloakroom_store_redis::testing::RedisServer;
use common::process::Server;

const PASSWORD: &str = "correct horse battery staple";
/// The documented limit that binds one client guessing one account: 10 failures per 15 minutes.
const ACCOUNT_IP_LIMIT: usize = 10;

/// Sends `n` wrong-password logins for alice at once, spread over `bases` in turn; returns how
/// many were verified (401) and how many refused by the throttle (429).
async fn guess_at_once(bases: &[String], n: usize) -> (usize, usize) {
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let guesses: Vec<_> = (0..n)
        .map(|i| {
            let (http, base) = (http.clone(), bases[i % bases.len()].clone());
            tokio::spawn(async move {
                http.post(format!("{base}/v1/login"))
                    .json(
                        &serde_json::json!({"username": "alice", "password": format!("guess {i}")}),
                    )
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let (mut verified, mut refused) = (0, 0);
    for g in guesses {
        match g.await.unwrap() {
            401 => verified += 1,
            429 => refused += 1,
            other => panic!("a guess answered {other}"),
        }
    }
    (verified, refused)
}

/// Regression: `password_login` read the windows, ran Argon2, then recorded the failure, so 300
/// concurrent guesses were all verified (300 × 401) before the first 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_passwords_are_throttled_before_they_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("c.db").display());
    common::process::add_user_to(&store, "alice", PASSWORD);
    let server = Server::start_store(&store, &dir.path().join("c.log"), &[]);
    let (verified, refused) = guess_at_once(std::slice::from_ref(&server.base), 300).await;
    assert_eq!(verified + refused, 300);
    assert!(
        (1..=ACCOUNT_IP_LIMIT).contains(&verified),
        "{verified} guesses verified; the limit is {ACCOUNT_IP_LIMIT}"
    );
}

/// The same race spread over two nodes sharing one Redis: the windows are the store's, and
/// each window's check-and-record is one script, so two nodes do not get two budgets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_passwords_over_two_nodes_share_one_budget() {
    let redis = RedisServer::start().await;
    let store = redis.url();
    let dir = tempfile::tempdir().unwrap();
    common::process::add_user_to(&store, "alice", PASSWORD);
    let a = Server::start_store(&store, &dir.path().join("a.log"), &[]);
    let b = Server::start_store(&store, &dir.path().join("b.log"), &[]);
    let (verified, refused) = guess_at_once(&[a.base.clone(), b.base.clone()], 300).await;
    assert_eq!(verified + refused, 300);
    assert!(
        (1..=ACCOUNT_IP_LIMIT).contains(&verified),
        "{verified} guesses verified over two nodes; the limit is {ACCOUNT_IP_LIMIT}"
    );
}

/// Opens a connection to `base` (`http://host:port`) and sends `head`, then holds it open.
async fn hold(base: &str, head: String) -> Option<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(head.as_bytes()).await.ok()?;
    Some(stream)
}

/// Regression: a client that sent complete headers and then trickled its body held its
/// connection forever, `/v1/revocations` streams needed no credentials and had no cap, and
/// nothing capped connections: under a 256-descriptor limit, 300 such clients made `/healthz`
/// time out ("Too many open files"), and with it every app behind forward-auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_bodies_and_event_streams_cannot_starve_health_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("f.db").display());
    common::process::add_user_to(&store, "alice", PASSWORD);
    let server = Server::start_limited(&store, &dir.path().join("f.log"), 256);
    let base = server.base.clone();
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(1))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let who = common::process::http_login(&http, &base, "alice", PASSWORD).await;

    // 300 uploads that never finish, and 150 event streams, all held open.
    let mut held = Vec::new();
    for _ in 0..300 {
        let head = "POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                    Content-Length: 100000\r\n\r\n{"
            .to_owned();
        held.extend(hold(&base, head).await);
    }
    for _ in 0..150 {
        let head = "GET /v1/revocations HTTP/1.1\r\nHost: x\r\n\r\n".to_owned();
        held.extend(hold(&base, head).await);
    }
    assert!(held.len() >= 400, "the clients connected ({})", held.len());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    // Health and the forward-auth check keep answering, each within a second.
    for round in 0..10 {
        let r = http.get(format!("{base}/healthz")).send().await;
        assert_eq!(r.map(|r| r.status().as_u16()).ok(), Some(200), "healthz, round {round}");
        let r =
            http.get(format!("{base}/v1/auth/check")).header("cookie", &who.cookie).send().await;
        assert_eq!(r.map(|r| r.status().as_u16()).ok(), Some(200), "check, round {round}");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // Streams are capped (16 per address): one more from here is refused at once.
    let r = http.get(format!("{base}/v1/revocations")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "server_busy");
    drop(held);
}

/// Regression: a body trickled byte by byte held its connection forever. Now it must arrive
/// within `body_timeout`; past that the request fails with a 4xx and the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_off_at_the_body_deadline() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("b.db");
    let server = Server::start_with(&db, &dir.path().join("b.log"), &["--body-timeout", "1s"]);
    let head = "POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 100\r\n\r\n{";
    let mut stream = hold(&server.base, head.to_owned()).await.unwrap();
    let started = std::time::Instant::now();
    let trickle = async {
        for _ in 0..20 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            if stream.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_millis(1500), trickle).await;
    let mut answer = Vec::new();
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(3), stream.read_to_end(&mut answer));
    assert!(read.await.is_ok(), "the connection was closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

/// Regression: any logged-in user could issue grants (and trade them for sessions) as fast as
/// the server answered, each leaving rows behind that every node and every verifier then read.
/// Grant issue is limited per user now, across nodes. revoke-others is not limited (a thief
/// holding one session must not be able to spend the owner's budget for logging it out): its
/// work is bounded by the session cap, and its grant revocation is coalesced per user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_issue_is_rate_limited_per_user_and_revoke_others_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    common::process::add_user(&db, "alice", "staff", PASSWORD);
    let server = Server::start(&db, &dir.path().join("r.log"));
    let http = reqwest::Client::new();
    let who = common::process::http_login(&http, &server.base, "alice", PASSWORD).await;
    let post = |path: &str, body: serde_json::Value| {
        who.write(&http, reqwest::Method::POST, format!("{}{path}", server.base)).json(&body)
    };
    let grant = serde_json::json!({"audience": "files"});
    for i in 0..120 {
        assert_eq!(post("/v1/grants", grant.clone()).send().await.unwrap().status(), 201, "{i}");
    }
    let r = post("/v1/grants", grant).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    for i in 0..30 {
        let r = post("/v1/sessions/revoke-others", serde_json::json!({})).send().await.unwrap();
        assert_eq!(r.status(), 200, "{i}");
    }
    // Another user is not affected by alice's grant budget.
    common::process::add_user(&db, "bob", "staff", PASSWORD);
    let bob = common::process::http_login(&http, &server.base, "bob", PASSWORD).await;
    let r = bob
        .write(&http, reqwest::Method::POST, format!("{}/v1/grants", server.base))
        .json(&serde_json::json!({"audience": "files"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}
