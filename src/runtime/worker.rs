//! One worker: a pinned thread with its own tokio-uring ring, its own
//! SO_REUSEPORT socket per listener, its own pools and metric shard. It serves
//! the plan it was last sent; each connection keeps the generation it began in.

use super::loglimit::LogLimit;
use super::{accept, conn};
use crate::config::{AccessLogFormat, Config, LogFormat};
use crate::limits::WorkerLimiter;
use crate::metrics::Shards;
use crate::plan::Plan;
use crate::proxy::access::AccessLog;
use crate::proxy::upstream::Pool;
use crate::proxy::{Current, Drain, View};
use crate::tls::server::{with_tickets, ListenerTls};
use crate::tls::tickets::KeySet;
use crate::tls::verified::VerifiedCache;
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What the main thread sends a worker: the plan to serve, the ticket keys,
/// and sockets for listeners that are new (or moved) in this plan.
pub struct Update {
    pub plan: Arc<Plan>,
    pub keys: Arc<KeySet>,
    pub sockets: Vec<(String, std::net::TcpListener)>,
}

/// A listener's TLS state on this worker, for one plan generation.
pub struct ListenerState {
    pub tls: Arc<ListenerTls>,
    /// Verified client chains (see `tls::verified`).
    pub verified: RefCell<VerifiedCache>,
    /// This worker's handle on the listener's limiter.
    pub limits: Box<dyn WorkerLimiter>,
}

/// `ListenerState` with this worker's ticket sealer (replaced on key rotation).
pub struct Live {
    pub state: Rc<ListenerState>,
    pub config: crate::tls::ServerConfig,
}

/// One generation as this worker serves it: the view proxies read, and the
/// TLS state per listener (indexed like `Plan::listeners`).
pub struct Gen {
    pub view: Rc<View>,
    pub live: Vec<Live>,
}

/// State shared by the tasks of one worker (never across threads).
pub struct WorkerCtx {
    pub gen: RefCell<Rc<Gen>>,
    /// The same view as `gen`, in the form the proxy reads per request.
    pub current: Current,
    pub shards: Shards,
    pub handshaking: Cell<usize>,
    pub log_limit: RefCell<LogLimit>,
    /// Open connections by listener run, for drains and `close_revoked`.
    pub open: super::open::OpenConns,
    pub runs: RefCell<Vec<accept::Run>>,
    /// Set once the process drains: a late update starts no new runs.
    pub stopping: Cell<bool>,
    /// The access-log file of the plan in force (reopened on every update,
    /// so a SIGHUP after logrotate moves writes to the new file).
    pub access: Rc<RefCell<Option<Rc<AccessLog>>>>,
}

/// Opens the plan's access log for this worker, with its flusher task: the
/// `[access_log]` file, else (with `log_requests`) the process log.
fn open_access(plan: &Plan) -> Option<Rc<AccessLog>> {
    let cfg = &plan.config;
    let stderr = || {
        cfg.log_requests.then(|| {
            AccessLog::stderr(match cfg.log_format {
                LogFormat::Json => AccessLogFormat::Json,
                LogFormat::Text => AccessLogFormat::Text,
            })
        })
    };
    let log = match &cfg.access_log {
        None => stderr(),
        Some(c) => match AccessLog::open(&c.path, c.format) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(path = %c.path.display(), error = %e, "cannot open the access log; request lines go to the process log");
                stderr()
            }
        },
    }?;
    tokio_uring::spawn(AccessLog::flusher(Rc::downgrade(&log)));
    Some(log)
}

fn ring_error(e: io::Error) -> String {
    let code = e.raw_os_error().unwrap_or(0);
    let hint = if code == libc::EPERM || code == libc::ENOSYS || code == libc::EACCES {
        "io_uring is disabled or blocked here. Check `sysctl kernel.io_uring_disabled` (must be 0: \
         `sysctl -w kernel.io_uring_disabled=0`), and in a container allow the io_uring_setup, \
         io_uring_enter and io_uring_register syscalls in the seccomp profile"
    } else if code == libc::ENOMEM {
        "the ring's locked memory did not fit RLIMIT_MEMLOCK: raise it (`ulimit -l`, or LimitMEMLOCK= in systemd)"
    } else {
        "io_uring is required (Linux 5.11 or newer)"
    };
    format!("cannot create the io_uring ring: {e}. {hint}")
}

/// A worker's tokio-uring runtime, as a `Result` (`tokio_uring::start` panics).
fn runtime(cfg: &Config) -> Result<tokio_uring::Runtime, String> {
    let mut b = tokio_uring::builder();
    b.entries(cfg.ring_entries);
    if cfg.sqpoll_idle_ms > 0 {
        let mut u = tokio_uring::uring_builder();
        u.setup_sqpoll(cfg.sqpoll_idle_ms);
        b.uring_builder(&u);
    }
    tokio_uring::Runtime::new(&b).map_err(ring_error)
}

/// Creates (and drops) one ring, so a host without io_uring fails before
/// anything is bound or announced.
pub fn probe_ring(cfg: &Config) -> Result<(), String> {
    runtime(cfg).map(drop)
}

pub fn run(
    id: usize,
    core: Option<core_affinity::CoreId>,
    first: Update,
    mut stop: watch::Receiver<Drain>,
    metrics_rx: mpsc::UnboundedReceiver<crate::metrics::SnapshotRequest>,
    updates: mpsc::UnboundedReceiver<Update>,
    ready: impl FnOnce(),
) -> Result<(), String> {
    if let Some(c) = core {
        if !core_affinity::set_for_current(c) {
            tracing::warn!(worker = id, core = c.id, "could not pin worker to its core");
        }
    }
    let rt = runtime(&first.plan.config)?;
    rt.block_on(async move {
        let shards = Shards::default();
        tokio_uring::spawn(shards.clone().serve(metrics_rx));
        let gen = Rc::new(generation(None, &first.plan, &first.keys, &shards));
        let w = Rc::new(WorkerCtx {
            current: Rc::new(RefCell::new(gen.view.clone())),
            gen: RefCell::new(gen),
            shards,
            handshaking: Cell::new(0),
            log_limit: RefCell::new(LogLimit::new(10)),
            open: Default::default(),
            runs: RefCell::new(Vec::new()),
            stopping: Cell::new(false),
            access: Rc::new(RefCell::new(open_access(&first.plan))),
        });
        accept::apply_sockets(&w, first.sockets);
        tokio_uring::spawn(apply_updates(w.clone(), updates));
        ready();
        let how = stop
            .wait_for(|s| s.active())
            .await
            .map_or(Drain::Now, |d| *d);
        w.stopping.set(true);
        let runs: Vec<accept::Run> = w.runs.borrow_mut().drain(..).collect();
        for r in &runs {
            r.stop_accepting(how);
        }
        for r in runs {
            r.finish().await;
        }
        let deadline = tokio::time::Instant::now() + w.gen.borrow().view.plan.config.drain_timeout;
        while w.shards.open_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    })
}

/// This worker's state for `plan`. Each worker builds its own TLS objects from
/// the plan's snapshot, so no reference count or key object is written by two
/// cores per handshake; the plan's shared copy holds the listener-wide session
/// cache. With `prev` on the same plan (a key rotation) the TLS state and
/// pools are kept and only the ticket sealers change; on a new plan, pools of
/// unchanged upstreams are kept (with their idle connections).
fn generation(prev: Option<&Gen>, plan: &Arc<Plan>, keys: &KeySet, shards: &Shards) -> Gen {
    let same = prev.filter(|g| Arc::ptr_eq(&g.view.plan, plan));
    let live = plan
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let state = match same {
                Some(g) => g.live[i].state.clone(), // ok: same plan, same listeners
                None => Rc::new(ListenerState {
                    tls: plan.worker_tls(i),
                    verified: RefCell::default(),
                    limits: l.limiter.worker(),
                }),
            };
            let counters = shards.listener(&l.cfg.name).tickets();
            let lifetime = plan.config.tickets.lifetime;
            let config = with_tickets(&state.tls, &l.tls, keys, &l.cfg.name, lifetime, counters);
            Live { state, config }
        })
        .collect();
    let pools = match same {
        Some(g) => g.view.pools.clone(),
        None => (0..plan.upstreams.len())
            .map(|j| {
                let kept = prev.and_then(|g| {
                    let old = &g.view.plan;
                    let i = old
                        .upstreams
                        .iter()
                        .position(|u| u.cfg.name == plan.upstreams[j].cfg.name)?; // ok: j < len
                    plan.same_upstream(j, old, i)
                        .then(|| g.view.pools[i].clone()) // ok: pools align with upstreams
                });
                kept.unwrap_or_else(|| Pool::new(plan.worker_upstream(j)))
            })
            .collect(),
    };
    Gen {
        view: Rc::new(View {
            plan: plan.clone(),
            pools,
        }),
        live,
    }
}

/// Swaps in each new plan: new connections and requests use it at once,
/// connections already open keep their TLS state.
async fn apply_updates(w: Rc<WorkerCtx>, mut rx: mpsc::UnboundedReceiver<Update>) {
    while let Some(u) = rx.recv().await {
        let gen = {
            let old = w.gen.borrow();
            Rc::new(generation(Some(&old), &u.plan, &u.keys, &w.shards))
        };
        let old = std::mem::replace(&mut *w.gen.borrow_mut(), gen.clone());
        *w.current.borrow_mut() = gen.view.clone();
        // Pools the new plan did not keep hold no idle connections from now on.
        for p in &old.view.pools {
            if !gen.view.pools.iter().any(|n| Rc::ptr_eq(n, p)) {
                p.retire();
            }
        }
        *w.access.borrow_mut() = open_access(&u.plan);
        accept::apply_sockets(&w, u.sockets);
        super::open::close_revoked(&w);
    }
}

/// Spawns a connection's task (kept here so `accept` need not name `conn`).
pub fn spawn_conn(w: &Rc<WorkerCtx>, stream: tokio_uring::net::TcpStream, c: conn::Accepted) {
    tokio_uring::spawn(conn::serve(stream, c, w.clone()));
}
