//! Upstream failures map to 502/504 and recover; mTLS to the origin.

use crate::common::{self, client, pki, pki::Pki, upstream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

#[test]
fn an_unreachable_upstream_gives_502_and_service_recovers_when_it_returns() {
    let pki = Pki::new();
    let port = common::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let gw = common::start(&pki.dir, &common::http_config(&pki, addr, "", "", ""));
    let cfg = client::config(&pki, &Default::default());
    assert_eq!(client::get(gw.addr(), &cfg, "/").unwrap().status, 502);
    assert_eq!(
        gw.wait_stat("partners", "/upstream_errors/connect_failed", 1),
        1
    );
    let _up = upstream::spawn_on(TcpListener::bind(addr).unwrap(), |_| upstream::ok("back"));
    let r = client::get(gw.addr(), &cfg, "/").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "back"));
}

#[test]
fn a_slow_upstream_gives_504() {
    let pki = Pki::new();
    let up = upstream::spawn(|_| {
        std::thread::sleep(Duration::from_secs(4));
        upstream::ok("late")
    });
    let gw = common::start_basic(&pki, up.addr);
    let r = client::get(gw.addr(), &client::config(&pki, &Default::default()), "/").unwrap();
    assert_eq!(r.status, 504);
    assert_eq!(
        gw.wait_stat("partners", "/upstream_errors/response_timeout", 1),
        1
    );
    assert!(gw.healthy());
}

#[test]
fn an_upstream_that_closes_mid_response_costs_only_that_request() {
    let pki = Pki::new();
    let up = upstream::spawn(|r| {
        if r.path.starts_with("/cut") {
            // /cut: a small body (read whole before relaying); /cut-big: a streamed one.
            let len = if r.path == "/cut" { 100 } else { 1_000_000 };
            upstream::Reply {
                bytes: format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\nshort")
                    .into_bytes(),
                close: true,
            }
        } else {
            upstream::ok("fine")
        }
    });
    let gw = common::start_basic(&pki, up.addr);
    let cfg = client::config(&pki, &Default::default());
    // A small body is read whole first, so its truncation is a clean 502.
    assert_eq!(client::get(gw.addr(), &cfg, "/cut").unwrap().status, 502);
    assert!(
        client::get(gw.addr(), &cfg, "/cut-big").is_err(),
        "a truncated streamed body must not look complete"
    );
    assert_eq!(client::get(gw.addr(), &cfg, "/ok").unwrap().text(), "fine");
}

/// A TLS origin that requires a client certificate from the test CA.
fn tls_origin(pki: &Pki, server: &str) -> std::net::SocketAddr {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.dir.join("ca.crt")).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let chain = vec![CertificateDer::from_pem_file(pki.dir.join(format!("{server}.crt"))).unwrap()];
    let key = PrivateKeyDer::from_pem_file(pki.dir.join(format!("{server}.key"))).unwrap();
    let cfg = Arc::new(
        rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(cfg).unwrap();
                let mut t = rustls::StreamOwned::new(conn, s);
                let mut buf = Vec::new();
                let mut b = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match t.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&b[..n]),
                    }
                }
                let who = t.conn.peer_certificates().map(|c| c.len()).unwrap_or(0);
                let body = format!("origin saw {who} client cert(s)");
                let _ = write!(
                    t,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                t.conn.send_close_notify();
                let _ = t.flush();
            });
        }
    });
    addr
}

#[test]
fn upstream_mtls_presents_the_gateway_certificate_and_refuses_an_origin_with_the_wrong_one() {
    let mut pki = Pki::new();
    pki.add_client(
        "gateway-client",
        &mtlsgate::demo::pki::ClientSpec::named("mtlsgate"),
    );
    let origin = pki.ca.server(&["origin.test"], false).unwrap();
    pki::write(&pki.dir, "origin", &origin);
    let imposter = pki.other_ca.server(&["origin.test"], false).unwrap();
    pki::write(&pki.dir, "imposter", &imposter);
    let good = tls_origin(&pki, "origin");
    let bad = tls_origin(&pki, "imposter");
    let tls = |name: &str| {
        format!(
            "[upstream.{name}.tls]\nca = \"{d}/ca.crt\"\ncert = \"{d}/gateway-client.crt\"\nkey = \"{d}/gateway-client.key\"\nserver_name = \"origin.test\"\n",
            d = pki.dir.display()
        )
    };
    let tail = format!(
        "[[listener.route]]\npath_prefix = \"/bad\"\nupstream = \"bad\"\n[upstream.bad]\naddrs = [\"{bad}\"]\n{}",
        tls("bad")
    );
    let cfg = common::http_config(&pki, good, "", "", &tail) + &tls("backend");
    let gw = common::start(&pki.dir, &cfg);
    let c = client::config(&pki, &Default::default());
    let r = client::get(gw.addr(), &c, "/good").unwrap();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "origin saw 1 client cert(s)")
    );
    assert_eq!(client::get(gw.addr(), &c, "/bad").unwrap().status, 502);
    assert_eq!(
        gw.wait_stat("partners", "/upstream_errors/tls_failed", 1),
        1
    );
}

#[test]
fn an_upstream_that_never_answers_gives_504_then_503_and_holds_at_most_pool_size_attempts() {
    let pki = Pki::new();
    // A loopback listener whose accept queue is full: further SYNs are dropped,
    // so connects hang like against a blackholed origin.
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let _fill: Vec<_> = (0..4)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()
        })
        .collect();
    let text = common::http_config(&pki, addr, "", "", "").replace(
        "connect_timeout = \"1s\"",
        "connect_timeout = \"1s\"\npool_size = 2",
    );
    let gw = common::start(&pki.dir, &text);
    let c = client::config(&pki, &Default::default());
    let codes: Vec<u16> = (0..4)
        .map(|_| client::get(gw.addr(), &c, "/").unwrap().status)
        .collect();
    assert_eq!(
        codes,
        vec![504, 504, 503, 503],
        "two attempts hold the pool; later requests wait, then 503"
    );
    assert_eq!(gw.stat("partners", "/upstream_errors/connect_timeout"), 2);
    assert!(gw.healthy());
}
