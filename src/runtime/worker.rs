//! One worker: a pinned thread with its own tokio-uring ring, its own
//! SO_REUSEPORT socket per listener, its own pools and metric shard.

use super::conn;
use super::loglimit::LogLimit;
use super::reload::Reload;
use super::Gateway;
use crate::metrics::{ListenerStats, Shards};
use crate::proxy::upstream::{Pool, UpstreamCtx};
use crate::tls::server::{with_tickets, ListenerTls};
use crate::tls::tickets::KeySet;
use crate::tls::verified::VerifiedCache;
use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// A listener's TLS state as this worker uses it now (swapped on reload).
pub struct Live {
    pub tls: Arc<ListenerTls>,
    /// This worker's copy of the listener's config, with its own ticket sealer.
    pub config: Arc<rustls::ServerConfig>,
}

/// State shared by the tasks of one worker (never across threads).
pub struct WorkerCtx {
    pub live: RefCell<Vec<Live>>,
    pub gw: Arc<Gateway>,
    pub shards: Shards,
    pub pools: Rc<Vec<Rc<Pool>>>,
    pub draining: watch::Receiver<bool>,
    pub handshaking: Cell<usize>,
    /// Verified client chains per listener (see `tls::verified`).
    pub verified: Vec<RefCell<VerifiedCache>>,
    pub log_limit: RefCell<LogLimit>,
    /// Open verified connections, for `close_revoked`.
    pub open: super::revoke::OpenConns,
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
fn runtime(gw: &Gateway) -> Result<tokio_uring::Runtime, String> {
    let mut b = tokio_uring::builder();
    b.entries(gw.config.ring_entries);
    if gw.config.sqpoll_idle_ms > 0 {
        let mut u = tokio_uring::uring_builder();
        u.setup_sqpoll(gw.config.sqpoll_idle_ms);
        b.uring_builder(&u);
    }
    tokio_uring::Runtime::new(&b).map_err(ring_error)
}

/// Creates (and drops) one ring, so a host without io_uring fails before
/// anything is bound or announced.
pub fn probe_ring(gw: &Gateway) -> Result<(), String> {
    runtime(gw).map(drop)
}

pub fn run(
    id: usize,
    core: Option<core_affinity::CoreId>,
    gw: Arc<Gateway>,
    socks: Vec<std::net::TcpListener>,
    stop: watch::Receiver<bool>,
    metrics_rx: mpsc::UnboundedReceiver<oneshot::Sender<Vec<ListenerStats>>>,
    reload_rx: mpsc::UnboundedReceiver<Reload>,
) -> Result<(), String> {
    if let Some(c) = core {
        if !core_affinity::set_for_current(c) {
            tracing::warn!(worker = id, core = c.id, "could not pin worker to its core");
        }
    }
    let rt = runtime(&gw)?;
    rt.block_on(async move {
        let shards = Shards::new(gw.listeners.len());
        tokio_uring::spawn(shards.clone().serve(metrics_rx));
        let pools = Rc::new(pools(&gw));
        let live = live_states(
            &gw,
            &gw.listeners
                .iter()
                .map(|l| l.tls.clone())
                .collect::<Vec<_>>(),
            &gw.keys,
            &shards,
        );
        let listener_count = gw.listeners.len();
        let w = Rc::new(WorkerCtx {
            live: RefCell::new(live),
            verified: gw.listeners.iter().map(|_| RefCell::default()).collect(),
            gw,
            shards,
            pools,
            draining: stop.clone(),
            handshaking: Cell::new(0),
            log_limit: RefCell::new(LogLimit::new(10)),
            open: super::revoke::OpenConns::new(listener_count),
        });
        tokio_uring::spawn(apply_reloads(w.clone(), reload_rx));
        let mut fds = Vec::new();
        let mut tasks = Vec::new();
        for (idx, s) in socks.into_iter().enumerate() {
            let l = tokio_uring::net::TcpListener::from_std(s);
            fds.push(l.as_raw_fd());
            tasks.push(tokio_uring::spawn(accept_loop(l, idx, w.clone())));
        }
        let mut stop = stop;
        let _ = stop.wait_for(|s| *s).await;
        // Stop accepting explicitly: a pending accept would otherwise keep the
        // socket alive in the reuseport group after we decided to exit.
        for fd in fds {
            // SAFETY: fd belongs to a listener owned by an accept task that is still running.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        for t in tasks {
            let _ = t.await;
        }
        let deadline = tokio::time::Instant::now() + w.gw.config.drain_timeout;
        while w.shards.open_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    })
}

/// This worker's TLS state: each worker loads its own copy of the material, so
/// no reference count or key object is written by two cores per handshake.
/// `shared` (already validated by the main thread) is the fallback and holds
/// the listener-wide session cache.
fn live_states(
    gw: &Gateway,
    shared: &[Arc<ListenerTls>],
    keys: &KeySet,
    shards: &Shards,
) -> Vec<Live> {
    gw.listeners
        .iter()
        .zip(shared)
        .zip(shards.tickets.iter())
        .map(|((l, s), counters)| {
            let own = match crate::tls::server::build(&gw.config.path, l.idx, &l.cfg) {
                Ok(t) => Arc::new(t),
                Err(e) => {
                    tracing::warn!(listener = %l.cfg.name, error = %e, "worker copy of TLS material failed; sharing the main one");
                    s.clone()
                }
            };
            Live {
                config: with_tickets(&own, s, keys, &l.cfg.name, gw.config.tickets.lifetime, counters.clone()),
                tls: own,
            }
        })
        .collect()
}

/// Per-worker upstream pools; TLS client configs are built per worker too.
fn pools(gw: &Gateway) -> Vec<Rc<Pool>> {
    gw.upstreams
        .iter()
        .map(|u| {
            let ctx = match &u.cfg.tls {
                Some(t) => match crate::tls::client::build(&gw.config.path, &u.cfg.name, t) {
                    Ok(tls) => Arc::new(UpstreamCtx {
                        cfg: u.cfg.clone(),
                        tls: Some(tls),
                    }),
                    Err(_) => u.clone(),
                },
                None => u.clone(),
            };
            Pool::new(ctx)
        })
        .collect()
}

/// Swaps in new TLS state and keys; connections already open keep theirs.
async fn apply_reloads(w: Rc<WorkerCtx>, mut rx: mpsc::UnboundedReceiver<Reload>) {
    while let Some(r) = rx.recv().await {
        let live = live_states(&w.gw, &r.tls, &r.keys, &w.shards);
        *w.live.borrow_mut() = live;
        super::revoke::close_revoked(&w);
    }
}

async fn accept_loop(l: tokio_uring::net::TcpListener, idx: usize, w: Rc<WorkerCtx>) {
    let lc = &w.gw.listeners[idx];
    let shard = w.shards.listener(idx);
    loop {
        let (stream, addr) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                if *w.draining.borrow() {
                    return;
                }
                if w.log_limit.borrow_mut().allow().is_some() {
                    tracing::warn!(listener = %lc.cfg.name, error = %e, "accept failed");
                }
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shard.with(|s| s.accepted += 1);
        // The metrics shard's open-connection gauge is the one count of them.
        if shard.with(|s| s.active) >= lc.cfg.max_connections as i64 {
            shard.with(|s| s.rejected_limit += 1);
            drop(stream);
            continue;
        }
        if w.handshaking.get() >= lc.cfg.max_handshakes {
            shard.failure("handshake_limit");
            drop(stream);
            continue;
        }
        shard.with(|s| s.active += 1);
        tokio_uring::spawn(conn::serve(stream, addr, idx, w.clone()));
    }
}
