//! Live reload of TLS material without dropping connections: on SIGHUP, or
//! when the ticket-key file or a CRL file changes (polled once a second), the
//! main thread reloads them and sends each worker the new state; in-memory
//! ticket keys rotate on schedule. A bad file is reported and the old state kept.

use super::Gateway;
use crate::metrics::KeyInfo;
use crate::tls::server::ListenerTls;
use crate::tls::tickets::KeySet;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// What a worker swaps in: each listener's TLS state and the ticket keys.
pub struct Reload {
    pub tls: Vec<Arc<ListenerTls>>,
    pub keys: Arc<KeySet>,
}

type Stamp = Option<(i64, i64, u64, u64)>;

fn stamp(p: &PathBuf) -> Stamp {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec(), m.len(), m.ino()))
}

pub struct Reloader {
    gw: Arc<Gateway>,
    workers: Vec<UnboundedSender<Reload>>,
    pub info: Arc<Mutex<KeyInfo>>,
    keys: Arc<KeySet>,
    tls: Vec<Arc<ListenerTls>>,
    watched: Vec<(PathBuf, Stamp)>,
    rotated_at: Instant,
}

impl Reloader {
    pub fn new(gw: Arc<Gateway>, workers: Vec<UnboundedSender<Reload>>) -> Reloader {
        let keys = gw.keys.clone();
        let source = match &gw.config.tickets.key_file {
            Some(p) => format!("file:{}", p.display()),
            None => "memory".to_string(),
        };
        let info = KeyInfo {
            source,
            ids: keys.ids(),
            loaded_at: crate::tls::material::now_secs(),
            last_error: None,
            reloads: 0,
        };
        let mut watched: Vec<PathBuf> = gw.config.tickets.key_file.iter().cloned().collect();
        for l in &gw.config.listeners {
            watched.extend(l.tls.crls.iter().cloned());
        }
        Reloader {
            tls: gw.listeners.iter().map(|l| l.tls.clone()).collect(),
            watched: watched
                .into_iter()
                .map(|p| (p.clone(), stamp(&p)))
                .collect(),
            gw,
            workers,
            info: Arc::new(Mutex::new(info)),
            keys,
            rotated_at: Instant::now(),
        }
    }

    fn set_info(&self, f: impl FnOnce(&mut KeyInfo)) {
        if let Ok(mut i) = self.info.lock() {
            f(&mut i);
        }
    }

    fn broadcast(&self) {
        for w in &self.workers {
            let _ = w.send(Reload {
                tls: self.tls.clone(),
                keys: self.keys.clone(),
            });
        }
    }

    /// Once a second: reload on a changed file; rotate in-memory keys when due.
    pub fn tick(&mut self) {
        let changed: Vec<String> = self
            .watched
            .iter()
            .filter(|(p, s)| stamp(p) != *s)
            .map(|(p, _)| p.display().to_string())
            .collect();
        if !changed.is_empty() {
            self.reload(&format!("changed: {}", changed.join(", ")));
        }
        if self.gw.config.tickets.key_file.is_none()
            && self.rotated_at.elapsed() >= self.gw.config.tickets.rotation
        {
            match self.keys.rotated() {
                Ok(k) => {
                    self.keys = Arc::new(k);
                    self.rotated_at = Instant::now();
                    let ids = self.keys.ids();
                    self.set_info(|i| {
                        i.ids = ids;
                        i.loaded_at = crate::tls::material::now_secs();
                    });
                    tracing::info!("in-memory ticket keys rotated");
                    self.broadcast();
                }
                Err(e) => tracing::error!(error = %e, "cannot rotate ticket keys"),
            }
        }
    }

    /// Re-reads the ticket-key file and every listener's certificates, CA and CRLs.
    pub fn reload(&mut self, why: &str) {
        tracing::info!(why, "reloading ticket keys and TLS material");
        for (p, s) in self.watched.iter_mut() {
            *s = stamp(p);
        }
        if let Some(p) = &self.gw.config.tickets.key_file {
            match KeySet::load(p) {
                Ok(k) => {
                    let ids = k.ids();
                    tracing::info!(keys = ?ids, "ticket keys loaded");
                    self.keys = Arc::new(k);
                    self.set_info(|i| {
                        i.ids = ids;
                        i.loaded_at = crate::tls::material::now_secs();
                        i.last_error = None;
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, "ticket keys not reloaded; keeping the previous keys");
                    self.set_info(|i| i.last_error = Some(e));
                }
            }
        }
        let file = self.gw.config.path.clone();
        for (idx, l) in self.gw.config.listeners.iter().enumerate() {
            match crate::tls::server::build(&file, idx, l) {
                Ok(t) => self.tls[idx] = Arc::new(t),
                Err(e) => {
                    tracing::error!(listener = %l.name, error = %e, "TLS material not reloaded; keeping the previous")
                }
            }
        }
        self.broadcast();
        self.set_info(|i| i.reloads += 1);
    }
}
