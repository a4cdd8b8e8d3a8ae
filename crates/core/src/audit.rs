//! Audit events: every authentication, logout, revocation and credential or role change, with who
//! did it and why. Never a token or a password: sessions appear by their public id only.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::active::ActiveSession;
use crate::id::{SessionId, UserId};
use crate::time::Timestamp;
use crate::user::Username;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditKind {
    /// A password login succeeded and a session was created.
    LoginSucceeded,
    /// A password login failed (unknown user, wrong password, disabled account).
    LoginFailed,
    /// A login attempt was refused by throttling before the password was checked.
    LoginThrottled,
    /// The session's owner logged out.
    Logout,
    /// A session was created through the service API.
    SessionCreated,
    /// One session was revoked.
    SessionRevoked,
    /// Several of a user's sessions were revoked at once.
    SessionsRevoked,
    /// A session's token was replaced (privilege change, password change).
    SessionRotated,
    /// A session was evicted by `max_sessions_per_user`.
    SessionEvicted,
    /// A user was created.
    UserCreated,
    /// A user's password was changed.
    PasswordChanged,
    /// A user's roles were changed.
    RolesChanged,
    /// A user was disabled.
    UserDisabled,
    /// A user was enabled.
    UserEnabled,
    /// An API key was created.
    ApiKeyCreated,
    /// An API key was revoked.
    ApiKeyRevoked,
    /// A grant was issued.
    GrantIssued,
    /// A grant was redeemed.
    GrantRedeemed,
    /// A grant was traded for a session scoped to its audience.
    GrantExchanged,
    /// The grant-signing key was rotated.
    SigningKeyRotated,
}

impl AuditKind {
    /// Every kind, for parsing.
    pub const ALL: &'static [AuditKind] = &[
        Self::LoginSucceeded,
        Self::LoginFailed,
        Self::LoginThrottled,
        Self::Logout,
        Self::SessionCreated,
        Self::SessionRevoked,
        Self::SessionsRevoked,
        Self::SessionRotated,
        Self::SessionEvicted,
        Self::UserCreated,
        Self::PasswordChanged,
        Self::RolesChanged,
        Self::UserDisabled,
        Self::UserEnabled,
        Self::ApiKeyCreated,
        Self::ApiKeyRevoked,
        Self::GrantIssued,
        Self::GrantRedeemed,
        Self::GrantExchanged,
        Self::SigningKeyRotated,
    ];

    /// The snake_case name stores keep.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoginSucceeded => "login_succeeded",
            Self::LoginFailed => "login_failed",
            Self::LoginThrottled => "login_throttled",
            Self::Logout => "logout",
            Self::SessionCreated => "session_created",
            Self::SessionRevoked => "session_revoked",
            Self::SessionsRevoked => "sessions_revoked",
            Self::SessionRotated => "session_rotated",
            Self::SessionEvicted => "session_evicted",
            Self::UserCreated => "user_created",
            Self::PasswordChanged => "password_changed",
            Self::RolesChanged => "roles_changed",
            Self::UserDisabled => "user_disabled",
            Self::UserEnabled => "user_enabled",
            Self::ApiKeyCreated => "api_key_created",
            Self::ApiKeyRevoked => "api_key_revoked",
            Self::GrantIssued => "grant_issued",
            Self::GrantRedeemed => "grant_redeemed",
            Self::GrantExchanged => "grant_exchanged",
            Self::SigningKeyRotated => "signing_key_rotated",
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s).ok_or(())
    }
}

/// One audit event.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEvent {
    /// When.
    pub at: Timestamp,
    /// What.
    pub kind: AuditKind,
    /// Who acted: `self`, `user:NAME`, `apikey:NAME`, `cli`, `system`.
    pub actor: String,
    /// The user concerned, by name (kept even for unknown names in failed logins).
    pub username: Option<Username>,
    /// The user concerned, by id, when the user exists.
    pub user_id: Option<UserId>,
    /// The session concerned, by public id.
    pub session_id: Option<SessionId>,
    /// The client address, when the event came over HTTP.
    pub ip: Option<String>,
    /// Why, or extra detail: a revocation reason, a count, the new roles.
    pub detail: Option<String>,
}

impl AuditEvent {
    /// An event of `kind` by `actor` now, with nothing else filled in.
    pub fn new(kind: AuditKind, actor: impl Into<String>) -> Self {
        Self {
            at: Timestamp::now(),
            kind,
            actor: actor.into(),
            username: None,
            user_id: None,
            session_id: None,
            ip: None,
            detail: None,
        }
    }

    /// Sets the user.
    pub fn user(mut self, id: Option<&UserId>, name: &Username) -> Self {
        self.user_id = id.cloned();
        self.username = Some(name.clone());
        self
    }

    /// Sets the user and the session from a checked session.
    pub fn of_session(mut self, session: &ActiveSession) -> Self {
        self.user_id = Some(session.user_id());
        self.username = Some(session.username_owned());
        self.session_id = Some(session.session_id());
        self
    }

    /// Sets the session.
    pub fn session(mut self, id: &SessionId) -> Self {
        self.session_id = Some(id.clone());
        self
    }

    /// Sets the client IP.
    pub fn ip(mut self, ip: Option<String>) -> Self {
        self.ip = ip;
        self
    }

    /// Sets the detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Which audit events to list.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only this user's.
    pub username: Option<Username>,
    /// At most this many, newest first (0 = [`AuditFilter::DEFAULT_LIMIT`]).
    pub limit: u32,
}

impl AuditFilter {
    /// How many events a filter without a limit returns.
    pub const DEFAULT_LIMIT: u32 = 100;

    /// The number of events to return: `limit`, or the default when it is 0.
    pub fn limit_or_default(&self) -> u32 {
        if self.limit == 0 { Self::DEFAULT_LIMIT } else { self.limit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in AuditKind::ALL {
            assert_eq!(k.as_str().parse::<AuditKind>(), Ok(*k));
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::json!(k.as_str()));
        }
    }
}
