//! Process runtime: build the gateway from config, bind listeners, start one
//! pinned io_uring worker per core plus the admin thread, handle signals,
//! drain on shutdown, and exit non-zero if a worker dies.

mod accept;
mod conn;
mod handshake;
pub mod listen;
mod loglimit;
mod main_loop;
mod open;
mod proxied;
pub mod reload;
mod report;
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
    /// `POST /upgrade` (with where to send the outcome).
    Upgrade(Option<mpsc::Sender<Result<u32, String>>>),
    /// A worker has its ring and serves its sockets.
    WorkerReady,
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
    // SO_REUSEPORT here too: an upgrade's successor binds it beside us. So a
    // second gateway started by mistake would share it (and the listeners)
    // silently: unless this process is a successor, someone answering there
    // is an error.
    let admin = match cfg.admin_bind {
        Some(a) => {
            if !successor.is_upgrade()
                && std::net::TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok()
            {
                anyhow::bail!(
                    "admin: something already answers on {a}: is a gateway with this config running? \
                     Replace it with `mtlsgate upgrade`, or stop it first"
                );
            }
            let mut v = listen::bind_all(a, 1, 1024, true)
                .map_err(|e| anyhow::anyhow!("admin: cannot listen on {a}: {e}"))?;
            v.pop()
        }
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
                let ready = tx.clone();
                let mut guard = ExitGuard {
                    id,
                    tx,
                    result: None,
                };
                let ready = move || {
                    let _ = ready.send(Event::WorkerReady);
                };
                guard.result = Some(worker::run(id, core, first, stop_rx, mrx, urx, ready));
            })
            .map_err(|e| anyhow::anyhow!("cannot start worker thread: {e}"))?;
    }
    let reloader = reload::Reloader::new(&gw, update_txs);
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reload_tx = std::sync::Mutex::new(tx.clone());
    let upgrade_tx = std::sync::Mutex::new(tx.clone());
    let registry = Arc::new(Registry {
        keys: reloader.info.clone(),
        reloads: reloader.reloads.clone(),
        limiters: reloader.limiters.clone(),
        workers: metric_txs,
        last_full: Default::default(),
        last_light: Default::default(),
        stale: Default::default(),
        slots: Default::default(),
        draining: draining.clone(),
        reload: Box::new(move || {
            let (otx, orx) = mpsc::channel();
            reload_tx.lock().ok()?.send(Event::Reload(otx)).ok()?;
            orx.recv_timeout(Duration::from_secs(60)).ok()
        }),
        upgrade: Box::new(move || {
            let (otx, orx) = mpsc::channel();
            let tx = upgrade_tx.lock().ok()?;
            tx.send(Event::Upgrade(Some(otx))).ok()?;
            orx.recv_timeout(Duration::from_secs(60)).ok()
        }),
    });
    let admin_handle = match admin {
        Some(a) => Some(crate::admin::spawn(a, registry.clone())?),
        None => None,
    };
    if let Some(h) = &cfg.hdr_log {
        crate::metrics::hdrlog::spawn(h.path.clone(), h.interval, registry.clone()).map_err(
            |e| {
                anyhow::anyhow!(
                    "{}: hdr_log.path: {}: {e}",
                    cfg.path.display(),
                    h.path.display()
                )
            },
        )?;
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
    for l in &gw.plan.listeners {
        tracing::info!(listener = %l.cfg.name, bind = %l.cfg.bind, mode = ?l.cfg.mode, workers = n, "listening");
    }
    if let Some(a) = cfg.admin_bind {
        tracing::info!(bind = %a, "admin listening");
    }
    let mut main = main_loop::MainLoop::new(rx, tx, reloader, stop_tx, admin_handle, draining, n);
    let mut deferred = Vec::new();
    main.wait_workers(&mut deferred)?;
    if successor.is_upgrade() {
        // The old process tells systemd we are its main process now.
        successor.announce_ready();
        tracing::info!("upgrade: serving beside the old process, which now drains");
    } else {
        systemd::ready();
    }
    main.serve(deferred)
}
