//! The main thread once the workers run: signals, reloads, file watches,
//! upgrades, then the drain. Events arrive on one channel (signals, workers,
//! the admin listener, the upgrade waiter).

use super::reload::Reloader;
use super::{systemd, upgrade, Event};
use crate::proxy::Drain;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

pub struct MainLoop {
    pub rx: mpsc::Receiver<Event>,
    /// For the upgrade waiter thread.
    pub tx: mpsc::Sender<Event>,
    pub reloader: Reloader,
    pub stop: tokio::sync::watch::Sender<Drain>,
    pub admin: Option<crate::admin::Admin>,
    /// `/ready` says 503 from the moment this is set.
    pub draining: Arc<AtomicBool>,
    pub workers: usize,
    /// The successor being started (its pid), and who waits for the outcome.
    upgrading: Option<u32>,
    waiters: Vec<mpsc::Sender<Result<u32, String>>>,
}

/// How serving ended.
enum End {
    Stop,
    Handover,
}

impl MainLoop {
    pub fn new(
        rx: mpsc::Receiver<Event>,
        tx: mpsc::Sender<Event>,
        reloader: Reloader,
        stop: tokio::sync::watch::Sender<Drain>,
        admin: Option<crate::admin::Admin>,
        draining: Arc<AtomicBool>,
        workers: usize,
    ) -> MainLoop {
        MainLoop {
            rx,
            tx,
            reloader,
            stop,
            admin,
            draining,
            workers,
            upgrading: None,
            waiters: Vec::new(),
        }
    }

    /// Waits until every worker has its ring and its sockets; events that
    /// come meanwhile are kept for `serve`.
    pub fn wait_workers(&self, deferred: &mut Vec<Event>) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(30);
        let mut ready = 0;
        while ready < self.workers {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Event::WorkerReady) => ready += 1,
                Ok(Event::WorkerExit(id, r)) => {
                    let why = r.err().unwrap_or_else(|| "exited unexpectedly".into());
                    anyhow::bail!("worker {id} stopped before it was ready: {why}");
                }
                Ok(e) => deferred.push(e),
                Err(_) => anyhow::bail!(
                    "{} of {} workers not ready within 30 s",
                    self.workers - ready,
                    self.workers
                ),
            }
        }
        Ok(())
    }

    fn start_upgrade(&mut self) {
        let keys = (!self.reloader.uses_key_file()).then(|| self.reloader.keys());
        match upgrade::start(keys.as_deref()) {
            Ok(p) => {
                tracing::info!(
                    pid = p.pid(),
                    "upgrade: new process started; waiting until it is ready"
                );
                self.upgrading = Some(p.pid());
                let tx = self.tx.clone();
                std::thread::spawn(move || {
                    let _ = tx.send(Event::Upgraded(p.wait()));
                });
            }
            Err(e) => self.upgrade_done(Err(e)),
        }
    }

    fn upgrade_done(&mut self, r: Result<u32, String>) {
        self.upgrading = None;
        if let Err(e) = &r {
            self.reloader.upgrade_failed(e.clone());
        }
        for w in self.waiters.drain(..) {
            let _ = w.send(r.clone());
        }
    }

    /// Serves until a stop signal, a handover, or a worker's death (error).
    pub fn serve(&mut self, deferred: Vec<Event>) -> anyhow::Result<()> {
        let mut deferred = deferred.into_iter();
        let end = loop {
            let ev = match deferred.next() {
                Some(e) => Ok(e),
                None => self.rx.recv_timeout(Duration::from_secs(1)),
            };
            match ev {
                Err(mpsc::RecvTimeoutError::Timeout) => self.reloader.tick(),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("all workers and the signal thread are gone")
                }
                Ok(Event::Signal(SIGHUP)) => {
                    systemd::reloading();
                    self.reloader.reload_config("SIGHUP");
                    systemd::ready();
                }
                Ok(Event::Reload(reply)) => {
                    systemd::reloading();
                    let _ = reply.send(self.reloader.reload_config("admin"));
                    systemd::ready();
                }
                Ok(Event::Signal(SIGUSR2)) | Ok(Event::Upgrade(None))
                    if self.upgrading.is_some() =>
                {
                    tracing::warn!("upgrade already in progress");
                }
                Ok(Event::Upgrade(Some(reply))) if self.upgrading.is_some() => {
                    self.waiters.push(reply);
                }
                Ok(Event::Signal(SIGUSR2)) | Ok(Event::Upgrade(None)) => self.start_upgrade(),
                Ok(Event::Upgrade(Some(reply))) => {
                    self.waiters.push(reply);
                    self.start_upgrade();
                }
                Ok(Event::Upgraded(Err(e))) => self.upgrade_done(Err(e)),
                Ok(Event::Upgraded(Ok(pid))) => {
                    tracing::info!(
                        pid,
                        "upgrade: the new process is ready; handing over and draining"
                    );
                    systemd::main_pid(pid);
                    // The admin listener closes before `mtlsgate upgrade` hears
                    // "done": its next request must reach the new process, not
                    // this one (draining, it answers nothing).
                    if let Some(a) = &self.admin {
                        a.close();
                    }
                    self.upgrade_done(Ok(pid));
                    let _ = self.stop.send(Drain::Handover);
                    break End::Handover;
                }
                Ok(Event::Signal(s)) => {
                    tracing::info!(
                        signal = s,
                        "shutting down: no new connections, draining in-flight ones"
                    );
                    if let Some(pid) = self.upgrading.take() {
                        // A successor half-started would serve on alone.
                        // SAFETY: kill(2) on the pid of the child we started.
                        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                    }
                    systemd::stopping();
                    self.draining.store(true, Ordering::Release);
                    let _ = self.stop.send(Drain::Now);
                    break End::Stop;
                }
                Ok(Event::WorkerExit(id, r)) => {
                    let why = r.err().unwrap_or_else(|| "exited unexpectedly".into());
                    anyhow::bail!("worker {id} stopped: {why}");
                }
                Ok(Event::WorkerReady) => {}
            }
        };
        self.drain(end);
        Ok(())
    }

    /// Waits for the workers to finish their drains (bounded by drain_timeout).
    fn drain(&mut self, end: End) {
        let deadline = Instant::now() + self.reloader.drain_timeout() + Duration::from_secs(2);
        let mut left = self.workers;
        let mut termed = false;
        while left > 0 {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(Event::WorkerExit(id, Err(e))) => {
                    tracing::warn!(worker = id, error = %e, "worker ended with an error during drain");
                    left -= 1;
                }
                Ok(Event::WorkerExit(..)) => left -= 1,
                // A reload or upgrade of the service (systemctl kill signals
                // every process of the unit) is not for a draining process;
                // nor, after a handover, is the first SIGTERM: it drains already.
                Ok(Event::Signal(SIGHUP)) | Ok(Event::Signal(SIGUSR2)) => {}
                Ok(Event::Signal(SIGTERM)) if matches!(end, End::Handover) && !termed => {
                    termed = true
                }
                Ok(Event::Signal(SIGINT)) | Ok(Event::Signal(SIGTERM)) => {
                    tracing::warn!("second signal: exiting without waiting for the drain");
                    break;
                }
                Ok(_) => {} // reloads and upgrades get no answer while draining
                Err(_) => {
                    tracing::warn!(workers_left = left, "drain timed out");
                    break;
                }
            }
        }
        if let Some(a) = &self.admin {
            // An answer still being written (the upgrade's "done", a reload's
            // outcome) is not cut off by the exit.
            a.wait_idle(Duration::from_secs(2));
        }
        match end {
            End::Handover => tracing::info!("stopped: the new process serves"),
            End::Stop => tracing::info!("stopped"),
        }
    }
}
