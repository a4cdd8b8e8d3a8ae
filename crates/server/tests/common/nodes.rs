//! Several `cloakroom serve` processes on one shared store, driven over HTTP: what the
//! multi-node tests of every shared store (Redis, PostgreSQL) have in common.

use std::time::Duration;

use super::process::{HttpLogin, Server, cli_store, http_login, until};

/// alice's password in these tests.
pub const PASSWORD: &str = "correct horse battery staple";

/// A running node and its base URL.
pub struct Node {
    pub server: Server,
    pub base: String,
}

/// Starts a node on `store` with extra `serve` flags, logging to `dir/NAME.log`.
pub fn start_node(store: &str, dir: &std::path::Path, name: &str, extra: &[&str]) -> Node {
    let server = Server::start_store(store, &dir.join(format!("{name}.log")), extra);
    let base = server.base.clone();
    Node { server, base }
}

/// Logs alice in on `node`.
pub async fn login(http: &reqwest::Client, node: &Node) -> HttpLogin {
    http_login(http, &node.base, "alice", PASSWORD).await
}

/// `GET /v1/auth/check{query}` on `node` with `who`'s cookie: the status (0 when no answer).
pub async fn check(http: &reqwest::Client, node: &Node, who: &HttpLogin, query: &str) -> u16 {
    http.get(format!("{}/v1/auth/check{query}", node.base))
        .header("cookie", &who.cookie)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Three nodes on `store` (each started with `extra`): sessions are shared, a revocation on one
/// node and a role change are seen by the others within a second. Returns the nodes, the
/// owner's login and the revoked one.
pub async fn share_and_revoke(
    store: &str,
    dir: &std::path::Path,
    http: &reqwest::Client,
    extra: &[&str],
) -> ([Node; 3], HttpLogin, HttpLogin) {
    let (code, out, err) = cli_store(
        store,
        &["user", "add", "alice", "--role", "staff", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(code, 0, "{out}{err}");
    let nodes = [
        start_node(store, dir, "a", extra),
        start_node(store, dir, "b", extra),
        start_node(store, dir, "c", extra),
    ];
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
