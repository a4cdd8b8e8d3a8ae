//! Accounts: usernames, roles and the user record.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::id::UserId;
use crate::password::PasswordHash;
use crate::time::Timestamp;

/// Why a username or role was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Empty or longer than 64 characters.
    #[error("must be 1 to 64 characters long")]
    Length,
    /// A character outside the allowed set.
    #[error("may contain only letters a-z, digits and {0}")]
    Characters(&'static str),
    /// More roles than a user may hold ([`MAX_ROLES`]).
    #[error("a user may hold at most {MAX_ROLES} roles, not {0}")]
    TooMany(usize),
}

/// Most roles one user may hold. Every check carries the user's roles (the cache keeps them with
/// each session, the forward-auth answer sends them in one header), so they are bounded: 32
/// roles of at most 64 bytes stay well inside what a session's compact form and a proxy's header
/// limits hold.
pub const MAX_ROLES: usize = 32;

/// A username: 1 to 64 characters from `a-z 0-9 . _ - @ +`, stored lowercased so that `Alice` and
/// `alice` are one account. Emails fit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    /// Validates and normalizes (lowercases) untrusted text.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let lower = text.trim().to_ascii_lowercase();
        if lower.is_empty() || lower.len() > 64 {
            return Err(NameError::Length);
        }
        if !lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_@+".contains(&b))
        {
            return Err(NameError::Characters(". _ - @ +"));
        }
        Ok(Self(lower))
    }

    /// Wraps a value read back from a store.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}
impl Serialize for Username {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A role name: 1 to 64 characters from `a-z 0-9 _ - . :`. The role `admin` may use the service
/// API with its session.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Role(String);

impl Role {
    /// The role that grants the service API to a session.
    pub const ADMIN: &'static str = "admin";

    /// Validates untrusted text (lowercased).
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let lower = text.trim().to_ascii_lowercase();
        if lower.is_empty() || lower.len() > 64 {
            return Err(NameError::Length);
        }
        if !lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.:".contains(&b))
        {
            return Err(NameError::Characters("_ - . :"));
        }
        Ok(Self(lower))
    }

    /// Wraps a value read back from a store.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}
impl Serialize for Role {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A user as the rest of the system sees it: never with a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = UserJson))]
pub struct User {
    /// Stable id, `usr_…`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: UserId,
    /// Unique, lowercased.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub username: Username,
    /// Sorted, without duplicates.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub roles: Vec<Role>,
    /// A disabled user cannot log in and has no sessions.
    pub disabled: bool,
    /// Whether a password is set (users created for app-managed login may have none).
    pub has_password: bool,
    /// When the account was created.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub created_at: Timestamp,
    /// When the account last changed.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub updated_at: Timestamp,
    /// When the user's roles last changed: a cookie session whose token was issued before gets a
    /// new token on its next request.
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub privileges_changed_at: Timestamp,
}

impl User {
    /// Whether the user holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.as_str() == role)
    }
}

/// A user with the password hash, for login only.
#[derive(Clone, Debug)]
pub struct UserRecord {
    /// The public part.
    pub user: User,
    /// The Argon2id PHC string, when a password is set.
    pub password_hash: Option<PasswordHash>,
}

/// A user to create.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// Fresh id.
    pub id: UserId,
    /// Unique name.
    pub username: Username,
    /// Initial roles.
    pub roles: Vec<Role>,
    /// Initial password hash, if any.
    pub password_hash: Option<PasswordHash>,
    /// Creation time.
    pub created_at: Timestamp,
}

impl NewUser {
    /// The user as a store returns it right after creating it: enabled, never changed.
    pub fn created(&self) -> User {
        User {
            id: self.id.clone(),
            username: self.username.clone(),
            roles: self.roles.clone(),
            disabled: false,
            has_password: self.password_hash.is_some(),
            created_at: self.created_at,
            updated_at: self.created_at,
            privileges_changed_at: Timestamp::from_millis(0),
        }
    }
}

/// A change to a user; `None` fields stay as they are.
#[derive(Clone, Debug, Default)]
pub struct UserChange {
    /// New password hash.
    pub password_hash: Option<PasswordHash>,
    /// Replacement role set.
    pub roles: Option<Vec<Role>>,
    /// New disabled flag.
    pub disabled: Option<bool>,
}

impl UserChange {
    /// Whether applying this change must end the user's sessions: a new password or disabling.
    pub fn revokes_sessions(&self) -> bool {
        self.password_hash.is_some() || self.disabled == Some(true)
    }
}

/// Sorts and deduplicates roles, and refuses more than [`MAX_ROLES`] distinct ones.
pub fn normalize_roles(mut roles: Vec<Role>) -> Result<Vec<Role>, NameError> {
    roles.sort();
    roles.dedup();
    if roles.len() > MAX_ROLES {
        return Err(NameError::TooMany(roles.len()));
    }
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalized_and_validated() {
        assert_eq!(Username::parse(" Alice@Example.com ").unwrap().as_str(), "alice@example.com");
        assert_eq!(Username::parse(""), Err(NameError::Length));
        assert_eq!(Username::parse(&"a".repeat(65)), Err(NameError::Length));
        assert!(Username::parse("bob smith").is_err());
        assert!(Username::parse("bøb").is_err());
        assert!(Username::parse("a/b").is_err());
    }

    #[test]
    fn roles_are_validated_and_normalized() {
        assert_eq!(Role::parse("Admin").unwrap().as_str(), "admin");
        assert!(Role::parse("billing:read").is_ok());
        assert!(Role::parse("a,b").is_err()); // commas would break X-Cloakroom-Roles
        let roles = normalize_roles(vec![
            Role::parse("b").unwrap(),
            Role::parse("a").unwrap(),
            Role::parse("b").unwrap(),
        ])
        .unwrap();
        assert_eq!(roles.iter().map(Role::as_str).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn roles_are_bounded_in_count_and_length() {
        let many = |n: usize| (0..n).map(|i| Role::parse(&format!("r{i}")).unwrap()).collect();
        assert_eq!(normalize_roles(many(MAX_ROLES)).unwrap().len(), MAX_ROLES);
        assert_eq!(normalize_roles(many(MAX_ROLES + 1)), Err(NameError::TooMany(MAX_ROLES + 1)));
        // Duplicates count once.
        let mut twice: Vec<Role> = many(MAX_ROLES);
        twice.extend(many(MAX_ROLES));
        assert_eq!(normalize_roles(twice).unwrap().len(), MAX_ROLES);
        assert!(Role::parse(&"r".repeat(64)).is_ok());
        assert_eq!(Role::parse(&"r".repeat(65)), Err(NameError::Length));
    }
}
