//! Per-worker metric shards (no locks, no shared atomics on the hot path),
//! snapshotted on request and merged only when the admin endpoint is read.

pub mod export;
pub mod reloads;

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
    /// Refused by a per-partner or per-source limit, by kind.
    pub limited: BTreeMap<&'static str, u64>,
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
            limited: BTreeMap::new(),
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
        for (k, v) in &o.limited {
            *self.limited.entry(k).or_default() += v;
        }
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

/// A worker's shard: one `ListenerStats` per listener name ever served (a
/// listener a reload removed keeps its counters until the process ends).
#[derive(Default)]
pub struct WorkerMetrics {
    pub listeners: Vec<(String, ListenerStats)>,
    /// Per listener, like `listeners`; written by this worker's ticket sealers only.
    tickets: Vec<Arc<TicketCounters>>,
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
    pub async fn serve(self, mut rx: mpsc::UnboundedReceiver<oneshot::Sender<WorkerSnapshot>>) {
        while let Some(reply) = rx.recv().await {
            let m = self.inner.borrow();
            let mut snap = m.listeners.clone();
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

/// What the admin thread holds: a way to ask every worker for its shard.
pub struct Registry {
    /// Ticket keys in use (written by the main thread on load/rotation).
    pub keys: Arc<Mutex<KeyInfo>>,
    pub workers: Vec<mpsc::UnboundedSender<oneshot::Sender<WorkerSnapshot>>>,
    /// Reload outcomes and the plan in force (written by the main thread).
    pub reloads: Arc<Mutex<reloads::ReloadInfo>>,
    /// Each listener's limiter in the plan in force (written by the main thread).
    pub limiters: Arc<Mutex<Limiters>>,
    /// Asks the main thread for a whole-config reload and waits for its outcome.
    pub reload: Box<dyn Fn() -> Option<reloads::Outcome> + Send + Sync>,
    /// Set at SIGTERM: `/ready` answers 503 so a load balancer stops sending.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

/// Per partner seen with a limit: (identity, refused connections, refused requests).
pub type PartnerRefusals = Vec<(String, u64, u64)>;

/// Listener name → its limiter, for per-partner refusal counts.
pub type Limiters = Vec<(String, Arc<dyn crate::limits::Limiter>)>;

/// Which ticket keys are loaded, for `/metrics` and `/stats`.
#[derive(Debug, Clone, Default)]
pub struct KeyInfo {
    /// "file:<path>" or "memory".
    pub source: String,
    pub ids: Vec<(&'static str, String)>,
    /// Unix time of the last successful load or rotation.
    pub loaded_at: i64,
    pub last_error: Option<String>,
    /// Finished reload attempts, applied or not (SIGHUP, admin, a changed
    /// file); kept here so a script can wait for "the next one is done".
    pub reloads: u64,
}

/// Per-worker snapshots, in worker order (`None` for a worker that did not answer).
pub type Snapshot = Vec<Option<WorkerSnapshot>>;

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

/// Merges per-worker snapshots into one `ListenerStats` per listener name, in
/// the order the names were first seen.
pub fn merge(snap: &Snapshot) -> (Vec<String>, Vec<ListenerStats>) {
    let mut names: Vec<String> = Vec::new();
    let mut out: Vec<ListenerStats> = Vec::new();
    for w in snap.iter().flatten() {
        for (n, s) in w {
            match names.iter().position(|x| x == n) {
                Some(i) => out[i].merge(s), // ok: names and out grow together
                None => {
                    names.push(n.clone());
                    out.push(s.clone());
                }
            }
        }
    }
    (names, out)
}
