//! What only the PostgreSQL store has: migrations under concurrent start-up, the change feed's
//! sequence and heartbeat, bounds on a dead or silent server, the separate listener URL, and
//! races between two nodes (two pools on one database).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloakroom_core::StoreError;
use cloakroom_core::session::DataWrite;
use cloakroom_core::store::prelude::*;
use cloakroom_core::store::{BusEvent, Reservation};
use cloakroom_core::testing::{new_session, session, t0, user};
use cloakroom_store_postgres::PgStore;
use cloakroom_store_postgres::testing::PgServer;
use sqlx::Row as _;

async fn fresh() -> (PgStore, PgServer) {
    let server = PgServer::start().await;
    let store = PgStore::connect(&server.url()).await.unwrap();
    (store, server)
}

async fn next(feed: &mut tokio::sync::mpsc::Receiver<BusEvent>, within: Duration) -> BusEvent {
    tokio::time::timeout(within, feed.recv()).await.expect("an event in time").expect("open")
}

/// Skips `Invalidate`s until another event comes.
async fn next_state(
    feed: &mut tokio::sync::mpsc::Receiver<BusEvent>,
    within: Duration,
) -> BusEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, feed.recv()).await {
            Ok(Some(BusEvent::Invalidate { .. })) => continue,
            Ok(Some(other)) => return other,
            other => panic!("no state change within {within:?}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let server = PgServer::start().await;
    let url = server.create_database("race").await;
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::connect(&url).await })
        })
        .collect();
    for s in starts {
        s.await.unwrap().expect("every node starts");
    }
    let store = PgStore::connect(&url).await.unwrap();
    let rows = sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let versions: Vec<i64> = rows.iter().map(|r| r.get("version")).collect();
    let expected: Vec<i64> = (1..=cloakroom_store_postgres::schema_version()).collect();
    assert_eq!(versions, expected, "each migration applied exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_the_binary_is_refused() {
    let (store, server) = fresh().await;
    let newer = cloakroom_store_postgres::schema_version() + 1;
    sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)")
        .bind(newer)
        .execute(store.pool())
        .await
        .unwrap();
    let err = PgStore::connect(&server.url()).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { what: "schema version", .. }), "{err:?}");
    let why = std::error::Error::source(&err).unwrap().to_string();
    assert!(why.contains(&format!("version {newer}")), "{why}");
}

/// Two nodes (two pools) race on one user: the per-user cap, grant redemption, the throttle's
/// reservations and session data each hold across them as within one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_keep_every_rule() {
    let (a, server) = fresh().await;
    let b = PgStore::connect(&server.url()).await.unwrap();
    let nodes: [Arc<PgStore>; 2] = [Arc::new(a), Arc::new(b)];
    let alice = user(&*nodes[0], "alice", &[]).await;

    // 20 logins at once with a cap of 3: exactly 3 sessions remain.
    let logins: Vec<_> = (0..20u32)
        .map(|i| {
            let (node, alice) = (Arc::clone(&nodes[i as usize % 2]), alice.clone());
            tokio::spawn(async move {
                let (_, s) = new_session(&alice, t0());
                node.create_session(&s, 3, t0()).await.unwrap()
            })
        })
        .collect();
    let mut evicted = 0;
    for l in logins {
        evicted += l.await.unwrap().len();
    }
    assert_eq!(nodes[1].list_sessions(Some(&alice.id), t0()).await.unwrap().len(), 3);
    assert_eq!(evicted, 17);

    // 100 reservations in a log with room for 7, from both nodes: exactly 7 admitted.
    let w = Duration::from_secs(60);
    let racers: Vec<_> = (0..100usize)
        .map(|i| {
            let node = Arc::clone(&nodes[i % 2]);
            tokio::spawn(async move { node.reserve_event("login:a:alice", t0(), w, 7, true).await })
        })
        .collect();
    let mut admitted = 0;
    for r in racers {
        if matches!(r.await.unwrap().unwrap(), Reservation::Reserved(_)) {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 7);

    // One grant, redeemed on both nodes at once, ten times over: one use each time.
    for _ in 0..10 {
        let g = cloakroom_core::grant::GrantUse {
            id: cloakroom_core::id::GrantId::generate().unwrap().as_str().to_owned(),
            user: alice.id.clone(),
            issued_at: t0(),
            expires_at: t0().plus(Duration::from_secs(60)),
        };
        let (x, y) = tokio::join!(nodes[0].redeem_grant(&g, t0()), nodes[1].redeem_grant(&g, t0()));
        let mut both = [x.unwrap() as u8, y.unwrap() as u8];
        both.sort_unstable();
        let mut expected = [
            cloakroom_core::grant::Redemption::Redeemed as u8,
            cloakroom_core::grant::Redemption::AlreadyUsed as u8,
        ];
        expected.sort_unstable();
        assert_eq!(both, expected);
    }

    // Session data: writers on both nodes holding version 1, one wins.
    let (_, id) = session(&*nodes[0], &alice, t0()).await;
    let writers: Vec<_> = (0..10usize)
        .map(|i| {
            let (node, id) = (Arc::clone(&nodes[i % 2]), id.clone());
            tokio::spawn(async move {
                node.put_session_data(&id, &serde_json::json!({ "w": i }), Some(1)).await.unwrap()
            })
        })
        .collect();
    let mut wins = 0;
    for w in writers {
        if w.await.unwrap() == DataWrite::Stored(2) {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
}

/// An aborted change is never announced: a login that evicts under the cap but collides on
/// its id rolls back, evictions and announcement with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_change_is_not_announced() {
    let (store, _server) = fresh().await;
    let alice = user(&store, "alice", &[]).await;
    let (_, first) = new_session(&alice, t0());
    store.create_session(&first, 0, t0()).await.unwrap();
    let (_, second) = new_session(&alice, t0().plus(Duration::from_secs(1)));
    store.create_session(&second, 0, t0()).await.unwrap();
    let mut feed = store.subscribe().await.unwrap();
    assert_eq!(next(&mut feed, Duration::from_secs(5)).await, BusEvent::Connected);
    // Under a cap of 2 this evicts `first`, then collides with `second`.
    let later = t0().plus(Duration::from_secs(2));
    let (_, mut dup) = new_session(&alice, later);
    dup.id = second.id.clone();
    let err = store.create_session(&dup, 2, later).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert!(store.session_by_id(&first.id, t0()).await.unwrap().is_some(), "eviction undone");
    let quiet = tokio::time::timeout(Duration::from_millis(700), feed.recv()).await;
    assert!(quiet.is_err(), "nothing announced: {quiet:?}");
    // And the next committed change follows on without a gap.
    store.revoke_session(&first.id).await.unwrap();
    assert!(matches!(next(&mut feed, Duration::from_secs(2)).await, BusEvent::Invalidate { .. }));
    let quiet = tokio::time::timeout(Duration::from_millis(700), feed.recv()).await;
    assert!(quiet.is_err(), "no flush: the numbers had no hole: {quiet:?}");
}

/// A number that was used up without reaching this listener (a lost notification) makes it
/// flush: the next announcement skips, and the feed says Connected again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_change_numbers_flushes_the_subscriber() {
    let (store, _server) = fresh().await;
    let alice = user(&store, "alice", &[]).await;
    let mut feed = store.subscribe().await.unwrap();
    assert_eq!(next(&mut feed, Duration::from_secs(5)).await, BusEvent::Connected);
    let (_, one) = session(&store, &alice, t0()).await;
    store.revoke_session(&one).await.unwrap();
    assert!(matches!(next(&mut feed, Duration::from_secs(2)).await, BusEvent::Invalidate { .. }));
    // A change whose announcement never reached this subscriber: its number is used up.
    sqlx::query("UPDATE feed_counter SET seq = seq + 1").execute(store.pool()).await.unwrap();
    let (_, two) = session(&store, &alice, t0()).await;
    store.revoke_session(&two).await.unwrap();
    assert!(matches!(next(&mut feed, Duration::from_secs(2)).await, BusEvent::Invalidate { .. }));
    assert_eq!(next(&mut feed, Duration::from_secs(2)).await, BusEvent::Connected, "flushed");

    // The counter starting over (a restored database) flushes too.
    sqlx::query("UPDATE feed_counter SET seq = 0").execute(store.pool()).await.unwrap();
    let (_, three) = session(&store, &alice, t0()).await;
    store.revoke_session(&three).await.unwrap();
    assert!(matches!(next(&mut feed, Duration::from_secs(2)).await, BusEvent::Invalidate { .. }));
    assert_eq!(next(&mut feed, Duration::from_secs(2)).await, BusEvent::Connected, "restart");
}

/// Changes committed while their notifications never arrive (what LISTEN through a transaction
/// pooler looks like) are noticed by the heartbeat, without any further announcement: the feed
/// goes Disconnected, then Connected on a new listening connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_changes_never_heard_disconnect_the_subscriber() {
    let (store, _server) = fresh().await;
    let mut feed = store.subscribe().await.unwrap();
    assert_eq!(next(&mut feed, Duration::from_secs(5)).await, BusEvent::Connected);
    let start = Instant::now();
    sqlx::query("UPDATE feed_counter SET seq = seq + 1").execute(store.pool()).await.unwrap();
    assert_eq!(next(&mut feed, Duration::from_secs(8)).await, BusEvent::Disconnected);
    eprintln!("noticed after {:?}", start.elapsed());
    assert_eq!(next(&mut feed, Duration::from_secs(5)).await, BusEvent::Connected);
}

/// A server that stops answering without closing its connections: the heartbeat notices within
/// a few seconds, operations fail as unavailable within their deadline, and everything comes
/// back by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_noticed_and_bounded() {
    let server = PgServer::start().await;
    let url = format!("{}?statement_timeout=500&connect_timeout=1", server.url());
    let store = PgStore::connect(&url).await.unwrap();
    let alice = user(&store, "alice", &[]).await;
    let (token, _) = session(&store, &alice, t0()).await;
    let mut feed = store.subscribe().await.unwrap();
    assert_eq!(next(&mut feed, Duration::from_secs(5)).await, BusEvent::Connected);

    server.pause();
    let start = Instant::now();
    let lookup = store.session_by_token(&token.hash(), t0()).await;
    let took = start.elapsed();
    let event = next_state(&mut feed, Duration::from_secs(8)).await;
    let noticed = start.elapsed();
    server.resume();
    assert!(matches!(lookup, Err(StoreError::Unavailable(_))), "{lookup:?}");
    assert!(took < Duration::from_millis(1500), "the deadline holds: {took:?}");
    assert_eq!(event, BusEvent::Disconnected, "a frozen server is noticed");
    assert!(noticed < Duration::from_secs(6), "within a few seconds: {noticed:?}");
    assert_eq!(next_state(&mut feed, Duration::from_secs(10)).await, BusEvent::Connected);
    assert!(store.session_by_token(&token.hash(), t0()).await.unwrap().is_some());
}

/// A stopped server: operations fail as unavailable at once, the feed is Disconnected; after a
/// restart both come back by themselves, what was committed before is there, and no request
/// fails on one of the connections the old server took with it, writes included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_rejoined() {
    let mut server = PgServer::start().await;
    let store = Arc::new(PgStore::connect(&server.url()).await.unwrap());
    let alice = user(&*store, "alice", &[]).await;
    let (token, id) = session(&*store, &alice, t0()).await;
    let mut feed = store.subscribe().await.unwrap();
    assert_eq!(next(&mut feed, Duration::from_secs(5)).await, BusEvent::Connected);
    // Fill the pool: every one of these connections dies with the server.
    let busy: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                sqlx::query("SELECT pg_sleep(0.05)").execute(store.pool()).await.unwrap();
            })
        })
        .collect();
    for b in busy {
        b.await.unwrap();
    }
    assert!(store.pool().num_idle() >= 4, "idle: {}", store.pool().num_idle());

    server.stop_immediate();
    assert_eq!(next_state(&mut feed, Duration::from_secs(5)).await, BusEvent::Disconnected);
    let start = Instant::now();
    let lookup = store.session_by_token(&token.hash(), t0()).await;
    assert!(matches!(lookup, Err(StoreError::Unavailable(_))), "{lookup:?}");
    assert!(start.elapsed() < Duration::from_secs(4), "fails fast: {:?}", start.elapsed());

    server.restart().await;
    assert_eq!(next_state(&mut feed, Duration::from_secs(10)).await, BusEvent::Connected);
    for i in 0..12u64 {
        let at = t0().plus(Duration::from_secs(i));
        assert!(
            store.touch(&id, at, at.plus(Duration::from_secs(600))).await.unwrap(),
            "write {i}"
        );
        assert!(store.session_by_token(&token.hash(), at).await.unwrap().is_some(), "read {i}");
    }
    assert_eq!(store.revoke_session(&id).await.unwrap(), Some(alice.id.clone()));
}

/// With `store_listen`, the listener connects there and nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_uses_its_own_url() {
    let server = PgServer::start().await;
    let main = format!("{}?application_name=cr-main", server.url());
    let listen = format!("{}?application_name=cr-listen", server.url());
    let store = PgStore::connect_with(&main, Some(&listen), None).await.unwrap();
    let alice = user(&store, "alice", &[]).await;
    let mut feed = store.subscribe().await.unwrap();
    assert_eq!(next(&mut feed, Duration::from_secs(5)).await, BusEvent::Connected);
    let listening: i64 = sqlx::query(
        "SELECT count(*) AS n FROM pg_stat_activity
         WHERE application_name = 'cr-listen' AND query ILIKE '%feed_counter%'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
    .get("n");
    assert_eq!(listening, 1, "the listener's connection carries the listen URL's settings");
    let (_, one) = session(&store, &alice, t0()).await;
    store.revoke_session(&one).await.unwrap();
    match next(&mut feed, Duration::from_secs(2)).await {
        BusEvent::Invalidate { user, .. } => assert_eq!(user, Some(alice.id.clone())),
        other => panic!("{other:?}"),
    }
    let bad = PgStore::connect_with(&main, Some("redis://x"), None).await.unwrap_err();
    assert!(bad.to_string().contains("unavailable"), "{bad}");
}

/// Without the feed's counter row nothing can be announced, so nothing that needs announcing is
/// made: the revocation, the rotation, the user change and the cap eviction fail and leave the
/// data as it was (fail closed), rather than commit unannounced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_cannot_be_announced_is_not_made() {
    use cloakroom_core::user::UserChange;
    use cloakroom_core::{CsrfToken, SecretKind, Token};
    let (store, _server) = fresh().await;
    let alice = user(&store, "alice", &[]).await;
    let (token, id) = session(&store, &alice, t0()).await;
    sqlx::query("DELETE FROM feed_counter").execute(store.pool()).await.unwrap();

    let unavailable = |r: Result<_, StoreError>| matches!(r, Err(StoreError::Unavailable(_)));
    assert!(unavailable(store.revoke_session(&id).await.map(|_| ())));
    assert!(unavailable(store.revoke_user_sessions(&alice.id, None).await.map(|_| ())));
    let new = Token::generate(SecretKind::Session).unwrap();
    let csrf = CsrfToken::generate().unwrap();
    assert!(unavailable(
        store.rotate(&id, &token.hash(), &new.hash(), &csrf, t0()).await.map(|_| ())
    ));
    let disable = UserChange { disabled: Some(true), ..Default::default() };
    assert!(unavailable(store.update_user(&alice.id, &disable, None).await.map(|_| ())));
    let (_, evicting) = new_session(&alice, t0());
    assert!(unavailable(store.create_session(&evicting, 1, t0()).await.map(|_| ())));

    let found = store.session_by_token(&token.hash(), t0()).await.unwrap().expect("unchanged");
    assert_eq!(found.session.id, id);
    assert!(!found.user.disabled);
    assert_eq!(store.list_sessions(Some(&alice.id), t0()).await.unwrap().len(), 1);
}
