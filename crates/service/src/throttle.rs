//! Login throttling: failed attempts counted in sliding windows per account, per account and
//! client IP, and per client IP. Only failures count, so a user who logs in often never trips it.
//! The windows live in the store ([`Store::reserve_event`]), so the limits hold across every
//! server sharing it: with three nodes an attacker still gets 100 guesses an hour, not 300.
//!
//! **Reserve, then verify.** An attempt takes its place in every window *before* the password is
//! verified ([`Throttle::reserve`]), in one atomic step per window, and is settled afterwards: a
//! failure keeps its places ([`Attempt::failed`]), a success gives them back
//! ([`Attempt::succeeded`]). Checking first and recording after the (slow) verification would
//! let every request in flight pass the check: 300 concurrent guesses would all be verified before
//! the first was counted. An attempt that is never settled (the store failed mid-way) keeps its
//! places, so doubt counts as a failure.
//!
//! The balance against lock-out: an attacker can exhaust an account's hourly budget (ASVS: at most
//! 100 failures per hour per account) from anywhere, but that account-wide limit is not applied to a
//! client IP from which the account logged in successfully in the last 30 days ("known" IPs), which
//! still have their own per-(account, IP) limit. So the owner keeps logging in from home or office
//! while an attack runs, and a new device waits at most until the window slides (under an hour).
//!
//! IPv6 clients are counted per /64 (one subscriber's allocation), so an attacker cannot rotate
//! through the 2^64 addresses of its own network to get fresh budgets.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cloakroom_core::store::{EventId, Reservation};
use cloakroom_core::{Store, StoreError, Timestamp, UserId};

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
    /// Grants issued per user (each leaves a signed token, and its redemption a row).
    pub grant_issue: Limit,
}

/// A per-user action whose every call leaves work behind for the store or for every verifier,
/// so that one logged-in user cannot pile it up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserAction {
    /// `POST /v1/grants`.
    GrantIssue,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            account: Limit { max: 100, window: Duration::from_secs(3600) },
            account_burst: Limit { max: 20, window: Duration::from_secs(60) },
            account_ip: Limit { max: 10, window: Duration::from_secs(15 * 60) },
            ip: Limit { max: 50, window: Duration::from_secs(15 * 60) },
            known_for: Duration::from_secs(30 * 24 * 3600),
            grant_issue: Limit { max: 120, window: Duration::from_secs(60) },
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

/// An attempt that holds its places in the throttle's windows; settle it with [`Attempt::failed`]
/// or [`Attempt::succeeded`] once the credential is verified.
#[must_use = "an attempt must be settled: dropped, it counts as a failure"]
#[derive(Debug)]
pub struct Attempt {
    throttle: Throttle,
    account: String,
    ip: Option<String>,
    reserved: Vec<(String, EventId)>,
}

/// One window an attempt takes a place in, and whether its limit applies to this attempt.
struct Window {
    key: String,
    limit: Limit,
    enforce: bool,
}

impl Throttle {
    /// A throttle keeping its windows in `store`.
    pub fn new(store: Arc<dyn Store>, limits: Limits) -> Self {
        Self { store, limits }
    }

    /// The windows an attempt for `account` from `ip` counts in; with `known`, the account-wide
    /// limit does not apply to it (the attempt still counts there, for the other IPs' sake).
    fn windows(&self, account: &str, ip: Option<&str>, known: bool) -> Vec<Window> {
        // The client's own windows first: a client already at its limit is refused before it
        // takes (even for a moment) a place in the account's windows, which it could otherwise
        // keep full with cheap refused attempts and so lock the owner out.
        let window = |key: String, limit: Limit, enforce: bool| Window { key, limit, enforce };
        let mut all = Vec::with_capacity(4);
        if let Some(ip) = ip {
            all.push(window(format!("login:i:{ip}"), self.limits.ip, true));
            all.push(window(format!("login:ai:{account}|{ip}"), self.limits.account_ip, true));
        }
        all.push(window(format!("login:ab:{account}"), self.limits.account_burst, true));
        all.push(window(format!("login:a:{account}"), self.limits.account, !known));
        all
    }

    fn known_key(account: &str, ip: &str) -> String {
        format!("login:known:{account}|{ip}")
    }

    /// Counts one `action` by `user`: `Ok(Err(retry_after))` when the user is at its limit
    /// (nothing is then counted). Shared by every node, like the login windows.
    pub async fn user_action(
        &self,
        action: UserAction,
        user: &UserId,
    ) -> ThrottleResult<Result<(), Duration>> {
        let (name, limit) = match action {
            UserAction::GrantIssue => ("grant", self.limits.grant_issue),
        };
        let key = format!("rate:{name}:{}", user.as_str());
        let now = Timestamp::now();
        Ok(match self.store.reserve_event(&key, now, limit.window, limit.max, true).await? {
            Reservation::Reserved(_) => Ok(()),
            Reservation::Full(first) => {
                Err(limit.window.saturating_sub(now.since(first)).max(Duration::from_secs(1)))
            }
        })
    }

    /// Reserves an attempt for `account` from `ip`: `Ok(Err(retry_after))` when a limit is
    /// reached (nothing is then held), else the attempt, holding a place in every window.
    pub async fn reserve(
        &self,
        account: &str,
        ip: Option<IpAddr>,
    ) -> ThrottleResult<Result<Attempt, Duration>> {
        let now = Timestamp::now();
        let ip = ip.map(scope);
        let known = match &ip {
            Some(ip) => !self
                .store
                .event_log(&Self::known_key(account, ip), now, self.limits.known_for)
                .await?
                .is_empty(),
            None => false,
        };
        let mut attempt = Attempt {
            throttle: self.clone(),
            account: account.to_owned(),
            ip: ip.clone(),
            reserved: Vec::new(),
        };
        for w in self.windows(account, ip.as_deref(), known) {
            let limit = w.limit;
            match self.store.reserve_event(&w.key, now, limit.window, limit.max, w.enforce).await? {
                Reservation::Reserved(id) => attempt.reserved.push((w.key, id)),
                Reservation::Full(first) => {
                    // Give back what this attempt took in the windows before: it never happened.
                    attempt.release_all().await?;
                    let wait = limit.window.saturating_sub(now.since(first));
                    return Ok(Err(wait.max(Duration::from_secs(1))));
                }
            }
        }
        Ok(Ok(attempt))
    }
}

impl Attempt {
    async fn release_all(&mut self) -> ThrottleResult<()> {
        for (key, id) in std::mem::take(&mut self.reserved) {
            self.throttle.store.release_event(&key, &id).await?;
        }
        Ok(())
    }

    /// The credential was wrong: the attempt keeps its places in every window.
    pub fn failed(self) {}

    /// The credential was right: the attempt stops counting, the IP becomes known for the
    /// account, and the account's burst and per-IP counters for it are cleared.
    pub async fn succeeded(mut self) -> ThrottleResult<()> {
        self.release_all().await?;
        let (store, limits) = (&self.throttle.store, &self.throttle.limits);
        store.forget_events(&format!("login:ab:{}", self.account)).await?;
        if let Some(ip) = &self.ip {
            store.forget_events(&format!("login:ai:{}|{ip}", self.account)).await?;
            let known = Throttle::known_key(&self.account, ip);
            store.reserve_event(&known, Timestamp::now(), limits.known_for, 1, false).await?;
        }
        Ok(())
    }
}

/// How an address is counted: IPv4 (and IPv4-mapped IPv6) as itself, IPv6 by its /64.
pub fn scope(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{net}/64")
            }
        },
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

    /// A wrong guess: whether the throttle let it be verified.
    async fn guess(t: &Throttle, account: &str, from: Option<IpAddr>) -> bool {
        match t.reserve(account, from).await.unwrap() {
            Ok(attempt) => {
                attempt.failed();
                true
            }
            Err(_) => false,
        }
    }

    async fn log_in(t: &Throttle, account: &str, from: Option<IpAddr>) {
        t.reserve(account, from).await.unwrap().unwrap().succeeded().await.unwrap();
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
            assert!(guess(&t, "alice", ip(&format!("10.0.{}.{}", i / 200, i % 200))).await, "{i}");
        }
        let wait = t.reserve("alice", ip("10.9.9.9")).await.unwrap().unwrap_err();
        assert!(wait > Duration::from_secs(3500) && wait <= Duration::from_secs(3600));
        assert!(guess(&t, "bob", ip("10.9.9.9")).await, "other accounts are unaffected");
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
            assert!(guess(&nodes[i % 3], "alice", ip("198.51.100.1")).await);
        }
        for node in &nodes {
            assert!(!guess(node, "alice", ip("203.0.113.9")).await, "100 in total, not per node");
        }
    }

    /// Regression (red-team review): the windows were read before Argon2 ran and written after,
    /// so 300 concurrent guesses were all verified before the first one counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_guesses_cannot_all_pass_a_check_before_any_is_counted() {
        let (t, _dir) = throttle(Limits::default()).await;
        let racers: Vec<_> = (0..300)
            .map(|_| {
                let t = t.clone();
                tokio::spawn(async move {
                    let attempt = t.reserve("alice", ip("192.0.2.77")).await.unwrap();
                    // The "verification" happens while the other racers run.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    attempt.map(Attempt::failed).is_ok()
                })
            })
            .collect();
        let mut verified = 0;
        for r in racers {
            verified += usize::from(r.await.unwrap());
        }
        assert_eq!(verified, 10, "the per-(account, IP) limit, and not one more");
    }

    #[tokio::test]
    async fn a_known_ip_is_not_locked_out_by_an_attack_elsewhere() {
        let (t, _dir) = throttle(Limits { account_burst: LOOSE, ..Limits::default() }).await;
        log_in(&t, "alice", ip("192.0.2.10")).await;
        for i in 0..120u32 {
            guess(&t, "alice", ip(&format!("198.51.{}.{}", i / 100, i % 100))).await;
        }
        assert!(!guess(&t, "alice", ip("203.0.113.5")).await, "unknown IPs are throttled");
        assert!(guess(&t, "alice", ip("192.0.2.10")).await, "the owner's known IP is not");
    }

    #[tokio::test]
    async fn per_ip_and_per_account_ip_limits() {
        let (t, _dir) = throttle(Limits::default()).await;
        for _ in 0..10 {
            assert!(guess(&t, "alice", ip("192.0.2.1")).await);
        }
        assert!(!guess(&t, "alice", ip("192.0.2.1")).await);
        assert!(guess(&t, "alice", ip("192.0.2.2")).await);
        for i in 0..50 {
            assert!(guess(&t, &format!("user{i}"), ip("192.0.2.3")).await);
        }
        assert!(
            !guess(&t, "someone-else", ip("192.0.2.3")).await,
            "spraying one IP across accounts"
        );
        // A success clears the per-(account, IP) counter, and a refused attempt took nothing.
        let (t, _dir) = throttle(Limits::default()).await;
        for _ in 0..10 {
            guess(&t, "alice", ip("192.0.2.1")).await;
        }
        assert!(t.reserve("alice", ip("192.0.2.1")).await.unwrap().is_err());
        let store = Arc::clone(&t.store);
        let now = Timestamp::now();
        let burst = store.event_log("login:ab:alice", now, Duration::from_secs(60)).await.unwrap();
        assert_eq!(burst.len(), 10, "the refused attempt gave back its burst place");
        // Once the window slides the owner logs in, which clears the counters.
        let (t, _dir) = throttle(Limits::default()).await;
        for _ in 0..9 {
            guess(&t, "alice", ip("192.0.2.1")).await;
        }
        log_in(&t, "alice", ip("192.0.2.1")).await;
        for _ in 0..10 {
            assert!(guess(&t, "alice", ip("192.0.2.1")).await);
        }
    }

    /// Review finding: a client already at its own limit briefly took places in the victim's
    /// account windows before being refused, and could keep the burst window full with cheap
    /// refused attempts. Its own windows are reserved first now.
    #[tokio::test]
    async fn a_client_at_its_limit_takes_nothing_from_the_account_it_targets() {
        let (t, _dir) = throttle(Limits::default()).await;
        for i in 0..50 {
            assert!(guess(&t, &format!("spray{i}"), ip("198.51.100.66")).await);
        }
        for _ in 0..30 {
            assert!(!guess(&t, "victim", ip("198.51.100.66")).await, "refused");
        }
        let now = Timestamp::now();
        for key in ["login:ab:victim", "login:a:victim"] {
            let log = t.store.event_log(key, now, Duration::from_secs(3600)).await.unwrap();
            assert!(log.is_empty(), "{key}: {log:?}");
        }
        assert!(guess(&t, "victim", ip("192.0.2.5")).await, "the owner is not locked out");
    }

    /// Regression (red-team review): IPv6 clients were throttled per address, so one host with
    /// a /64 had 2^64 fresh budgets.
    #[tokio::test]
    async fn ipv6_clients_are_throttled_per_64_not_per_address() {
        let (t, _dir) = throttle(Limits::default()).await;
        for i in 0..10 {
            assert!(guess(&t, "alice", ip(&format!("2001:db8:1:2::{i:x}"))).await);
        }
        assert!(!guess(&t, "alice", ip("2001:db8:1:2:ffff::1")).await, "same /64");
        assert!(guess(&t, "alice", ip("2001:db8:1:3::1")).await, "another /64");
        assert_eq!(scope("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1");
    }
}
