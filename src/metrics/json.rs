//! `/stats` (exact HDR percentiles, per listener, series, partner and worker)
//! and `/certs` (every client certificate seen, and the gateway's own, by expiry).

use super::export::ratio;
use super::partners::Slots;
use super::reloads::ReloadInfo;
use super::series::{Clock, PartnerStats, PARTNER_BUCKETS_US};
use super::{merge, KeyInfo, ListenerStats, Snapshot};
use crate::tls::Kind;
use serde_json::{json, Map, Value};

fn latency(c: &Clock) -> Value {
    let Some(h) = c.hdr.as_deref().filter(|h| !h.is_empty()) else {
        return json!({"count": c.count()});
    };
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": (h.mean() * 10.0).round() / 10.0,
    })
}

/// A quantile from bucket counts (the bucket's upper bound, linearly
/// interpolated): what per-partner figures can give without a histogram each.
fn bucket_quantile(bounds: &[u64], counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut acc = 0;
    for (i, c) in counts.iter().enumerate() {
        if acc + c >= rank {
            let lo = if i == 0 { 0 } else { bounds[i - 1] }; // ok: i > 0, and bounds has counts.len() - 1 entries
            let Some(&hi) = bounds.get(i) else {
                return Some(lo); // +Inf bucket: at least its lower bound
            };
            let within = (rank - acc) as f64 / *c as f64;
            return Some(lo + ((hi - lo) as f64 * within) as u64);
        }
        acc += c;
    }
    None
}

fn partner_json(s: &PartnerStats) -> Value {
    let lat = |k: usize| {
        let c = &s.latency[k]; // ok: two kinds
        json!({
            "p50": bucket_quantile(&PARTNER_BUCKETS_US, c, 0.5),
            "p99": bucket_quantile(&PARTNER_BUCKETS_US, c, 0.99),
        })
    };
    let all = s.handshakes[0] + s.handshakes[1];
    json!({
        "handshakes": {"full": s.handshakes[0], "resumed": s.handshakes[1]},
        "resumption_ratio": if all == 0 { 0.0 } else { s.handshakes[1] as f64 / all as f64 },
        "failures": s.failures,
        "requests": {"1xx": s.requests[0], "2xx": s.requests[1], "3xx": s.requests[2], "4xx": s.requests[3], "5xx": s.requests[4]},
        "bytes": {"in": s.bytes_in, "out": s.bytes_out},
        "handshake_latency_us": {"full": lat(0), "resumed": lat(1)},
    })
}

fn listener_json(name: &str, s: &ListenerStats, cap: usize, slots: &Slots) -> Value {
    let (full, resumed) = (s.completed(Kind::Full), s.completed(Kind::Resumed));
    let series: Vec<Value> = s
        .series
        .iter()
        .map(|(k, v)| {
            json!({
                "kind": k.kind.label(), "outcome": if k.ok { "ok" } else { "failed" },
                "version": k.version, "group": k.group,
                "total_us": latency(&v.total), "cpu_us": latency(&v.cpu),
            })
        })
        .collect();
    let mut sides = Map::new();
    for (o, v) in &s.failures {
        let e = sides.entry(o.side().label()).or_insert(json!(0));
        *e = json!(e.as_u64().unwrap_or(0) + v);
    }
    json!({
        "handshakes": {"full": full.total.count(), "resumed": resumed.total.count()},
        "resumption_ratio": ratio(s),
        "ticket_failures": s.ticket_failures,
        "handshake_latency_us": {"full": latency(&full.total), "resumed": latency(&resumed.total)},
        "handshake_cpu_us": {"full": latency(&full.cpu), "resumed": latency(&resumed.cpu)},
        "series": series,
        "failures": s.failures,
        "failures_by_side": sides,
        "tls_versions": s.versions,
        "connections": {
            "accepted": s.accepted, "active": s.active, "handshaking": s.handshaking,
            "rejected_max_connections": s.rejected_limit,
        },
        "policy_denied": s.denied,
        "closed_revoked": s.closed_revoked,
        "limited": s.limited,
        "requests": s.requests.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>(),
        "upstream_errors": s.upstream_errors,
        "partners": slots.fold(name, &s.partners, cap).iter().map(|(p, s)| (p.clone(), partner_json(s))).collect::<Map<_, _>>(),
    })
}

pub fn stats_json(snap: &Snapshot, keys: &KeyInfo, reloads: &ReloadInfo, slots: &Slots) -> String {
    let (names, merged) = merge(snap);
    let cap = reloads.plan.partner_cap;
    let listeners: Map<String, Value> = names
        .iter()
        .zip(&merged)
        .map(|(n, s)| (n.clone(), listener_json(n, s, cap, slots)))
        .collect();
    let workers: Vec<Value> = snap
        .iter()
        .enumerate()
        .map(|(i, w)| match w {
            None => json!({"worker": i, "answered": false}),
            Some(ls) => json!({
                "worker": i,
                "answered": true,
                "listeners": ls.iter().map(|(n, s)| (n.clone(), json!({
                    "handshakes": {"full": s.count(Kind::Full), "resumed": s.count(Kind::Resumed)},
                    "failures": s.failures,
                    "connections_active": s.active,
                }))).collect::<Map<_, _>>(),
            }),
        })
        .collect();
    let ticket_keys = json!({
        "source": keys.source,
        "ids": keys.ids.iter().map(|(s, i)| (s.to_string(), json!(i))).collect::<Map<_, _>>(),
        "loaded_at": keys.loaded_at,
        "last_error": keys.last_error,
        "reloads": keys.reloads,
    });
    let reload = json!({
        "ok_total": reloads.ok_total,
        "failed_total": reloads.failed_total,
        "last_success_at": reloads.last_success_at,
        "last": reloads.last,
    });
    let v = json!({
        "pid": reloads.pid,
        "listeners": listeners,
        "workers": workers,
        "ticket_keys": ticket_keys,
        "reload": reload,
        "plan": reloads.plan,
        "upgrade": {"last_failure": reloads.upgrade},
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// `/certs`: client certificates seen (per listener), the gateway's own
/// certificates and its CRLs; `within`: only those expiring (or going stale)
/// within that many seconds. Sorted by expiry, soonest first.
pub fn certs_json(snap: &Snapshot, reloads: &ReloadInfo, now: i64, within: Option<i64>) -> String {
    let (names, merged) = merge(snap);
    let keep = |t: i64| within.is_none_or(|w| t - now <= w);
    let mut partners: Vec<(i64, Value)> = Vec::new();
    for (n, s) in names.iter().zip(&merged) {
        for (sha, c) in s.certs.iter().filter(|(_, c)| keep(c.not_after)) {
            partners.push((
                c.not_after,
                json!({
                    "listener": n, "partner": c.partner, "sha256": sha, "serial": c.serial,
                    "issuer": c.issuer, "not_before": c.not_before, "not_after": c.not_after,
                    "expires_in_s": c.not_after - now, "first_seen": c.first_seen,
                    "last_seen": c.last_seen, "connections": c.connections,
                }),
            ));
        }
    }
    partners.sort_by_key(|(t, _)| *t);
    let mut own: Vec<_> = reloads
        .plan
        .certs
        .iter()
        .filter(|c| keep(c.not_after))
        .collect();
    own.sort_by_key(|c| c.not_after);
    let mut crls: Vec<_> = reloads
        .plan
        .crls
        .iter()
        .filter(|c| c.next_update.is_none_or(keep))
        .collect();
    crls.sort_by_key(|c| c.next_update.unwrap_or(i64::MAX));
    let v = json!({
        "now": now,
        "within_s": within,
        "partners": partners.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        "gateway": own,
        "crls": crls.iter().map(|c| json!({
            "listener": c.listener, "path": c.path, "issuer": c.issuer,
            "this_update": c.this_update, "next_update": c.next_update,
            "stale_in_s": c.next_update.map(|t| t - now),
        })).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}
