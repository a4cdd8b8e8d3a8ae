//! The Redis store on a real three-master Redis Cluster (started per test) against the shared
//! conformance suite: every atomic change is one script over one user's slot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cloakroom_store_redis::RedisStore;
use cloakroom_store_redis::testing::RedisCluster;

async fn fresh() -> (RedisStore, RedisCluster) {
    let cluster = RedisCluster::start().await;
    let store = RedisStore::connect(&cluster.url()).await.unwrap();
    (store, cluster)
}

cloakroom_core::store_conformance_tests!(fresh);
