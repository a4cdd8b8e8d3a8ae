//! The Redis store against the shared conformance suite, each test on its own `redis-server`
//! (free port, temp dir, nothing persisted), stopped when the test ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cloakroom_store_redis::RedisStore;
use cloakroom_store_redis::testing::RedisServer;

async fn fresh() -> (RedisStore, RedisServer) {
    let server = RedisServer::start().await;
    let store = RedisStore::connect(&server.url()).await.unwrap();
    (store, server)
}

cloakroom_core::store_conformance_tests!(fresh);

/// Every key in the instance, sorted.
async fn keys(url: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut all: Vec<String> = redis::cmd("KEYS").arg("cr:*").query_async(&mut conn).await.unwrap();
    all.retain(|k| !k.starts_with("cr:audit"));
    all.sort();
    all
}

/// Spring Session leaks index entries for sessions that expired or were revoked. Here the
/// per-user index, the token index and the id index never outlive the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_index_entry_outlives_its_session() {
    use cloakroom_core::Store as _;
    use cloakroom_core::testing::{new_session, session, user};
    let (store, server) = fresh().await;
    let alice = user(&store, "alice", &[]).await;
    let baseline = keys(&server.url()).await; // the user and the username index
    // Revoked: one, then the rest.
    let now = cloakroom_core::Timestamp::now();
    let (_, s1) = session(&store, &alice, now).await;
    let (_, _s2) = session(&store, &alice, now).await;
    store.revoke_session(&s1).await.unwrap();
    store.revoke_user_sessions(&alice.id, None).await.unwrap();
    assert_eq!(keys(&server.url()).await, baseline, "revocation leaves no key behind");

    // Expired in real time: the session hash goes by TTL, and the next access prunes the index.
    let (_, mut short) = new_session(&alice, now);
    short.idle_expires_at = now.plus(Duration::from_millis(300));
    store.create_session(&short, 0, now).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later = cloakroom_core::Timestamp::now();
    assert!(store.list_sessions(Some(&alice.id), later).await.unwrap().is_empty());
    assert_eq!(store.delete_expired(later).await.unwrap(), 0, "already gone by TTL");
    let left = keys(&server.url()).await;
    assert!(
        !left.iter().any(|k| k.starts_with("cr:s:") || k.starts_with("cr:x:")),
        "no session or index entry for the expired session: {left:?}"
    );
}
