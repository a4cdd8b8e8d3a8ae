//! `SessionManager` over the SQLite store: what the manager adds on top of the store contract.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use cloakroom_core::manager::{ClientInfo, ManagerConfig};
use cloakroom_core::password::{Cost, PasswordHasher};
use cloakroom_core::session::ExpiryPolicy;
use cloakroom_core::{SessionManager, Store, Username};
use cloakroom_store_sqlite::SqliteStore;

async fn manager(touch_interval: Duration) -> (SessionManager, SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("m.db").to_str().unwrap())
        .await
        .unwrap();
    let expiry = ExpiryPolicy {
        touch_interval,
        ..ExpiryPolicy::default()
    };
    let m = SessionManager::new(
        Arc::new(store.clone()),
        PasswordHasher::new(Cost::INSECURE_TEST, 1, None),
        ManagerConfig {
            expiry,
            max_sessions_per_user: 0,
        },
    );
    (m, store, dir)
}

#[tokio::test]
async fn last_seen_is_written_at_most_once_per_interval() {
    let (m, store, _dir) = manager(Duration::from_secs(60)).await;
    let user = m
        .create_user(Username::parse("alice").unwrap(), None, vec![])
        .await
        .unwrap();
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
    let user = m
        .create_user(Username::parse("alice").unwrap(), None, vec![])
        .await
        .unwrap();
    let issued = m.create(&user, ClientInfo::default(), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let seen = m
        .authenticate(&issued.token.expose())
        .await
        .unwrap()
        .unwrap();
    assert!(seen.session.last_seen_at > issued.auth.session.created_at);
    assert!(seen.session.idle_expires_at > issued.auth.session.idle_expires_at);
    let stored = store
        .session_by_id(&issued.auth.session.id, cloakroom_core::Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.session.last_seen_at, seen.session.last_seen_at);
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
