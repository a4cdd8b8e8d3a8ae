//! Typed errors: what a store can fail with, and what the domain operations can fail with. The
//! server maps these to HTTP statuses in one place; nothing here knows about HTTP.

use std::error::Error as StdError;

use crate::password::{HashError, PolicyError};
use crate::token::RandomError;
use crate::user::NameError;

/// A boxed source error from a backend driver.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or did not answer in time. Callers fail closed: no
    /// session is accepted that the store could not vouch for.
    #[error("the store is unavailable")]
    Unavailable(#[source] BoxError),
    /// A uniqueness rule was broken (a username or API key name that exists).
    #[error("{what} already exists")]
    Conflict {
        /// What collided, for the message.
        what: &'static str,
    },
    /// The record to change does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was missing, for the message.
        what: &'static str,
    },
    /// A stored record could not be decoded: the store holds data this version cannot read.
    #[error("a stored {what} could not be decoded")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// Why.
        #[source]
        source: Option<BoxError>,
    },
}

impl StoreError {
    /// Wraps any driver error as [`StoreError::Unavailable`].
    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        Self::Unavailable(e.into())
    }
}

/// What a domain operation (through [`crate::SessionManager`] or the account helpers) can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Password hashing failed for a reason other than a wrong password.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The OS random generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// A new password broke the policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A username or role was malformed.
    #[error("invalid {field}: {source}")]
    Name {
        /// Which field.
        field: &'static str,
        /// Why.
        source: NameError,
    },
    /// No such user.
    #[error("unknown user")]
    UnknownUser,
    /// A user asked to disable their own account.
    #[error("you cannot disable your own account")]
    SelfDisable,
}
