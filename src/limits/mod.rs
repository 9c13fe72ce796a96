//! Per-partner connection and rate limits, and per-source handshake limits, exact across workers.
//!
//! The gateway holds one `Arc<dyn Limiter>` and asks it, on each worker's own
//! thread, for a `WorkerLimiter`; every check goes through that handle.
//!
//! The local implementation keeps one `PartnerState` per limited partner,
//! shared by all workers: connections are an `AtomicU32` bumped by CAS (never
//! past the limit, so the limit holds exactly even when SO_REUSEPORT spreads a
//! partner over workers), the rate is GCRA on one `AtomicU64`. A worker takes
//! the shared map's mutex only the first time it sees a partner; after that it
//! finds the state in its own cache, so the hot path is atomics only. Partners
//! whose limits are all `None` are never stored and cost no atomics.
//!
//! Before the handshake there is no identity, only a source address, and
//! unauthenticated peers can pick as many addresses as they like: those are
//! counted in a fixed table (see `source`), not a map that would grow.

mod local;
mod source;

use local::PartnerState;
pub use local::{LocalLimiter, WorkerLimits};

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use source::SourceTable;

/// Partners a worker caches. Identities come from certificates the operator's
/// CA issued, so their number is bounded by the CA, not by attackers; past this
/// (unusual) count a worker still works, it just takes the shared mutex for
/// the partners it could not cache.
const WORKER_CACHE: usize = 10_000;

/// Limits for one partner identity; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PartnerLimits {
    /// Open connections at once, over all workers.
    pub max_connections: Option<u32>,
    /// Requests (http) over all the partner's connections.
    pub rate: Option<Rate>,
}

/// A token bucket: `per_second` sustained (> 0), up to `burst` at once (≥ 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// Limits on connections that have no identity yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceLimits {
    /// Connections from one source (IPv4 address or IPv6 /64) still in the
    /// TLS handshake.
    pub max_handshakes_per_source: Option<u32>,
}

/// A limits spec the limiter cannot enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLimits {
    /// The override's identity, or `None` for the default spec.
    pub partner: Option<String>,
    pub reason: &'static str,
}

impl fmt::Display for InvalidLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.partner {
            Some(p) => write!(f, "limits for partner {p:?}: {}", self.reason),
            None => write!(f, "default partner limits: {}", self.reason),
        }
    }
}

impl std::error::Error for InvalidLimits {}

/// A connection (or handshake) over its limit: refuse it (tcp) or answer 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

/// A request over its partner's rate, and how long until one would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    pub wait: Duration,
}

impl RetryAfter {
    /// The `Retry-After` value: whole seconds rounded up, at least 1 (0 would
    /// invite an immediate retry that is still refused).
    pub fn secs(self) -> u64 {
        let up = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        up.max(1)
    }
}

/// What the gateway calls; `LocalLimiter` is the default implementation.
///
/// Built to let a store-backed implementation (e.g. Redis shared by many
/// hosts) fit: the checks are synchronous because a network round trip per
/// request would stall a worker's ring, so such an implementation decides
/// from budget it leases in batches and refreshes off the hot path, and it
/// chooses itself whether to fail open or closed when the store is down (hence
/// no error besides the refusal). Its connection permits are `Permit::guard`s
/// whose `Drop` gives the slot back to the store.
pub trait Limiter: Send + Sync {
    /// A handle for the calling worker thread; create one per worker, on it.
    fn worker(&self) -> Box<dyn WorkerLimiter>;
    /// Per partner seen with a limit: (identity, refused connections,
    /// refused requests), sorted by identity. Metrics read path.
    fn refused(&self) -> Vec<(String, u64, u64)>;
    /// Handshakes refused by the per-source limit, all sources together.
    fn refused_handshakes(&self) -> u64;
}

/// One worker's view of a `Limiter`; may cache, need not be `Send`.
pub trait WorkerLimiter {
    /// At accept: hold the permit until the handshake ends, either way.
    fn handshake(&self, source: IpAddr) -> Result<Permit, Refused>;
    /// Once the identity is known: hold the permit for the connection's life.
    fn connection(&self, partner: &str) -> Result<Permit, Refused>;
    /// Per request (http).
    fn request(&self, partner: &str) -> Result<(), RetryAfter>;
}

/// A granted slot, given back when dropped.
pub struct Permit(Release);

enum Release {
    Nothing,
    Partner(Arc<PartnerState>),
    Source(Arc<SourceTable>, usize),
    // Never read, only dropped: that runs the guard's own Drop.
    Guard(#[allow(dead_code)] Box<dyn Send>),
}

impl Permit {
    /// A permit that holds nothing (no limit applies).
    pub fn unlimited() -> Self {
        Permit(Release::Nothing)
    }

    /// A permit for another `Limiter`: `guard`'s `Drop` releases the slot.
    pub fn guard(guard: impl Send + 'static) -> Self {
        Permit(Release::Guard(Box::new(guard)))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        match &self.0 {
            Release::Partner(p) => {
                p.conns.fetch_sub(1, Relaxed);
            }
            Release::Source(t, slot) => t.release(*slot),
            Release::Nothing | Release::Guard(_) => {}
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0 {
            Release::Nothing => "unlimited",
            Release::Partner(_) => "partner",
            Release::Source(..) => "source",
            Release::Guard(_) => "guard",
        };
        f.debug_tuple("Permit").field(&kind).finish()
    }
}

#[cfg(test)]
mod tests;
