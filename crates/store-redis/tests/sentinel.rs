//! The Redis store through Sentinel (`redis+sentinel://`): a primary, a replica and three
//! Sentinels, started per test. The conformance suite, then what must survive a failover: a
//! revocation acknowledged before the primary died stays revoked on the promoted replica, and
//! the store follows the new primary (commands and the bus) by itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use cloakroom_core::store::BusEvent;
use cloakroom_core::store::prelude::*;
use cloakroom_core::{StoreError, testing};
use cloakroom_store_redis::RedisStore;
use cloakroom_store_redis::testing::RedisReplicated;

async fn fresh() -> (RedisStore, RedisReplicated) {
    let redis = RedisReplicated::start().await;
    let store = RedisStore::connect(&redis.url()).await.unwrap();
    (store, redis)
}

cloakroom_core::store_conformance_tests!(fresh);

/// Retries `f` until it succeeds (the store answers Unavailable during the failover).
async fn eventually<T, F: AsyncFnMut() -> Result<T, StoreError>>(within: Duration, mut f: F) -> T {
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => assert!(start.elapsed() < within, "still failing after {within:?}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_survives_a_failover_and_the_store_follows_it() {
    let (store, mut redis) = fresh().await;
    let alice = testing::user(&store, "alice", &[]).await;
    let now = cloakroom_core::Timestamp::now();
    let (kept_token, _kept) = testing::session(&store, &alice, now).await;
    let (gone_token, gone) = testing::session(&store, &alice, now).await;
    let mut feed = store.subscribe().await.unwrap();
    assert_eq!(feed.recv().await, Some(BusEvent::Connected));

    // Revoked, and the primary dies at once: the replica must already have it.
    // On a loaded machine WAIT may time out (Unavailable, fail closed): retrying is safe, and
    // only an acknowledged revocation counts.
    eventually(Duration::from_secs(10), async || store.revoke_session(&gone).await).await;
    redis.kill_primary();
    let promoted = redis.wait_for_promotion(Duration::from_secs(15)).await;
    eprintln!("replica promoted {promoted:?} after the primary died");

    let later = cloakroom_core::Timestamp::now();
    let revoked = eventually(Duration::from_secs(10), async || {
        store.session_by_token(&gone_token.hash(), later).await
    })
    .await;
    assert!(revoked.is_none(), "the revoked session stays revoked");
    let kept = store.session_by_token(&kept_token.hash(), later).await.unwrap();
    assert!(kept.is_some(), "a session made before the failover keeps working");

    // The bus noticed (Disconnected: caches are bypassed) and subscribed on the new primary.
    let mut seen = Vec::new();
    while seen.last() != Some(&BusEvent::Connected) {
        let e = tokio::time::timeout(Duration::from_secs(10), feed.recv()).await.unwrap();
        seen.push(e.unwrap());
    }
    assert!(seen.contains(&BusEvent::Disconnected), "{seen:?}");
    // Writes go to the new primary, and their invalidations arrive.
    store.revoke_user_sessions(&alice.id, None).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(2), feed.recv()).await.unwrap();
    assert!(matches!(next, Some(BusEvent::Invalidate { .. })), "{next:?}");
    assert!(store.session_by_token(&kept_token.hash(), later).await.unwrap().is_none());
}

/// Fail closed: a replica that acknowledges nothing (stopped) makes a revocation answer
/// Unavailable after the bounded wait, never success; once it is back, revocations succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_no_replica_acknowledges_is_not_reported_done() {
    let (store, redis) = fresh().await;
    let alice = testing::user(&store, "alice", &[]).await;
    let now = cloakroom_core::Timestamp::now();
    let (_, one) = testing::session(&store, &alice, now).await;
    let (_, two) = testing::session(&store, &alice, now).await;
    assert!(store.revoke_session(&one).await.unwrap().is_some(), "with the replica up");

    redis.pause_replica();
    let start = Instant::now();
    let outcome = store.revoke_session(&two).await;
    let took = start.elapsed();
    redis.resume_replica();
    assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "{outcome:?}");
    assert!(took >= cloakroom_store_redis::REPLICA_ACK_TIMEOUT, "{took:?}");
    assert!(took < Duration::from_secs(2), "bounded: {took:?}");
    let outcome = store.revoke_user_sessions(&alice.id, None).await;
    assert!(outcome.is_ok(), "the replica is back: {outcome:?}");
}

/// Issue 12's WAIT gap: `ROLE` lists only the replicas connected now, so with the replica gone the
/// store stopped waiting and reported revocations done on the primary alone. With `min_replicas=1`
/// in the URL it waits for one replica whatever `ROLE` says: none there, no acknowledgement, and
/// the revocation answers Unavailable (503) after the bounded wait. Without it, the store goes on
/// as before (it waits for the replicas `ROLE` shows, here none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_min_replicas_a_lost_replica_fails_revocations_closed() {
    let mut redis = RedisReplicated::start().await;
    let strict = RedisStore::connect(&format!("{}?min_replicas=1", redis.url())).await.unwrap();
    let alice = testing::user(&strict, "alice", &[]).await;
    let now = cloakroom_core::Timestamp::now();
    let (_, one) = testing::session(&strict, &alice, now).await;
    let (_, two) = testing::session(&strict, &alice, now).await;
    assert!(strict.revoke_session(&one).await.unwrap().is_some(), "with the replica up");

    redis.kill_replica();
    let outcome = strict.revoke_session(&two).await;
    assert!(matches!(outcome, Err(StoreError::Unavailable(_))), "{outcome:?}");
    let auto = RedisStore::connect(&redis.url()).await.unwrap();
    eventually(Duration::from_secs(5), async || auto.revoke_user_sessions(&alice.id, None).await)
        .await;
}

/// Measurement, not a check (`--run-ignored only`): how long a revocation takes to be
/// acknowledged with one replica (the primary WAITs for it) and on a lone Redis (no WAIT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; see docs/benchmarks.md"]
async fn revocation_acknowledgement_latency() {
    use cloakroom_store_redis::testing::RedisServer;
    async fn measure(store: &RedisStore) -> (Duration, Duration) {
        let alice = testing::user(store, "alice", &[]).await;
        let mut took = Vec::new();
        for _ in 0..300 {
            let (_, sid) = testing::session(store, &alice, cloakroom_core::Timestamp::now()).await;
            let start = Instant::now();
            store.revoke_session(&sid).await.unwrap();
            took.push(start.elapsed());
        }
        took.sort();
        (took[took.len() / 2], took[took.len() * 99 / 100])
    }
    let lone = RedisServer::start().await;
    let (median, p99) = measure(&RedisStore::connect(&lone.url()).await.unwrap()).await;
    eprintln!("no replica:  median {median:?}, p99 {p99:?}");
    let (store, _redis) = fresh().await;
    let (median, p99) = measure(&store).await;
    eprintln!("one replica: median {median:?}, p99 {p99:?}");
}
