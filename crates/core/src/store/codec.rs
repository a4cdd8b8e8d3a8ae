//! The encodings every backend shares, written once: a value one store writes reads the same in
//! another, and `store copy` moves it unchanged. Each decoder answers [`StoreError::Corrupt`]
//! for what it cannot read, never a guess.

use super::StoreResult;
use crate::audit::AuditKind;
use crate::error::StoreError;
use crate::export::RevocationKind;
use crate::grant::Revoked;
use crate::id::UserId;
use crate::user::Role;

fn corrupt(what: &'static str) -> StoreError {
    StoreError::Corrupt { what, source: None }
}

/// Roles as stored in a text column or a hash field: a JSON array of their names.
pub fn roles_to_json(roles: &[Role]) -> String {
    let names: Vec<&str> = roles.iter().map(Role::as_str).collect();
    serde_json::to_string(&names).unwrap_or_else(|_| "[]".to_owned())
}

/// Roles back from [`roles_to_json`]'s text.
pub fn roles_from_json(text: &str) -> StoreResult<Vec<Role>> {
    let names: Vec<String> = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt { what: "user roles", source: Some(e.into()) })?;
    Ok(roles_from_names(names))
}

/// Roles as a list of names, for a backend with an array type (PostgreSQL's `text[]`).
pub fn role_names(roles: &[Role]) -> Vec<String> {
    roles.iter().map(|r| r.as_str().to_owned()).collect()
}

/// Roles back from their stored names.
pub fn roles_from_names(names: Vec<String>) -> Vec<Role> {
    names.into_iter().map(Role::from_stored).collect()
}

/// The stored name of a revocation's kind: `grant` (the subject is a grant id) or `user` (every
/// grant of the user issued up to the revocation's time).
pub fn revocation_kind_name(kind: RevocationKind) -> &'static str {
    match kind {
        RevocationKind::Grant => "grant",
        RevocationKind::User => "user",
    }
}

/// A revocation's kind back from its stored name.
pub fn revocation_kind(name: &str) -> StoreResult<RevocationKind> {
    match name {
        "grant" => Ok(RevocationKind::Grant),
        "user" => Ok(RevocationKind::User),
        _ => Err(corrupt("grant revocation")),
    }
}

/// What a revocation covers, as its stored kind name and subject id.
pub fn revoked_parts(revoked: &Revoked) -> (&'static str, &str) {
    match revoked {
        Revoked::Grant(id) => (revocation_kind_name(RevocationKind::Grant), id),
        Revoked::User(user) => (revocation_kind_name(RevocationKind::User), user.as_str()),
    }
}

/// What a revocation covers, back from its stored kind name and subject id.
pub fn revoked(kind: &str, subject: String) -> StoreResult<Revoked> {
    Ok(match revocation_kind(kind)? {
        RevocationKind::Grant => Revoked::Grant(subject),
        RevocationKind::User => Revoked::User(UserId::from_stored(subject)),
    })
}

/// An audit event's kind back from its stored name ([`AuditKind::as_str`]).
pub fn audit_kind(name: &str) -> StoreResult<AuditKind> {
    name.parse::<AuditKind>().map_err(|()| corrupt("audit event kind"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn roles_round_trip_through_json_and_names() {
        let roles = vec![Role::parse("admin").unwrap(), Role::parse("staff.eu:read").unwrap()];
        assert_eq!(roles_to_json(&roles), r#"["admin","staff.eu:read"]"#);
        assert_eq!(roles_from_json(&roles_to_json(&roles)).unwrap(), roles);
        assert_eq!(roles_from_names(role_names(&roles)), roles);
        assert!(matches!(roles_from_json("{"), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn revocation_subjects_round_trip_and_unknown_kinds_are_corrupt() {
        for subject in
            [Revoked::Grant("g1".into()), Revoked::User(UserId::from_stored("u1".into()))]
        {
            let (kind, id) = revoked_parts(&subject);
            assert_eq!(revoked(kind, id.to_owned()).unwrap(), subject);
        }
        assert!(matches!(revoked("session", "x".into()), Err(StoreError::Corrupt { .. })));
        assert!(matches!(audit_kind("no_such_kind"), Err(StoreError::Corrupt { .. })));
        assert_eq!(audit_kind(AuditKind::Logout.as_str()).unwrap(), AuditKind::Logout);
    }
}
