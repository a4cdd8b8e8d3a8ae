//! Three `cloakroom serve` processes on one Redis, end to end: a session made on one node is
//! checked on the others; a revocation or a role change made on one is seen by the others at once
//! (each node's cache is invalidated over Redis pub/sub); and when Redis dies, checks answer 503,
//! never 200, until it is back, after which the nodes recover by themselves and no revoked
//! session returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cloakroom_store_redis::testing::{RedisCluster, RedisServer};
use common::nodes::{Node, PASSWORD, check, login, share_and_revoke};
use common::process::{Server, cli_store, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_sessions_and_revocations_over_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    share_and_revoke(&cluster.url(), dir.path(), &http, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_sessions_and_revocations_over_redis() {
    let mut redis = RedisServer::start_persistent().await;
    let store = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (nodes, owner, victim) = share_and_revoke(&store, dir.path(), &http, &[]).await;
    let [a, b, _] = &nodes;

    // Redis dies: checks answer 503, never 200.
    redis.kill();
    for node in &nodes {
        until(Duration::from_secs(5), async || check(&http, node, &owner, "").await == 503).await;
    }
    let r = http.get(format!("{}/readyz", a.base)).send().await.unwrap();
    assert_eq!(r.status(), 503);

    // Redis is back: the nodes recover by themselves within 5 s; the revoked session stays revoked.
    redis.restart().await;
    for node in &nodes {
        until(Duration::from_secs(5), async || check(&http, node, &owner, "").await == 200).await;
        assert_eq!(check(&http, node, &victim, "").await, 401);
    }
    // And invalidations flow again after the reconnect.
    let r = owner
        .write(&http, reqwest::Method::POST, format!("{}/v1/sessions/revoke-others", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (code, _, _) = cli_store(&store, &["session", "revoke", "--user", "alice"], None);
    assert_eq!(code, 0);
    for node in &nodes {
        until(Duration::from_secs(1), async || check(&http, node, &owner, "").await == 401).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_redis_over_tls_with_a_private_ca() {
    let redis = RedisServer::start_tls().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, redis.ca_pem()).unwrap();
    let ca = ca.to_str().unwrap().to_owned();
    let store = redis.url();
    assert!(store.starts_with("rediss://"));
    let (code, out, err) = cli_store(
        &store,
        &["user", "add", "alice", "--password-stdin", "--store-ca", &ca],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = cli_store(&store, &["user", "list"], None);
    assert_eq!(code, 1, "without the CA the certificate is refused");
    assert!(err.contains("store"), "{err}");
    let server = Server::start_store(&store, &dir.path().join("tls.log"), &["--store-ca", &ca]);
    let node = Node { base: server.base.clone(), server };
    let http = reqwest::Client::new();
    let who = login(&http, &node).await;
    assert_eq!(check(&http, &node, &who, "").await, 200);
}
