//! Login throttling: failed attempts counted in sliding windows per account, per account and
//! client IP, and per client IP. Only failures count, so a user who logs in often never trips it.
//!
//! The balance against lock-out: an attacker can exhaust an account's hourly budget (ASVS: at most
//! 100 failures per hour per account) from anywhere, but that account-wide limit is not applied to a
//! client IP from which the account logged in successfully in the last 30 days ("known" IPs), which
//! still have their own per-(account, IP) limit. So the owner keeps logging in from home or office
//! while an attack runs, and a new device waits at most until the window slides (under an hour).
//! Counters live in memory, per node; a restart forgets them.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One limit: at most `max` failures in any `window`.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    /// Failures allowed in the window.
    pub max: usize,
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

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    AccountBurst(String),
    AccountIp(String, IpAddr),
    Ip(IpAddr),
}

/// Most counters kept at once; beyond it, the oldest-touched half is dropped (bounded memory
/// under a spray of usernames or addresses).
const MAX_ENTRIES: usize = 200_000;

/// The throttle.
#[derive(Debug)]
pub struct Throttle {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    failures: HashMap<Key, VecDeque<Instant>>,
    known: HashMap<(String, IpAddr), Instant>,
}

impl Throttle {
    /// A throttle with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits, state: Mutex::new(State::default()) }
    }

    fn keys(&self, account: &str, ip: Option<IpAddr>, known: bool) -> Vec<(Key, Limit)> {
        let mut keys = vec![(Key::AccountBurst(account.to_owned()), self.limits.account_burst)];
        if !known {
            keys.push((Key::Account(account.to_owned()), self.limits.account));
        }
        if let Some(ip) = ip {
            keys.push((Key::AccountIp(account.to_owned(), ip), self.limits.account_ip));
            keys.push((Key::Ip(ip), self.limits.ip));
        }
        keys
    }

    fn is_known(
        state: &State,
        account: &str,
        ip: Option<IpAddr>,
        now: Instant,
        known_for: Duration,
    ) -> bool {
        ip.and_then(|ip| state.known.get(&(account.to_owned(), ip)))
            .is_some_and(|at| now.duration_since(*at) < known_for)
    }

    /// Whether an attempt for `account` from `ip` may go ahead; `Err(retry_after)` when a limit
    /// is reached.
    pub fn check(&self, account: &str, ip: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return Ok(());
        };
        let known = Self::is_known(&state, account, ip, now, self.limits.known_for);
        let mut wait = Duration::ZERO;
        for (key, limit) in self.keys(account, ip, known) {
            if let Some(q) = state.failures.get_mut(&key) {
                while q.front().is_some_and(|t| now.duration_since(*t) >= limit.window) {
                    q.pop_front();
                }
                if q.len() >= limit.max {
                    // The oldest failure in the window must age out first.
                    let oldest = q[q.len() - limit.max];
                    wait = wait.max(limit.window.saturating_sub(now.duration_since(oldest)));
                }
            }
        }
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    /// Records a failed attempt.
    pub fn failure(&self, account: &str, ip: Option<IpAddr>) {
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.failures.len() >= MAX_ENTRIES {
            prune(&mut state, now, &self.limits);
        }
        // Failures from a known IP still count against the account (for other IPs' sake).
        for (key, limit) in self.keys(account, ip, false) {
            let q = state.failures.entry(key).or_default();
            q.push_back(now);
            while q.len() > limit.max {
                q.pop_front();
            }
        }
    }

    /// Records a successful login: the IP becomes known for the account, and the account's
    /// per-IP and burst counters for it are cleared.
    pub fn success(&self, account: &str, ip: Option<IpAddr>) {
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.failures.remove(&Key::AccountBurst(account.to_owned()));
        if let Some(ip) = ip {
            state.failures.remove(&Key::AccountIp(account.to_owned(), ip));
            if state.known.len() >= MAX_ENTRIES {
                let known_for = self.limits.known_for;
                state.known.retain(|_, at| now.duration_since(*at) < known_for);
                if state.known.len() >= MAX_ENTRIES {
                    state.known.clear();
                }
            }
            state.known.insert((account.to_owned(), ip), now);
        }
    }
}

fn prune(state: &mut State, now: Instant, limits: &Limits) {
    let longest = [limits.account, limits.account_burst, limits.account_ip, limits.ip]
        .iter()
        .map(|l| l.window)
        .max()
        .unwrap_or_default();
    state.failures.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < longest));
    if state.failures.len() >= MAX_ENTRIES {
        // Still full of live counters: an attack on a scale where forgetting some is the lesser harm.
        let drop = state.failures.len() / 2;
        let victims: Vec<_> = state.failures.keys().take(drop).cloned().collect();
        for k in victims {
            state.failures.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn account_limit_is_100_failures_and_reports_retry_after() {
        let t = Throttle::new(Limits {
            account_burst: Limit { max: 1000, window: Duration::from_secs(60) },
            account_ip: Limit { max: 1000, window: Duration::from_secs(60) },
            ip: Limit { max: 1000, window: Duration::from_secs(60) },
            ..Limits::default()
        });
        for i in 0..100u32 {
            let from = ip(&format!("10.0.{}.{}", i / 200, i % 200));
            assert!(t.check("alice", from).is_ok(), "attempt {i}");
            t.failure("alice", from);
        }
        let wait = t.check("alice", ip("10.9.9.9")).unwrap_err();
        assert!(wait > Duration::from_secs(3500) && wait <= Duration::from_secs(3600));
        assert!(t.check("bob", ip("10.9.9.9")).is_ok(), "other accounts are unaffected");
    }

    #[test]
    fn a_known_ip_is_not_locked_out_by_an_attack_elsewhere() {
        let t = Throttle::new(Limits {
            account_burst: Limit { max: 1000, window: Duration::from_secs(60) },
            ..Limits::default()
        });
        t.success("alice", ip("192.0.2.10"));
        for i in 0..120u32 {
            t.failure("alice", ip(&format!("198.51.{}.{}", i / 100, i % 100)));
        }
        assert!(t.check("alice", ip("203.0.113.5")).is_err(), "unknown IPs are throttled");
        assert!(t.check("alice", ip("192.0.2.10")).is_ok(), "the owner's known IP is not");
    }

    #[test]
    fn per_ip_and_per_account_ip_limits() {
        let t = Throttle::new(Limits::default());
        for _ in 0..10 {
            t.failure("alice", ip("192.0.2.1"));
        }
        assert!(t.check("alice", ip("192.0.2.1")).is_err());
        assert!(t.check("alice", ip("192.0.2.2")).is_ok());
        for i in 0..50 {
            t.failure(&format!("user{i}"), ip("192.0.2.3"));
        }
        assert!(
            t.check("someone-else", ip("192.0.2.3")).is_err(),
            "spraying one IP across accounts"
        );
        // A success clears the per-(account, IP) counter.
        t.success("alice", ip("192.0.2.1"));
        assert!(t.check("alice", ip("192.0.2.1")).is_ok());
    }
}
