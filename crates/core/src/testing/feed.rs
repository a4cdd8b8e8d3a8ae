//! [`ChangeFeed`]'s properties: every change that can make a cached
//! session stale is announced, even when a write after it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;

use super::{MIN, new_session, session, t0, user};
use crate::id::UserId;
use crate::store::BusEvent;
use crate::store::prelude::*;
use crate::token::{CsrfToken, SecretKind, Token};
use crate::user::{Role, UserChange};

/// A committed change is announced even when a write that the store makes after it fails.
/// `faulty` is a second handle on the same backend on which such secondary writes fail (for
/// Redis: a user whose ACL makes the lookup hints read-only); the subscriber on `healthy` must
/// hear of every committed revocation, or stop trusting its cache (`Disconnected`). Stores whose
/// every change is one transaction with its announcement (SQLite) have no such writes.
pub async fn announcements_survive_failed_secondary_writes(
    healthy: &dyn Store,
    faulty: &dyn Store,
) {
    let alice = user(healthy, "alice", &[]).await;
    let mut feed = healthy.subscribe().await.unwrap();
    match tokio::time::timeout(Duration::from_secs(2), feed.recv()).await {
        Ok(Some(BusEvent::Connected)) => {}
        other => panic!("the feed must start with Connected, got {other:?}"),
    }
    let heard = async |feed: &mut tokio::sync::mpsc::Receiver<BusEvent>, what: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match tokio::time::timeout_at(deadline, feed.recv()).await {
                Ok(Some(BusEvent::Invalidate { user: Some(u), .. })) if u == alice.id => return,
                Ok(Some(BusEvent::Disconnected)) => return,
                Ok(Some(_)) => continue,
                other => panic!("{what}: committed but never announced ({other:?})"),
            }
        }
    };
    let (_, one) = session(healthy, &alice, t0()).await;
    let _ = faulty.revoke_session(&one).await;
    assert!(healthy.session_by_id(&one, t0()).await.unwrap().is_none(), "revoked");
    heard(&mut feed, "revoking one session").await;

    session(healthy, &alice, t0()).await;
    let _ = faulty.revoke_user_sessions(&alice.id, None).await;
    assert!(healthy.list_sessions(Some(&alice.id), t0()).await.unwrap().is_empty(), "revoked");
    heard(&mut feed, "revoking all").await;

    let (_, last) = session(healthy, &alice, t0()).await;
    let disable = UserChange { disabled: Some(true), ..Default::default() };
    let _ = faulty.update_user(&alice.id, &disable, None).await;
    assert!(healthy.session_by_id(&last, t0()).await.unwrap().is_none(), "disabled");
    heard(&mut feed, "disabling the user").await;
}

/// Waits up to 2 s for the next `Invalidate` on `feed` and returns its user.
pub(crate) async fn next_invalidation(
    feed: &mut tokio::sync::mpsc::Receiver<BusEvent>,
) -> Option<UserId> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match tokio::time::timeout_at(deadline, feed.recv()).await {
            Ok(Some(BusEvent::Invalidate { user, .. })) => return user,
            Ok(Some(BusEvent::Connected)) => continue,
            Ok(Some(BusEvent::Disconnected)) => panic!("the feed disconnected"),
            Ok(None) => panic!("the feed closed"),
            Err(_) => panic!("no invalidation within 2 s"),
        }
    }
}

/// Every change that can make a cached session stale reaches subscribers as an invalidation of
/// its user: revoking one, revoking all, a user change, a rotation, a cap eviction. Touches and
/// data writes do not.
pub async fn invalidations_reach_subscribers(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let bob = user(store, "bob", &[]).await;
    let mut feed = store.subscribe().await.unwrap();
    match tokio::time::timeout(Duration::from_secs(2), feed.recv()).await {
        Ok(Some(BusEvent::Connected)) => {}
        other => panic!("the feed must start with Connected, got {other:?}"),
    }
    let (t1, s1) = session(store, &alice, t0()).await;
    let (_, s2) = session(store, &bob, t0()).await;
    // Creating, touching and writing data stale nothing.
    assert!(store.touch(&s1, t0().plus(MIN), t0().plus(31 * MIN)).await.unwrap());
    store.put_session_data(&s1, &json!({"a": 1}), None).await.unwrap();

    store.revoke_session(&s2).await.unwrap();
    assert_eq!(next_invalidation(&mut feed).await, Some(bob.id.clone()), "revoking one session");

    let new = Token::generate(SecretKind::Session).unwrap();
    let csrf = CsrfToken::generate().unwrap();
    assert!(store.rotate(&s1, &t1.hash(), &new.hash(), &csrf, t0()).await.unwrap());
    assert_eq!(next_invalidation(&mut feed).await, Some(alice.id.clone()), "rotation");

    let change =
        UserChange { roles: Some(vec![Role::parse("admin").unwrap()]), ..Default::default() };
    store.update_user(&alice.id, &change, None).await.unwrap();
    assert_eq!(next_invalidation(&mut feed).await, Some(alice.id.clone()), "role change");

    session(store, &alice, t0()).await;
    let (_, capped) = new_session(&alice, t0().plus(MIN));
    assert_eq!(store.create_session(&capped, 1, t0().plus(MIN)).await.unwrap().len(), 2);
    assert_eq!(next_invalidation(&mut feed).await, Some(alice.id.clone()), "cap eviction");

    store.revoke_user_sessions(&alice.id, None).await.unwrap();
    assert_eq!(next_invalidation(&mut feed).await, Some(alice.id.clone()), "revoking all");

    // Nothing else is pending: the touch and the data write above sent nothing.
    let quiet = tokio::time::timeout(Duration::from_millis(600), feed.recv()).await;
    assert!(
        !matches!(quiet, Ok(Some(BusEvent::Invalidate { .. }))),
        "unexpected invalidation: {quiet:?}"
    );
}
