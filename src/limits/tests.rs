//! Tests of the limiter: exact counts across threads, GCRA timing, overrides, sources.

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
