//! Tests of the stats view: rates, ordering, safety of partner text, the JSON summary.

use super::*;

fn o(top: usize) -> Opts {
    let (watch, json, within_days) = (None, false, 30);
    Opts {
        top,
        watch,
        json,
        within_days,
    }
}

fn peer(full: u64, failures: u64, ok: u64) -> Value {
    json!({"handshakes": {"full": full, "resumed": 1}, "failures": {"revoked": failures},
           "requests": {"2xx": ok, "4xx": 1, "5xx": 0},
           "handshake_latency_us": {"full": {"p50": 900, "p99": 4000}}})
}

fn snap(pid: u64, full: u64, partners: Value) -> Value {
    json!({"pid": pid, "plan": {"generation": 2}, "workers": [{"answered": true}],
           "listeners": {"partners": {"handshakes": {"full": full, "resumed": full / 2},
               "handshake_latency_us": {"resumed": {"count": 0}, "full": {"count": full,
                   "p50": 812, "p90": 900, "p99": 1500, "p999": 1700, "max": 1800}},
               "failures": {"revoked": 2, "unknown_ca": 1}, "partners": partners}}})
}

fn certs() -> Value {
    json!({"now": 1_764_600_000, "within_s": 2_592_000,
           "partners": [{"listener": "partners", "partner": "spiffe://x/late",
                         "serial": "01", "issuer": "CN=CA", "expires_in_s": 100_000},
                        {"listener": "partners", "partner": "spiffe://x/gone",
                         "expires_in_s": -86_400}],
           "gateway": [{"scope": "listener partners", "kind": "server",
                        "path": "/etc/gw.crt", "subject": "CN=gw", "not_after": 1_764_603_600}],
           "crls": [{"listener": "partners", "path": "/x.crl", "issuer": "CN=CA",
                     "stale_in_s": 7200}]})
}

/// The summary's first listener, and the view, of `b` after `a` (`secs` apart).
fn both(b: &Value, a: Option<&Value>, secs: f64, top: usize) -> (Value, String) {
    let s = summary(b, a, secs, &certs(), &o(top));
    let out = render(b, a, secs, &certs(), &o(top));
    (s["listeners"][0].clone(), out)
}

fn has(out: &str, s: &str) {
    assert!(out.contains(s), "{s:?} not in\n{out}");
}

/// The cells of the view's first row whose first cell is `first`.
fn cells<'a>(out: &'a str, first: &str) -> Vec<&'a str> {
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first));
    line.unwrap_or_default().split_whitespace().collect()
}

#[test]
fn rates_come_from_the_difference_between_two_snapshots() {
    let (a, b) = (snap(1, 10, json!({})), snap(1, 30, json!({})));
    let (l, out) = both(&b, Some(&a), 2.0, 5);
    let want = json!({"full": 10.0, "resumed": 5.0, "all": 15.0, "resumed_pct": 100.0 / 3.0});
    assert_eq!(l["handshakes"], want);
    has(&out, "handshakes full 10.0  resumed 5.0 (33%)");
    assert_eq!(both(&b, None, 0.0, 5).0["handshakes"]["full"], 30.0);
}

#[test]
fn a_counter_that_went_down_shows_no_negative_rate() {
    let (a, b) = (snap(1, 30, json!({})), snap(1, 10, json!({})));
    assert_eq!(both(&b, Some(&a), 2.0, 5).0["handshakes"]["full"], 0.0);
    let (l, out) = both(&snap(2, 10, json!({})), Some(&a), 2.0, 5);
    assert_eq!(l["handshakes"]["full"], 5.0);
    has(&out, "(restarted: counting from its start)");
}

#[test]
fn top_partners_are_ordered_by_activity_then_name() {
    let p = json!({"b": peer(1, 0, 0), "a": peer(1, 0, 0), "c": peer(5, 0, 0), "d": peer(0, 0, 0)});
    let (l, out) = both(&snap(1, 10, p), None, 0.0, 2);
    let names: Vec<&Value> = items(&l["partners"]).map(|p| &p["partner"]).collect();
    assert_eq!(
        (names, &l["partners_total"]),
        (vec![&json!("c"), &json!("a")], &json!(4))
    );
    assert!(out.find("\n  c ") < out.find("\n  a ") && cells(&out, "b").is_empty());
}

#[test]
fn missing_fields_render_as_dashes_without_panicking() {
    let junk = json!({"listeners": {"x": {"handshakes": "many", "partners": {"p": 7},
                                           "failures": [1]}},
                      "workers": "no", "pid": null, "now": "soon", "partners": {},
                      "crls": [3]});
    for v in [json!(null), json!({}), json!([1]), json!("x"), junk.clone()] {
        let _ = render(&v, Some(&v), 1.0, &v, &o(5)) + &render(&junk, Some(&v), 0.0, &v, &o(5));
        let _ = render(&v, Some(&junk), 1.0, &junk, &o(5));
    }
    let out = render(&junk, None, 0.0, &junk, &o(5));
    has(&out, "mtlsgate pid -  generation -  -  totals");
    assert_eq!(cells(&out, "full"), ["full", "-", "-", "-", "-", "-", "-"]);
    assert_eq!(
        cells(&out, "p"),
        ["p", "-", "-", "-", "-", "-", "-", "-", "-", "-"]
    );
    assert_eq!(cells(&out, "-"), ["-", "crl", "-", "-", "-"]);
}

#[test]
fn control_characters_in_a_partner_identity_are_not_printed() {
    let evil = format!("spiffe://x/\x1b[2J\u{202e}{}", "a".repeat(60));
    let (_, out) = both(&snap(1, 1, json!({ evil: peer(1, 0, 0) })), None, 0.0, 5);
    assert!(!out.contains('\x1b') && !out.contains('\u{202e}'));
    has(&out, &format!("  spiffe://x/?[2J?{}… ", "a".repeat(23)));
}

#[test]
fn every_line_fits_in_100_columns() {
    let p = json!({"a": peer(1, 2, 3), "b".repeat(99): peer(u64::MAX, u64::MAX, u64::MAX)});
    let (_, out) = both(&snap(1, 9, p), None, 0.0, 5);
    has(
        &out,
        "   18E    0  18E revoked        0.90   4.00  18E    1    0\n",
    );
    let wide: Vec<&str> = out.lines().filter(|l| l.chars().count() > WIDTH).collect();
    assert!(wide.is_empty(), "{wide:?}");
}

#[test]
fn json_summary_carries_the_same_figures_as_the_view() {
    let a = snap(1, 10, json!({"a": peer(1, 0, 0)}));
    let (l, out) = both(&snap(1, 30, json!({"a": peer(9, 4, 20)})), Some(&a), 4.0, 5);
    let p = &l["partners"][0];
    let figures = [
        &p["handshakes"]["all"],
        &p["failures"],
        &p["requests"]["2xx"],
    ];
    assert_eq!(
        (figures, &p["top_failure"]),
        ([&json!(2.0), &json!(1.0), &json!(5.0)], &json!("revoked"))
    );
    let want = [
        "a", "2.0", "0", "1.0", "revoked", "0.90", "4.00", "5.0", "0.0", "0.0",
    ];
    assert_eq!(cells(&out, "a"), want);
    has(&out, "  failures: revoked 0.0, unknown_ca 0.0\n");
}

#[test]
fn certificates_are_listed_soonest_first() {
    let s = summary(&json!({}), None, 0.0, &certs(), &o(5));
    let who: Vec<&str> = items(&s["expiring"])
        .filter_map(|c| c["who"].as_str())
        .collect();
    assert_eq!(
        who,
        ["spiffe://x/gone", "CN=gw", "CN=CA", "spiffe://x/late"]
    );
    let out = both(&json!({}), None, 0.0, 5).1;
    let rows = [
        "  -1.0d partner",
        "   1.0h gateway",
        "   2.0h crl     partners          CN=CA",
    ];
    let at: Vec<usize> = rows
        .iter()
        .map(|r| out.find(r).unwrap_or(usize::MAX))
        .collect();
    assert!(
        at.is_sorted() && at[2] < out.find("   1.2d partner").unwrap_or(0),
        "{out}"
    );
}

#[test]
fn the_header_shows_the_gateway_clock_in_utc() {
    assert_eq!(utc(1_764_600_000), "2025-12-01 14:40:00 UTC");
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    let (_, out) = both(&snap(7, 1, json!({})), None, 0.0, 5);
    assert!(out.starts_with("mtlsgate pid 7  generation 2  2025-12-01 14:40:00 UTC  totals"));
}

#[test]
fn the_admin_listener_is_read_over_plain_http_and_only_a_200_counts() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap(); // ok: test setup
    let addr = l.local_addr().unwrap(); // ok: test setup
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten().take(4) {
            let (mut req, mut buf) = (Vec::new(), [0u8; 512]);
            while !req.ends_with(b"\r\n\r\n") {
                let Ok(n @ 1..) = s.read(&mut buf) else { break };
                req.extend_from_slice(&buf[..n]);
            }
            let (code, body) = match String::from_utf8_lossy(&req).split(' ').nth(1) {
                Some("/stats") => (200, snap(1, 3, json!({})).to_string()),
                Some("/certs?within=30d") => (200, certs().to_string()),
                _ => (404, "no\n".into()),
            };
            let head = format!(
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = s.write_all((head + &body).as_bytes());
        }
    });
    assert_eq!(get(addr, "/stats").map(|v| v["pid"].clone()), Ok(json!(1)));
    assert!(get(addr, "/nope").is_err_and(|e| e.contains("404")));
    assert_eq!(run(addr, &o(5)), Ok(()));
}
