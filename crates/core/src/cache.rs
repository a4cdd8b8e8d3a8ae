//! The node-local session cache: live sessions by token hash, so that a check rarely leaves the
//! process, with invalidations that make a revocation take effect at once.
//!
//! - **Compact.** Each entry is one fixed-size slot of plain bytes: a 16-byte key (the first half
//!   of the token's SHA-256: finding another token with the same half takes about 2^128 hashes),
//!   where it belongs in the table, its deadline and stamps, and the session's fixed-size part
//!   ([`ActiveSession`]): 160 bytes, no pointer to follow on a hit. Slots live in open-addressing
//!   tables with linear probing on the slots themselves; a table is rebuilt when it is 7/8 full
//!   into one that is 3/4 full (growth by 1.17, not 2), dropping stale entries on the way, so the
//!   slots cost 183 to 213 bytes per session whatever the count. (`std`'s `HashMap` doubles, which
//!   leaves tables of large entries half empty right after growing.) Usernames and roles too long
//!   for a slot wait in a side map.
//! - **Placed by the token, keyed by its hash.** Where an entry lives (shard and home slot) comes
//!   from the token's own random bytes, mixed with a per-process secret, so a lookup starts loading
//!   the slots it will read (a miss to memory at a million sessions) and computes SHA-256 while
//!   they arrive, instead of one after the other. The slot records its placement (the token itself
//!   is never kept) so that tables can be rebuilt.
//! - **Memory of its own.** Each table is an anonymous memory map, so a rebuilt table's memory
//!   goes back to the system at once (the allocator's heap would keep the old tables as
//!   fragments: about 50 bytes per session measured at a million), starts zeroed (every slot
//!   empty, no initialisation pass), and, from 2 MiB, asks for transparent huge pages: a lookup
//!   is one random memory access, and huge pages spare it most of the address-translation cost.
//! - **Sharded.** `SHARDS` tables, each behind its own `RwLock`; the shard comes from the
//!   placement, which is uniform. Few shards (16) keep tables large, so that most of each is in
//!   whole huge pages; contention stays low as reads share a shard and writes are misses.
//! - **Per-user epochs.** Every cached entry remembers its user's epoch when it was cached;
//!   invalidating a user bumps the epoch, so one message drops every cached session of that user
//!   (revoking one session invalidates its user: the other sessions reload once from the store).
//!   Epochs live in a fixed table of `EPOCHS` counters indexed by two bytes of the (random) user
//!   id, so a hit costs no per-user allocation; two users sharing a counter only cost each other
//!   an extra miss, never a stale hit.
//! - **No stale insert.** A miss snapshots a global invalidation counter *before* reading the store,
//!   and the result is cached only if no invalidation happened meanwhile; otherwise a read that
//!   raced with a revocation could cache the revoked session.
//! - **Fail safe.** While the bus is down, or a message may have been missed, the cache is
//!   bypassed (every check goes to the store) until the bus is back and the cache has been flushed.
//! - **Bounded.** At most `capacity` entries; a full shard evicts an arbitrary entry (keys are
//!   random, so this is random eviction); entries also expire after a short safety TTL and at the
//!   deadlines the caller gives (the session's own, and when its last-seen is due to be written).

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use memmap2::{MmapMut, MmapOptions};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::active::{ActiveSession, Packed, id_bytes};
use crate::id::UserId;
use crate::time::Timestamp;
use crate::token::{Token, TokenHash, random_bytes};

const SHARDS: usize = 16;
/// Slots a lookup starts loading before it probes.
const PREFETCHED: usize = 4;
const EPOCHS: usize = 1 << 16;
/// The smallest table, in slots.
const MIN_SLOTS: usize = 16;
/// A table is rebuilt when an insert would fill more than `FULL` of it...
const FULL: (usize, usize) = (7, 8);
/// ...into a table of which the live entries fill `REBUILT`.
const REBUILT: (usize, usize) = (3, 4);
/// Tables at least this large ask for transparent huge pages.
const HUGE_PAGE: usize = 2 << 20;

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

type Key = [u8; 16];

fn key_of(hash: &TokenHash) -> Key {
    let mut key = [0u8; 16];
    key.copy_from_slice(&hash.0[..16]);
    key
}

/// Where probing for an entry placed at `place` starts in a table of `n` slots.
fn home(place: u64, n: usize) -> usize {
    ((u128::from(place) * n as u128) >> 64) as usize
}

/// The slot after `i` in a table of `n`: probing wraps around.
fn next(i: usize, n: usize) -> usize {
    if i + 1 == n { 0 } else { i + 1 }
}

/// The shard of an entry placed at `place` (its low bits; [`home`] uses the high ones).
fn shard_of(place: u64) -> usize {
    (place % SHARDS as u64) as usize
}

/// The epoch counter of a user: two bytes of its random id.
fn bucket_of(user_id: &[u8; 16]) -> u16 {
    u16::from_le_bytes([user_id[0], user_id[1]])
}

/// One cached session, key first: probing reads the first 16 bytes of each slot it passes, and a
/// hit finds its deadline and stamps in the same 42 bytes. Plain bytes: all zeros is an empty
/// slot.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Slot {
    /// [`EMPTY`] marks an empty slot.
    key: Key,
    /// Where the entry belongs ([`SessionCache::place`]).
    place: u64,
    /// The earliest of the caller's deadline and the safety TTL, in Unix milliseconds.
    valid_until: i64,
    generation: u32,
    epoch: u32,
    bucket: u16,
    session: Packed,
}

/// The key of an empty slot. A token whose hash starts with 16 zero bytes (one in 2^128) is
/// never cached.
const EMPTY: Key = [0; 16];

const SLOT: usize = std::mem::size_of::<Slot>();
// The memory per session is this divided by the load (0.75 to 0.875).
const _: () = assert!(SLOT == 160);

impl Slot {
    fn is_empty(&self) -> bool {
        self.key == EMPTY
    }

    /// Asks the CPU to start loading every cache line the slot spans (slots start at multiples
    /// of 32 bytes, so lines at 0, 64 and 128 bytes from its start cover all 160 bytes). A
    /// prefetch instruction, not a load: it retires at once, so the work after it (the token's
    /// SHA-256) runs while the lines come from memory instead of waiting behind a stalled load.
    fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            let b = self.as_bytes();
            safe_arch::prefetch_t0(&b[0]);
            safe_arch::prefetch_t0(&b[64]);
            safe_arch::prefetch_t0(&b[128]);
        }
    }
}

/// An open-addressing table with linear probing, probed on the slots themselves (a separate
/// array of tags would be a second cache miss per lookup at a million sessions). The load stays
/// below 7/8, so every probe ends at an empty slot.
#[derive(Default)]
struct Table {
    /// The memory; the slots start at `start`. `None` for a table of none.
    map: Option<MmapMut>,
    start: usize,
    /// How many slots.
    n: usize,
    len: usize,
    /// Texts of the sessions whose username, roles and audience did not fit in their slot.
    overflow: HashMap<Key, Box<str>>,
}

impl Table {
    /// A table of `n` empty slots; an empty table of none if the system has no memory for it
    /// (the cache then holds nothing in this shard until the next rebuild: slower, never wrong).
    fn with_slots(n: usize) -> Self {
        let bytes = n * SLOT;
        // A huge page must be aligned: map 2 MiB more than needed (address space, not memory),
        // start the slots at a 2 MiB boundary, and ask for huge pages over the whole ones.
        let huge = bytes >= HUGE_PAGE;
        let mapped = if huge { bytes + HUGE_PAGE } else { bytes };
        let Ok(map) = MmapOptions::new().len(mapped).map_anon() else {
            tracing::warn!(bytes, "cannot map memory for a session cache table");
            return Table::default();
        };
        let mut start = 0;
        if huge {
            start = (HUGE_PAGE - map.as_ptr() as usize % HUGE_PAGE) % HUGE_PAGE;
            #[cfg(target_os = "linux")]
            {
                // Advice only: without transparent huge pages the table works the same.
                let whole = bytes / HUGE_PAGE * HUGE_PAGE;
                let _ = map.advise_range(memmap2::Advice::HugePage, start, whole);
            }
        }
        Table { map: Some(map), start, n, len: 0, overflow: HashMap::new() }
    }

    fn slots(&self) -> &[Slot] {
        let range = self.start..self.start + self.n * SLOT;
        self.map
            .as_deref()
            .and_then(|m| <[Slot]>::ref_from_bytes(m.get(range)?).ok())
            .unwrap_or_default()
    }

    fn slots_mut(&mut self) -> &mut [Slot] {
        let range = self.start..self.start + self.n * SLOT;
        self.map
            .as_deref_mut()
            .and_then(|m| <[Slot]>::mut_from_bytes(m.get_mut(range)?).ok())
            .unwrap_or_default()
    }

    /// `Ok(index)` of `key`'s slot, or `Err(index)` of the empty slot where it would go, probing
    /// from `place`'s home. The table must have at least one empty slot, and `key` must not be
    /// [`EMPTY`].
    fn probe(slots: &[Slot], place: u64, key: &Key) -> Result<usize, usize> {
        let n = slots.len();
        let mut i = home(place, n);
        loop {
            let k = &slots[i].key;
            if k == key {
                return Ok(i);
            }
            if *k == EMPTY {
                return Err(i);
            }
            i = next(i, n);
        }
    }

    /// Starts loading the slots a lookup of an entry placed at `place` will most likely read: its
    /// home slot and the next three (a hit probes 3.3 slots on average at a million sessions;
    /// with that many each is a miss to memory, and misses in parallel cost about one), while the
    /// caller goes on computing the key.
    fn prefetch(&self, place: u64) {
        let slots = self.slots();
        let n = slots.len();
        if self.len == 0 || n == 0 {
            return;
        }
        let mut i = home(place, n);
        for _ in 0..PREFETCHED {
            slots[i].prefetch();
            i = next(i, n);
        }
    }

    fn get(&self, place: u64, key: &Key) -> Option<&Slot> {
        let slots = self.slots();
        if self.len == 0 || slots.is_empty() {
            return None;
        }
        Self::probe(slots, place, key).ok().map(|i| &slots[i])
    }

    fn contains(&self, place: u64, key: &Key) -> bool {
        self.get(place, key).is_some()
    }

    /// Inserts or replaces; the caller has made room ([`Table::needs_rebuild`]).
    fn put(&mut self, slot: Slot, overflow: Option<&str>) {
        let key = slot.key;
        let slots = self.slots_mut();
        if slots.is_empty() {
            return;
        }
        let found = Self::probe(slots, slot.place, &key);
        let (Ok(i) | Err(i)) = found;
        slots[i] = slot;
        self.len += usize::from(found.is_err());
        match overflow {
            Some(text) => self.overflow.insert(key, text.into()),
            None => self.overflow.remove(&key),
        };
    }

    /// Whether one more entry would fill the table past [`FULL`].
    fn needs_rebuild(&self) -> bool {
        (self.len + 1) * FULL.1 > self.slots().len() * FULL.0
    }

    /// Empties slot `i`, shifting the entries after it back so that every probe still finds them
    /// (no tombstones).
    fn remove_at(&mut self, mut i: usize) {
        let removed = self.slots()[i].key;
        self.overflow.remove(&removed);
        let slots = self.slots_mut();
        let n = slots.len();
        let mut j = i;
        loop {
            j = next(j, n);
            if slots[j].is_empty() {
                break;
            }
            let h = home(slots[j].place, n);
            // The entry at `j` may move to `i` unless its home lies cyclically in `(i, j]`.
            let stays = if i <= j { i < h && h <= j } else { i < h || h <= j };
            if !stays {
                slots.swap(i, j);
                i = j;
            }
        }
        slots[i] = Slot::new_zeroed();
        self.len -= 1;
    }

    /// Removes an arbitrary entry (the first at or after `place`'s home: places are random).
    fn evict_one(&mut self, place: u64) {
        let slots = self.slots();
        let n = slots.len();
        if self.len == 0 || n == 0 {
            return;
        }
        let mut i = home(place, n);
        while slots[i].is_empty() {
            i = next(i, n);
        }
        self.remove_at(i);
    }

    /// Rebuilds the table with only the entries `keep` accepts, sized so that they fill
    /// [`REBUILT`] of it with room for one more.
    fn rebuild(&mut self, keep: impl Fn(&Slot) -> bool) {
        let live = self.slots().iter().filter(|s| !s.is_empty() && keep(s)).count();
        let n = ((live + 1) * REBUILT.1 / REBUILT.0 + 1).max(MIN_SLOTS);
        let old = std::mem::replace(self, Table::with_slots(n));
        // `keep` only turns false over time, so this keeps at most `live` entries.
        for slot in old.slots().iter().filter(|s| !s.is_empty() && keep(s)) {
            if self.needs_rebuild() {
                break;
            }
            self.put(*slot, old.overflow.get(&slot.key).map(|t| &**t));
        }
    }
}

/// A shard on a cache line of its own, so two cores reading different shards do not contend.
#[repr(align(64))]
struct Shard(RwLock<Table>);

/// A snapshot taken before a store read; see [`SessionCache::begin_miss`].
#[derive(Clone, Copy, Debug)]
pub struct MissTicket {
    invalidations: u64,
}

/// What [`SessionCache::lookup`] found, with what it computed on the way.
#[derive(Debug)]
pub struct Lookup {
    /// The cached session, if any and still valid.
    pub hit: Option<ActiveSession>,
    /// The token's hash (for the store, on a miss).
    pub hash: TokenHash,
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
    /// Mixed into placements, so that where an entry sits says nothing about its token.
    place_secret: u64,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("len", &self.len())
            .field("live", &self.is_live())
            .finish()
    }
}

impl SessionCache {
    /// An empty cache. It starts *bypassed*: nothing is served from it until the bus reports
    /// that it is connected ([`SessionCache::connected`]).
    pub fn new(config: CacheConfig) -> Self {
        let mut secret = [0u8; 8];
        // Only hides placements from someone reading this process's memory, who could read the
        // requests' tokens anyway: a failing RNG (then no session could be issued) is no reason
        // not to start.
        let _ = random_bytes(&mut secret);
        Self {
            shards: (0..SHARDS).map(|_| Shard(RwLock::new(Table::default()))).collect(),
            epochs: (0..EPOCHS).map(|_| AtomicU32::new(0)).collect(),
            invalidations: AtomicU64::new(0),
            generation: AtomicU32::new(0),
            live: AtomicBool::new(false),
            per_shard: (config.capacity / SHARDS).max(1),
            ttl: config.ttl,
            place_secret: u64::from_le_bytes(secret),
        }
    }

    /// Where the entry of `token` belongs: its first 8 random bytes, mixed with the secret.
    fn place(&self, token: &Token) -> u64 {
        let b = token.secret();
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) ^ self.place_secret
    }

    /// Whether the cache is serving (the bus is connected).
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Whether `slot` may still be served when the time is at most `latest` (Unix ms).
    fn fresh(&self, slot: &Slot, latest: i64, generation: u32) -> bool {
        latest < slot.valid_until
            && slot.generation == generation
            && slot.epoch == self.epochs[usize::from(slot.bucket)].load(Ordering::Acquire)
    }

    /// Looks `token` up: the live session cached for it, if any and still valid now. Computes the
    /// token's hash and reads the clock while the slots it needs are on their way from memory.
    /// Judges freshness by [`Timestamp::now_at_most`]: an entry ends a few milliseconds early,
    /// never late.
    pub fn lookup(&self, token: &Token) -> Lookup {
        self.lookup_at(token, None)
    }

    /// The live session cached for `token`, if any and still valid at `now`.
    pub fn get(&self, token: &Token, now: Timestamp) -> Option<ActiveSession> {
        self.lookup_at(token, Some(now)).hit
    }

    fn lookup_at(&self, token: &Token, now: Option<Timestamp>) -> Lookup {
        let place = self.place(token);
        let table = if self.is_live() { self.shards[shard_of(place)].0.read().ok() } else { None };
        if let Some(t) = &table {
            t.prefetch(place);
        }
        let hash = token.hash();
        let Some(table) = table else { return Lookup { hit: None, hash } };
        let key = key_of(&hash);
        let latest = now.unwrap_or_else(Timestamp::now_at_most).as_millis();
        let hit = table.get(place, &key).and_then(|slot| {
            if !self.fresh(slot, latest, self.generation.load(Ordering::Acquire)) {
                return None;
            }
            let overflow = slot.session.overflows().then(|| table.overflow.get(&key)).flatten();
            ActiveSession::from_parts(slot.session, overflow.map(|t| &**t))
        });
        Lookup { hit, hash }
    }

    /// Call before reading the store on a miss; pass the ticket to [`SessionCache::insert`].
    pub fn begin_miss(&self) -> MissTicket {
        MissTicket { invalidations: self.invalidations.load(Ordering::Acquire) }
    }

    /// Caches what the store returned for `token` (whose hash is `hash`), to be served until
    /// `until` (or the safety TTL, whichever comes first), unless an invalidation happened since
    /// `ticket` (the read may predate it) or the cache is bypassed.
    pub fn insert(
        &self,
        ticket: MissTicket,
        token: &Token,
        hash: &TokenHash,
        session: &ActiveSession,
        until: Timestamp,
        now: Timestamp,
    ) {
        if !self.is_live() {
            return;
        }
        let bucket = bucket_of(&session.packed().user_id);
        let epoch = self.epochs[usize::from(bucket)].load(Ordering::Acquire);
        let generation = self.generation.load(Ordering::Acquire);
        // Checked after the epoch was read: an invalidation between the store read and here
        // either changed the counter (refused) or happens after (bumps the epoch we stored).
        if self.invalidations.load(Ordering::Acquire) != ticket.invalidations {
            return;
        }
        let key = key_of(hash);
        if key == EMPTY {
            return;
        }
        let place = self.place(token);
        let slot = Slot {
            key,
            place,
            valid_until: until.min(now.plus(self.ttl)).as_millis(),
            generation,
            epoch,
            bucket,
            session: *session.packed(),
        };
        let Ok(mut table) = self.shards[shard_of(place)].0.write() else { return };
        if table.needs_rebuild() {
            table.rebuild(|s| self.fresh(s, now.as_millis(), generation));
        }
        if table.len >= self.per_shard && !table.contains(place, &key) {
            table.evict_one(place);
        }
        table.put(slot, session.overflow());
    }

    /// Drops every cached session of `user`.
    pub fn invalidate_user(&self, user: &UserId) {
        match id_bytes(user.as_str(), UserId::PREFIX) {
            Some(id) => {
                self.epochs[usize::from(bucket_of(&id))].fetch_add(1, Ordering::AcqRel);
                self.invalidations.fetch_add(1, Ordering::AcqRel);
            }
            // Not an id this version generates, so no cached session can be its: drop everything
            // anyway rather than guess.
            None => self.flush(),
        }
    }

    /// Drops everything.
    pub fn flush(&self) {
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        self.generation.fetch_add(1, Ordering::AcqRel);
        for shard in self.shards.iter() {
            if let Ok(mut t) = shard.0.write() {
                *t = Table::default();
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
        self.shards.iter().map(|s| s.0.read().map(|t| t.len).unwrap_or(0)).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserId;
    use crate::session::Authenticated;
    use crate::token::{SecretKind, Token};
    use crate::user::Username;

    fn session(user: &UserId, now: Timestamp) -> ActiveSession {
        ActiveSession::new(&Authenticated::fixture(user, now)).unwrap()
    }

    fn token() -> Token {
        Token::generate(SecretKind::Session).unwrap()
    }

    fn live_cache() -> SessionCache {
        let c = SessionCache::new(CacheConfig { capacity: 1024, ttl: Duration::from_secs(30) });
        c.connected();
        c
    }

    fn put(c: &SessionCache, t: &Token, user: &UserId, now: Timestamp) {
        let until = now.plus(Duration::from_secs(1800));
        c.insert(c.begin_miss(), t, &t.hash(), &session(user, now), until, now);
    }

    #[test]
    fn serves_what_was_inserted_until_its_user_is_invalidated() {
        let c = live_cache();
        let now = Timestamp::now();
        let (alice, bob) = (UserId::generate().unwrap(), UserId::generate().unwrap());
        let (h1, h2, h3) = (token(), token(), token());
        for (h, u) in [(&h1, &alice), (&h2, &alice), (&h3, &bob)] {
            put(&c, h, u, now);
        }
        assert_eq!(c.get(&h1, now).unwrap().user_id(), alice);
        c.invalidate_user(&alice);
        assert!(c.get(&h1, now).is_none(), "one message drops every session of the user");
        assert!(c.get(&h2, now).is_none());
        assert_eq!(c.get(&h3, now).unwrap().user_id(), bob, "other users are untouched");
    }

    #[test]
    fn a_read_that_raced_with_an_invalidation_is_not_cached() {
        let c = live_cache();
        let now = Timestamp::now();
        let alice = UserId::generate().unwrap();
        let h = token();
        let ticket = c.begin_miss(); // the store read starts...
        c.invalidate_user(&alice); // ...a revocation lands...
        let until = now.plus(Duration::from_secs(60));
        c.insert(ticket, &h, &h.hash(), &session(&alice, now), until, now); // ...and the stale result comes back.
        assert!(c.get(&h, now).is_none());
    }

    #[test]
    fn bypassed_while_the_bus_is_down_and_flushed_when_it_returns() {
        let c = SessionCache::new(CacheConfig::default());
        let now = Timestamp::now();
        let alice = UserId::generate().unwrap();
        let h = token();
        put(&c, &h, &alice, now);
        assert!(c.get(&h, now).is_none(), "a new cache serves nothing before the bus connects");
        c.connected();
        put(&c, &h, &alice, now);
        assert!(c.get(&h, now).is_some());
        c.disconnected();
        assert!(c.get(&h, now).is_none(), "bypassed while a message may be missed");
        c.connected();
        assert!(c.get(&h, now).is_none(), "flushed on reconnect");
        assert!(c.is_empty());
    }

    #[test]
    fn entries_end_at_the_ttl_and_the_given_deadline() {
        let c = live_cache();
        let now = Timestamp::now();
        let alice = UserId::generate().unwrap();
        let h = token();
        put(&c, &h, &alice, now);
        assert!(c.get(&h, now.plus(Duration::from_secs(29))).is_some());
        assert!(c.get(&h, now.plus(Duration::from_secs(30))).is_none(), "safety TTL");
        let c = SessionCache::new(CacheConfig { capacity: 64, ttl: Duration::from_secs(7200) });
        c.connected();
        put(&c, &h, &alice, now);
        assert!(c.get(&h, now.plus(Duration::from_secs(1799))).is_some());
        assert!(c.get(&h, now.plus(Duration::from_secs(1800))).is_none(), "the given deadline");
        // A lookup judges by `now_at_most`: an entry ends a little early, never late.
        let now = Timestamp::now();
        let soon = token();
        c.insert(
            c.begin_miss(),
            &soon,
            &soon.hash(),
            &session(&alice, now),
            now.plus(Duration::from_millis(1)),
            now,
        );
        assert!(c.get(&soon, now).is_some());
        assert!(c.lookup(&soon).hit.is_none(), "served within a millisecond of its end");
        assert!(c.lookup(&h).hit.is_some());
    }

    #[test]
    fn capacity_is_bounded() {
        let c = SessionCache::new(CacheConfig { capacity: 128, ttl: Duration::from_secs(30) });
        c.connected();
        let now = Timestamp::now();
        let alice = UserId::generate().unwrap();
        for _ in 0..10_000 {
            put(&c, &token(), &alice, now);
        }
        assert!(c.len() <= 128, "{}", c.len());
    }

    #[test]
    fn stale_entries_are_dropped_when_a_table_grows() {
        let c = live_cache();
        let now = Timestamp::now();
        let alice = UserId::generate().unwrap();
        for _ in 0..500 {
            put(&c, &token(), &alice, now);
        }
        c.invalidate_user(&alice);
        let bob = UserId::generate().unwrap();
        for _ in 0..500 {
            put(&c, &token(), &bob, now);
        }
        assert!(c.len() < 1000, "alice's stale entries made room: {}", c.len());
    }

    /// The table against a model: random inserts, replacements and removals (the backward
    /// shift is where open addressing goes wrong), some with texts too long for a slot, checked
    /// after every step; the side map of long texts never keeps one for a key that left.
    #[test]
    fn table_matches_a_model() {
        use std::collections::HashMap;
        let now = Timestamp::now();
        let user = UserId::generate().unwrap();
        let packed = *session(&user, now).packed();
        let mut table = Table::default();
        let mut model: HashMap<Key, (i64, Option<String>)> = HashMap::new();
        let mut keys: Vec<Key> = Vec::new();
        // The test places each key by its first 8 bytes.
        let place = |k: &Key| u64::from_le_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]);
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for step in 0..20_000i64 {
            let r = next();
            match r % 8 {
                // Insert a new key (few distinct homes, to force long probe runs), or replace one.
                0..=3 => {
                    let key = if r % 5 == 0 && !keys.is_empty() {
                        keys[(next() % keys.len() as u64) as usize]
                    } else {
                        let mut key = [0u8; 16];
                        key[..8].copy_from_slice(&((next() % 4096) << 52).to_le_bytes());
                        key[8..].copy_from_slice(&next().to_le_bytes());
                        key
                    };
                    if table.needs_rebuild() {
                        table.rebuild(|_| true);
                    }
                    let text = (r % 3 == 0).then(|| format!("long text {step}"));
                    let slot = Slot {
                        key,
                        place: place(&key),
                        valid_until: step,
                        generation: 0,
                        epoch: 0,
                        bucket: 0,
                        session: packed,
                    };
                    table.put(slot, text.as_deref());
                    if model.insert(key, (step, text)).is_none() {
                        keys.push(key);
                    }
                }
                // Remove an existing key.
                4..=6 if !keys.is_empty() => {
                    let key = keys.swap_remove((next() % keys.len() as u64) as usize);
                    let i = Table::probe(table.slots(), place(&key), &key).expect("present");
                    table.remove_at(i);
                    model.remove(&key);
                }
                // Evict an arbitrary one.
                _ if !keys.is_empty() => {
                    let before = table.len;
                    table.evict_one(next());
                    assert_eq!(table.len, before - 1);
                    keys.retain(|k| table.contains(place(k), k));
                    model.retain(|k, _| table.contains(place(k), k));
                }
                _ => {}
            }
            assert_eq!(table.len, model.len());
            if step % 97 == 0 {
                for (k, (v, text)) in &model {
                    assert_eq!(table.get(place(k), k).map(|s| s.valid_until), Some(*v));
                    assert_eq!(table.overflow.get(k).map(|t| &**t), text.as_deref());
                }
                assert_eq!(table.slots().iter().filter(|s| !s.is_empty()).count(), model.len());
                let long = model.values().filter(|(_, t)| t.is_some()).count();
                assert_eq!(table.overflow.len(), long);
            }
        }
    }

    #[test]
    fn long_usernames_and_role_lists_are_cached_too() {
        let c = live_cache();
        let now = Timestamp::now();
        let user = UserId::generate().unwrap();
        let mut auth = Authenticated::fixture(&user, now);
        auth.user.username = Username::parse(&"x".repeat(64)).unwrap();
        auth.user.roles =
            (0..20).map(|i| crate::Role::parse(&format!("role-{i}")).unwrap()).collect();
        let long = ActiveSession::new(&auth).unwrap();
        let h = token();
        c.insert(c.begin_miss(), &h, &h.hash(), &long, now.plus(Duration::from_secs(60)), now);
        let hit = c.get(&h, now).unwrap();
        assert_eq!(hit.username(), "x".repeat(64));
        assert_eq!(hit.roles().count(), 20);
        assert!(hit.has_role("role-19"));
    }
}
