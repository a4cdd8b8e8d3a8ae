//! [`ApiKeyStore`]'s properties.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::t0;
use crate::store::prelude::*;
use crate::token::{SecretKind, Token};

/// API keys: found by hash only, names unique, revocation final.
pub async fn api_keys(store: &dyn Store) {
    let key = Token::generate(SecretKind::ApiKey).unwrap();
    let created = store.create_api_key("billing", &key.hash(), t0()).await.unwrap();
    assert_eq!(created.name, "billing");
    let other = Token::generate(SecretKind::ApiKey).unwrap();
    assert!(matches!(
        store.create_api_key("billing", &other.hash(), t0()).await,
        Err(crate::StoreError::Conflict { .. })
    ));
    assert_eq!(store.api_key_by_hash(&key.hash()).await.unwrap().unwrap().name, "billing");
    assert!(store.api_key_by_hash(&other.hash()).await.unwrap().is_none());
    assert_eq!(store.list_api_keys().await.unwrap().len(), 1);
    assert!(store.revoke_api_key("billing").await.unwrap());
    assert!(!store.revoke_api_key("billing").await.unwrap());
    assert!(store.api_key_by_hash(&key.hash()).await.unwrap().is_none());
}
