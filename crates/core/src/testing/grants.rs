//! [`GrantStore`]'s properties: single use under races, revocations
//! (coalesced per user), signing keys and their rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use super::{MIN, t0, user};
use crate::grant::{GrantRevocation, GrantUse, Redemption, Revoked, SigningKeyRecord};
use crate::store::prelude::*;
use crate::time::Timestamp;
use crate::user::User;

pub(crate) fn grant_use(user: &User, issued_at: Timestamp) -> GrantUse {
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
