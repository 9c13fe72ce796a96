//! What a reload reports and keeps: where listeners' sockets are bound, the
//! plan in force as `/stats` shows it, per-file outcomes, and the settings
//! that need a restart.

use crate::config::Config;
use crate::metrics::reloads::{CertRow, CrlRow, FileOutcome, PlanInfo};
use crate::metrics::Limiters;
use crate::plan::Plan;
use std::path::PathBuf;

/// Where a listener's sockets are bound, and how. A reload keeps them while
/// name and address stay (a changed backlog or nodelay needs new sockets:
/// reported as needing a restart).
#[derive(Clone)]
pub struct Bound {
    pub name: String,
    pub bind: std::net::SocketAddr,
    pub backlog: u32,
    pub nodelay: bool,
}

impl Bound {
    pub fn same_sockets(&self, o: &Bound) -> bool {
        self.name == o.name && self.bind == o.bind
    }
}

pub fn bound(plan: &Plan) -> Vec<Bound> {
    plan.listeners
        .iter()
        .map(|l| Bound {
            name: l.cfg.name.clone(),
            bind: l.cfg.bind,
            backlog: l.cfg.backlog,
            nodelay: l.cfg.nodelay,
        })
        .collect()
}

pub fn limiters(p: &Plan) -> Limiters {
    p.listeners
        .iter()
        .map(|l| (l.cfg.name.clone(), l.limiter.clone()))
        .collect()
}

pub fn plan_info(p: &Plan) -> PlanInfo {
    let mut certs = Vec::new();
    let mut crls = Vec::new();
    let row = |scope: String, m: &crate::tls::server::Material| CertRow {
        scope,
        kind: m.kind,
        path: m.path.display().to_string(),
        subject: m.info.subject.clone(),
        sha256: m.info.sha256.clone(),
        not_before: m.info.not_before,
        not_after: m.info.not_after,
    };
    for l in &p.listeners {
        certs.extend(
            l.tls
                .certs
                .iter()
                .map(|m| row(format!("listener {}", l.cfg.name), m)),
        );
        crls.extend(l.tls.crls.iter().map(|(path, c)| CrlRow {
            listener: l.cfg.name.clone(),
            path: path.display().to_string(),
            issuer: c.issuer.clone(),
            this_update: c.this_update,
            next_update: c.next_update,
        }));
    }
    for u in &p.upstreams {
        if let Some(t) = &u.tls {
            certs.extend(
                t.certs
                    .iter()
                    .map(|m| row(format!("upstream {}", u.cfg.name), m)),
            );
        }
    }
    PlanInfo {
        generation: p.generation,
        partner_cap: p.config.partner_cap,
        loaded_at: p.loaded_at,
        listeners: p.listeners.iter().map(|l| l.cfg.name.clone()).collect(),
        upstreams: p.upstreams.iter().map(|u| u.cfg.name.clone()).collect(),
        certs,
        crls,
    }
}

/// Settings a running process cannot change, compared with what it started
/// with and how its sockets are bound (so they stay reported until applied).
pub fn restart_needed(old: &Config, new: &Config, bound: &[Bound]) -> Vec<String> {
    let mut out = Vec::new();
    let mut diff = |key: String, changed: bool| {
        if changed {
            out.push(key);
        }
    };
    diff("workers".into(), old.workers != new.workers);
    diff("admin".into(), old.admin_bind != new.admin_bind);
    diff("log_format".into(), old.log_format != new.log_format);
    diff("ring_entries".into(), old.ring_entries != new.ring_entries);
    diff(
        "sqpoll_idle_ms".into(),
        old.sqpoll_idle_ms != new.sqpoll_idle_ms,
    );
    diff("nofile".into(), old.nofile != new.nofile);
    for (i, l) in new.listeners.iter().enumerate() {
        let Some(b) = bound.iter().find(|b| b.name == l.name && b.bind == l.bind) else {
            continue; // new sockets, bound as configured
        };
        diff(format!("listener[{i}].backlog"), b.backlog != l.backlog);
        diff(format!("listener[{i}].nodelay"), b.nodelay != l.nodelay);
    }
    out
}

pub fn file_rows(read: &[(PathBuf, crate::plan::files::Loaded)]) -> Vec<FileOutcome> {
    read.iter()
        .map(|(p, l)| FileOutcome {
            path: p.display().to_string(),
            key: l.key.clone(),
            sha256: Some(l.sha256.clone()),
            error: None,
        })
        .collect()
}
