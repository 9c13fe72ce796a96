//! Process runtime: build the gateway from config, bind listeners, start one
//! pinned io_uring worker per core plus the admin thread, handle signals,
//! drain on shutdown, and exit non-zero if a worker dies.

mod accept;
mod conn;
mod handshake;
pub mod listen;
mod loglimit;
mod open;
mod proxied;
pub mod reload;
mod systemd;
pub mod upgrade;
mod worker;

use crate::config::{Config, ConfigError};
use crate::metrics::Registry;
use crate::plan::Plan;
use crate::tls::tickets::KeySet;
use crate::tune::profile::Knobs;
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// What `check` verifies and `run` serves: the first plan and the ticket keys.
pub struct Gateway {
    pub plan: Arc<Plan>,
    /// Ticket keys at start-up (from the key file, or random).
    pub keys: Arc<KeySet>,
    /// The tuning profile's defaults, applied again to a reloaded config.
    pub knobs: Knobs,
    /// Human-readable lines about the loaded material (for `check`).
    pub summary: Vec<String>,
}

impl Gateway {
    /// Loads every certificate, key, CA and CRL the config names.
    pub fn build(cfg: &Config) -> Result<Gateway, ConfigError> {
        let plan = Plan::build(cfg, 1, None).map_err(|f| f.error)?;
        let (keys, line) = load_keys(cfg)?;
        let mut summary = plan.summary.clone();
        summary.extend(line);
        Ok(Gateway {
            plan: Arc::new(plan),
            keys: Arc::new(keys),
            knobs: Knobs::default(),
            summary,
        })
    }

    pub fn with_knobs(self, knobs: Knobs) -> Gateway {
        Gateway { knobs, ..self }
    }
}

/// The ticket keys `cfg` asks for (the key file's, or fresh random ones), and
/// a line for `check` about where they came from.
pub fn load_keys(cfg: &Config) -> Result<(KeySet, Option<String>), ConfigError> {
    let file = cfg.path.as_path();
    match &cfg.tickets.key_file {
        Some(p) => {
            let k = KeySet::load(p).map_err(|e| ConfigError::new(file, "ticket_keys", e))?;
            let ids: Vec<String> = k.ids().iter().map(|(s, i)| format!("{s}={i}")).collect();
            let line = format!("ticket keys {}: {}", p.display(), ids.join(" "));
            Ok((k, Some(line)))
        }
        None => Ok((
            KeySet::generate().map_err(|e| ConfigError::new(file, "ticket_keys", e))?,
            None,
        )),
    }
}

pub(crate) enum Event {
    Signal(i32),
    WorkerExit(usize, Result<(), String>),
    /// `POST /reload` on the admin listener: reload, then send the outcome.
    Reload(mpsc::Sender<crate::metrics::reloads::Outcome>),
    /// The successor an upgrade started is ready (its pid), or failed.
    Upgraded(Result<u32, String>),
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

/// Serves until SIGINT/SIGTERM (then drains), until a successor started by
/// SIGUSR2 is ready (then hands over and drains), or until a worker dies (error).
pub fn run(gw: Gateway, mut successor: upgrade::Successor) -> anyhow::Result<()> {
    let cfg = &gw.plan.config;
    worker::probe_ring(cfg).map_err(anyhow::Error::msg)?;
    let n = cfg.workers;
    if let Some(a) = &cfg.access_log {
        crate::proxy::access::AccessLog::open(&a.path, a.format).map_err(|e| {
            anyhow::anyhow!(
                "{}: access_log.path: {}: cannot open for appending: {e}",
                cfg.path.display(),
                a.path.display()
            )
        })?;
    }
    // Bind everything first so address errors surface before any thread starts.
    let mut per_worker: Vec<Vec<(String, std::net::TcpListener)>> =
        (0..n).map(|_| Vec::new()).collect();
    for l in &gw.plan.listeners {
        let socks = listen::bind_all(l.cfg.bind, n, l.cfg.backlog, l.cfg.nodelay).map_err(|e| {
            anyhow::anyhow!(
                "listener {:?}: cannot listen on {}: {e}",
                l.cfg.name,
                l.cfg.bind
            )
        })?;
        for (w, s) in per_worker.iter_mut().zip(socks) {
            w.push((l.cfg.name.clone(), s));
        }
    }
    // SO_REUSEPORT here too: an upgrade's successor binds it beside us.
    let admin = match cfg.admin_bind {
        Some(a) => Some(
            listen::bind_all(a, 1, 1024, true)
                .ok()
                .and_then(|mut v| v.pop())
                .ok_or_else(|| anyhow::anyhow!("admin: cannot listen on {a}"))?,
        ),
        None => None,
    };
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(crate::proxy::Drain::Serving);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut metric_txs = Vec::new();
    let mut update_txs = Vec::new();
    for (id, socks) in per_worker.into_iter().enumerate() {
        let (mtx, mrx) = tokio::sync::mpsc::unbounded_channel();
        metric_txs.push(mtx);
        let (utx, urx) = tokio::sync::mpsc::unbounded_channel();
        update_txs.push(utx);
        let core = if cores.is_empty() {
            None
        } else {
            Some(cores[id % cores.len()])
        };
        let first = worker::Update {
            plan: gw.plan.clone(),
            keys: gw.keys.clone(),
            sockets: socks,
        };
        let (stop_rx, tx) = (stop_rx.clone(), tx.clone());
        std::thread::Builder::new()
            .name(format!("mtlsgate-w{id}"))
            .spawn(move || {
                let mut guard = ExitGuard {
                    id,
                    tx,
                    result: None,
                };
                guard.result = Some(worker::run(id, core, first, stop_rx, mrx, urx));
            })
            .map_err(|e| anyhow::anyhow!("cannot start worker thread: {e}"))?;
    }
    let mut reloader = reload::Reloader::new(&gw, update_txs);
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut admin_handle = None;
    if let Some(a) = admin {
        let reload_tx = std::sync::Mutex::new(tx.clone());
        admin_handle = Some(crate::admin::spawn(
            a,
            Registry {
                keys: reloader.info.clone(),
                reloads: reloader.reloads.clone(),
                limiters: reloader.limiters.clone(),
                workers: metric_txs,
                draining: draining.clone(),
                reload: Box::new(move || {
                    let (otx, orx) = mpsc::channel();
                    reload_tx.lock().ok()?.send(Event::Reload(otx)).ok()?;
                    orx.recv_timeout(Duration::from_secs(60)).ok()
                }),
            },
        )?);
    }
    let sig_tx = tx.clone();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR2,
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
    let upgrade_tx = tx.clone();
    drop(tx);
    for l in &gw.plan.listeners {
        tracing::info!(listener = %l.cfg.name, bind = %l.cfg.bind, mode = ?l.cfg.mode, workers = n, "listening");
    }
    if let Some(a) = cfg.admin_bind {
        tracing::info!(bind = %a, "admin listening");
    }
    if successor.is_upgrade() {
        // The old process tells systemd we are its main process now.
        successor.announce_ready();
        tracing::info!("upgrade: serving beside the old process, which now drains");
    } else {
        systemd::ready();
    }
    let mut upgrading = false;
    let mut handover = false;
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Err(mpsc::RecvTimeoutError::Timeout) => reloader.tick(),
            Ok(Event::Signal(signal_hook::consts::SIGHUP)) => {
                systemd::reloading();
                reloader.reload_config("SIGHUP");
                systemd::ready();
            }
            Ok(Event::Reload(reply)) => {
                systemd::reloading();
                let _ = reply.send(reloader.reload_config("admin"));
                systemd::ready();
            }
            Ok(Event::Signal(signal_hook::consts::SIGUSR2)) if upgrading => {
                tracing::warn!("upgrade already in progress");
            }
            Ok(Event::Signal(signal_hook::consts::SIGUSR2)) => {
                let keys = gw
                    .plan
                    .config
                    .tickets
                    .key_file
                    .is_none()
                    .then(|| reloader.keys());
                match upgrade::start(keys.as_deref()) {
                    Ok(p) => {
                        tracing::info!("upgrade: new process started; waiting until it is ready");
                        upgrading = true;
                        let tx = upgrade_tx.clone();
                        std::thread::spawn(move || {
                            let _ = tx.send(Event::Upgraded(p.wait()));
                        });
                    }
                    Err(e) => reloader.upgrade_failed(e),
                }
            }
            Ok(Event::Upgraded(Err(e))) => {
                upgrading = false;
                reloader.upgrade_failed(e);
            }
            Ok(Event::Upgraded(Ok(pid))) => {
                tracing::info!(
                    pid,
                    "upgrade: the new process is ready; handing over and draining"
                );
                systemd::main_pid(pid);
                if let Some(a) = &admin_handle {
                    a.close();
                }
                handover = true;
                let _ = stop_tx.send(crate::proxy::Drain::Handover);
                break;
            }
            Ok(Event::Signal(s)) => {
                tracing::info!(
                    signal = s,
                    "shutting down: no new connections, draining in-flight ones"
                );
                systemd::stopping();
                draining.store(true, std::sync::atomic::Ordering::Release);
                let _ = stop_tx.send(crate::proxy::Drain::Now);
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
    let deadline = std::time::Instant::now() + reloader.drain_timeout() + Duration::from_secs(2);
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
            Ok(Event::Reload(_)) | Ok(Event::Upgraded(_)) => {} // dropped: no answer
            Err(_) => {
                tracing::warn!(workers_left = left, "drain timed out");
                break;
            }
        }
    }
    if handover {
        tracing::info!("stopped: the new process serves");
    } else {
        tracing::info!("stopped");
    }
    Ok(())
}
