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

/// Regression (red-team review): the invalidation was PUBLISHed after the change, behind writes
/// that could fail with `?`, so a committed revocation could go unannounced and other nodes
/// served the revoked session until their safety TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_survive_failed_secondary_writes() {
    let (healthy, server) = fresh().await;
    let faulty = RedisStore::connect(&server.url_with_read_only_hints().await).await.unwrap();
    cloakroom_core::testing::feed::announcements_survive_failed_secondary_writes(&healthy, &faulty)
        .await;
}

/// A lost announcement is detected: the next one's change number skips, and the subscriber
/// stops trusting its cache (Disconnected, then Connected) until it has flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_change_numbers_flushes_the_subscriber() {
    use cloakroom_core::store::BusEvent;
    use cloakroom_core::store::prelude::*;
    use cloakroom_core::testing;
    let (store, server) = fresh().await;
    let alice = testing::user(&store, "alice", &[]).await;
    let mut feed = store.subscribe().await.unwrap();
    assert_eq!(feed.recv().await, Some(BusEvent::Connected));
    let (_, one) = testing::session(&store, &alice, testing::t0()).await;
    store.revoke_session(&one).await.unwrap();
    assert!(matches!(feed.recv().await, Some(BusEvent::Invalidate { .. })));
    // A change whose announcement never reached this subscriber: its number is used up.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("INCR").arg("cr:bus:seq").query_async(&mut conn).await.unwrap();
    let (_, two) = testing::session(&store, &alice, testing::t0()).await;
    store.revoke_session(&two).await.unwrap();
    assert!(matches!(feed.recv().await, Some(BusEvent::Invalidate { .. })));
    let next = tokio::time::timeout(Duration::from_secs(2), feed.recv()).await.unwrap();
    assert_eq!(next, Some(BusEvent::Disconnected), "the gap is noticed");
    assert_eq!(feed.recv().await, Some(BusEvent::Connected));
}

/// Every key in the instance, sorted.
async fn keys(url: &str) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut all: Vec<String> = redis::cmd("KEYS").arg("cr:*").query_async(&mut conn).await.unwrap();
    // The audit streams and the bus's one change counter are meant to stay.
    all.retain(|k| !k.starts_with("cr:audit") && k != "cr:bus:seq");
    all.sort();
    all
}

/// Spring Session leaks index entries for sessions that expired or were revoked. Here the
/// per-user index, the token index and the id index never outlive the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_index_entry_outlives_its_session() {
    use cloakroom_core::store::prelude::*;
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

/// Review finding: the subscription had no heartbeat, so a server that stopped answering without
/// closing the connection left the subscriber believing it was live (and a gap in the change
/// numbers could not show without a next message). A subscription that does not answer a ping
/// within 2 s is lost: Disconnected, then Connected once the server answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_disconnects_the_subscriber() {
    use cloakroom_core::store::BusEvent;
    use cloakroom_core::store::prelude::*;
    let (store, server) = fresh().await;
    let mut feed = store.subscribe().await.unwrap();
    assert_eq!(feed.recv().await, Some(BusEvent::Connected));
    server.pause();
    let next = tokio::time::timeout(Duration::from_secs(8), feed.recv()).await;
    server.resume();
    assert_eq!(next.unwrap(), Some(BusEvent::Disconnected), "a frozen server is noticed");
    let back = tokio::time::timeout(Duration::from_secs(10), feed.recv()).await.unwrap();
    assert_eq!(back, Some(BusEvent::Connected), "and the subscriber comes back by itself");
}

/// Regression: the heartbeat read the subscribed connection's answer to PING (the RESP2 array
/// `["pong", ""]`) as a string, failed, and so dropped a healthy subscription at every beat:
/// every 2 s the cache was flushed and bypassed for a quarter of a second, on every node. An
/// answering server keeps the subscription through several heartbeats, and announcements still
/// arrive after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_subscription_survives_its_heartbeats() {
    use cloakroom_core::store::BusEvent;
    use cloakroom_core::store::prelude::*;
    use cloakroom_core::testing;
    let (store, _server) = fresh().await;
    let mut feed = store.subscribe().await.unwrap();
    assert_eq!(feed.recv().await, Some(BusEvent::Connected));
    let quiet = tokio::time::timeout(Duration::from_millis(6_500), feed.recv()).await;
    assert!(quiet.is_err(), "three heartbeats on a healthy server: {:?}", quiet.ok());
    let alice = testing::user(&store, "alice", &[]).await;
    let (_, id) = testing::session(&store, &alice, testing::t0()).await;
    store.revoke_session(&id).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(2), feed.recv()).await {
            Ok(Some(BusEvent::Invalidate { user: Some(u), .. })) if u == alice.id => break,
            Ok(Some(BusEvent::Invalidate { .. })) => continue,
            other => panic!("after the heartbeats the revocation must arrive: {other:?}"),
        }
    }
}
