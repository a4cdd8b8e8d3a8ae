//! What a grant says: its claims as signed, and the verified [`Grant`] a caller gets back.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The `typ` claim of every grant. A PASETO with any other type is refused, so a token minted
/// for some other purpose with the same key can never pass as a grant.
pub const TOKEN_TYPE: &str = "cloakroom-grant";

/// The claims of a grant, as they are signed (times as RFC 3339 UTC strings, the PASETO way).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Token type: always [`TOKEN_TYPE`].
    pub typ: String,
    /// The grant's id (`grt_…`): what single use and revocation refer to.
    pub jti: String,
    /// The user's id (`usr_…`).
    pub sub: String,
    /// The user's name at issue time, for display and logs.
    pub username: String,
    /// The one service this grant is for.
    pub aud: String,
    /// What the user may do there, if the issuer said (`download`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// On what, if the issuer said (`/reports/q3.pdf`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Issue time.
    pub iat: String,
    /// Not valid before.
    pub nbf: String,
    /// Not valid from this time on.
    pub exp: String,
}

impl Claims {
    /// Claims for a grant issued at `now`, valid for `ttl`.
    pub fn new(
        id: &str,
        user_id: &str,
        username: &str,
        audience: &str,
        now: SystemTime,
        ttl: Duration,
    ) -> Self {
        let now_s = crate::format_time(now);
        Self {
            typ: TOKEN_TYPE.to_owned(),
            jti: id.to_owned(),
            sub: user_id.to_owned(),
            username: username.to_owned(),
            aud: audience.to_owned(),
            action: None,
            resource: None,
            iat: now_s.clone(),
            nbf: now_s,
            exp: crate::format_time(now + ttl),
        }
    }

    /// With an action.
    pub fn with_action(mut self, action: impl Into<String>) -> Self {
        self.action = Some(action.into());
        self
    }

    /// With a resource.
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }
}

/// A grant whose signature, type, audience and validity period were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The claims as signed.
    pub claims: Claims,
    /// `iat`, parsed.
    pub issued_at: SystemTime,
    /// `nbf`, parsed.
    pub not_before: SystemTime,
    /// `exp`, parsed.
    pub expires_at: SystemTime,
    /// The PASERK id of the key that signed it.
    pub key_id: String,
}
