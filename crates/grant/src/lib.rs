//! Cloakroom grants: short-lived, single-use, signed statements such as "user U may download file
//! X", which a service that keeps no session state verifies offline.
//!
//! A grant is a PASETO **v4.public** token (Ed25519), and nothing else: no other version, purpose
//! or algorithm is ever accepted, so there is nothing to negotiate and no key confusion.
//!
//! - The footer is exactly `{"kid":"k4.pid.…"}`: the PASERK id of the signing key. It picks the
//!   key among the configured ones before anything else is read; an unknown id is refused.
//! - The audience is bound twice: as the `aud` claim and as the implicit assertion
//!   (`cloakroom-grant:` + audience), so a grant made for another service fails the signature
//!   check itself, whatever its payload says.
//! - Claims are read only after the signature verified: `typ` must be `cloakroom-grant`, and
//!   `exp`, `nbf`, `iat` are enforced (a small leeway for clock skew on `nbf` and `iat` only).
//!
//! [`Verifier`] adds what a verifying service needs on top of [`decode`]: single use (an in-memory
//! replay cache bounded by the grants' expiry) and revocations pushed by the server (grants that
//! were redeemed elsewhere, users who were logged out everywhere, changed their password or were
//! disabled). With the `client` feature, [`client`] fetches the keys from `/v1/keys` and follows
//! `/v1/revocations`.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use cloakroom_grant::{Claims, KeySet, SecretKey, Verifier, GrantError};
//!
//! let key = SecretKey::generate().unwrap();
//! let now = SystemTime::now();
//! let claims = Claims::new("grt_1", "usr_1", "ada", "files", now, Duration::from_secs(60))
//!     .with_action("download")
//!     .with_resource("/reports/q3.pdf");
//! let token = key.sign(&claims).unwrap();
//!
//! let verifier = Verifier::new("files", KeySet::from_keys([key.public_key()]));
//! let grant = verifier.redeem(&token).unwrap();
//! assert_eq!(grant.claims.resource.as_deref(), Some("/reports/q3.pdf"));
//! assert_eq!(verifier.redeem(&token).unwrap_err(), GrantError::Replayed);
//! ```

mod claims;
mod keys;
mod token;
mod verifier;

#[cfg(feature = "client")]
pub mod client;

pub use claims::{Claims, Grant, TOKEN_TYPE};
pub use keys::{KeySet, PublicKey, SecretKey, SymmetricKey};
pub use token::{GrantError, MAX_TOKEN_LEN, decode, implicit_assertion};
pub use verifier::{Revocation, RevokedSubject, Verifier};

/// Formats an instant as RFC 3339 UTC with millisecond precision, as every Cloakroom time on the
/// wire.
pub fn format_time(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an RFC 3339 UTC time (`…Z`) as [`format_time`] writes it.
pub fn parse_time(s: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339(s).ok()
}
