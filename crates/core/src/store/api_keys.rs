//! Service API keys, kept by name and the hash of the key.
use async_trait::async_trait;

use super::StoreResult;
#[cfg(doc)]
use crate::error::StoreError;
use crate::time::Timestamp;
use crate::token::TokenHash;

/// A service API key as stored: the name and when it was made; the key itself only as a hash.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ApiKey {
    /// Unique name.
    pub name: String,
    /// Creation time.
    pub created_at: Timestamp,
}

/// The API keys a store keeps. See [`super`] for the rules every method follows.
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new API key by name and hash. [`StoreError::Conflict`] when the name exists.
    async fn create_api_key(
        &self,
        name: &str,
        hash: &TokenHash,
        now: Timestamp,
    ) -> StoreResult<ApiKey>;

    /// The API key whose secret hashes to `hash`, if any.
    async fn api_key_by_hash(&self, hash: &TokenHash) -> StoreResult<Option<ApiKey>>;

    /// Every API key, by name.
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>>;

    /// Deletes an API key by name; whether it existed.
    async fn revoke_api_key(&self, name: &str) -> StoreResult<bool>;
}
