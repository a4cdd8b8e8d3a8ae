//! What clients can hold open: connections, request bodies in flight, event streams. Every one
//! of them has a bound below the process's open-file limit, so a flood of slow or long-lived
//! clients runs into Cloakroom's own caps (and gets a quick refusal) long before the kernel's,
//! and `/healthz` and `/v1/auth/check`, which need neither a body nor a stream, keep answering.
//!
//! The shares of a node's connection cap `C`: request bodies being read at most `C / 2` in all
//! (each within `body_timeout`) and `C / 16` per peer address (a trusted proxy, which speaks for
//! many clients, has no share of its own), event streams at most `C / 4` in all and
//! [`STREAMS_PER_IP`] per client address; the rest is always left to requests that hold nothing.
//! An IPv6 address counts by its /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// File descriptors kept back from the connection cap: the store's connections, the SQLite
/// files, logs, the listener itself.
const RESERVED_FDS: u64 = 64;
/// The derived cap never exceeds this, however high the open-file limit.
const MAX_DERIVED_CONNECTIONS: u64 = 65_536;
/// Event streams one client address may hold.
pub const STREAMS_PER_IP: usize = 16;

/// The soft open-file limit in force, if the platform tells.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Raises the soft open-file limit to the hard one (what a process may do by itself) and
/// returns the soft limit now in force, if the platform tells.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "could not raise the open-file limit");
        }
    }
    open_file_limit()
}

/// The connection cap: `configured`, or with 0 the open-file limit less [`RESERVED_FDS`].
/// A configured cap above what the limit allows is lowered to it (with a warning): a cap the
/// kernel would enforce first protects nothing.
pub fn connection_cap(configured: usize, open_files: Option<u64>) -> usize {
    let allowed = match open_files {
        Some(n) => n.saturating_sub(RESERVED_FDS).clamp(16, MAX_DERIVED_CONNECTIONS),
        None => 4096,
    };
    let allowed = usize::try_from(allowed).unwrap_or(usize::MAX);
    match configured {
        0 => allowed,
        n if n > allowed => {
            tracing::warn!(
                configured = n,
                allowed,
                "max_connections is above the open-file limit allows; lowered"
            );
            allowed
        }
        n => n,
    }
}

/// Slots held per address (an IPv6 address by its /64; `None` for a client without one).
type Counts = Arc<Mutex<HashMap<Option<String>, usize>>>;

/// Slots for something clients hold for a while (an event stream, a body being read): a total
/// and a per-address share.
#[derive(Debug)]
pub struct Slots {
    total: Arc<Semaphore>,
    per_ip: Counts,
    per_ip_max: usize,
}

/// A held slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _total: OwnedSemaphorePermit,
    /// The per-address count this slot added to, if any.
    share: Option<(Counts, Option<String>)>,
}

impl Slots {
    /// `total` slots, at most `per_ip` of them for one address.
    pub fn new(total: usize, per_ip: usize) -> Self {
        let total = total.max(1);
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_ip: Arc::default(),
            per_ip_max: per_ip.clamp(1, total),
        }
    }

    /// Event-stream slots for a node with connection cap `connections`.
    pub fn for_streams(connections: usize) -> Self {
        Self::new(connections / 4, STREAMS_PER_IP)
    }

    /// Request-body slots for a node with connection cap `connections`.
    pub fn for_bodies(connections: usize) -> Self {
        Self::new(connections / 2, (connections / 16).max(4))
    }

    /// A slot for a stream to `ip`, or `None` when the node or that address is at its cap. An
    /// IPv6 address counts by its /64, as in the login throttle: one host's network is one
    /// client. Only addresses holding a slot take room in the map.
    pub fn take(&self, ip: Option<IpAddr>) -> Option<Slot> {
        let ip = ip.map(crate::throttle::scope);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if per_ip.get(&ip).is_some_and(|held| *held >= self.per_ip_max) {
            return None;
        }
        let total = Arc::clone(&self.total).try_acquire_owned().ok()?;
        *per_ip.entry(ip.clone()).or_default() += 1;
        Some(Slot { _total: total, share: Some((Arc::clone(&self.per_ip), ip)) })
    }

    /// A slot of the total only, for a peer that speaks for many clients (a trusted proxy).
    pub fn take_shared(&self) -> Option<Slot> {
        let total = Arc::clone(&self.total).try_acquire_owned().ok()?;
        Some(Slot { _total: total, share: None })
    }

    /// How many addresses hold a slot (for tests).
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.per_ip.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some((per_ip, ip)) = self.share.take() else { return };
        let mut per_ip = per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = per_ip.get_mut(&ip) {
            *held -= 1;
            if *held == 0 {
                per_ip.remove(&ip);
            }
        }
    }
}

/// Whether a request announces a body (a length above zero, or chunked).
pub fn has_body<B>(req: &hyper::Request<B>) -> bool {
    let headers = req.headers();
    if headers.contains_key(hyper::header::TRANSFER_ENCODING) {
        return true;
    }
    match headers.get(hyper::header::CONTENT_LENGTH) {
        None => false,
        Some(v) => v.to_str().map_or(true, |v| v.trim() != "0"),
    }
}

/// The body did not arrive within `body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(Duration);

/// A request body that must arrive whole by a deadline, holding a slot of the node's share for
/// bodies until the handler is done with it.
pub struct DeadlineBody<B> {
    body: B,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    _slot: Slot,
}

impl<B> DeadlineBody<B> {
    /// `body`, which must end within `limit`, holding `slot`.
    pub fn new(body: B, limit: Duration, slot: Slot) -> Self {
        Self { body, deadline: Box::pin(tokio::time::sleep(limit)), limit, _slot: slot }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.limit)))));
        }
        Pin::new(&mut self.body).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_open_file_limit() {
        assert_eq!(connection_cap(0, Some(256)), 192);
        assert_eq!(connection_cap(1000, Some(256)), 192, "lowered to what the limit allows");
        assert_eq!(connection_cap(100, Some(256)), 100);
        assert_eq!(connection_cap(0, Some(10)), 16, "never below a working minimum");
        assert_eq!(connection_cap(0, Some(u64::MAX)), 65_536);
    }

    #[test]
    fn stream_slots_are_capped_in_all_and_per_address() {
        let slots = Slots::for_streams(192); // 48 in all, 16 per address
        let a: Option<IpAddr> = Some("192.0.2.1".parse().unwrap());
        let held: Vec<_> = (0..16).map(|_| slots.take(a).unwrap()).collect();
        assert!(slots.take(a).is_none(), "per address");
        let others: Vec<_> =
            (0..32).map(|i| slots.take(Some(format!("198.51.100.{i}").parse().unwrap()))).collect();
        assert!(others.iter().all(Option::is_some));
        assert!(slots.take(Some("203.0.113.1".parse().unwrap())).is_none(), "in all");
        let v6 = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(slots.take(v6("2001:db8::1")).is_none(), "refused at the node's cap");
        assert_eq!(slots.addresses(), 33, "a refused address leaves nothing behind");
        drop(held);
        drop(others);
        assert_eq!(slots.addresses(), 0);
        assert!(slots.take(a).is_some(), "given back when the streams end");
        let same_64: Vec<_> =
            (0..16).map(|i| slots.take(v6(&format!("2001:db8:0:1::{i:x}")))).collect();
        assert!(same_64.iter().all(Option::is_some));
        assert!(slots.take(v6("2001:db8:0:1:ffff::9")).is_none(), "one /64 is one client");
    }

    #[test]
    fn bodies_are_announced_by_length_or_chunking() {
        let req = |h: &[(&str, &str)]| {
            let mut r = hyper::Request::new(());
            for (k, v) in h {
                r.headers_mut().insert(
                    hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            r
        };
        assert!(!has_body(&req(&[])));
        assert!(!has_body(&req(&[("content-length", "0")])));
        assert!(has_body(&req(&[("content-length", "12")])));
        assert!(has_body(&req(&[("transfer-encoding", "chunked")])));
    }
}
