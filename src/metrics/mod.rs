//! Per-worker metric shards (no locks, no shared atomics on the hot path),
//! snapshotted on request and merged only when the admin endpoint is read.

pub mod export;

use crate::tls::tickets::TicketCounters;
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// One listener's figures within one worker (or merged over workers).
#[derive(Clone)]
pub struct ListenerStats {
    pub hs_full: Histogram<u64>,
    pub hs_resumed: Histogram<u64>,
    pub failures: BTreeMap<&'static str, u64>,
    pub versions: BTreeMap<&'static str, u64>,
    pub accepted: u64,
    pub active: i64,
    pub rejected_limit: u64,
    pub denied: u64,
    /// Open connections closed because a reloaded CRL revoked their certificate.
    pub closed_revoked: u64,
    pub requests: BTreeMap<u16, u64>,
    pub upstream_errors: BTreeMap<&'static str, u64>,
    /// Tickets not accepted, by cause (filled from the sealers at snapshot time).
    pub ticket_failures: BTreeMap<&'static str, u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s, 3 significant digits; the bounds are constants.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds") // ok: constant, valid bounds
}

impl Default for ListenerStats {
    fn default() -> Self {
        ListenerStats {
            hs_full: histogram(),
            hs_resumed: histogram(),
            failures: BTreeMap::new(),
            versions: BTreeMap::new(),
            accepted: 0,
            active: 0,
            rejected_limit: 0,
            denied: 0,
            closed_revoked: 0,
            requests: BTreeMap::new(),
            upstream_errors: BTreeMap::new(),
            ticket_failures: BTreeMap::new(),
        }
    }
}

impl ListenerStats {
    pub fn merge(&mut self, o: &ListenerStats) {
        let _ = self.hs_full.add(&o.hs_full);
        let _ = self.hs_resumed.add(&o.hs_resumed);
        for (k, v) in &o.failures {
            *self.failures.entry(k).or_default() += v;
        }
        for (k, v) in &o.versions {
            *self.versions.entry(k).or_default() += v;
        }
        self.accepted += o.accepted;
        self.active += o.active;
        self.rejected_limit += o.rejected_limit;
        self.denied += o.denied;
        self.closed_revoked += o.closed_revoked;
        for (k, v) in &o.requests {
            *self.requests.entry(*k).or_default() += v;
        }
        for (k, v) in &o.upstream_errors {
            *self.upstream_errors.entry(k).or_default() += v;
        }
        for (k, v) in &o.ticket_failures {
            *self.ticket_failures.entry(k).or_default() += v;
        }
    }
}

/// A worker's shard: one `ListenerStats` per listener, by listener index.
pub struct WorkerMetrics {
    pub listeners: Vec<ListenerStats>,
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
        f(&mut m.listeners[self.idx]) // ok: idx < listeners.len() by construction in `Shards::new`
    }

    pub fn handshake(&self, took: Duration, resumed: bool, version: &'static str) {
        let us = (took.as_micros() as u64).clamp(1, 60_000_000);
        self.with(|s| {
            let h = if resumed {
                &mut s.hs_resumed
            } else {
                &mut s.hs_full
            };
            h.saturating_record(us);
            *s.versions.entry(version).or_default() += 1;
        });
    }

    pub fn failure(&self, reason: &'static str) {
        self.with(|s| *s.failures.entry(reason).or_default() += 1);
    }

    pub fn request(&self, status: u16) {
        self.with(|s| *s.requests.entry(status).or_default() += 1);
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.with(|s| *s.upstream_errors.entry(kind).or_default() += 1);
    }
}

/// All shards of one worker.
#[derive(Clone)]
pub struct Shards {
    inner: Rc<RefCell<WorkerMetrics>>,
    /// Per listener; written by this worker's ticket sealers only.
    pub tickets: Rc<Vec<Arc<TicketCounters>>>,
}

impl Shards {
    pub fn new(listeners: usize) -> Self {
        Shards {
            inner: Rc::new(RefCell::new(WorkerMetrics {
                listeners: (0..listeners).map(|_| ListenerStats::default()).collect(),
            })),
            tickets: Rc::new((0..listeners).map(|_| Arc::default()).collect()),
        }
    }

    /// Connections open on this worker, all listeners.
    pub fn open_connections(&self) -> i64 {
        self.inner.borrow().listeners.iter().map(|s| s.active).sum()
    }

    pub fn listener(&self, idx: usize) -> Shard {
        Shard {
            inner: self.inner.clone(),
            idx,
        }
    }

    /// Answers snapshot requests from the admin thread until it goes away.
    pub async fn serve(self, mut rx: mpsc::UnboundedReceiver<oneshot::Sender<Vec<ListenerStats>>>) {
        while let Some(reply) = rx.recv().await {
            let mut snap = self.inner.borrow().listeners.clone();
            for (s, t) in snap.iter_mut().zip(self.tickets.iter()) {
                let load =
                    |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                s.ticket_failures
                    .insert("unknown_key", load(&t.unknown_key));
                s.ticket_failures.insert("expired", load(&t.expired));
                s.ticket_failures.insert("malformed", load(&t.malformed));
            }
            let _ = reply.send(snap);
        }
    }
}

/// What the admin thread holds: a way to ask every worker for its shard.
pub struct Registry {
    pub listener_names: Vec<String>,
    /// Ticket keys in use (written by the main thread on load/rotation).
    pub keys: Arc<Mutex<KeyInfo>>,
    pub workers: Vec<mpsc::UnboundedSender<oneshot::Sender<Vec<ListenerStats>>>>,
    /// Set at SIGTERM: `/ready` answers 503 so a load balancer stops sending.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

/// Which ticket keys are loaded, for `/metrics` and `/stats`.
#[derive(Debug, Clone, Default)]
pub struct KeyInfo {
    /// "file:<path>" or "memory".
    pub source: String,
    pub ids: Vec<(&'static str, String)>,
    /// Unix time of the last successful load or rotation.
    pub loaded_at: i64,
    pub last_error: Option<String>,
    /// Completed reloads of TLS material (SIGHUP or a changed file).
    pub reloads: u64,
}

/// Per-worker snapshots, in worker order (`None` for a worker that did not answer).
pub type Snapshot = Vec<Option<Vec<ListenerStats>>>;

impl Registry {
    /// Asks each worker for its shard, waiting up to `timeout` for each.
    pub fn collect(&self, timeout: Duration) -> Snapshot {
        let pending: Vec<_> = self
            .workers
            .iter()
            .map(|w| {
                let (tx, rx) = oneshot::channel();
                w.send(tx).ok().map(|_| rx)
            })
            .collect();
        let deadline = std::time::Instant::now() + timeout;
        pending
            .into_iter()
            .map(|rx| {
                let mut rx = rx?;
                loop {
                    match rx.try_recv() {
                        Ok(v) => return Some(v),
                        Err(oneshot::error::TryRecvError::Closed) => return None,
                        Err(oneshot::error::TryRecvError::Empty) => {
                            if std::time::Instant::now() >= deadline {
                                return None;
                            }
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                }
            })
            .collect()
    }
}

/// Merges per-worker snapshots into one `ListenerStats` per listener.
pub fn merge(names: usize, snap: &Snapshot) -> Vec<ListenerStats> {
    let mut out: Vec<ListenerStats> = (0..names).map(|_| ListenerStats::default()).collect();
    for w in snap.iter().flatten() {
        for (o, s) in out.iter_mut().zip(w) {
            o.merge(s);
        }
    }
    out
}
