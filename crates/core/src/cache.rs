//! The node-local session cache: live sessions by token hash, so that a check rarely leaves the
//! process, with invalidations that make a revocation take effect at once.
//!
//! - **Sharded map.** `SHARDS` `RwLock<HashMap>`s; the key is a SHA-256, already uniform, so the
//!   map's hasher just takes 8 of its bytes, and the shard comes from 8 others.
//! - **Per-user epochs.** Every cached entry remembers its user's epoch when it was cached;
//!   invalidating a user bumps the epoch, so one message drops every cached session of that user
//!   (revoking one session invalidates its user: the other sessions reload once from the store).
//!   Epochs live in a fixed table of `EPOCHS` counters indexed by a hash of the user id, so a hit
//!   costs no extra pointer chase and no per-user allocation; two users sharing a counter only
//!   cost each other an extra miss, never a stale hit.
//! - **No stale insert.** A miss snapshots a global invalidation counter *before* reading the store,
//!   and the result is cached only if no invalidation happened meanwhile; otherwise a read that
//!   raced with a revocation could cache the revoked session.
//! - **Fail safe.** While the bus is down, or a message may have been missed, the cache is
//!   bypassed (every check goes to the store) until the bus is back and the cache has been flushed.
//! - **Bounded.** At most `capacity` entries; a full shard evicts an arbitrary entry (keys are
//!   random, so this is random eviction); entries also expire after a short safety TTL and at the
//!   session's own deadlines.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::id::UserId;
use crate::session::Authenticated;
use crate::time::Timestamp;
use crate::token::TokenHash;

const SHARDS: usize = 64;
const EPOCHS: usize = 1 << 16;

/// Settings of the cache.
#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    /// Most entries held.
    pub capacity: usize,
    /// An entry is re-read from the store after this long even without an invalidation: a bound
    /// on the damage of any missed message the bus failed to report.
    pub ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { capacity: 1_000_000, ttl: Duration::from_secs(30) }
    }
}

/// Takes 8 bytes of the (already uniform) token hash as the map hash.
#[derive(Default)]
struct FirstBytes(u64);

impl Hasher for FirstBytes {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        if let Some(b) = bytes.get(..8) {
            self.0 = u64::from_le_bytes(b.try_into().unwrap_or_default());
        }
    }
    fn write_usize(&mut self, _: usize) {}
}

type Shard = RwLock<HashMap<TokenHash, Entry, BuildHasherDefault<FirstBytes>>>;

/// The deadlines are copied next to the key, so a hit is judged without touching the (cold)
/// session allocation.
struct Entry {
    auth: Arc<Authenticated>,
    /// The earliest of the idle deadline, the absolute deadline and the safety TTL.
    valid_until: Timestamp,
    /// When last-seen is due to be written (the caller's touch interval after it).
    last_seen_at: Timestamp,
    generation: u32,
    epoch: u32,
    bucket: u16,
}

/// A cache hit: the session, and when its last-seen was written.
#[derive(Clone, Debug)]
pub struct Hit {
    /// The session and its user.
    pub auth: Arc<Authenticated>,
    /// Last-seen as cached (to decide whether a touch is due without reading `auth`).
    pub last_seen_at: Timestamp,
}

/// The epoch counter of a user id: FNV-1a of its text (ids are random, so this spreads evenly).
fn bucket_of(user: &UserId) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in user.as_str().bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h as usize % EPOCHS) as u16
}

/// A snapshot taken before a store read; see [`SessionCache::begin_miss`].
#[derive(Clone, Copy, Debug)]
pub struct MissTicket {
    invalidations: u64,
}

/// The cache.
pub struct SessionCache {
    shards: Box<[Shard]>,
    epochs: Box<[AtomicU32]>,
    invalidations: AtomicU64,
    generation: AtomicU32,
    live: AtomicBool,
    per_shard: usize,
    ttl: Duration,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("len", &self.len())
            .field("live", &self.is_live())
            .finish()
    }
}

fn shard_of(hash: &TokenHash) -> usize {
    usize::from(hash.0[8]) % SHARDS
}

impl SessionCache {
    /// An empty cache. It starts *bypassed*: nothing is served from it until the bus reports
    /// that it is connected ([`SessionCache::connected`]).
    pub fn new(config: CacheConfig) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::default())).collect(),
            epochs: (0..EPOCHS).map(|_| AtomicU32::new(0)).collect(),
            invalidations: AtomicU64::new(0),
            generation: AtomicU32::new(0),
            live: AtomicBool::new(false),
            per_shard: (config.capacity / SHARDS).max(1),
            ttl: config.ttl,
        }
    }

    /// Whether the cache is serving (the bus is connected).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// The live session cached for `hash`, if any and still valid at `now`.
    pub fn get(&self, hash: &TokenHash, now: Timestamp) -> Option<Hit> {
        if !self.is_live() {
            return None;
        }
        let shard = self.shards[shard_of(hash)].read().ok()?;
        let e = shard.get(hash)?;
        let valid = now < e.valid_until
            && e.generation == self.generation.load(Ordering::Acquire)
            && e.epoch == self.epochs[usize::from(e.bucket)].load(Ordering::Acquire);
        valid.then(|| Hit { auth: Arc::clone(&e.auth), last_seen_at: e.last_seen_at })
    }

    /// Call before reading the store on a miss; pass the ticket to [`SessionCache::insert`].
    pub fn begin_miss(&self) -> MissTicket {
        MissTicket { invalidations: self.invalidations.load(Ordering::Acquire) }
    }

    /// Caches what the store returned, unless an invalidation happened since `ticket` (the read
    /// may predate it) or the cache is bypassed.
    pub fn insert(
        &self,
        ticket: MissTicket,
        hash: TokenHash,
        auth: Arc<Authenticated>,
        now: Timestamp,
    ) {
        if !self.is_live() {
            return;
        }
        let bucket = bucket_of(&auth.user.id);
        let epoch = self.epochs[usize::from(bucket)].load(Ordering::Acquire);
        let generation = self.generation.load(Ordering::Acquire);
        // Checked after the epoch was read: an invalidation between the store read and here
        // either changed the counter (refused) or happens after (bumps the epoch we stored).
        if self.invalidations.load(Ordering::Acquire) != ticket.invalidations {
            return;
        }
        let s = &auth.session;
        let valid_until = now.plus(self.ttl).min(s.idle_expires_at).min(s.expires_at);
        let last_seen_at = s.last_seen_at;
        let entry = Entry { auth, valid_until, last_seen_at, generation, epoch, bucket };
        let Ok(mut shard) = self.shards[shard_of(&hash)].write() else { return };
        if shard.len() >= self.per_shard && !shard.contains_key(&hash) {
            let victim = shard.keys().next().copied();
            if let Some(v) = victim {
                shard.remove(&v);
            }
        }
        shard.insert(hash, entry);
    }

    /// Drops every cached session of `user`.
    pub fn invalidate_user(&self, user: &UserId) {
        self.epochs[usize::from(bucket_of(user))].fetch_add(1, Ordering::AcqRel);
        self.invalidations.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops everything.
    pub fn flush(&self) {
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        self.generation.fetch_add(1, Ordering::AcqRel);
        for shard in self.shards.iter() {
            if let Ok(mut s) = shard.write() {
                s.clear();
            }
        }
    }

    /// The bus may have missed messages (down, reconnecting, lagging): serve nothing from the
    /// cache until [`SessionCache::connected`].
    pub fn disconnected(&self) {
        self.live.store(false, Ordering::Release);
        self.invalidations.fetch_add(1, Ordering::AcqRel);
    }

    /// The bus is up and delivering from now on: flush what may be stale and serve again.
    pub fn connected(&self) {
        self.flush();
        self.live.store(true, Ordering::Release);
    }

    /// How many entries are held (including ones that are no longer valid).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().map(|s| s.len()).unwrap_or(0)).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Session;
    use crate::token::{CsrfToken, SecretKind, Token};
    use crate::user::{User, Username};
    use crate::{SessionId, UserId};

    fn auth(user: &UserId, now: Timestamp) -> Arc<Authenticated> {
        Arc::new(Authenticated {
            session: Session {
                id: SessionId::generate().unwrap(),
                user_id: user.clone(),
                csrf: CsrfToken::generate().unwrap(),
                created_at: now,
                last_seen_at: now,
                token_issued_at: now,
                idle_expires_at: now.plus(Duration::from_secs(1800)),
                expires_at: now.plus(Duration::from_secs(43200)),
                ip: None,
                user_agent: None,
                audience: None,
            },
            user: User {
                id: user.clone(),
                username: Username::parse("alice").unwrap(),
                roles: vec![],
                disabled: false,
                has_password: true,
                created_at: now,
                updated_at: now,
                privileges_changed_at: Timestamp::from_millis(0),
            },
        })
    }

    fn hash() -> TokenHash {
        Token::generate(SecretKind::Session).unwrap().hash()
    }

    fn live_cache() -> SessionCache {
        let c = SessionCache::new(CacheConfig { capacity: 1024, ttl: Duration::from_secs(30) });
        c.connected();
        c
    }

    #[test]
    fn serves_what_was_inserted_until_its_user_is_invalidated() {
        let c = live_cache();
        let now = Timestamp::now();
        let (alice, bob) = (UserId::generate().unwrap(), UserId::generate().unwrap());
        let (h1, h2, h3) = (hash(), hash(), hash());
        for (h, u) in [(h1, &alice), (h2, &alice), (h3, &bob)] {
            let t = c.begin_miss();
            c.insert(t, h, auth(u, now), now);
        }
        assert!(c.get(&h1, now).is_some());
        c.invalidate_user(&alice);
        assert!(c.get(&h1, now).is_none(), "one message drops every session of the user");
        assert!(c.get(&h2, now).is_none());
        assert!(c.get(&h3, now).is_some(), "other users are untouched");
    }

    #[test]
    fn a_read_that_raced_with_an_invalidation_is_not_cached() {
        let c = live_cache();
        let now = Timestamp::now();
        let alice = UserId::generate().unwrap();
        let h = hash();
        let ticket = c.begin_miss(); // the store read starts...
        c.invalidate_user(&alice); // ...a revocation lands...
        c.insert(ticket, h, auth(&alice, now), now); // ...and the (stale) result comes back.
        assert!(c.get(&h, now).is_none());
    }

    #[test]
    fn bypassed_while_the_bus_is_down_and_flushed_when_it_returns() {
        let c = SessionCache::new(CacheConfig::default());
        let now = Timestamp::now();
        let alice = UserId::generate().unwrap();
        let h = hash();
        c.insert(c.begin_miss(), h, auth(&alice, now), now);
        assert!(c.get(&h, now).is_none(), "a new cache serves nothing before the bus connects");
        c.connected();
        c.insert(c.begin_miss(), h, auth(&alice, now), now);
        assert!(c.get(&h, now).is_some());
        c.disconnected();
        assert!(c.get(&h, now).is_none(), "bypassed while a message may be missed");
        c.connected();
        assert!(c.get(&h, now).is_none(), "flushed on reconnect");
        assert!(c.is_empty());
    }

    #[test]
    fn entries_end_at_the_ttl_and_the_session_deadlines() {
        let c = live_cache();
        let now = Timestamp::now();
        let alice = UserId::generate().unwrap();
        let h = hash();
        c.insert(c.begin_miss(), h, auth(&alice, now), now);
        assert!(c.get(&h, now.plus(Duration::from_secs(29))).is_some());
        assert!(c.get(&h, now.plus(Duration::from_secs(30))).is_none(), "safety TTL");
        let c = SessionCache::new(CacheConfig { capacity: 64, ttl: Duration::from_secs(7200) });
        c.connected();
        c.insert(c.begin_miss(), h, auth(&alice, now), now);
        assert!(c.get(&h, now.plus(Duration::from_secs(1800))).is_none(), "idle deadline");
    }

    #[test]
    fn capacity_is_bounded() {
        let c = SessionCache::new(CacheConfig { capacity: 128, ttl: Duration::from_secs(30) });
        c.connected();
        let now = Timestamp::now();
        let alice = UserId::generate().unwrap();
        for _ in 0..10_000 {
            c.insert(c.begin_miss(), hash(), auth(&alice, now), now);
        }
        assert!(c.len() <= 128, "{}", c.len());
    }
}
