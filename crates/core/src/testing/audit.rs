//! [`AuditStore`]'s properties.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use super::t0;
use crate::audit::{AuditEvent, AuditFilter, AuditKind};
use crate::id::SessionId;
use crate::store::prelude::*;
use crate::user::Username;

/// Audit events come back newest first, filtered by user, with every field.
pub async fn audit_events(store: &dyn Store) {
    let alice = Username::parse("alice").unwrap();
    let bob = Username::parse("bob").unwrap();
    let sid = SessionId::generate().unwrap();
    for (i, (kind, who)) in [
        (AuditKind::LoginFailed, &alice),
        (AuditKind::LoginSucceeded, &alice),
        (AuditKind::LoginSucceeded, &bob),
        (AuditKind::SessionRevoked, &alice),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = AuditEvent::new(kind, "self")
            .user(None, who)
            .session(&sid)
            .ip(Some("192.0.2.7".into()));
        e.at = t0().plus(Duration::from_secs(i as u64));
        if kind == AuditKind::SessionRevoked {
            e = e.detail("logout");
        }
        store.append_audit(&e).await.unwrap();
    }
    let events =
        store.list_audit(&AuditFilter { username: Some(alice.clone()), limit: 0 }).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [AuditKind::SessionRevoked, AuditKind::LoginSucceeded, AuditKind::LoginFailed]
    );
    assert_eq!(events[0].detail.as_deref(), Some("logout"));
    assert_eq!(events[0].session_id.as_ref(), Some(&sid));
    assert_eq!(events[0].ip.as_deref(), Some("192.0.2.7"));
    assert_eq!(events[0].at, t0().plus(Duration::from_secs(3)));
    assert_eq!(store.list_audit(&AuditFilter { username: None, limit: 2 }).await.unwrap().len(), 2);
}
