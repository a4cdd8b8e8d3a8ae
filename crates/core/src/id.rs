//! Public identifiers: `ses_…` for sessions, `usr_…` for users, `grt_…` for grants, `aud_…` for
//! audit events. Random, safe to show and log, and useless for authenticating.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Serialize, Serializer};

use crate::token::{RandomError, random_bytes};

const ID_BYTES: usize = 16;
const ID_CHARS: usize = 22;

macro_rules! public_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Result<Self, RandomError> {
                let mut bytes = [0u8; ID_BYTES];
                random_bytes(&mut bytes)?;
                Ok(Self(format!("{}{}", $prefix, B64.encode(bytes))))
            }

            /// Parses untrusted text; `None` unless it has the exact shape of an id.
            pub fn parse(text: &str) -> Option<Self> {
                let body = text.strip_prefix($prefix)?;
                let well_formed = body.len() == ID_CHARS
                    && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                well_formed.then(|| Self(text.to_owned()))
            }

            /// Wraps a value read back from a store, which only ever holds ids it was given.
            pub fn from_stored(text: String) -> Self {
                Self(text)
            }

            /// The text form.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

public_id!(
    /// A session's public id, `ses_` and 22 base64url characters.
    SessionId,
    "ses_"
);
public_id!(
    /// A user's id, `usr_` and 22 base64url characters. Stable across renames of nothing: usernames
    /// never change, but ids keep stores free of user text in keys.
    UserId,
    "usr_"
);
public_id!(
    /// A grant's id (its `jti`), `grt_` and 22 base64url characters: what single use and
    /// revocation refer to.
    GrantId,
    "grt_"
);

public_id!(
    /// An audit event's identity, `aud_` and 22 base64url characters: given when the event is
    /// appended and kept by copies to other stores, so that a second copy adds no duplicate.
    AuditId,
    "aud_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_generated_and_refuses_others() {
        let id = SessionId::generate().unwrap();
        assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(UserId::parse(id.as_str()), None);
        assert_eq!(SessionId::parse("ses_short"), None);
        assert_eq!(SessionId::parse("ses_../../../../etc/passwd.."), None);
        assert_eq!(SessionId::parse(""), None);
    }
}
