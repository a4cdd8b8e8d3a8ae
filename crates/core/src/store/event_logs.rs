//! Sliding-window event logs: the login throttle's and the per-user rate limits' windows,
//! shared by every node on the store.
use async_trait::async_trait;

use super::StoreResult;
use crate::time::Timestamp;

/// An event recorded by [`EventLogStore::reserve_event`], opaque to the caller: what
/// [`EventLogStore::release_event`] removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventId(pub String);

/// What [`EventLogStore::reserve_event`] answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// Recorded: the event counts until it leaves the window or is released.
    Reserved(EventId),
    /// The log is full: nothing was recorded. Another event fits once the event at this time has
    /// left the window.
    Full(Timestamp),
}

/// The sliding-window event logs a store keeps. See [`super`] for the rules every method follows.
#[async_trait]
pub trait EventLogStore: Send + Sync {
    /// Reserves a place for an event at `now` in the sliding-window log `key`, atomically: events
    /// older than `window` are forgotten first; then, when `enforce` and the log already holds
    /// `max` events, nothing is recorded and the answer is [`Reservation::Full`] with the time of
    /// the event that must leave the window before another fits; otherwise the event is recorded
    /// (the log keeps its newest `max`) and [`Reservation::Reserved`] names it for
    /// [`EventLogStore::release_event`]. Check and record are one step: of any number of callers
    /// on any number of nodes racing on one log, at most `max` are admitted within a window (the
    /// login throttle reserves an attempt *before* verifying a password, so concurrent guesses
    /// cannot all pass a check that none has recorded yet). Without `enforce` the event is always
    /// recorded. Work per call is bounded by `max`, whatever was piled into the log before.
    async fn reserve_event(
        &self,
        key: &str,
        now: Timestamp,
        window: std::time::Duration,
        max: u32,
        enforce: bool,
    ) -> StoreResult<Reservation>;

    /// Removes a reserved event from the log `key` (a reservation that turned out not to count,
    /// such as a login that succeeded). Idempotent; an unknown id is no error.
    async fn release_event(&self, key: &str, id: &EventId) -> StoreResult<()>;

    /// The times of the events of log `key` within `window` before `now`, oldest first, without
    /// recording anything.
    async fn event_log(
        &self,
        key: &str,
        now: Timestamp,
        window: std::time::Duration,
    ) -> StoreResult<Vec<Timestamp>>;

    /// Forgets the log `key`.
    async fn forget_events(&self, key: &str) -> StoreResult<()>;
}
