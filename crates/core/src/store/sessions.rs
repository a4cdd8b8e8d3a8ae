//! Sessions: creation with the per-user cap, lookup by token and id, use, rotation, revocation,
//! data, and the sweep of expired ones.
use async_trait::async_trait;

use super::StoreResult;
#[cfg(doc)]
use crate::error::StoreError;
use crate::id::{SessionId, UserId};
use crate::session::{Authenticated, DataWrite, NewSession, SessionData};
use crate::time::Timestamp;
use crate::token::{CsrfToken, TokenHash};

/// The sessions a store keeps. See [`super`] for the rules every method follows.
#[async_trait]
pub trait SessionStore: Send + Sync {
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
    /// [`SessionStore::session_by_token`].
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

    /// How many sessions are live at `now` (the same rule as [`SessionStore::list_sessions`] with
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

    /// Whether expired sessions stay in the backend until [`SessionStore::delete_expired`] removes
    /// them (SQL stores: the server sweeps once a minute), or the backend reclaims them by itself
    /// (Redis TTLs: no periodic sweep needed). Expiry is enforced on every lookup either way.
    fn needs_sweep(&self) -> bool {
        true
    }

    /// Deletes sessions that expired (idle or absolute) before `now`, and bus records old enough
    /// that no live subscriber still needs them; returns how many sessions.
    async fn delete_expired(&self, now: Timestamp) -> StoreResult<u64>;
}
