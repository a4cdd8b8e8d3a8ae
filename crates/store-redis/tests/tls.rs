//! The Redis store over TLS (`rediss://`) against the shared conformance suite, each test on its
//! own TLS-only redis-server with a fresh self-signed certificate that the store is told to trust.
//! Also: a server certificate the store was not told to trust is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cloakroom_store_redis::RedisStore;
use cloakroom_store_redis::testing::RedisServer;

async fn fresh() -> (RedisStore, RedisServer) {
    let server = RedisServer::start_tls().await;
    let store = RedisStore::connect_with_ca(&server.url(), Some(&server.ca_pem())).await.unwrap();
    (store, server)
}

cloakroom_core::store_conformance_tests!(fresh);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused() {
    let server = RedisServer::start_tls().await;
    let other = RedisServer::start_tls().await; // another self-signed certificate
    assert!(RedisStore::connect_with_ca(&server.url(), Some(&other.ca_pem())).await.is_err());
    assert!(RedisStore::connect(&server.url()).await.is_err(), "not in the system's roots either");
}
