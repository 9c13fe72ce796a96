//! Renders merged metrics as Prometheus text and as JSON for `/stats`.

use super::reloads::ReloadInfo;
use super::{merge, KeyInfo, ListenerStats, PartnerRefusals, Snapshot};
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;

const QUANTILES: [(f64, &str); 5] = [
    (0.5, "0.5"),
    (0.9, "0.9"),
    (0.99, "0.99"),
    (0.999, "0.999"),
    (1.0, "1"),
];

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one metric family: `# HELP`/`# TYPE`, then `name{labels} value` per row.
/// (Writing to a String cannot fail, so `writeln!` results are ignored.)
fn family(w: &mut String, name: &str, kind: &str, help: &str, rows: Vec<(String, String)>) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in rows {
        if labels.is_empty() {
            let _ = writeln!(w, "{name} {value}");
        } else {
            let _ = writeln!(w, "{name}{{{labels}}} {value}");
        }
    }
}

/// One row per listener and per entry of `f`'s list of (extra labels, value).
fn per_listener(
    names: &[String],
    merged: &[ListenerStats],
    f: impl Fn(&ListenerStats) -> Vec<(String, String)>,
) -> Vec<(String, String)> {
    names
        .iter()
        .zip(merged)
        .flat_map(|(n, s)| {
            let n = esc(n);
            f(s).into_iter()
                .map(move |(l, v)| (format!("listener=\"{n}\"{l}"), v))
        })
        .collect()
}

fn by<K: std::fmt::Display>(
    label: &str,
    m: &std::collections::BTreeMap<K, u64>,
) -> Vec<(String, String)> {
    m.iter()
        .map(|(k, v)| (format!(",{label}=\"{k}\""), v.to_string()))
        .collect()
}

fn one(v: impl ToString) -> Vec<(String, String)> {
    vec![(String::new(), v.to_string())]
}

pub fn prometheus(snap: &Snapshot, keys: &KeyInfo, reloads: &ReloadInfo) -> String {
    let (names, merged) = merge(snap);
    let (names, m) = (&names[..], &merged);
    let mut w = String::new();
    let kinds = |s: &ListenerStats| {
        vec![
            (",kind=\"full\"".to_string(), s.hs_full.len().to_string()),
            (
                ",kind=\"resumed\"".to_string(),
                s.hs_resumed.len().to_string(),
            ),
        ]
    };
    family(
        &mut w,
        "mtlsgate_handshakes_total",
        "counter",
        "Completed TLS handshakes.",
        per_listener(names, m, kinds),
    );
    let mut summary = Vec::new();
    for (n, s) in names.iter().zip(m) {
        let n = esc(n);
        for (kind, h) in [("full", &s.hs_full), ("resumed", &s.hs_resumed)] {
            for (q, qs) in QUANTILES {
                let v = if h.is_empty() {
                    0.0
                } else {
                    h.value_at_quantile(q) as f64 / 1e6
                };
                summary.push((
                    format!("listener=\"{n}\",kind=\"{kind}\",quantile=\"{qs}\""),
                    v.to_string(),
                ));
            }
        }
    }
    family(
        &mut w,
        "mtlsgate_handshake_duration_seconds",
        "summary",
        "Accept to handshake complete.",
        summary,
    );
    for (suffix, f) in [("_sum", true), ("_count", false)] {
        for (n, s) in names.iter().zip(m) {
            for (kind, h) in [("full", &s.hs_full), ("resumed", &s.hs_resumed)] {
                let v = if f {
                    (h.mean() * h.len() as f64 / 1e6).to_string()
                } else {
                    h.len().to_string()
                };
                let _ = writeln!(w, "mtlsgate_handshake_duration_seconds{suffix}{{listener=\"{}\",kind=\"{kind}\"}} {v}", esc(n));
            }
        }
    }
    family(
        &mut w,
        "mtlsgate_resumption_ratio",
        "gauge",
        "Resumed / all completed handshakes.",
        per_listener(names, m, |s| one(ratio(s))),
    );
    family(
        &mut w,
        "mtlsgate_handshake_failures_total",
        "counter",
        "Refused or failed handshakes by reason.",
        per_listener(names, m, |s| by("reason", &s.failures)),
    );
    family(
        &mut w,
        "mtlsgate_tls_version_total",
        "counter",
        "Completed handshakes by TLS version.",
        per_listener(names, m, |s| by("version", &s.versions)),
    );
    family(
        &mut w,
        "mtlsgate_ticket_failures_total",
        "counter",
        "Tickets that did not resume, by cause.",
        per_listener(names, m, |s| by("cause", &s.ticket_failures)),
    );
    family(
        &mut w,
        "mtlsgate_connections_accepted_total",
        "counter",
        "Accepted TCP connections.",
        per_listener(names, m, |s| one(s.accepted)),
    );
    family(
        &mut w,
        "mtlsgate_connections_active",
        "gauge",
        "Open partner connections.",
        per_listener(names, m, |s| one(s.active)),
    );
    let rejected = |s: &ListenerStats| {
        vec![(
            ",reason=\"max_connections\"".to_string(),
            s.rejected_limit.to_string(),
        )]
    };
    family(
        &mut w,
        "mtlsgate_connections_rejected_total",
        "counter",
        "Connections closed at once over a limit.",
        per_listener(names, m, rejected),
    );
    family(
        &mut w,
        "mtlsgate_policy_denied_total",
        "counter",
        "Requests or connections denied by an allow-list.",
        per_listener(names, m, |s| one(s.denied)),
    );
    family(
        &mut w,
        "mtlsgate_connections_closed_revoked_total",
        "counter",
        "Open connections closed because a reloaded CRL revoked their certificate.",
        per_listener(names, m, |s| one(s.closed_revoked)),
    );
    family(
        &mut w,
        "mtlsgate_requests_total",
        "counter",
        "HTTP responses by status.",
        per_listener(names, m, |s| by("code", &s.requests)),
    );
    family(
        &mut w,
        "mtlsgate_upstream_errors_total",
        "counter",
        "Upstream failures by kind.",
        per_listener(names, m, |s| by("kind", &s.upstream_errors)),
    );
    family(
        &mut w,
        "mtlsgate_limited_total",
        "counter",
        "Refused by a limit: source_handshakes (per source address, before TLS), partner_connections, partner_request_rate.",
        per_listener(names, m, |s| by("kind", &s.limited)),
    );
    let mut workers = Vec::new();
    for (i, ws) in snap.iter().enumerate() {
        for (n, s) in ws.iter().flatten() {
            workers.extend(
                kinds(s)
                    .into_iter()
                    .map(|(l, v)| (format!("worker=\"{i}\",listener=\"{}\"{l}", esc(n)), v)),
            );
        }
    }
    family(
        &mut w,
        "mtlsgate_worker_handshakes_total",
        "counter",
        "Completed handshakes per worker.",
        workers,
    );
    let info = keys
        .ids
        .iter()
        .map(|(slot, id)| {
            (
                format!(
                    "source=\"{}\",slot=\"{slot}\",id=\"{id}\"",
                    esc(&keys.source)
                ),
                "1".to_string(),
            )
        })
        .collect();
    family(
        &mut w,
        "mtlsgate_ticket_keys_info",
        "gauge",
        "Ticket keys loaded, by slot.",
        info,
    );
    family(
        &mut w,
        "mtlsgate_ticket_keys_loaded_timestamp_seconds",
        "gauge",
        "When the ticket keys were last loaded.",
        one(keys.loaded_at),
    );
    family(
        &mut w,
        "mtlsgate_ticket_keys_load_error",
        "gauge",
        "1 while the last key-file load failed.",
        one(u8::from(keys.last_error.is_some())),
    );
    family(
        &mut w,
        "mtlsgate_config_reloads_total",
        "counter",
        "Reload attempts (config, TLS material, ticket keys), by outcome: failed ones left the running plan in force.",
        vec![
            ("result=\"ok\"".into(), reloads.ok_total.to_string()),
            ("result=\"failed\"".into(), reloads.failed_total.to_string()),
        ],
    );
    family(
        &mut w,
        "mtlsgate_config_last_reload_success_timestamp_seconds",
        "gauge",
        "When the plan in force was applied (start or last successful reload).",
        one(reloads.last_success_at),
    );
    family(
        &mut w,
        "mtlsgate_config_generation",
        "gauge",
        "Generation of the plan in force (1 at start, +1 per applied reload).",
        one(reloads.plan.generation),
    );
    w
}

/// `mtlsgate_partner_limited_total`: refusals by partner identity (label
/// values escaped: an identity is the partner's own text).
pub fn partner_limits(w: &mut String, limits: &[(String, PartnerRefusals)]) {
    let mut rows = Vec::new();
    for (listener, partners) in limits {
        for (p, conns, reqs) in partners {
            for (kind, n) in [("connection", conns), ("request", reqs)] {
                let labels = format!(
                    "listener=\"{}\",partner=\"{}\",kind=\"{kind}\"",
                    esc(listener),
                    esc(p)
                );
                rows.push((labels, n.to_string()));
            }
        }
    }
    family(
        w,
        "mtlsgate_partner_limited_total",
        "counter",
        "Connections and requests refused by a per-partner limit, by partner identity.",
        rows,
    );
}

fn ratio(s: &ListenerStats) -> f64 {
    let all = s.hs_full.len() + s.hs_resumed.len();
    if all == 0 {
        0.0
    } else {
        s.hs_resumed.len() as f64 / all as f64
    }
}

fn latency(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0});
    }
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

fn listener_json(s: &ListenerStats) -> Value {
    let full = s.hs_full.len();
    let resumed = s.hs_resumed.len();
    json!({
        "handshakes": {"full": full, "resumed": resumed},
        "resumption_ratio": ratio(s),
        "ticket_failures": s.ticket_failures,
        "handshake_latency_us": {"full": latency(&s.hs_full), "resumed": latency(&s.hs_resumed)},
        "failures": s.failures,
        "tls_versions": s.versions,
        "connections": {"accepted": s.accepted, "active": s.active, "rejected_max_connections": s.rejected_limit},
        "policy_denied": s.denied,
        "closed_revoked": s.closed_revoked,
        "limited": s.limited,
        "requests": s.requests.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>(),
        "upstream_errors": s.upstream_errors,
    })
}

pub fn stats_json(snap: &Snapshot, keys: &KeyInfo, reloads: &ReloadInfo) -> String {
    let (names, merged) = merge(snap);
    let listeners: Map<String, Value> = names
        .iter()
        .zip(&merged)
        .map(|(n, s)| (n.clone(), listener_json(s)))
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
                    "handshakes": {"full": s.hs_full.len(), "resumed": s.hs_resumed.len()},
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
