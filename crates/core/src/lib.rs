//! Cloakroom's domain, independent of any backend and of HTTP.
//!
//! - [`token`]: session tokens, API keys and CSRF tokens: generation from the OS CSPRNG, the text
//!   format with its checksum, and the hash that is all a store ever keeps.
//! - [`user`], [`password`]: accounts, roles and the Argon2id password policy.
//! - [`session`]: session records and the idle / absolute expiry policy; [`active`]: the compact
//!   form of a live session that checks answer with and the node-local [`cache`] holds.
//! - [`store`]: the [`Store`] trait every backend implements, with its contract on every method.
//! - [`manager`]: [`SessionManager`], the one door through which the server checks and changes
//!   sessions; the node-local cache and the invalidation bus sit behind it.
//! - [`grant`], [`grants`]: grants as stored (signing keys, single use, revocations), and
//!   [`grants::GrantIssuer`], which signs and redeems them.
//! - [`audit`]: authentication and revocation events.
//! - [`export`]: a store's whole contents as records, and the [`export::Transfer`] trait that
//!   reads them out of one store and writes them into another (`cloakroom store copy`).
//! - `testing` (feature `testing`): the conformance suite every store must pass.

pub mod active;
pub mod audit;
pub mod cache;
pub mod error;
pub mod export;
pub mod grant;
pub mod grants;
pub mod id;
pub mod manager;
pub mod password;
pub mod session;
pub mod store;
pub mod time;
pub mod token;
pub mod user;

#[cfg(feature = "testing")]
pub mod testing;

pub use active::ActiveSession;
pub use error::{Error, StoreError};
pub use id::{SessionId, UserId};
pub use manager::SessionManager;
pub use session::{Authenticated, ExpiryPolicy, Session};
pub use store::Store;
pub use time::Timestamp;
pub use token::{CsrfToken, SecretKind, Token, TokenHash};
pub use user::{Role, User, Username};
