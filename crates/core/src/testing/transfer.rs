//! The transfer properties ([`crate::export::Transfer`]): a store's contents copied into another
//! store of the same kind arrive whole, a second copy writes nothing, a later copy brings what
//! changed, and no import brings anything back to life. The pair properties take two empty
//! stores; `cloakroom store copy`'s tests cover copies between different kinds.

use std::time::Duration;

use serde_json::json;

use super::feed::next_invalidation;
use super::grants::grant_use;
use super::{HOUR, MIN, new_session, session, t0, user};
use crate::audit::{AuditEvent, AuditFilter, AuditKind};
use crate::export::{Batch, Imported, Kind, Session as ExportedSession, Transfer};
use crate::grant::{GrantRevocation, Redemption, SigningKeyRecord};
use crate::id::{SessionId, UserId};
use crate::session::DataWrite;
use crate::store::BusEvent;
use crate::store::prelude::*;
use crate::time::Timestamp;
use crate::token::{CsrfToken, SecretKind, Token, TokenHash};
use crate::user::{NewUser, Role, User, UserChange, Username};

/// A small page, so that every kind pages.
const PAGE: usize = 2;

fn transfer(store: &dyn Store) -> &dyn Transfer {
    store.transfer().expect("the store offers export and import")
}

/// Every record of `kind` that `store` exports at `now`, as sorted JSON lines.
pub async fn exported(store: &dyn Store, kind: Kind, now: Timestamp) -> Vec<String> {
    let mut lines = Vec::new();
    let mut after = None;
    loop {
        let page = transfer(store).export(kind, after.as_ref(), PAGE, now).await.unwrap();
        assert!(page.batch.len() <= PAGE, "{kind:?}: a page holds at most the limit");
        assert_eq!(page.batch.kind(), kind);
        lines.extend(page.batch.each_json().into_iter().map(|j| String::from_utf8(j).unwrap()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    lines.sort();
    lines
}

/// Everything `store` exports at `now`, kind by kind.
pub async fn everything(store: &dyn Store, now: Timestamp) -> Vec<(Kind, Vec<String>)> {
    let mut all = Vec::new();
    for kind in Kind::ALL {
        all.push((kind, exported(store, kind, now).await));
    }
    all
}

/// Copies every kind from `from` into `to` page by page at `now`; what each import did.
pub async fn copy_store(from: &dyn Store, to: &dyn Store, now: Timestamp) -> Vec<(Kind, Imported)> {
    let mut done = Vec::new();
    for kind in Kind::ALL {
        let mut total = Imported::default();
        let mut after = None;
        loop {
            let page = transfer(from).export(kind, after.as_ref(), PAGE, now).await.unwrap();
            total += transfer(to).import(&page.batch, now).await.unwrap();
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        done.push((kind, total));
    }
    done
}

/// What [`populate`] made, to look up on the destination.
struct Made {
    alice: User,
    kept: (Token, SessionId),
    rotated: (Token, Token, SessionId),
    scoped: (Token, SessionId),
    carols: (Token, SessionId),
    revoked: (Token, SessionId),
    expired: (Token, SessionId),
    billing: Token,
    old_key: Token,
    keys: Vec<SigningKeyRecord>,
    redeemed: crate::grant::GrantUse,
    revoked_grant: crate::grant::GrantUse,
    bobs_grant: crate::grant::GrantUse,
}

/// A bit of everything a store holds, around [`t0`]; exported at [`after`].
async fn populate(store: &dyn Store) -> Made {
    let alice = user(store, "alice", &["staff"]).await;
    let roles = vec![Role::parse("admin").unwrap(), Role::parse("staff").unwrap()];
    let change = UserChange { roles: Some(roles), ..Default::default() };
    let (alice, _) = store.update_user(&alice.id, &change, None).await.unwrap();
    assert!(alice.privileges_changed_at > Timestamp::from_millis(0));
    let bob = user(store, "bob", &[]).await;
    session(store, &bob, t0()).await;
    let disable = UserChange { disabled: Some(true), ..Default::default() };
    store.update_user(&bob.id, &disable, None).await.unwrap();
    let carol = NewUser {
        id: UserId::generate().unwrap(),
        username: Username::parse("carol").unwrap(),
        roles: vec![],
        password_hash: None,
        created_at: t0(),
    };
    let carol = store.create_user(&carol).await.unwrap();

    let kept = session(store, &alice, t0()).await;
    let at = t0().plus(5 * MIN);
    assert!(store.touch(&kept.1, at, at.plus(30 * MIN)).await.unwrap());
    assert_eq!(
        store
            .put_session_data(&kept.1, &json!({"cart": [1, 2], "théme": "dark"}), None)
            .await
            .unwrap(),
        DataWrite::Stored(2)
    );
    let (old, id) = session(store, &alice, t0()).await;
    let new = Token::generate(SecretKind::Session).unwrap();
    let csrf = CsrfToken::generate().unwrap();
    assert!(store.rotate(&id, &old.hash(), &new.hash(), &csrf, t0().plus(MIN)).await.unwrap());
    let rotated = (old, new, id);
    let (scoped_token, mut scoped) = new_session(&alice, t0());
    scoped.audience = Some("files".into());
    scoped.ip = None;
    store.create_session(&scoped, 0, t0()).await.unwrap();
    let carols = session(store, &carol, t0()).await;
    let revoked = session(store, &alice, t0()).await;
    store.revoke_session(&revoked.1).await.unwrap();
    let expired = session(store, &alice, t0().minus(HOUR)).await;

    let billing = Token::generate(SecretKind::ApiKey).unwrap();
    store.create_api_key("billing", &billing.hash(), t0()).await.unwrap();
    let old_key = Token::generate(SecretKind::ApiKey).unwrap();
    store.create_api_key("old", &old_key.hash(), t0()).await.unwrap();
    store.revoke_api_key("old").await.unwrap();

    let key = |n: u32, active_from: Timestamp| SigningKeyRecord {
        id: format!("k4.pid.transfer{n}"),
        public: format!("k4.public.transfer{n}"),
        sealed: format!("v4.local.sealed{n}"),
        created_at: t0().plus(MIN * n),
        active_from,
        retired_at: None,
    };
    store.add_signing_key(&key(1, t0()), None).await.unwrap();
    store.add_signing_key(&key(2, t0().plus(2 * MIN)), Some(t0().plus(2 * MIN))).await.unwrap();
    let keys = store.signing_keys().await.unwrap();

    let redeemed = grant_use(&alice, t0());
    assert_eq!(store.redeem_grant(&redeemed, t0()).await.unwrap(), Redemption::Redeemed);
    let revoked_grant = grant_use(&alice, t0());
    store
        .revoke_grants(&GrantRevocation::grant(&revoked_grant.id, t0(), revoked_grant.expires_at))
        .await
        .unwrap();
    let bobs_grant = grant_use(&bob, t0());
    store.revoke_grants(&GrantRevocation::user(&bob.id, t0())).await.unwrap();

    let w = Duration::from_secs(3600);
    for (key, at) in [
        ("login:a:alice", t0().minus(Duration::from_secs(1))),
        ("login:a:alice", t0()),
        ("login:i:192.0.2.1", t0()),
    ] {
        store.reserve_event(key, at, w, 10, false).await.unwrap();
    }

    for (i, kind) in [AuditKind::LoginSucceeded, AuditKind::LoginFailed, AuditKind::SessionRevoked]
        .into_iter()
        .enumerate()
    {
        let mut e = AuditEvent::new(kind, "self").user(Some(&alice.id), &alice.username);
        e.at = t0().plus(Duration::from_millis(i as u64));
        if kind == AuditKind::SessionRevoked {
            e = e.session(&revoked.1).ip(Some("192.0.2.7".into())).detail("logout");
        }
        store.append_audit(&e).await.unwrap();
    }
    Made {
        alice,
        kept,
        rotated,
        scoped: (scoped_token, scoped.id),
        carols,
        revoked,
        expired,
        billing,
        old_key,
        keys,
        redeemed,
        revoked_grant,
        bobs_grant,
    }
}

/// When the populated store is exported.
fn after() -> Timestamp {
    t0().plus(Duration::from_secs(1))
}

/// The counts of [`populate`]'s export, by kind.
fn populated_counts() -> [(Kind, usize); 8] {
    [
        (Kind::Users, 3),
        (Kind::Sessions, 4),
        (Kind::ApiKeys, 1),
        (Kind::SigningKeys, 2),
        (Kind::GrantUses, 1),
        // The redemption (a revocation for offline verifiers), the revoked grant, bob's.
        (Kind::GrantRevocations, 3),
        (Kind::EventLogs, 2),
        (Kind::Audit, 3),
    ]
}

/// A copy into an empty store of the same kind preserves everything: both export the same
/// records, and the destination answers every lookup as the source does (the same token finds
/// the same session with its deadlines, CSRF token, data and user; a used grant stays used; a
/// revoked session, an expired one and a revoked API key stay gone).
pub async fn transfer_round_trip_preserves_everything(a: &dyn Store, b: &dyn Store) {
    let made = populate(a).await;
    let now = after();
    let source = everything(a, now).await;
    for ((kind, lines), (k, n)) in source.iter().zip(populated_counts()) {
        assert_eq!((*kind, lines.len()), (k, n), "{kind:?} exported: {lines:#?}");
    }
    assert_ne!(transfer(a).instance().await.unwrap(), transfer(b).instance().await.unwrap());
    let done = copy_store(a, b, now).await;
    for ((kind, imported), (_, n)) in done.iter().zip(populated_counts()) {
        assert_eq!(imported.written, n as u64, "{kind:?} written");
    }
    assert_eq!(everything(b, now).await, source, "the destination exports what the source did");

    for (token, id) in [&made.kept, &made.scoped, &made.carols] {
        let was = a.session_by_token(&token.hash(), now).await.unwrap().unwrap();
        let is = b.session_by_token(&token.hash(), now).await.unwrap().expect("same token");
        assert_eq!(&is.session.id, id);
        assert_eq!(is.session.csrf, was.session.csrf);
        for (x, y) in [
            (is.session.created_at, was.session.created_at),
            (is.session.last_seen_at, was.session.last_seen_at),
            (is.session.token_issued_at, was.session.token_issued_at),
            (is.session.idle_expires_at, was.session.idle_expires_at),
            (is.session.expires_at, was.session.expires_at),
        ] {
            assert_eq!(x, y, "deadlines and times of {id}");
        }
        assert_eq!(
            (&is.session.ip, &is.session.user_agent),
            (&was.session.ip, &was.session.user_agent)
        );
        assert_eq!(is.session.audience, was.session.audience);
        assert_eq!(is.user, was.user, "the user with roles and privileges_changed_at");
    }
    assert_eq!(
        b.session_data(&made.kept.1).await.unwrap(),
        a.session_data(&made.kept.1).await.unwrap()
    );
    let (old, new, id) = &made.rotated;
    assert!(b.session_by_token(&old.hash(), now).await.unwrap().is_none(), "rotated away");
    assert_eq!(&b.session_by_token(&new.hash(), now).await.unwrap().unwrap().session.id, id);
    for (token, id) in [&made.revoked, &made.expired] {
        assert!(b.session_by_token(&token.hash(), now).await.unwrap().is_none());
        assert!(b.session_data(id).await.unwrap().is_none(), "{id} stays gone");
    }
    let alice = b.user_by_name(&made.alice.username).await.unwrap().unwrap();
    let was = a.user_by_name(&made.alice.username).await.unwrap().unwrap();
    assert_eq!(alice.password_hash, was.password_hash);
    assert_eq!(alice.user, made.alice);
    assert_eq!(b.list_users().await.unwrap(), a.list_users().await.unwrap());
    let bob = b.user_by_name(&Username::parse("bob").unwrap()).await.unwrap().unwrap();
    assert!(bob.user.disabled);
    assert!(b.list_sessions(Some(&bob.user.id), now).await.unwrap().is_empty());

    assert_eq!(b.api_key_by_hash(&made.billing.hash()).await.unwrap().unwrap().name, "billing");
    assert!(b.api_key_by_hash(&made.old_key.hash()).await.unwrap().is_none());
    assert_eq!(b.signing_keys().await.unwrap(), made.keys);
    assert_eq!(b.redeem_grant(&made.redeemed, now).await.unwrap(), Redemption::AlreadyUsed);
    assert_eq!(b.redeem_grant(&made.revoked_grant, now).await.unwrap(), Redemption::Revoked);
    assert_eq!(b.redeem_grant(&made.bobs_grant, now).await.unwrap(), Redemption::Revoked);
    assert_eq!(
        b.grant_revocations(t0(), now).await.unwrap().len(),
        a.grant_revocations(t0(), now).await.unwrap().len()
    );
    let w = Duration::from_secs(3600);
    assert_eq!(
        b.event_log("login:a:alice", now, w).await.unwrap(),
        vec![t0().minus(Duration::from_secs(1)), t0()]
    );
    let all = AuditFilter { username: None, limit: 10 };
    let kinds = |events: Vec<AuditEvent>| {
        events.into_iter().map(|e| (e.kind, e.at, e.detail)).collect::<Vec<_>>()
    };
    assert_eq!(kinds(b.list_audit(&all).await.unwrap()), kinds(a.list_audit(&all).await.unwrap()));
    let alices = AuditFilter { username: Some(made.alice.username.clone()), limit: 10 };
    assert_eq!(b.list_audit(&alices).await.unwrap().len(), 3);
}

/// Importing what the destination already holds writes nothing: a second copy adds no session,
/// no audit event and no revocation, and changes no record.
pub async fn a_second_import_writes_nothing(a: &dyn Store, b: &dyn Store) {
    populate(a).await;
    let now = after();
    copy_store(a, b, now).await;
    let first = everything(b, now).await;
    for (kind, imported) in copy_store(a, b, now).await {
        assert_eq!(imported.written, 0, "{kind:?} written again");
        assert_eq!(imported.skipped, 0, "{kind:?}");
    }
    assert_eq!(everything(b, now).await, first, "nothing changed, nothing doubled");
    let all = AuditFilter { username: None, limit: 100 };
    assert_eq!(b.list_audit(&all).await.unwrap().len(), 3, "the audit log is not doubled");
}

/// A later copy brings what changed since the first (a touch's new deadlines, a rotated token,
/// new data, new roles, a new session), and no import brings anything back to life: a session
/// dead at the import's `now` is skipped, a session of a user the destination lacks is refused,
/// and a user imported disabled loses its sessions on the destination. An import deletes
/// nothing else (a session revoked on the source since is for the copier to revoke).
pub async fn imports_bring_the_delta_and_never_resurrect(a: &dyn Store, b: &dyn Store) {
    let made = populate(a).await;
    copy_store(a, b, after()).await;

    let later = t0().plus(10 * MIN);
    assert!(a.touch(&made.kept.1, later, later.plus(30 * MIN)).await.unwrap());
    a.put_session_data(&made.kept.1, &json!({"cart": [3]}), None).await.unwrap();
    let (_, new, id) = &made.rotated;
    let newer = Token::generate(SecretKind::Session).unwrap();
    let csrf = CsrfToken::generate().unwrap();
    assert!(a.rotate(id, &new.hash(), &newer.hash(), &csrf, later).await.unwrap());
    let roles =
        UserChange { roles: Some(vec![Role::parse("auditor").unwrap()]), ..Default::default() };
    let (alice, _) = a.update_user(&made.alice.id, &roles, None).await.unwrap();
    let fresh = session(a, &alice, later).await;
    a.revoke_session(&made.scoped.1).await.unwrap();
    let mut e = AuditEvent::new(AuditKind::Logout, "self").user(Some(&alice.id), &alice.username);
    e.at = later;
    a.append_audit(&e).await.unwrap();

    let now = later.plus(Duration::from_secs(1));
    let done = copy_store(a, b, now).await;
    let written = |kind: Kind| done.iter().find(|(k, _)| *k == kind).unwrap().1.written;
    assert_eq!(written(Kind::Users), 1, "alice's new roles");
    assert_eq!(written(Kind::Sessions), 3, "touched, rotated, new");
    assert_eq!(written(Kind::Audit), 1, "only the new event");
    let kept = b.session_by_token(&made.kept.0.hash(), now).await.unwrap().unwrap();
    assert_eq!(kept.session.idle_expires_at, later.plus(30 * MIN), "the newer deadline");
    assert_eq!(kept.session.last_seen_at, later);
    assert_eq!(kept.user.roles, alice.roles);
    assert_eq!(b.session_data(&made.kept.1).await.unwrap().unwrap().value, json!({"cart": [3]}));
    assert!(b.session_by_token(&new.hash(), now).await.unwrap().is_none(), "rotated on the source");
    let found = b.session_by_token(&newer.hash(), now).await.unwrap().unwrap();
    assert_eq!((&found.session.id, &found.session.csrf), (id, &csrf));
    assert!(b.session_by_token(&fresh.0.hash(), now).await.unwrap().is_some());
    // Import deletes nothing: the copier revokes what the source no longer has.
    assert!(b.session_by_id(&made.scoped.1, now).await.unwrap().is_some());
    assert_eq!(b.list_audit(&AuditFilter { username: None, limit: 100 }).await.unwrap().len(), 4);

    // Dead by the import's clock: skipped, never written.
    let (_, mut short) = new_session(&alice, now);
    short.idle_expires_at = now.plus(Duration::from_secs(1));
    a.create_session(&short, 0, now).await.unwrap();
    let page = transfer(a).export(Kind::Sessions, None, 1000, now).await.unwrap();
    let Batch::Sessions(sessions) = &page.batch else { panic!("a sessions batch") };
    let one: Vec<ExportedSession> =
        sessions.iter().filter(|s| s.id == short.id.as_str()).cloned().collect();
    assert_eq!(one.len(), 1);
    let late = now.plus(Duration::from_secs(2));
    let imported = transfer(b).import(&Batch::Sessions(one.clone()), late).await.unwrap();
    assert_eq!((imported.written, imported.skipped), (0, 1));
    assert!(b.session_by_id(&short.id, now).await.unwrap().is_none(), "not brought to life");

    // A session whose user the destination lacks is refused.
    let mut orphan = one[0].clone();
    orphan.id = SessionId::generate().unwrap().as_str().to_owned();
    orphan.user_id = UserId::generate().unwrap().as_str().to_owned();
    orphan.token_hash = Token::generate(SecretKind::Session).unwrap().hash().to_hex();
    assert!(matches!(
        transfer(b).import(&Batch::Sessions(vec![orphan.clone()]), now).await,
        Err(crate::StoreError::NotFound { .. })
    ));
    let hash = TokenHash::from_hex(&orphan.token_hash).unwrap();
    assert!(b.session_by_token(&hash, now).await.unwrap().is_none());

    // Disabled on the source: the user's sessions end on the destination with the import.
    let disable = UserChange { disabled: Some(true), ..Default::default() };
    a.update_user(&alice.id, &disable, None).await.unwrap();
    let page = transfer(a).export(Kind::Users, None, 1000, now).await.unwrap();
    assert_eq!(transfer(b).import(&page.batch, now).await.unwrap().written, 1);
    for id in [&made.kept.1, &fresh.1, &made.scoped.1] {
        assert!(b.session_data(id).await.unwrap().is_none(), "{id} ended with its user");
    }
    assert!(b.session_by_token(&made.carols.0.hash(), now).await.unwrap().is_some(), "not carol's");
}

/// An import that writes a user or a session announces an invalidation of every user on the
/// store's change feed, so that servers running on the destination drop what they cached.
pub async fn imports_are_announced(store: &dyn Store) {
    let alice = user(store, "alice", &[]).await;
    let (_, id) = session(store, &alice, t0()).await;
    let page = transfer(store).export(Kind::Sessions, None, 10, t0()).await.unwrap();
    let Batch::Sessions(mut sessions) = page.batch else { panic!("a sessions batch") };
    let mut feed = store.subscribe().await.unwrap();
    match tokio::time::timeout(Duration::from_secs(2), feed.recv()).await {
        Ok(Some(BusEvent::Connected)) => {}
        other => panic!("the feed must start with Connected, got {other:?}"),
    }
    sessions[0].idle_expires_at += 1000;
    let imported = transfer(store).import(&Batch::Sessions(sessions), t0()).await.unwrap();
    assert_eq!(imported.written, 1);
    assert_eq!(next_invalidation(&mut feed).await, None, "every user");
    let found = store.session_by_id(&id, t0()).await.unwrap().unwrap();
    assert_eq!(found.session.idle_expires_at, t0().plus(30 * MIN).plus(Duration::from_secs(1)));
}
