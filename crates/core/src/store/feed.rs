//! The change feed: how a store tells every node's cache that sessions may be stale.
use async_trait::async_trait;

use super::StoreResult;
use crate::id::UserId;
use crate::time::Timestamp;

/// What a store's invalidation feed reports to node-local caches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusEvent {
    /// Cached sessions of `user` (of every user with `None`) may be stale: drop them.
    Invalidate {
        /// The user whose sessions changed; `None` for everyone.
        user: Option<UserId>,
        /// When the change was made, for the propagation-lag metric.
        at: Timestamp,
    },
    /// The feed is live from here on, but events before may have been missed: flush, then serve.
    Connected,
    /// The feed is down or lagging: serve nothing from caches until `Connected`.
    Disconnected,
}

/// A store's change feed. See [`super`] for the rules every method follows.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Starts this node's invalidation feed: every change that can make a cached session stale
    /// (a revocation, a user update, a rotation, a cap eviction), made by any node or process
    /// sharing the store, becomes a [`BusEvent::Invalidate`] for the user concerned. The first
    /// event is `Connected` once the feed is live. Whenever the store cannot vouch that no event
    /// was missed (connection lost, gap, lag), the feed sends `Disconnected`, then `Connected`
    /// when it is whole again. The receiver closes only when the store is gone.
    async fn subscribe(&self) -> StoreResult<tokio::sync::mpsc::Receiver<BusEvent>>;
}
