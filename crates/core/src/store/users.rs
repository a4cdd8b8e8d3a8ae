//! Users: accounts, their roles and password hashes.
use async_trait::async_trait;

use super::StoreResult;
#[cfg(doc)]
use crate::error::StoreError;
use crate::id::{SessionId, UserId};
use crate::password::PasswordHash;
use crate::user::{NewUser, User, UserChange, UserRecord, Username};

/// The users a store keeps. See [`super`] for the rules every method follows.
#[async_trait]
pub trait UserStore: Send + Sync {
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
}
