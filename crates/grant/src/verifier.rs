//! [`Verifier`]: [`crate::decode`] plus what a verifying service needs around it: single use,
//! pushed revocations, and failing closed while the revocation feed it relies on is down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::claims::Grant;
use crate::keys::KeySet;
use crate::token::{GrantError, decode};

/// What a revocation names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum RevokedSubject {
    /// One grant, by id (revoked, or redeemed on the server: used up either way).
    Grant(String),
    /// Every grant of this user issued at or before the revocation's `at`.
    User(String),
}

/// One revocation as `/v1/revocations` sends it:
/// `{"kind":"user","id":"usr_…","at":"…","until":"…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Revocation {
    /// What is revoked.
    #[serde(flatten)]
    pub subject: RevokedSubject,
    /// When (RFC 3339). For a user: grants issued at or before this are revoked.
    pub at: String,
    /// After this (RFC 3339) every grant it could concern has expired, so it can be forgotten.
    pub until: String,
}

const FEED_NONE: u8 = 0;
const FEED_DOWN: u8 = 1;
const FEED_UP: u8 = 2;

struct Revoked {
    grants: HashMap<String, SystemTime>,
    /// user → (revoked at, forget after)
    users: HashMap<String, (SystemTime, SystemTime)>,
    /// Lapsed entries are swept when the maps reach this size (then twice what is left), so a
    /// busy feed (every redemption is a revocation) costs amortized O(1) per event, not a sweep.
    sweep_at: usize,
}

impl Default for Revoked {
    fn default() -> Self {
        Self { grants: HashMap::new(), users: HashMap::new(), sweep_at: 1024 }
    }
}

impl Revoked {
    fn sweep(&mut self, now: SystemTime) {
        self.grants.retain(|_, u| *u > now);
        self.users.retain(|_, (_, u)| *u > now);
        self.sweep_at = (2 * (self.grants.len() + self.users.len())).max(1024);
    }
}

/// Verifies grants for one audience: signature, claims, single use in this process, and
/// revocations.
///
/// Single use here means once per `Verifier`: a service with several replicas should redeem
/// through the server (`POST /v1/grants/redeem`), or rely on the revocation feed, which reports
/// every grant redeemed on the server.
pub struct Verifier {
    audience: String,
    keys: RwLock<KeySet>,
    leeway: Duration,
    used: Mutex<HashMap<String, SystemTime>>,
    capacity: usize,
    revoked: RwLock<Revoked>,
    feed: AtomicU8,
}

impl Verifier {
    /// A verifier for grants addressed to `audience`, signed by one of `keys`.
    pub fn new(audience: impl Into<String>, keys: KeySet) -> Self {
        Self {
            audience: audience.into(),
            keys: RwLock::new(keys),
            leeway: Duration::from_secs(5),
            used: Mutex::new(HashMap::new()),
            capacity: 1_000_000,
            revoked: RwLock::new(Revoked::default()),
            feed: AtomicU8::new(FEED_NONE),
        }
    }

    /// At most this many unexpired grants are remembered as used; when that many are, new grants
    /// are refused ([`GrantError::ReplayCacheFull`]) rather than one being forgotten.
    pub fn with_replay_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Clock-skew tolerance for `nbf` and `iat` (default 5 s). `exp` is never stretched.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The audience this verifier accepts.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Replaces the trusted keys (after fetching `/v1/keys` again, say).
    pub fn set_keys(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
    }

    /// The trusted keys' ids.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).ids().map(str::to_owned).collect()
    }

    /// Declares that this verifier relies on a revocation feed, and whether it is live. While it
    /// is not, every grant is refused ([`GrantError::RevocationsUnavailable`]): a revocation
    /// could have been missed. [`crate::client::follow`] calls this.
    pub fn set_feed_live(&self, live: bool) {
        self.feed.store(if live { FEED_UP } else { FEED_DOWN }, Ordering::SeqCst);
    }

    /// Whether a feed is in use and live (`None` when no feed was ever declared).
    pub fn feed_live(&self) -> Option<bool> {
        match self.feed.load(Ordering::SeqCst) {
            FEED_NONE => None,
            v => Some(v == FEED_UP),
        }
    }

    /// Records a revocation. Unparseable times fail closed: the revocation is kept for the
    /// longest a grant can live from now.
    pub fn revoke(&self, r: &Revocation, now: SystemTime) {
        let at = crate::parse_time(&r.at).unwrap_or(now);
        let until = crate::parse_time(&r.until).unwrap_or(now + Duration::from_secs(3600));
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        if revoked.grants.len() + revoked.users.len() >= revoked.sweep_at {
            revoked.sweep(now);
        }
        match &r.subject {
            RevokedSubject::Grant(id) => {
                revoked.grants.insert(id.clone(), until);
            }
            RevokedSubject::User(id) => {
                let e = revoked.users.entry(id.clone()).or_insert((at, until));
                *e = (e.0.max(at), e.1.max(until));
            }
        }
    }

    /// Verifies `token` without using it up: signature, type, audience, times, revocations.
    pub fn verify(&self, token: &str) -> Result<Grant, GrantError> {
        self.verify_at(token, SystemTime::now())
    }

    /// [`Verifier::verify`] at a given time.
    pub fn verify_at(&self, token: &str, now: SystemTime) -> Result<Grant, GrantError> {
        let grant = {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            decode(token, &self.audience, &keys, now, self.leeway)?
        };
        if self.feed.load(Ordering::SeqCst) == FEED_DOWN {
            return Err(GrantError::RevocationsUnavailable);
        }
        let revoked = self.revoked.read().unwrap_or_else(|e| e.into_inner());
        if revoked.grants.contains_key(&grant.claims.jti) {
            return Err(GrantError::Revoked);
        }
        if let Some((at, _)) = revoked.users.get(&grant.claims.sub)
            && grant.issued_at <= *at
        {
            return Err(GrantError::Revoked);
        }
        Ok(grant)
    }

    /// Verifies `token` and uses it up: a second call with the same grant is
    /// [`GrantError::Replayed`].
    pub fn redeem(&self, token: &str) -> Result<Grant, GrantError> {
        self.redeem_at(token, SystemTime::now())
    }

    /// [`Verifier::redeem`] at a given time.
    pub fn redeem_at(&self, token: &str, now: SystemTime) -> Result<Grant, GrantError> {
        let grant = self.verify_at(token, now)?;
        self.consume(&grant, now)?;
        Ok(grant)
    }

    /// Uses up a grant that [`Verifier::verify`] returned, without verifying it again: for a
    /// service that checks the request against the grant before spending it.
    /// [`GrantError::Replayed`] when it was used before.
    pub fn consume(&self, grant: &Grant, now: SystemTime) -> Result<(), GrantError> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.contains_key(&grant.claims.jti) {
            return Err(GrantError::Replayed);
        }
        if used.len() >= self.capacity {
            used.retain(|_, exp| *exp > now);
            if used.len() >= self.capacity {
                return Err(GrantError::ReplayCacheFull);
            }
        }
        used.insert(grant.claims.jti.clone(), grant.expires_at);
        Ok(())
    }

    /// Forgets used grants that expired (they cannot verify again anyway). [`Verifier::redeem`]
    /// does this by itself when the cache fills; call it periodically to keep memory low.
    pub fn prune(&self, now: SystemTime) {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, exp| *exp > now);
        self.revoked.write().unwrap_or_else(|e| e.into_inner()).sweep(now);
    }

    /// How many used grants are remembered.
    pub fn used_len(&self) -> usize {
        self.used.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Claims, SecretKey, format_time};

    fn grant(key: &SecretKey, id: &str, user: &str, now: SystemTime, ttl: u64) -> String {
        key.sign(&Claims::new(id, user, "ada", "files", now, Duration::from_secs(ttl))).unwrap()
    }

    fn verifier(key: &SecretKey) -> Verifier {
        Verifier::new("files", KeySet::from_keys([key.public_key()]))
    }

    #[test]
    fn a_grant_is_used_once() {
        let key = SecretKey::generate().unwrap();
        let v = verifier(&key);
        let t = grant(&key, "grt_1", "usr_1", SystemTime::now(), 60);
        assert!(v.verify(&t).is_ok());
        assert!(v.redeem(&t).is_ok());
        assert_eq!(v.redeem(&t).unwrap_err(), GrantError::Replayed);
    }

    #[test]
    fn the_replay_cache_is_bounded_by_expiry_and_fails_closed_when_full() {
        let key = SecretKey::generate().unwrap();
        let v = verifier(&key).with_replay_capacity(2);
        let now = SystemTime::now();
        v.redeem_at(&grant(&key, "grt_1", "usr_1", now, 10), now).unwrap();
        v.redeem_at(&grant(&key, "grt_2", "usr_1", now, 60), now).unwrap();
        let third = grant(&key, "grt_3", "usr_1", now, 60);
        assert_eq!(v.redeem_at(&third, now).unwrap_err(), GrantError::ReplayCacheFull);
        // Once grt_1 expired it is forgotten and there is room again.
        let later = now + Duration::from_secs(11);
        v.redeem_at(&third, later).unwrap();
        assert_eq!(v.used_len(), 2);
    }

    #[test]
    fn revoked_grants_and_users_are_refused() {
        let key = SecretKey::generate().unwrap();
        let v = verifier(&key);
        let now = SystemTime::now();
        let until = format_time(now + Duration::from_secs(600));
        let g1 = grant(&key, "grt_1", "usr_1", now, 60);
        v.revoke(
            &Revocation {
                subject: RevokedSubject::Grant("grt_1".into()),
                at: format_time(now),
                until: until.clone(),
            },
            now,
        );
        assert_eq!(v.verify_at(&g1, now).unwrap_err(), GrantError::Revoked);

        let before = grant(&key, "grt_2", "usr_2", now, 60);
        v.revoke(
            &Revocation {
                subject: RevokedSubject::User("usr_2".into()),
                at: format_time(now),
                until,
            },
            now,
        );
        assert_eq!(v.verify_at(&before, now).unwrap_err(), GrantError::Revoked);
        // A grant issued after the revocation (a new login) is fine.
        let after_t = now + Duration::from_secs(1);
        let after = grant(&key, "grt_3", "usr_2", after_t, 60);
        assert!(v.verify_at(&after, after_t).is_ok());
    }

    #[test]
    fn a_feed_that_is_down_refuses_everything() {
        let key = SecretKey::generate().unwrap();
        let v = verifier(&key);
        let t = grant(&key, "grt_1", "usr_1", SystemTime::now(), 60);
        assert_eq!(v.feed_live(), None);
        v.set_feed_live(false);
        assert_eq!(v.verify(&t).unwrap_err(), GrantError::RevocationsUnavailable);
        v.set_feed_live(true);
        assert!(v.verify(&t).is_ok());
    }

    #[test]
    fn revocations_round_trip_as_json() {
        let r = Revocation {
            subject: RevokedSubject::User("usr_1".into()),
            at: "2026-01-01T00:00:00.000Z".into(),
            until: "2026-01-01T00:10:00.000Z".into(),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"user","id":"usr_1","at":"2026-01-01T00:00:00.000Z","until":"2026-01-01T00:10:00.000Z"}"#
        );
        assert_eq!(serde_json::from_str::<Revocation>(&json).unwrap(), r);
    }
}
