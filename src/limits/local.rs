//! The default `Limiter`: partner states shared by the workers of this
//! process (one atomic counter and one GCRA cell each), found through a
//! per-worker cache so the steady state takes no lock.

use super::source::SourceTable;
use super::*;

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
pub(super) struct PartnerState {
    pub(super) conns: AtomicU32,
    /// Theoretical arrival time, ns since the limiter's epoch.
    tat: AtomicU64,
    pub(super) refused_conns: AtomicU64,
    pub(super) refused_requests: AtomicU64,
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

pub(super) struct Shared {
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

    pub(super) fn state(&self, partner: &str, l: PartnerLimits) -> Arc<PartnerState> {
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
    pub(super) shared: Arc<Shared>,
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
    pub(super) shared: Arc<Shared>,
    pub(super) cache: RefCell<HashMap<String, Arc<PartnerState>>>,
    cap: usize,
}

impl WorkerLimits {
    pub(super) fn with_cache(shared: Arc<Shared>, cap: usize) -> Self {
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
    pub(super) fn request_at(
        &self,
        partner: &str,
        now: impl FnOnce() -> u64,
    ) -> Result<(), RetryAfter> {
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
