//! [`SessionStore`]'s properties: lookup, expiry, the per-user cap,
//! rotation, revocation that nothing resurrects, data compare-and-set, the sweep, audiences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{HOUR, MIN, new_session, random_hash, session, t0, user};
use crate::id::SessionId;
use crate::session::DataWrite;
use crate::store::prelude::*;
use crate::token::{CsrfToken, SecretKind, Token};

/// A created session is found by its token hash and by id, with its user and fields intact.
pub async fn create_and_find(store: &dyn Store) {
    let alice = user(store, "alice", &["admin", "staff"]).await;
    let (token, new) = new_session(&alice, t0());
    assert!(store.create_session(&new, 0, t0()).await.unwrap().is_empty());
    let found = store.session_by_token(&token.hash(), t0()).await.unwrap().expect("found by token");
    assert_eq!(found.session.id, new.id);
    assert_eq!(found.session.csrf, new.csrf);
    assert_eq!(found.session.created_at, t0());
    assert_eq!(found.session.last_seen_at, t0());
    assert_eq!(found.session.idle_expires_at, new.idle_expires_at);
    assert_eq!(found.session.expires_at, new.expires_at);
    assert_eq!(found.session.ip.as_deref(), Some("192.0.2.1"));
    assert_eq!(found.user, alice);
    let by_id = store.session_by_id(&new.id, t0()).await.unwrap().expect("found by id");
    assert_eq!(by_id.session.id, new.id);
}

/// A token the store never issued is not found and not adopted: nothing is created for it.
pub async fn unknown_tokens_are_never_adopted(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let unknown = random_hash();
    assert!(store.session_by_token(&unknown, t0()).await.unwrap().is_none());
    assert!(store.session_by_token(&unknown, t0()).await.unwrap().is_none());
    assert!(store.list_sessions(Some(&alice.id), t0()).await.unwrap().is_empty());
    assert!(store.list_sessions(None, t0()).await.unwrap().is_empty());
    // Touching or writing data for an unknown id creates nothing either.
    let ghost = SessionId::generate().unwrap();
    assert!(!store.touch(&ghost, t0(), t0().plus(MIN)).await.unwrap());
    assert_eq!(
        store.put_session_data(&ghost, &json!({"a": 1}), None).await.unwrap(),
        DataWrite::Gone
    );
    assert!(store.session_by_id(&ghost, t0()).await.unwrap().is_none());
    assert!(store.session_data(&ghost).await.unwrap().is_none());
}

/// The idle deadline ends a session; a touch before it moves it, but never past the absolute one.
pub async fn idle_expiry_and_touch(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let (token, id) = session(store, &alice, t0()).await;
    let almost = t0().plus(30 * MIN - Duration::from_millis(1));
    assert!(store.session_by_token(&token.hash(), almost).await.unwrap().is_some());
    assert!(store.session_by_token(&token.hash(), t0().plus(30 * MIN)).await.unwrap().is_none());

    // Touch at +20 min: the idle deadline moves to +50 min.
    let at = t0().plus(20 * MIN);
    assert!(store.touch(&id, at, at.plus(30 * MIN)).await.unwrap());
    let found = store
        .session_by_token(&token.hash(), t0().plus(45 * MIN))
        .await
        .unwrap()
        .expect("still live");
    assert_eq!(found.session.last_seen_at, at);
    assert_eq!(found.session.idle_expires_at, at.plus(30 * MIN));

    // A touch asking for more than the absolute deadline gets the absolute deadline.
    let late = t0().plus(11 * HOUR + 50 * MIN);
    let mut last = at;
    while last < late {
        let next = last.plus(25 * MIN).min(late);
        assert!(store.touch(&id, next, next.plus(30 * MIN)).await.unwrap());
        last = next;
    }
    let found = store.session_by_token(&token.hash(), late).await.unwrap().expect("live");
    assert_eq!(found.session.idle_expires_at, t0().plus(12 * HOUR));
}

/// The absolute deadline ends a session however busy it is, and an expired session cannot be
/// touched back to life.
pub async fn absolute_expiry(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let (token, id) = session(store, &alice, t0()).await;
    let mut now = t0();
    while now < t0().plus(12 * HOUR - 10 * MIN) {
        now = now.plus(10 * MIN);
        assert!(store.touch(&id, now, now.plus(30 * MIN)).await.unwrap());
    }
    let end = t0().plus(12 * HOUR);
    assert!(store.session_by_token(&token.hash(), end).await.unwrap().is_none());
    assert!(!store.touch(&id, end, end.plus(30 * MIN)).await.unwrap());
    assert!(store.session_by_id(&id, end).await.unwrap().is_none());
    // Expired after idleness, and a late touch does not revive it.
    let (token2, id2) = session(store, &alice, t0()).await;
    let after_idle = t0().plus(31 * MIN);
    assert!(!store.touch(&id2, after_idle, after_idle.plus(30 * MIN)).await.unwrap());
    assert!(store.session_by_token(&token2.hash(), t0().plus(MIN)).await.unwrap().is_some());
    assert!(store.session_by_token(&token2.hash(), after_idle).await.unwrap().is_none());
}

/// Revoking one session ends it at once, reports its owner once, and leaves others alone.
pub async fn revoke_one(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let (t1, s1) = session(store, &alice, t0()).await;
    let (t2, _s2) = session(store, &alice, t0()).await;
    assert_eq!(store.revoke_session(&s1).await.unwrap(), Some(alice.id.clone()));
    assert_eq!(store.revoke_session(&s1).await.unwrap(), None);
    assert!(store.session_by_token(&t1.hash(), t0()).await.unwrap().is_none());
    assert!(store.session_by_token(&t2.hash(), t0()).await.unwrap().is_some());
    assert!(!store.touch(&s1, t0(), t0().plus(MIN)).await.unwrap());
}

/// Revoking all of a user's sessions but one keeps exactly that one, and no other user's.
pub async fn revoke_others_and_all(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let bob = user(store, "bob", &[]).await;
    let (ta, keep) = session(store, &alice, t0()).await;
    let (tb, other) = session(store, &alice, t0()).await;
    let (tc, _) = session(store, &alice, t0()).await;
    let (tbob, _) = session(store, &bob, t0()).await;
    let mut revoked = store.revoke_user_sessions(&alice.id, Some(&keep)).await.unwrap();
    revoked.sort();
    assert_eq!(revoked.len(), 2);
    assert!(revoked.contains(&other));
    assert!(store.session_by_token(&ta.hash(), t0()).await.unwrap().is_some());
    assert!(store.session_by_token(&tb.hash(), t0()).await.unwrap().is_none());
    assert!(store.session_by_token(&tc.hash(), t0()).await.unwrap().is_none());
    assert_eq!(store.revoke_user_sessions(&alice.id, None).await.unwrap(), vec![keep]);
    assert!(store.session_by_token(&ta.hash(), t0()).await.unwrap().is_none());
    assert!(store.session_by_token(&tbob.hash(), t0()).await.unwrap().is_some());
}

/// Lists hold a user's live sessions only, newest first.
pub async fn list_by_user(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let bob = user(store, "bob", &[]).await;
    let (_, old) = session(store, &alice, t0()).await;
    let (_, mid) = session(store, &alice, t0().plus(MIN)).await;
    let (_, new) = session(store, &alice, t0().plus(2 * MIN)).await;
    let (_, bobs) = session(store, &bob, t0().plus(MIN)).await;
    let now = t0().plus(3 * MIN);
    let ids: Vec<_> = store
        .list_sessions(Some(&alice.id), now)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.session.id)
        .collect();
    assert_eq!(ids, vec![new.clone(), mid.clone(), old.clone()]);
    let all = store.list_sessions(None, now).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.iter().any(|a| a.session.id == bobs && a.user.username.as_str() == "bob"));
    // A store that counts (for the live-sessions gauge) counts what it would list.
    if let Some(n) = store.count_sessions(now).await.unwrap() {
        assert_eq!(n, 4, "count_sessions");
        let later = t0().plus(30 * MIN + Duration::from_secs(30));
        assert_eq!(store.count_sessions(later).await.unwrap(), Some(3), "after one idled out");
    }
    // The oldest idles out first.
    let later = t0().plus(30 * MIN + Duration::from_secs(30));
    let ids: Vec<_> = store
        .list_sessions(Some(&alice.id), later)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.session.id)
        .collect();
    assert_eq!(ids, vec![new, mid]);
}

/// With a cap, a new session evicts the user's oldest live ones and nobody else's.
pub async fn cap_per_user(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let bob = user(store, "bob", &[]).await;
    let (_, bobs) = session(store, &bob, t0()).await;
    let mut made = Vec::new();
    for i in 0..3u32 {
        let at = t0().plus(MIN * i);
        let (_, s) = new_session(&alice, at);
        assert!(store.create_session(&s, 3, at).await.unwrap().is_empty());
        made.push(s.id);
    }
    let at = t0().plus(10 * MIN);
    let (t4, s4) = new_session(&alice, at);
    assert_eq!(store.create_session(&s4, 3, at).await.unwrap(), vec![made[0].clone()]);
    assert!(store.session_by_token(&t4.hash(), at).await.unwrap().is_some());
    assert_eq!(store.list_sessions(Some(&alice.id), at).await.unwrap().len(), 3);
    // Lowering the cap to 1 leaves only the new one.
    let (_, s5) = new_session(&alice, at.plus(MIN));
    let mut evicted = store.create_session(&s5, 1, at.plus(MIN)).await.unwrap();
    evicted.sort();
    let mut expected = vec![made[1].clone(), made[2].clone(), s4.id];
    expected.sort();
    assert_eq!(evicted, expected);
    assert!(store.session_by_id(&bobs, at).await.unwrap().is_some());
}

/// Rotation: the new token works, the old one stops at once; it is a compare-and-set on the
/// current token, so of two racing rotations one wins; a revoked session cannot rotate.
pub async fn rotate(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let (old, id) = session(store, &alice, t0()).await;
    let new = Token::generate(SecretKind::Session).unwrap();
    let csrf = CsrfToken::generate().unwrap();
    let later = t0().plus(MIN);
    assert!(store.rotate(&id, &old.hash(), &new.hash(), &csrf, later).await.unwrap());
    assert!(store.session_by_token(&old.hash(), later).await.unwrap().is_none());
    let found = store.session_by_token(&new.hash(), later).await.unwrap().unwrap();
    assert_eq!(found.session.id, id);
    assert_eq!(found.session.csrf, csrf);
    assert_eq!(found.session.token_issued_at, later);
    assert_eq!(found.session.created_at, t0());

    // A second rotation from the old token loses and changes nothing.
    let loser = Token::generate(SecretKind::Session).unwrap();
    assert!(!store.rotate(&id, &old.hash(), &loser.hash(), &csrf, later).await.unwrap());
    assert!(store.session_by_token(&loser.hash(), later).await.unwrap().is_none());
    assert!(store.session_by_token(&new.hash(), later).await.unwrap().is_some());

    store.revoke_session(&id).await.unwrap();
    let newer = Token::generate(SecretKind::Session).unwrap();
    assert!(!store.rotate(&id, &new.hash(), &newer.hash(), &csrf, later).await.unwrap());
    assert!(store.session_by_token(&newer.hash(), later).await.unwrap().is_none());
}

/// Session data: versions start at 1, a stale `if_version` loses, a revoked session is `Gone`.
pub async fn session_data_compare_and_set(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let (_, id) = session(store, &alice, t0()).await;
    let data = store.session_data(&id).await.unwrap().unwrap();
    assert_eq!((data.value, data.version), (json!({}), 1));
    assert_eq!(
        store.put_session_data(&id, &json!({"cart": [1]}), Some(1)).await.unwrap(),
        DataWrite::Stored(2)
    );
    assert_eq!(
        store.put_session_data(&id, &json!({"cart": [2]}), Some(1)).await.unwrap(),
        DataWrite::VersionMismatch(2)
    );
    assert_eq!(
        store.put_session_data(&id, &json!({"cart": [3]}), None).await.unwrap(),
        DataWrite::Stored(3)
    );
    let data = store.session_data(&id).await.unwrap().unwrap();
    assert_eq!((data.value, data.version), (json!({"cart": [3]}), 3));
    store.revoke_session(&id).await.unwrap();
    assert_eq!(store.put_session_data(&id, &json!({"x": 1}), None).await.unwrap(), DataWrite::Gone);
    assert!(store.session_data(&id).await.unwrap().is_none());
}

/// Of many writers holding the same version, exactly one wins.
pub async fn concurrent_data_writers_never_overwrite(store: Arc<dyn Store>) {
    let alice = user(&*store, "alice", &[]).await;
    let (_, id) = session(&*store, &alice, t0()).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, id) = (Arc::clone(&store), id.clone());
        tasks.push(tokio::spawn(async move {
            store.put_session_data(&id, &json!({ "writer": i }), Some(1)).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), DataWrite::Stored(2)) {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.session_data(&id).await.unwrap().unwrap().version, 2);
}

/// A revocation racing with touches and data writes wins: the session never comes back.
pub async fn revoked_sessions_are_never_resurrected(store: Arc<dyn Store>) {
    let alice = user(&*store, "alice", &[]).await;
    for round in 0..5u32 {
        let (token, id) = session(&*store, &alice, t0()).await;
        let mut tasks = Vec::new();
        for i in 0..6u32 {
            let (store, id) = (Arc::clone(&store), id.clone());
            tasks.push(tokio::spawn(async move {
                for j in 0..5u32 {
                    let at = t0().plus(Duration::from_secs(u64::from(i * 10 + j)));
                    let _ = store.touch(&id, at, at.plus(30 * MIN)).await.unwrap();
                    let _ = store
                        .put_session_data(&id, &json!({ "i": i, "j": j }), None)
                        .await
                        .unwrap();
                }
            }));
        }
        let revoker = {
            let (store, id) = (Arc::clone(&store), id.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(u64::from(round))).await;
                store.revoke_session(&id).await.unwrap()
            })
        };
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(revoker.await.unwrap(), Some(alice.id.clone()));
        assert!(store.session_by_token(&token.hash(), t0().plus(MIN)).await.unwrap().is_none());
        assert!(store.session_by_id(&id, t0().plus(MIN)).await.unwrap().is_none());
        assert!(store.session_data(&id).await.unwrap().is_none());
        assert!(!store.touch(&id, t0().plus(MIN), t0().plus(HOUR)).await.unwrap());
    }
    assert!(store.list_sessions(Some(&alice.id), t0().plus(MIN)).await.unwrap().is_empty());
}

/// The sweep deletes expired sessions and only those.
pub async fn delete_expired(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let (_, old) = session(store, &alice, t0()).await;
    let (_, fresh) = session(store, &alice, t0().plus(20 * MIN)).await;
    let now = t0().plus(35 * MIN);
    assert_eq!(store.delete_expired(now).await.unwrap(), 1);
    assert!(store.session_data(&old).await.unwrap().is_none());
    assert!(store.session_by_id(&fresh, now).await.unwrap().is_some());
    assert_eq!(store.delete_expired(now).await.unwrap(), 0);
}

/// A scoped session (traded for a grant) keeps its audience; a login session has none.
pub async fn scoped_sessions_keep_their_audience(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let (token, mut new) = new_session(&alice, t0());
    new.audience = Some("files".into());
    store.create_session(&new, 0, t0()).await.unwrap();
    let found = store.session_by_token(&token.hash(), t0()).await.unwrap().unwrap();
    assert_eq!(found.session.audience.as_deref(), Some("files"));
    let (plain, _) = session(store, &alice, t0()).await;
    let found = store.session_by_token(&plain.hash(), t0()).await.unwrap().unwrap();
    assert_eq!(found.session.audience, None);
}
