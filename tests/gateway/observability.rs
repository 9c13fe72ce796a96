//! Handshake observability: exact counts through `/metrics` and `/stats`,
//! refusals by reason and by partner, the partner cap, `/certs`, promtool on
//! the exposition text and the rules, and the HDR interval log.

use crate::common::{self, client, pki::Pki, upstream};
use mtlsgate::demo::pki::ClientSpec;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn gateway(pki: &Pki, up: std::net::SocketAddr, top: &str) -> common::Gateway {
    let text = common::http_config(pki, up, "", "", "")
        .replace("workers = 1", &format!("workers = 2\n{top}"));
    common::start(&pki.dir, &text)
}

fn no_resumption(pki: &Pki, cert: &'static str) -> Arc<rustls::ClientConfig> {
    let mut c = (*client::config(
        pki,
        &client::Opts {
            cert: Some(cert),
            ..Default::default()
        },
    ))
    .clone();
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

fn metrics(gw: &common::Gateway) -> String {
    common::admin_get(gw.admin, "/metrics").unwrap().1
}

/// The sum of every sample of `family` whose labels hold all of `want`.
fn sum(text: &str, family: &str, want: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| want.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_failures(gw: &common::Gateway, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let f: u64 = gw.stats()["listeners"]["partners"]["failures"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
        if f >= n || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn handshake_counts_reasons_and_partner_series_match_exactly_through_metrics_and_stats() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = gateway(&pki, up.addr, "");
    let full = no_resumption(&pki, "good");
    for _ in 0..2 {
        assert_eq!(client::get(gw.addr(), &full, "/").unwrap().status, 200);
    }
    let resuming = client::config(&pki, &client::Opts::default());
    let mut resumed = 0;
    for _ in 0..3 {
        let mut s = client::connect(gw.addr(), &resuming, "localhost").unwrap();
        resumed += u64::from(client::resumed(&s));
        s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        assert_eq!(
            client::read_response(&mut s, &mut Vec::new(), false)
                .unwrap()
                .status,
            200
        );
    }
    assert_eq!(resumed, 2, "the first of three resumes nothing");
    for cert in [Some("revoked"), Some("expired"), Some("foreign"), None] {
        let c = client::config(
            &pki,
            &client::Opts {
                cert,
                ..Default::default()
            },
        );
        assert!(
            client::get(gw.addr(), &c, "/").is_err(),
            "{cert:?} is refused"
        );
    }
    wait_failures(&gw, 4);
    let stats = gw.stats();
    let l = &stats["listeners"]["partners"];
    assert_eq!(
        l["handshakes"],
        serde_json::json!({"full": 3, "resumed": 2})
    );
    for reason in ["revoked", "expired", "unknown_ca", "no_cert"] {
        assert_eq!(l["failures"][reason], 1, "{reason}");
    }
    assert_eq!(l["failures_by_side"]["downstream"], 4);
    assert_eq!(l["handshake_latency_us"]["full"]["count"], 3);
    assert!(l["handshake_latency_us"]["full"]["p99"].as_u64() > Some(0));
    let a = &l["partners"]["spiffe://partner.example/a"];
    assert_eq!(
        a["handshakes"],
        serde_json::json!({"full": 3, "resumed": 2})
    );
    assert_eq!(a["requests"]["2xx"], 5);
    // Refusals of the CA's own certificates name their partner; a stranger's don't.
    assert_eq!(
        l["partners"]["spiffe://partner.example/revoked"]["failures"]["revoked"],
        1
    );
    assert_eq!(
        l["partners"]["spiffe://partner.example/expired"]["failures"]["expired"],
        1
    );
    assert!(l["partners"]["spiffe://partner.example/f"].is_null());
    // Every accepted connection is exactly one of these.
    let c = &l["connections"];
    assert_eq!(c["accepted"], 9);
    assert_eq!(c["handshaking"], 0);

    let m = metrics(&gw);
    let hs = "mtlsgate_handshake_seconds_count";
    let p = "listener=\"partners\"";
    assert_eq!(sum(&m, hs, &[p, "kind=\"full\"", "outcome=\"ok\""]), 3.0);
    assert_eq!(sum(&m, hs, &[p, "kind=\"resumed\"", "outcome=\"ok\""]), 2.0);
    assert_eq!(sum(&m, hs, &[p, "outcome=\"failed\""]), 4.0);
    assert_eq!(sum(&m, "mtlsgate_handshake_cpu_seconds_count", &[p]), 9.0);
    assert_eq!(
        sum(
            &m,
            "mtlsgate_handshake_failures_total",
            &[p, "side=\"downstream\"", "reason=\"revoked\""]
        ),
        1.0
    );
    let a = "partner=\"spiffe://partner.example/a\"";
    assert_eq!(
        sum(
            &m,
            "mtlsgate_partner_handshakes_total",
            &[p, a, "kind=\"full\""]
        ),
        3.0
    );
    assert_eq!(
        sum(
            &m,
            "mtlsgate_partner_handshakes_total",
            &[p, a, "kind=\"resumed\""]
        ),
        2.0
    );
    assert_eq!(
        sum(&m, "mtlsgate_partner_handshake_seconds_count", &[p, a]),
        5.0
    );
    assert_eq!(
        sum(
            &m,
            "mtlsgate_partner_handshake_failures_total",
            &[
                p,
                "partner=\"spiffe://partner.example/expired\"",
                "reason=\"expired\""
            ]
        ),
        1.0
    );
    assert!(sum(&m, "mtlsgate_partner_cert_expiry_seconds", &[p, a]) > 86400.0 * 300.0);
}

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    assert!(
        common::have("promtool"),
        "promtool is required (apt-get install prometheus)"
    );
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn promtool_accepts_the_metrics_with_an_identity_holding_quotes_and_backslashes() {
    let mut pki = Pki::new();
    pki.add_client("odd", &ClientSpec::named("Partner \"Q\" \\ back"));
    let up = upstream::echo();
    let gw = gateway(&pki, up.addr, "");
    let odd = client::config(
        &pki,
        &client::Opts {
            cert: Some("odd"),
            ..Default::default()
        },
    );
    assert_eq!(client::get(gw.addr(), &odd, "/").unwrap().status, 200);
    gw.wait_stat("partners", "/requests/200", 1);
    let m = metrics(&gw);
    // RFC 4514 escapes `"` and `\` in the DN; the exposition format escapes both again.
    assert!(
        m.contains(r#"partner="CN=Partner \\\"Q\\\" \\\\ back""#),
        "{m}"
    );
    let (ok, out) = promtool(&["check", "metrics"], Some(&m));
    assert!(ok, "promtool check metrics:\n{out}");
}

#[test]
fn promtool_accepts_the_alert_rules_and_their_unit_tests_pass() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let (ok, out) = promtool(
        &[
            "check",
            "rules",
            &format!("{dir}/tuning/prometheus-rules.yml"),
        ],
        None,
    );
    assert!(ok, "{out}");
    let (ok, out) = promtool(
        &[
            "test",
            "rules",
            &format!("{dir}/tuning/prometheus-rules.test.yml"),
        ],
        None,
    );
    assert!(ok, "{out}");
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{dir}/tuning/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert!(dash["panels"].as_array().is_some_and(|p| p.len() > 5));
}

#[test]
fn the_partner_cap_folds_the_overflow_into_other_identically_across_two_workers() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = gateway(&pki, up.addr, "partner_cap = 1");
    let good = no_resumption(&pki, "good");
    for _ in 0..4 {
        assert_eq!(client::get(gw.addr(), &good, "/").unwrap().status, 200);
    }
    for cert in ["partner-c", "outsider"] {
        assert_eq!(
            client::get(gw.addr(), &no_resumption(&pki, cert), "/")
                .unwrap()
                .status,
            200
        );
    }
    gw.wait_stat("partners", "/requests/200", 6);
    let partners = gw.stats()["listeners"]["partners"]["partners"].clone();
    let names: Vec<&String> = partners.as_object().unwrap().keys().collect();
    assert_eq!(names, ["(other)", "spiffe://partner.example/a"]);
    assert_eq!(partners["(other)"]["handshakes"]["full"], 2);
    let m = metrics(&gw);
    let fam = "mtlsgate_partner_handshakes_total";
    assert_eq!(sum(&m, fam, &["partner=\"(other)\"", "kind=\"full\""]), 2.0);
    assert_eq!(
        sum(
            &m,
            fam,
            &["partner=\"spiffe://partner.example/a\"", "kind=\"full\""]
        ),
        4.0
    );
    assert_eq!(sum(&m, fam, &["kind=\"full\""]), 6.0, "nothing else");
}

#[test]
fn certs_within_30d_lists_a_client_certificate_expiring_in_10_days_and_not_one_in_90() {
    let mut pki = Pki::new();
    let day = time::Duration::days(1);
    let mut soon = ClientSpec::named("Soon").uri("spiffe://partner.example/soon");
    soon.lifetime = Some(day * 10);
    pki.add_client("soon", &soon);
    let mut later = ClientSpec::named("Later").uri("spiffe://partner.example/later");
    later.lifetime = Some(day * 90);
    pki.add_client("later", &later);
    let up = upstream::echo();
    let gw = gateway(&pki, up.addr, "");
    for cert in ["soon", "later"] {
        assert_eq!(
            client::get(gw.addr(), &no_resumption(&pki, cert), "/")
                .unwrap()
                .status,
            200
        );
    }
    gw.wait_stat("partners", "/requests/200", 2);
    let (code, body) = common::admin_get(gw.admin, "/certs?within=30d").unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let who: Vec<&str> = v["partners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["partner"].as_str())
        .collect();
    assert_eq!(who, ["spiffe://partner.example/soon"]);
    let c = &v["partners"][0];
    assert!((9 * 86400..=10 * 86400 + 3600).contains(&c["expires_in_s"].as_i64().unwrap()));
    assert_eq!(c["connections"], 1);
    assert!(c["serial"].as_str().is_some_and(|s| !s.is_empty()) && c["issuer"] == "CN=Test CA");
    let (_, all) = common::admin_get(gw.admin, "/certs").unwrap();
    let all: serde_json::Value = serde_json::from_str(&all).unwrap();
    let expiries: Vec<i64> = all["partners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["not_after"].as_i64().unwrap())
        .collect();
    assert_eq!(expiries.len(), 2);
    assert!(expiries[0] < expiries[1], "sorted by expiry");
    assert!(all["gateway"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["kind"] == "server"));
    assert_eq!(
        common::admin_get(gw.admin, "/certs?within=soon").unwrap().0,
        400
    );
}

/// Reads an HDR interval log: the merged histogram of its intervals.
fn read_hlog(path: &std::path::Path) -> hdrhistogram::Histogram<u64> {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let text = std::fs::read(path).unwrap_or_default();
    let mut merged = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    let mut de = hdrhistogram::serialization::Deserializer::new();
    for e in IntervalLogIterator::new(&text) {
        if let Ok(LogEntry::Interval(i)) = e {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(i.encoded_histogram())
                .unwrap();
            let h: hdrhistogram::Histogram<u64> = de.deserialize(&mut &bytes[..]).unwrap();
            merged.add(h).unwrap();
        }
    }
    merged
}

#[test]
fn the_hdr_interval_log_reads_back_with_hdrhistogram_and_merges_across_two_gateways() {
    let pki = Pki::new();
    let up = upstream::echo();
    let logs: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| pki.dir.join(format!("{n}.hlog")))
        .collect();
    let gws: Vec<_> = logs
        .iter()
        .map(|l| {
            gateway(
                &pki,
                up.addr,
                &format!("[hdr_log]\npath = \"{}\"\ninterval = \"1s\"", l.display()),
            )
        })
        .collect();
    let cfg = no_resumption(&pki, "good");
    for (gw, n) in gws.iter().zip([3, 2]) {
        for _ in 0..n {
            assert_eq!(client::get(gw.addr(), &cfg, "/").unwrap().status, 200);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let (a, b) = loop {
        let (a, b) = (read_hlog(&logs[0]), read_hlog(&logs[1]));
        if a.len() >= 3 && b.len() >= 2 {
            break (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "the logs did not fill ({} / {})",
            a.len(),
            b.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((a.len(), b.len()), (3, 2), "each interval counted once");
    let mut both = a.clone();
    both.add(&b).unwrap();
    assert_eq!(both.len(), 5);
    assert!(both.max() >= a.max().max(b.max()) && both.min() > 0);
    let text = std::fs::read_to_string(&logs[0]).unwrap();
    assert!(
        text.contains("#[StartTime:") && text.contains("Tag=partners/full,"),
        "{text}"
    );
}

#[test]
fn mtlsgate_stats_shows_a_running_gateways_listeners_partners_and_expiring_certificates() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = gateway(&pki, up.addr, "");
    let good = no_resumption(&pki, "good");
    assert_eq!(client::get(gw.addr(), &good, "/").unwrap().status, 200);
    gw.wait_stat("partners", "/requests/200", 1);
    let admin = format!("127.0.0.1:{}", gw.admin);
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mtlsgate"))
            .args(["stats", "--admin", &admin, "--within-days", "400"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let table = run(&[]);
    assert!(
        table.contains("listener partners") && table.contains("spiffe://partner.example/a"),
        "{table}"
    );
    let v: serde_json::Value = serde_json::from_str(run(&["--json"]).trim()).unwrap();
    let text = v.to_string();
    assert!(
        text.contains("spiffe://partner.example/a") && text.contains("partners"),
        "{text}"
    );
}
