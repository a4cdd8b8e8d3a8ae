//! Three `cloakroom serve` processes on a Sentinel-managed Redis (a primary, a replica, three
//! Sentinels, started by the test): a session is revoked and the primary is killed at once. Once
//! the replica is promoted, the revoked session is refused (401) and the other accepted (200) on
//! every node, and the nodes got there by themselves, within a bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cloakroom_store_redis::testing::RedisReplicated;
use common::process::{HttpLogin, Server, cli_store, http_login, until};

const PASSWORD: &str = "correct horse battery staple";

async fn check(http: &reqwest::Client, base: &str, who: &HttpLogin) -> u16 {
    http.get(format!("{base}/v1/auth/check"))
        .header("cookie", &who.cookie)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_survives_a_sentinel_failover_on_every_node() {
    let mut redis = RedisReplicated::start().await;
    let store = redis.url();
    let dir = tempfile::tempdir().unwrap();
    common::process::add_user_to(&store, "alice", PASSWORD);
    let servers: Vec<Server> = ["a", "b", "c"]
        .iter()
        .map(|n| Server::start_store(&store, &dir.path().join(format!("{n}.log")), &[]))
        .collect();
    let http = reqwest::Client::new();
    let victim = http_login(&http, &servers[0].base, "alice", PASSWORD).await;
    let owner = http_login(&http, &servers[0].base, "alice", PASSWORD).await;
    for s in &servers {
        assert_eq!(check(&http, &s.base, &victim).await, 200);
        assert_eq!(check(&http, &s.base, &owner).await, 200);
    }

    // Revoked on C, and the primary dies right after the 204.
    // A 503 (no replica acknowledged in time, on a loaded machine) is retried; the retry's 404
    // means the first one was acknowledged by then.
    let url = format!("{}/v1/sessions/{}", servers[2].base, victim.id);
    let mut status = 503;
    for _ in 0..20 {
        let r = owner.write(&http, reqwest::Method::DELETE, url.clone()).send().await.unwrap();
        status = r.status().as_u16();
        if status != 503 {
            break;
        }
    }
    assert!(status == 204 || status == 404, "{status}");
    redis.kill_primary();
    let promoted = redis.wait_for_promotion(Duration::from_secs(15)).await;
    eprintln!("replica promoted {promoted:?} after the primary died");

    // Every node finds the new primary by itself: the other session works again, the revoked
    // one never does.
    for s in &servers {
        let lag =
            until(Duration::from_secs(10), async || check(&http, &s.base, &owner).await == 200)
                .await;
        eprintln!("{} serves again {lag:?} after the promotion", s.base);
        assert_eq!(check(&http, &s.base, &victim).await, 401);
    }
    // And invalidations flow on the new primary.
    let (code, _, _) = cli_store(&store, &["session", "revoke", "--user", "alice"], None);
    assert_eq!(code, 0);
    for s in &servers {
        until(Duration::from_secs(2), async || check(&http, &s.base, &owner).await == 401).await;
    }
}
