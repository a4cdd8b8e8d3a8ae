//! Login throttling: failed attempts counted in sliding windows per account, per account and
//! client IP, and per client IP. Only failures count, so a user who logs in often never trips it.
//! The windows live in the store ([`Store::log_event`]), so the limits hold across every server
//! sharing it: with three nodes an attacker still gets 100 guesses an hour, not 300.
//!
//! The balance against lock-out: an attacker can exhaust an account's hourly budget (ASVS: at most
//! 100 failures per hour per account) from anywhere, but that account-wide limit is not applied to a
//! client IP from which the account logged in successfully in the last 30 days ("known" IPs), which
//! still have their own per-(account, IP) limit. So the owner keeps logging in from home or office
//! while an attack runs, and a new device waits at most until the window slides (under an hour).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cloakroom_core::{Store, StoreError, Timestamp};

/// One limit: at most `max` failures in any `window`.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    /// Failures allowed in the window.
    pub max: u32,
    /// The window.
    pub window: Duration,
}

/// The limits in force.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Per account, from unknown IPs (ASVS: 100 per hour).
    pub account: Limit,
    /// Per account, short window: slows a burst.
    pub account_burst: Limit,
    /// Per (account, IP).
    pub account_ip: Limit,
    /// Per IP, any account: credential stuffing.
    pub ip: Limit,
    /// How long a successful login makes an IP known for its account.
    pub known_for: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            account: Limit { max: 100, window: Duration::from_secs(3600) },
            account_burst: Limit { max: 20, window: Duration::from_secs(60) },
            account_ip: Limit { max: 10, window: Duration::from_secs(15 * 60) },
            ip: Limit { max: 50, window: Duration::from_secs(15 * 60) },
            known_for: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// What a throttle decision can fail with: the store could not answer (the login fails closed).
pub type ThrottleResult<T> = Result<T, StoreError>;

/// The throttle.
#[derive(Clone)]
pub struct Throttle {
    store: Arc<dyn Store>,
    limits: Limits,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Throttle {
    /// A throttle keeping its windows in `store`.
    pub fn new(store: Arc<dyn Store>, limits: Limits) -> Self {
        Self { store, limits }
    }

    /// The logs that count a failure for `account` from `ip`; with `known`, not the account-wide one.
    fn keys(&self, account: &str, ip: Option<IpAddr>, known: bool) -> Vec<(String, Limit)> {
        let mut keys = vec![(format!("login:ab:{account}"), self.limits.account_burst)];
        if !known {
            keys.push((format!("login:a:{account}"), self.limits.account));
        }
        if let Some(ip) = ip {
            keys.push((format!("login:ai:{account}|{ip}"), self.limits.account_ip));
            keys.push((format!("login:i:{ip}"), self.limits.ip));
        }
        keys
    }

    fn known_key(account: &str, ip: IpAddr) -> String {
        format!("login:known:{account}|{ip}")
    }

    /// Whether an attempt for `account` from `ip` may go ahead: `Ok(Err(retry_after))` when a
    /// limit is reached.
    pub async fn check(
        &self,
        account: &str,
        ip: Option<IpAddr>,
    ) -> ThrottleResult<Result<(), Duration>> {
        let now = Timestamp::now();
        let known = match ip {
            Some(ip) => !self
                .store
                .event_log(&Self::known_key(account, ip), now, self.limits.known_for)
                .await?
                .is_empty(),
            None => false,
        };
        let mut wait = Duration::ZERO;
        for (key, limit) in self.keys(account, ip, known) {
            let log = self.store.event_log(&key, now, limit.window).await?;
            let max = limit.max as usize;
            if log.len() >= max {
                // The failure that must age out first.
                let oldest = log[log.len() - max];
                wait = wait.max(limit.window.saturating_sub(now.since(oldest)));
            }
        }
        Ok(if wait.is_zero() { Ok(()) } else { Err(wait.max(Duration::from_secs(1))) })
    }

    /// Records a failed attempt. Failures from a known IP still count against the account (for
    /// the other IPs' sake).
    pub async fn failure(&self, account: &str, ip: Option<IpAddr>) -> ThrottleResult<()> {
        let now = Timestamp::now();
        for (key, limit) in self.keys(account, ip, false) {
            self.store.log_event(&key, now, limit.window, limit.max).await?;
        }
        Ok(())
    }

    /// Records a successful login: the IP becomes known for the account, and the account's burst
    /// and per-IP counters for it are cleared.
    pub async fn success(&self, account: &str, ip: Option<IpAddr>) -> ThrottleResult<()> {
        self.store.forget_events(&format!("login:ab:{account}")).await?;
        if let Some(ip) = ip {
            self.store.forget_events(&format!("login:ai:{account}|{ip}")).await?;
            self.store
                .log_event(
                    &Self::known_key(account, ip),
                    Timestamp::now(),
                    self.limits.known_for,
                    1,
                )
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloakroom_store_sqlite::SqliteStore;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    async fn throttle(limits: Limits) -> (Throttle, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("t.db").to_str().unwrap()).await.unwrap();
        (Throttle::new(Arc::new(store), limits), dir)
    }

    const LOOSE: Limit = Limit { max: 1000, window: Duration::from_secs(60) };

    #[tokio::test]
    async fn account_limit_is_100_failures_and_reports_retry_after() {
        let (t, _dir) = throttle(Limits {
            account_burst: LOOSE,
            account_ip: LOOSE,
            ip: LOOSE,
            ..Limits::default()
        })
        .await;
        for i in 0..100u32 {
            let from = ip(&format!("10.0.{}.{}", i / 200, i % 200));
            assert!(t.check("alice", from).await.unwrap().is_ok(), "attempt {i}");
            t.failure("alice", from).await.unwrap();
        }
        let wait = t.check("alice", ip("10.9.9.9")).await.unwrap().unwrap_err();
        assert!(wait > Duration::from_secs(3500) && wait <= Duration::from_secs(3600));
        assert!(
            t.check("bob", ip("10.9.9.9")).await.unwrap().is_ok(),
            "other accounts are unaffected"
        );
    }

    #[tokio::test]
    async fn the_limit_holds_across_nodes_sharing_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.db");
        let limits =
            Limits { account_burst: LOOSE, account_ip: LOOSE, ip: LOOSE, ..Limits::default() };
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
            nodes.push(Throttle::new(Arc::new(store), limits));
        }
        for i in 0..100usize {
            nodes[i % 3].failure("alice", ip("198.51.100.1")).await.unwrap();
        }
        for node in &nodes {
            assert!(
                node.check("alice", ip("203.0.113.9")).await.unwrap().is_err(),
                "100 in total, not per node"
            );
        }
    }

    #[tokio::test]
    async fn a_known_ip_is_not_locked_out_by_an_attack_elsewhere() {
        let (t, _dir) = throttle(Limits { account_burst: LOOSE, ..Limits::default() }).await;
        t.success("alice", ip("192.0.2.10")).await.unwrap();
        for i in 0..120u32 {
            t.failure("alice", ip(&format!("198.51.{}.{}", i / 100, i % 100))).await.unwrap();
        }
        assert!(
            t.check("alice", ip("203.0.113.5")).await.unwrap().is_err(),
            "unknown IPs are throttled"
        );
        assert!(
            t.check("alice", ip("192.0.2.10")).await.unwrap().is_ok(),
            "the owner's known IP is not"
        );
    }

    #[tokio::test]
    async fn per_ip_and_per_account_ip_limits() {
        let (t, _dir) = throttle(Limits::default()).await;
        for _ in 0..10 {
            t.failure("alice", ip("192.0.2.1")).await.unwrap();
        }
        assert!(t.check("alice", ip("192.0.2.1")).await.unwrap().is_err());
        assert!(t.check("alice", ip("192.0.2.2")).await.unwrap().is_ok());
        for i in 0..50 {
            t.failure(&format!("user{i}"), ip("192.0.2.3")).await.unwrap();
        }
        assert!(
            t.check("someone-else", ip("192.0.2.3")).await.unwrap().is_err(),
            "spraying one IP across accounts"
        );
        // A success clears the per-(account, IP) counter.
        t.success("alice", ip("192.0.2.1")).await.unwrap();
        assert!(t.check("alice", ip("192.0.2.1")).await.unwrap().is_ok());
    }
}
