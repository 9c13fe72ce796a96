//! `mtlsgate stats`: a terminal (or JSON) view of a running gateway's handshake figures, read
//! from its admin listener's `/stats` and `/certs`, redrawn with `--watch`.

use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub struct Opts {
    pub top: usize,
    pub watch: Option<Duration>,
    pub json: bool,
    pub within_days: u64,
}

/// A bound on `--watch`, so a forgotten terminal does not poll forever.
const MAX_REFRESHES: u32 = 10_000;
const TIMEOUT: Duration = Duration::from_secs(5);
/// `/stats` is far smaller (the gateway caps partners); more is not our gateway.
const MAX_ANSWER: u64 = 64 << 20;
const WIDTH: usize = 100;
static NULL: Value = Value::Null;

/// How a table cell shows a number: a figure (a rate, or a total, shortened with k/M/G to
/// keep columns put), a whole one (a count or a percentage, even among rates), microseconds
/// as milliseconds, or seconds left as days/hours/minutes.
#[derive(Clone, Copy)]
enum Show {
    Fig,
    Whole,
    Ms,
    Left,
}
use Show::*;

/// A table column: heading, width (negative: left-aligned text), how, JSON pointer in the row.
/// Each table adds up to at most WIDTH columns.
type Col = (&'static str, i32, Show, &'static str);
const LATENCY: &[Col] = &[
    ("latency ms", -10, Fig, "/kind"),
    ("count", 8, Whole, "/count"),
    ("p50", 9, Ms, "/p50"),
    ("p90", 9, Ms, "/p90"),
    ("p99", 9, Ms, "/p99"),
    ("p99.9", 9, Ms, "/p999"),
    ("max", 9, Ms, "/max"),
];
const PARTNERS: &[Col] = &[
    ("partner", -40, Fig, "/partner"),
    ("hs", 5, Fig, "/handshakes/all"),
    ("res%", 4, Whole, "/handshakes/resumed_pct"),
    ("fail", 4, Fig, "/failures"),
    ("reason", -12, Fig, "/top_failure"),
    ("p50ms", 6, Ms, "/latency_us/p50"),
    ("p99ms", 6, Ms, "/latency_us/p99"),
    ("2xx", 4, Fig, "/requests/2xx"),
    ("4xx", 4, Fig, "/requests/4xx"),
    ("5xx", 4, Fig, "/requests/5xx"),
];
const EXPIRING: &[Col] = &[
    ("left", 7, Left, "/left_s"),
    ("kind", -7, Fig, "/kind"),
    ("where", -17, Fig, "/where"),
    ("who", -40, Fig, "/who"),
    ("detail", -23, Fig, "/detail"),
];

/// Fetches /stats (and /certs?within=<d>d) from `addr` and prints the view (or JSON); with
/// `watch`, redraws every interval until interrupted (bounded: stop after 10,000 refreshes),
/// computing rates from the difference between two consecutive /stats.
pub fn run(addr: SocketAddr, o: &Opts) -> Result<(), String> {
    let certs_path = format!("/certs?within={}d", o.within_days);
    let clear = o.watch.is_some() && !o.json && std::io::stdout().is_terminal();
    let mut prev: Option<(Value, Instant)> = None;
    for i in 0..MAX_REFRESHES {
        let frame = match get(addr, "/stats").and_then(|s| Ok((s, get(addr, &certs_path)?))) {
            Ok((stats, certs)) => {
                let now = Instant::now();
                let secs = prev.as_ref().map_or(0.0, |p| (now - p.1).as_secs_f64());
                let p = prev.as_ref().map(|p| &p.0);
                let frame = match o.json {
                    true => summary(&stats, p, secs, &certs, o).to_string(),
                    false => render(&stats, p, secs, &certs, o),
                };
                prev = Some((stats, now));
                frame
            }
            // A first failure is most likely a wrong address: stop. Later ones (a gateway
            // restarting) are shown, and the next refresh tries again.
            Err(e) if i == 0 || o.watch.is_none() => return Err(e),
            Err(e) if o.json => json!({ "error": e }).to_string(),
            Err(e) => format!("error: {e}"),
        };
        // JSON goes one object a line; text frames are cleared away, or spaced apart.
        let sep = match (clear, o.json || i == 0) {
            (true, _) => "\x1b[H\x1b[2J",
            (false, false) => "\n",
            (false, true) => "",
        };
        let mut out = std::io::stdout().lock();
        // A closed pipe (`| head`) is a reader that has seen enough, not an error.
        let shown = writeln!(out, "{sep}{}", frame.trim_end()).and_then(|_| out.flush());
        let (Ok(()), Some(every)) = (shown, o.watch) else {
            return Ok(());
        };
        drop(out);
        std::thread::sleep(every);
    }
    Ok(())
}

/// One GET to the admin listener, which answers and closes: the body of a 200, as JSON.
fn get(addr: SocketAddr, path: &str) -> Result<Value, String> {
    let fail = |e: &dyn std::fmt::Display| format!("admin listener {addr}{path}: {e}");
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| fail(&e))?;
    // One write: a server may read the request in a single gulp.
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = Vec::new();
    s.set_read_timeout(Some(TIMEOUT))
        .and_then(|_| s.set_write_timeout(Some(TIMEOUT)))
        .and_then(|_| s.write_all(req.as_bytes()))
        .and_then(|_| s.take(MAX_ANSWER).read_to_end(&mut buf))
        .map_err(|e| fail(&e))?;
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(fail(&"not an HTTP answer"));
    };
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(fail(&clean(status, 60)));
    }
    serde_json::from_str(body).map_err(|e| fail(&format!("bad JSON: {e}")))
}

/// How counters become figures: per second over the interval (seconds) when there is one,
/// else totals; and whether the gateway restarted in between.
struct Rates(Option<f64>, bool);

impl Rates {
    fn of(&self, cur: &Value, prev: &Value) -> Option<f64> {
        let (c, p) = (cur.as_f64()?, prev.as_f64().unwrap_or(0.0));
        // A counter that went down: after a restart (new pid) all it counted is new; with
        // the same pid a worker did not answer this time, so nothing is known.
        let d = match (c >= p, self.1) {
            (true, _) => c - p,
            (false, true) => c,
            (false, false) => 0.0,
        };
        Some(self.0.map_or(c, |secs| d / secs))
    }
    /// A map of counters (failures by reason, requests by class) as one figure.
    fn sum(&self, cur: &Value, prev: &Value) -> Option<f64> {
        let m = cur.as_object()?;
        let sum: f64 = m.iter().filter_map(|(k, v)| self.of(v, &prev[k])).sum();
        Some(sum + 0.0) // an empty f64 sum is -0.0
    }
    /// Failures by reason, most first.
    fn failures(&self, cur: &Value, prev: &Value) -> Vec<Value> {
        let map = cur.as_object().into_iter().flatten();
        let fig = |(k, n): (&String, &Value)| json!({"reason": k, "figure": self.of(n, &prev[k])});
        let mut v: Vec<Value> = map.map(fig).collect();
        v.sort_by(|a, b| order(a, b, "reason", "figure", false));
        v
    }
}

fn items(v: &Value) -> impl Iterator<Item = &Value> + Clone {
    v.as_array().into_iter().flatten()
}

/// By a figure (largest first, or smallest with `asc`; missing last), then by name, so rows
/// keep their places from one refresh to the next.
fn order(a: &Value, b: &Value, name: &str, figure: &str, asc: bool) -> std::cmp::Ordering {
    let sign = if asc { 1.0 } else { -1.0 };
    // `+ 0.0` makes -0.0 (an empty sum) equal to 0 under `total_cmp`.
    let f = |v: &Value| v[figure].as_f64().map_or(f64::INFINITY, |x| x * sign + 0.0);
    let n = |v: &Value| v[name].as_str().unwrap_or_default().to_owned();
    f(a).total_cmp(&f(b)).then_with(|| n(a).cmp(&n(b)))
}

/// Handshakes (full, resumed, all, resumed %) from a `handshakes` object.
fn handshakes(cur: &Value, prev: &Value, r: &Rates) -> Value {
    let full = r.of(&cur["full"], &prev["full"]);
    let resumed = r.of(&cur["resumed"], &prev["resumed"]);
    let all = full.map(|f| f + resumed.unwrap_or(0.0));
    let pct = all.filter(|&a| a > 0.0).map(|a| Some(resumed? * 100.0 / a));
    json!({"full": full, "resumed": resumed, "all": all, "resumed_pct": pct.flatten()})
}

fn partner(name: &str, p: &Value, pp: &Value, r: &Rates) -> Value {
    let hs = handshakes(&p["handshakes"], &pp["handshakes"], r);
    let fails = r.sum(&p["failures"], &pp["failures"]);
    let by_reason = r.failures(&p["failures"], &pp["failures"]);
    let top = by_reason
        .first()
        .filter(|t| t["figure"].as_f64() > Some(0.0));
    let reqs = r.sum(&p["requests"], &pp["requests"]);
    let activity: f64 = [hs["all"].as_f64(), fails, reqs].iter().flatten().sum();
    let req = |k: &str| r.of(&p["requests"][k], &pp["requests"][k]);
    let lat = &p["handshake_latency_us"]["full"];
    json!({
        "partner": name, "handshakes": hs, "failures": fails, "activity": activity,
        "top_failure": top.map(|t| &t["reason"]),
        "latency_us": {"p50": lat["p50"], "p99": lat["p99"]},
        "requests": {"2xx": req("2xx"), "4xx": req("4xx"), "5xx": req("5xx")},
    })
}

fn listener(name: &str, l: &Value, pl: &Value, r: &Rates, top: usize) -> Value {
    let all = l["partners"].as_object().into_iter().flatten();
    let one = |(n, p): (&String, &Value)| partner(n, p, &pl["partners"][n], r);
    let mut partners: Vec<Value> = all.map(one).collect();
    partners.sort_by(|a, b| order(a, b, "partner", "activity", false));
    let total = partners.len();
    partners.truncate(top);
    let lat = |k: &str| {
        let h = &l["handshake_latency_us"][k];
        json!({"kind": k, "count": h["count"], "p50": h["p50"], "p90": h["p90"],
               "p99": h["p99"], "p999": h["p999"], "max": h["max"]})
    };
    json!({
        "listener": name, "handshakes": handshakes(&l["handshakes"], &pl["handshakes"], r),
        "resumption_ratio": l["resumption_ratio"], "latency_us": [lat("full"), lat("resumed")],
        "failures": r.failures(&l["failures"], &pl["failures"]),
        "partners_total": total, "partners": partners,
    })
}

/// Partner certificates, the gateway's own, and CRLs going stale, in one list by time left.
fn expiring(c: &Value, days: u64) -> Vec<Value> {
    let now = c["now"].as_f64();
    let left = |v: &Value, at: &Value| v.as_f64().or_else(|| Some(at.as_f64()? - now?));
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let partners = items(&c["partners"]).map(|p| {
        json!({"kind": "partner", "where": p["listener"], "who": p["partner"],
               "detail": format!("serial {} {}", s(&p["serial"]), s(&p["issuer"])),
               "not_after": p["not_after"], "left_s": left(&p["expires_in_s"], &p["not_after"])})
    });
    let own = items(&c["gateway"]).map(|g| {
        json!({"kind": "gateway", "where": g["scope"], "who": g["subject"],
               "detail": format!("{} {}", s(&g["kind"]), s(&g["path"])),
               "not_after": g["not_after"], "left_s": left(&NULL, &g["not_after"])})
    });
    let crls = items(&c["crls"]).map(|r| {
        json!({"kind": "crl", "where": r["listener"], "who": r["issuer"], "detail": r["path"],
               "not_after": r["next_update"], "left_s": left(&r["stale_in_s"], &r["next_update"])})
    });
    // The gateway filters too; this keeps an older one that ignores `within` honest.
    let limit = days as f64 * 86400.0;
    let soon = |v: &Value| v["left_s"].as_f64().is_none_or(|t| t <= limit);
    let mut all: Vec<Value> = partners.chain(own).chain(crls).filter(soon).collect();
    all.sort_by(|a, b| order(a, b, "who", "left_s", true));
    all
}

/// What --json prints: one object with per-listener and per-partner figures (including rates
/// when prev is given) and the expiring certificates.
pub fn summary(stats: &Value, prev: Option<&Value>, secs: f64, certs: &Value, o: &Opts) -> Value {
    let restarted = prev.is_some_and(|p| p["pid"] != stats["pid"]);
    let r = Rates(Some(secs).filter(|&s| prev.is_some() && s > 0.0), restarted);
    let pl = prev.map_or(&NULL, |p| &p["listeners"]);
    let all = stats["listeners"].as_object().into_iter().flatten();
    let one = |(n, l): (&String, &Value)| listener(n, l, &pl[n], &r, o.top);
    let workers = items(&stats["workers"]);
    let answered = workers.clone().filter(|w| w["answered"] == true).count();
    json!({
        "pid": stats["pid"], "generation": stats["plan"]["generation"], "now": certs["now"],
        "interval_s": r.0, "restarted": restarted,
        "workers": {"answered": answered, "total": workers.count()},
        "listeners": all.map(one).collect::<Vec<_>>(),
        "expiring_within_days": o.within_days, "expiring": expiring(certs, o.within_days),
    })
}

/// Text from the network made safe for a terminal: no control or bidi characters (a partner's
/// identity is theirs to choose), and at most `max` characters.
fn clean(s: &str, max: usize) -> String {
    let bidi = [
        '\u{200b}'..='\u{200f}',
        '\u{202a}'..='\u{202e}',
        '\u{2066}'..='\u{2069}',
    ];
    let bad = |c: char| c.is_control() || bidi.iter().any(|r| r.contains(&c));
    let out = s.chars().map(|c| if bad(c) { '?' } else { c });
    match s.chars().count() > max {
        true => out.take(max.saturating_sub(1)).chain(['…']).collect(),
        false => out.collect(),
    }
}

fn cell(v: &Value, how: Show, rate: bool) -> String {
    let Some(x) = v.as_f64() else {
        return v.as_str().map_or("-".into(), |s| clean(s, 60));
    };
    let x = x + 0.0; // -0.0 (an empty sum) shows as 0
    let (sign, a) = (if x < 0.0 { "-" } else { "" }, x.abs());
    let unit = ["k", "M", "G", "T", "P", "E"].into_iter();
    let (n, unit) = unit.fold(
        (a, ""),
        |(n, u), next| if n < 1e4 { (n, u) } else { (n / 1e3, next) },
    );
    match how {
        Fig if unit.is_empty() && rate && a < 100.0 => format!("{x:.1}"),
        Fig | Whole => format!("{sign}{n:.0}{unit}"),
        Ms => format!("{:.2}", x / 1000.0),
        Left if a >= 86400.0 => format!("{sign}{:.1}d", a / 86400.0),
        Left if a >= 3600.0 => format!("{sign}{:.1}h", a / 3600.0),
        Left => format!("{sign}{:.0}m", a / 60.0),
    }
}

/// Seconds since the epoch as a UTC date and time (the civil-from-days algorithm).
fn utc(t: i64) -> String {
    let (d, s) = (t.div_euclid(86400) + 719_468, t.rem_euclid(86400));
    let (era, doe) = (d.div_euclid(146_097), d.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, min) = (s / 3600, s % 3600 / 60);
    format!("{y:04}-{m:02}-{day:02} {h:02}:{min:02}:{:02} UTC", s % 60)
}

/// A table: a heading row, then a row per item, each cell made safe and cut to its column.
fn table<'a>(w: &mut String, cols: &[Col], rows: impl Iterator<Item = &'a Value>, rate: bool) {
    let mut line = |cells: Vec<String>| {
        let mut l = String::from(" ");
        for (&(_, c, _, _), s) in cols.iter().zip(cells) {
            let n = c.unsigned_abs() as usize;
            let s = clean(&s, n);
            let _ = if c < 0 {
                write!(l, " {s:<n$}")
            } else {
                write!(l, " {s:>n$}")
            };
        }
        let _ = writeln!(w, "{}", l.trim_end());
    };
    line(cols.iter().map(|c| c.0.to_owned()).collect());
    for r in rows {
        let at = |c: &Col| cell(r.pointer(c.3).unwrap_or(&NULL), c.2, rate);
        line(cols.iter().map(at).collect());
    }
}

/// Pure rendering, unit-testable: `prev` is the previous /stats (for rates; None on the first
/// draw), `secs` the time between them.
pub fn render(stats: &Value, prev: Option<&Value>, secs: f64, certs: &Value, o: &Opts) -> String {
    // Drawn from the summary, so the view and --json cannot disagree.
    let s = summary(stats, prev, secs, certs, o);
    let rate = s["interval_s"].is_number();
    let f = |v: &Value| cell(v, Fig, rate);
    // Identities, not figures: shown whole.
    let whole = |v: &Value| v.as_u64().map_or("-".into(), |n| n.to_string());
    let when = s["now"].as_i64().map_or("-".into(), utc);
    let (pid, generation) = (whole(&s["pid"]), whole(&s["generation"]));
    let mut w = format!("mtlsgate pid {pid}  generation {generation}  {when}  ");
    w += match (rate, s["restarted"] == true) {
        (true, false) => "figures per second\n",
        (true, true) => "figures per second (restarted: counting from its start)\n",
        (false, _) => "totals (rates from the next refresh)\n",
    };
    if s["workers"]["answered"] != s["workers"]["total"] {
        w += "not every worker answered: figures are partial\n";
    }
    for l in items(&s["listeners"]) {
        let h = &l["handshakes"];
        let name = clean(l["listener"].as_str().unwrap_or("-"), 40);
        let (full, resumed, pct) = (
            f(&h["full"]),
            f(&h["resumed"]),
            cell(&h["resumed_pct"], Whole, rate),
        );
        let _ = writeln!(
            w,
            "\nlistener {name}  handshakes full {full}  resumed {resumed} ({pct}%)"
        );
        table(&mut w, LATENCY, items(&l["latency_us"]), rate);
        let mut line = String::from("  failures:");
        let n = items(&l["failures"]).count();
        for (i, e) in items(&l["failures"]).enumerate() {
            let comma = if i + 1 < n { "," } else { "" };
            let item = format!(" {} {}{comma}", f(&e["reason"]), f(&e["figure"]));
            if line.len() + item.len() > WIDTH {
                w += &std::mem::replace(&mut line, "   ".into());
                w += "\n";
            }
            line += &item;
        }
        let _ = writeln!(w, "{line}{}", if n == 0 { " none" } else { "" });
        let shown = items(&l["partners"]).count();
        let total = whole(&l["partners_total"]);
        let _ = writeln!(w, "  top partners ({shown} of {total})");
        table(&mut w, PARTNERS, items(&l["partners"]), rate);
    }
    let _ = writeln!(w, "\nexpiring within {} days", o.within_days);
    table(&mut w, EXPIRING, items(&s["expiring"]), rate);
    w
}

#[cfg(test)]
mod tests;
