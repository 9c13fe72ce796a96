//! What the admin listener shows about reloads: each attempt's outcome, per
//! file, and the plan in force with its loaded certificates and CRLs.

use serde::Serialize;

/// One reload attempt, applied whole or not at all.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Unix time of the attempt.
    pub at: i64,
    /// "SIGHUP", "admin", "changed: <files>", "ticket rotation".
    pub trigger: String,
    /// "ok" or "failed".
    pub result: &'static str,
    /// The generation in force after the attempt.
    pub generation: u64,
    /// Why it failed: the file, the key and what is wrong.
    pub error: Option<String>,
    /// Every file read, and the one that failed (with its error).
    pub files: Vec<FileOutcome>,
    /// Settings that changed but only apply after a restart.
    pub restart_needed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileOutcome {
    pub path: String,
    /// The config key that names it.
    pub key: String,
    pub sha256: Option<String>,
    pub error: Option<String>,
}

/// A certificate of the plan in force.
#[derive(Debug, Clone, Serialize)]
pub struct CertRow {
    /// "listener <name>" or "upstream <name>".
    pub scope: String,
    /// server | client_ca | origin_ca | gateway_client
    pub kind: &'static str,
    pub path: String,
    pub subject: String,
    pub sha256: String,
    pub not_before: i64,
    pub not_after: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CrlRow {
    pub listener: String,
    pub path: String,
    pub issuer: String,
    pub this_update: i64,
    pub next_update: Option<i64>,
}

/// The plan in force.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlanInfo {
    pub generation: u64,
    /// Distinct partners with series of their own (the rest: `other`).
    pub partner_cap: usize,
    pub loaded_at: i64,
    pub listeners: Vec<String>,
    pub upstreams: Vec<String>,
    pub certs: Vec<CertRow>,
    pub crls: Vec<CrlRow>,
}

/// An upgrade that failed (a successful one ends this process).
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeOutcome {
    pub at: i64,
    pub error: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadInfo {
    /// This process (what `mtlsgate upgrade` signals).
    pub pid: u32,
    /// The last failed upgrade, if any.
    pub upgrade: Option<UpgradeOutcome>,
    pub ok_total: u64,
    pub failed_total: u64,
    /// Unix time of the last reload applied (or of the start).
    pub last_success_at: i64,
    pub last: Option<Outcome>,
    pub plan: PlanInfo,
}

impl ReloadInfo {
    pub fn record(&mut self, o: Outcome) {
        if o.result == "ok" {
            self.ok_total += 1;
            self.last_success_at = o.at;
        } else {
            self.failed_total += 1;
        }
        self.last = Some(o);
    }
}
