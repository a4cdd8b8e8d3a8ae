//! The store conformance suite: every [`Store`] must pass it. A store crate runs it with
//!
//! ```ignore
//! cloakroom_core::store_conformance_tests!(async || {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = MyStore::open(dir.path()).await.unwrap();
//!     (store, dir) // the second value is dropped when the test ends (temp dirs, servers)
//! });
//! ```
//!
//! which expands to one `#[tokio::test]` per property below, so a failure names what broke. The
//! transfer properties (`transfer.rs`) get two stores from the factory: a source and a
//! destination.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::audit::{AuditEvent, AuditFilter, AuditKind};
use crate::grant::{GrantRevocation, GrantUse, Redemption, Revoked, SigningKeyRecord};
use crate::id::{SessionId, UserId};
use crate::password::PasswordHash;
use crate::session::{DataWrite, NewSession};
use crate::store::{BusEvent, EventId, Reservation, Store};
use crate::time::Timestamp;
use crate::token::{CsrfToken, SecretKind, Token, TokenHash};
use crate::user::{NewUser, Role, User, UserChange, Username};

mod transfer;

pub use transfer::*;

const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// A fixed "now" for tests, with room before and after.
pub fn t0() -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000)
}

/// Creates a user named `name` with `roles`.
pub async fn user(store: &dyn Store, name: &str, roles: &[&str]) -> User {
    let new = NewUser {
        id: UserId::generate().expect("rng"),
        username: Username::parse(name).expect("valid name"),
        roles: roles.iter().map(|r| Role::parse(r).expect("valid role")).collect(),
        password_hash: Some(PasswordHash::from_stored(
            "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        )),
        created_at: t0(),
    };
    store.create_user(&new).await.expect("create user")
}

/// A new session for `user` created at `at`, idle 30 min, absolute 12 h, and its token.
pub fn new_session(user: &User, at: Timestamp) -> (Token, NewSession) {
    let token = Token::generate(SecretKind::Session).expect("rng");
    let s = NewSession {
        id: SessionId::generate().expect("rng"),
        token_hash: token.hash(),
        csrf: CsrfToken::generate().expect("rng"),
        user_id: user.id.clone(),
        created_at: at,
        idle_expires_at: at.plus(30 * MIN),
        expires_at: at.plus(12 * HOUR),
        ip: Some("192.0.2.1".into()),
        user_agent: Some("conformance".into()),
        audience: None,
        data: json!({}),
    };
    (token, s)
}

/// Creates a session for `user` at `at` (no cap) and returns its token and id.
pub async fn session(store: &dyn Store, user: &User, at: Timestamp) -> (Token, SessionId) {
    let (token, s) = new_session(user, at);
    store.create_session(&s, 0, at).await.expect("create session");
    (token, s.id)
}

fn random_hash() -> TokenHash {
    Token::generate(SecretKind::Session).expect("rng").hash()
}

// ------------------------------------------------------------------ the properties

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

/// A session's user comes with its current roles; a disabled user's sessions are not found,
/// and disabling or a new password revokes them for good.
pub async fn user_changes(store: &dyn Store) {
    let alice = user(store, "alice", &["staff"]).await;
    let (t1, s1) = session(store, &alice, t0()).await;
    let (t2, _) = session(store, &alice, t0()).await;

    let roles = vec![Role::parse("admin").unwrap()];
    let change = UserChange { roles: Some(roles.clone()), ..Default::default() };
    let (updated, revoked) = store.update_user(&alice.id, &change, None).await.unwrap();
    assert!(revoked.is_empty(), "a role change alone revokes nothing");
    assert_eq!(updated.roles, roles);
    assert_eq!(store.session_by_token(&t1.hash(), t0()).await.unwrap().unwrap().user.roles, roles);

    let pw = PasswordHash::from_stored("$argon2id$v=19$m=64,t=1,p=1$bmV3c2FsdA$bmV3".into());
    let change = UserChange { password_hash: Some(pw.clone()), ..Default::default() };
    let (_, revoked) = store.update_user(&alice.id, &change, Some(&s1)).await.unwrap();
    assert_eq!(revoked.len(), 1);
    assert!(store.session_by_token(&t1.hash(), t0()).await.unwrap().is_some());
    assert!(store.session_by_token(&t2.hash(), t0()).await.unwrap().is_none());
    let record = store.user_by_name(&alice.username).await.unwrap().unwrap();
    assert_eq!(record.password_hash, Some(pw.clone()));

    let change = UserChange { disabled: Some(true), ..Default::default() };
    let (updated, revoked) = store.update_user(&alice.id, &change, None).await.unwrap();
    assert!(updated.disabled);
    assert_eq!(revoked, vec![s1.clone()]);
    assert!(store.session_by_token(&t1.hash(), t0()).await.unwrap().is_none());

    // Re-enabling does not bring the sessions back.
    let change = UserChange { disabled: Some(false), ..Default::default() };
    store.update_user(&alice.id, &change, None).await.unwrap();
    assert!(store.session_by_token(&t1.hash(), t0()).await.unwrap().is_none());

    let ghost = UserId::generate().unwrap();
    assert!(matches!(
        store.update_user(&ghost, &UserChange::default(), None).await,
        Err(crate::StoreError::NotFound { .. })
    ));
}

/// Usernames are unique, users are listed by name, and unknown names are `None`.
pub async fn users_are_unique_and_listed(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    user(store, "carol", &[]).await;
    let dup = NewUser {
        id: UserId::generate().unwrap(),
        username: alice.username.clone(),
        roles: vec![],
        password_hash: None,
        created_at: t0(),
    };
    assert!(matches!(store.create_user(&dup).await, Err(crate::StoreError::Conflict { .. })));
    let names: Vec<_> =
        store.list_users().await.unwrap().into_iter().map(|u| u.username.to_string()).collect();
    assert_eq!(names, ["alice", "carol"]);
    assert!(store.user_by_name(&Username::parse("nobody").unwrap()).await.unwrap().is_none());
    let record = store.user_by_name(&alice.username).await.unwrap().unwrap();
    assert!(record.user.has_password);
}

/// A rehash replaces the password hash only if it is still the old one, and revokes nothing.
pub async fn replace_password_hash_is_compare_and_set(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let (token, _) = session(store, &alice, t0()).await;
    let old = store.user_by_name(&alice.username).await.unwrap().unwrap().password_hash.unwrap();
    let new = PasswordHash::from_stored("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$bmV3".into());
    assert!(store.replace_password_hash(&alice.id, &old, &new).await.unwrap());
    assert!(!store.replace_password_hash(&alice.id, &old, &new).await.unwrap());
    assert_eq!(
        store.user_by_name(&alice.username).await.unwrap().unwrap().password_hash,
        Some(new)
    );
    assert!(store.session_by_token(&token.hash(), t0()).await.unwrap().is_some());
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

/// A change of roles stamps `privileges_changed_at`; other changes and a same-roles update do
/// not. A session's token is then older than its user's privileges until it rotates.
pub async fn privilege_changes_are_stamped(store: &dyn Store) {
    // Role changes are stamped with the store's clock, so this test lives in real time.
    let base = Timestamp::from_millis(Timestamp::now().as_millis() - 60_000);
    let alice = user(store, "alice", &["staff"]).await;
    assert_eq!(alice.privileges_changed_at, Timestamp::from_millis(0));
    let (token, id) = session(store, &alice, base).await;
    let same = UserChange { roles: Some(alice.roles.clone()), ..Default::default() };
    let (u, _) = store.update_user(&alice.id, &same, None).await.unwrap();
    assert_eq!(
        u.privileges_changed_at,
        Timestamp::from_millis(0),
        "same roles: no privilege change"
    );
    let change =
        UserChange { roles: Some(vec![Role::parse("admin").unwrap()]), ..Default::default() };
    let (u, _) = store.update_user(&alice.id, &change, None).await.unwrap();
    assert!(u.privileges_changed_at > base);
    let found = store.session_by_id(&id, base).await.unwrap().unwrap();
    assert_eq!(found.user.privileges_changed_at, u.privileges_changed_at);
    assert_eq!(found.session.token_issued_at, base);
    let new = Token::generate(SecretKind::Session).unwrap();
    let after = u.privileges_changed_at.plus(Duration::from_millis(1));
    assert!(
        store.rotate(&id, &token.hash(), &new.hash(), &found.session.csrf, after).await.unwrap()
    );
    let found = store.session_by_token(&new.hash(), after).await.unwrap().unwrap();
    assert!(found.user.privileges_changed_at < found.session.token_issued_at);
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

/// API keys: found by hash only, names unique, revocation final.
pub async fn api_keys(store: &dyn Store) {
    let key = Token::generate(SecretKind::ApiKey).unwrap();
    let created = store.create_api_key("billing", &key.hash(), t0()).await.unwrap();
    assert_eq!(created.name, "billing");
    let other = Token::generate(SecretKind::ApiKey).unwrap();
    assert!(matches!(
        store.create_api_key("billing", &other.hash(), t0()).await,
        Err(crate::StoreError::Conflict { .. })
    ));
    assert_eq!(store.api_key_by_hash(&key.hash()).await.unwrap().unwrap().name, "billing");
    assert!(store.api_key_by_hash(&other.hash()).await.unwrap().is_none());
    assert_eq!(store.list_api_keys().await.unwrap().len(), 1);
    assert!(store.revoke_api_key("billing").await.unwrap());
    assert!(!store.revoke_api_key("billing").await.unwrap());
    assert!(store.api_key_by_hash(&key.hash()).await.unwrap().is_none());
}

/// Audit events come back newest first, filtered by user, with every field.
pub async fn audit_events(store: &dyn Store) {
    let alice = Username::parse("alice").unwrap();
    let bob = Username::parse("bob").unwrap();
    let sid = SessionId::generate().unwrap();
    for (i, (kind, who)) in [
        (AuditKind::LoginFailed, &alice),
        (AuditKind::LoginSucceeded, &alice),
        (AuditKind::LoginSucceeded, &bob),
        (AuditKind::SessionRevoked, &alice),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = AuditEvent::new(kind, "self")
            .user(None, who)
            .session(&sid)
            .ip(Some("192.0.2.7".into()));
        e.at = t0().plus(Duration::from_secs(i as u64));
        if kind == AuditKind::SessionRevoked {
            e = e.detail("logout");
        }
        store.append_audit(&e).await.unwrap();
    }
    let events =
        store.list_audit(&AuditFilter { username: Some(alice.clone()), limit: 0 }).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [AuditKind::SessionRevoked, AuditKind::LoginSucceeded, AuditKind::LoginFailed]
    );
    assert_eq!(events[0].detail.as_deref(), Some("logout"));
    assert_eq!(events[0].session_id.as_ref(), Some(&sid));
    assert_eq!(events[0].ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(events[0].at, t0().plus(Duration::from_secs(3)));
    assert_eq!(store.list_audit(&AuditFilter { username: None, limit: 2 }).await.unwrap().len(), 2);
}

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
async fn next_invalidation(feed: &mut tokio::sync::mpsc::Receiver<BusEvent>) -> Option<UserId> {
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

fn grant_use(user: &User, issued_at: Timestamp) -> GrantUse {
    GrantUse {
        id: crate::id::GrantId::generate().unwrap().as_str().to_owned(),
        user: user.id.clone(),
        issued_at,
        expires_at: issued_at.plus(MIN),
    }
}

/// A grant is redeemed once: the second time it is already used, also when two redemptions race.
pub async fn grants_are_redeemed_once(store: Arc<dyn Store>) {
    let alice = user(&*store, "alice", &[]).await;
    let g = grant_use(&alice, t0());
    assert_eq!(store.redeem_grant(&g, t0()).await.unwrap(), Redemption::Redeemed);
    assert_eq!(store.redeem_grant(&g, t0()).await.unwrap(), Redemption::AlreadyUsed);
    for _ in 0..20 {
        let g = grant_use(&alice, t0());
        let (a, b) = tokio::join!(
            {
                let (s, g) = (Arc::clone(&store), g.clone());
                tokio::spawn(async move { s.redeem_grant(&g, t0()).await.unwrap() })
            },
            {
                let (s, g) = (Arc::clone(&store), g.clone());
                tokio::spawn(async move { s.redeem_grant(&g, t0()).await.unwrap() })
            },
        );
        let mut outcomes = [a.unwrap(), b.unwrap()];
        outcomes.sort_by_key(|o| *o as u8);
        assert_eq!(outcomes, [Redemption::Redeemed, Redemption::AlreadyUsed]);
    }
    // The redemption is reported as a revocation, for offline verifiers.
    let revs = store.grant_revocations(t0(), t0()).await.unwrap();
    assert!(revs.iter().any(|r| r.subject == Revoked::Grant(g.id.clone())));
}

/// A user's grant revocations are coalesced into one entry with the latest times, however often
/// they are made: what every verifier reads on connect does not grow with one user's calls.
pub async fn user_grant_revocations_are_coalesced(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let bob = user(store, "bob", &[]).await;
    for i in 0..50u32 {
        let at = t0().plus(Duration::from_millis(u64::from(i) * 10));
        store.revoke_grants(&GrantRevocation::user(&alice.id, at)).await.unwrap();
    }
    // An older one arriving late changes nothing.
    store.revoke_grants(&GrantRevocation::user(&alice.id, t0())).await.unwrap();
    store.revoke_grants(&GrantRevocation::user(&bob.id, t0())).await.unwrap();
    let revs = store.grant_revocations(t0(), t0()).await.unwrap();
    let alices: Vec<_> =
        revs.iter().filter(|r| r.subject == Revoked::User(alice.id.clone())).collect();
    assert_eq!(alices.len(), 1, "one entry for alice: {revs:?}");
    let latest = GrantRevocation::user(&alice.id, t0().plus(Duration::from_millis(490)));
    assert_eq!(*alices[0], latest, "with the latest times");
    assert_eq!(revs.len(), 2, "and one for bob");
    // And the coalesced entry still revokes what it covers.
    let g = grant_use(&alice, t0().plus(Duration::from_millis(400)));
    assert_eq!(store.redeem_grant(&g, t0()).await.unwrap(), Redemption::Revoked);
}

/// Revoking a user's grants refuses those issued at or before the revocation, not later ones;
/// revoking one grant refuses that one; revocations are listed since a time until they lapse.
pub async fn grant_revocations(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let bob = user(store, "bob", &[]).await;
    let early = grant_use(&alice, t0());
    let bobs = grant_use(&bob, t0());
    store.revoke_grants(&GrantRevocation::user(&alice.id, t0().plus(MIN / 2))).await.unwrap();
    let now = t0().plus(MIN / 2);
    assert_eq!(store.redeem_grant(&early, now).await.unwrap(), Redemption::Revoked);
    assert_eq!(store.redeem_grant(&bobs, now).await.unwrap(), Redemption::Redeemed);
    let later = grant_use(&alice, t0().plus(MIN));
    assert_eq!(store.redeem_grant(&later, t0().plus(MIN)).await.unwrap(), Redemption::Redeemed);

    let one = grant_use(&bob, t0());
    store.revoke_grants(&GrantRevocation::grant(&one.id, now, one.expires_at)).await.unwrap();
    assert_eq!(store.redeem_grant(&one, now).await.unwrap(), Redemption::Revoked);

    let listed = store.grant_revocations(t0(), now).await.unwrap();
    assert!(listed.contains(&GrantRevocation::user(&alice.id, t0().plus(MIN / 2))));
    assert!(listed.iter().any(|r| r.subject == Revoked::Grant(one.id.clone())));
    assert!(store.grant_revocations(now.plus(MIN), now).await.unwrap().is_empty(), "since");
    let lapsed = now.plus(crate::grant::MAX_GRANT_TTL).plus(MIN);
    assert!(store.grant_revocations(t0(), lapsed).await.unwrap().is_empty(), "until");
}

/// Signing keys are stored as given and listed oldest first; a rotation retires every other key
/// that was not retired yet, atomically with adding the new one.
pub async fn signing_keys(store: &dyn Store) {
    let key = |n: i64, active_from: Timestamp| SigningKeyRecord {
        id: format!("k4.pid.test{n}"),
        public: format!("k4.public.test{n}"),
        sealed: format!("v4.local.sealed{n}"),
        created_at: t0().plus(MIN * u32::try_from(n).unwrap()),
        active_from,
        retired_at: None,
    };
    assert!(store.signing_keys().await.unwrap().is_empty());
    let first = key(1, t0());
    store.add_signing_key(&first, None).await.unwrap();
    assert_eq!(store.signing_keys().await.unwrap(), vec![first.clone()]);
    assert!(matches!(
        store.add_signing_key(&first, None).await,
        Err(crate::StoreError::Conflict { .. })
    ));
    let switch = t0().plus(2 * MIN);
    let second = key(2, switch);
    store.add_signing_key(&second, Some(switch)).await.unwrap();
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].id, first.id);
    assert_eq!(keys[0].retired_at, Some(switch));
    assert_eq!(keys[1], second);
}

/// Expands to one test per conformance property for the store that `$factory` builds. The factory
/// is an async closure returning `(store, guard)`; the guard lives until the test ends.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@each $factory;
            create_and_find, unknown_tokens_are_never_adopted, idle_expiry_and_touch,
            absolute_expiry, revoke_one, revoke_others_and_all, list_by_user, cap_per_user,
            user_changes, users_are_unique_and_listed, replace_password_hash_is_compare_and_set,
            rotate, privilege_changes_are_stamped, invalidations_reach_subscribers, session_data_compare_and_set, delete_expired, api_keys, audit_events, event_logs,
            scoped_sessions_keep_their_audience, grant_revocations, signing_keys,
            user_grant_revocations_are_coalesced, imports_are_announced);
        $crate::store_conformance_tests!(@pair $factory;
            transfer_round_trip_preserves_everything, a_second_import_writes_nothing,
            imports_bring_the_delta_and_never_resurrect);
        $crate::store_conformance_tests!(@shared $factory;
            concurrent_data_writers_never_overwrite, revoked_sessions_are_never_resurrected,
            grants_are_redeemed_once, event_reservations_hold_under_races);
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (store, _guard) = ($factory)().await;
            $crate::testing::$name(&store).await;
        }
    )*};
    (@pair $factory:expr; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (source, _source_guard) = ($factory)().await;
            let (destination, _destination_guard) = ($factory)().await;
            $crate::testing::$name(&source, &destination).await;
        }
    )*};
    (@shared $factory:expr; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (store, _guard) = ($factory)().await;
            $crate::testing::$name(::std::sync::Arc::new(store)).await;
        }
    )*};
}
