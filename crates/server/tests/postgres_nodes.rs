//! Three `cloakroom serve` processes on one PostgreSQL, end to end: a session made on one node
//! is checked on the others; a revocation or a role change made on one is seen by the others at
//! once (each node's cache is invalidated over LISTEN/NOTIFY, here on its own `--store-listen`
//! URL); and when PostgreSQL stops, checks answer 503, never 200, until it is back, after which
//! every node recovers by itself, no revoked session returns and no answered login is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use cloakroom_store_postgres::testing::PgServer;
use common::nodes::{Node, check, login, share_and_revoke};
use common::process::{HttpLogin, cli_store, until};

/// The main URL and the listener's (the same server here; told apart by application name).
fn urls(pg: &PgServer, extra: &str) -> (String, String) {
    (
        format!("{}?application_name=cloakroom{extra}", pg.url()),
        format!("{}?application_name=cloakroom-listen", pg.url()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_sessions_and_revocations_over_postgres() {
    let pg = PgServer::start().await;
    let (store, listen) = urls(&pg, "");
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (nodes, owner, _) =
        share_and_revoke(&store, dir.path(), &http, &["--store-listen", &listen]).await;
    // Each node's listener is on the listen URL.
    let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&pg.url()).await.unwrap();
    let listeners: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cloakroom-listen'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(listeners, 3, "one listening connection per node");
    // Revoking all of the user's sessions through the CLI (another process) reaches every node.
    let (code, _, _) = cli_store(&store, &["session", "revoke", "--user", "alice"], None);
    assert_eq!(code, 0);
    for node in &nodes {
        until(Duration::from_secs(1), async || check(&http, node, &owner, "").await == 401).await;
    }
}

/// Checks `who` on every node at once, and returns the statuses.
async fn check_all(http: &reqwest::Client, nodes: &[Node; 3], who: &HttpLogin) -> [u16; 3] {
    let [a, b, c] = nodes;
    let (x, y, z) =
        tokio::join!(check(http, a, who, ""), check(http, b, who, ""), check(http, c, who, ""));
    [x, y, z]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_is_503_and_every_node_recovers() {
    let mut pg = PgServer::start().await;
    // Give up connecting after a second: checks answer 503 quickly while the database is gone.
    let (store, listen) = urls(&pg, "&connect_timeout=1");
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (nodes, owner, victim) =
        share_and_revoke(&store, dir.path(), &http, &["--store-listen", &listen]).await;

    // A login answered just before PostgreSQL stops at once (no checkpoint, no goodbye).
    let last = login(&http, &nodes[1]).await;
    pg.stop_immediate();
    for node in &nodes {
        until(Duration::from_secs(5), async || check(&http, node, &owner, "").await == 503).await;
    }
    // Never a 200 while the store cannot vouch: not from a cache, for no session.
    for _ in 0..2 {
        for who in [&owner, &last, &victim] {
            assert_eq!(check_all(&http, &nodes, who).await, [503; 3]);
        }
    }
    let r = http.get(format!("{}/readyz", nodes[0].base)).send().await.unwrap();
    assert_eq!(r.status(), 503);

    // Back: every node recovers by itself within 5 s; the revoked session stays revoked, and the
    // login answered before the crash is there.
    pg.restart().await;
    let back = Instant::now();
    let limit = Duration::from_secs(5);
    until(limit, async || check_all(&http, &nodes, &owner).await == [200; 3]).await;
    eprintln!("every node serves again {:?} after PostgreSQL came back", back.elapsed());
    assert_eq!(check_all(&http, &nodes, &last).await, [200; 3], "the last login survived");
    assert_eq!(check_all(&http, &nodes, &victim).await, [401; 3], "nothing revoked comes back");

    // And invalidations flow again after the reconnect.
    let r = owner
        .write(&http, reqwest::Method::DELETE, format!("{}/v1/sessions/{}", nodes[2].base, last.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for node in &nodes {
        until(Duration::from_secs(1), async || check(&http, node, &last, "").await == 401).await;
    }
}
