//! HTTP/1.1 proxying: bodies, framing of special responses, keep-alive,
//! routes and their allow-lists, path tricks, header limits.

use crate::common::{self, client, pki::Pki, upstream};
use std::io::Write;

fn route_config(pki: &Pki, up: std::net::SocketAddr) -> String {
    common::http_config(
        pki,
        up,
        "",
        "",
        "[[listener.route]]\npath_prefix = \"/orders\"\nallow = [\"cn:Partner C\"]\n[[listener.route]]\npath_prefix = \"/public\"\n",
    )
}

#[test]
fn a_10_mib_post_streams_through_intact() {
    let pki = Pki::new();
    let up = upstream::spawn(|r| {
        let sha = mtlsgate::identity::hex(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &r.body).as_ref(),
        );
        upstream::ok(&sha)
    });
    let gw = common::start_basic(&pki, up.addr);
    let body = upstream::pattern(10 * 1024 * 1024);
    let mut s = client::partner(&pki, gw.addr());
    write!(
        s,
        "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let r = client::read_response(&mut s, &mut Vec::new(), false).unwrap();
    assert_eq!(r.status, 200);
    let want = mtlsgate::identity::hex(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body).as_ref(),
    );
    assert_eq!(r.text(), want);
}

#[test]
fn a_small_chunked_request_is_forwarded_with_content_length_and_a_chunked_response_passes_through()
{
    let pki = Pki::new();
    let up = upstream::spawn(|r| {
        let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for part in r.body.chunks(7) {
            out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        upstream::Reply {
            bytes: out,
            close: false,
        }
    });
    let gw = common::start_basic(&pki, up.addr);
    let req = b"POST /c HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
    let r = client::exchange(gw.addr(), &client::config(&pki, &Default::default()), req).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "hello world");
    let seen = &up.requests()[0];
    assert!(!seen.chunked, "a buffered body is sent de-chunked");
    assert_eq!(seen.header("content-length"), Some("11"));
    assert_eq!(seen.body, b"hello world");
}

#[test]
fn a_chunked_request_longer_than_the_buffer_streams_re_chunked_without_extensions_or_trailers() {
    let pki = Pki::new();
    let up = upstream::spawn(|r| upstream::ok(&r.body.len().to_string()));
    let gw = common::start_basic(&pki, up.addr);
    let part = upstream::pattern(40 * 1024);
    let mut req =
        b"POST /c HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(format!("{:x};name=value\r\n", part.len()).as_bytes());
        req.extend_from_slice(&part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\nx-forwarded-client-cert: URI=spiffe://victim\r\nX-T: 1\r\n\r\n");
    let r = client::exchange(gw.addr(), &client::config(&pki, &Default::default()), &req).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), (3 * part.len()).to_string());
    let seen = &up.requests()[0];
    assert!(
        seen.chunked,
        "a body over request_buffer_bytes streams chunked"
    );
    let raw = &seen.raw_body;
    assert!(
        !raw.windows(4).any(|w| w == b"name"),
        "chunk extensions are dropped"
    );
    assert!(
        !raw.windows(6).any(|w| w == b"victim"),
        "trailers are dropped"
    );
    assert!(raw.ends_with(b"\r\n0\r\n\r\n"));
}

#[test]
fn head_204_and_304_responses_are_relayed_without_a_body_on_a_reused_connection() {
    let pki = Pki::new();
    let up = upstream::spawn(|r| {
        let bytes: &[u8] = match r.path.as_str() {
            "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
            "/204" => b"HTTP/1.1 204 No Content\r\n\r\n",
            "/304" => b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        };
        upstream::Reply {
            bytes: bytes.to_vec(),
            close: false,
        }
    });
    let gw = common::start_basic(&pki, up.addr);
    let mut s = client::partner(&pki, gw.addr());
    let mut buf = Vec::new();
    s.write_all(b"HEAD /head HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let r = client::read_response(&mut s, &mut buf, true).unwrap();
    assert_eq!((r.status, r.header("content-length")), (200, Some("1234")));
    for (path, code) in [("/204", 204), ("/304", 304), ("/after", 200)] {
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let r = client::read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!(r.status, code);
        if code == 200 {
            assert_eq!(r.text(), "ok");
        }
    }
    assert!(
        buf.is_empty(),
        "stray bytes after body-less responses: {:?}",
        String::from_utf8_lossy(&buf)
    );
}

#[test]
fn one_thousand_requests_share_one_keep_alive_connection_and_a_pooled_upstream() {
    let pki = Pki::new();
    let up = upstream::spawn(|_| upstream::ok("pong"));
    let gw = common::start_basic(&pki, up.addr);
    let mut s = client::partner(&pki, gw.addr());
    let mut buf = Vec::new();
    for i in 0..1000 {
        write!(s, "GET /ping/{i} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let r = client::read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "pong"), "request {i}");
    }
    assert_eq!(gw.wait_stat("partners", "/connections/accepted", 1), 1);
    assert_eq!(gw.stat("partners", "/requests/200"), 1000);
    assert_eq!(up.connections(), 1);
}

#[test]
fn a_route_allow_list_refuses_the_wrong_partner_with_403() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start(&pki.dir, &route_config(&pki, up.addr));
    let a = client::config(&pki, &Default::default());
    let c = client::config(
        &pki,
        &client::Opts {
            cert: Some("partner-c"),
            ..Default::default()
        },
    );
    assert_eq!(client::get(gw.addr(), &a, "/orders/1").unwrap().status, 403);
    assert_eq!(client::get(gw.addr(), &c, "/orders/1").unwrap().status, 200);
    // A neighbour of the route goes to the default upstream, but under the
    // route's allow-list: a backend matching `/orders` as a string would serve it.
    assert_eq!(client::get(gw.addr(), &a, "/ordersx").unwrap().status, 403);
    assert_eq!(
        client::get(gw.addr(), &a, "/orders.json").unwrap().status,
        403
    );
    assert_eq!(
        client::get(gw.addr(), &c, "/orders.json").unwrap().status,
        200
    );
    assert_eq!(client::get(gw.addr(), &a, "/public/x").unwrap().status, 200);
    assert_eq!(
        up.requests()
            .iter()
            .filter(|r| r.path.starts_with("/orders/"))
            .count(),
        1
    );
    assert_eq!(gw.wait_stat("partners", "/policy_denied", 3), 3);
}

#[test]
fn a_listener_allow_list_refuses_a_partner_outside_it_with_403() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start(
        &pki.dir,
        &common::http_config(
            &pki,
            up.addr,
            "allow = [\"uri:spiffe://partner.example/*\"]",
            "",
            "",
        ),
    );
    let out = client::config(
        &pki,
        &client::Opts {
            cert: Some("outsider"),
            ..Default::default()
        },
    );
    assert_eq!(client::get(gw.addr(), &out, "/").unwrap().status, 403);
    assert_eq!(
        client::get(gw.addr(), &client::config(&pki, &Default::default()), "/")
            .unwrap()
            .status,
        200
    );
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn dot_segments_and_encoded_dots_or_slashes_cannot_reach_a_denied_route() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start(&pki.dir, &route_config(&pki, up.addr));
    let a = client::config(&pki, &Default::default());
    for path in [
        "/public/../orders",
        "/public/%2e%2e/orders",
        "/public/%2E%2E/orders",
        "/public/.%2e/orders",
        "/public%2f..%2forders",
        "/public/./../orders",
        "/public//../orders",
        "/public\\..\\orders",
        "//orders",
    ] {
        let r = client::get(gw.addr(), &a, path).unwrap();
        assert_eq!(r.status, 400, "{path}");
    }
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    assert_eq!(client::get(gw.addr(), &a, "/public/x").unwrap().status, 200);
}

#[test]
fn a_mebibyte_of_headers_gets_431_and_the_gateway_stays_healthy() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start_basic(&pki, up.addr);
    let cfg = client::config(&pki, &Default::default());
    let mut s = client::connect(gw.addr(), &cfg, "localhost").unwrap();
    let mut req = b"GET / HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    while req.len() < 1024 * 1024 {
        req.extend_from_slice(b"X-Filler: ");
        req.extend_from_slice(&[b'a'; 1000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    let _ = s.write_all(&req); // the gateway may close before reading it all
    let r = client::read_response(&mut s, &mut Vec::new(), false).unwrap();
    assert_eq!(r.status, 431);
    assert!(gw.healthy());
    assert_eq!(client::get(gw.addr(), &cfg, "/").unwrap().status, 200);
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn a_request_with_101_headers_gets_431() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start_basic(&pki, up.addr);
    let cfg = client::config(&pki, &Default::default());
    let mut req = String::from("GET / HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..100 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    assert_eq!(
        client::exchange(gw.addr(), &cfg, req.as_bytes())
            .unwrap()
            .status,
        431
    );
    assert!(up.requests().is_empty());
    assert_eq!(client::get(gw.addr(), &cfg, "/").unwrap().status, 200);
}

#[test]
fn hop_by_hop_headers_are_not_forwarded_and_end_to_end_ones_are() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start_basic(&pki, up.addr);
    let req = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: websocket\r\nProxy-Authorization: x\r\nX-Kept: yes\r\n\r\n";
    let r = client::exchange(gw.addr(), &client::config(&pki, &Default::default()), req).unwrap();
    assert_eq!(r.status, 200);
    let seen = &up.requests()[0];
    for h in [
        "connection",
        "x-secret",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(seen.header(h).is_none(), "{h} was forwarded");
    }
    assert_eq!(seen.header("x-kept"), Some("yes"));
}

#[test]
fn pipelined_requests_sent_in_one_write_are_answered_in_order() {
    let pki = Pki::new();
    let up = upstream::spawn(|r| upstream::ok(&r.path));
    let gw = common::start_basic(&pki, up.addr);
    let mut s = client::partner(&pki, gw.addr());
    let mut burst = Vec::new();
    for i in 0..5 {
        burst
            .extend_from_slice(format!("GET /p{i} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    }
    burst.extend_from_slice(b"POST /p5 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabcGET /p6 HTTP/1.1\r\nHost: localhost\r\n\r\n");
    s.write_all(&burst).unwrap();
    let mut buf = Vec::new();
    for i in 0..7 {
        let r = client::read_response(&mut s, &mut buf, false).unwrap();
        assert_eq!((r.status, r.text()), (200, format!("/p{i}")));
    }
    assert_eq!(up.requests()[5].body, b"abc");
}

#[test]
fn an_http_1_0_request_is_answered_and_the_connection_closed() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start_basic(&pki, up.addr);
    let r = client::exchange(
        gw.addr(),
        &client::config(&pki, &Default::default()),
        b"GET /old HTTP/1.0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn an_http_1_0_request_without_host_is_forwarded_with_the_name_the_partner_asked_for() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start_basic(&pki, up.addr);
    let cfg = client::config(&pki, &Default::default());
    let r = client::exchange(gw.addr(), &cfg, b"GET /old HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(r.status, 200);
    // The SNI ("localhost"), not the listener's address.
    assert_eq!(up.requests()[0].header("host"), Some("localhost"));
}

#[test]
fn an_upstream_answering_with_garbage_gives_502() {
    let pki = Pki::new();
    let up = upstream::spawn(|_| upstream::Reply {
        bytes: b"SMTP ready\r\n\r\n".to_vec(),
        close: true,
    });
    let gw = common::start_basic(&pki, up.addr);
    let r = client::get(gw.addr(), &client::config(&pki, &Default::default()), "/").unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(
        gw.wait_stat("partners", "/upstream_errors/bad_response", 1),
        1
    );
}

#[test]
fn an_upstream_response_with_ambiguous_framing_is_not_relayed() {
    let pki = Pki::new();
    let up = upstream::spawn(|_| upstream::Reply {
        bytes:
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        close: true,
    });
    let gw = common::start_basic(&pki, up.addr);
    let r = client::get(gw.addr(), &client::config(&pki, &Default::default()), "/").unwrap();
    assert_eq!(r.status, 502);
}

#[test]
fn metrics_expose_handshakes_latency_and_requests_in_prometheus_text() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start_basic(&pki, up.addr);
    assert_eq!(
        client::get(gw.addr(), &client::config(&pki, &Default::default()), "/")
            .unwrap()
            .status,
        200
    );
    gw.wait_stat("partners", "/requests/200", 1);
    let (code, text) = common::admin_get(gw.admin, "/metrics").unwrap();
    assert_eq!(code, 200);
    for want in [
        "mtlsgate_handshakes_total{listener=\"partners\",kind=\"full\"} 1",
        "mtlsgate_requests_total{listener=\"partners\",code=\"200\"} 1",
        "mtlsgate_handshake_seconds_count{listener=\"partners\",kind=\"full\",outcome=\"ok\",version=\"1.3\",group=\"",
        "# TYPE mtlsgate_handshake_seconds histogram",
        "# TYPE mtlsgate_handshake_cpu_seconds histogram",
        "mtlsgate_ticket_keys_info{source=\"memory\",slot=\"current\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "not a sample: {line}");
    }
}

#[test]
fn an_http_1_0_partner_gets_a_chunked_upstream_body_as_plain_data_then_close() {
    let pki = Pki::new();
    let up = upstream::spawn(|_| {
        upstream::Reply {
        bytes: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_vec(),
        close: false,
    }
    });
    let gw = common::start_basic(&pki, up.addr);
    let r = client::exchange(
        gw.addr(),
        &client::config(&pki, &Default::default()),
        b"GET / HTTP/1.0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.text(), "hello world");
}

/// An origin that answers the first request on each connection as keep-alive
/// and closes the connection, unanswered, when the next request arrives (an
/// idle close racing that request: the pooled connection looked alive).
fn closes_on_the_second_request() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let conns = std::sync::Arc::new(AtomicUsize::new(0));
    let n = conns.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            n.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut b = [0u8; 4096];
                for answer in [true, false] {
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(k) => got.extend_from_slice(&b[..k]),
                        }
                    }
                    if answer {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    }
                }
                // Dropped unanswered: the gateway reads end of stream.
            });
        }
    });
    (addr, conns)
}

#[test]
fn a_get_whose_pooled_connection_closes_before_answering_is_resent_on_a_fresh_one() {
    let pki = Pki::new();
    let (up, conns) = closes_on_the_second_request();
    let gw = common::start_basic(&pki, up);
    let cfg = client::config(&pki, &Default::default());
    for i in 0..5 {
        let r = client::get(gw.addr(), &cfg, &format!("/race/{i}")).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "request {i}");
    }
    assert_eq!(
        conns.load(std::sync::atomic::Ordering::SeqCst),
        5,
        "one fresh connection per resend"
    );
    assert_eq!(gw.stat("partners", "/requests/502"), 0);
    assert_eq!(
        gw.stat("partners", "/upstream_errors/stale_connection_resent"),
        4
    );
}

#[test]
fn a_post_whose_pooled_connection_closes_before_answering_is_not_sent_twice() {
    let pki = Pki::new();
    let (up, conns) = closes_on_the_second_request();
    let gw = common::start_basic(&pki, up);
    let cfg = client::config(&pki, &Default::default());
    let post = |i: usize| {
        let req =
            format!("POST /race/{i} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc");
        client::exchange(gw.addr(), &cfg, req.as_bytes())
            .unwrap()
            .status
    };
    assert_eq!(post(0), 200);
    // The origin may have acted on it before closing: a POST is never resent.
    assert_eq!(post(1), 502);
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        gw.stat("partners", "/upstream_errors/stale_connection_resent"),
        0
    );
}
