//! PROXY protocol v2: a listener behind an L4 balancer takes the client's
//! address from the header (logs, limits, x-forwarded-for); a missing or
//! garbage header closes the connection cleanly, counted; in tcp mode the
//! upstream gets a header with the verified identity, byte for byte.

use crate::common::{self, client, pki::Pki, upstream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A TCP4 PROXY header, laid out by hand from the spec (section 2.2).
fn tcp4_header(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut h = SIG.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h
}

/// Sends `preface` on a new connection, then does the TLS handshake as "good".
fn connect_after(addr: SocketAddr, pki: &Pki, preface: &[u8]) -> std::io::Result<client::Tls> {
    let cfg = client::config(pki, &client::Opts::default());
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.write_all(preface)?;
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

fn get(s: &mut client::Tls, extra: &str) -> client::Response {
    write!(s, "GET /who HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n").unwrap();
    client::read_response(s, &mut Vec::new(), false).unwrap()
}

fn proxied_gateway(pki: &Pki, up: SocketAddr, from: &str) -> common::Gateway {
    let extra = format!("proxy_protocol = true\nproxy_protocol_from = [{from}]");
    common::start(&pki.dir, &common::http_config(pki, up, &extra, "", ""))
}

#[test]
fn a_proxy_v2_listener_forwards_the_client_address_from_the_header_and_drops_the_partners_own() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = proxied_gateway(&pki, up.addr, "\"127.0.0.1\"");
    let header = tcp4_header([203, 0, 113, 7], 4242, [127, 0, 0, 1], gw.port);
    let mut s = connect_after(gw.addr(), &pki, &header).unwrap();
    let r = get(
        &mut s,
        "X-Forwarded-For: 10.9.9.9\r\nForwarded: for=10.9.9.9\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = up.requests();
    assert_eq!(
        seen[0].headers_named("x-forwarded-for"),
        vec!["203.0.113.7"]
    );
    assert!(
        seen[0].headers_named("forwarded").is_empty(),
        "the partner's own Forwarded is dropped"
    );
    // A LOCAL header (the balancer's own health check) keeps the socket's address.
    let mut local = SIG.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    let mut s = connect_after(gw.addr(), &pki, &local).unwrap();
    assert_eq!(get(&mut s, "").status, 200);
    assert_eq!(
        up.requests()[1].headers_named("x-forwarded-for"),
        vec!["127.0.0.1"]
    );
}

#[test]
fn a_proxy_v2_listener_closes_cleanly_and_counts_a_connection_without_a_valid_header() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = proxied_gateway(&pki, up.addr, "\"127.0.0.1\"");
    // No header: the ClientHello itself is read as one, and refused.
    assert!(connect_after(gw.addr(), &pki, b"").is_err());
    // Garbage, and a v1 text header: each gets our FIN (end of stream), not a reset.
    for preface in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    ] {
        let mut s = TcpStream::connect(gw.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(preface).unwrap();
        let mut b = [0u8; 64];
        assert_eq!(s.read(&mut b).unwrap(), 0, "a clean close, not a reset");
    }
    assert_eq!(gw.wait_stat("partners", "/failures/bad_proxy_header", 3), 3);
    assert!(up.requests().is_empty());
}

#[test]
fn tcp_mode_sends_the_upstream_a_proxy_v2_header_carrying_the_verified_identity_byte_for_byte() {
    let pki = Pki::new();
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = up.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = up.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut fixed = [0u8; 16];
        s.read_exact(&mut fixed).unwrap();
        let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
        let mut rest = vec![0u8; len + 5];
        s.read_exact(&mut rest).unwrap(); // the header, then the partner's "hello"
        s.write_all(b"ok").unwrap();
        tx.send([&fixed[..], &rest].concat()).unwrap();
    });
    let text = common::http_config(&pki, up_addr, "", "", "")
        .replace("mode = \"http\"", "mode = \"tcp\"")
        .replace(
            "connect_timeout = \"1s\"",
            "connect_timeout = \"1s\"\nproxy_protocol = true",
        );
    let gw = common::start(&pki.dir, &text);
    let cfg = client::config(
        &pki,
        &client::Opts {
            tls13_only: true,
            ..Default::default()
        },
    );
    let mut s = client::connect(gw.addr(), &cfg, "localhost").unwrap();
    let client_port = s.sock.local_addr().unwrap().port();
    s.write_all(b"hello").unwrap();
    let mut back = [0u8; 2];
    s.read_exact(&mut back).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();

    let der = CertificateDer::from_pem_file(pki.dir.join("good.crt")).unwrap();
    let sub = |kind: u8, v: &[u8]| [&[kind][..], &(v.len() as u16).to_be_bytes(), v].concat();
    let suite = s
        .conn
        .negotiated_cipher_suite()
        .unwrap()
        .suite()
        .as_str()
        .unwrap();
    let ssl = [
        &[0x07u8][..], // PP2_CLIENT_SSL | CERT_CONN | CERT_SESS
        &[0, 0, 0, 0], // verify: 0 = verified
        &sub(0x21, b"TLSv1.3"),
        &sub(0x22, b"Partner A"),
        &sub(0x23, suite.as_bytes()),
        &sub(0x28, &der),
    ]
    .concat();
    let mut want = SIG.to_vec();
    let len = 12 + 3 + ssl.len();
    want.extend_from_slice(&[0x21, 0x11]);
    want.extend_from_slice(&(len as u16).to_be_bytes());
    want.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
    want.extend_from_slice(&client_port.to_be_bytes());
    want.extend_from_slice(&gw.port.to_be_bytes());
    want.push(0x20);
    want.extend_from_slice(&(ssl.len() as u16).to_be_bytes());
    want.extend_from_slice(&ssl);
    want.extend_from_slice(b"hello");
    assert_eq!(got, want);
}

#[test]
fn a_proxy_v2_header_from_a_peer_outside_proxy_protocol_from_is_refused() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = proxied_gateway(&pki, up.addr, "\"10.0.0.0/8\", \"::1\"");
    let header = tcp4_header([203, 0, 113, 7], 4242, [127, 0, 0, 1], gw.port);
    assert!(
        connect_after(gw.addr(), &pki, &header).is_err(),
        "127.0.0.1 is no balancer here"
    );
    assert_eq!(gw.wait_stat("partners", "/failures/bad_proxy_header", 1), 1);
    assert!(up.requests().is_empty());
}
