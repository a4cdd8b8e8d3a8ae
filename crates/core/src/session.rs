//! Session records and the expiry policy.

use std::time::Duration;

use serde::Serialize;

use crate::id::{SessionId, UserId};
use crate::time::Timestamp;
use crate::token::{CsrfToken, TokenHash};
use crate::user::User;

/// The longest any session may live from its creation (the configuration refuses a longer
/// absolute timeout): a store may forget anything created before `now - MAX_LIFETIME`.
pub const MAX_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// How long sessions live, enforced by the server on every check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// A session unused for this long ends (ASVS L2: 30 minutes).
    pub idle: Duration,
    /// A session ends this long after login, however busy (ASVS L2: 12 hours).
    pub absolute: Duration,
    /// Last-seen (and with it the idle deadline) is written at most this often per session, so a
    /// busy session does not write on every request. The idle deadline is therefore kept with up to
    /// this much slack on the early side: a session may end up to a minute before `idle` has
    /// passed since its last use, never after.
    pub touch_interval: Duration,
}

impl Default for ExpiryPolicy {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 60 * 60),
            touch_interval: Duration::from_secs(60),
        }
    }
}

impl ExpiryPolicy {
    /// The idle deadline for a session last used at `now` that ends for good at `expires_at`.
    pub fn idle_deadline(&self, now: Timestamp, expires_at: Timestamp) -> Timestamp {
        now.plus(self.idle).min(expires_at)
    }

    /// Whether a session last written at `last_seen` should be touched at `now`.
    pub fn needs_touch(&self, last_seen: Timestamp, now: Timestamp) -> bool {
        now.since(last_seen) >= self.touch_interval
    }
}

/// A session as stores return it.
#[derive(Clone, Debug)]
pub struct Session {
    /// Public id.
    pub id: SessionId,
    /// Owner.
    pub user_id: UserId,
    /// The synchronizer token for cookie-authenticated state changes.
    pub csrf: CsrfToken,
    /// Login time.
    pub created_at: Timestamp,
    /// Last time the session was written as used (at most `touch_interval` stale).
    pub last_seen_at: Timestamp,
    /// When the current token was issued (login or the last rotation).
    pub token_issued_at: Timestamp,
    /// End of the session unless used again before.
    pub idle_expires_at: Timestamp,
    /// End of the session however used.
    pub expires_at: Timestamp,
    /// Client IP at login.
    pub ip: Option<String>,
    /// Client user agent at login.
    pub user_agent: Option<String>,
    /// For a session traded for a grant: the one service it is valid for. `None` for a login
    /// session, which is valid for Cloakroom itself and every app behind it.
    pub audience: Option<String>,
}

impl Session {
    /// Whether the session is alive at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.idle_expires_at && now < self.expires_at
    }

    /// Whether the session counts where sessions scoped to `audience` are also accepted (`None`:
    /// only login sessions). A login session counts everywhere; a scoped one only for its own
    /// audience.
    pub fn valid_for(&self, audience: Option<&str>) -> bool {
        self.audience.is_none() || self.audience.as_deref() == audience
    }
}

/// A live session with its (current) user.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// The session.
    pub session: Session,
    /// Its user, as of the lookup: roles and the disabled flag are never older than the session.
    pub user: User,
}

#[cfg(any(test, feature = "testing"))]
impl Authenticated {
    /// A live session of `user` (named alice, no roles, made at `now`), for tests and benchmarks.
    pub fn fixture(user: &UserId, now: Timestamp) -> Self {
        Authenticated {
            session: Session {
                id: SessionId::generate().expect("the OS random generator"),
                user_id: user.clone(),
                csrf: CsrfToken::generate().expect("the OS random generator"),
                created_at: now,
                last_seen_at: now,
                token_issued_at: now,
                idle_expires_at: now.plus(Duration::from_secs(1800)),
                expires_at: now.plus(Duration::from_secs(43200)),
                ip: Some("192.0.2.1".into()),
                user_agent: Some("curl/8".into()),
                audience: None,
            },
            user: User {
                id: user.clone(),
                username: crate::user::Username::from_stored("alice".into()),
                roles: vec![],
                disabled: false,
                has_password: true,
                created_at: now,
                updated_at: now,
                privileges_changed_at: Timestamp::from_millis(0),
            },
        }
    }
}

/// A session to insert.
#[derive(Clone, Debug)]
pub struct NewSession {
    /// Fresh public id.
    pub id: SessionId,
    /// Hash of the fresh token.
    pub token_hash: TokenHash,
    /// Fresh CSRF token.
    pub csrf: CsrfToken,
    /// Owner.
    pub user_id: UserId,
    /// Login time.
    pub created_at: Timestamp,
    /// First idle deadline.
    pub idle_expires_at: Timestamp,
    /// Absolute deadline.
    pub expires_at: Timestamp,
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// The one service it is valid for, for a session traded for a grant.
    pub audience: Option<String>,
    /// Initial session data (a JSON object).
    pub data: serde_json::Value,
}

/// A session's own JSON data with its version, which the API shows as an `ETag`.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionData {
    /// A JSON object.
    pub value: serde_json::Value,
    /// Starts at 1; every successful write adds 1.
    pub version: u64,
}

/// The outcome of a conditional data write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataWrite {
    /// Written; the new version.
    Stored(u64),
    /// `if_version` did not match; nothing written. The current version.
    VersionMismatch(u64),
    /// The session no longer exists (revoked or expired); nothing written or recreated.
    Gone,
}

/// The session as the API shows it (RFC 3339 UTC times).
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = SessionJson))]
pub struct SessionView<'a> {
    /// `ses_…`
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: &'a SessionId,
    /// The owner.
    pub user: UserView<'a>,
    /// Login time.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub created_at: Timestamp,
    /// Last recorded use.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub last_seen_at: Timestamp,
    /// End unless used again.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub idle_expires_at: Timestamp,
    /// End however used.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub expires_at: Timestamp,
    /// Client IP at login.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub ip: Option<&'a str>,
    /// Client user agent at login.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub user_agent: Option<&'a str>,
    /// For a session traded for a grant: the one service it is valid for.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, required = false))]
    pub audience: Option<&'a str>,
    /// In lists: whether this is the caller's own session.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(required = false))]
    pub current: Option<bool>,
}

/// A session's user.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = SessionUser))]
pub struct UserView<'a> {
    /// `usr_…`
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: &'a UserId,
    /// The username.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub username: &'a crate::user::Username,
    /// The roles.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub roles: &'a [crate::user::Role],
}

impl Authenticated {
    /// The API view; `current` is set in lists.
    pub fn view(&self, current: Option<bool>) -> SessionView<'_> {
        let s = &self.session;
        SessionView {
            id: &s.id,
            user: UserView {
                id: &self.user.id,
                username: &self.user.username,
                roles: &self.user.roles,
            },
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            idle_expires_at: s.idle_expires_at,
            expires_at: s.expires_at,
            ip: s.ip.as_deref(),
            user_agent: s.user_agent.as_deref(),
            audience: s.audience.as_deref(),
            current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_deadline_never_passes_the_absolute_one() {
        let p = ExpiryPolicy::default();
        let now = Timestamp::from_millis(1_000_000);
        assert_eq!(
            p.idle_deadline(now, now.plus(Duration::from_secs(60))),
            now.plus(Duration::from_secs(60))
        );
        assert_eq!(p.idle_deadline(now, now.plus(p.absolute)), now.plus(p.idle));
    }

    #[test]
    fn touches_at_most_once_per_interval() {
        let p = ExpiryPolicy::default();
        let t = Timestamp::from_millis(0);
        assert!(!p.needs_touch(t, t.plus(Duration::from_secs(59))));
        assert!(p.needs_touch(t, t.plus(Duration::from_secs(60))));
    }
}
