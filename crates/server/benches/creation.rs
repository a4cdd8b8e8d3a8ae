//! Session creation against the number of live sessions the user already has (1, 1,000,
//! 50,000), on each store: the work of a creation must not grow with what one user piles up.
//!
//! `cargo bench -p cloakroom-server --bench creation`. For each store (SQLite on a temp dir,
//! a private redis-server) and each count, one user gets that many sessions, then `ROUNDS`
//! sessions are created for them one after another, without a cap (the worst case: nothing
//! bounds the pile) and with `max_sessions_per_user` = 100 at 100 sessions (every creation
//! evicts one). Prints the mean per creation and the ratio to the one-session case.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloakroom_core::Store;
use cloakroom_core::testing::{new_session, t0, user};
use cloakroom_store_redis::RedisStore;
use cloakroom_store_redis::testing::RedisServer;
use cloakroom_store_sqlite::SqliteStore;

const ROUNDS: u32 = 500;
const COUNTS: [usize; 3] = [1, 1_000, 50_000];

/// Gives `who` `n` live sessions, 32 creations at a time.
async fn pile(store: &Arc<dyn Store>, who: &cloakroom_core::User, n: usize) {
    let mut made = 0;
    while made < n {
        let batch = (n - made).min(32);
        let runs = (0..batch).map(|_| {
            let (_, s) = new_session(who, t0());
            let store = Arc::clone(store);
            async move { store.create_session(&s, 0, t0()).await.unwrap() }
        });
        futures_util::future::join_all(runs).await;
        made += batch;
    }
}

/// Mean time of one creation for a user with `n` sessions, with `cap`.
async fn creation(store: &Arc<dyn Store>, name: &str, n: usize, cap: u32) -> Duration {
    let who = user(&**store, name, &[]).await;
    pile(store, &who, n).await;
    let start = Instant::now();
    for _ in 0..ROUNDS {
        let (_, s) = new_session(&who, t0());
        store.create_session(&s, cap, t0()).await.unwrap();
    }
    start.elapsed() / ROUNDS
}

async fn run(kind: &str, store: Arc<dyn Store>) {
    let mut base = None;
    for n in COUNTS {
        let mean = creation(&store, &format!("user{n}"), n, 0).await;
        let ratio = mean.as_secs_f64() / base.get_or_insert(mean).as_secs_f64();
        println!("{kind:6} no cap, {n:>6} live sessions: {mean:>9.1?} per creation ({ratio:.2}x)");
    }
    let mean = creation(&store, "capped", 100, 100).await;
    let ratio = mean.as_secs_f64() / base.unwrap_or(mean).as_secs_f64();
    println!("{kind:6} cap 100 at 100 (each evicts one):  {mean:>9.1?} per creation ({ratio:.2}x)");
}

fn main() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(dir.path().join("c.db").to_str().unwrap()).await.unwrap();
        run("sqlite", Arc::new(sqlite)).await;
        let redis = RedisServer::start().await;
        let store = RedisStore::connect(&redis.url()).await.unwrap();
        run("redis", Arc::new(store)).await;
    });
}
