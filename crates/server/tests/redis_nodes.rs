//! Three `cloakroom serve` processes on one Redis, end to end: a session made on one node is
//! checked on the others; a revocation or a role change made on one is seen by the others at once
//! (each node's cache is invalidated over Redis pub/sub); and when Redis dies, checks answer 503,
//! never 200, until it is back, after which the nodes recover by themselves and no revoked
//! session returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cloakroom_store_redis::testing::{RedisCluster, RedisServer};
use common::process::{HttpLogin, Server, cli_store, http_login, until};

const PASSWORD: &str = "correct horse battery staple";

struct Node {
    _server: Server,
    base: String,
}

fn start_node(store: &str, dir: &std::path::Path, name: &str) -> Node {
    let server = Server::start_store(store, &dir.join(format!("{name}.log")), &[]);
    let base = server.base.clone();
    Node { _server: server, base }
}

type Login = HttpLogin;

async fn login(http: &reqwest::Client, node: &Node) -> Login {
    http_login(http, &node.base, "alice", PASSWORD).await
}

async fn check(http: &reqwest::Client, node: &Node, who: &Login, query: &str) -> u16 {
    http.get(format!("{}/v1/auth/check{query}", node.base))
        .header("cookie", &who.cookie)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Three nodes on `store`: sessions are shared, a revocation on one node and a role change are
/// seen by the others within a second. Returns the nodes, the owner's login and the revoked one.
async fn share_and_revoke(
    store: &str,
    dir: &std::path::Path,
    http: &reqwest::Client,
) -> ([Node; 3], Login, Login) {
    let (code, out, err) = cli_store(
        store,
        &["user", "add", "alice", "--role", "staff", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(code, 0, "{out}{err}");
    let nodes =
        [start_node(store, dir, "a"), start_node(store, dir, "b"), start_node(store, dir, "c")];
    let [a, b, c] = &nodes;

    // A session made on A is good on B and C (and now cached on each).
    let victim = login(http, a).await;
    let owner = login(http, a).await;
    for node in &nodes {
        for _ in 0..3 {
            assert_eq!(check(http, node, &victim, "").await, 200);
        }
    }

    // Revoked on C: A and B refuse it within the bound.
    let r = owner
        .write(http, reqwest::Method::DELETE, format!("{}/v1/sessions/{}", c.base, victim.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for node in [a, b] {
        let lag =
            until(Duration::from_secs(1), async || check(http, node, &victim, "").await == 401)
                .await;
        eprintln!("revocation seen by {} after {lag:?}", node.base);
    }

    // A role change made through the CLI is seen by B's role check at once.
    assert_eq!(check(http, b, &owner, "?role=billing").await, 403);
    let (code, _, _) = cli_store(store, &["user", "role", "alice", "--add", "billing"], None);
    assert_eq!(code, 0);
    until(Duration::from_secs(1), async || check(http, b, &owner, "?role=billing").await == 200)
        .await;
    // The cookie's token predates the role change; Cloakroom's own endpoints would rotate it, the
    // forward-auth check never does (its Set-Cookie would not reach the browser).
    assert_eq!(check(http, a, &owner, "?role=billing").await, 200);
    (nodes, owner, victim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_sessions_and_revocations_over_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    share_and_revoke(&cluster.url(), dir.path(), &http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_sessions_and_revocations_over_redis() {
    let mut redis = RedisServer::start_persistent().await;
    let store = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (nodes, owner, victim) = share_and_revoke(&store, dir.path(), &http).await;
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
    let node = Node { base: server.base.clone(), _server: server };
    let http = reqwest::Client::new();
    let who = login(&http, &node).await;
    assert_eq!(check(&http, &node, &who, "").await, 200);
}
