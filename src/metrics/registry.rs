//! What the admin side holds to read the workers (a channel to each, asked
//! only when an endpoint is read) and the main thread's shared state; and
//! the merge of per-worker snapshots.

use super::{reloads, Detail, ListenerStats, SnapshotRequest, WorkerSnapshot};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What the admin thread holds: a way to ask every worker for its shard.
pub struct Registry {
    /// Ticket keys in use (written by the main thread on load/rotation).
    pub keys: Arc<Mutex<KeyInfo>>,
    pub workers: Vec<mpsc::UnboundedSender<SnapshotRequest>>,
    /// Reload outcomes and the plan in force (written by the main thread).
    pub reloads: Arc<Mutex<reloads::ReloadInfo>>,
    /// Each listener's limiter in the plan in force (written by the main thread).
    pub limiters: Arc<Mutex<Limiters>>,
    /// Asks the main thread for a whole-config reload and waits for its outcome.
    pub reload: Box<dyn Fn() -> Option<reloads::Outcome> + Send + Sync>,
    /// Each worker's last answer, for one that is late (see `collect`).
    pub last_full: Mutex<Vec<Option<WorkerSnapshot>>>,
    pub last_light: Mutex<Vec<Option<WorkerSnapshot>>>,
    pub stale: std::sync::atomic::AtomicUsize,
    /// Which partners have series of their own (see `partners::Slots`).
    pub slots: super::partners::Slots,
    /// Asks the main thread for a binary upgrade and waits until the new
    /// process serves (its pid) or failed.
    pub upgrade: Box<dyn Fn() -> Option<Result<u32, String>> + Send + Sync>,
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
    pub fn collect(&self, timeout: Duration, detail: Detail) -> Snapshot {
        let fresh = self.ask(timeout, detail);
        if detail == Detail::Ping {
            return fresh;
        }
        // A worker late to answer is read from its last snapshot: counters a
        // scrape sees never go down (Prometheus would take that for a reset).
        let cache = match detail {
            Detail::Full => &self.last_full,
            _ => &self.last_light,
        };
        let mut last = cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.resize(fresh.len(), None);
        let mut stale = 0;
        let out = fresh
            .into_iter()
            .zip(last.iter_mut())
            .map(|(f, l)| match f {
                Some(s) => {
                    *l = Some(s.clone());
                    Some(s)
                }
                None => {
                    stale += 1;
                    l.clone()
                }
            })
            .collect();
        self.stale
            .store(stale, std::sync::atomic::Ordering::Relaxed);
        out
    }

    /// Workers whose figures in the last read came from an earlier one.
    pub fn stale_workers(&self) -> usize {
        self.stale.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn ask(&self, timeout: Duration, detail: Detail) -> Snapshot {
        let pending: Vec<_> = self
            .workers
            .iter()
            .map(|w| {
                let (tx, rx) = oneshot::channel();
                w.send((detail, tx)).ok().map(|_| rx)
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
