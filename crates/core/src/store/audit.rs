//! The audit log.
use async_trait::async_trait;

use super::StoreResult;
use crate::audit::{AuditEvent, AuditFilter};

/// The audit log a store keeps. See [`super`] for the rules every method follows.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends an audit event, under a fresh identity ([`crate::id::AuditId`]) that copies to
    /// other stores keep ([`crate::export::Audit::id`]).
    async fn append_audit(&self, event: &AuditEvent) -> StoreResult<()>;

    /// Audit events matching `filter`, newest first.
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>>;
}
