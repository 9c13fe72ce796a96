//! Renders merged metrics as Prometheus text (`/metrics`); `json` renders `/stats` and `/certs`.

use super::reloads::ReloadInfo;
use super::series::BUCKETS_US;
use super::{merge, KeyInfo, ListenerStats, PartnerRefusals, Snapshot};
use crate::tls::Kind;
use std::fmt::Write as _;

pub(super) fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes one metric family: `# HELP`/`# TYPE`, then `name{labels} value` per row.
/// (Writing to a String cannot fail, so `writeln!` results are ignored.)
pub(super) fn family(
    w: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    rows: Vec<(String, String)>,
) {
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

/// One histogram's samples from non-cumulative bucket counts (the last: +Inf).
pub(super) fn histogram(
    w: &mut String,
    name: &str,
    labels: &str,
    bounds: &[u64],
    counts: &[u64],
    sum_us: u64,
) {
    let mut acc = 0u64;
    for (i, c) in counts.iter().enumerate() {
        acc += c;
        let le = bounds
            .get(i)
            .map_or("+Inf".to_string(), |us| (*us as f64 / 1e6).to_string());
        let _ = writeln!(w, "{name}_bucket{{{labels},le=\"{le}\"}} {acc}");
    }
    let _ = writeln!(w, "{name}_sum{{{labels}}} {}", sum_us as f64 / 1e6);
    let _ = writeln!(w, "{name}_count{{{labels}}} {acc}");
}

pub fn prometheus(
    snap: &Snapshot,
    keys: &KeyInfo,
    reloads: &ReloadInfo,
    slots: &super::partners::Slots,
    stale: usize,
) -> String {
    let (names, merged) = merge(snap);
    let (names, m) = (&names[..], &merged);
    let mut w = String::new();
    let kinds = |s: &ListenerStats| {
        vec![
            (
                ",kind=\"full\"".to_string(),
                s.count(Kind::Full).to_string(),
            ),
            (
                ",kind=\"resumed\"".to_string(),
                s.count(Kind::Resumed).to_string(),
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
    for (name, help, cpu) in [
        (
            "mtlsgate_handshake_seconds",
            "Accept to handshake complete (or failed), by kind, outcome, TLS version and key-exchange group.",
            false,
        ),
        (
            "mtlsgate_handshake_cpu_seconds",
            "The gateway's own processing time in the handshake (time in rustls), network waits excluded.",
            true,
        ),
    ] {
        let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (n, s) in names.iter().zip(m) {
            for (k, series) in &s.series {
                let labels = format!(
                    "listener=\"{}\",kind=\"{}\",outcome=\"{}\",version=\"{}\",group=\"{}\"",
                    esc(n),
                    k.kind.label(),
                    if k.ok { "ok" } else { "failed" },
                    k.version,
                    k.group
                );
                let clock = if cpu { &series.cpu } else { &series.total };
                histogram(&mut w, name, &labels, &BUCKETS_US, &clock.buckets, clock.sum_us);
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
        "Connections that ended before they were served, by side (downstream: the partner; upstream; internal: the gateway's limits) and reason.",
        per_listener(names, m, |s| {
            s.failures
                .iter()
                .map(|(o, v)| (format!(",side=\"{}\",reason=\"{}\"", o.side().label(), o.label()), v.to_string()))
                .collect()
        }),
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
    family(
        &mut w,
        "mtlsgate_workers_stale",
        "gauge",
        "Workers that did not answer this read in time: their figures are from their last answer.",
        one(stale),
    );
    let now = crate::tls::material::now_secs();
    super::partners::prometheus(&mut w, names, m, &reloads.plan, slots, now);
    w
}

/// `mtlsgate_partner_limited_total`: refusals by partner identity (label
/// values escaped: an identity is the partner's own text).
pub fn partner_limits(
    w: &mut String,
    limits: &[(String, PartnerRefusals)],
    slots: &super::partners::Slots,
) {
    let mut rows = Vec::new();
    for (listener, partners) in limits {
        // The partner cap's `(other)` here too.
        let mut folded: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for (p, conns, reqs) in partners {
            let name = if slots.owns(listener, p) {
                p.as_str()
            } else {
                super::partners::OTHER
            };
            let e = folded.entry(name).or_default();
            e.0 += conns;
            e.1 += reqs;
        }
        for (p, (conns, reqs)) in folded {
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

pub(super) fn ratio(s: &ListenerStats) -> f64 {
    let (full, resumed) = (s.count(Kind::Full), s.count(Kind::Resumed));
    if full + resumed == 0 {
        0.0
    } else {
        resumed as f64 / (full + resumed) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn a_label_value_with_a_quote_a_backslash_and_a_newline_is_escaped_per_the_exposition_format() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
