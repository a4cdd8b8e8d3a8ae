//! Grants as the store keeps them: signing keys (sealed), single use, and revocations. The token
//! format and its verification live in `cloakroom-grant`; [`crate::grants`] issues and redeems.

use std::time::Duration;

use crate::id::UserId;
use crate::time::Timestamp;

/// The longest a grant may live (the API's `ttl_seconds` is at most this). Revocations and
/// single-use records are kept this long, and a retired key is published this long (plus
/// [`KEY_PUBLISH_MARGIN`]) after it last signed.
pub const MAX_GRANT_TTL: Duration = Duration::from_secs(600);

/// Extra time a retired key stays published, for nodes that learn of a rotation late.
pub const KEY_PUBLISH_MARGIN: Duration = Duration::from_secs(60);

/// A signing key as stored: public half in the clear, secret half sealed with the configured
/// key-encryption key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// PASERK id, `k4.pid.…`.
    pub id: String,
    /// PASERK, `k4.public.…`.
    pub public: String,
    /// The `k4.secret.…` PASERK sealed as a v4.local token (see `cloakroom_grant::SymmetricKey`).
    pub sealed: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it starts signing: after a rotation, a new key is published a little before it signs,
    /// so verifiers that refresh their keys on the `keys` event already know it.
    pub active_from: Timestamp,
    /// When it stopped signing (a later rotation); it still verifies until its last grant expired.
    pub retired_at: Option<Timestamp>,
}

impl SigningKeyRecord {
    /// Whether it signs at `now`.
    pub fn signs_at(&self, now: Timestamp) -> bool {
        self.active_from <= now && self.retired_at.is_none_or(|r| now < r)
    }

    /// Whether it must still be published at `now`: grants it signed may still be valid.
    pub fn published_at(&self, now: Timestamp) -> bool {
        self.retired_at.is_none_or(|r| now < r.plus(MAX_GRANT_TTL + KEY_PUBLISH_MARGIN))
    }
}

/// A grant presented for redemption.
#[derive(Clone, Debug)]
pub struct GrantUse {
    /// `grt_…`
    pub id: String,
    /// Its user.
    pub user: UserId,
    /// Its `iat`.
    pub issued_at: Timestamp,
    /// Its `exp`: the single-use record is kept until then.
    pub expires_at: Timestamp,
}

/// The outcome of [`crate::store::GrantStore::redeem_grant`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redemption {
    /// First use: recorded.
    Redeemed,
    /// Used before.
    AlreadyUsed,
    /// Revoked (the grant, or its user after it was issued).
    Revoked,
}

/// What a revocation covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Revoked {
    /// One grant by id.
    Grant(String),
    /// Every grant of the user issued at or before `at`.
    User(UserId),
}

/// A revocation of grants, kept until `until` and sent to verifiers over `/v1/revocations`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GrantRevocation {
    /// What.
    pub subject: Revoked,
    /// When.
    pub at: Timestamp,
    /// When it can be forgotten: every grant it concerns has expired by then.
    pub until: Timestamp,
}

impl GrantRevocation {
    /// Revokes every grant `user` holds at `now`.
    pub fn user(user: &UserId, now: Timestamp) -> Self {
        Self { subject: Revoked::User(user.clone()), at: now, until: now.plus(MAX_GRANT_TTL) }
    }

    /// Revokes one grant (used up, or revoked by hand) until it expires.
    pub fn grant(id: &str, now: Timestamp, expires_at: Timestamp) -> Self {
        Self { subject: Revoked::Grant(id.to_owned()), at: now, until: expires_at.max(now) }
    }

    /// As `cloakroom_grant` sends it.
    pub fn to_wire(&self) -> cloakroom_grant::Revocation {
        cloakroom_grant::Revocation {
            subject: match &self.subject {
                Revoked::Grant(id) => cloakroom_grant::RevokedSubject::Grant(id.clone()),
                Revoked::User(u) => cloakroom_grant::RevokedSubject::User(u.to_string()),
            },
            at: self.at.to_string(),
            until: self.until.to_string(),
        }
    }
}
