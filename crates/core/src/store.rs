//! The [`Store`] trait: everything Cloakroom keeps (users, sessions, API keys, audit events),
//! behind one contract that every backend implements and that `testing` checks.
//!
//! General rules for every implementation:
//! - **Fail closed.** Any doubt about the backend's answer is [`StoreError::Unavailable`], never a
//!   guess. A lookup that cannot reach the backend must not return a session.
//! - **Nothing resurrects.** Revoking a session deletes it for good. Writes that target a session
//!   (touch, rotate, data) only update an existing live row and never insert one, so a write racing
//!   with a revocation leaves the session revoked.
//! - **Times are the caller's.** Methods that decide liveness take `now`, so tests control time and
//!   all nodes agree on the rule (`idle_expires_at > now && expires_at > now`).
//! - **Secrets never enter.** Stores see token hashes and password hashes only.

use async_trait::async_trait;

use crate::audit::{AuditEvent, AuditFilter};
use crate::error::StoreError;
use crate::export::Transfer;
use crate::grant::{GrantRevocation, GrantUse, Redemption, SigningKeyRecord};
use crate::id::{SessionId, UserId};
use crate::password::PasswordHash;
use crate::session::{Authenticated, DataWrite, NewSession, SessionData};
use crate::time::Timestamp;
use crate::token::{CsrfToken, TokenHash};
use crate::user::{NewUser, User, UserChange, UserRecord, Username};

/// A service API key as stored: the name and when it was made; the key itself only as a hash.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ApiKey {
    /// Unique name.
    pub name: String,
    /// Creation time.
    pub created_at: Timestamp,
}

/// What a store's invalidation feed reports to node-local caches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusEvent {
    /// Cached sessions of `user` (of every user with `None`) may be stale: drop them.
    Invalidate {
        /// The user whose sessions changed; `None` for everyone.
        user: Option<UserId>,
        /// When the change was made, for the propagation-lag metric.
        at: Timestamp,
    },
    /// The feed is live from here on, but events before may have been missed: flush, then serve.
    Connected,
    /// The feed is down or lagging: serve nothing from caches until `Connected`.
    Disconnected,
}

/// An event recorded by [`Store::reserve_event`], opaque to the caller: what
/// [`Store::release_event`] removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventId(pub String);

/// What [`Store::reserve_event`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// Recorded: the event counts until it leaves the window or is released.
    Reserved(EventId),
    /// The log is full: nothing was recorded. Another event fits once the event at this time has
    /// left the window.
    Full(Timestamp),
}

/// Result type of store methods.
pub type StoreResult<T> = Result<T, StoreError>;

/// A backend that keeps Cloakroom's state. See the module docs for the rules every method follows.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and metrics (`sqlite`, `redis`, …).
    fn kind(&self) -> &'static str;

    /// The store's export and import ([`Transfer`]), for moving its contents to another store;
    /// `None` when it has none (a wrapper such as the server's metered store).
    fn transfer(&self) -> Option<&dyn Transfer> {
        None
    }

    /// Checks that the backend answers. Used by `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    /// Starts this node's invalidation feed: every change that can make a cached session stale
    /// (a revocation, a user update, a rotation, a cap eviction), made by any node or process
    /// sharing the store, becomes a [`BusEvent::Invalidate`] for the user concerned. The first
    /// event is `Connected` once the feed is live. Whenever the store cannot vouch that no event
    /// was missed (connection lost, gap, lag), the feed sends `Disconnected`, then `Connected`
    /// when it is whole again. The receiver closes only when the store is gone.
    async fn subscribe(&self) -> StoreResult<tokio::sync::mpsc::Receiver<BusEvent>>;

    // ---------------------------------------------------------------- users

    /// Creates a user. [`StoreError::Conflict`] when the username is taken; nothing changes then.
    async fn create_user(&self, user: &NewUser) -> StoreResult<User>;

    /// The user with this name and its password hash; `None` when there is none. Disabled users
    /// are returned (the caller decides).
    async fn user_by_name(&self, username: &Username) -> StoreResult<Option<UserRecord>>;

    /// Every user, ordered by username.
    async fn list_users(&self) -> StoreResult<Vec<User>>;

    /// Applies `change` to the user atomically and returns the user as it now is, with the ids
    /// of the sessions it revoked. A change of the role set sets `privileges_changed_at` to the
    /// time of the change. When [`UserChange::revokes_sessions`] (new password, disabled),
    /// all of the user's sessions except `keep` are deleted in the same atomic step, so no check
    /// can see the new password state together with an old session. A role change alone revokes
    /// nothing: lookups always return the user's current roles. [`StoreError::NotFound`] when the
    /// user does not exist.
    async fn update_user(
        &self,
        id: &UserId,
        change: &UserChange,
        keep: Option<&SessionId>,
    ) -> StoreResult<(User, Vec<SessionId>)>;

    /// Replaces the user's password hash with `new` only if it is still `old`, revoking nothing:
    /// used to upgrade a hash to current parameters after a successful login. Returns whether it
    /// replaced it.
    async fn replace_password_hash(
        &self,
        id: &UserId,
        old: &PasswordHash,
        new: &PasswordHash,
    ) -> StoreResult<bool>;

    // ---------------------------------------------------------------- sessions

    /// Inserts a session. When `cap > 0` and the user already has `cap` or more live sessions,
    /// the oldest are deleted in the same atomic step so that the user has exactly `cap` with the
    /// new one; their ids are returned. A collision on id or token hash (which 128 / 256 random
    /// bits make practically impossible) is [`StoreError::Conflict`] and inserts nothing; an
    /// existing session is never overwritten. [`StoreError::NotFound`] when the user does not
    /// exist.
    async fn create_session(
        &self,
        session: &NewSession,
        cap: u32,
        now: Timestamp,
    ) -> StoreResult<Vec<SessionId>>;

    /// The live session whose token hashes to `hash`, with its user. `None` when no session has
    /// this hash (never issued, revoked, rotated away), when it expired by idle or absolute
    /// deadline at `now`, or when its user is disabled. Never creates anything: an unknown token is
    /// not adopted.
    async fn session_by_token(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<Option<Authenticated>>;

    /// The live session with this public id and its user, under the same rules as
    /// [`Store::session_by_token`].
    async fn session_by_id(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> StoreResult<Option<Authenticated>>;

    /// Records use: sets `last_seen_at = now` and `idle_expires_at = idle_expires_at` if the
    /// session exists and is live at `now`. Returns whether it did. Never recreates a revoked or
    /// expired session, and never moves `idle_expires_at` past `expires_at` (the caller computes it
    /// with [`crate::ExpiryPolicy::idle_deadline`]).
    async fn touch(
        &self,
        id: &SessionId,
        now: Timestamp,
        idle_expires_at: Timestamp,
    ) -> StoreResult<bool>;

    /// Replaces the session's token hash (the old token stops working at once) and CSRF token,
    /// and sets `token_issued_at = now`, if the session exists, is live at `now` and its token
    /// hash is still `from`: of two concurrent rotations of one token exactly one wins, so a client
    /// is never left holding a token that a racing request rotated away. Returns whether it did.
    async fn rotate(
        &self,
        id: &SessionId,
        from: &TokenHash,
        to: &TokenHash,
        csrf: &CsrfToken,
        now: Timestamp,
    ) -> StoreResult<bool>;

    /// Deletes one session. Returns its owner when it existed, `None` otherwise (idempotent).
    async fn revoke_session(&self, id: &SessionId) -> StoreResult<Option<UserId>>;

    /// Deletes all of a user's sessions except `keep`, atomically, and returns their ids.
    async fn revoke_user_sessions(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
    ) -> StoreResult<Vec<SessionId>>;

    /// How many sessions are live at `now` (the same rule as [`Store::list_sessions`] with
    /// `None`), for the live-sessions gauge; `None` when the store cannot count them cheaply
    /// (a count must not walk every key of a shared store).
    async fn count_sessions(&self, now: Timestamp) -> StoreResult<Option<u64>> {
        let _ = now;
        Ok(None)
    }

    /// Live sessions at `now`, of one user or (with `None`) of everyone, newest first.
    async fn list_sessions(
        &self,
        user: Option<&UserId>,
        now: Timestamp,
    ) -> StoreResult<Vec<Authenticated>>;

    /// The session's data and version; `None` when the session does not exist.
    async fn session_data(&self, id: &SessionId) -> StoreResult<Option<SessionData>>;

    /// Replaces the session's data if the session exists and, with `if_version`, only if the
    /// stored version is that one. Atomic compare-and-set: of two writers holding the same version,
    /// exactly one wins. Never recreates a revoked session ([`DataWrite::Gone`]).
    async fn put_session_data(
        &self,
        id: &SessionId,
        value: &serde_json::Value,
        if_version: Option<u64>,
    ) -> StoreResult<DataWrite>;

    /// Whether expired sessions stay in the backend until [`Store::delete_expired`] removes them
    /// (SQL stores: the server sweeps once a minute), or the backend reclaims them by itself
    /// (Redis TTLs: no periodic sweep needed). Expiry is enforced on every lookup either way.
    fn needs_sweep(&self) -> bool {
        true
    }

    /// Deletes sessions that expired (idle or absolute) before `now`, and bus records old enough
    /// that no live subscriber still needs them; returns how many sessions.
    async fn delete_expired(&self, now: Timestamp) -> StoreResult<u64>;

    // ---------------------------------------------------------------- API keys

    /// Stores a new API key by name and hash. [`StoreError::Conflict`] when the name exists.
    async fn create_api_key(
        &self,
        name: &str,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<ApiKey>;

    /// The API key whose secret hashes to `hash`, if any.
    async fn api_key_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<ApiKey>>;

    /// Every API key, by name.
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>>;

    /// Deletes an API key by name; whether it existed.
    async fn revoke_api_key(&self, name: &str) -> StoreResult<bool>;

    // ---------------------------------------------------------------- event logs

    /// Reserves a place for an event at `now` in the sliding-window log `key`, atomically: events
    /// older than `window` are forgotten first; then, when `enforce` and the log already holds
    /// `max` events, nothing is recorded and the answer is [`Reservation::Full`] with the time of
    /// the event that must leave the window before another fits; otherwise the event is recorded
    /// (the log keeps its newest `max`) and [`Reservation::Reserved`] names it for
    /// [`Store::release_event`]. Check and record are one step: of any number of callers on any
    /// number of nodes racing on one log, at most `max` are admitted within a window (the login
    /// throttle reserves an attempt *before* verifying a password, so concurrent guesses cannot
    /// all pass a check that none has recorded yet). Without `enforce` the event is always
    /// recorded. Work per call is bounded by `max`, whatever was piled into the log before.
    async fn reserve_event(
        &self,
        key: &str,
        now: Timestamp,
        window: std::time::Duration,
        max: u32,
        enforce: bool,
    ) -> StoreResult<Reservation>;

    /// Removes a reserved event from the log `key` (a reservation that turned out not to count,
    /// such as a login that succeeded). Idempotent; an unknown id is no error.
    async fn release_event(&self, key: &str, id: &EventId) -> StoreResult<()>;

    /// The times of the events of log `key` within `window` before `now`, oldest first, without
    /// recording anything.
    async fn event_log(
        &self,
        key: &str,
        now: Timestamp,
        window: std::time::Duration,
    ) -> StoreResult<Vec<Timestamp>>;

    /// Forgets the log `key`.
    async fn forget_events(&self, key: &str) -> StoreResult<()>;

    // ---------------------------------------------------------------- grants

    /// Adds a grant-signing key. With `retire_others_at`, every other key that is not retired yet
    /// gets that retirement time in the same atomic step (a rotation). [`StoreError::Conflict`]
    /// when a key with this id exists.
    async fn add_signing_key(
        &self,
        key: &SigningKeyRecord,
        retire_others_at: Option<Timestamp>,
    ) -> StoreResult<()>;

    /// Every signing key, oldest first.
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;

    /// Uses up a grant, atomically: [`Redemption::AlreadyUsed`] when it was used before (by any
    /// node: of two concurrent redemptions exactly one wins), [`Redemption::Revoked`] when it, or
    /// its user at or after its issue time, was revoked; otherwise records the use until the
    /// grant expires and reports it as a grant revocation (so that offline verifiers drop it).
    async fn redeem_grant(&self, grant: &GrantUse, now: Timestamp) -> StoreResult<Redemption>;

    /// Records a revocation of grants, kept until its `until`.
    async fn revoke_grants(&self, revocation: &GrantRevocation) -> StoreResult<()>;

    /// Revocations made at or after `since` that still matter at `now` (`until > now`), oldest
    /// first. Every node sharing the store sees every revocation.
    async fn grant_revocations(
        &self,
        since: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Vec<GrantRevocation>>;

    // ---------------------------------------------------------------- audit

    /// Appends an audit event, under a fresh identity ([`crate::id::AuditId`]) that copies to
    /// other stores keep ([`crate::export::Audit::id`]).
    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()>;

    /// Audit events matching `filter`, newest first.
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>>;
}
