//! `mtlsgate stats`: a terminal (or JSON) view of a running gateway's handshake figures, read
//! from its admin listener's `/stats` and `/certs`, redrawn with `--watch`.

use serde_json::{json, Value};
use std::cmp::Ordering;
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
/// `/stats` is well under this (the gateway caps partners); more is not our gateway.
const MAX_ANSWER: u64 = 64 << 20;
const WIDTH: usize = 100;
/// Column widths, negative for left-aligned text; each table adds up to at most `WIDTH`.
const LATENCY: &[i32] = &[-10, 8, 9, 9, 9, 9, 9];
const PARTNERS: &[i32] = &[-40, 6, 4, -13, 6, 6, 5, 5, 5];
const CERTS: &[i32] = &[7, -8, -16, -40, -22];
const CRLS: &[i32] = &[7, -16, -40, -31];
static NULL: Value = Value::Null;

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
        let sep = match (clear, o.json || i == 0) {
            (true, _) => "\x1b[H\x1b[2J",
            (false, false) => "\n",
            (false, true) => "",
        };
        let mut out = std::io::stdout().lock();
        // A closed pipe (`| head`) is a reader that has seen enough, not an error.
        if writeln!(out, "{sep}{}", frame.trim_end())
            .and_then(|_| out.flush())
            .is_err()
        {
            return Ok(());
        }
        drop(out);
        let Some(every) = o.watch else { return Ok(()) };
        std::thread::sleep(every);
    }
    Ok(())
}

/// One GET to the admin listener, which answers and closes: the body of a 200, as JSON.
fn get(addr: SocketAddr, path: &str) -> Result<Value, String> {
    let fail = |e: String| format!("admin listener {addr}{path}: {e}");
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| fail(e.to_string()))?;
    let mut buf = Vec::new();
    s.set_read_timeout(Some(TIMEOUT))
        .and_then(|_| s.set_write_timeout(Some(TIMEOUT)))
        .and_then(|_| {
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
        })
        .and_then(|_| s.take(MAX_ANSWER).read_to_end(&mut buf))
        .map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(fail("not an HTTP answer".into()));
    };
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(fail(clean(status, 60)));
    }
    serde_json::from_str(body).map_err(|e| fail(format!("bad JSON: {e}")))
}

/// How counters become figures: per second over the interval when there is one, else totals.
struct Rates {
    on: bool,
    secs: f64,
    restarted: bool,
}

impl Rates {
    fn of(&self, cur: &Value, prev: &Value) -> Option<f64> {
        let c = cur.as_f64()?;
        let p = prev.as_f64().unwrap_or(0.0);
        // A counter that went down: after a restart (new pid) all it counted is new; with
        // the same pid a worker did not answer this time, so nothing is known.
        let d = match (c >= p, self.restarted) {
            (true, _) => c - p,
            (false, true) => c,
            (false, false) => 0.0,
        };
        Some(if self.on { d / self.secs } else { c })
    }
    /// A map of counters (failures by reason, requests by class) as one figure.
    fn sum(&self, cur: &Value, prev: &Value) -> Option<f64> {
        let m = cur.as_object()?;
        Some(m.iter().filter_map(|(k, v)| self.of(v, &prev[k])).sum())
    }
    /// Failures by reason, most first.
    fn failures(&self, cur: &Value, prev: &Value) -> Vec<Value> {
        let mut v: Vec<Value> = entries(cur)
            .map(|(k, n)| json!({"reason": k, "figure": self.of(n, &prev[k])}))
            .collect();
        v.sort_by(|a, b| order(a, b, "reason", "figure", false));
        v
    }
}

fn entries(v: &Value) -> impl Iterator<Item = (&String, &Value)> {
    v.as_object().into_iter().flatten()
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// By a figure (largest first, or smallest with `asc`; missing last), then by name, so rows
/// keep their places from one refresh to the next.
fn order(a: &Value, b: &Value, name: &str, figure: &str, asc: bool) -> Ordering {
    let f = |v: &Value| {
        v[figure]
            .as_f64()
            .map_or(f64::INFINITY, |x| if asc { x } else { -x })
    };
    let n = |v: &Value| v[name].as_str().unwrap_or_default().to_owned();
    f(a).total_cmp(&f(b)).then_with(|| n(a).cmp(&n(b)))
}

/// Handshakes (full, resumed, all, resumed %) from a `handshakes` object.
fn handshakes(cur: &Value, prev: &Value, r: &Rates) -> Value {
    let (full, resumed) = (
        r.of(&cur["full"], &prev["full"]),
        r.of(&cur["resumed"], &prev["resumed"]),
    );
    let all = full.map(|f| f + resumed.unwrap_or(0.0));
    let pct = all
        .filter(|&a| a > 0.0)
        .and_then(|a| Some(resumed? / a * 100.0));
    json!({"full": full, "resumed": resumed, "all": all, "resumed_pct": pct})
}

fn partner(name: &str, p: &Value, pp: &Value, r: &Rates) -> Value {
    let hs = handshakes(&p["handshakes"], &pp["handshakes"], r);
    let failures = r.sum(&p["failures"], &pp["failures"]);
    let top = r
        .failures(&p["failures"], &pp["failures"])
        .into_iter()
        .next();
    let top = top
        .filter(|t| t["figure"].as_f64() > Some(0.0))
        .map(|t| t["reason"].clone());
    let requests = r.sum(&p["requests"], &pp["requests"]);
    let activity: f64 = [hs["all"].as_f64(), failures, requests]
        .iter()
        .flatten()
        .sum();
    let req = ["2xx", "4xx", "5xx"].map(|k| (k, r.of(&p["requests"][k], &pp["requests"][k])));
    let lat = &p["handshake_latency_us"]["full"];
    json!({
        "partner": name, "handshakes": hs, "failures": failures, "top_failure": top,
        "latency_us": {"p50": lat["p50"], "p99": lat["p99"]}, "activity": activity,
        "requests": req.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    })
}

fn listener(name: &str, l: &Value, pl: &Value, r: &Rates, top: usize) -> Value {
    let mut partners: Vec<Value> = entries(&l["partners"])
        .map(|(n, p)| partner(n, p, &pl["partners"][n], r))
        .collect();
    partners.sort_by(|a, b| order(a, b, "partner", "activity", false));
    let total = partners.len();
    partners.truncate(top);
    let lat = |k: &str| {
        let h = &l["handshake_latency_us"][k];
        json!({"count": h["count"], "p50": h["p50"], "p90": h["p90"], "p99": h["p99"],
               "p999": h["p999"], "max": h["max"]})
    };
    json!({
        "listener": name, "handshakes": handshakes(&l["handshakes"], &pl["handshakes"], r),
        "resumption_ratio": l["resumption_ratio"],
        "latency_us": {"full": lat("full"), "resumed": lat("resumed")},
        "failures": r.failures(&l["failures"], &pl["failures"]),
        "partners_total": total, "partners": partners,
    })
}

fn expiring(c: &Value, days: u64) -> Value {
    let now = c["now"].as_f64();
    let left = |v: &Value, at: &Value| v.as_f64().or_else(|| Some(at.as_f64()? - now?));
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let partners = items(&c["partners"]).map(|p| {
        json!({"kind": "partner", "where": p["listener"], "who": p["partner"],
               "detail": format!("serial {} {}", s(&p["serial"]), s(&p["issuer"])),
               "not_after": p["not_after"], "expires_in_s": left(&p["expires_in_s"], &p["not_after"])})
    });
    let own = items(&c["gateway"]).map(|g| {
        json!({"kind": "gateway", "where": g["scope"], "who": g["subject"],
               "detail": format!("{} {}", s(&g["kind"]), s(&g["path"])),
               "not_after": g["not_after"], "expires_in_s": left(&NULL, &g["not_after"])})
    });
    // The gateway filters too; this keeps an older one that ignores `within` honest.
    let soon = |v: &Value| {
        v["expires_in_s"]
            .as_f64()
            .is_none_or(|t| t <= days as f64 * 86400.0)
    };
    let mut certs: Vec<Value> = partners.chain(own).filter(soon).collect();
    certs.sort_by(|a, b| order(a, b, "who", "expires_in_s", true));
    let mut crls: Vec<Value> = items(&c["crls"])
        .map(|r| {
            json!({"where": r["listener"], "who": r["issuer"], "path": r["path"],
                   "stale_in_s": left(&r["stale_in_s"], &r["next_update"])})
        })
        .collect();
    crls.sort_by(|a, b| order(a, b, "who", "stale_in_s", true));
    json!({"within_days": days, "certs": certs, "crls": crls})
}

/// What --json prints: one object with per-listener and per-partner figures (including rates
/// when prev is given) and the expiring certificates.
pub fn summary(stats: &Value, prev: Option<&Value>, secs: f64, certs: &Value, o: &Opts) -> Value {
    let restarted = prev.is_some_and(|p| p["pid"] != stats["pid"]);
    let on = prev.is_some() && secs > 0.0;
    let r = Rates {
        on,
        secs,
        restarted,
    };
    let pl = prev.map_or(&NULL, |p| &p["listeners"]);
    let listeners: Vec<Value> = entries(&stats["listeners"])
        .map(|(n, l)| listener(n, l, &pl[n], &r, o.top))
        .collect();
    let answered = items(&stats["workers"])
        .filter(|w| w["answered"] == true)
        .count();
    json!({
        "pid": stats["pid"], "generation": stats["plan"]["generation"], "now": certs["now"],
        "interval_s": on.then_some(secs), "restarted": restarted,
        "workers": {"answered": answered, "total": items(&stats["workers"]).count()},
        "listeners": listeners, "expiring": expiring(certs, o.within_days),
    })
}

/// Text from the network made safe for a terminal: no control or bidi characters (a partner's
/// identity is theirs to choose), and at most `max` characters.
fn clean(s: &str, max: usize) -> String {
    let bidi = |c| matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    let out = s
        .chars()
        .map(|c| if c.is_control() || bidi(c) { '?' } else { c });
    match s.chars().count() > max {
        true => out.take(max.saturating_sub(1)).chain(['…']).collect(),
        false => out.collect(),
    }
}

/// A figure: a rate with one decimal, a total as a whole number, or "-".
fn fig(v: &Value, rate: bool) -> String {
    match v.as_f64() {
        None => "-".into(),
        Some(x) if rate && x < 1000.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.0}"),
    }
}

fn ms(v: &Value) -> String {
    v.as_f64()
        .map_or("-".into(), |us| format!("{:.2}", us / 1000.0))
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_owned()
}

/// Time left as days, hours or minutes; negative once passed.
fn left(v: &Value) -> String {
    let Some(s) = v.as_f64() else {
        return "-".into();
    };
    let sign = if s < 0.0 { "-" } else { "" };
    match s.abs() {
        a if a >= 86400.0 => format!("{sign}{:.1}d", a / 86400.0),
        a if a >= 3600.0 => format!("{sign}{:.1}h", a / 3600.0),
        a => format!("{sign}{:.0}m", a / 60.0),
    }
}

/// Seconds since the epoch as a UTC date and time (the civil-from-days algorithm).
fn utc(t: i64) -> String {
    let (d, s) = (t.div_euclid(86400) + 719_468, t.rem_euclid(86400));
    let (era, doe) = (d.div_euclid(146_097), d.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let (day, m) = (
        doy - (153 * mp + 2) / 5 + 1,
        if mp < 10 { mp + 3 } else { mp - 9 },
    );
    let (y, hms) = (
        yoe + era * 400 + i64::from(m <= 2),
        (s / 3600, s % 3600 / 60, s % 60),
    );
    format!(
        "{y:04}-{m:02}-{day:02} {:02}:{:02}:{:02} UTC",
        hms.0, hms.1, hms.2
    )
}

/// One table row, each cell made safe and cut to its column.
fn row(w: &mut String, cols: &[i32], cells: &[String]) {
    let mut line = String::from(" ");
    for (&c, s) in cols.iter().zip(cells) {
        let (n, s) = (
            c.unsigned_abs() as usize,
            clean(s, c.unsigned_abs() as usize),
        );
        let _ = if c < 0 {
            write!(line, " {s:<n$}")
        } else {
            write!(line, " {s:>n$}")
        };
    }
    let _ = writeln!(w, "{}", line.trim_end());
}

fn heads(s: &str) -> Vec<String> {
    s.split(',').map(String::from).collect()
}

/// Pure rendering, unit-testable: `prev` is the previous /stats (for rates; None on the first
/// draw), `secs` the time between them.
pub fn render(stats: &Value, prev: Option<&Value>, secs: f64, certs: &Value, o: &Opts) -> String {
    // Drawn from the summary, so the view and --json cannot disagree.
    let s = summary(stats, prev, secs, certs, o);
    let rate = s["interval_s"].is_number();
    let per = if rate { "/s" } else { "" };
    let (pid, generation) = (fig(&s["pid"], false), fig(&s["generation"], false));
    let when = s["now"].as_i64().map_or("-".into(), utc);
    let mut w = format!("mtlsgate pid {pid}  generation {generation}  {when}  ");
    w += match (rate, s["restarted"] == true) {
        (true, false) => "rates per second\n",
        (true, true) => "rates per second (restarted: counting from its start)\n",
        (false, _) => "totals (rates from the next refresh)\n",
    };
    if s["workers"]["answered"] != s["workers"]["total"] {
        w += "not every worker answered: figures are partial\n";
    }
    for l in items(&s["listeners"]) {
        let (h, lat) = (&l["handshakes"], &l["latency_us"]);
        let (full, resumed) = (fig(&h["full"], rate), fig(&h["resumed"], rate));
        let name = clean(&text(&l["listener"]), 40);
        let pct = fig(&h["resumed_pct"], true);
        let _ = writeln!(
            w,
            "\nlistener {name}  handshakes{per}: full {full}  resumed {resumed} ({pct}%)"
        );
        row(
            &mut w,
            LATENCY,
            &heads("latency ms,count,p50,p90,p99,p99.9,max"),
        );
        for k in ["full", "resumed"] {
            let mut cells = vec![k.to_owned(), fig(&lat[k]["count"], false)];
            cells.extend(["p50", "p90", "p99", "p999", "max"].map(|q| ms(&lat[k][q])));
            row(&mut w, LATENCY, &cells);
        }
        let (mut line, n) = (format!("  failures{per}:"), items(&l["failures"]).count());
        for (i, f) in items(&l["failures"]).enumerate() {
            let comma = if i + 1 < n { "," } else { "" };
            let item = format!(
                " {} {}{comma}",
                clean(&text(&f["reason"]), 30),
                fig(&f["figure"], rate)
            );
            if line.len() + item.len() > WIDTH {
                let _ = writeln!(w, "{line}");
                line = "   ".into();
            }
            line += &item;
        }
        let _ = writeln!(w, "{line}{}", if n == 0 { " none" } else { "" });
        let shown = items(&l["partners"]).count();
        let _ = writeln!(
            w,
            "  top partners ({shown} of {})",
            fig(&l["partners_total"], false)
        );
        let hdr = "partner,hs/s,res%,failures,p50ms,p99ms,2xx/s,4xx/s,5xx/s";
        row(
            &mut w,
            PARTNERS,
            &heads(&if rate {
                hdr.into()
            } else {
                hdr.replace("/s", "")
            }),
        );
        for p in items(&l["partners"]) {
            let why = p["top_failure"]
                .as_str()
                .map_or(String::new(), |r| format!(" {r}"));
            let (hs, q) = (&p["handshakes"], &p["latency_us"]);
            let mut cells = vec![
                text(&p["partner"]),
                fig(&hs["all"], rate),
                fig(&hs["resumed_pct"], false),
            ];
            cells.extend([
                format!("{}{why}", fig(&p["failures"], rate)),
                ms(&q["p50"]),
                ms(&q["p99"]),
            ]);
            cells.extend(["2xx", "4xx", "5xx"].map(|k| fig(&p["requests"][k], rate)));
            row(&mut w, PARTNERS, &cells);
        }
    }
    let e = &s["expiring"];
    let _ = writeln!(w, "\nexpiring within {} days", o.within_days);
    row(&mut w, CERTS, &heads("left,kind,where,who,detail"));
    for c in items(&e["certs"]) {
        let cells = ["expires_in_s", "kind", "where", "who", "detail"];
        let cells = cells.map(|k| {
            if k == "expires_in_s" {
                left(&c[k])
            } else {
                text(&c[k])
            }
        });
        row(&mut w, CERTS, &cells);
    }
    let _ = writeln!(w, "  CRLs going stale");
    for c in items(&e["crls"]) {
        let cells = ["stale_in_s", "where", "who", "path"];
        row(
            &mut w,
            CRLS,
            &cells.map(|k| {
                if k == "stale_in_s" {
                    left(&c[k])
                } else {
                    text(&c[k])
                }
            }),
        );
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(top: usize) -> Opts {
        Opts {
            top,
            watch: None,
            json: false,
            within_days: 30,
        }
    }

    fn peer(full: u64, failures: u64, ok: u64) -> Value {
        json!({"handshakes": {"full": full, "resumed": 1}, "failures": {"revoked": failures},
               "requests": {"2xx": ok, "4xx": 1, "5xx": 0},
               "handshake_latency_us": {"full": {"p50": 900, "p99": 4000}}})
    }

    fn snap(pid: u64, full: u64, partners: Value) -> Value {
        let lat =
            json!({"count": full, "p50": 812, "p90": 900, "p99": 1500, "p999": 1700, "max": 1800});
        json!({"pid": pid, "plan": {"generation": 2}, "workers": [{"answered": true}],
               "listeners": {"partners": {"handshakes": {"full": full, "resumed": full / 2},
                   "handshake_latency_us": {"full": lat, "resumed": {"count": 0}},
                   "failures": {"revoked": 2, "unknown_ca": 1}, "partners": partners}}})
    }

    fn certs() -> Value {
        let now = 1_764_600_000;
        json!({"now": now, "within_s": 2_592_000,
               "partners": [{"listener": "partners", "partner": "spiffe://x/late", "serial": "01",
                             "issuer": "CN=CA", "not_after": now + 100_000, "expires_in_s": 100_000},
                            {"listener": "partners", "partner": "spiffe://x/gone", "expires_in_s": -86_400}],
               "gateway": [{"scope": "listener partners", "kind": "server", "path": "/etc/gw.crt",
                            "subject": "CN=gw", "not_after": now + 3600}],
               "crls": [{"listener": "partners", "path": "/x.crl", "issuer": "CN=CA", "stale_in_s": 7200}]})
    }

    fn first(s: &Value) -> &Value {
        &s["listeners"][0]
    }

    #[test]
    fn rates_come_from_the_difference_between_two_snapshots() {
        let (a, b) = (snap(1, 10, json!({})), snap(1, 30, json!({})));
        let s = summary(&b, Some(&a), 2.0, &certs(), &opts(5));
        assert_eq!(first(&s)["handshakes"]["full"], 10.0);
        assert_eq!(first(&s)["handshakes"]["resumed"], 5.0);
        assert!(render(&b, Some(&a), 2.0, &certs(), &opts(5)).contains("full 10.0  resumed 5.0"));
        let totals = summary(&b, None, 0.0, &certs(), &opts(5));
        assert_eq!(first(&totals)["handshakes"]["full"], 30.0);
    }

    #[test]
    fn a_counter_that_went_down_shows_no_negative_rate() {
        let (a, b) = (snap(1, 30, json!({})), snap(1, 10, json!({})));
        let same = summary(&b, Some(&a), 2.0, &certs(), &opts(5));
        assert_eq!(first(&same)["handshakes"]["full"], 0.0);
        let restarted = summary(&snap(2, 10, json!({})), Some(&a), 2.0, &certs(), &opts(5));
        assert_eq!(first(&restarted)["handshakes"]["full"], 5.0);
        assert_eq!(restarted["restarted"], true);
    }

    #[test]
    fn top_partners_are_ordered_by_activity_then_name() {
        let p =
            json!({"b": peer(1, 0, 0), "a": peer(1, 0, 0), "c": peer(5, 0, 0), "d": peer(0, 0, 0)});
        let s = summary(&snap(1, 10, p), None, 0.0, &certs(), &opts(2));
        let names: Vec<&Value> = items(&first(&s)["partners"])
            .map(|p| &p["partner"])
            .collect();
        assert_eq!(names, [&json!("c"), &json!("a")]);
        assert_eq!(first(&s)["partners_total"], 4);
    }

    #[test]
    fn missing_fields_render_as_dashes_without_panicking() {
        let junk = json!({"listeners": {"x": {"handshakes": "many", "partners": {"p": 7}, "failures": [1]}},
                          "workers": "no", "pid": null});
        for v in [json!(null), json!({}), json!([1]), junk.clone()] {
            let _ = render(&v, Some(&v), 1.0, &v, &opts(5));
            let _ = render(&junk, Some(&v), 0.0, &v, &opts(5));
        }
        let out = render(&junk, None, 0.0, &json!({}), &opts(5));
        assert!(out.contains("mtlsgate pid -  generation -  -"), "{out}");
        assert!(
            out.contains("  p                                               -    -"),
            "{out}"
        );
        assert!(out.contains("  full              -         -"), "{out}");
    }

    #[test]
    fn control_characters_in_a_partner_identity_are_not_printed() {
        let evil = format!("spiffe://x/\x1b[2J\u{202e}{}", "a".repeat(60));
        let out = render(
            &snap(1, 1, json!({ evil: peer(1, 0, 0) })),
            None,
            0.0,
            &certs(),
            &opts(5),
        );
        assert!(!out.contains('\x1b') && !out.contains('\u{202e}'));
        assert!(
            out.contains(&format!("spiffe://x/?[2J?{}… ", "a".repeat(23))),
            "{out}"
        );
    }

    #[test]
    fn every_line_fits_in_100_columns() {
        let p = json!({"a": peer(1, 2, 3), &"b".repeat(99): peer(u64::MAX, u64::MAX, u64::MAX)});
        let out = render(&snap(1, 9, p), None, 0.0, &certs(), &opts(5));
        assert!(out.lines().all(|l| l.chars().count() <= 100 + 20), "{out}");
        assert!(out
            .lines()
            .take_while(|l| !l.contains('b'))
            .all(|l| l.chars().count() <= 100));
    }

    #[test]
    fn json_summary_carries_the_same_figures_as_the_view() {
        let (a, b) = (
            snap(1, 10, json!({"a": peer(1, 0, 0)})),
            snap(1, 30, json!({"a": peer(9, 4, 20)})),
        );
        let (s, out) = (
            summary(&b, Some(&a), 4.0, &certs(), &opts(5)),
            render(&b, Some(&a), 4.0, &certs(), &opts(5)),
        );
        let p = &first(&s)["partners"][0];
        assert_eq!(
            (
                &p["handshakes"]["all"],
                &p["failures"],
                &p["requests"]["2xx"]
            ),
            (&json!(2.0), &json!(1.0), &json!(5.0))
        );
        let line = out
            .lines()
            .find(|l| l.starts_with("  a "))
            .unwrap_or_default();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells,
            ["a", "2.0", "0", "1.0", "revoked", "0.90", "4.00", "5.0", "0.0", "0.0"]
        );
        assert!(
            out.contains("failures/s: revoked 0.0, unknown_ca 0.0"),
            "{out}"
        );
    }

    #[test]
    fn certificates_are_listed_soonest_first() {
        let s = summary(&snap(1, 1, json!({})), None, 0.0, &certs(), &opts(5));
        let who: Vec<&Value> = items(&s["expiring"]["certs"]).map(|c| &c["who"]).collect();
        assert_eq!(
            who,
            [
                &json!("spiffe://x/gone"),
                &json!("CN=gw"),
                &json!("spiffe://x/late")
            ]
        );
        let out = render(&snap(1, 1, json!({})), None, 0.0, &certs(), &opts(5));
        let at = |s: &str| out.find(s).unwrap_or(usize::MAX);
        assert!(
            at("  -1.0d partner") < at("   1.0h gateway")
                && at("1.0h gateway") < at("   1.2d partner"),
            "{out}"
        );
        assert!(out.contains("   2.0h partners         CN=CA"), "{out}");
    }

    #[test]
    fn the_header_shows_the_gateway_clock_in_utc() {
        assert_eq!(utc(1_764_600_000), "2025-12-01 14:40:00 UTC");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert!(
            render(&snap(7, 1, json!({})), None, 0.0, &certs(), &opts(5))
                .starts_with("mtlsgate pid 7  generation 2  2025-12-01 14:40:00 UTC  totals")
        );
    }

    #[test]
    fn the_admin_listener_is_read_over_plain_http_and_only_a_200_counts() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap(); // ok: test setup
        let addr = l.local_addr().unwrap(); // ok: test setup
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten().take(4) {
                let mut req = [0u8; 512];
                let n = s.read(&mut req).unwrap_or(0);
                let req = String::from_utf8_lossy(&req[..n]).into_owned();
                let (code, body) = match req.split(' ').nth(1) {
                    Some("/stats") => (200, snap(1, 3, json!({})).to_string()),
                    Some("/certs?within=30d") => (200, certs().to_string()),
                    _ => (404, "no\n".into()),
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        assert_eq!(get(addr, "/stats").map(|v| v["pid"].clone()), Ok(json!(1)));
        assert!(get(addr, "/nope").is_err_and(|e| e.contains("404")));
        assert_eq!(run(addr, &opts(5)), Ok(()));
    }
}
