//! Revocations acknowledged only once a replica has them (issue 12, section 5).
//!
//! A change that the primary acknowledged but had not yet sent to a replica is lost when that
//! replica is promoted: a revoked session would be accepted again. So after a revocation, a
//! password change, a disable, a role change, a rotation, a grant revocation and a grant
//! redemption, the store sends `WAIT 1 <timeout>` on the connection that made the change (`WAIT`
//! counts that client's writes; in a Cluster, to the primary of the slot the change wrote) and
//! reports success only when a replica acknowledged it. When none did within
//! [`REPLICA_ACK_TIMEOUT`], the call fails with [`StoreError::Unavailable`] (503
//! `store_unavailable`): the change may or may not survive a failover, and the caller is told
//! so instead of being told it is done. Retrying is safe: the retry's `WAIT` covers the earlier
//! write too.
//!
//! Whether a primary has replicas at all is asked with `ROLE` and remembered for
//! [`REFRESH`] (per slot in a Cluster): a primary without any replica has nothing to wait for, and
//! a lone Redis pays nothing. `ROLE` lists only the replicas connected *now*, so a replica cut off
//! from its primary would make it stop waiting, silently down to primary-only durability. A store
//! URL with `min_replicas=N` closes that: the store then waits for N replicas whatever `ROLE`
//! says, and fails closed while fewer are there to acknowledge.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cloakroom_core::StoreError;
use cloakroom_core::store::StoreResult;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};

use crate::{Conn, RedisStore};

/// How long a change waits for a replica's acknowledgement before it is reported as failed.
pub const REPLICA_ACK_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a primary's replica count is trusted.
const REFRESH: Duration = Duration::from_secs(2);

/// Replica counts as last seen, by slot (`None`: the one primary), or the count the URL fixed.
#[derive(Default)]
pub(crate) struct Replicas {
    known: std::sync::Mutex<HashMap<Option<Slot>, (Instant, usize)>>,
    /// `min_replicas` from the URL; 0: one when `ROLE` shows any.
    expected: usize,
}

impl Replicas {
    /// Waiting for `expected` replicas (0: as `ROLE` shows, at most one).
    pub(crate) fn expecting(expected: usize) -> Self {
        Self { known: std::sync::Mutex::default(), expected }
    }
}

/// Which connection a change went out on, taken before it (see [`RedisStore::replicated`]).
#[derive(Clone, Copy)]
pub(crate) struct Ticket(u64);

/// No replica acknowledged a change in time.
#[derive(Debug)]
struct NotReplicated(&'static str);

impl std::fmt::Display for NotReplicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no replica acknowledged the change: {}", self.0)
    }
}

impl std::error::Error for NotReplicated {}

impl RedisStore {
    /// Taken before a change whose acknowledgement must wait for a replica.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(match &self.conn {
            Conn::Sentinel(f) => f.generation(),
            _ => 0,
        })
    }

    /// Returns once a replica (`min_replicas` of them, when the URL says) has every write made so
    /// far on the connection that wrote `key` (at once when its primary has no replica and the URL
    /// asks for none); [`StoreError::Unavailable`] when not enough have it
    /// within [`REPLICA_ACK_TIMEOUT`], or when the connection was replaced since `ticket` (the
    /// change went out on another client, whose writes this `WAIT` cannot see).
    pub(crate) async fn replicated(&self, ticket: Ticket, key: &str) -> StoreResult<()> {
        let wanted = match self.replicas.expected {
            0 => {
                let slot = matches!(self.conn, Conn::Cluster(_)).then(|| Slot::for_key(key));
                if self.replica_count(slot, key).await? == 0 {
                    return Ok(());
                }
                1
            }
            n => n,
        };
        let timeout = u64::try_from(REPLICA_ACK_TIMEOUT.as_millis()).unwrap_or(500);
        let acked: i64 =
            self.on_primary_of(key, redis::cmd("WAIT").arg(wanted).arg(timeout)).await?;
        if ticket.0 != self.ticket().0 {
            return Err(StoreError::unavailable(NotReplicated("the connection was replaced")));
        }
        if usize::try_from(acked).unwrap_or(0) < wanted {
            return Err(StoreError::unavailable(NotReplicated("timed out")));
        }
        Ok(())
    }

    async fn replica_count(&self, slot: Option<Slot>, key: &str) -> StoreResult<usize> {
        let cached = self.replicas.known.lock().ok().and_then(|known| {
            known.get(&slot).filter(|(at, _)| at.elapsed() < REFRESH).map(|(_, n)| *n)
        });
        if let Some(n) = cached {
            return Ok(n);
        }
        let role: redis::Role = self.on_primary_of(key, &redis::cmd("ROLE")).await?;
        let n = match role {
            redis::Role::Primary { replicas, .. } => replicas.len(),
            _ => 0,
        };
        if let Ok(mut known) = self.replicas.known.lock() {
            known.insert(slot, (Instant::now(), n));
        }
        Ok(n)
    }

    /// Runs `cmd` on the primary that holds `key` (the only one outside a Cluster).
    pub(crate) async fn on_primary_of<T: redis::FromRedisValue>(
        &self,
        key: &str,
        cmd: &redis::Cmd,
    ) -> StoreResult<T> {
        match &self.conn {
            Conn::Cluster(c) => {
                let route = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let value =
                    c.clone().route_command(cmd.clone(), routing).await.map_err(crate::err)?;
                redis::from_redis_value(value).map_err(|e| crate::err(e.into()))
            }
            _ => cmd.query_async(&mut self.conn()).await.map_err(crate::err),
        }
    }
}
