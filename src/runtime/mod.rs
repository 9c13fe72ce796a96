//! Process runtime: build the gateway from config, bind listeners, start one
//! pinned io_uring worker per core plus the admin thread, handle signals,
//! drain on shutdown, and exit non-zero if a worker dies.

mod conn;
pub mod listen;
mod loglimit;
pub mod reload;
mod revoke;
mod systemd;
mod worker;

use crate::authz::AllowList;
use crate::config::{Config, ConfigError, ListenerConfig};
use crate::metrics::Registry;
use crate::proxy::upstream::UpstreamCtx;
use crate::tls::server::ListenerTls;
use crate::tls::tickets::KeySet;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

pub struct Route {
    /// Without trailing `/`; empty for `/`.
    pub prefix: String,
    pub case_insensitive: bool,
    pub upstream: usize,
    pub allow: Option<AllowList>,
}

/// A listener with its TLS state, immutable and shared by all workers.
pub struct ListenerCtx {
    pub idx: usize,
    pub cfg: ListenerConfig,
    /// TLS state at start-up; workers hold the live one (replaced on reload).
    pub tls: Arc<ListenerTls>,
    pub default_upstream: Option<usize>,
    pub routes: Vec<Route>,
}

/// The whole validated gateway: what `check` verifies and `run` serves.
pub struct Gateway {
    pub listeners: Vec<ListenerCtx>,
    pub upstreams: Vec<Arc<UpstreamCtx>>,
    pub log_requests: bool,
    pub workers: usize,
    pub admin: Option<SocketAddr>,
    pub config: Config,
    /// Ticket keys at start-up (from the key file, or random).
    pub keys: Arc<KeySet>,
    /// Human-readable lines about the loaded material (for `check`).
    pub summary: Vec<String>,
}

impl Gateway {
    /// Loads every certificate, key, CA and CRL the config names.
    pub fn build(cfg: &Config) -> Result<Gateway, ConfigError> {
        let file = cfg.path.as_path();
        let names: Vec<&String> = cfg.upstreams.keys().collect();
        let mut summary = Vec::new();
        let mut upstreams = Vec::new();
        for u in cfg.upstreams.values() {
            let tls = match &u.tls {
                Some(t) => {
                    let ut = crate::tls::client::build(file, &u.name, t)?;
                    summary.extend(
                        ut.summary
                            .iter()
                            .map(|s| format!("upstream {}: {s}", u.name)),
                    );
                    Some(ut)
                }
                None => None,
            };
            upstreams.push(Arc::new(UpstreamCtx {
                cfg: u.clone(),
                tls,
            }));
        }
        let index = |name: &str| names.iter().position(|n| n.as_str() == name);
        let mut listeners = Vec::new();
        for (idx, l) in cfg.listeners.iter().enumerate() {
            let tls = crate::tls::server::build(file, idx, l)?;
            summary.extend(
                tls.summary
                    .iter()
                    .map(|s| format!("listener {}: {s}", l.name)),
            );
            let routes = l
                .routes
                .iter()
                .filter_map(|r| {
                    Some(Route {
                        prefix: r.path_prefix.clone(),
                        case_insensitive: r.case_insensitive,
                        upstream: index(&r.upstream)?,
                        allow: r.allow.clone(),
                    })
                })
                .collect();
            listeners.push(ListenerCtx {
                idx,
                cfg: l.clone(),
                tls: Arc::new(tls),
                default_upstream: l.upstream.as_deref().and_then(index),
                routes,
            });
        }
        let keys = match &cfg.tickets.key_file {
            Some(p) => {
                let k = KeySet::load(p).map_err(|e| ConfigError::new(file, "ticket_keys", e))?;
                let ids: Vec<String> = k.ids().iter().map(|(s, i)| format!("{s}={i}")).collect();
                summary.push(format!("ticket keys {}: {}", p.display(), ids.join(" ")));
                k
            }
            None => KeySet::generate().map_err(|e| ConfigError::new(file, "ticket_keys", e))?,
        };
        Ok(Gateway {
            config: cfg.clone(),
            keys: Arc::new(keys),
            listeners,
            upstreams,
            log_requests: cfg.log_requests,
            workers: cfg.workers,
            admin: cfg.admin_bind,
            summary,
        })
    }
}

enum Event {
    Signal(i32),
    WorkerExit(usize, Result<(), String>),
}

/// Sends `WorkerExit` when the worker thread ends, even by panic.
struct ExitGuard {
    id: usize,
    tx: mpsc::Sender<Event>,
    result: Option<Result<(), String>>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let r = self
            .result
            .take()
            .unwrap_or_else(|| Err("worker panicked".into()));
        let _ = self.tx.send(Event::WorkerExit(self.id, r));
    }
}

/// Serves until SIGINT/SIGTERM (then drains) or until a worker dies (error).
pub fn run(gw: Gateway) -> anyhow::Result<()> {
    worker::probe_ring(&gw).map_err(anyhow::Error::msg)?;
    let gw = Arc::new(gw);
    let n = gw.workers;
    // Bind everything first so address errors surface before any thread starts.
    let mut per_worker: Vec<Vec<std::net::TcpListener>> = (0..n).map(|_| Vec::new()).collect();
    for l in &gw.listeners {
        let socks = listen::bind_all(l.cfg.bind, n, l.cfg.backlog, l.cfg.nodelay).map_err(|e| {
            anyhow::anyhow!(
                "listener {:?}: cannot listen on {}: {e}",
                l.cfg.name,
                l.cfg.bind
            )
        })?;
        for (w, s) in per_worker.iter_mut().zip(socks) {
            w.push(s);
        }
    }
    let admin = match gw.admin {
        Some(a) => Some(
            std::net::TcpListener::bind(a)
                .map_err(|e| anyhow::anyhow!("admin: cannot listen on {a}: {e}"))?,
        ),
        None => None,
    };
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut metric_txs = Vec::new();
    let mut reload_txs = Vec::new();
    for (id, socks) in per_worker.into_iter().enumerate() {
        let (mtx, mrx) = tokio::sync::mpsc::unbounded_channel();
        metric_txs.push(mtx);
        let (rtx, rrx) = tokio::sync::mpsc::unbounded_channel();
        reload_txs.push(rtx);
        let core = if cores.is_empty() {
            None
        } else {
            Some(cores[id % cores.len()])
        };
        let (gw, stop_rx, tx) = (gw.clone(), stop_rx.clone(), tx.clone());
        std::thread::Builder::new()
            .name(format!("mtlsgate-w{id}"))
            .spawn(move || {
                let mut guard = ExitGuard {
                    id,
                    tx,
                    result: None,
                };
                guard.result = Some(worker::run(id, core, gw, socks, stop_rx, mrx, rrx));
            })
            .map_err(|e| anyhow::anyhow!("cannot start worker thread: {e}"))?;
    }
    let mut reloader = reload::Reloader::new(gw.clone(), reload_txs);
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(a) = admin {
        let names = gw.listeners.iter().map(|l| l.cfg.name.clone()).collect();
        crate::admin::spawn(
            a,
            Registry {
                listener_names: names,
                keys: reloader.info.clone(),
                workers: metric_txs,
                draining: draining.clone(),
            },
        )?;
    }
    let sig_tx = tx.clone();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("mtlsgate-signals".into())
        .spawn(move || {
            for s in signals.forever() {
                if sig_tx.send(Event::Signal(s)).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start signal thread: {e}"))?;
    drop(tx);
    for l in &gw.listeners {
        tracing::info!(listener = %l.cfg.name, bind = %l.cfg.bind, mode = ?l.cfg.mode, workers = n, "listening");
    }
    if let Some(a) = gw.admin {
        tracing::info!(bind = %a, "admin listening");
    }
    systemd::ready();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Err(mpsc::RecvTimeoutError::Timeout) => reloader.tick(),
            Ok(Event::Signal(signal_hook::consts::SIGHUP)) => {
                systemd::reloading();
                reloader.reload("SIGHUP");
                systemd::ready();
            }
            Ok(Event::Signal(s)) => {
                tracing::info!(
                    signal = s,
                    "shutting down: no new connections, draining in-flight ones"
                );
                systemd::stopping();
                draining.store(true, std::sync::atomic::Ordering::Release);
                let _ = stop_tx.send(true);
                break;
            }
            Ok(Event::WorkerExit(id, r)) => {
                let why = r.err().unwrap_or_else(|| "exited unexpectedly".into());
                anyhow::bail!("worker {id} stopped: {why}");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("all workers and the signal thread are gone")
            }
        }
    }
    let deadline = std::time::Instant::now() + gw.config.drain_timeout + Duration::from_secs(2);
    let mut left = n;
    while left > 0 {
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Event::WorkerExit(id, Err(e))) => {
                tracing::warn!(worker = id, error = %e, "worker ended with an error during drain");
                left -= 1;
            }
            Ok(Event::WorkerExit(..)) => left -= 1,
            Ok(Event::Signal(_)) => {
                tracing::warn!("second signal: exiting without waiting for the drain");
                break;
            }
            Err(_) => {
                tracing::warn!(workers_left = left, "drain timed out");
                break;
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}
