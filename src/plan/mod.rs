//! The versioned plan: one validated config resolved into what the gateway
//! serves (listeners with their routes and TLS state, upstreams by id), with
//! every file it names loaded once as bytes. Immutable once built; a reload
//! builds a new one beside it and swaps it in whole, or keeps the old.
//! `runtime` (which runs plans) and `proxy` (which reads them) both depend on
//! this module, not on each other.

pub mod files;

use crate::authz::AllowList;
use crate::config::{Config, ConfigError, ListenerConfig, UpstreamConfig};
use crate::limits::{Limiter, LocalLimiter};
use crate::tls::client::UpstreamTls;
use crate::tls::server::ListenerTls;
use files::Files;
use std::collections::BTreeSet;
use std::sync::Arc;

pub struct Route {
    /// Without trailing `/`; empty for `/`.
    pub prefix: String,
    pub case_insensitive: bool,
    /// Index into `Plan::upstreams`.
    pub upstream: usize,
    pub allow: Option<AllowList>,
}

/// A listener as planned. `tls` is the main thread's copy: the validated one,
/// and the holder of the listener-wide session cache; workers build their own.
pub struct Listener {
    pub cfg: ListenerConfig,
    pub tls: Arc<ListenerTls>,
    /// Per-partner and per-source limits; kept across reloads that leave the
    /// listener's limits unchanged, so their counts carry on.
    pub limiter: Arc<dyn Limiter>,
    pub default_upstream: Option<usize>,
    pub routes: Vec<Route>,
}

/// An upstream with its TLS client config (none for plain TCP).
pub struct Upstream {
    pub cfg: Arc<UpstreamConfig>,
    pub tls: Option<UpstreamTls>,
}

pub struct Plan {
    /// 1 for the plan the process started with, +1 per applied reload.
    pub generation: u64,
    pub config: Config,
    pub listeners: Vec<Listener>,
    pub upstreams: Vec<Arc<Upstream>>,
    /// Every file the plan was built from, frozen.
    pub files: Files,
    /// Unix time the plan was built.
    pub loaded_at: i64,
    /// Human-readable lines about the loaded material (for `check`).
    pub summary: Vec<String>,
}

/// A plan that could not be built: the first error, and the files read until then.
pub struct Failed {
    pub error: ConfigError,
    pub read: Vec<(std::path::PathBuf, files::Loaded)>,
}

impl Plan {
    /// Loads every certificate, key, CA and CRL `cfg` names and resolves it.
    /// `prev`: the running plan, whose session caches carry over and whose
    /// CRL coverage the new one must not silently shrink.
    pub fn build(cfg: &Config, generation: u64, prev: Option<&Plan>) -> Result<Plan, Failed> {
        Plan::build_with(cfg, generation, prev, Files::default())
    }

    /// `build`, reading from disk only what `files` does not hold yet.
    pub fn build_with(
        cfg: &Config,
        generation: u64,
        prev: Option<&Plan>,
        files: Files,
    ) -> Result<Plan, Failed> {
        match Plan::build_from(cfg, generation, prev, &files) {
            Ok(p) => Ok(Plan {
                files: files.freeze(),
                ..p
            }),
            Err(error) => Err(Failed {
                error,
                read: files.list(),
            }),
        }
    }

    fn build_from(
        cfg: &Config,
        generation: u64,
        prev: Option<&Plan>,
        files: &Files,
    ) -> Result<Plan, ConfigError> {
        let file = cfg.path.as_path();
        let mut summary = Vec::new();
        let mut upstreams = Vec::new();
        for u in cfg.upstreams.values() {
            let tls = match &u.tls {
                Some(t) => {
                    let ut = crate::tls::client::build(files, file, &u.name, t)?;
                    summary.extend(
                        ut.summary
                            .iter()
                            .map(|s| format!("upstream {}: {s}", u.name)),
                    );
                    Some(ut)
                }
                None => None,
            };
            upstreams.push(Arc::new(Upstream {
                cfg: u.clone(),
                tls,
            }));
        }
        let names: Vec<&String> = cfg.upstreams.keys().collect();
        let index = |name: &str| names.iter().position(|n| n.as_str() == name);
        let mut listeners = Vec::new();
        for (idx, l) in cfg.listeners.iter().enumerate() {
            let mut tls = crate::tls::server::build(files, file, idx, l)?;
            let old = prev.and_then(|p| p.listener(&l.name).map(|i| &p.listeners[i]));
            if let Some(old) = old {
                check_crl_coverage(file, idx, l, old, &tls)?;
                carry_session_cache(&mut tls, l, old);
            }
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
            let limiter = match old {
                Some(o) if o.cfg.limits == l.limits => o.limiter.clone(),
                _ => limiter(file, idx, l)?,
            };
            listeners.push(Listener {
                cfg: l.clone(),
                tls: Arc::new(tls),
                limiter,
                default_upstream: l.upstream.as_deref().and_then(index),
                routes,
            });
        }
        Ok(Plan {
            generation,
            config: cfg.clone(),
            listeners,
            upstreams,
            files: Files::default(),
            loaded_at: crate::tls::material::now_secs(),
            summary,
        })
    }

    /// The position of the listener called `name`.
    pub fn listener(&self, name: &str) -> Option<usize> {
        self.listeners.iter().position(|l| l.cfg.name == name)
    }

    /// A worker's own copy of a listener's TLS state, built from the snapshot
    /// (so no certificate, key or verifier object is shared between cores).
    /// Falls back to the shared copy if that fails (it cannot, short of memory:
    /// the same bytes built once already).
    pub fn worker_tls(&self, idx: usize) -> Arc<ListenerTls> {
        let l = &self.listeners[idx]; // ok: callers index within this plan
        match crate::tls::server::build(&self.files, &self.config.path, idx, &l.cfg) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                tracing::warn!(listener = %l.cfg.name, error = %e, "worker copy of TLS material failed; sharing the main one");
                l.tls.clone()
            }
        }
    }

    /// A worker's own copy of an upstream (its TLS client config built anew).
    pub fn worker_upstream(&self, idx: usize) -> Arc<Upstream> {
        let u = &self.upstreams[idx]; // ok: callers index within this plan
        let Some(t) = &u.cfg.tls else {
            return u.clone();
        };
        match crate::tls::client::build(&self.files, &self.config.path, &u.cfg.name, t) {
            Ok(tls) => Arc::new(Upstream {
                cfg: u.cfg.clone(),
                tls: Some(tls),
            }),
            Err(_) => u.clone(),
        }
    }

    /// Whether upstream `i` here is the same as upstream `j` of `other`:
    /// same settings and the same bytes in every file it names (so a pool of
    /// connections to it can be kept across a reload).
    pub fn same_upstream(&self, i: usize, other: &Plan, j: usize) -> bool {
        let (a, b) = (&self.upstreams[i].cfg, &other.upstreams[j].cfg); // ok: callers index within the plans
        if a != b {
            return false;
        }
        let Some(t) = &a.tls else {
            return true;
        };
        let paths = [Some(&t.ca), t.cert.as_ref(), t.key.as_ref()];
        paths.into_iter().flatten().all(|p| {
            let x = self.files.read(p, "").ok();
            let y = other.files.read(p, "").ok();
            x.is_some() && x == y
        })
    }
}

/// A CRL file that no longer covers an issuer its running version covered is
/// refused: that is a file caught half-written (one CA's CRL of two), not an
/// operator's choice, unless that CA also left the client CA bundle (retired).
/// Compared per file, for files named both before and after.
fn check_crl_coverage(
    file: &std::path::Path,
    idx: usize,
    l: &ListenerConfig,
    old: &Listener,
    new: &ListenerTls,
) -> Result<(), ConfigError> {
    let issuers = |t: &ListenerTls, path: &std::path::Path| -> BTreeSet<String> {
        t.crls
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, c)| c.issuer.clone())
            .collect()
    };
    let cas = |t: &ListenerTls| -> BTreeSet<String> {
        t.certs
            .iter()
            .filter(|m| m.kind == "client_ca")
            .map(|m| m.info.subject.clone())
            .collect()
    };
    let retired: BTreeSet<String> = cas(&old.tls).difference(&cas(new)).cloned().collect();
    for (i, path) in l.tls.crls.iter().enumerate() {
        if !old.cfg.tls.crls.contains(path) {
            continue;
        }
        let now = issuers(new, path);
        let missing: Vec<String> = issuers(&old.tls, path)
            .into_iter()
            .filter(|c| !now.contains(c) && !retired.contains(c))
            .collect();
        if !missing.is_empty() {
            return Err(ConfigError::new(
                file,
                format!("listener[{idx}].tls.crl[{i}]"),
                format!(
                    "{}: no longer holds a CRL for {} (the running version does): a file written only in part? The running CRLs stay in force",
                    path.display(),
                    missing.join("; ")
                ),
            ));
        }
    }
    Ok(())
}

fn limiter(
    file: &std::path::Path,
    idx: usize,
    l: &ListenerConfig,
) -> Result<Arc<dyn Limiter>, ConfigError> {
    let c = &l.limits;
    let partners = c.partners.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let lim = LocalLimiter::new(c.default, partners, c.source)
        .map_err(|e| ConfigError::new(file, format!("listener[{idx}].limits"), e.to_string()))?;
    Ok(Arc::new(lim))
}

/// Stateful session-cache entries survive a reload of the same listener.
fn carry_session_cache(tls: &mut ListenerTls, l: &ListenerConfig, old: &Listener) {
    if l.tls.session_cache > 0 && old.cfg.tls.session_cache == l.tls.session_cache {
        let mut cfg = (*tls.config).clone();
        cfg.session_storage = old.tls.config.session_storage.clone();
        tls.config = Arc::new(cfg);
    }
}
