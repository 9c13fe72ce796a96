//! Per-partner limits (connections and request rate, exact across workers)
//! and the per-source limit on connections still in their handshake.

use crate::common::{self, client, pki::Pki, upstream};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn limited(pki: &Pki, up: std::net::SocketAddr, limits: &str) -> common::Gateway {
    let text = common::http_config(pki, up, "", "", &format!("[listener.limits]\n{limits}"))
        .replace("workers = 1", "workers = 2");
    common::start(&pki.dir, &text)
}

fn request(s: &mut client::Tls) -> std::io::Result<client::Response> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    client::read_response(s, &mut Vec::new(), false)
}

#[test]
fn the_eleventh_connection_of_a_partner_limited_to_ten_is_refused_and_another_partner_is_not() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = limited(&pki, up.addr, "max_connections_per_partner = 10");
    let good = client::config(&pki, &client::Opts::default());
    // Ten held connections, spread over both workers by SO_REUSEPORT.
    let mut held: Vec<client::Tls> = (0..10)
        .map(|_| {
            let mut s = client::connect(gw.addr(), &good, "localhost").unwrap();
            assert_eq!(request(&mut s).unwrap().status, 200);
            s
        })
        .collect();
    let mut eleventh = client::connect(gw.addr(), &good, "localhost").unwrap();
    let r = client::read_response(&mut eleventh, &mut Vec::new(), false).unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    let c = client::config(
        &pki,
        &client::Opts {
            cert: Some("partner-c"),
            ..Default::default()
        },
    );
    assert_eq!(client::get(gw.addr(), &c, "/").unwrap().status, 200);
    // A closed connection makes room for the next one.
    held.pop();
    std::thread::sleep(Duration::from_millis(200));
    let mut again = client::connect(gw.addr(), &good, "localhost").unwrap();
    assert_eq!(request(&mut again).unwrap().status, 200);
    assert_eq!(
        gw.wait_stat("partners", "/limited/partner_connections", 1),
        1
    );
    let (_, metrics) = common::admin_get(gw.admin, "/metrics").unwrap();
    assert!(
        metrics.contains("mtlsgate_partner_limited_total{listener=\"partners\",partner=\"spiffe://partner.example/a\",kind=\"connection\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_partner_over_its_request_rate_gets_429_with_retry_after_while_another_partner_is_served() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = limited(
        &pki,
        up.addr,
        "requests_per_second_per_partner = 0.2\nburst = 3",
    );
    let good = client::config(&pki, &client::Opts::default());
    let mut s = client::connect(gw.addr(), &good, "localhost").unwrap();
    for _ in 0..3 {
        assert_eq!(request(&mut s).unwrap().status, 200);
    }
    let r = request(&mut s).unwrap();
    assert_eq!(r.status, 429);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=5).contains(&wait),
        "Retry-After {wait}: at most one token's time (5 s)"
    );
    // The connection stays usable, and the limit holds on a new one too.
    assert_eq!(request(&mut s).unwrap().status, 429);
    assert_eq!(client::get(gw.addr(), &good, "/").unwrap().status, 429);
    let c = client::config(
        &pki,
        &client::Opts {
            cert: Some("partner-c"),
            ..Default::default()
        },
    );
    for _ in 0..3 {
        assert_eq!(client::get(gw.addr(), &c, "/").unwrap().status, 200);
    }
    assert_eq!(
        gw.wait_stat("partners", "/limited/partner_request_rate", 3),
        3
    );
}

#[test]
fn a_source_over_its_handshake_limit_is_refused_before_any_tls() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = limited(&pki, up.addr, "max_handshakes_per_source = 2");
    // Two silent connections sit in their handshake.
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(gw.addr()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = TcpStream::connect(gw.addr()).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 16];
    assert!(
        matches!(third.read(&mut b), Ok(0) | Err(_)),
        "closed at once"
    );
    assert_eq!(gw.wait_stat("partners", "/limited/source_handshakes", 1), 1);
    drop(silent);
    std::thread::sleep(Duration::from_millis(300));
    let good = client::config(&pki, &client::Opts::default());
    assert_eq!(client::get(gw.addr(), &good, "/").unwrap().status, 200);
}

#[test]
fn in_tcp_mode_a_partner_over_its_connection_limit_is_refused_and_reaches_no_upstream() {
    let pki = Pki::new();
    let (addr, got) = upstream::tcp_sink_then_source(5);
    let text = common::http_config(
        &pki,
        addr,
        "",
        "",
        "[listener.limits]\nmax_connections_per_partner = 1",
    )
    .replace("mode = \"http\"", "mode = \"tcp\"");
    let gw = common::start(&pki.dir, &text);
    let good = client::config(&pki, &client::Opts::default());
    let _first = client::connect(gw.addr(), &good, "localhost").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut second = client::connect(gw.addr(), &good, "localhost").unwrap();
    let _ = second.write_all(b"hello");
    let mut b = Vec::new();
    let _ = second.read_to_end(&mut b);
    assert!(b.is_empty(), "the refused connection gets nothing");
    assert_eq!(
        gw.wait_stat("partners", "/limited/partner_connections", 1),
        1
    );
    assert!(
        got.try_recv().is_err(),
        "nothing of it reaches the upstream"
    );
}
