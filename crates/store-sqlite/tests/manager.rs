//! `SessionManager` over the SQLite store: what the manager adds on top of the store contract.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use cloakroom_core::manager::{ClientInfo, ManagerConfig};
use cloakroom_core::password::{Cost, PasswordHasher};
use cloakroom_core::session::ExpiryPolicy;
use cloakroom_core::store::prelude::*;
use cloakroom_core::{SessionManager, Username};
use cloakroom_store_sqlite::SqliteStore;

async fn manager(touch_interval: Duration) -> (SessionManager, SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("m.db").to_str().unwrap()).await.unwrap();
    let expiry = ExpiryPolicy { touch_interval, ..ExpiryPolicy::default() };
    let m = SessionManager::new(
        Arc::new(store.clone()),
        PasswordHasher::new(Cost::INSECURE_TEST, 1, None),
        ManagerConfig { expiry, max_sessions_per_user: 0 },
    );
    (m, store, dir)
}

#[tokio::test]
async fn last_seen_is_written_at_most_once_per_interval() {
    let (m, store, _dir) = manager(Duration::from_secs(60)).await;
    let user = m.create_user(Username::parse("alice").unwrap(), None, vec![]).await.unwrap();
    let issued = m.create(&user, ClientInfo::default(), None).await.unwrap();
    let token = issued.token.expose();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..20 {
        assert!(m.authenticate(&token).await.unwrap().is_some());
    }
    let stored = store
        .session_by_id(&issued.auth.session.id, cloakroom_core::Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.session.last_seen_at, issued.auth.session.created_at,
        "no write within the interval"
    );
}

#[tokio::test]
async fn a_check_past_the_interval_moves_last_seen_and_the_idle_deadline() {
    let (m, store, _dir) = manager(Duration::ZERO).await;
    let user = m.create_user(Username::parse("alice").unwrap(), None, vec![]).await.unwrap();
    let issued = m.create(&user, ClientInfo::default(), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let seen = m.authenticate(&issued.token.expose()).await.unwrap().unwrap();
    let stored = store
        .session_by_id(&seen.session_id(), cloakroom_core::Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert!(stored.session.last_seen_at > issued.auth.session.created_at);
    assert!(stored.session.idle_expires_at > issued.auth.session.idle_expires_at);
    let details = m.details(&seen).await.unwrap().unwrap();
    assert_eq!(details.session.last_seen_at, stored.session.last_seen_at);
}

#[tokio::test]
async fn malformed_tokens_never_reach_the_store() {
    let (m, store, _dir) = manager(Duration::from_secs(60)).await;
    store.pool().close().await; // any store access would now fail
    for t in [
        "",
        "crs_",
        "crs_AAAA",
        &"x".repeat(53),
        "crk_0000000000000000000000000000000000000000000000000",
    ] {
        assert!(m.authenticate(t).await.unwrap().is_none(), "{t:?}");
    }
}

/// A node: a manager with its own cache and bus on the shared file.
async fn node(path: &std::path::Path) -> (SessionManager, SqliteStore) {
    use cloakroom_core::cache::{CacheConfig, SessionCache};
    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    let m = SessionManager::new(
        Arc::new(store.clone()),
        PasswordHasher::new(Cost::INSECURE_TEST, 1, None),
        ManagerConfig::default(),
    )
    .with_cache(Arc::new(SessionCache::new(CacheConfig::default())));
    let bus = m.clone();
    tokio::spawn(async move { bus.run_bus().await });
    // Wait for the bus to connect, so the cache serves.
    for _ in 0..100 {
        if m.cache().unwrap().is_live() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(m.cache().unwrap().is_live());
    (m, store)
}

/// Polls `check` until it holds, for at most `limit`; returns how long it took.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_skip_the_store_and_local_revocations_apply_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, store) = node(&dir.path().join("c.db")).await;
    let user = a.create_user(Username::parse("alice").unwrap(), None, vec![]).await.unwrap();
    let issued = a.create(&user, ClientInfo::default(), None).await.unwrap();
    let token = issued.token.expose();
    assert!(a.authenticate(&token).await.unwrap().is_some()); // miss: cached now
    // Delete the row behind the cache's back (no bus record): a hit does not read the store.
    sqlx::query("DELETE FROM sessions").execute(store.pool()).await.unwrap();
    assert!(a.authenticate(&token).await.unwrap().is_some(), "served from the cache");
    // A revocation through the manager applies on this node at once.
    let issued = a.create(&user, ClientInfo::default(), None).await.unwrap();
    let t2 = issued.token.expose();
    assert!(a.authenticate(&t2).await.unwrap().is_some());
    a.revoke(&issued.auth.session.id).await.unwrap();
    assert!(a.authenticate(&t2).await.unwrap().is_none(), "refused on the very next check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_revoking_or_changing_roles_reaches_this_cache_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let (a, _) = node(&path).await;
    let (b, _) = node(&path).await;
    let user = a.create_user(Username::parse("alice").unwrap(), None, vec![]).await.unwrap();
    let issued = a.create(&user, ClientInfo::default(), None).await.unwrap();
    let token = issued.token.expose();
    for _ in 0..3 {
        assert!(a.authenticate(&token).await.unwrap().is_some());
    }
    // A role change on B is seen by A.
    b.update_user(
        cloakroom_core::manager::Actor::Operator,
        &user.id,
        Some(vec![cloakroom_core::Role::parse("billing").unwrap()]),
        None,
    )
    .await
    .unwrap();
    within(Duration::from_secs(1), async || {
        a.authenticate(&token).await.unwrap().is_some_and(|s| s.has_role("billing"))
    })
    .await;
    // A revocation on B is refused by A.
    b.revoke(&issued.auth.session.id).await.unwrap();
    let took =
        within(Duration::from_secs(1), async || a.authenticate(&token).await.unwrap().is_none())
            .await;
    assert!(took < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_bus_fails_the_cache_is_bypassed_and_checks_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (a, store) = node(&dir.path().join("f.db")).await;
    let user = a.create_user(Username::parse("alice").unwrap(), None, vec![]).await.unwrap();
    let issued = a.create(&user, ClientInfo::default(), None).await.unwrap();
    let token = issued.token.expose();
    assert!(a.authenticate(&token).await.unwrap().is_some());
    assert!(a.authenticate(&token).await.unwrap().is_some());
    store.pool().close().await; // the store (and with it the bus) is gone
    within(Duration::from_secs(2), async || !a.cache().unwrap().is_live()).await;
    assert!(a.authenticate(&token).await.is_err(), "no 200 the store cannot vouch for");
}
