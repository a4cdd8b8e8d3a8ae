//! What clients can hold open: connections, request bodies in flight, event streams. Every one
//! of them has a bound below the process's open-file limit, so a flood of slow or long-lived
//! clients runs into Cloakroom's own caps (and gets a quick refusal) long before the kernel's,
//! and `/healthz` and `/v1/auth/check`, which need neither a body nor a stream, keep answering.
//!
//! The shares of a node's connection cap `C`: request bodies being read at most `C / 2` (each
//! within `body_timeout`), event streams at most `C / 4` in all and [`STREAMS_PER_IP`] per client
//! address; the rest is always left to requests that hold nothing.

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

/// Slots for long-lived event streams: a total and a per-address share.
#[derive(Debug)]
pub struct StreamSlots {
    total: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<Option<IpAddr>, usize>>>,
    per_ip_max: usize,
}

/// A held event-stream slot, given back when dropped (the stream ended).
#[derive(Debug)]
pub struct StreamSlot {
    _total: OwnedSemaphorePermit,
    per_ip: Arc<Mutex<HashMap<Option<IpAddr>, usize>>>,
    ip: Option<IpAddr>,
}

impl StreamSlots {
    /// Slots for a node with connection cap `connections`.
    pub fn new(connections: usize) -> Self {
        let total = (connections / 4).max(1);
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_ip: Arc::default(),
            per_ip_max: STREAMS_PER_IP.min(total),
        }
    }

    /// A slot for a stream to `ip`, or `None` when the node or that address is at its cap.
    pub fn take(&self, ip: Option<IpAddr>) -> Option<StreamSlot> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = per_ip.entry(ip).or_default();
        if *held >= self.per_ip_max {
            return None;
        }
        let total = Arc::clone(&self.total).try_acquire_owned().ok()?;
        *held += 1;
        Some(StreamSlot { _total: total, per_ip: Arc::clone(&self.per_ip), ip })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = per_ip.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                per_ip.remove(&self.ip);
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
    _slot: OwnedSemaphorePermit,
}

impl<B> DeadlineBody<B> {
    /// `body`, which must end within `limit`, holding `slot`.
    pub fn new(body: B, limit: Duration, slot: OwnedSemaphorePermit) -> Self {
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
        let slots = StreamSlots::new(192); // 48 in all, 16 per address
        let a: Option<IpAddr> = Some("192.0.2.1".parse().unwrap());
        let held: Vec<_> = (0..16).map(|_| slots.take(a).unwrap()).collect();
        assert!(slots.take(a).is_none(), "per address");
        let others: Vec<_> =
            (0..32).map(|i| slots.take(Some(format!("198.51.100.{i}").parse().unwrap()))).collect();
        assert!(others.iter().all(Option::is_some));
        assert!(slots.take(Some("203.0.113.1".parse().unwrap())).is_none(), "in all");
        drop(held);
        assert!(slots.take(a).is_some(), "given back when the streams end");
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
