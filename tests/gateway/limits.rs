//! Hostile or broken peers cost only their own connection.

use crate::common::{self, client, pki::Pki, upstream};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Reads until the server closes; panics if it does not within 10 s.
fn expect_closed<R: Read>(r: &mut R) {
    let mut b = [0u8; 4096];
    loop {
        match r.read(&mut b) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("connection still open: {e}")
            }
            Err(_) => return, // reset or TLS alert: closed
        }
    }
}

#[test]
fn garbage_bytes_instead_of_a_client_hello_are_dropped_and_the_gateway_stays_healthy() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start_basic(&pki, up.addr);
    let mut s = TcpStream::connect(gw.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: plaintext\r\n\r\n\x00\x01\x02garbage")
        .unwrap();
    expect_closed(&mut s);
    assert!(gw.healthy());
    assert_eq!(gw.wait_stat("partners", "/failures/protocol_error", 1), 1);
    assert_eq!(
        client::get(gw.addr(), &client::config(&pki, &Default::default()), "/")
            .unwrap()
            .status,
        200
    );
}

#[test]
fn a_silent_client_is_dropped_at_the_handshake_timeout_while_others_are_served() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start(
        &pki.dir,
        &common::http_config(&pki, up.addr, "handshake_timeout = \"1s\"", "", ""),
    );
    let mut s = TcpStream::connect(gw.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(
        client::get(gw.addr(), &client::config(&pki, &Default::default()), "/")
            .unwrap()
            .status,
        200
    );
    expect_closed(&mut s);
    assert_eq!(gw.wait_stat("partners", "/failures/timeout", 1), 1);
    assert!(gw.healthy());
}

#[test]
fn a_client_silent_after_its_handshake_is_dropped_at_the_header_timeout() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start(
        &pki.dir,
        &common::http_config(&pki, up.addr, "header_timeout = \"1s\"", "", ""),
    );
    let mut s = client::partner(&pki, gw.addr());
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap(); // a head that never ends
    expect_closed(&mut s);
    assert!(gw.healthy());
}

#[test]
fn connections_over_max_connections_are_closed_at_once_and_counted() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start(
        &pki.dir,
        &common::http_config(&pki, up.addr, "max_connections = 2", "", ""),
    );
    let cfg = client::config(&pki, &Default::default());
    let a = client::connect(gw.addr(), &cfg, "localhost").unwrap();
    let _b = client::connect(gw.addr(), &cfg, "localhost").unwrap();
    assert!(client::get(gw.addr(), &cfg, "/").is_err());
    assert_eq!(
        gw.wait_stat("partners", "/connections/rejected_max_connections", 1),
        1
    );
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match client::get(gw.addr(), &cfg, "/") {
            Ok(r) => {
                assert_eq!(r.status, 200);
                break;
            }
            Err(e) if std::time::Instant::now() > deadline => panic!("no room after a close: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let pki = Pki::new();
    let up = upstream::echo();
    let gw = common::start_basic(&pki, up.addr);
    let cfg = client::config(&pki, &Default::default());
    let mut idle = client::connect(gw.addr(), &cfg, "localhost").unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(
        client::read_response(&mut idle, &mut Vec::new(), false)
            .unwrap()
            .status,
        200
    );
    let st = gw.stop();
    assert!(st.success(), "{st}");
}
