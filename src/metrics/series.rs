//! The figures one worker records per listener: handshake series split by
//! kind, outcome, version and group (two clocks each), per-partner figures,
//! and every client certificate seen. Fixed-size arrays and histograms
//! allocated once per series, so recording after warm-up takes no lock and
//! allocates nothing.

use crate::outcome::Outcome;
use crate::tls::Kind;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::Duration;

/// Upper bounds (µs) of the Prometheus buckets: 100 µs .. 10 s, for handshakes.
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Coarser bounds for per-partner latency (fewer series per partner).
pub const PARTNER_BUCKETS_US: [u64; 8] = [
    1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000,
];

/// One handshake series: which handshakes it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub kind: Kind,
    pub ok: bool,
    pub version: &'static str,
    pub group: &'static str,
}

/// A latency distribution: Prometheus buckets (non-cumulative; the last is
/// +Inf), an exact sum, and optionally an HDR histogram for percentiles.
#[derive(Clone)]
pub struct Clock {
    pub buckets: [u64; BUCKETS_US.len() + 1],
    pub sum_us: u64,
    /// 1 µs .. 60 s, 2 significant digits (1 %): about 19 KiB. `None` in a
    /// snapshot taken for `/metrics`, which needs only the buckets.
    pub hdr: Option<Box<Histogram<u64>>>,
}

fn hdr() -> Box<Histogram<u64>> {
    let h = Histogram::new_with_bounds(1, 60_000_000, 2).expect("constant bounds"); // ok: constant, valid bounds
    Box::new(h)
}

fn bucket_of(bounds: &[u64], us: u64) -> usize {
    bounds.partition_point(|&b| b < us)
}

impl Clock {
    fn new() -> Clock {
        Clock {
            buckets: [0; BUCKETS_US.len() + 1],
            sum_us: 0,
            hdr: Some(hdr()),
        }
    }

    fn record(&mut self, us: u64) {
        self.buckets[bucket_of(&BUCKETS_US, us)] += 1; // ok: partition_point ≤ len, and the array has len + 1
        self.sum_us = self.sum_us.saturating_add(us);
        if let Some(h) = &mut self.hdr {
            h.saturating_record(us);
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    fn merge(&mut self, o: &Clock) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(o.sum_us);
        match (&mut self.hdr, &o.hdr) {
            (Some(a), Some(b)) => {
                let _ = a.add(&**b);
            }
            (None, Some(b)) => self.hdr = Some(b.clone()),
            _ => {}
        }
    }

    fn light(&self) -> Clock {
        Clock {
            buckets: self.buckets,
            sum_us: self.sum_us,
            hdr: None,
        }
    }
}

/// Total (accept → handshake complete) and CPU-side (time in rustls) clocks.
#[derive(Clone)]
pub struct Series {
    pub total: Clock,
    pub cpu: Clock,
}

impl Series {
    pub fn new() -> Series {
        Series {
            total: Clock::new(),
            cpu: Clock::new(),
        }
    }

    pub fn record(&mut self, total: Duration, cpu: Duration) {
        self.total.record(micros(total));
        self.cpu.record(micros(cpu));
    }

    pub fn merge(&mut self, o: &Series) {
        self.total.merge(&o.total);
        self.cpu.merge(&o.cpu);
    }

    pub fn light(&self) -> Series {
        Series {
            total: self.total.light(),
            cpu: self.cpu.light(),
        }
    }
}

impl Default for Series {
    fn default() -> Self {
        Series::new()
    }
}

pub fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, 60_000_000)
}

/// What one partner identity did on one listener.
#[derive(Debug, Clone, Default)]
pub struct PartnerStats {
    /// Completed handshakes: full, resumed.
    pub handshakes: [u64; 2],
    pub failures: BTreeMap<Outcome, u64>,
    /// Requests by status class: 1xx .. 5xx.
    pub requests: [u64; 5],
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Handshake latency per kind (non-cumulative buckets, the last is +Inf).
    pub latency: [[u64; PARTNER_BUCKETS_US.len() + 1]; 2],
    pub latency_sum_us: [u64; 2],
}

impl PartnerStats {
    pub fn handshake(&mut self, kind: Kind, took: Duration) {
        let k = kind as usize;
        let us = micros(took);
        self.handshakes[k] += 1; // ok: Kind has two variants, the arrays two entries
        self.latency[k][bucket_of(&PARTNER_BUCKETS_US, us)] += 1; // ok: as above, and partition_point ≤ len
        self.latency_sum_us[k] = self.latency_sum_us[k].saturating_add(us); // ok: as above
    }

    pub fn request(&mut self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class] += 1; // ok: class in 0..5
    }

    /// Everything it did, for the cap's ordering.
    pub fn activity(&self) -> u64 {
        self.handshakes.iter().sum::<u64>()
            + self.failures.values().sum::<u64>()
            + self.requests.iter().sum::<u64>()
    }

    pub fn merge(&mut self, o: &PartnerStats) {
        for (a, b) in self.handshakes.iter_mut().zip(o.handshakes) {
            *a += b;
        }
        for (k, v) in &o.failures {
            *self.failures.entry(*k).or_default() += v;
        }
        for (a, b) in self.requests.iter_mut().zip(o.requests) {
            *a += b;
        }
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        for (a, b) in self.latency_sum_us.iter_mut().zip(o.latency_sum_us) {
            *a = a.saturating_add(b);
        }
    }
}

/// A client certificate seen on a listener.
#[derive(Debug, Clone)]
pub struct CertSeen {
    pub partner: String,
    pub serial: String,
    pub issuer: String,
    pub not_before: i64,
    pub not_after: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub connections: u64,
}

impl CertSeen {
    pub fn merge(&mut self, o: &CertSeen) {
        self.first_seen = self.first_seen.min(o.first_seen);
        self.last_seen = self.last_seen.max(o.last_seen);
        self.connections += o.connections;
    }
}
