//! [`DomainError`]: what a use case can fail with, in the domain's words. Front ends map it once:
//! the HTTP API to a status and code (`From<DomainError> for ApiError` in the server), the CLI to
//! a message and an exit code.

use std::time::Duration;

use cloakroom_core::grants::GrantFailure;
use cloakroom_core::{Error, StoreError};

/// Why a use case refused or failed. Internals (driver errors, SQL) stay in [`DomainError::Store`]
/// and [`DomainError::Internal`], whose messages are for logs, never for clients.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// Unknown user, wrong password, no password, disabled account: deliberately one answer.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The current password given to confirm a change is wrong.
    #[error("the current password is wrong")]
    WrongCurrentPassword,
    /// Too many attempts: nothing was tried. Another attempt may succeed after `retry_after`.
    #[error("too many attempts; try again later")]
    Throttled {
        /// How long to wait.
        retry_after: Duration,
    },
    /// The session the request relies on is gone (revoked, expired, rotated by another request).
    #[error("a valid session is required")]
    Unauthenticated,
    /// The thing named does not exist (or is not the caller's to see).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// It exists already.
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed or breaks a policy (password rules, names, sizes).
    #[error("{0}")]
    Invalid(String),
    /// The request is well-formed but refused for this actor or this target.
    #[error("{0}")]
    Forbidden(String),
    /// A user asked to disable their own account.
    #[error("you cannot disable your own account")]
    SelfDisable,
    /// Session data was written since the version the caller based the write on.
    #[error("the session data changed since the version given")]
    VersionMismatch,
    /// The data is over its size limit.
    #[error("{0}")]
    TooLarge(String),
    /// Grants are off: no key to seal signing keys with.
    #[error("grants need grant_key (CLOAKROOM_GRANT_KEY) on this store")]
    GrantsOff,
    /// Not a valid grant for this audience.
    #[error("{0}")]
    InvalidGrant(String),
    /// The grant was used already.
    #[error("the grant was already used")]
    GrantAlreadyUsed,
    /// The store failed: the caller fails closed.
    #[error(transparent)]
    Store(StoreError),
    /// A fault of this process (no randomness, hashing failed).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result of a use case.
pub type DomainResult<T> = Result<T, DomainError>;

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { what } => {
                DomainError::Conflict(format!("{what} already exists"))
            }
            StoreError::NotFound { what } => DomainError::NotFound(what),
            other => DomainError::Store(other),
        }
    }
}

impl From<Error> for DomainError {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(s) => s.into(),
            Error::Policy(p) => DomainError::Invalid(p.to_string()),
            Error::Name { .. } => DomainError::Invalid(e.to_string()),
            Error::UnknownUser => DomainError::NotFound("user"),
            Error::SelfDisable => DomainError::SelfDisable,
            other => DomainError::Internal(other.to_string()),
        }
    }
}

impl From<GrantFailure> for DomainError {
    fn from(e: GrantFailure) -> Self {
        match e {
            GrantFailure::Store(s) => s.into(),
            GrantFailure::Request(m) => DomainError::Invalid(m),
            GrantFailure::Invalid(g) => DomainError::InvalidGrant(g.to_string()),
            GrantFailure::Revoked => DomainError::InvalidGrant("grant revoked".into()),
            GrantFailure::AlreadyUsed => DomainError::GrantAlreadyUsed,
            other => DomainError::Internal(other.to_string()),
        }
    }
}

impl From<cloakroom_core::token::RandomError> for DomainError {
    fn from(e: cloakroom_core::token::RandomError) -> Self {
        DomainError::Internal(e.to_string())
    }
}
