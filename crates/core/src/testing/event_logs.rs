//! [`EventLogStore`]'s properties: sliding windows, and reservations
//! that hold under races.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use super::t0;
use crate::store::prelude::*;
use crate::store::{EventId, Reservation};

/// Event logs: a sliding window per key, capped to the newest `max`, shared, forgettable; a
/// reservation is refused when the window is full, and a released one stops counting.
pub async fn event_logs(store: &dyn Store) {
    let w = Duration::from_secs(60);
    let at = |s: u64| t0().plus(Duration::from_secs(s));
    let reserve = async |key: &str, s: u64, max: u32, enforce: bool| {
        store.reserve_event(key, at(s), w, max, enforce).await.unwrap()
    };
    assert!(store.event_log("login:a:alice", at(0), w).await.unwrap().is_empty());
    for s in 0..5 {
        assert!(matches!(reserve("login:a:alice", s, 3, false).await, Reservation::Reserved(_)));
    }
    assert_eq!(
        store.event_log("login:a:alice", at(5), w).await.unwrap(),
        vec![at(2), at(3), at(4)],
        "newest 3"
    );
    assert!(
        store.event_log("login:a:bob", at(5), w).await.unwrap().is_empty(),
        "keys are separate"
    );
    // Full: nothing recorded, and the answer names the event that must leave the window first.
    assert_eq!(reserve("login:a:alice", 5, 3, true).await, Reservation::Full(at(2)));
    assert_eq!(store.event_log("login:a:alice", at(5), w).await.unwrap().len(), 3);
    // Under a larger limit there is room: recorded.
    assert!(matches!(reserve("login:a:alice", 5, 5, true).await, Reservation::Reserved(_)));
    // The window slides: at 63 s only events after 3 s remain.
    assert_eq!(store.event_log("login:a:alice", at(63), w).await.unwrap(), vec![at(4), at(5)]);
    // An event exactly one window old is out.
    assert_eq!(store.event_log("login:a:alice", at(64), w).await.unwrap(), vec![at(5)]);
    // Two events in the same millisecond both count, and a released one no longer does.
    let Reservation::Reserved(first) = reserve("login:i:192.0.2.1", 1, 10, true).await else {
        panic!("room for the first event")
    };
    reserve("login:i:192.0.2.1", 1, 10, true).await;
    assert_eq!(store.event_log("login:i:192.0.2.1", at(1), w).await.unwrap(), vec![at(1), at(1)]);
    store.release_event("login:i:192.0.2.1", &first).await.unwrap();
    store.release_event("login:i:192.0.2.1", &first).await.unwrap();
    store.release_event("login:i:192.0.2.1", &EventId("no-such-event".into())).await.unwrap();
    assert_eq!(store.event_log("login:i:192.0.2.1", at(1), w).await.unwrap(), vec![at(1)]);
    // A limit of zero admits nothing.
    assert!(matches!(reserve("login:z", 1, 0, true).await, Reservation::Full(_)));
    store.forget_events("login:a:alice").await.unwrap();
    assert!(store.event_log("login:a:alice", at(63), w).await.unwrap().is_empty());
    assert_eq!(store.event_log("login:i:192.0.2.1", at(2), w).await.unwrap().len(), 1);
}

/// Reservations race: of 200 callers reserving at once in a log with room for 10, exactly 10
/// are admitted (the check and the record are one step; a throttle built on it cannot be raced).
pub async fn event_reservations_hold_under_races(store: Arc<dyn Store>) {
    let w = Duration::from_secs(60);
    let racers: Vec<_> = (0..200)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store.reserve_event("login:ai:alice|192.0.2.1", t0(), w, 10, true).await.unwrap()
            })
        })
        .collect();
    let mut admitted = 0;
    for racer in racers {
        if matches!(racer.await.unwrap(), Reservation::Reserved(_)) {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10, "exactly the limit is admitted");
    assert_eq!(store.event_log("login:ai:alice|192.0.2.1", t0(), w).await.unwrap().len(), 10);
}
