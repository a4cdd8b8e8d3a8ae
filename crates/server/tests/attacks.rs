//! Attacks from the red-team review, against the real binary: each test is named after the hole
//! it pins and failed before the fix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cloakroom_store_redis::testing::RedisServer;
use common::process::{Server, cli_store};

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
    let args = ["user", "add", "alice", "--password-stdin"];
    let (code, out, err) = cli_store(&store, &args, Some(&format!("{PASSWORD}\n")));
    assert_eq!(code, 0, "{out}{err}");
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
    let (code, out, err) = cli_store(
        &store,
        &["user", "add", "alice", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(code, 0, "{out}{err}");
    let a = Server::start_store(&store, &dir.path().join("a.log"), &[]);
    let b = Server::start_store(&store, &dir.path().join("b.log"), &[]);
    let (verified, refused) = guess_at_once(&[a.base.clone(), b.base.clone()], 300).await;
    assert_eq!(verified + refused, 300);
    assert!(
        (1..=ACCOUNT_IP_LIMIT).contains(&verified),
        "{verified} guesses verified over two nodes; the limit is {ACCOUNT_IP_LIMIT}"
    );
}
