//! The table's machinery: rows (the raw request a partner sends, and the
//! status it must get or what the upstream must receive), their
//! constructors, and the runner that sends each on its own TLS connection.

use crate::common::{self, client, pki::Pki, raw};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The default partner, CN "Partner A": not on the /orders allow-list.
pub(super) const A: &str = "good";
/// CN "Partner C": the only partner allowed on /orders.
pub(super) const C: &str = "partner-c";

pub(super) enum Check {
    /// Exactly one field of this name, with this value.
    Is(&'static str, &'static str),
    Absent(&'static str),
    Body(&'static [u8]),
}
pub(super) use Check::*;

pub(super) enum Want {
    Status(u16),
    Forward(&'static str, Vec<Check>),
}

pub(super) struct Row {
    name: String,
    cert: &'static str,
    raw: Vec<u8>,
    want: Want,
}

pub(super) fn row(name: &str, cert: &'static str, raw: &[u8], want: Want) -> Row {
    Row {
        name: name.to_string(),
        cert,
        raw: raw.to_vec(),
        want,
    }
}

/// `GET <target>` with a Host.
pub(super) fn get(cert: &'static str, target: &[u8], want: Want) -> Row {
    let mut raw = b"GET ".to_vec();
    raw.extend_from_slice(target);
    raw.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let name = format!("GET {}", String::from_utf8_lossy(target).escape_debug());
    Row {
        name,
        cert,
        raw,
        want,
    }
}

pub(super) fn host(value: &str, want: Want) -> Row {
    let raw = format!("GET /public/h HTTP/1.1\r\nHost: {value}\r\n\r\n");
    row(&format!("Host: {value}"), A, raw.as_bytes(), want)
}

/// A valid Host: forwarded as sent.
pub(super) fn host_kept(value: &'static str) -> Row {
    host(
        value,
        fwd_with("GET /public/h HTTP/1.1", vec![Is("host", value)]),
    )
}

pub(super) fn st(code: u16) -> Want {
    Want::Status(code)
}

pub(super) fn fwd(line: &'static str) -> Want {
    Want::Forward(line, Vec::new())
}

pub(super) fn fwd_with(line: &'static str, checks: Vec<Check>) -> Want {
    Want::Forward(line, checks)
}

/// /orders allowed only for `cn:Partner C` (plus `orders_extra`), /public open,
/// the default upstream open.
pub(super) fn config(
    pki: &Pki,
    up: SocketAddr,
    listener_extra: &str,
    orders_extra: &str,
) -> String {
    common::http_config(
        pki,
        up,
        listener_extra,
        "",
        &format!(
            "[[listener.route]]\npath_prefix = \"/orders\"\nallow = [\"cn:Partner C\"]\n\
             {orders_extra}\n[[listener.route]]\npath_prefix = \"/public\"\n"
        ),
    )
}

/// A request whose head starts with `POST /public/c` and a Host, then `rest`.
pub(super) fn post(name: &str, rest: &[&[u8]], want: Want) -> Row {
    let mut raw = b"POST /public/c HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    raw.extend(rest.concat());
    row(name, A, &raw, want)
}

/// Sends every row on a fresh connection; returns one line per failed row.
pub(super) fn run(
    gw: &common::Gateway,
    up: &raw::RawUpstream,
    pki: &Pki,
    rows: &[Row],
) -> Vec<String> {
    let mut cfgs: HashMap<&str, Arc<rustls::ClientConfig>> = HashMap::new();
    let mut fails = Vec::new();
    for r in rows {
        let cfg = cfgs.entry(r.cert).or_insert_with(|| {
            client::config(
                pki,
                &client::Opts {
                    cert: Some(r.cert),
                    ..Default::default()
                },
            )
        });
        let mark = up.mark();
        let res = client::exchange(gw.addr(), cfg, &r.raw);
        if let Err(why) = check(r, res, || up.since(&mark)) {
            fails.push(format!("{} [{}]: {why}", r.name, r.cert));
        }
    }
    fails
}

macro_rules! bail {
    ($($t:tt)*) => {
        return Err(format!($($t)*))
    };
}

pub(super) fn check(
    r: &Row,
    res: std::io::Result<client::Response>,
    since: impl Fn() -> Vec<u8>,
) -> Result<(), String> {
    let res = res.map_err(|e| format!("no response: {e}"))?;
    let shown = |b: &[u8]| String::from_utf8_lossy(b).escape_debug().to_string();
    match &r.want {
        Want::Status(code) => {
            if res.status != *code {
                bail!("status {} ({}), want {code}", res.status, res.text().trim());
            }
            std::thread::sleep(Duration::from_millis(30)); // a late write upstream
            let got = since();
            if !got.is_empty() {
                bail!("{code} as wanted, but the upstream got \"{}\"", shown(&got));
            }
        }
        Want::Forward(line, checks) => {
            let got = since();
            if res.status != 200 || res.text() != "ok" {
                bail!(
                    "status {} ({}), want the upstream's 200; upstream got \"{}\"",
                    res.status,
                    res.text().trim(),
                    shown(&got)
                );
            }
            let reqs = raw::parse_requests(&got).map_err(|e| format!("upstream bytes: {e}"))?;
            let [req] = reqs.as_slice() else {
                bail!(
                    "{} requests reached the upstream: \"{}\"",
                    reqs.len(),
                    shown(&got)
                );
            };
            let head = shown(&req.raw[..req.head_len]);
            if req.request_line() != *line {
                bail!("upstream got {:?}, want {line:?}", req.request_line());
            }
            if got.windows(6).any(|w| w == b"FORGED") {
                bail!(
                    "a partner-sent value reached the upstream: \"{}\"",
                    shown(&got)
                );
            }
            let xfcc: Vec<_> = req
                .headers()
                .into_iter()
                .filter(|(n, _)| {
                    n.to_ascii_lowercase().replace('_', "-") == "x-forwarded-client-cert"
                })
                .collect();
            if xfcc.len() != 1 || !xfcc[0].1.starts_with("Hash=") {
                bail!("want one XFCC of the gateway's, got {xfcc:?} in \"{head}\"");
            }
            if req.values("host").len() != 1 {
                bail!("want exactly one Host in \"{head}\"");
            }
            for c in checks {
                match c {
                    Is(n, v) if req.values(n) != [v.to_string()] => {
                        bail!("want {n}: {v:?} in \"{head}\"")
                    }
                    Absent(n) if !req.values(n).is_empty() => {
                        bail!("{n} forwarded in \"{head}\"")
                    }
                    Body(b) if req.body != *b || !req.raw.ends_with(b) => {
                        bail!(
                            "upstream body \"{}\", want \"{}\"",
                            shown(&req.body),
                            shown(b)
                        )
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

pub(super) fn assert_rows(gw: &common::Gateway, up: &raw::RawUpstream, pki: &Pki, rows: &[Row]) {
    let fails = run(gw, up, pki, rows);
    assert!(
        fails.is_empty(),
        "{} of {} rows failed:\n{}",
        fails.len(),
        rows.len(),
        fails.join("\n")
    );
    assert!(gw.healthy());
}
