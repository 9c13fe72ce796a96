//! Renders merged metrics as Prometheus text and as JSON for `/stats`.

use super::{merge, KeyInfo, ListenerStats, Snapshot};
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

pub fn prometheus(names: &[String], snap: &Snapshot, keys: &KeyInfo) -> String {
    let merged = merge(names.len(), snap);
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "# HELP mtlsgate_resumption_ratio Resumed / all completed handshakes.\n# TYPE mtlsgate_resumption_ratio gauge");
    for (n, s) in names.iter().zip(&merged) {
        let _ = writeln!(
            w,
            "mtlsgate_resumption_ratio{{listener=\"{}\"}} {}",
            esc(n),
            ratio(s)
        );
    }
    let _ = writeln!(w, "# HELP mtlsgate_ticket_failures_total Tickets that did not resume, by cause.\n# TYPE mtlsgate_ticket_failures_total counter");
    for (n, s) in names.iter().zip(&merged) {
        for (k, c) in &s.ticket_failures {
            let _ = writeln!(
                w,
                "mtlsgate_ticket_failures_total{{listener=\"{}\",cause=\"{k}\"}} {c}",
                esc(n)
            );
        }
    }
    let _ = writeln!(w, "# HELP mtlsgate_ticket_keys_info Ticket keys loaded, by slot.\n# TYPE mtlsgate_ticket_keys_info gauge");
    for (slot, id) in &keys.ids {
        let _ = writeln!(
            w,
            "mtlsgate_ticket_keys_info{{source=\"{}\",slot=\"{slot}\",id=\"{id}\"}} 1",
            esc(&keys.source)
        );
    }
    let _ = writeln!(w, "# TYPE mtlsgate_ticket_keys_loaded_timestamp_seconds gauge\nmtlsgate_ticket_keys_loaded_timestamp_seconds {}", keys.loaded_at);
    let _ = writeln!(
        w,
        "# TYPE mtlsgate_ticket_keys_load_error gauge\nmtlsgate_ticket_keys_load_error {}",
        keys.last_error.is_some() as u8
    );
    let _ = writeln!(
        w,
        "# TYPE mtlsgate_reloads_total counter\nmtlsgate_reloads_total {}",
        keys.reloads
    );
    // Writing to a String cannot fail, so results of writeln! are ignored below.
    let _ = writeln!(w, "# HELP mtlsgate_handshakes_total Completed TLS handshakes.\n# TYPE mtlsgate_handshakes_total counter");
    for (n, s) in names.iter().zip(&merged) {
        let n = esc(n);
        let _ = writeln!(
            w,
            "mtlsgate_handshakes_total{{listener=\"{n}\",kind=\"full\"}} {}",
            s.hs_full.len()
        );
        let _ = writeln!(
            w,
            "mtlsgate_handshakes_total{{listener=\"{n}\",kind=\"resumed\"}} {}",
            s.hs_resumed.len()
        );
    }
    let _ = writeln!(w, "# HELP mtlsgate_handshake_duration_seconds Accept to handshake complete.\n# TYPE mtlsgate_handshake_duration_seconds summary");
    for (n, s) in names.iter().zip(&merged) {
        let n = esc(n);
        for (kind, h) in [("full", &s.hs_full), ("resumed", &s.hs_resumed)] {
            for (q, qs) in QUANTILES {
                let v = if h.is_empty() {
                    0.0
                } else {
                    h.value_at_quantile(q) as f64 / 1e6
                };
                let _ = writeln!(w, "mtlsgate_handshake_duration_seconds{{listener=\"{n}\",kind=\"{kind}\",quantile=\"{qs}\"}} {v}");
            }
            let sum = h.mean() * h.len() as f64 / 1e6;
            let _ = writeln!(
                w,
                "mtlsgate_handshake_duration_seconds_sum{{listener=\"{n}\",kind=\"{kind}\"}} {sum}"
            );
            let _ = writeln!(
                w,
                "mtlsgate_handshake_duration_seconds_count{{listener=\"{n}\",kind=\"{kind}\"}} {}",
                h.len()
            );
        }
    }
    let _ = writeln!(w, "# HELP mtlsgate_handshake_failures_total Refused or failed handshakes by reason.\n# TYPE mtlsgate_handshake_failures_total counter");
    for (n, s) in names.iter().zip(&merged) {
        for (r, c) in &s.failures {
            let _ = writeln!(
                w,
                "mtlsgate_handshake_failures_total{{listener=\"{}\",reason=\"{r}\"}} {c}",
                esc(n)
            );
        }
    }
    let _ = writeln!(w, "# TYPE mtlsgate_tls_version_total counter");
    for (n, s) in names.iter().zip(&merged) {
        for (v, c) in &s.versions {
            let _ = writeln!(
                w,
                "mtlsgate_tls_version_total{{listener=\"{}\",version=\"{v}\"}} {c}",
                esc(n)
            );
        }
    }
    let _ = writeln!(w, "# TYPE mtlsgate_connections_accepted_total counter");
    for (n, s) in names.iter().zip(&merged) {
        let _ = writeln!(
            w,
            "mtlsgate_connections_accepted_total{{listener=\"{}\"}} {}",
            esc(n),
            s.accepted
        );
    }
    let _ = writeln!(w, "# TYPE mtlsgate_connections_active gauge");
    for (n, s) in names.iter().zip(&merged) {
        let _ = writeln!(
            w,
            "mtlsgate_connections_active{{listener=\"{}\"}} {}",
            esc(n),
            s.active
        );
    }
    let _ = writeln!(w, "# TYPE mtlsgate_connections_rejected_total counter");
    for (n, s) in names.iter().zip(&merged) {
        let _ = writeln!(
            w,
            "mtlsgate_connections_rejected_total{{listener=\"{}\",reason=\"max_connections\"}} {}",
            esc(n),
            s.rejected_limit
        );
    }
    let _ = writeln!(w, "# TYPE mtlsgate_policy_denied_total counter");
    for (n, s) in names.iter().zip(&merged) {
        let _ = writeln!(
            w,
            "mtlsgate_policy_denied_total{{listener=\"{}\"}} {}",
            esc(n),
            s.denied
        );
    }
    let _ = writeln!(w, "# TYPE mtlsgate_requests_total counter");
    for (n, s) in names.iter().zip(&merged) {
        for (code, c) in &s.requests {
            let _ = writeln!(
                w,
                "mtlsgate_requests_total{{listener=\"{}\",code=\"{code}\"}} {c}",
                esc(n)
            );
        }
    }
    let _ = writeln!(w, "# TYPE mtlsgate_upstream_errors_total counter");
    for (n, s) in names.iter().zip(&merged) {
        for (k, c) in &s.upstream_errors {
            let _ = writeln!(
                w,
                "mtlsgate_upstream_errors_total{{listener=\"{}\",kind=\"{k}\"}} {c}",
                esc(n)
            );
        }
    }
    let _ = writeln!(w, "# TYPE mtlsgate_worker_handshakes_total counter");
    for (i, ws) in snap.iter().enumerate() {
        for (n, s) in names.iter().zip(ws.iter().flatten()) {
            let _ = writeln!(w, "mtlsgate_worker_handshakes_total{{worker=\"{i}\",listener=\"{}\",kind=\"full\"}} {}", esc(n), s.hs_full.len());
            let _ = writeln!(w, "mtlsgate_worker_handshakes_total{{worker=\"{i}\",listener=\"{}\",kind=\"resumed\"}} {}", esc(n), s.hs_resumed.len());
        }
    }
    o
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
        "requests": s.requests.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>(),
        "upstream_errors": s.upstream_errors,
    })
}

pub fn stats_json(names: &[String], snap: &Snapshot, keys: &KeyInfo) -> String {
    let merged = merge(names.len(), snap);
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
                "listeners": names.iter().zip(ls).map(|(n, s)| (n.clone(), json!({
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
    let v = json!({"listeners": listeners, "workers": workers, "ticket_keys": ticket_keys});
    serde_json::to_string_pretty(&v).unwrap_or_default()
}
