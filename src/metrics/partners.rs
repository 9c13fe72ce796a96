//! Per-partner series and certificate expiry for `/metrics`. The cap on
//! distinct partners applies after the workers' figures are merged, so every
//! worker folds the same partners into `other`.

use super::export::{esc, family, histogram};
use super::reloads::PlanInfo;
use super::series::{PartnerStats, PARTNER_BUCKETS_US};
use super::ListenerStats;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

/// The partner series past the cap go into this one. No identity can be
/// this (a subject DN holds `=`, a URI SAN a scheme); one that is anyway is
/// folded into it.
pub const OTHER: &str = "(other)";

/// Which partners have series of their own, per listener: the first `cap`
/// seen (the most active first when several appear in one read) keep theirs
/// for the life of the process, so no series ever moves in or out of
/// `(other)` and every counter only grows. The cap applies to the merged
/// figures, so every worker's are folded alike.
#[derive(Default)]
pub struct Slots(Mutex<HashMap<String, BTreeSet<String>>>);

impl Slots {
    pub fn fold(
        &self,
        listener: &str,
        partners: &HashMap<String, PartnerStats>,
        cap: usize,
    ) -> Vec<(String, PartnerStats)> {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let own = all.entry(listener.to_string()).or_default();
        let mut new: Vec<(&String, &PartnerStats)> = partners
            .iter()
            .filter(|(n, _)| n.as_str() != OTHER && !own.contains(*n))
            .collect();
        new.sort_by(|a, b| {
            b.1.activity()
                .cmp(&a.1.activity())
                .then_with(|| a.0.cmp(b.0))
        });
        for (n, _) in new {
            if own.len() >= cap {
                break;
            }
            own.insert(n.clone());
        }
        let mut out: Vec<(String, PartnerStats)> = Vec::new();
        let mut other: Option<PartnerStats> = None;
        let mut names: Vec<&String> = partners.keys().collect();
        names.sort();
        for n in names {
            let s = &partners[n]; // ok: n is a key of partners
            if own.contains(n) {
                out.push((n.clone(), s.clone()));
            } else {
                other.get_or_insert_with(PartnerStats::default).merge(s);
            }
        }
        out.extend(other.map(|o| (OTHER.to_string(), o)));
        out
    }

    /// Whether `partner` has series of its own on `listener`.
    pub fn owns(&self, listener: &str, partner: &str) -> bool {
        let all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.get(listener).is_some_and(|s| s.contains(partner))
    }
}

/// The per-partner families, certificate expiry and CRL freshness.
pub fn prometheus(
    w: &mut String,
    names: &[String],
    merged: &[ListenerStats],
    plan: &PlanInfo,
    slots: &Slots,
    now: i64,
) {
    let folded: Vec<(&String, Vec<(String, PartnerStats)>)> = names
        .iter()
        .zip(merged)
        .map(|(n, s)| (n, slots.fold(n, &s.partners, plan.partner_cap)))
        .collect();
    let rows = |f: &dyn Fn(&PartnerStats) -> Vec<(String, u64)>| -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (l, ps) in &folded {
            for (p, s) in ps {
                for (extra, v) in f(s) {
                    out.push((
                        format!("listener=\"{}\",partner=\"{}\"{extra}", esc(l), esc(p)),
                        v.to_string(),
                    ));
                }
            }
        }
        out
    };
    let kinds = ["full", "resumed"];
    family(
        w,
        "mtlsgate_partner_handshakes_total",
        "counter",
        "Completed handshakes by partner identity (SPIFFE ID, else subject).",
        rows(&|s| {
            kinds
                .iter()
                .zip(s.handshakes)
                .map(|(k, v)| (format!(",kind=\"{k}\""), v))
                .collect()
        }),
    );
    family(
        w,
        "mtlsgate_partner_handshake_failures_total",
        "counter",
        "Refused handshakes and connections a partner's certificate names, by reason.",
        rows(&|s| {
            s.failures
                .iter()
                .map(|(o, v)| (format!(",reason=\"{}\"", o.label()), *v))
                .collect()
        }),
    );
    let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    family(
        w,
        "mtlsgate_partner_requests_total",
        "counter",
        "HTTP responses by partner and status class.",
        rows(&|s| {
            classes
                .iter()
                .zip(s.requests)
                .map(|(c, v)| (format!(",class=\"{c}\""), v))
                .collect()
        }),
    );
    family(
        w,
        "mtlsgate_partner_bytes_total",
        "counter",
        "Body bytes by partner: in (from the partner), out (to it).",
        rows(&|s| {
            vec![
                (",direction=\"in\"".into(), s.bytes_in),
                (",direction=\"out\"".into(), s.bytes_out),
            ]
        }),
    );
    let name = "mtlsgate_partner_handshake_seconds";
    let _ = std::fmt::Write::write_fmt(
        w,
        format_args!("# HELP {name} Handshake latency by partner (coarse buckets).\n# TYPE {name} histogram\n"),
    );
    for (l, ps) in &folded {
        for (p, s) in ps {
            for (k, kind) in kinds.iter().enumerate() {
                let labels = format!(
                    "listener=\"{}\",partner=\"{}\",kind=\"{kind}\"",
                    esc(l),
                    esc(p)
                );
                histogram(
                    w,
                    name,
                    &labels,
                    &PARTNER_BUCKETS_US,
                    &s.latency[k],
                    s.latency_sum_us[k],
                ); // ok: two kinds
            }
        }
    }
    let mut expiry = Vec::new();
    for ((l, ps), m) in folded.iter().zip(merged) {
        for (p, _) in ps.iter().filter(|(p, _)| p != OTHER) {
            // The partner's newest certificate (the one it will present
            // next) among those seen in the last 30 days: a partner gone
            // since should not keep an expiry alert firing.
            let recent =
                |c: &&super::series::CertSeen| &c.partner == p && c.last_seen >= now - 30 * 86_400;
            let newest = m.certs.values().filter(recent).map(|c| c.not_after).max();
            if let Some(t) = newest {
                expiry.push((
                    format!("listener=\"{}\",partner=\"{}\"", esc(l), esc(p)),
                    (t - now).to_string(),
                ));
            }
        }
    }
    family(
        w,
        "mtlsgate_partner_cert_expiry_seconds",
        "gauge",
        "Seconds until the newest certificate seen from a partner expires.",
        expiry,
    );
    let own = plan
        .certs
        .iter()
        .map(|c| {
            let labels = format!(
                "scope=\"{}\",kind=\"{}\",subject=\"{}\"",
                esc(&c.scope),
                c.kind,
                esc(&c.subject)
            );
            (labels, (c.not_after - now).to_string())
        })
        .collect();
    family(
        w,
        "mtlsgate_cert_expiry_seconds",
        "gauge",
        "Seconds until the gateway's own certificates (server, client CAs, origin CAs, its client certificate) expire.",
        own,
    );
    let crls = plan
        .crls
        .iter()
        .filter_map(|c| {
            let next = c.next_update?;
            Some((
                format!(
                    "listener=\"{}\",issuer=\"{}\"",
                    esc(&c.listener),
                    esc(&c.issuer)
                ),
                (next - now).to_string(),
            ))
        })
        .collect();
    family(
        w,
        "mtlsgate_crl_next_update_seconds",
        "gauge",
        "Seconds until a CRL's nextUpdate (negative: stale).",
        crls,
    );
}
