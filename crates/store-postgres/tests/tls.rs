//! The PostgreSQL store over TLS (rustls): the server's certificate must chain to the CA the
//! store is given (`store_ca`, or `sslrootcert` in the URL), and the change feed's connection is
//! checked the same way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cloakroom_core::store::BusEvent;
use cloakroom_core::store::prelude::*;
use cloakroom_core::testing::{session, t0, user};
use cloakroom_store_postgres::PgStore;
use cloakroom_store_postgres::testing::PgServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_only() {
    let server = PgServer::start_tls().await;
    let url = format!("{}?sslmode=verify-full", server.url());
    let ca = server.ca_pem();
    assert!(!ca.is_empty());

    let store = PgStore::connect_with(&url, None, Some(&ca)).await.unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(encrypted, "the store's connection is TLS");
    let alice = user(&store, "alice", &[]).await;
    let mut feed = store.subscribe().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), feed.recv()).await.unwrap();
    assert_eq!(first, Some(BusEvent::Connected), "the listener verifies and connects too");
    let (_, id) = session(&store, &alice, t0()).await;
    store.revoke_session(&id).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(2), feed.recv()).await.unwrap();
    assert!(matches!(heard, Some(BusEvent::Invalidate { .. })), "{heard:?}");

    // The CA by path in the URL works as well.
    let by_path = format!("{url}&sslrootcert={}", server.ca_path().display());
    PgStore::connect(&by_path).await.unwrap();

    // Without the private CA (the system's roots) the certificate is refused: no connection.
    let refused = PgStore::connect(&url).await.unwrap_err();
    let why = std::error::Error::source(&refused).map(ToString::to_string).unwrap_or_default();
    assert!(why.to_lowercase().contains("certificate"), "refused for its certificate: {why}");
}
