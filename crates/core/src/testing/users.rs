//! [`UserStore`]'s properties: unique names, changes applied atomically
//! with the revocations they imply, compare-and-set hash upgrades, privilege stamps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use super::{session, t0, user};
use crate::id::UserId;
use crate::password::PasswordHash;
use crate::store::prelude::*;
use crate::time::Timestamp;
use crate::token::{SecretKind, Token};
use crate::user::{NewUser, Role, UserChange, Username};

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
