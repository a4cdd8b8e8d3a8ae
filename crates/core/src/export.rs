//! Reading a store's whole contents out and writing them into another store, for
//! `cloakroom store copy`: the records every store exports and imports (one shared codec, so a
//! SQLite export imports into Redis or PostgreSQL as it is), and the [`Transfer`] trait that a
//! store offers through [`crate::Store::transfer`].
//!
//! The records hold what the stores hold, in plain fields (times in milliseconds since the
//! epoch, token hashes in lowercase hex, session data as the JSON text the store keeps), and
//! nothing a store derives: a lookup on the destination answers what it answered on the source.
//!
//! Identities, by kind, which [`Transfer::import`] upserts by:
//!
//! | kind | identity |
//! | --- | --- |
//! | users | the user id (the username must then be free or the same user's) |
//! | sessions | the session id (its token hash moves with it) |
//! | API keys | the name |
//! | signing keys | the PASERK id |
//! | grant uses | the grant id |
//! | grant revocations | a grant's: subject, `at` and `until`; a user's: the user (one per user) |
//! | event logs | the log's key: the log becomes the record's events |
//! | audit | the event's `id`, which every store gives an event when it appends it |

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::audit::{AuditEvent, AuditKind};
use crate::error::StoreError;
use crate::grant::{GrantRevocation as DomainRevocation, Revoked, SigningKeyRecord};
use crate::id::{SessionId, UserId};
use crate::store::StoreResult;
use crate::time::Timestamp;
use crate::user::Username;

/// Event-log events older than this are not exported: no window is longer (the SQL stores sweep
/// them after this long, and an imported Redis log expires this long after its newest event).
pub const EVENT_RETENTION: Duration = Duration::from_secs(31 * 24 * 3600);

/// What a store holds, by kind, in the order a copy goes through them: users before the sessions
/// that belong to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Users with their password hashes.
    Users,
    /// Live sessions with their deadlines and data.
    Sessions,
    /// Service API keys (as hashes).
    ApiKeys,
    /// Grant-signing keys (the secret half sealed).
    SigningKeys,
    /// Grants used up, until they expire.
    GrantUses,
    /// Grant revocations, until they lapse.
    GrantRevocations,
    /// Sliding-window event logs (the login throttle, rate limits).
    EventLogs,
    /// Audit events.
    Audit,
}

impl Kind {
    /// For a [`Kind::dated`] export at `now`: the time before which nothing counts (an event
    /// log's events within [`EVENT_RETENTION`]; everything else live at `now`).
    pub fn counts_since(self, now: Timestamp) -> Timestamp {
        if self == Kind::EventLogs { now.minus(EVENT_RETENTION) } else { now }
    }

    /// Every kind, in copy order.
    pub const ALL: [Kind; 8] = [
        Kind::Users,
        Kind::Sessions,
        Kind::ApiKeys,
        Kind::SigningKeys,
        Kind::GrantUses,
        Kind::GrantRevocations,
        Kind::EventLogs,
        Kind::Audit,
    ];

    /// The name people read (`api keys`).
    pub fn label(self) -> &'static str {
        match self {
            Kind::Users => "users",
            Kind::Sessions => "sessions",
            Kind::ApiKeys => "api keys",
            Kind::SigningKeys => "signing keys",
            Kind::GrantUses => "grant uses",
            Kind::GrantRevocations => "grant revocations",
            Kind::EventLogs => "event logs",
            Kind::Audit => "audit events",
        }
    }

    /// Whether which records its export holds depends on the time (`now`): sessions, grant
    /// uses and revocations, and event logs do; the rest are exported whatever the time.
    pub fn dated(self) -> bool {
        matches!(self, Kind::Sessions | Kind::GrantUses | Kind::GrantRevocations | Kind::EventLogs)
    }

    /// The name programs read (`api_keys`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Users => "users",
            Kind::Sessions => "sessions",
            Kind::ApiKeys => "api_keys",
            Kind::SigningKeys => "signing_keys",
            Kind::GrantUses => "grant_uses",
            Kind::GrantRevocations => "grant_revocations",
            Kind::EventLogs => "event_logs",
            Kind::Audit => "audit",
        }
    }
}

/// A user as stored, with the password hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// `usr_…`
    pub id: String,
    /// Unique, lowercased.
    pub username: String,
    /// The Argon2id PHC string, when a password is set.
    pub password_hash: Option<String>,
    /// Sorted role names.
    pub roles: Vec<String>,
    /// Disabled users have no sessions.
    pub disabled: bool,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// Last change of the roles (0: never).
    pub privileges_changed_at: i64,
}

/// A session as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// `ses_…`
    pub id: String,
    /// Its user's id.
    pub user_id: String,
    /// SHA-256 of the token, lowercase hex: the cookie keeps working on the destination.
    pub token_hash: String,
    /// The CSRF token.
    pub csrf: String,
    /// Login time.
    pub created_at: i64,
    /// Last recorded use.
    pub last_seen_at: i64,
    /// When the current token was issued.
    pub token_issued_at: i64,
    /// Idle deadline.
    pub idle_expires_at: i64,
    /// Absolute deadline.
    pub expires_at: i64,
    /// Client IP at login.
    pub ip: Option<String>,
    /// Client user agent at login.
    pub user_agent: Option<String>,
    /// The one service a session traded for a grant is valid for.
    pub audience: Option<String>,
    /// The session's JSON data, as the text the store keeps (byte for byte).
    pub data: String,
    /// The data's version (the `ETag`).
    pub data_version: u64,
}

impl Session {
    /// Whether the session is alive at `now` (the rule every lookup applies).
    pub fn is_live(&self, now: Timestamp) -> bool {
        now.as_millis() < self.idle_expires_at && now.as_millis() < self.expires_at
    }
}

/// An API key as stored: its name, hash and creation time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Unique name.
    pub name: String,
    /// SHA-256 of the key, lowercase hex.
    pub key_hash: String,
    /// Creation time.
    pub created_at: i64,
}

/// A grant-signing key as stored (the secret half sealed with the `grant_key`, which the
/// destination's servers therefore need too).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    /// `k4.pid.…`
    pub id: String,
    /// `k4.public.…`
    pub public: String,
    /// The sealed secret key.
    pub sealed: String,
    /// Creation time.
    pub created_at: i64,
    /// When it starts signing.
    pub active_from: i64,
    /// When it stopped signing.
    pub retired_at: Option<i64>,
}

impl From<&SigningKeyRecord> for SigningKey {
    fn from(k: &SigningKeyRecord) -> Self {
        Self {
            id: k.id.clone(),
            public: k.public.clone(),
            sealed: k.sealed.clone(),
            created_at: k.created_at.as_millis(),
            active_from: k.active_from.as_millis(),
            retired_at: k.retired_at.map(Timestamp::as_millis),
        }
    }
}

impl From<&SigningKey> for SigningKeyRecord {
    fn from(k: &SigningKey) -> Self {
        Self {
            id: k.id.clone(),
            public: k.public.clone(),
            sealed: k.sealed.clone(),
            created_at: Timestamp::from_millis(k.created_at),
            active_from: Timestamp::from_millis(k.active_from),
            retired_at: k.retired_at.map(Timestamp::from_millis),
        }
    }
}

/// A grant used up: it cannot be redeemed again until it expires (after that it fails
/// verification anyway).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantUse {
    /// `grt_…`
    pub id: String,
    /// When the record may go.
    pub expires_at: i64,
}

/// What a grant revocation covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// One grant; the subject is its id.
    Grant,
    /// Every grant of a user issued up to `at`; the subject is the user id.
    User,
}

/// A grant revocation (a redemption is one too, for offline verifiers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRevocation {
    /// What it covers.
    pub kind: RevocationKind,
    /// A grant id or a user id.
    pub subject: String,
    /// When.
    pub at: i64,
    /// When it lapses.
    pub until: i64,
}

impl From<&DomainRevocation> for GrantRevocation {
    fn from(r: &DomainRevocation) -> Self {
        let (kind, subject) = match &r.subject {
            Revoked::Grant(id) => (RevocationKind::Grant, id.clone()),
            Revoked::User(u) => (RevocationKind::User, u.as_str().to_owned()),
        };
        Self { kind, subject, at: r.at.as_millis(), until: r.until.as_millis() }
    }
}

impl From<&GrantRevocation> for DomainRevocation {
    fn from(r: &GrantRevocation) -> Self {
        let subject = match r.kind {
            RevocationKind::Grant => Revoked::Grant(r.subject.clone()),
            RevocationKind::User => Revoked::User(UserId::from_stored(r.subject.clone())),
        };
        Self { subject, at: Timestamp::from_millis(r.at), until: Timestamp::from_millis(r.until) }
    }
}

/// One sliding-window event log: its key and the times of its events, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLog {
    /// The log's key (`login:a:alice`, …).
    pub key: String,
    /// Event times, oldest first.
    pub events: Vec<i64>,
}

/// An audit event with its identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    /// Stable across copies (`aud_…`): what keeps a second copy from doubling the log.
    pub id: String,
    /// When.
    pub at: i64,
    /// The kind's snake_case name.
    pub kind: String,
    /// Who acted.
    pub actor: String,
    /// The user concerned, by id.
    pub user_id: Option<String>,
    /// The user concerned, by name.
    pub username: Option<String>,
    /// The session concerned.
    pub session_id: Option<String>,
    /// The client address.
    pub ip: Option<String>,
    /// Extra detail.
    pub detail: Option<String>,
}

impl Audit {
    /// The record of `event` under `id`.
    pub fn new(id: String, event: &AuditEvent) -> Self {
        Self {
            id,
            at: event.at.as_millis(),
            kind: event.kind.as_str().to_owned(),
            actor: event.actor.clone(),
            user_id: event.user_id.as_ref().map(|u| u.as_str().to_owned()),
            username: event.username.as_ref().map(|u| u.as_str().to_owned()),
            session_id: event.session_id.as_ref().map(|s| s.as_str().to_owned()),
            ip: event.ip.clone(),
            detail: event.detail.clone(),
        }
    }

    /// The event itself; `None` when its kind is one this version does not know.
    pub fn event(&self) -> Option<AuditEvent> {
        Some(AuditEvent {
            at: Timestamp::from_millis(self.at),
            kind: self.kind.parse::<AuditKind>().ok()?,
            actor: self.actor.clone(),
            username: self.username.clone().map(Username::from_stored),
            user_id: self.user_id.clone().map(UserId::from_stored),
            session_id: self.session_id.clone().map(SessionId::from_stored),
            ip: self.ip.clone(),
            detail: self.detail.clone(),
        })
    }
}

/// Records of one kind: what one export page holds and one import writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "records", rename_all = "snake_case")]
pub enum Batch {
    /// Users.
    Users(Vec<User>),
    /// Sessions.
    Sessions(Vec<Session>),
    /// API keys.
    ApiKeys(Vec<ApiKey>),
    /// Signing keys.
    SigningKeys(Vec<SigningKey>),
    /// Grant uses.
    GrantUses(Vec<GrantUse>),
    /// Grant revocations.
    GrantRevocations(Vec<GrantRevocation>),
    /// Event logs.
    EventLogs(Vec<EventLog>),
    /// Audit events.
    Audit(Vec<Audit>),
}

impl Batch {
    /// An empty batch of `kind`.
    pub fn empty(kind: Kind) -> Self {
        match kind {
            Kind::Users => Batch::Users(Vec::new()),
            Kind::Sessions => Batch::Sessions(Vec::new()),
            Kind::ApiKeys => Batch::ApiKeys(Vec::new()),
            Kind::SigningKeys => Batch::SigningKeys(Vec::new()),
            Kind::GrantUses => Batch::GrantUses(Vec::new()),
            Kind::GrantRevocations => Batch::GrantRevocations(Vec::new()),
            Kind::EventLogs => Batch::EventLogs(Vec::new()),
            Kind::Audit => Batch::Audit(Vec::new()),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Batch::Users(_) => Kind::Users,
            Batch::Sessions(_) => Kind::Sessions,
            Batch::ApiKeys(_) => Kind::ApiKeys,
            Batch::SigningKeys(_) => Kind::SigningKeys,
            Batch::GrantUses(_) => Kind::GrantUses,
            Batch::GrantRevocations(_) => Kind::GrantRevocations,
            Batch::EventLogs(_) => Kind::EventLogs,
            Batch::Audit(_) => Kind::Audit,
        }
    }

    /// How many records.
    pub fn len(&self) -> usize {
        match self {
            Batch::Users(r) => r.len(),
            Batch::Sessions(r) => r.len(),
            Batch::ApiKeys(r) => r.len(),
            Batch::SigningKeys(r) => r.len(),
            Batch::GrantUses(r) => r.len(),
            Batch::GrantRevocations(r) => r.len(),
            Batch::EventLogs(r) => r.len(),
            Batch::Audit(r) => r.len(),
        }
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each record as JSON, the canonical form the checksum hashes.
    pub fn each_json(&self) -> Vec<Vec<u8>> {
        fn all<T: Serialize>(records: &[T]) -> Vec<Vec<u8>> {
            // Plain structs of strings and numbers: serializing cannot fail.
            records.iter().map(|r| serde_json::to_vec(r).unwrap_or_default()).collect()
        }
        match self {
            Batch::Users(r) => all(r),
            Batch::Sessions(r) => all(r),
            Batch::ApiKeys(r) => all(r),
            Batch::SigningKeys(r) => all(r),
            Batch::GrantUses(r) => all(r),
            Batch::GrantRevocations(r) => all(r),
            Batch::EventLogs(r) => all(r),
            Batch::Audit(r) => all(r),
        }
    }
}

/// Where an export stopped: opaque, store-specific, meaningful only to the store that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor(pub String);

/// One page of an export.
#[derive(Clone, Debug)]
pub struct Page {
    /// The records.
    pub batch: Batch,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<Cursor>,
}

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Imported {
    /// Records inserted or changed.
    pub written: u64,
    /// Records the destination already held as they are.
    pub unchanged: u64,
    /// Records not written because they no longer count: sessions dead at the import's `now`.
    pub skipped: u64,
}

impl std::ops::AddAssign for Imported {
    fn add_assign(&mut self, other: Self) {
        self.written += other.written;
        self.unchanged += other.unchanged;
        self.skipped += other.skipped;
    }
}

/// A count and an order-independent checksum of records: equal for two stores that hold the
/// same records of a kind, whatever order they list them in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    /// How many records.
    pub count: u64,
    sum: u128,
}

impl Digest {
    /// Adds every record of `batch`.
    pub fn add(&mut self, batch: &Batch) {
        let kind = batch.kind().name();
        for json in batch.each_json() {
            let hash = Sha256::new().chain_update(kind).chain_update([0]).chain_update(&json);
            let bytes: [u8; 32] = hash.finalize().into();
            let mut first = [0u8; 16];
            first.copy_from_slice(&bytes[..16]);
            self.sum = self.sum.wrapping_add(u128::from_be_bytes(first));
            self.count += 1;
        }
    }

    /// Combines two digests (of different kinds, for a whole-store checksum).
    pub fn merge(&mut self, other: &Digest) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// The checksum, 32 hex digits.
    pub fn checksum(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

/// A row of a SQL store's export query, read by column name, so that one decoder
/// ([`page_of_rows`]) serves every SQL store. Each kind's query selects the columns of that kind's
/// record (named as its fields, with `csrf_token`, `public_key`, `sealed_secret` and an audit
/// event's `ref` as the schemas name them), every one as text or an integer: flags as 0 or 1,
/// hashes as lowercase hex, lists (roles, event times) as JSON arrays; and `cursor`, where the
/// next page starts after the row, as text.
pub trait Columns {
    /// A text column, `None` when NULL.
    fn maybe_text(&self, column: &str) -> StoreResult<Option<String>>;

    /// An integer column, `None` when NULL.
    fn maybe_int(&self, column: &str) -> StoreResult<Option<i64>>;

    /// A text column that is never NULL.
    fn text(&self, column: &str) -> StoreResult<String> {
        self.maybe_text(column)?.ok_or(StoreError::Corrupt { what: "record field", source: None })
    }

    /// An integer column that is never NULL.
    fn int(&self, column: &str) -> StoreResult<i64> {
        self.maybe_int(column)?.ok_or(StoreError::Corrupt { what: "record field", source: None })
    }

    /// A flag (an integer column, 0 or 1).
    fn flag(&self, column: &str) -> StoreResult<bool> {
        Ok(self.int(column)? != 0)
    }

    /// A list (a JSON array in a text column).
    fn list<T: serde::de::DeserializeOwned>(&self, column: &str) -> StoreResult<Vec<T>>
    where
        Self: Sized,
    {
        serde_json::from_str(&self.text(column)?)
            .map_err(|e| StoreError::Corrupt { what: "stored list", source: Some(e.into()) })
    }
}

/// Appends the record `r` holds to `batch`, of its kind.
fn push_row<R: Columns>(batch: &mut Batch, r: &R) -> StoreResult<()> {
    match batch {
        Batch::Users(all) => all.push(User {
            id: r.text("id")?,
            username: r.text("username")?,
            password_hash: r.maybe_text("password_hash")?,
            roles: r.list("roles")?,
            disabled: r.flag("disabled")?,
            created_at: r.int("created_at")?,
            updated_at: r.int("updated_at")?,
            privileges_changed_at: r.int("privileges_changed_at")?,
        }),
        Batch::Sessions(all) => all.push(Session {
            id: r.text("id")?,
            user_id: r.text("user_id")?,
            token_hash: r.text("token_hash")?,
            csrf: r.text("csrf_token")?,
            created_at: r.int("created_at")?,
            last_seen_at: r.int("last_seen_at")?,
            token_issued_at: r.int("token_issued_at")?,
            idle_expires_at: r.int("idle_expires_at")?,
            expires_at: r.int("expires_at")?,
            ip: r.maybe_text("ip")?,
            user_agent: r.maybe_text("user_agent")?,
            audience: r.maybe_text("audience")?,
            data: r.text("data")?,
            data_version: u64::try_from(r.int("data_version")?).unwrap_or(0),
        }),
        Batch::ApiKeys(all) => all.push(ApiKey {
            name: r.text("name")?,
            key_hash: r.text("key_hash")?,
            created_at: r.int("created_at")?,
        }),
        Batch::SigningKeys(all) => all.push(SigningKey {
            id: r.text("id")?,
            public: r.text("public_key")?,
            sealed: r.text("sealed_secret")?,
            created_at: r.int("created_at")?,
            active_from: r.int("active_from")?,
            retired_at: r.maybe_int("retired_at")?,
        }),
        Batch::GrantUses(all) => {
            all.push(GrantUse { id: r.text("id")?, expires_at: r.int("expires_at")? })
        }
        Batch::GrantRevocations(all) => all.push(GrantRevocation {
            kind: crate::store::codec::revocation_kind(&r.text("kind")?)?,
            subject: r.text("subject")?,
            at: r.int("at")?,
            until: r.int("until")?,
        }),
        Batch::EventLogs(all) => {
            all.push(EventLog { key: r.text("key")?, events: r.list("events")? })
        }
        Batch::Audit(all) => all.push(Audit {
            id: r.text("ref")?,
            at: r.int("at")?,
            kind: r.text("kind")?,
            actor: r.text("actor")?,
            user_id: r.maybe_text("user_id")?,
            username: r.maybe_text("username")?,
            session_id: r.maybe_text("session_id")?,
            ip: r.maybe_text("ip")?,
            detail: r.maybe_text("detail")?,
        }),
    }
    Ok(())
}

/// The 32 bytes a record's hash field (`token_hash`, `key_hash`) spells, for a store that keeps
/// bytes; [`StoreError::Corrupt`] unless it is 64 hex digits.
pub fn hash_bytes(hex: &str) -> StoreResult<Vec<u8>> {
    crate::token::TokenHash::from_hex(hex)
        .map(|h| h.as_bytes().to_vec())
        .ok_or(StoreError::Corrupt { what: "exported hash", source: None })
}

/// The page that `rows` of an export query of `kind` (at most `limit` of them) make: their
/// records, and the last row's `cursor` when the page is full (more may follow).
pub fn page_of_rows<R: Columns>(kind: Kind, rows: &[R], limit: usize) -> StoreResult<Page> {
    let mut batch = Batch::empty(kind);
    for row in rows {
        push_row(&mut batch, row)?;
    }
    let next = match rows.last() {
        Some(last) if rows.len() >= limit => Some(Cursor(last.text("cursor")?)),
        _ => None,
    };
    Ok(Page { batch, next })
}

/// Export and import of a store's contents. Offered by a store through
/// [`crate::Store::transfer`]; `cloakroom store copy` and the conformance suite's transfer
/// properties are its users.
///
/// **Export** pages through what the store holds of one kind, as lookups at `now` see it:
/// every user (disabled ones too); the sessions live at `now` whose user is enabled; every API
/// key and signing key; grant uses that have not expired and revocations that have not lapsed at
/// `now`; each event log's events newer than `now - EVENT_RETENTION` (logs without any are left
/// out); every audit event the store keeps, oldest first. A page holds at most `limit` records
/// (at least one while any are left) and the cursor for the next; memory stays bounded by the
/// page. Records changed while an export pages through the store may be missed or seen twice;
/// records that stay as they are for the whole export are seen exactly once (a Redis event-log
/// key, found by `SCAN`, may be seen twice while Redis resizes its key table).
///
/// **Import** upserts every record by its identity (see the [module docs](self)); the record
/// wins over what the destination holds, so a re-run brings what changed since (newer
/// deadlines, a rotated token, new data), and importing the same batch twice writes nothing the
/// second time (`written == 0`). It never brings anything back to life: a session dead at
/// `now` or of a user the destination holds disabled is skipped, a session whose user the
/// destination lacks is [`crate::StoreError::NotFound`], and a user imported disabled loses its
/// sessions on the destination in the same step. It deletes nothing else: what the source no longer has
/// (a session revoked since the last copy) is for the caller to revoke through the ordinary
/// methods, which announce it. An import that wrote a user or a session announces an
/// invalidation of every user on the store's change feed, so that servers running on the
/// destination drop what they cached (a copy is meant for a destination no server serves yet;
/// this keeps one that does correct).
///
/// A batch is written in one transaction where the store has them (SQLite, PostgreSQL) and
/// record by record otherwise (Redis); a failure part-way leaves records that a re-run
/// rewrites.
#[async_trait]
pub trait Transfer: Send + Sync {
    /// Names the data behind this handle: two handles on the same data (the same file,
    /// database or server) give the same text, stores with different data never do. For
    /// refusing to copy a store onto itself.
    async fn instance(&self) -> StoreResult<String>;

    /// One page of the records of `kind`, from `after` (the previous page's cursor; `None` for
    /// the first page).
    async fn export(
        &self,
        kind: Kind,
        after: Option<&Cursor>,
        limit: usize,
        now: Timestamp,
    ) -> StoreResult<Page>;

    /// Writes `batch` (see the trait docs for the rules).
    async fn import(&self, batch: &Batch, now: Timestamp) -> StoreResult<Imported>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(key: &str, events: &[i64]) -> EventLog {
        EventLog { key: key.into(), events: events.to_vec() }
    }

    #[test]
    fn digests_ignore_order_and_see_every_field() {
        let (a, b) = (log("a", &[1, 2]), log("b", &[3]));
        let mut one = Digest::default();
        one.add(&Batch::EventLogs(vec![a.clone(), b.clone()]));
        let mut two = Digest::default();
        two.add(&Batch::EventLogs(vec![b.clone()]));
        two.add(&Batch::EventLogs(vec![a.clone()]));
        assert_eq!(one, two);
        assert_eq!(one.count, 2);
        let mut changed = Digest::default();
        changed.add(&Batch::EventLogs(vec![a, log("b", &[4])]));
        assert_ne!(one.checksum(), changed.checksum());
        // A record seen twice counts twice: a duplicate is a difference.
        two.add(&Batch::EventLogs(vec![b]));
        assert_ne!(one, two);
    }

    #[test]
    fn batches_round_trip_through_json() {
        let revocation = GrantRevocation {
            kind: RevocationKind::User,
            subject: "usr_x".into(),
            at: 5,
            until: 6,
        };
        let batch = Batch::GrantRevocations(vec![revocation.clone()]);
        let text = serde_json::to_string(&batch).unwrap();
        assert!(text.starts_with(r#"{"kind":"grant_revocations","records":[{"kind":"user""#));
        assert_eq!(serde_json::from_str::<Batch>(&text).unwrap(), batch);
        let domain = DomainRevocation::from(&revocation);
        assert_eq!(domain.subject, Revoked::User(UserId::from_stored("usr_x".into())));
        assert_eq!(GrantRevocation::from(&domain), revocation);
    }
}
