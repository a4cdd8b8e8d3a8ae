//! The PostgreSQL store against the shared conformance suite, each test on its own private
//! PostgreSQL server (free port, temp dir), stopped when the test ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cloakroom_store_postgres::PgStore;
use cloakroom_store_postgres::testing::PgServer;

async fn fresh() -> (PgStore, PgServer) {
    let server = PgServer::start().await;
    let store = PgStore::connect(&server.url()).await.unwrap();
    (store, server)
}

cloakroom_core::store_conformance_tests!(fresh);

/// The property for stores whose changes make writes after their announcement. Here a change and
/// its announcement are one transaction, so there is no such write to break; the property runs
/// with a second node on the same database as the other handle, which it must hear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_survive_failed_secondary_writes() {
    let (healthy, server) = fresh().await;
    let other = PgStore::connect(&server.url()).await.unwrap();
    cloakroom_core::testing::feed::announcements_survive_failed_secondary_writes(&healthy, &other)
        .await;
}
