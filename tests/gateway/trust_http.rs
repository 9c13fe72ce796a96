//! HTTP behaviour at the trust boundary that needs time or socket control:
//! split upstream response heads, slow and non-reading partners, the admin
//! listener under a slow client, 1xx and HTTP/1.0, trailer bounds.

use crate::common::{self, client, pki::Pki, raw};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A reader that keeps a copy of every byte it hands out.
struct Tee<'a, R> {
    inner: &'a mut R,
    log: Vec<u8>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(b)?;
        self.log.extend_from_slice(&b[..n]);
        Ok(n)
    }
}

/// Sends `raw`, reads the final response; returns it with every byte read
/// before its end (so relayed 1xx heads can be seen).
fn exchange_seeing_1xx(s: &mut client::Tls, raw: &[u8]) -> (client::Response, Vec<u8>) {
    s.write_all(raw).unwrap();
    let mut tee = Tee {
        inner: s,
        log: Vec::new(),
    };
    let r = client::read_response(&mut tee, &mut Vec::new(), false).expect("final response");
    (r, tee.log)
}

fn has_1xx(bytes: &[u8]) -> bool {
    bytes
        .windows(10)
        .any(|w| w.starts_with(b"HTTP/1.") && w[8] == b' ' && w[9] == b'1')
}

fn partner_cfg(pki: &Pki) -> Arc<rustls::ClientConfig> {
    client::config(pki, &Default::default())
}

/// The standard config, upstream `pool_size` set.
fn pooled_config(pki: &Pki, up: SocketAddr, listener_extra: &str, pool: usize) -> String {
    common::http_config(pki, up, listener_extra, "", "").replace(
        "connect_timeout = \"1s\"",
        &format!("connect_timeout = \"1s\"\npool_size = {pool}"),
    )
}

#[test]
fn an_upstream_response_head_split_across_reads_at_any_offset_is_relayed_intact() {
    let pki = Pki::new();
    let up = raw::RawUpstream::spawn(raw::ok("first"));
    let gw = common::start_basic(&pki, up.addr);
    let mut s = client::partner(&pki, gw.addr());
    let mut buf = Vec::new();
    let csp = "c".repeat(2700);
    for (i, at) in [
        "1",
        "17",
        "csp+1000",
        "before-crlfcrlf",
        "1448,2896",
        "every-64",
    ]
    .iter()
    .enumerate()
    {
        let body = format!("reply {i} intact");
        let head = format!(
            "HTTP/1.1 201 Created\r\nContent-Security-Policy: {csp}\r\n\
             X-After: {i}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let csp_at = head.find(&csp).unwrap();
        let splits: Vec<usize> = match *at {
            "1" => vec![1],
            "17" => vec![17],
            "csp+1000" => vec![csp_at + 1000],
            "before-crlfcrlf" => vec![head.len() - 4, head.len() - 2],
            "1448,2896" => vec![1448, 2896],
            _ => (1..head.len() / 64).map(|k| k * 64).collect(),
        };
        up.set_reply(format!("{head}{body}").into_bytes(), &splits);
        write!(s, "GET /split/{i} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let r = client::read_response(&mut s, &mut buf, false)
            .unwrap_or_else(|e| panic!("split at {at}: {e}"));
        assert_eq!(r.status, 201, "split at {at}: {}", r.text());
        assert_eq!(r.text(), body, "split at {at}");
        assert_eq!(
            r.header("x-after"),
            Some(i.to_string().as_str()),
            "split at {at}"
        );
        assert_eq!(
            r.header("content-security-policy").map(str::len),
            Some(2700),
            "split at {at}"
        );
    }
    assert_eq!(gw.stat("partners", "/upstream_errors/bad_response"), 0);
}

#[test]
fn eight_slow_partners_hold_no_pooled_upstream_connection_and_a_ninth_is_served() {
    slow_senders_leave_the_pool_free(1000);
}

#[test]
fn slow_bodies_longer_than_the_buffer_hold_no_pooled_connection_before_their_first_64_kib() {
    slow_senders_leave_the_pool_free(70_000);
}

/// Eight partners declare a body of `content_length` and send one byte.
fn slow_senders_leave_the_pool_free(content_length: usize) {
    let pki = Pki::new();
    let up = raw::RawUpstream::spawn(raw::ok("fast"));
    // The slow sender sends 1 byte every 5 s; with a 3 s body_timeout
    // only the first byte is ever due, so that is all these send.
    let gw = common::start(
        &pki.dir,
        &pooled_config(&pki, up.addr, "body_timeout = \"3s\"", 8),
    );
    let cfg = partner_cfg(&pki);
    let mut slow: Vec<client::Tls> = (0..8)
        .map(|_| {
            let mut s = client::connect(gw.addr(), &cfg, "localhost").unwrap();
            write!(
                s,
                "POST /slow HTTP/1.1\r\nHost: localhost\r\nContent-Length: {content_length}\r\n\r\nx"
            )
            .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500)); // let the gateway read their heads
    let r = client::get(gw.addr(), &cfg, "/fast").expect("the ninth partner");
    assert_eq!((r.status, r.text().as_str()), (200, "fast"));
    for (i, s) in slow.iter_mut().enumerate() {
        // The client's read timeout (10 s) bounds this; 408 is due at 3 s.
        match client::read_response(s, &mut Vec::new(), false) {
            Ok(r) => assert_eq!(r.status, 408, "slow partner {i}: {}", r.text()),
            Err(e) => panic!("slow partner {i} got no 408: {e}"),
        }
    }
    let slow_upstream = up
        .received()
        .iter()
        .filter(|c| c.windows(10).any(|w| w == b"POST /slow"))
        .count();
    assert_eq!(slow_upstream, 0, "a slow body's head reached the upstream");
}

#[test]
fn a_partner_that_never_reads_is_disconnected_after_the_send_timeout() {
    let pki = Pki::new();
    let up = raw::RawUpstream::spawn(raw::ok("known"));
    // No default upstream: every path but /known is a 404 written by the gateway.
    let text = common::http_config(
        &pki,
        up.addr,
        "",
        "",
        "[[listener.route]]\npath_prefix = \"/known\"\nupstream = \"backend\"\n",
    )
    .replace(
        "upstream = \"backend\"\n\n[listener.tls]",
        "send_timeout = \"1s\"\n[listener.tls]",
    );
    let gw = common::start(&pki.dir, &text);
    let cfg = partner_cfg(&pki);
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.set_send_buffer_size(4096).unwrap();
    sock.connect(&gw.addr().into()).unwrap();
    let tcp: std::net::TcpStream = sock.into();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let conn = rustls::ClientConnection::new(cfg.clone(), "localhost".try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).expect("handshake");
    }
    assert_eq!(gw.wait_stat("partners", "/connections/active", 1), 1);
    s.sock
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let burst = "GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(1000);
    let (start, mut sent) = (Instant::now(), 0usize);
    // Pipeline 404s and never read, until our writes stall or fail.
    while sent < 64 << 20 && start.elapsed() < Duration::from_secs(20) {
        if s.write_all(burst.as_bytes())
            .and_then(|_| s.flush())
            .is_err()
        {
            break;
        }
        sent += burst.len();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.stat("partners", "/connections/active") != 0 {
        assert!(
            Instant::now() < deadline,
            "the non-reading partner is still connected ({sent} bytes sent)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gw.healthy());
    assert_eq!(client::get(gw.addr(), &cfg, "/nope").unwrap().status, 404);
    drop(s);
}

#[test]
fn the_admin_listener_answers_healthz_while_other_clients_hold_connections_silent_or_slow() {
    let pki = Pki::new();
    let up = raw::RawUpstream::spawn(raw::ok("ok"));
    let gw = common::start_basic(&pki, up.addr);
    let _silent = std::net::TcpStream::connect(("127.0.0.1", gw.admin)).unwrap();
    let admin = gw.admin;
    // Sends one byte of a never-ending head every 500 ms, for 8 s at most.
    let slow = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ");
        for _ in 0..16 {
            if s.write_all(b"a").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    // admin_get's own read timeout is 5 s.
    let r = common::admin_get(gw.admin, "/healthz").expect("healthz beside a slow admin client");
    assert_eq!(r.0, 200);
    slow.join().unwrap();
}

#[test]
fn a_relayed_103_reaches_an_http_1_1_partner_but_not_an_http_1_0_one() {
    let pki = Pki::new();
    let up = raw::RawUpstream::spawn(
        [
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n".as_slice(),
            &raw::ok("ok"),
        ]
        .concat(),
    );
    let gw = common::start_basic(&pki, up.addr);
    let mut s = client::partner(&pki, gw.addr());
    let (r, seen) = exchange_seeing_1xx(&mut s, b"GET /h HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(
        seen.starts_with(b"HTTP/1.1 103"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    let mut s = client::partner(&pki, gw.addr());
    let (r, seen) = exchange_seeing_1xx(&mut s, b"GET /h HTTP/1.0\r\nHost: localhost\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert!(
        !has_1xx(&seen),
        "1xx sent to HTTP/1.0: {:?}",
        String::from_utf8_lossy(&seen)
    );
}

#[test]
fn a_100_continue_is_sent_to_an_http_1_1_partner_but_not_an_http_1_0_one() {
    let pki = Pki::new();
    let up = raw::RawUpstream::spawn(raw::ok("got it"));
    let gw = common::start_basic(&pki, up.addr);
    // HTTP/1.1: the 100 comes before the body is sent.
    let mut s = client::partner(&pki, gw.addr());
    s.write_all(
        b"POST /c HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    let mut interim = Vec::new();
    let mut b = [0u8; 256];
    while !interim.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).expect("100 Continue before the body");
        assert!(n > 0, "closed before 100 Continue");
        interim.extend_from_slice(&b[..n]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&interim)
    );
    s.write_all(b"hello").unwrap();
    let r = client::read_response(&mut s, &mut Vec::new(), false).unwrap();
    assert_eq!(r.status, 200);
    // HTTP/1.0: the client sends its body after a pause, as 1.0 clients do.
    let mut s = client::partner(&pki, gw.addr());
    s.write_all(
        b"POST /c HTTP/1.0\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (r, seen) = exchange_seeing_1xx(&mut s, b"hello");
    assert_eq!((r.status, r.text().as_str()), (200, "got it"));
    assert!(
        !has_1xx(&seen),
        "1xx sent to HTTP/1.0: {:?}",
        String::from_utf8_lossy(&seen)
    );
}

#[test]
fn a_chunked_request_with_more_than_32_trailer_fields_gets_400_and_reaches_no_upstream() {
    let pki = Pki::new();
    let up = raw::RawUpstream::spawn(raw::ok("ok"));
    let gw = common::start_basic(&pki, up.addr);
    let cfg = partner_cfg(&pki);
    let with_trailers = |n: usize| {
        let mut req = b"POST /t HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
            5\r\nhello\r\n0\r\n"
            .to_vec();
        for i in 0..n {
            req.extend_from_slice(format!("X-T{i}: v\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        req
    };
    let r = client::exchange(gw.addr(), &cfg, &with_trailers(32)).unwrap();
    assert_eq!(r.status, 200, "32 trailer fields are within the bound");
    let mark = up.mark();
    let r = client::exchange(gw.addr(), &cfg, &with_trailers(33)).unwrap();
    assert_eq!(r.status, 400, "33 trailer fields: {}", r.text());
    std::thread::sleep(Duration::from_millis(30));
    let got = up.since(&mark);
    assert!(
        got.is_empty(),
        "upstream got {:?}",
        String::from_utf8_lossy(&got)
    );
}
