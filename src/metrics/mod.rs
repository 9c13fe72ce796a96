//! Per-worker metric shards (no locks, no shared atomics on the hot path),
//! snapshotted on request and merged only when the admin endpoint is read.

pub mod export;
pub mod hdrlog;
pub mod json;
pub mod partners;
mod registry;
pub mod reloads;

pub mod series;

use crate::outcome::Outcome;
use crate::tls::tickets::TicketCounters;
use crate::tls::Kind;
use series::{CertSeen, PartnerStats, Series, SeriesKey};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// One listener's figures within one worker (or merged over workers).
#[derive(Clone, Default)]
pub struct ListenerStats {
    /// Handshakes, completed or failed, by kind, outcome, version and group.
    pub series: BTreeMap<SeriesKey, Series>,
    pub failures: BTreeMap<Outcome, u64>,
    pub versions: BTreeMap<&'static str, u64>,
    pub accepted: u64,
    pub active: i64,
    /// Connections in their handshake now (PROXY header included).
    pub handshaking: i64,
    pub rejected_limit: u64,
    pub denied: u64,
    /// Open connections closed because a reloaded CRL revoked their certificate.
    pub closed_revoked: u64,
    /// Refused by a per-partner or per-source limit, by kind.
    pub limited: BTreeMap<&'static str, u64>,
    pub requests: BTreeMap<u16, u64>,
    pub upstream_errors: BTreeMap<&'static str, u64>,
    /// Tickets not accepted, by cause (filled from the sealers at snapshot time).
    pub ticket_failures: BTreeMap<&'static str, u64>,
    /// By partner identity (SPIFFE ID, else subject).
    pub partners: HashMap<String, PartnerStats>,
    /// Client certificates seen, by SHA-256.
    pub certs: HashMap<String, CertSeen>,
}

fn add<K: Ord + Clone>(to: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
    for (k, v) in from {
        *to.entry(k.clone()).or_default() += v;
    }
}

impl ListenerStats {
    pub fn merge(&mut self, o: &ListenerStats) {
        for (k, s) in &o.series {
            match self.series.get_mut(k) {
                Some(m) => m.merge(s),
                None => {
                    self.series.insert(*k, s.clone());
                }
            }
        }
        add(&mut self.failures, &o.failures);
        add(&mut self.versions, &o.versions);
        self.accepted += o.accepted;
        self.active += o.active;
        self.handshaking += o.handshaking;
        self.rejected_limit += o.rejected_limit;
        self.denied += o.denied;
        self.closed_revoked += o.closed_revoked;
        add(&mut self.limited, &o.limited);
        add(&mut self.requests, &o.requests);
        add(&mut self.upstream_errors, &o.upstream_errors);
        add(&mut self.ticket_failures, &o.ticket_failures);
        for (p, s) in &o.partners {
            self.partners.entry(p.clone()).or_default().merge(s);
        }
        for (sha, c) in &o.certs {
            match self.certs.get_mut(sha) {
                Some(m) => m.merge(c),
                None => {
                    self.certs.insert(sha.clone(), c.clone());
                }
            }
        }
    }

    /// A copy without the HDR histograms: what `/metrics` needs.
    pub fn light(&self) -> ListenerStats {
        ListenerStats {
            series: self.series.iter().map(|(k, s)| (*k, s.light())).collect(),
            partners: self.partners.clone(),
            certs: self.certs.clone(),
            failures: self.failures.clone(),
            versions: self.versions.clone(),
            limited: self.limited.clone(),
            requests: self.requests.clone(),
            upstream_errors: self.upstream_errors.clone(),
            ticket_failures: self.ticket_failures.clone(),
            ..*self
        }
    }

    /// The completed handshakes of one kind, all versions and groups.
    pub fn completed(&self, kind: Kind) -> Series {
        let mut out = Series::new();
        for (_, s) in self.series.iter().filter(|(k, _)| k.ok && k.kind == kind) {
            out.merge(s);
        }
        out
    }

    /// Completed handshakes of one kind.
    pub fn count(&self, kind: Kind) -> u64 {
        self.series
            .iter()
            .filter(|(k, _)| k.ok && k.kind == kind)
            .map(|(_, s)| s.total.count())
            .sum()
    }
}

/// A worker's shard: one `ListenerStats` per listener name ever served (a
/// listener a reload removed keeps its counters until the process ends).
#[derive(Default)]
pub struct WorkerMetrics {
    pub listeners: Vec<(String, ListenerStats)>,
    /// Per listener, like `listeners`; written by this worker's ticket sealers only.
    tickets: Vec<Arc<TicketCounters>>,
}

/// Distinct client certificates a worker remembers per listener: a partner
/// issuing short-lived certificates rotates through many.
const MAX_CERTS: usize = 4096;

/// Makes room in a full inventory: certificates expired for a day go first,
/// then (if none has) the one seen longest ago.
fn evict(certs: &mut HashMap<String, CertSeen>, now: i64) {
    let before = certs.len();
    certs.retain(|_, c| c.not_after >= now - 86_400);
    if certs.len() == before {
        let oldest = certs
            .iter()
            .min_by_key(|(_, c)| c.last_seen)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            certs.remove(&k);
        }
    }
}

/// The partner's entry, made on its first event (a `String` once per partner).
fn partner_entry<'a>(s: &'a mut ListenerStats, p: &str) -> &'a mut PartnerStats {
    if !s.partners.contains_key(p) {
        s.partners.insert(p.to_string(), PartnerStats::default());
    }
    s.partners.get_mut(p).unwrap_or_else(|| unreachable!()) // ok: inserted just above
}

/// Handle used on the hot path: a cheap, thread-local reference to one listener's stats.
#[derive(Clone)]
pub struct Shard {
    inner: Rc<RefCell<WorkerMetrics>>,
    idx: usize,
}

impl Shard {
    pub fn with<R>(&self, f: impl FnOnce(&mut ListenerStats) -> R) -> R {
        let mut m = self.inner.borrow_mut();
        f(&mut m.listeners[self.idx].1) // ok: idx < listeners.len(): entries are never removed
    }

    /// A completed handshake: its series, and the partner's figures.
    pub fn handshake(&self, key: SeriesKey, total: Duration, cpu: Duration, partner: Option<&str>) {
        if cfg!(feature = "no-recording") {
            return;
        }
        self.with(|s| {
            s.series.entry(key).or_default().record(total, cpu);
            if key.ok {
                *s.versions.entry(key.version).or_default() += 1;
            }
            if let (true, Some(p)) = (key.ok, partner) {
                partner_entry(s, p).handshake(key.kind, total);
            }
        });
    }

    /// A connection that ends before it is served: counted by outcome, and
    /// for the partner when the refusal names one.
    pub fn failure(&self, o: Outcome, partner: Option<&str>) {
        self.with(|s| {
            *s.failures.entry(o).or_default() += 1;
            if let Some(p) = partner {
                *partner_entry(s, p).failures.entry(o).or_default() += 1;
            }
        });
    }

    /// A refusal after the handshake (policy, limits): the partner's, while
    /// the listener counts the connection as a completed handshake.
    pub fn partner_failure(&self, partner: &str, o: Outcome) {
        self.with(|s| *partner_entry(s, partner).failures.entry(o).or_default() += 1);
    }

    /// A verified connection: the inventory of certificates seen.
    pub fn cert_seen(&self, v: &crate::tls::verified::Verified, now: i64) {
        if cfg!(feature = "no-recording") {
            return;
        }
        self.with(|s| match s.certs.get_mut(&v.peer.sha256) {
            Some(c) => {
                c.last_seen = now;
                c.connections += 1;
            }
            None => {
                if s.certs.len() >= MAX_CERTS {
                    evict(&mut s.certs, now);
                }
                let c = CertSeen {
                    partner: v.peer.label().to_string(),
                    serial: v.peer.serial.clone(),
                    issuer: v.peer.issuer.clone(),
                    not_before: v.peer.not_before,
                    not_after: v.peer.not_after,
                    first_seen: now,
                    last_seen: now,
                    connections: 1,
                };
                s.certs.insert(v.peer.sha256.clone(), c);
            }
        });
    }

    /// Bytes a partner moved (request and response bodies, tcp-mode pipes).
    pub fn bytes(&self, partner: &str, bytes_in: u64, bytes_out: u64) {
        if cfg!(feature = "no-recording") {
            return;
        }
        self.with(|s| {
            let p = partner_entry(s, partner);
            p.bytes_in += bytes_in;
            p.bytes_out += bytes_out;
        });
    }

    /// A request's status, for the listener and the partner.
    pub fn partner_request(&self, partner: &str, status: u16) {
        if cfg!(feature = "no-recording") {
            return;
        }
        self.with(|s| partner_entry(s, partner).request(status));
    }

    pub fn request(&self, status: u16) {
        self.with(|s| *s.requests.entry(status).or_default() += 1);
    }

    /// A connection, handshake or request refused by a limit.
    pub fn limited(&self, kind: &'static str) {
        self.with(|s| *s.limited.entry(kind).or_default() += 1);
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.with(|s| *s.upstream_errors.entry(kind).or_default() += 1);
    }

    /// The counters this listener's ticket sealer on this worker writes.
    pub fn tickets(&self) -> Arc<TicketCounters> {
        self.inner.borrow().tickets[self.idx].clone() // ok: same index as `listeners`
    }
}

/// All shards of one worker.
#[derive(Clone, Default)]
pub struct Shards {
    inner: Rc<RefCell<WorkerMetrics>>,
}

impl Shards {
    /// Connections open on this worker, all listeners.
    pub fn open_connections(&self) -> i64 {
        self.inner
            .borrow()
            .listeners
            .iter()
            .map(|(_, s)| s.active)
            .sum()
    }

    /// The shard of the listener called `name`, made on first use. Resolved
    /// once per accepted connection (a scan of a few names), not per event.
    pub fn listener(&self, name: &str) -> Shard {
        let mut m = self.inner.borrow_mut();
        let idx = match m.listeners.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                m.listeners
                    .push((name.to_string(), ListenerStats::default()));
                m.tickets.push(Arc::default());
                m.listeners.len() - 1
            }
        };
        Shard {
            inner: self.inner.clone(),
            idx,
        }
    }

    /// Answers snapshot requests from the admin thread until it goes away.
    pub async fn serve(self, mut rx: mpsc::UnboundedReceiver<SnapshotRequest>) {
        while let Some((detail, reply)) = rx.recv().await {
            let m = self.inner.borrow();
            let mut snap: WorkerSnapshot = match detail {
                Detail::Ping => Vec::new(),
                Detail::Full => m.listeners.clone(),
                Detail::Light => m
                    .listeners
                    .iter()
                    .map(|(n, s)| (n.clone(), s.light()))
                    .collect(),
            };
            for ((_, s), t) in snap.iter_mut().zip(m.tickets.iter()) {
                let load =
                    |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                s.ticket_failures
                    .insert("unknown_key", load(&t.unknown_key));
                s.ticket_failures.insert("expired", load(&t.expired));
                s.ticket_failures.insert("malformed", load(&t.malformed));
            }
            drop(m);
            let _ = reply.send(snap);
        }
    }
}

/// One worker's stats, per listener name.
pub type WorkerSnapshot = Vec<(String, ListenerStats)>;

/// How much a snapshot copies: `/metrics` needs no HDR histogram (buckets
/// and sums suffice, and add up across hosts); `/stats` wants exact percentiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Nothing: a health check only wants to know the worker answers.
    Ping,
    Light,
    Full,
}

pub type SnapshotRequest = (Detail, oneshot::Sender<WorkerSnapshot>);

pub use registry::{merge, KeyInfo, Limiters, PartnerRefusals, Registry, Snapshot};
