//! Reloads, on the main thread: a whole-config reload (SIGHUP, `POST /reload`)
//! re-reads the config file; a changed CRL or ticket-key file (polled once a
//! second, applied only once it is stable) reloads the material the running
//! config names. Either way a complete new `Plan` is built and checked before
//! any worker sees it; if anything fails, the running plan stays and the
//! outcome says which file and key. In-memory ticket keys rotate on schedule.

use super::listen;
use super::report::{bound, file_rows, limiters, plan_info, restart_needed, Bound};
use super::worker::Update;
use super::Gateway;
use crate::config::{Config, ConfigError};
use crate::metrics::reloads::{FileOutcome, Outcome, ReloadInfo, UpgradeOutcome};
use crate::metrics::{KeyInfo, Limiters};
use crate::plan::files::{stamp, Files, Stamp};
use crate::plan::{Failed, Plan};
use crate::tls::material::now_secs;
use crate::tls::tickets::KeySet;
use crate::tune::profile::Knobs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// A watched file: the version the running plan loaded, a version whose
/// reload failed (not retried until the file changes again), and a new one
/// seen once (acted on when the next poll sees it unchanged: a writer may not
/// be done yet).
struct Watch {
    path: PathBuf,
    applied: Stamp,
    failed: Option<Stamp>,
    pending: Option<Stamp>,
}

pub struct Reloader {
    plan: Arc<Plan>,
    /// The config the process started with: what needs a restart to change.
    started: Config,
    keys: Arc<KeySet>,
    knobs: Knobs,
    workers: Vec<UnboundedSender<Update>>,
    bound: Vec<Bound>,
    pub info: Arc<Mutex<KeyInfo>>,
    pub reloads: Arc<Mutex<ReloadInfo>>,
    pub limiters: Arc<Mutex<Limiters>>,
    watched: Vec<Watch>,
    rotated_at: Instant,
}

/// The CRL files and the ticket-key file: those change without an operator's SIGHUP.
fn watch_list(plan: &Plan) -> Vec<Watch> {
    let c = &plan.config;
    let mut paths: Vec<PathBuf> = c.tickets.key_file.iter().cloned().collect();
    for l in &c.listeners {
        paths.extend(l.tls.crls.iter().cloned());
    }
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .map(|path| Watch {
            applied: plan.files.stamp_of(&path).or_else(|| stamp(&path)),
            path,
            failed: None,
            pending: None,
        })
        .collect()
}

impl Reloader {
    pub fn new(gw: &Gateway, workers: Vec<UnboundedSender<Update>>) -> Reloader {
        let plan = gw.plan.clone();
        let source = match &plan.config.tickets.key_file {
            Some(p) => format!("file:{}", p.display()),
            None => "memory".to_string(),
        };
        let info = KeyInfo {
            source,
            ids: gw.keys.ids(),
            loaded_at: now_secs(),
            last_error: None,
            reloads: 0,
        };
        let reloads = ReloadInfo {
            pid: std::process::id(),
            last_success_at: plan.loaded_at,
            plan: plan_info(&plan),
            ..Default::default()
        };
        Reloader {
            started: plan.config.clone(),
            watched: watch_list(&plan),
            bound: bound(&plan),
            keys: gw.keys.clone(),
            knobs: gw.knobs.clone(),
            plan,
            workers,
            info: Arc::new(Mutex::new(info)),
            reloads: Arc::new(Mutex::new(reloads)),
            limiters: Arc::new(Mutex::new(limiters(&gw.plan))),
            rotated_at: Instant::now(),
        }
    }

    /// Whether the plan in force reads its ticket keys from a file (a
    /// successor then reads it too; in-memory keys are handed over).
    pub fn uses_key_file(&self) -> bool {
        self.plan.config.tickets.key_file.is_some()
    }

    /// The ticket keys in force (an upgrade hands in-memory ones over).
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.clone()
    }

    /// An upgrade that did not happen: logged and shown in `/stats`.
    pub fn upgrade_failed(&self, e: String) {
        tracing::error!(error = %e, "upgrade failed; this process keeps serving");
        if let Ok(mut r) = self.reloads.lock() {
            r.upgrade = Some(UpgradeOutcome {
                at: now_secs(),
                error: e,
            });
        }
    }

    pub fn drain_timeout(&self) -> std::time::Duration {
        self.plan.config.drain_timeout
    }

    fn set_info(&self, f: impl FnOnce(&mut KeyInfo)) {
        if let Ok(mut i) = self.info.lock() {
            f(&mut i);
        }
    }

    /// Once a second: reload when a watched file changed and has stayed the
    /// same since the last poll; rotate in-memory keys when due.
    pub fn tick(&mut self) {
        let mut changed = Vec::new();
        for w in &mut self.watched {
            let now = stamp(&w.path);
            if now == w.applied || Some(now) == w.failed {
                w.pending = None;
            } else if w.pending == Some(now) {
                changed.push(w.path.clone());
            } else {
                w.pending = Some(now);
            }
        }
        if !changed.is_empty() {
            let names: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
            let trigger = format!("changed: {}", names.join(", "));
            // The running config, and only the changed files read anew.
            let files = Files::seeded(&self.plan.files, &changed);
            let cfg = self.plan.config.clone();
            let outcome = self.reload(&trigger, Ok(cfg), files);
            if outcome.result != "ok" {
                for w in self
                    .watched
                    .iter_mut()
                    .filter(|w| changed.contains(&w.path))
                {
                    w.failed = w.pending.take();
                }
            }
        }
        if self.plan.config.tickets.key_file.is_none()
            && self.rotated_at.elapsed() >= self.plan.config.tickets.rotation
        {
            match self.keys.rotated() {
                Ok(k) => {
                    self.keys = Arc::new(k);
                    self.rotated_at = Instant::now();
                    let ids = self.keys.ids();
                    self.set_info(|i| {
                        i.ids = ids;
                        i.loaded_at = now_secs();
                    });
                    tracing::info!("in-memory ticket keys rotated");
                    self.broadcast(Vec::new());
                }
                Err(e) => tracing::error!(error = %e, "cannot rotate ticket keys"),
            }
        }
    }

    /// SIGHUP or `POST /reload`: re-read the config file and everything it names.
    pub fn reload_config(&mut self, trigger: &str) -> Outcome {
        let path = self.plan.config.path.clone();
        let cfg = crate::config::load_with(&path, &self.knobs);
        self.reload(trigger, cfg, Files::default())
    }

    fn reload(&mut self, trigger: &str, cfg: Result<Config, ConfigError>, files: Files) -> Outcome {
        tracing::info!(trigger, "reloading");
        let outcome = match self.try_reload(cfg, files) {
            Ok((files, restart)) => {
                let generation = self.plan.generation;
                if restart.is_empty() {
                    tracing::info!(trigger, generation, "reload applied");
                } else {
                    tracing::warn!(trigger, generation, restart_needed = ?restart, "reload applied; these settings apply only after a restart");
                }
                Outcome {
                    at: now_secs(),
                    trigger: trigger.to_string(),
                    result: "ok",
                    generation,
                    error: None,
                    files,
                    restart_needed: restart,
                }
            }
            Err((error, files)) => {
                tracing::error!(trigger, error = %error, "reload refused; the running configuration stays in force");
                Outcome {
                    at: now_secs(),
                    trigger: trigger.to_string(),
                    result: "failed",
                    generation: self.plan.generation,
                    error: Some(error.to_string()),
                    files,
                    restart_needed: Vec::new(),
                }
            }
        };
        if let Ok(mut r) = self.reloads.lock() {
            r.record(outcome.clone());
            r.plan = plan_info(&self.plan);
        }
        self.set_info(|i| i.reloads += 1);
        outcome
    }

    /// Builds and checks everything, binds new listeners, then hands the new
    /// plan to every worker; nothing is applied unless all of it succeeded.
    #[allow(clippy::type_complexity)]
    fn try_reload(
        &mut self,
        cfg: Result<Config, ConfigError>,
        files: Files,
    ) -> Result<(Vec<FileOutcome>, Vec<String>), (ConfigError, Vec<FileOutcome>)> {
        let cfg = cfg.map_err(|e| (e, Vec::new()))?;
        let next = self.plan.generation + 1;
        let plan = Plan::build_with(&cfg, next, Some(&self.plan), files).map_err(
            |Failed { error, read }| {
                let mut rows = file_rows(&read);
                let (key, msg) = (error.key.clone(), error.msg.clone());
                rows.push(FileOutcome {
                    path: msg.split(": ").next().unwrap_or("").to_string(),
                    key,
                    sha256: None,
                    error: Some(msg),
                });
                (error, rows)
            },
        )?;
        let rows = file_rows(&plan.files.list());
        let keys = match &cfg.tickets.key_file {
            Some(p) => match super::load_keys(&cfg) {
                Ok((k, _)) => Arc::new(k),
                Err(e) => {
                    let mut rows = rows.clone();
                    rows.push(FileOutcome {
                        path: p.display().to_string(),
                        key: e.key.clone(),
                        sha256: None,
                        error: Some(e.msg.clone()),
                    });
                    let msg = e.msg.clone();
                    self.set_info(|i| i.last_error = Some(msg));
                    return Err((e, rows));
                }
            },
            // Keys kept in memory stay as they are (a file removed from the
            // config leaves the last keys it gave in use).
            None => self.keys.clone(),
        };
        if let Some(a) = &cfg.access_log {
            if let Err(e) = crate::proxy::access::AccessLog::open(&a.path, a.format) {
                let msg = format!("{}: cannot open for appending: {e}", a.path.display());
                return Err((ConfigError::new(&cfg.path, "access_log.path", msg), rows));
            }
        }
        let restart = restart_needed(&self.started, &cfg, &self.bound);
        // Sockets for listeners that are new or moved; the rest keep theirs.
        let n = self.workers.len();
        let mut sockets: Vec<Vec<(String, std::net::TcpListener)>> =
            (0..n).map(|_| Vec::new()).collect();
        let now = bound(&plan);
        for (b, l) in now.iter().zip(&plan.listeners) {
            if self.bound.iter().any(|o| o.same_sockets(b)) {
                continue;
            }
            // Bound now, listening only once every step that can fail has
            // succeeded: a refused reload leaves no socket taking connections.
            let socks = listen::bind_only(b.bind, n, b.nodelay).map_err(|e| {
                let key = format!("listener {:?}", b.name);
                let msg = format!("cannot bind {}: {e}", b.bind);
                (ConfigError::new(&cfg.path, key, msg), rows.clone())
            })?;
            for (w, s) in sockets.iter_mut().zip(socks) {
                w.push((l.cfg.name.clone(), s));
            }
        }
        for (name, s) in sockets.iter().flatten() {
            let backlog = plan
                .listener(name)
                .map_or(4096, |i| plan.listeners[i].cfg.backlog); // ok: i found in plan
            if let Err(e) = listen::listen(s, backlog) {
                let key = format!("listener {name:?}");
                let err = ConfigError::new(&cfg.path, key, format!("cannot listen: {e}"));
                return Err((err, rows));
            }
        }
        for b in now
            .iter()
            .filter(|b| !self.bound.iter().any(|o| o.same_sockets(b)))
        {
            tracing::info!(listener = %b.name, bind = %b.bind, "listening (added by reload)");
        }
        for b in &self.bound {
            if !plan.listeners.iter().any(|l| l.cfg.name == b.name) {
                tracing::info!(listener = %b.name, "listener removed by reload: draining");
            }
        }
        if cfg.tickets.key_file.is_some() {
            let ids = keys.ids();
            if ids != self.keys.ids() {
                tracing::info!(keys = ?ids, "ticket keys loaded");
            }
            self.set_info(|i| {
                i.ids = ids;
                i.loaded_at = now_secs();
                i.last_error = None;
            });
        }
        // Kept sockets keep the settings they were bound with.
        let old = std::mem::take(&mut self.bound);
        self.bound = now
            .into_iter()
            .map(|b| {
                let kept = old.iter().find(|o| o.same_sockets(&b));
                kept.map_or(b, |o| Bound {
                    backlog: o.backlog,
                    nodelay: o.nodelay,
                    ..o.clone()
                })
            })
            .collect();
        self.keys = keys;
        self.plan = Arc::new(plan);
        self.watched = watch_list(&self.plan);
        if let Ok(mut l) = self.limiters.lock() {
            *l = limiters(&self.plan);
        }
        self.broadcast(sockets);
        Ok((rows, restart))
    }

    fn broadcast(&self, sockets: Vec<Vec<(String, std::net::TcpListener)>>) {
        let mut sockets = sockets.into_iter();
        for w in &self.workers {
            let _ = w.send(Update {
                plan: self.plan.clone(),
                keys: self.keys.clone(),
                sockets: sockets.next().unwrap_or_default(),
            });
        }
    }
}
