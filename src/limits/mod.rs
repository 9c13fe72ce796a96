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

mod source;

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

/// GCRA parameters in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gcra {
    /// Time one request uses up: 1 s / rate.
    emission: u64,
    /// How far ahead of now the theoretical arrival time may run: burst × emission.
    window: u64,
}

/// 146 years: longer intervals are clamped to it, so arrival times never
/// saturate at `u64::MAX` (where every request would pass).
const FOREVER_NS: u64 = 1 << 62;

impl Gcra {
    fn new(r: Rate) -> Self {
        // Float → int `as` saturates; at least 1 ns keeps a huge rate a rate.
        let emission = ((1e9 / r.per_second) as u64).clamp(1, FOREVER_NS);
        Gcra {
            emission,
            window: emission.saturating_mul(u64::from(r.burst)).min(FOREVER_NS),
        }
    }
}

/// One GCRA step at `now`: the new theoretical arrival time, or how many
/// nanoseconds until a request would pass. Pure, so tests need no clock.
fn gcra(tat: u64, now: u64, g: Gcra) -> Result<u64, u64> {
    let next = tat.max(now).saturating_add(g.emission);
    let ahead = next - now; // ok: next ≥ max(tat, now) ≥ now
    if ahead <= g.window {
        Ok(next)
    } else {
        Err(ahead - g.window)
    }
}

/// What all workers share for one limited partner.
// A cache line of its own: states allocated side by side would otherwise
// bounce between cores hammering different partners.
#[repr(align(64))]
struct PartnerState {
    conns: AtomicU32,
    /// Theoretical arrival time, ns since the limiter's epoch.
    tat: AtomicU64,
    refused_conns: AtomicU64,
    refused_requests: AtomicU64,
    max_connections: Option<u32>,
    rate: Option<Gcra>,
}

// Relaxed throughout: each counter is a single location and guards no other
// memory, and read-modify-writes on one location are totally ordered anyway.
impl PartnerState {
    fn new(l: PartnerLimits) -> Self {
        PartnerState {
            conns: AtomicU32::new(0),
            tat: AtomicU64::new(0),
            refused_conns: AtomicU64::new(0),
            refused_requests: AtomicU64::new(0),
            max_connections: l.max_connections,
            rate: l.rate.map(Gcra::new),
        }
    }

    /// Counts a connection unless that would pass `max`.
    fn try_conn(&self, max: u32) -> bool {
        let ok = self
            .conns
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok();
        if !ok {
            self.refused_conns.fetch_add(1, Relaxed);
        }
        ok
    }

    /// Takes one request's worth of the rate at `now`, or says how long to wait.
    fn try_request(&self, g: Gcra, now: u64) -> Result<(), u64> {
        let mut tat = self.tat.load(Relaxed);
        loop {
            let next = match gcra(tat, now, g) {
                Ok(next) => next,
                Err(wait) => {
                    // A refusal stores nothing: refused requests don't use up the rate.
                    self.refused_requests.fetch_add(1, Relaxed);
                    return Err(wait);
                }
            };
            match self.tat.compare_exchange_weak(tat, next, Relaxed, Relaxed) {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }
}

struct Shared {
    default: PartnerLimits,
    /// Replace (not merge with) the default for their exact identity.
    overrides: HashMap<String, PartnerLimits>,
    /// Nothing to check for any partner: skip even the lookups.
    partners_unlimited: bool,
    /// Every partner seen with a limit. Never shrinks: workers' caches hold
    /// these states, and a second state for one partner would split its count.
    partners: Mutex<HashMap<String, Arc<PartnerState>>>,
    /// `None` without a per-source limit: no table allocated.
    sources: Option<Arc<SourceTable>>,
    epoch: Instant,
}

impl Shared {
    fn limits(&self, partner: &str) -> PartnerLimits {
        self.overrides.get(partner).copied().unwrap_or(self.default)
    }

    fn partners(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<PartnerState>>> {
        // Every write leaves the map whole, so a panic elsewhere while it was
        // held leaves nothing to repair.
        self.partners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn state(&self, partner: &str, l: PartnerLimits) -> Arc<PartnerState> {
        let mut map = self.partners();
        if let Some(s) = map.get(partner) {
            return Arc::clone(s);
        }
        let s = Arc::new(PartnerState::new(l));
        map.insert(partner.to_owned(), Arc::clone(&s));
        s
    }

    fn now_ns(&self) -> u64 {
        // Saturates after 584 years.
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The default `Limiter`: limits within this process, exact across its workers.
#[derive(Clone)]
pub struct LocalLimiter {
    shared: Arc<Shared>,
}

fn check(partner: Option<&str>, l: &PartnerLimits) -> Result<(), InvalidLimits> {
    let reason = match l.rate {
        Some(r) if r.per_second.is_nan() || r.per_second <= 0.0 || r.per_second.is_infinite() => {
            "rate per_second must be a finite number above 0"
        }
        Some(r) if r.burst == 0 => "rate burst must be at least 1",
        _ => return Ok(()),
    };
    Err(InvalidLimits {
        partner: partner.map(str::to_owned),
        reason,
    })
}

impl LocalLimiter {
    /// `default` applies to every partner without an entry in `overrides`
    /// (keyed by exact identity; an entry replaces the default whole).
    pub fn new(
        default: PartnerLimits,
        overrides: HashMap<String, PartnerLimits>,
        source: SourceLimits,
    ) -> Result<Self, InvalidLimits> {
        check(None, &default)?;
        for (p, l) in &overrides {
            check(Some(p), l)?;
        }
        let unlimited = |l: &PartnerLimits| l.max_connections.is_none() && l.rate.is_none();
        let partners_unlimited = unlimited(&default) && overrides.values().all(unlimited);
        let shared = Shared {
            default,
            overrides,
            partners_unlimited,
            partners: Mutex::new(HashMap::new()),
            sources: source
                .max_handshakes_per_source
                .map(|max| Arc::new(SourceTable::new(max))),
            epoch: Instant::now(),
        };
        Ok(LocalLimiter {
            shared: Arc::new(shared),
        })
    }

    /// The per-worker handle, unboxed.
    pub fn worker_limits(&self) -> WorkerLimits {
        WorkerLimits::with_cache(Arc::clone(&self.shared), WORKER_CACHE)
    }
}

impl Limiter for LocalLimiter {
    fn worker(&self) -> Box<dyn WorkerLimiter> {
        Box::new(self.worker_limits())
    }

    fn refused(&self) -> Vec<(String, u64, u64)> {
        let mut v: Vec<_> = self
            .shared
            .partners()
            .iter()
            .map(|(p, s)| {
                let conns = s.refused_conns.load(Relaxed);
                (p.clone(), conns, s.refused_requests.load(Relaxed))
            })
            .collect();
        v.sort_unstable();
        v
    }

    fn refused_handshakes(&self) -> u64 {
        self.shared.sources.as_ref().map_or(0, |t| t.refused())
    }
}

/// `LocalLimiter`'s per-worker handle: a cache of partner states so the
/// steady state takes no lock.
pub struct WorkerLimits {
    shared: Arc<Shared>,
    cache: RefCell<HashMap<String, Arc<PartnerState>>>,
    cap: usize,
}

impl WorkerLimits {
    fn with_cache(shared: Arc<Shared>, cap: usize) -> Self {
        WorkerLimits {
            shared,
            cache: RefCell::new(HashMap::new()),
            cap,
        }
    }

    /// Runs `f` on the partner's shared state; `None` (and nothing stored)
    /// when `applies` says the partner's limits don't cover this check.
    fn with_state<R>(
        &self,
        partner: &str,
        applies: impl FnOnce(&PartnerLimits) -> bool,
        f: impl FnOnce(&Arc<PartnerState>) -> R,
    ) -> Option<R> {
        if self.shared.partners_unlimited {
            return None;
        }
        // `f` never touches the cache, so this borrow can't conflict.
        if let Some(s) = self.cache.borrow().get(partner) {
            return Some(f(s));
        }
        let l = self.shared.limits(partner);
        if !applies(&l) {
            return None;
        }
        let s = self.shared.state(partner, l);
        let mut cache = self.cache.borrow_mut();
        if cache.len() < self.cap {
            cache.insert(partner.to_owned(), Arc::clone(&s));
        }
        drop(cache);
        Some(f(&s))
    }

    /// `request` at a given time, ns since the limiter's epoch.
    fn request_at(&self, partner: &str, now: impl FnOnce() -> u64) -> Result<(), RetryAfter> {
        let r = self.with_state(
            partner,
            |l| l.rate.is_some(),
            |s| match s.rate {
                None => Ok(()),
                Some(g) => s.try_request(g, now()).map_err(|wait| RetryAfter {
                    wait: Duration::from_nanos(wait),
                }),
            },
        );
        r.unwrap_or(Ok(()))
    }
}

impl WorkerLimiter for WorkerLimits {
    fn handshake(&self, source: IpAddr) -> Result<Permit, Refused> {
        match &self.shared.sources {
            None => Ok(Permit::unlimited()),
            Some(t) => SourceTable::acquire(t, source),
        }
    }

    fn connection(&self, partner: &str) -> Result<Permit, Refused> {
        let r = self.with_state(
            partner,
            |l| l.max_connections.is_some(),
            |s| match s.max_connections {
                None => Ok(Permit::unlimited()),
                Some(max) if s.try_conn(max) => Ok(Permit(Release::Partner(Arc::clone(s)))),
                Some(_) => Err(Refused),
            },
        );
        r.unwrap_or(Ok(Permit::unlimited()))
    }

    fn request(&self, partner: &str) -> Result<(), RetryAfter> {
        // The clock is read only for partners with a rate.
        self.request_at(partner, || self.shared.now_ns())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::Barrier;
    use std::thread;

    const SEC: u64 = 1_000_000_000;

    fn conns(max: u32) -> PartnerLimits {
        PartnerLimits {
            max_connections: Some(max),
            rate: None,
        }
    }

    fn rate(per_second: f64, burst: u32) -> PartnerLimits {
        PartnerLimits {
            max_connections: None,
            rate: Some(Rate { per_second, burst }),
        }
    }

    fn limiter(default: PartnerLimits, overrides: &[(&str, PartnerLimits)]) -> LocalLimiter {
        let o = overrides.iter().map(|(p, l)| (p.to_string(), *l)).collect();
        let Ok(l) = LocalLimiter::new(default, o, SourceLimits::default()) else {
            panic!("test limits are valid");
        };
        l
    }

    /// Opens up to `n` connections for `partner`, keeping the granted ones.
    fn open(w: &dyn WorkerLimiter, partner: &str, n: usize) -> Vec<Permit> {
        (0..n).filter_map(|_| w.connection(partner).ok()).collect()
    }

    #[test]
    fn the_eleventh_connection_of_a_partner_limited_to_ten_is_refused_across_two_workers() {
        let l = limiter(conns(10), &[]);
        let start = Barrier::new(2);
        // Both workers race for 8 each: exactly 10 of the 16 may pass.
        let held: Vec<Permit> = thread::scope(|s| {
            let race = || {
                let w = l.worker();
                start.wait();
                open(&*w, "spiffe://a", 8)
            };
            let (a, b) = (s.spawn(race), s.spawn(race));
            [a, b]
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        assert_eq!(held.len(), 10);
        assert_eq!(l.worker().connection("spiffe://a").err(), Some(Refused));
        assert_eq!(l.refused(), vec![("spiffe://a".to_string(), 7, 0)]);
    }

    #[test]
    fn a_released_permit_makes_room_for_the_next_connection() {
        let l = limiter(conns(1), &[]);
        let w = l.worker();
        let first = w.connection("a");
        assert!(first.is_ok());
        assert_eq!(w.connection("a").err(), Some(Refused));
        drop(first);
        assert!(w.connection("a").is_ok());
    }

    #[test]
    fn a_partner_over_its_rate_is_refused_while_another_is_not() {
        let l = limiter(rate(1.0, 3), &[]);
        let w = l.worker_limits();
        for _ in 0..3 {
            assert_eq!(w.request_at("a", || 0), Ok(()));
        }
        assert!(w.request_at("a", || 0).is_err());
        assert_eq!(w.request_at("b", || 0), Ok(()));
        let counted = vec![("a".to_string(), 0, 1), ("b".to_string(), 0, 0)];
        assert_eq!(l.refused(), counted);
    }

    #[test]
    fn retry_after_is_the_time_until_the_next_token_rounded_up() {
        let w = limiter(rate(0.5, 1), &[]).worker_limits(); // one token per 2 s
        assert_eq!(w.request_at("a", || 0), Ok(()));
        let early = w.request_at("a", || SEC * 3 / 10);
        assert_eq!(
            early.map_err(|r| (r.wait, r.secs())),
            Err((Duration::from_millis(1700), 2))
        );
        let late = w.request_at("a", || SEC * 3 / 2);
        assert_eq!(
            late.map_err(|r| (r.wait, r.secs())),
            Err((Duration::from_millis(500), 1))
        );
        assert_eq!(w.request_at("a", || 2 * SEC), Ok(()), "the wait was exact");
        let whole = RetryAfter {
            wait: Duration::from_secs(3),
        };
        assert_eq!(whole.secs(), 3);
    }

    #[test]
    fn a_refused_request_does_not_use_up_the_rate() {
        let w = limiter(rate(1.0, 1), &[]).worker_limits();
        assert_eq!(w.request_at("a", || 0), Ok(()));
        assert!(w.request_at("a", || SEC / 2).is_err());
        assert_eq!(w.request_at("a", || SEC), Ok(()));
    }

    #[test]
    fn the_rate_is_exact_across_two_workers() {
        let l = limiter(rate(1.0, 100), &[]);
        let start = Barrier::new(2);
        let passed: usize = thread::scope(|s| {
            let race = || {
                let w = l.worker_limits();
                start.wait();
                (0..200).filter(|_| w.request_at("a", || 0).is_ok()).count()
            };
            let (a, b) = (s.spawn(race), s.spawn(race));
            a.join().unwrap_or(0) + b.join().unwrap_or(0)
        });
        assert_eq!(passed, 100);
    }

    #[test]
    fn an_override_replaces_the_default_for_that_partner() {
        let default = PartnerLimits {
            max_connections: Some(1),
            rate: Some(Rate {
                per_second: 1.0,
                burst: 1,
            }),
        };
        let l = limiter(default, &[("big", conns(3))]);
        let w = l.worker_limits();
        assert_eq!(open(&w, "big", 4).len(), 3);
        assert!(
            (0..10).all(|_| w.request_at("big", || 0).is_ok()),
            "no rate: replaced, not merged"
        );
        assert_eq!(open(&w, "small", 2).len(), 1);
        assert_eq!(w.request_at("small", || 0), Ok(()));
        assert!(w.request_at("small", || 0).is_err());
    }

    #[test]
    fn unlimited_partners_are_not_tracked() {
        let l = limiter(PartnerLimits::default(), &[]);
        let w = l.worker_limits();
        let held = open(&w, "a", 100);
        assert_eq!(held.len(), 100);
        assert!(held
            .iter()
            .all(|p| format!("{p:?}") == "Permit(\"unlimited\")"));
        assert!((0..100).all(|_| w.request("a").is_ok()));
        assert!(w.handshake(IpAddr::V4(Ipv4Addr::LOCALHOST)).is_ok());
        assert!(w.cache.borrow().is_empty() && l.refused().is_empty());

        // Limited by default, unlimited by override: still no state for it.
        let l = limiter(conns(1), &[("free", PartnerLimits::default())]);
        let w = l.worker_limits();
        assert_eq!(open(&w, "free", 5).len(), 5);
        assert!(w.cache.borrow().is_empty() && l.refused().is_empty());
    }

    #[test]
    fn a_worker_past_its_cache_bound_still_shares_the_partners_state() {
        let l = limiter(conns(1), &[]);
        let small = WorkerLimits::with_cache(Arc::clone(&l.shared), 1);
        let _a = open(&small, "a", 1);
        let held = open(&small, "b", 1);
        assert_eq!((held.len(), small.cache.borrow().len()), (1, 1));
        assert_eq!(l.worker().connection("b").err(), Some(Refused));
    }

    #[test]
    fn handshakes_are_limited_only_when_a_source_limit_is_set() {
        let src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let limited = SourceLimits {
            max_handshakes_per_source: Some(1),
        };
        let Ok(l) = LocalLimiter::new(PartnerLimits::default(), HashMap::new(), limited) else {
            panic!("valid limits");
        };
        let w = l.worker();
        let held = w.handshake(src);
        assert!(held.is_ok());
        assert_eq!(w.handshake(src).err(), Some(Refused));
        assert_eq!(l.refused_handshakes(), 1);
        let free = limiter(PartnerLimits::default(), &[]);
        assert!((0..5).all(|_| free.worker().handshake(src).is_ok()));
        assert_eq!(free.refused_handshakes(), 0);
    }

    #[test]
    fn rates_that_cannot_be_enforced_are_rejected() {
        let make = |l: PartnerLimits, o: &[(&str, PartnerLimits)]| {
            let o = o.iter().map(|(p, l)| (p.to_string(), *l)).collect();
            LocalLimiter::new(l, o, SourceLimits::default()).err()
        };
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(make(rate(bad, 1), &[]).is_some_and(|e| e.partner.is_none()));
        }
        let e = make(PartnerLimits::default(), &[("x", rate(1.0, 0))]);
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("limits for partner \"x\": rate burst must be at least 1".into())
        );
    }

    #[test]
    fn extreme_rates_still_limit() {
        let deep = limiter(rate(1.0, u32::MAX), &[]).worker_limits();
        assert!((0..3).all(|_| deep.request_at("a", || 0).is_ok()));
        let slow = limiter(rate(1e-30, 1), &[]).worker_limits();
        assert_eq!(slow.request_at("a", || 0), Ok(()));
        assert!(
            slow.request_at("a", || u64::MAX / 4).is_err(),
            "no saturation"
        );
        let fast = limiter(rate(1e30, 2), &[]).worker_limits(); // 1 ns apart
        assert!(fast.request_at("a", || 5).is_ok() && fast.request_at("a", || 5).is_ok());
        assert!(fast.request_at("a", || 5).is_err());
    }

    #[test]
    fn connection_counts_never_exceed_the_limit_and_return_to_zero() {
        const MAX: u32 = 5;
        let l = limiter(conns(MAX), &[]);
        let state = l.shared.state("p", conns(MAX));
        thread::scope(|s| {
            for seed in [0x9e37_79b9_7f4a_7c15_u64, 0xdead_beef_cafe_f00d] {
                let (l, state) = (&l, &state);
                s.spawn(move || {
                    let w = l.worker_limits();
                    let mut x = seed;
                    let mut held = Vec::new();
                    for _ in 0..50_000 {
                        // xorshift64
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if x % 2 == 0 {
                            held.extend(w.connection("p").ok());
                        } else if !held.is_empty() {
                            held.swap_remove((x >> 32) as usize % held.len());
                        }
                        assert!(state.conns.load(Relaxed) <= MAX);
                    }
                });
            }
        });
        assert_eq!(state.conns.load(Relaxed), 0);
        assert!(
            state.refused_conns.load(Relaxed) > 0,
            "the limit was reached"
        );
    }
}
