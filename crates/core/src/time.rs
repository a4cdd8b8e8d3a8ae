//! Instants as milliseconds since the Unix epoch: what stores persist and compare, and what the API
//! shows as RFC 3339 UTC.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// An instant, in whole milliseconds since 1970-01-01T00:00:00Z.
///
/// Stores keep it as a 64-bit integer so that expiry checks are plain integer comparisons in SQL
/// and Lua alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// A time no earlier than the current one and at most a few milliseconds later: the kernel's
    /// coarse clock (the time of the last timer tick) plus twice its resolution. Reading it costs
    /// a few nanoseconds and does not read the CPU's time stamp counter, which waits for every
    /// memory load in flight. For the node-local cache's hit path, which may end an entry a few
    /// milliseconds early but never late; elsewhere [`Timestamp::now`].
    #[cfg(target_os = "linux")]
    pub fn now_at_most() -> Self {
        use rustix::time::{ClockId, Timespec, clock_getres, clock_gettime};
        fn millis(t: Timespec) -> i64 {
            // `tv_nsec` is an `i64` here, a `c_long` on 32-bit targets.
            #[allow(clippy::useless_conversion)]
            let nanos = i64::from(t.tv_nsec);
            t.tv_sec.saturating_mul(1000).saturating_add(nanos / 1_000_000)
        }
        static LAG_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
        // Twice the tick (rounded up), at least 2 ms: a tick may come late.
        let lag = *LAG_MS
            .get_or_init(|| (2 * (millis(clock_getres(ClockId::RealtimeCoarse)) + 1)).max(2));
        Self(millis(clock_gettime(ClockId::RealtimeCoarse)).saturating_add(lag))
    }

    /// [`Timestamp::now`], where there is no coarse clock.
    #[cfg(not(target_os = "linux"))]
    pub fn now_at_most() -> Self {
        Self::now()
    }

    /// From a `SystemTime` (instants before the epoch count as the epoch).
    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = t.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Self(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    /// From milliseconds since the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This instant plus `d`, saturating instead of overflowing.
    pub fn plus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// This instant minus `d`, saturating instead of overflowing.
    pub fn minus(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(ms))
    }

    /// How long after `earlier` this instant is (zero when it is not later).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// As a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        match u64::try_from(self.0) {
            Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
            Err(_) => UNIX_EPOCH,
        }
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-23T04:49:42.123Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&humantime::format_rfc3339_millis(self.to_system_time()), f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_utc() {
        assert_eq!(
            Timestamp::from_millis(1_700_000_000_123).to_string(),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_millis(i64::MAX - 1);
        assert_eq!(t.plus(Duration::from_secs(10)).as_millis(), i64::MAX);
        assert_eq!(Timestamp::from_millis(5).since(Timestamp::from_millis(10)), Duration::ZERO);
    }

    #[test]
    fn now_at_most_is_never_behind_and_at_most_a_few_ms_ahead() {
        for _ in 0..1000 {
            let before = Timestamp::now();
            let bound = Timestamp::now_at_most();
            let after = Timestamp::now();
            assert!(bound >= before, "{bound:?} is behind {before:?}");
            assert!(bound.since(after) <= Duration::from_millis(50), "{bound:?} vs {after:?}");
        }
    }
}
