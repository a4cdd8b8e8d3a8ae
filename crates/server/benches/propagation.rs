//! Revocation propagation across three nodes on Redis, then on PostgreSQL: from the revoke on
//! node A to the moment nodes B and C refuse the session, p50 / p99 / max over many rounds.
//!
//! `cargo bench -p cloakroom-server --bench propagation`. Each "node" is a `SessionManager` with
//! its own store connections, bus subscription and cache; they share nothing but a private
//! redis-server, or a private PostgreSQL (started here, stopped at the end; PostgreSQL with its
//! defaults, `fsync` off as in the tests). B and C have the session cached (warm) when
//! A revokes it, so what is measured is the pub/sub round and the cache invalidation, not a
//! store read. Not through HTTP: the HTTP layer adds the same constant on every node.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloakroom_core::cache::{CacheConfig, SessionCache};
use cloakroom_core::manager::{ClientInfo, ManagerConfig};
use cloakroom_core::password::{Cost, PasswordHasher};
use cloakroom_core::{SessionManager, Store, Username};
use cloakroom_store_postgres::PgStore;
use cloakroom_store_postgres::testing::PgServer;
use cloakroom_store_redis::RedisStore;
use cloakroom_store_redis::testing::RedisServer;

const ROUNDS: usize = 500;

async fn node(store: Arc<dyn Store>) -> SessionManager {
    let m = SessionManager::new(
        store,
        PasswordHasher::new(Cost::INSECURE_TEST, 1, None),
        ManagerConfig::default(),
    )
    .with_cache(Arc::new(SessionCache::new(CacheConfig::default())));
    let bus = m.clone();
    tokio::spawn(async move { bus.run_bus().await });
    while !m.cache().unwrap().is_live() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    m
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Three nodes made by `open`, 500 rounds; prints the line for `what`.
async fn measure(what: &str, open: impl AsyncFn() -> Arc<dyn Store>) {
    let (a, b, c) = (node(open().await).await, node(open().await).await, node(open().await).await);
    let user = a.create_user(Username::parse("alice").unwrap(), None, vec![]).await.unwrap();
    let mut lags = Vec::with_capacity(ROUNDS * 2);
    for _ in 0..ROUNDS {
        let issued = a.create(&user, ClientInfo::default(), None).await.unwrap();
        let token = issued.token.expose();
        for n in [&b, &c] {
            assert!(n.authenticate(&token).await.unwrap().is_some()); // miss, then cached
            assert!(n.authenticate(&token).await.unwrap().is_some()); // hit
        }
        let start = Instant::now();
        a.revoke(&issued.auth.session.id).await.unwrap();
        let (rb, rc) = tokio::join!(
            async {
                while b.authenticate(&token).await.unwrap().is_some() {}
                start.elapsed()
            },
            async {
                while c.authenticate(&token).await.unwrap().is_some() {}
                start.elapsed()
            }
        );
        lags.extend([rb, rc]);
    }
    lags.sort();
    println!(
        "revocation propagation, 3 nodes on {what}, {} refusals: p50 {:?}  p99 {:?}  max {:?}",
        lags.len(),
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        lags[lags.len() - 1]
    );
}

fn main() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let redis = RedisServer::start().await;
        let url = redis.url();
        measure("one Redis", async || -> Arc<dyn Store> {
            let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&url).await.unwrap());
            store
        })
        .await;
        drop(redis);
        let pg = PgServer::start().await;
        let url = pg.url();
        measure("one PostgreSQL", async || -> Arc<dyn Store> {
            let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url).await.unwrap());
            store
        })
        .await;
    });
}
