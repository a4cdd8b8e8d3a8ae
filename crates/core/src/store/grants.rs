//! Grants: the signing keys (sealed), single use, and revocations.
use async_trait::async_trait;

use super::StoreResult;
#[cfg(doc)]
use crate::error::StoreError;
use crate::grant::{GrantRevocation, GrantUse, Redemption, SigningKeyRecord};
use crate::time::Timestamp;

/// The grant state a store keeps. See [`super`] for the rules every method follows.
#[async_trait]
pub trait GrantStore: Send + Sync {
    /// Adds a grant-signing key. With `retire_others_at`, every other key that is not retired yet
    /// gets that retirement time in the same atomic step (a rotation). [`StoreError::Conflict`]
    /// when a key with this id exists.
    async fn add_signing_key(
        &self,
        key: &SigningKeyRecord,
        retire_others_at: Option<Timestamp>,
    ) -> StoreResult<()>;

    /// Every signing key, oldest first.
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;

    /// Uses up a grant, atomically: [`Redemption::AlreadyUsed`] when it was used before (by any
    /// node: of two concurrent redemptions exactly one wins), [`Redemption::Revoked`] when it, or
    /// its user at or after its issue time, was revoked; otherwise records the use until the
    /// grant expires and reports it as a grant revocation (so that offline verifiers drop it).
    async fn redeem_grant(&self, grant: &GrantUse, now: Timestamp) -> StoreResult<Redemption>;

    /// Records a revocation of grants, kept until its `until`.
    async fn revoke_grants(&self, revocation: &GrantRevocation) -> StoreResult<()>;

    /// Revocations made at or after `since` that still matter at `now` (`until > now`), oldest
    /// first. Every node sharing the store sees every revocation.
    async fn grant_revocations(
        &self,
        since: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Vec<GrantRevocation>>;
}
