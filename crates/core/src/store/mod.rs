//! The [`Store`] traits: everything Cloakroom keeps, one small trait per concern (users,
//! sessions, API keys, event logs, grants, audit, change feed), each with its contract on every
//! method; [`Store`] is a backend that implements them all, and `testing` checks each one. The
//! encodings that every backend shares (roles, revocation subjects) are in [`codec`].
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

use crate::error::StoreError;
use crate::export::Transfer;

mod api_keys;
mod audit;
pub mod codec;
mod event_logs;
mod feed;
mod grants;
mod sessions;
mod users;

pub use api_keys::{ApiKey, ApiKeyStore};
pub use audit::AuditStore;
pub use event_logs::{EventId, EventLogStore, Reservation};
pub use feed::{BusEvent, ChangeFeed};
pub use grants::GrantStore;
pub use sessions::SessionStore;
pub use users::UserStore;

/// Every store trait, for calling store methods on a concrete store (`SqliteStore`, …) or a
/// generic one: `use cloakroom_core::store::prelude::*;`. A `dyn Store` needs no import.
pub mod prelude {
    pub use super::{
        ApiKeyStore, AuditStore, ChangeFeed, EventLogStore, GrantStore, SessionStore, Store,
        UserStore,
    };
}

/// Result type of store methods.
pub type StoreResult<T> = Result<T, StoreError>;

/// A backend that keeps all of Cloakroom's state: every concern's trait, and what the server
/// needs of the backend as a whole. See the module docs for the rules every method follows.
#[async_trait]
pub trait Store:
    UserStore
    + SessionStore
    + ApiKeyStore
    + EventLogStore
    + GrantStore
    + AuditStore
    + ChangeFeed
    + Send
    + Sync
    + 'static
{
    /// A short name for logs and metrics (`sqlite`, `redis`, …).
    fn kind(&self) -> &'static str;

    /// The store's export and import ([`Transfer`]), for moving its contents to another store;
    /// `None` when it has none (a wrapper such as the server's metered store).
    fn transfer(&self) -> Option<&dyn Transfer> {
        None
    }

    /// Checks that the backend answers. Used by `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
}
